// Event center pages: the workbench (queues, case detail with history, photos and allowed actions) and
// the phone page for a grid worker's patrol report with GPS position and photos. Plain ES module.
const TOKEN_KEY = "cityops.token";
const USER_KEY = "cityops.user";
const LANG_KEY = "cityops.language";
const QUEUES = ["to_accept", "to_file", "to_dispatch", "to_handle", "to_approve", "to_verify", "backlog", "closed", "void"];
const NOTE_REQUIRED = new Set(["void", "return", "request_extension", "reject_extension", "backlog", "rework", "supervise", "comment"]);
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem(TOKEN_KEY), messages: {}, queue: "to_accept", selected: null };
const phone = document.body.classList.contains("ev-phone");

function t(key) { return state.messages[key] ?? key; }

async function loadLanguage(lang) {
  const r = await fetch(`/api/i18n/${encodeURIComponent(lang)}`);
  state.messages = await r.json();
  document.documentElement.lang = lang;
  localStorage.setItem(LANG_KEY, lang);
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${state.token}` };
  const r = await fetch(path, { ...options, headers });
  if (r.status === 401) { logout(); throw new Error(t("events.session_expired")); }
  return r;
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  showLogin();
}

function showLogin() { $("ev-login").hidden = false; $("ev-app").hidden = true; }

async function login(event) {
  event.preventDefault();
  const r = await fetch("/api/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: $("ev-user").value, password: $("ev-pass").value }) });
  const body = await r.json();
  if (!r.ok) { $("ev-login-error").textContent = body.message; return; }
  state.token = body.access_token;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  await start();
}

const fmt = (iso) => (iso ? new Date(iso).toLocaleString(document.documentElement.lang) : "—");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

// ---------------------------------------------------------------------------------------- workbench
async function renderQueues() {
  const nav = $("ev-queues");
  nav.innerHTML = "";
  for (const q of QUEUES) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.queue = q;
    b.dataset.testid = `queue-${q}`;
    b.setAttribute("data-testid", `queue-${q}`);
    b.className = q === state.queue ? "active" : "";
    b.innerHTML = `<span>${esc(t(`events.queue.${q}`))}</span><span class="ev-count" id="count-${q}"></span>`;
    b.onclick = () => { state.queue = q; renderQueues(); loadCases(); };
    nav.appendChild(b);
  }
  for (const q of QUEUES) {
    api(`/api/events/cases?queue=${q}&limit=1`).then((r) => r.json()).then((b) => { const el = $(`count-${q}`); if (el) el.textContent = b.total; });
  }
}

function listParams(limit = 200) {
  const p = new URLSearchParams({ queue: state.queue, limit: String(limit) });
  if ($("ev-search").value.trim()) p.set("q", $("ev-search").value.trim());
  if ($("ev-overdue").checked) p.set("overdue", "true");
  return p;
}

async function loadCases() {
  const r = await api(`/api/events/cases?${listParams()}`);
  const body = await r.json();
  $("ev-total").textContent = `${t("events.total")}: ${body.total}`;
  const ul = $("ev-cases");
  ul.innerHTML = "";
  for (const c of body.items) {
    const li = document.createElement("li");
    li.setAttribute("data-testid", "ev-case");
    li.dataset.number = c.number;
    li.className = c.number === state.selected ? "active" : "";
    li.innerHTML = `<div><strong>${esc(c.class_name)}</strong><span class="ev-badge">${esc(t(`events.state.${c.state}`))}</span>` +
      `<span class="ev-badge ${esc(c.sla)}">${esc(t(`events.sla.${c.sla}`))}</span></div>` +
      `<div class="ev-num">${esc(c.number)} · ${esc(c.grid_code)}</div><div class="ev-muted">${esc(c.description || c.title)}</div>`;
    li.onclick = () => showCase(c.number);
    ul.appendChild(li);
  }
}

async function showCase(number) {
  state.selected = number;
  for (const li of document.querySelectorAll("#ev-cases li")) li.classList.toggle("active", li.dataset.number === number);
  const r = await api(`/api/events/cases/${encodeURIComponent(number)}`);
  const c = await r.json();
  const pane = $("ev-detail");
  const rows = [["events.f.number", c.number], ["events.f.class", `${c.class_code} ${c.class_name}`], ["events.f.state", t(`events.state.${c.state}`)],
    ["events.f.source", t(`events.source.${c.source}`)], ["events.f.grid", c.grid_code], ["events.f.position", `${c.lon.toFixed(5)}, ${c.lat.toFixed(5)}`],
    ["events.f.department", c.department_code || c.assigned_unit_code || "—"], ["events.f.reported", fmt(c.reported_at)],
    ["events.f.deadline", fmt(c.deadline_at)], ["events.f.sla", t(`events.sla.${c.sla}`)], ["events.f.description", c.description || "—"]];
  pane.innerHTML = `<h2 data-testid="ev-detail-title">${esc(c.title)}</h2><dl>${rows.map(([k, v]) => `<dt>${esc(t(k))}</dt><dd>${esc(v)}</dd>`).join("")}</dl>` +
    `<h3>${esc(t("events.actions"))}</h3><div class="ev-actions" id="ev-actions"></div><p id="ev-action-error" class="ev-error" role="alert"></p>` +
    `<h3>${esc(t("events.photos"))}</h3><div class="ev-photos" id="ev-photos"></div>` +
    `<h3>${esc(t("events.history"))}</h3><ul class="ev-timeline" data-testid="ev-history">${c.history.map((h) =>
      `<li><strong>${esc(t(`events.action.${h.action}`))}</strong> · ${esc(h.actor)} · ${esc(fmt(h.at))}` +
      `${h.note ? `<div class="ev-muted">${esc(h.note)}</div>` : ""}</li>`).join("")}</ul>`;
  const box = $("ev-actions");
  const note = document.createElement("input");
  note.placeholder = t("events.note");
  note.setAttribute("data-testid", "ev-note");
  box.appendChild(note);
  for (const action of c.allowed_actions) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = t(`events.action.${action}`);
    b.setAttribute("data-testid", `action-${action}`);
    if (["void", "return", "rework", "backlog"].includes(action)) b.className = "ev-secondary";
    b.onclick = () => takeAction(c, action, note.value);
    box.appendChild(b);
  }
  for (const a of c.attachments) {
    const img = document.createElement("img");
    img.alt = a.filename;
    api(a.url).then((res) => res.blob()).then((blob) => { img.src = URL.createObjectURL(blob); });
    $("ev-photos").appendChild(img);
  }
}

async function takeAction(c, action, note) {
  if (NOTE_REQUIRED.has(action) && !note.trim()) { $("ev-action-error").textContent = t("events.note_required"); return; }
  const body = { note: note || null };
  if (action === "request_extension") body.extension = "1d";
  if (action === "dispatch" && c.route && !c.route.department_code && !c.route.unit_code) body.department_code = c.route.candidates[0];
  const r = await api(`/api/events/cases/${encodeURIComponent(c.number)}/actions/${action}`,
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const result = await r.json();
  if (!r.ok) { $("ev-action-error").textContent = result.message; return; }
  await showCase(c.number);
  await loadCases();
  renderQueues();
}

async function exportCsv() {
  const r = await api(`/api/events/cases?${listParams(5000)}&format=csv`);
  const url = URL.createObjectURL(await r.blob());
  const a = Object.assign(document.createElement("a"), { href: url, download: `cases-${state.queue}.csv` });
  a.click();
  URL.revokeObjectURL(url);
}

// -------------------------------------------------------------------------------------- phone page
async function setupReport() {
  const classes = await (await api("/api/events/classes")).json();
  const select = $("ev-class");
  select.innerHTML = classes.map((c) => `<option value="${c.kind}:${c.code}">${esc(c.code)} ${esc(c.name)}</option>`).join("");
  $("ev-locate").onclick = () => {
    if (!navigator.geolocation) { $("ev-position").textContent = t("events.gps_unavailable"); return; }
    $("ev-position").textContent = t("events.locating");
    navigator.geolocation.getCurrentPosition((pos) => {
      state.position = [pos.coords.longitude, pos.coords.latitude];
      $("ev-position").textContent = `${state.position[0].toFixed(6)}, ${state.position[1].toFixed(6)} (±${Math.round(pos.coords.accuracy)} m)`;
    }, (err) => { $("ev-position").textContent = `${t("events.gps_failed")}: ${err.message}`; }, { enableHighAccuracy: true, timeout: 15000 });
  };
  $("ev-report").onsubmit = async (event) => {
    event.preventDefault();
    if (!state.position) { $("ev-result").textContent = t("events.need_position"); return; }
    const form = new FormData();
    form.set("class_code", select.value);
    form.set("lon", String(state.position[0]));
    form.set("lat", String(state.position[1]));
    form.set("description", $("ev-desc").value);
    form.set("urgency", $("ev-urgent").checked ? "urgent" : "normal");
    // A key per submission: a retry after a lost answer returns the same case instead of a second one.
    state.clientKey = state.clientKey || crypto.randomUUID();
    form.set("client_key", state.clientKey);
    for (const file of $("ev-photo").files) form.append("photo", file);
    const r = await api("/api/events/patrol", { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) { $("ev-result").textContent = body.message; return; }
    state.clientKey = null;
    $("ev-result").textContent = `${t("events.reported_ok")} ${body.number}`;
    $("ev-report").reset();
  };
}

async function start() {
  const me = await api("/api/auth/me");
  if (!me.ok) { showLogin(); return; }
  const user = await me.json();
  sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  $("ev-username").textContent = user.display_name || user.username;
  $("ev-login").hidden = true;
  $("ev-app").hidden = false;
  if (phone) { await setupReport(); return; }
  $("ev-search").oninput = () => loadCases();
  $("ev-overdue").onchange = () => loadCases();
  $("ev-export").onclick = exportCsv;
  $("ev-lang").value = localStorage.getItem(LANG_KEY) || "zh-CN";
  $("ev-lang").onchange = async () => { await loadLanguage($("ev-lang").value); renderQueues(); loadCases(); };
  await renderQueues();
  await loadCases();
}

await loadLanguage(localStorage.getItem(LANG_KEY) || "zh-CN");
$("ev-login-form").onsubmit = login;
if (state.token) await start(); else showLogin();

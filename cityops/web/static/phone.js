// The grid worker's phone page (掌上指挥室): the households still to move, nearest first from where the
// worker stands, each confirmed with one tap (state, time and position recorded). A report carries a
// request key, so a retry after a dropped connection never counts twice.
import { $, api, ensureLogin, follow, loadLanguage, state, t } from "/static/tasks-common.js";

const OPEN_STATES = "to_move,refused,not_home";
const page = { incident: null, here: null, shelters: [], stream: null, timer: null };

function position() {
  const q = new URLSearchParams(location.search);
  if (q.get("lon") && q.get("lat")) return Promise.resolve([Number(q.get("lon")), Number(q.get("lat"))]);
  return new Promise((ok) => {
    if (!navigator.geolocation) { ok(null); return; }
    navigator.geolocation.getCurrentPosition((p) => ok([p.coords.longitude, p.coords.latitude]), () => ok(null), { timeout: 3000 });
  });
}

const key = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);

async function report(item, newState, shelterId, errorBox) {
  const body = { state: newState, request_key: key() };
  if (page.here) [body.lon, body.lat] = page.here;
  if (newState === "in_shelter") body.shelter_id = Number(shelterId);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await api(`/api/evacuations/${item.id}/state`, { json: body });
      await render();
      return;
    } catch (e) {
      if (e.status) { errorBox.textContent = e.message; return; }  // refused: show why, do not retry
      await new Promise((ok) => setTimeout(ok, 1000 * (attempt + 1)));  // network: retry, same key
    }
  }
  errorBox.textContent = t("tasks.phone.offline");
}

function card(item) {
  const div = document.createElement("div");
  div.className = "household";
  div.dataset.testid = "household";
  div.dataset.id = item.id;
  div.dataset.state = item.state;
  div.innerHTML = `<div class="who"></div><div class="meta"></div><div class="actions"></div><div class="error"></div>`;
  div.querySelector(".who").textContent = `${item.household_code} · ${t(`tasks.state.${item.state}`)}`;
  div.querySelector(".meta").textContent = `${item.members} ${t("tasks.phone.people")}` +
    (item.vulnerable ? ` · ${t("tasks.phone.vulnerable")} ${item.vulnerable}` : "") +
    (item.distance_m !== undefined ? ` · ${Math.round(item.distance_m)} m` : "");
  const actions = div.querySelector(".actions");
  const errorBox = div.querySelector(".error");
  for (const s of ["moved", "with_relatives", "not_home", "refused"]) {
    if (s === item.state) continue;
    const b = document.createElement("button");
    b.className = s;
    b.dataset.state = s;
    b.textContent = t(`tasks.state.${s}`);
    b.onclick = () => report(item, s, null, errorBox);
    actions.append(b);
  }
  if (page.shelters.length) {
    const select = document.createElement("select");
    select.innerHTML = `<option value="">${t("tasks.phone.to_shelter")}</option>`;
    for (const s of page.shelters) {
      const o = document.createElement("option");
      o.value = s.id;
      o.textContent = `${s.name} (${s.free})`;
      select.append(o);
    }
    select.onchange = () => select.value && report(item, "in_shelter", select.value, errorBox);
    actions.append(select);
  }
  return div;
}

async function render() {
  const near = page.here ? `&lon=${page.here[0]}&lat=${page.here[1]}` : "";
  const [list, totals, shelters] = await Promise.all([
    api(`/api/incidents/${page.incident.id}/evacuations?state=${OPEN_STATES}${near}`),
    api(`/api/incidents/${page.incident.id}/totals`),
    api(`/api/shelters${near ? "?" + near.slice(1) : ""}`)]);
  page.shelters = shelters.filter((s) => s.free > 0);
  const d = totals.district;
  $("summary").textContent = `${t("tasks.phone.remaining")} ${d.remaining_households} · ${t("tasks.phone.safe")} ${d.safe_households} / ${d.households}`;
  $("summary").dataset.remaining = d.remaining_households;
  const box = $("households");
  box.innerHTML = "";
  if (!list.items.length) {
    const done = document.createElement("div");
    done.className = "empty";
    done.dataset.testid = "phone-done";
    done.textContent = t("tasks.phone.all_done");
    box.append(done);
  }
  for (const item of list.items) box.append(card(item));
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
}

async function main() {
  await loadLanguage(localStorage.getItem("cityops.language") || "zh-CN");
  await ensureLogin();
  $("main-view").hidden = false;
  $("language").value = state.language;
  $("language").onchange = async () => { await loadLanguage($("language").value); await render(); };
  const incidents = await api("/api/incidents?status=active");
  if (!incidents.length) { $("incident-title").textContent = t("tasks.phone.no_incident"); document.body.dataset.ready = "1"; return; }
  page.incident = incidents[0];
  $("incident-title").textContent = page.incident.title;
  page.here = await position();
  await render();
  page.stream = new AbortController();
  // Someone else (the village cadre) may confirm one of these households: follow the stream.
  follow(page.incident.id, (e) => {
    if (e.kind === "evacuation.state" || e.kind === "evacuation.locked") {
      clearTimeout(page.timer);
      page.timer = setTimeout(() => render().catch(console.error), 300);
    }
  }, page.stream.signal);
  document.body.dataset.ready = "1";
}

main().catch((e) => { console.error(e); document.body.dataset.error = String(e); });

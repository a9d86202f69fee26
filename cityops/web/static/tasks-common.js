// Shared by the task center pages: login, i18n from /api/i18n, authenticated fetch, and a live stream read
// with fetch() (EventSource cannot send the Authorization header).
const TOKEN_KEY = "cityops.token";
const LANG_KEY = "cityops.language";

export const state = { token: sessionStorage.getItem(TOKEN_KEY), messages: {}, language: "zh-CN" };

export const $ = (id) => document.getElementById(id);
export const t = (key, fallback) => state.messages[key] ?? fallback ?? key;

export async function loadLanguage(language) {
  const lang = ["zh-CN", "en"].includes(language) ? language : "zh-CN";
  const r = await fetch(`/api/i18n/${lang}`);
  state.messages = await r.json();
  state.language = lang;
  localStorage.setItem(LANG_KEY, lang);
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}

export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${state.token}` };
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json), method: options.method || "POST" };
  }
  const r = await fetch(path, { ...options, headers });
  if (r.status === 401) { logout(); throw new Error("unauthenticated"); }
  const body = (r.headers.get("content-type") || "").includes("json") ? await r.json() : await r.text();
  if (!r.ok) { const e = new Error(body.message || r.statusText); e.status = r.status; e.body = body; throw e; }
  return body;
}

export function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  location.reload();
}

/** Show the login form until a token exists; resolves once logged in. */
export function ensureLogin() {
  return new Promise((resolve) => {
    if (state.token) { resolve(); return; }
    const form = $("login-form");
    $("login-view").hidden = false;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const r = await fetch("/api/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: $("login-username").value, password: $("login-password").value }) });
      const body = await r.json();
      if (!r.ok) { $("login-error").textContent = t(`error.${body.error}`, body.message); return; }
      state.token = body.access_token;
      sessionStorage.setItem(TOKEN_KEY, state.token);
      $("login-view").hidden = true;
      resolve();
    });
  });
}

/** Follow the incident's live stream (SSE over fetch), calling onEvent(entry) per step; reconnects from the
 *  last id seen, as EventSource would. */
export async function follow(incidentId, onEvent, signal) {
  let last = 0;
  while (!signal.aborted) {
    try {
      const r = await fetch(`/api/incidents/${incidentId}/stream?after=${last}`,
        { headers: { Authorization: `Bearer ${state.token}` }, signal });
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const entry = JSON.parse(data);
          last = entry.id;
          onEvent(entry);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

export const fmtTime = (iso) => new Date(iso).toLocaleTimeString(state.language, { hour12: false });

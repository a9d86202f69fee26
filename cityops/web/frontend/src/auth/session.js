// One login for the whole app. The session (token, its expiry and the user) is kept in localStorage, so it
// survives reloads and is shared by every tab; logging out in one tab logs out all of them (storage event).
import { reactive } from "vue";
import { api, ApiError, configureClient } from "../api/client.js";

const KEY = "cityops.session";

export const session = reactive({
  token: null,
  expiresAt: null,
  user: null, // /api/auth/me: username, display_name, role, permissions, scope_units, scope_departments
  notice: null, // message key shown on the login page after the session ended (expired, logged out elsewhere)
});

function read() {
  try {
    const data = JSON.parse(localStorage.getItem(KEY) || "null");
    if (data && data.token && (!data.expiresAt || Date.parse(data.expiresAt) > Date.now())) return data;
  } catch {
    /* unreadable: start logged out */
  }
  return null;
}

function write() {
  try {
    if (session.token) {
      localStorage.setItem(KEY, JSON.stringify({ token: session.token, expiresAt: session.expiresAt, user: session.user }));
    } else {
      localStorage.removeItem(KEY);
    }
  } catch {
    /* storage full or blocked: the session lasts for this page */
  }
}

function adopt(data) {
  session.token = data ? data.token : null;
  session.expiresAt = data ? data.expiresAt : null;
  session.user = data ? data.user : null;
}

const listeners = new Set();
/** Called with (reason) when the session ends: "logout", "expired" or "elsewhere". */
export function onSessionEnd(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function endSession(reason = "logout") {
  if (!session.token) return;
  adopt(null);
  write();
  session.notice = reason === "logout" ? null : `login.ended_${reason}`;
  for (const fn of listeners) fn(reason);
}

configureClient({ token: () => session.token, onUnauthorized: () => endSession("expired") });

export function restoreSession() {
  adopt(read());
  if (typeof window !== "undefined") {
    window.addEventListener("storage", (event) => {
      if (event.key !== KEY) return;
      const data = read();
      if (!data && session.token) {
        adopt(null);
        session.notice = "login.ended_elsewhere";
        for (const fn of listeners) fn("elsewhere");
      } else if (data) {
        adopt(data);
      }
    });
  }
  return Boolean(session.token);
}

/** Password login; throws ApiError (the login page says why in the user's language). */
export async function login(username, password) {
  const result = await api.post("/api/auth/login", { username, password }, { auth: false });
  session.token = result.access_token;
  session.expiresAt = result.expires_at;
  session.user = result.user;
  session.notice = null;
  write();
  await refreshUser();
  return session.user;
}

/** Re-read the user (permissions, scope) from the server; keeps the stored copy on a network failure. */
export async function refreshUser() {
  try {
    session.user = await api.get("/api/auth/me");
    write();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 0) throw error;
  }
  return session.user;
}

export async function logout() {
  try {
    await api.post("/api/auth/logout");
  } catch {
    /* the token is dropped here whatever the server says */
  }
  endSession("logout");
}

export function can(permission) {
  const perms = (session.user && session.user.permissions) || [];
  return perms.includes("*") || perms.includes(permission);
}

// Names for the codes the API hands back: departments ("sthjj" → 区生态环境局), actors ("system:routing" →
// 系统自动派遣, a username → the person's name), units (a grid code → its name). A record's own *_name field
// wins when the API sends one; otherwise the name is looked up once and cached for the page's life.
import { reactive } from "vue";
import { api } from "./api/client.js";
import { can, session } from "./auth/session.js";
import { language, tOr } from "./i18n.js";

const cache = reactive({ departments: {}, units: {}, users: {}, loaded: { departments: false } });
let departmentsLoading = null;
let usersLoading = null;

/** The display names of the users in scope (operators may read them; others see their own name only). */
function loadUsers() {
  if (!usersLoading && can("users.read")) {
    usersLoading = api.get("/api/users").then((list) => {
      for (const u of list) cache.users[u.username] = u.display_name || u.username;
    }).catch(() => {});
  }
}

export function loadDepartments() {
  if (!departmentsLoading) {
    departmentsLoading = api.get("/api/departments", { params: { limit: 1000 } })
      .then((list) => {
        for (const d of Array.isArray(list) ? list : list.items || []) cache.departments[d.code] = d;
        cache.loaded.departments = true;
      })
      .catch(() => {
        departmentsLoading = null; // try again next time
      });
  }
  return departmentsLoading;
}

const localName = (record) => (language() === "en" && record && record.name_en ? record.name_en : record && record.name);

export function departmentName(code, given) {
  if (given) return given;
  if (!code) return "";
  const d = cache.departments[code];
  return d ? localName(d) : code;
}

/** A department's record as listed (name, phone …), once the departments are loaded; else null. */
export function departmentOf(code) {
  return (code && cache.departments[code]) || null;
}

/** An actor as people read it: system actors by role, demo actors by their post, users by display name. */
export function actorName(actor, given) {
  if (given) return given;
  if (!actor) return "";
  const [prefix, rest] = actor.includes(":") ? actor.split(/:(.*)/s, 2) : [actor, ""];
  if (prefix === "system") return tOr(`actor.system.${rest || "self"}`, tOr("actor.system.self", actor));
  if (prefix === "demo") return tOr(`actor.demo.${rest}`, tOr("actor.demo.self", actor));
  if (session.user && actor === session.user.username) return session.user.display_name || actor;
  loadUsers();
  return cache.users[actor] || tOr(`actor.${actor}`, actor);
}

/** A unit's name by code, fetched once (scope permitting); the code itself until it arrives. */
export function unitName(code, given) {
  if (given) return given;
  if (!code) return "";
  const known = cache.units[code];
  if (known) return typeof known === "string" ? known : localName(known);
  cache.units[code] = code;
  api.get(`/api/units/${encodeURIComponent(code)}`).then((unit) => {
    cache.units[code] = unit;
  }).catch(() => {});
  return code;
}

/** Remember units already fetched in bulk (lists, map layers). */
export function rememberUnits(units) {
  for (const u of units) if (u && u.code) cache.units[u.code] = u;
}

// What the signed-in user answers for: the level of their scope (district, township, village, grid, or a
// department) and the page they start on.
import { session } from "./auth/session.js";

const LEVEL_BY_LENGTH = { 6: "district", 9: "township", 12: "village", 15: "grid", 14: "grid" };

export function scopeLevel(user = session.user) {
  if (!user) return null;
  if (user.all_units || user.role === "administrator") return "all";
  const units = user.scope_units || [];
  if (!units.length && (user.scope_departments || []).length) return "department";
  const lengths = units.map((c) => c.length);
  const coarsest = Math.min(...lengths);
  return LEVEL_BY_LENGTH[coarsest] || "district";
}

/** Field roles work from the phone command room; department staff from the workbench; everyone else the map. */
export function homeRoute(user = session.user) {
  if (!user) return "/login";
  if (["grid_worker", "village_cadre"].includes(user.role)) return "/phone";
  if (user.role === "department_staff") return "/workbench";
  return "/";
}

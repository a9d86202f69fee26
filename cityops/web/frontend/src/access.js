// Who may open which page, for every entry of the app (main.js, phone-main.js): a page needs a session unless its
// route is public, and the route's permission (others are sent to their own start page).
import { can, session } from "./auth/session.js";
import { homeRoute } from "./scope.js";

export function accessGuard(to) {
  if (to.meta.public) return true;
  if (!session.token) return { name: "login", query: to.fullPath !== "/" ? { next: to.fullPath } : {} };
  if (to.meta.permission && !can(to.meta.permission)) {
    const home = homeRoute();
    return home === to.path ? true : home;
  }
  return true;
}

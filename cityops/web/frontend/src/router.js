// The pages of the app. Each route's `meta` says how it appears and who may open it:
//   nav        — listed in the top bar, in this order (titleKey: its name in the message catalogue)
//   permission — the permission a user needs (others are sent to their own start page)
//   layout     — "desk" (top bar, the default), "phone" (the phone command room's frame) or "bare" (login)
// A new page is one entry here and one component under pages/ (see docs/web.md).
import { createRouter, createWebHistory } from "vue-router";
import { accessGuard } from "./access.js";
import { can } from "./auth/session.js";
import { dropOverview } from "./overview.js";
import { phoneRoute } from "./phone/route.js";

export const routes = [
  { path: "/", name: "map", component: () => import("./pages/OpsMap.vue"),
    meta: { nav: true, titleKey: "nav.map", permission: "units.read" } },
  { path: "/cockpit", name: "cockpit", component: () => import("./pages/Cockpit.vue"),
    meta: { nav: true, titleKey: "nav.cockpit", permission: "indicators.read" } },
  { path: "/workbench", name: "workbench", component: () => import("./pages/Workbench.vue"),
    meta: { nav: true, titleKey: "nav.workbench", permission: "events.read" } },
  { path: "/workbench/cases/:number", name: "case", component: () => import("./pages/CasePage.vue"),
    meta: { titleKey: "nav.workbench", permission: "events.read" } },
  { path: "/command", name: "command", component: () => import("./pages/Command.vue"),
    meta: { nav: true, titleKey: "nav.command", permission: "tasks.read" } },
  { path: "/duty", name: "duty", component: () => import("./pages/Duty.vue"),
    meta: { nav: true, titleKey: "nav.duty", permission: "duty.read" } },
  { path: "/directives", name: "directives", component: () => import("./pages/Directives.vue"),
    meta: { nav: true, titleKey: "nav.directives", permission: "directives.read" } },
  { ...phoneRoute, component: () => import("./pages/Phone.vue") },
  { path: "/messages/:id(\\d+)", name: "message", component: () => import("./pages/MessagePage.vue"),
    meta: { titleKey: "notify.timeline", permission: "notify.inbox" } },
  { path: "/settings/notifications", name: "notify-settings", component: () => import("./pages/NotifySettings.vue"),
    meta: { titleKey: "notify.prefs.title", permission: "notify.inbox" } },
  { path: "/login", name: "login", component: () => import("./pages/Login.vue"), meta: { public: true, layout: "bare" } },
  { path: "/:rest(.*)*", name: "not-found", component: () => import("./pages/NotFound.vue"), meta: { public: true } },
];

export const router = createRouter({ history: createWebHistory(), routes });

router.beforeEach(accessGuard);
// The server's drawing of the map's first view belongs to the map: gone when the first page is another one.
router.afterEach((to) => { if (to.name !== "map") dropOverview(); });

/** The top bar's pages for the signed-in user. */
export function navItems() {
  return routes.filter((r) => r.meta && r.meta.nav && (!r.meta.permission || can(r.meta.permission)));
}

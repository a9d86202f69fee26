// The phone command room's own entry (phone.html, built by vite.phone.config.js and served for /phone): the same page
// as the app's /phone route (pages/Phone.vue), without the desk pages, the map, the charts or the desk frame, and
// inlined into its HTML. A cold visit on a poor connection then needs two round trips before the households show:
// the page (whose first lines ask for them, src/first-paint.js) and that answer, which the script's own transfer
// overlaps. Every other page is the full app: the router leaves for it with a page load.
import { h } from "vue";
import { createRouter, createWebHistory, RouterView } from "vue-router";
import "./styles.css";
import { accessGuard } from "./access.js";
import { boot } from "./boot.js";
import { useAppFrame } from "./frame.js";
import Phone from "./pages/Phone.vue";
import { phoneRoute } from "./phone/route.js";

const elsewhere = (path, name) => ({
  path, name, meta: { public: true }, component: { render: () => null },
  beforeEnter: (to) => {
    window.location.assign(to.fullPath);
    return false;
  },
});

const router = createRouter({
  history: createWebHistory(),
  // The app's pages the phone links to by name (the inbox's timeline and settings, the login), then any other path.
  routes: [{ ...phoneRoute, component: Phone }, elsewhere("/login", "login"), elsewhere("/messages/:id(\\d+)", "message"),
    elsewhere("/settings/notifications", "notify-settings"), elsewhere("/:rest(.*)*", "elsewhere")],
});
router.beforeEach(accessGuard);

boot({ name: "PhoneApp", setup() { useAppFrame(); return () => h(RouterView); } }, router);

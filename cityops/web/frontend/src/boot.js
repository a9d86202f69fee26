// The start of every entry of the app (main.js, phone-main.js): the stored session, the user's language (another
// language's messages fetched before the first render; 简体中文 is in the script), then the app, then the service
// worker once the page is up.
import { createApp } from "vue";
import { restoreSession } from "./auth/session.js";
import { i18n, setLanguage, storedLanguage } from "./i18n.js";
import { registerServiceWorker } from "./pwa.js";

export function boot(root, router) {
  restoreSession();
  setLanguage(storedLanguage()).finally(() => {
    createApp(root).use(i18n).use(router).mount("#app");
    registerServiceWorker();
  });
}

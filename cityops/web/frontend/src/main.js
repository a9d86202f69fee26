import { createApp } from "vue";
import "./styles.css";
import App from "./App.vue";
import { restoreSession } from "./auth/session.js";
import { i18n, setLanguage, storedLanguage } from "./i18n.js";
import { registerServiceWorker } from "./pwa.js";
import { router } from "./router.js";

restoreSession();
// 简体中文 is in this script; another language's messages are fetched before the first render.
setLanguage(storedLanguage()).finally(() => {
  createApp(App).use(i18n).use(router).mount("#app");
  registerServiceWorker();
});

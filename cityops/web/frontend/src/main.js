import { createApp } from "vue";
import "element-plus/theme-chalk/dark/css-vars.css";
import "element-plus/es/components/message/style/css";
import "element-plus/es/components/message-box/style/css";
import "./styles.css";
import App from "./App.vue";
import { restoreSession } from "./auth/session.js";
import { i18n, setLanguage, storedLanguage } from "./i18n.js";
import { registerServiceWorker } from "./pwa.js";
import { router } from "./router.js";

restoreSession();
setLanguage(storedLanguage());
createApp(App).use(i18n).use(router).mount("#app");
registerServiceWorker();

import "./styles.css";
import App from "./App.vue";
import { boot } from "./boot.js";
import { router } from "./router.js";

boot(App, router);

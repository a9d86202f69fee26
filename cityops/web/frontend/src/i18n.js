// The one message catalogue (cityops/web/messages.json, also served at /api/i18n/{language}): flat keys such as
// "map.layers", 简体中文 first, English. Element Plus gets its own component strings in the same language.
// Each language is its own module (vite.config.js, messageCatalogue): the entry carries 简体中文, the default; the
// English messages are fetched when chosen.
import { createI18n } from "vue-i18n";
import zhCN from "virtual:cityops-messages/zh-CN";
import { compileMessage } from "./i18n-compile.js";

const LOAD = { en: () => import("virtual:cityops-messages/en") };

export const LANGUAGES = [
  { code: "zh-CN", label: "简体中文" },
  { code: "en", label: "English" },
];
export const DEFAULT_LANGUAGE = "zh-CN";
const LANGUAGE_KEY = "cityops.language";

export function storedLanguage() {
  try {
    const value = localStorage.getItem(LANGUAGE_KEY);
    return LANGUAGES.some((l) => l.code === value) ? value : DEFAULT_LANGUAGE;
  } catch {
    return DEFAULT_LANGUAGE;
  }
}

export const i18n = createI18n({
  legacy: false,
  locale: DEFAULT_LANGUAGE, // another language once its messages are here (setLanguage)
  fallbackLocale: DEFAULT_LANGUAGE,
  messages: { [DEFAULT_LANGUAGE]: zhCN },
  messageCompiler: compileMessage,
  // Keys are flat ("tasks.state.moved"), not nested objects: look them up as they are.
  messageResolver: (table, key) => (table && Object.prototype.hasOwnProperty.call(table, key) ? table[key] : null),
  missingWarn: false,
  fallbackWarn: false,
});

export const t = (...args) => i18n.global.t(...args);
/** The translation of `key` if the catalogue has one, else `fallback` (for open-ended codes from the API). */
export const tOr = (key, fallback) => (i18n.global.te(key) ? i18n.global.t(key) : fallback);

/** Show the app in `code` (its messages fetched first when not yet here). */
export async function setLanguage(code) {
  if (!LANGUAGES.some((l) => l.code === code)) code = DEFAULT_LANGUAGE;
  if (!i18n.global.availableLocales.includes(code)) {
    try {
      i18n.global.setLocaleMessage(code, (await LOAD[code]()).default);
    } catch {
      code = DEFAULT_LANGUAGE; // offline and never loaded: stay in the default language
    }
  }
  i18n.global.locale.value = code;
  try {
    localStorage.setItem(LANGUAGE_KEY, code);
  } catch {
    /* private mode: the choice lasts for this page */
  }
  if (typeof document === "undefined") return; // the unit tests (no page)
  // The server writes a page's first view (the phone's households) in this language (core/web.py LANGUAGE_COOKIE).
  document.cookie = `cityops_language=${code}; Path=/; Max-Age=31536000; SameSite=Strict`;
  document.documentElement.lang = code;
  document.title = t("app.title");
}

export const language = () => i18n.global.locale.value;

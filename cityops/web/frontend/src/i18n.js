// The one message catalogue (cityops/web/messages.json, also served at /api/i18n/{language}): flat keys such as
// "map.layers", 简体中文 first, English. Element Plus gets its own component strings in the same language.
import { createI18n } from "vue-i18n";
import messages from "../../messages.json";

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
  locale: storedLanguage(),
  fallbackLocale: DEFAULT_LANGUAGE,
  messages,
  // Keys are flat ("tasks.state.moved"), not nested objects: look them up as they are.
  messageResolver: (table, key) => (table && Object.prototype.hasOwnProperty.call(table, key) ? table[key] : null),
  missingWarn: false,
  fallbackWarn: false,
});

export const t = (...args) => i18n.global.t(...args);
/** The translation of `key` if the catalogue has one, else `fallback` (for open-ended codes from the API). */
export const tOr = (key, fallback) => (i18n.global.te(key) ? i18n.global.t(key) : fallback);

export function setLanguage(code) {
  if (!LANGUAGES.some((l) => l.code === code)) code = DEFAULT_LANGUAGE;
  i18n.global.locale.value = code;
  try {
    localStorage.setItem(LANGUAGE_KEY, code);
  } catch {
    /* private mode: the choice lasts for this page */
  }
  document.documentElement.lang = code;
  document.title = t("app.title");
}

export const language = () => i18n.global.locale.value;

// What every page's root does whatever its frame: a session that ends (expired token, logout in another tab) brings
// the page back to the login form; the document's language follows the user's; the dark theme.
import { watch } from "vue";
import { useI18n } from "vue-i18n";
import { useRoute, useRouter } from "vue-router";
import { onSessionEnd } from "./auth/session.js";

export function useAppFrame() {
  const route = useRoute();
  const router = useRouter();
  const { locale } = useI18n();
  onSessionEnd(() => {
    if (!route.meta.public) router.replace({ name: "login", query: { next: route.fullPath } });
  });
  watch(locale, () => { document.documentElement.lang = locale.value; });
  document.documentElement.classList.add("dark");
  return route;
}

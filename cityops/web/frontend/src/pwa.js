// The service worker (made by vite-plugin-pwa): the app shell is cached, so the phone command room opens without
// a connection and can be installed. Registered after the page is up so it never competes with the first paint.
export function registerServiceWorker() {
  if (!("serviceWorker" in navigator) || import.meta.env.DEV) return;
  const register = () => navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
  if (document.readyState === "complete") setTimeout(register, 1000);
  else window.addEventListener("load", () => setTimeout(register, 1000), { once: true });
}

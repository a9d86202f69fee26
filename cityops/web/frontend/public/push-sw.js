// Web Push in the service worker (imported by the generated sw.js): a pushed message becomes a system
// notification that stays until touched (red warnings ask for interaction); touching it opens the phone page's
// inbox, where it is acknowledged.
self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { title: event.data ? event.data.text() : "" };
  }
  const title = data.title || "城市运行和治理中心";
  event.waitUntil(self.registration.showNotification(title, {
    body: data.body || "",
    tag: data.message_id ? `message-${data.message_id}` : undefined,
    renotify: true,
    requireInteraction: data.severity === "red" || data.severity === "orange",
    data: { url: "/phone?inbox=1", message_id: data.message_id, recipient_id: data.recipient_id },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || "/phone";
  event.waitUntil(self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
    for (const w of windows) {
      if (w.url.includes("/phone") && "focus" in w) return w.focus();
    }
    return self.clients.openWindow(url);
  }));
});

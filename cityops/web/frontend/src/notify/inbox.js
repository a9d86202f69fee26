// The signed-in person's inbox, shared by the top bar and the phone page: the list, the counts, the live stream
// (/api/notify/inbox/stream) that refreshes them, the delivery receipts of what the page received, and
// acknowledging. Web Push (the phone): subscribing this browser with the server's VAPID key.
import { reactive } from "vue";
import { api } from "../api/client.js";
import { follow } from "../live/stream.js";

export const inbox = reactive({ items: [], unread: 0, unacknowledged: 0, total: 0, loading: false, error: null, live: "" });

let stop = null;
let users = 0;

export async function load() {
  inbox.loading = true;
  try {
    const page = await api.get("/api/notify/inbox", { params: { limit: 30 } });
    Object.assign(inbox, { items: page.items, unread: page.unread, unacknowledged: page.unacknowledged, total: page.total, error: null });
    const fresh = page.items.filter((i) => !i.read_at).map((i) => i.id);
    if (fresh.length) api.post("/api/notify/inbox/delivered", { ids: fresh.slice(0, 500) }).catch(() => {});
  } catch (error) {
    inbox.error = error;
  } finally {
    inbox.loading = false;
  }
}

/** Follow the live inbox while at least one screen shows it. */
export function start() {
  users += 1;
  if (stop) return;
  load();
  const handle = follow("/api/notify/inbox/stream", {
    onEvent: ({ event }) => { if (event !== "ready") load(); },
    onState: (s) => { inbox.live = s; },
  });
  stop = () => handle.stop();
}

export function release() {
  users = Math.max(0, users - 1);
  if (!users && stop) { stop(); stop = null; }
}

export async function acknowledge(item, note) {
  const updated = await api.post(`/api/notify/inbox/${item.id}/acknowledge`, note ? { note } : {});
  Object.assign(item, updated);
  await load();
  return updated;
}

export async function markRead(item) {
  if (item.read_at) return;
  Object.assign(item, await api.post(`/api/notify/inbox/${item.id}/read`, {}));
  inbox.unread = Math.max(0, inbox.unread - 1);
}

/** Severity → the colour class of a message (red warnings stand out). */
export function severityClass(item) {
  return `sev-${item.severity || "info"}`;
}

export function urlBase64ToUint8Array(text) {
  const padded = (text + "=".repeat((4 - (text.length % 4)) % 4)).replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

/** Subscribe this browser to Web Push for the signed-in user ("unsupported" | "denied" | "subscribed"). */
export async function subscribePush() {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) return "unsupported";
  const permission = await Notification.requestPermission();
  if (permission !== "granted") return "denied";
  const registration = await navigator.serviceWorker.ready;
  const { public_key: key } = await api.get("/api/notify/webpush/key");
  const subscription = (await registration.pushManager.getSubscription())
    || (await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: urlBase64ToUint8Array(key) }));
  const json = subscription.toJSON();
  await api.post("/api/notify/webpush/subscriptions", { endpoint: json.endpoint, keys: json.keys });
  return "subscribed";
}

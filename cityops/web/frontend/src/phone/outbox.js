// The phone's outbox: the one Outbox of the page (offline/queue.js) with how its items are sent, flushed when
// the connection comes back, every 15 seconds while anything waits, and at start (a page closed with items
// waiting sends them next time). `state` is what the page shows: how many wait, and what the server refused.
import { reactive } from "vue";
import { ApiError, api, isTransient } from "../api/client.js";
import { Outbox, openQueue } from "../offline/queue.js";

export const state = reactive({ waiting: 0, online: typeof navigator === "undefined" ? true : navigator.onLine,
  refused: [], lastSent: null });

/** One queued item as its request: JSON, or multipart with the stored parts (photos are Blobs in IndexedDB). */
export async function sendItem(item) {
  if (item.parts) {
    const form = new FormData();
    for (const part of item.parts) {
      if (part.blob) form.append(part.name, part.blob, part.filename || "photo.jpg");
      else form.append(part.name, part.value);
    }
    return api.form(item.url, form);
  }
  return api.post(item.url, item.json);
}

let outbox = null;

export function phoneOutbox() {
  if (outbox) return outbox;
  outbox = new Outbox({ db: openQueue(), send: sendItem, isTransient: (e) => !(e instanceof ApiError) || isTransient(e) });
  const count = async () => { state.waiting = await outbox.count(); };
  outbox.onChange((event) => {
    if (event.type === "refused") state.refused.unshift({ item: event.item, error: event.error, at: Date.now() });
    if (event.type === "sent") state.lastSent = { item: event.item, answer: event.answer, at: Date.now() };
    count();
  });
  window.addEventListener("online", () => { state.online = true; outbox.flush({ force: true }); });
  window.addEventListener("offline", () => { state.online = false; });
  setInterval(() => { if (state.waiting) outbox.flush(); }, 15000);
  count().then(() => outbox.flush({ force: true }));
  return outbox;
}

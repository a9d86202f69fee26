// State changes made on a poor connection (household evacuation states, patrol reports) wait in IndexedDB until
// the server has stored them: never lost (a page closed before the network came back sends them at its next
// start), never applied twice (each carries its idempotency key — request_key for evacuation states,
// client_key for patrol reports — so a retry after a lost answer changes nothing on the server).
import { openDB } from "idb";

const DB_NAME = "cityops-offline";
const STORE = "outbox";

export function openQueue() {
  return openDB(DB_NAME, 1, {
    upgrade(db) {
      const store = db.createObjectStore(STORE, { keyPath: "key" });
      store.createIndex("created", "created");
    },
  });
}

/** A key for one user action, kept with it through every retry. */
export function newKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The outbox. `send(item)` performs one item's request and resolves with the server's answer, or throws the
 * ApiError; `isTransient(error)` says whether to keep it for later (no answer, 5xx, 429) or to give it up as
 * refused (4xx: the server said no, and will say no again).
 */
export class Outbox {
  constructor({ db, send, isTransient, now = () => Date.now() }) {
    this.db = db;
    this.send = send;
    this.isTransient = isTransient;
    this.now = now;
    this.flushing = null;
    this.listeners = new Set();
  }

  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  _changed(event) {
    for (const fn of this.listeners) fn(event);
  }

  /** Store an action before trying it: from here on it survives a closed page. */
  async add({ key = newKey(), kind, url, json = null, parts = null, meta = {} }) {
    const item = { key, kind, url, json, parts, meta, created: this.now(), attempts: 0, lastError: null, nextAt: 0 };
    await (await this.db).put(STORE, item);
    this._changed({ type: "queued", item });
    return item;
  }

  async pending() {
    return (await this.db).getAllFromIndex(STORE, "created");
  }

  async count() {
    return (await this.db).count(STORE);
  }

  /** Try every waiting item once, oldest first (a household's later state must not overtake its earlier one). */
  flush({ force = false } = {}) {
    if (!this.flushing) {
      this.flushing = this._flush(force).finally(() => {
        this.flushing = null;
      });
    }
    return this.flushing;
  }

  async _flush(force) {
    const db = await this.db;
    const result = { sent: 0, refused: 0, waiting: 0 };
    const blocked = new Set(); // once an item of a target waits, its later items wait too (order per target)
    for (const item of await db.getAllFromIndex(STORE, "created")) {
      const target = item.meta && item.meta.target;
      if ((target && blocked.has(target)) || (!force && item.nextAt > this.now())) {
        if (target) blocked.add(target);
        result.waiting += 1;
        continue;
      }
      try {
        const answer = await this.send(item);
        await db.delete(STORE, item.key);
        result.sent += 1;
        this._changed({ type: "sent", item, answer });
      } catch (error) {
        if (this.isTransient(error)) {
          item.attempts += 1;
          item.lastError = String((error && error.message) || error);
          // 2, 4, 8 … seconds, at most a minute: a poor connection is retried often, a dead one not hammered.
          item.nextAt = this.now() + Math.min(60000, 1000 * 2 ** Math.min(item.attempts, 6));
          await db.put(STORE, item);
          if (target) blocked.add(target);
          result.waiting += 1;
          this._changed({ type: "retry", item, error });
        } else {
          await db.delete(STORE, item.key);
          result.refused += 1;
          this._changed({ type: "refused", item, error });
        }
      }
    }
    return result;
  }
}

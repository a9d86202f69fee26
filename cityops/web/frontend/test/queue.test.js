// The phone's outbox: nothing lost (kept until the server has it, across a closed page), nothing applied twice
// (the same idempotency key on every retry), refusals given up, a household's changes kept in order.
import "fake-indexeddb/auto";
import { IDBFactory } from "fake-indexeddb";
import { beforeEach, describe, expect, it } from "vitest";
import { Outbox, openQueue } from "../src/offline/queue.js";

class Refused extends Error {
  constructor(status) { super(`HTTP ${status}`); this.status = status; }
}
const transient = (e) => !(e instanceof Refused) || e.status >= 500 || e.status === 429;

/** A server that applies each key once, like POST /api/evacuations/{id}/state with request_key. */
function fakeServer() {
  const applied = new Map();
  const server = { down: false, lost: false, refuse: null, calls: [], applied };
  server.send = async (item) => {
    server.calls.push(item.key);
    if (server.down) throw new TypeError("Failed to fetch");
    if (server.refuse) throw new Refused(server.refuse);
    if (!applied.has(item.json.request_key)) applied.set(item.json.request_key, item.json);
    if (server.lost) { server.lost = false; throw new TypeError("connection reset"); } // stored, answer lost
    return { ok: true };
  };
  return server;
}

// Each test starts from an empty browser storage; a "new page" opens the same one.
beforeEach(() => { globalThis.indexedDB = new IDBFactory(); });

function make(server, clock = { now: 0 }) {
  return { outbox: new Outbox({ db: openQueue(), send: server.send, isTransient: transient, now: () => clock.now }), clock };
}

const change = (id, state, key) => ({ key, kind: "evacuation", url: `/api/evacuations/${id}/state`,
  json: { state, request_key: key }, meta: { target: `evacuation:${id}`, evacuation: id, state } });

describe("Outbox", () => {
  it("sends a queued change and forgets it only once the server has it", async () => {
    const server = fakeServer();
    const { outbox } = make(server);
    await outbox.add(change(1, "moved", "k1"));
    expect(await outbox.count()).toBe(1);
    const result = await outbox.flush();
    expect(result).toEqual({ sent: 1, refused: 0, waiting: 0 });
    expect(await outbox.count()).toBe(0);
    expect(server.applied.get("k1").state).toBe("moved");
  });

  it("keeps changes through a dead connection and a closed page, then sends them", async () => {
    const server = fakeServer();
    server.down = true;
    const first = make(server);
    await first.outbox.add(change(1, "moved", "a"));
    await first.outbox.add(change(2, "not_home", "b"));
    expect(await first.outbox.flush()).toMatchObject({ sent: 0, waiting: 2 });
    // The page is closed; a new one opens on the same browser storage when the network is back.
    server.down = false;
    const second = make(server, first.clock);
    expect(await second.outbox.count()).toBe(2);
    expect(await second.outbox.flush({ force: true })).toMatchObject({ sent: 2, waiting: 0 });
    expect([...server.applied.keys()]).toEqual(["a", "b"]);
  });

  it("retries with the same key after a lost answer, so the change counts once", async () => {
    const server = fakeServer();
    const { outbox } = make(server);
    await outbox.add(change(7, "moved", "same-key"));
    server.lost = true;
    expect(await outbox.flush()).toMatchObject({ sent: 0, waiting: 1 });
    expect(await outbox.flush({ force: true })).toMatchObject({ sent: 1 });
    expect(server.calls).toEqual(["same-key", "same-key"]);
    expect(server.applied.size).toBe(1);
  });

  it("backs off between retries and retries at once when forced", async () => {
    const server = fakeServer();
    server.down = true;
    const { outbox, clock } = make(server);
    await outbox.add(change(1, "moved", "x"));
    await outbox.flush();
    await outbox.flush(); // too early: not tried again
    expect(server.calls.length).toBe(1);
    clock.now += 2500;
    await outbox.flush();
    expect(server.calls.length).toBe(2);
    const [item] = await outbox.pending();
    expect(item.attempts).toBe(2);
    expect(item.nextAt - clock.now).toBe(4000);
  });

  it("gives up a change the server refuses (4xx) and says so", async () => {
    const server = fakeServer();
    const { outbox } = make(server);
    const events = [];
    outbox.onChange((e) => events.push(e.type));
    await outbox.add(change(1, "returned", "r"));
    server.refuse = 409;
    expect(await outbox.flush()).toMatchObject({ refused: 1, waiting: 0 });
    expect(await outbox.count()).toBe(0);
    expect(events).toEqual(["queued", "refused"]);
  });

  it("keeps a server failure (5xx) for later", async () => {
    const server = fakeServer();
    server.refuse = 503;
    const { outbox } = make(server);
    await outbox.add(change(1, "moved", "busy"));
    expect(await outbox.flush()).toMatchObject({ waiting: 1, refused: 0 });
  });

  it("never lets a household's later change overtake an earlier one that waits", async () => {
    const server = fakeServer();
    const { outbox, clock } = make(server);
    await outbox.add(change(5, "not_home", "first"));
    server.down = true;
    await outbox.flush();
    server.down = false;
    clock.now += 1;
    await outbox.add(change(5, "moved", "second"));
    await outbox.add(change(6, "moved", "other"));
    const result = await outbox.flush(); // "first" is still backing off: "second" waits behind it, 6 goes
    expect(result).toMatchObject({ sent: 1, waiting: 2 });
    expect([...server.applied.keys()]).toEqual(["other"]);
    await outbox.flush({ force: true });
    expect([...server.applied.keys()]).toEqual(["other", "first", "second"]);
  });

  it("flushes once at a time when asked twice", async () => {
    const server = fakeServer();
    const { outbox } = make(server);
    await outbox.add(change(1, "moved", "once"));
    await Promise.all([outbox.flush(), outbox.flush()]);
    expect(server.calls).toEqual(["once"]);
  });
});

// The inbox: loading it sends delivery receipts for exactly the entries the page had not yet received (unread),
// acknowledging reloads the counts, and the VAPID key is decoded as the Push API wants it.
import { afterEach, describe, expect, it } from "vitest";
import { acknowledge, inbox, load, urlBase64ToUint8Array } from "../src/notify/inbox.js";

const realFetch = globalThis.fetch;
const json = (body, status = 200) => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

afterEach(() => { globalThis.fetch = realFetch; });

describe("inbox", () => {
  it("loads the entries and sends receipts for the unread ones only", async () => {
    const calls = [];
    const page = { total: 2, unread: 1, unacknowledged: 2, items: [
      { id: 7, title: "红色预警", severity: "red", read_at: null, acknowledged_at: null },
      { id: 5, title: "通知", severity: "info", read_at: "2026-07-01T00:00:00Z", acknowledged_at: null }] };
    globalThis.fetch = async (url, options = {}) => {
      calls.push({ url: String(url), method: options.method || "GET", body: options.body });
      return String(url).includes("/delivered") ? json({ delivered: 1 }) : json(page);
    };
    await load();
    expect(inbox.items.map((i) => i.id)).toEqual([7, 5]);
    expect(inbox.unread).toBe(1);
    expect(inbox.unacknowledged).toBe(2);
    await new Promise((r) => setTimeout(r, 0));
    const receipt = calls.find((c) => c.url.includes("/api/notify/inbox/delivered"));
    expect(receipt.method).toBe("POST");
    expect(JSON.parse(receipt.body)).toEqual({ ids: [7] });
  });

  it("acknowledges one entry and reloads the counts", async () => {
    const calls = [];
    globalThis.fetch = async (url, options = {}) => {
      calls.push(`${options.method || "GET"} ${url}`);
      if (String(url).includes("/acknowledge")) return json({ id: 7, acknowledged_at: "2026-07-01T01:00:00Z" });
      return json({ total: 1, unread: 0, unacknowledged: 0, items: [] });
    };
    const item = { id: 7, acknowledged_at: null };
    await acknowledge(item);
    expect(item.acknowledged_at).toBe("2026-07-01T01:00:00Z");
    expect(calls[0]).toBe("POST /api/notify/inbox/7/acknowledge");
    expect(inbox.unacknowledged).toBe(0);
  });

  it("decodes the base64url application server key", () => {
    const bytes = urlBase64ToUint8Array("BA-_AQ");
    expect(Array.from(bytes)).toEqual([4, 15, 191, 1]);
  });
});

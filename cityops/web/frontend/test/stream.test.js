// Live streams reconnect after the server ends them or the connection drops, resuming from the last event with
// Last-Event-ID; a refusal (401/403/404) stops them.
import { describe, expect, it, vi } from "vitest";
import { follow } from "../src/live/stream.js";

function body(text) {
  return new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode(text)); c.close(); } });
}

describe("follow", () => {
  it("hands over every named event, resumes from the last id, stops on a refusal", async () => {
    vi.useFakeTimers();
    const seen = [];
    const requests = [];
    const answers = [
      () => new Response(body("retry: 10\n\nid: 1\nevent: evacuation.state\ndata: {\"id\":1}\n\nid: 2\nevent: zone.version\ndata: {\"id\":2}\n\n"), { status: 200 }),
      () => { throw new TypeError("network down"); },
      () => new Response(body("id: 3\nevent: incident.closed\ndata: {\"id\":3}\n\n"), { status: 200 }),
      () => new Response("", { status: 401 }),
    ];
    const states = [];
    const stream = follow("/api/incidents/1/stream", {
      onEvent: (e) => seen.push([e.id, e.event, e.data.id]),
      onState: (s) => states.push(s),
      fetchImpl: async (url, init) => { requests.push(init.headers["Last-Event-ID"] || null); return answers.shift()(); },
    });
    await vi.runAllTimersAsync();
    expect(seen).toEqual([["1", "evacuation.state", 1], ["2", "zone.version", 2], ["3", "incident.closed", 3]]);
    expect(requests).toEqual([null, "2", "2", "3"]);
    expect(states).toEqual(["open", "reconnecting", "reconnecting", "open", "reconnecting", "denied"]);
    expect(stream.lastEventId).toBe("3");
    stream.stop();
    vi.useRealTimers();
  });
});

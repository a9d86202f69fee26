// Live streams (Server-Sent Events) of the API: /api/incidents/{id}/stream, /api/sensing/alarms/stream,
// /api/events/stream. Read with fetch() rather than EventSource: EventSource cannot send the Authorization
// header, and it hands named events ("event: evacuation.state") only to listeners registered per name, while a
// screen wants every change of its incident. The text is parsed by eventsource-parser; reconnecting (after the
// server's 300-second cut, a dropped connection or a restart) resumes from the last id seen with Last-Event-ID,
// as EventSource would, waiting the server's `retry` time and backing off while it stays unreachable.
import { createParser } from "eventsource-parser";
import { authHeaders } from "../api/client.js";

const MAX_BACKOFF_MS = 30000;

/**
 * Follow a stream until `stop()` is called. `onEvent({id, event, data})` gets every event, `data` parsed as JSON
 * when it is JSON; `onState("open" | "reconnecting" | "denied")` tells the screen how the connection is.
 */
export function follow(url, { onEvent, onState = () => {}, lastEventId = null, fetchImpl = (...a) => fetch(...a) } = {}) {
  const controller = new AbortController();
  let last = lastEventId;
  let retryMs = 2000;
  let failures = 0;
  let stopped = false;

  const parser = createParser({
    onEvent(message) {
      if (message.id) last = message.id;
      let data = message.data;
      try {
        data = JSON.parse(message.data);
      } catch {
        /* plain text */
      }
      onEvent({ id: message.id, event: message.event || "message", data });
    },
    onRetry(ms) {
      retryMs = ms;
    },
  });

  async function run() {
    while (!stopped) {
      try {
        const headers = { Accept: "text/event-stream", ...authHeaders() };
        if (last) headers["Last-Event-ID"] = String(last);
        const response = await fetchImpl(url, { headers, signal: controller.signal, cache: "no-store" });
        if (response.status === 401 || response.status === 403 || response.status === 404) {
          onState("denied", response.status);
          return; // a refusal, not a fault: reconnecting would be refused again
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        failures = 0;
        onState("open");
        parser.reset();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.feed(value);
        }
      } catch (error) {
        if (stopped || controller.signal.aborted) return;
        failures += 1;
      }
      if (stopped) return;
      onState("reconnecting");
      const wait = failures ? Math.min(MAX_BACKOFF_MS, retryMs * 2 ** Math.min(failures - 1, 4)) : retryMs;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  run();
  return {
    stop() {
      stopped = true;
      controller.abort();
    },
    get lastEventId() {
      return last;
    },
  };
}

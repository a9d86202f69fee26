"""Server-Sent Events: the one way every live stream is served (case changes, incident steps, alarms).

A stream lives on the event loop for minutes, so everything here keeps the loop free: database reads run in
worker threads with a short session of their own (never the request's, never one held across polls), the
stream ends after a bounded lifetime (the client reconnects, EventSource does so by itself and resumes from
Last-Event-ID), and idle streams send a comment now and then so that a dead client is noticed.

A blocking read inside a stream's generator once stopped a whole server for ten minutes: waiting on the
connection pool on the event loop, it held up the very requests that would have returned connections.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cityops.core.errors import InvalidInput
from cityops.core.params import INT32_MAX, parse_int

#: Longest a stream stays open; the client reconnects and resumes.
MAX_SECONDS = 300.0
#: A comment on an idle stream this often (proxies drop silent connections; a gone client shows on write).
KEEPALIVE_SECONDS = 15.0
#: What EventSource waits before reconnecting, announced at the start of every stream.
RETRY_MS = 2000


@dataclass(frozen=True)
class Event:
    data: dict
    event: str | None = None
    id: int | None = None

    def encode(self) -> str:
        head = (f"id: {self.id}\n" if self.id is not None else "") + (f"event: {self.event}\n" if self.event else "")
        return f"{head}data: {json.dumps(self.data, ensure_ascii=False, default=str)}\n\n"


#: The source of a stream: wait at most ``timeout`` seconds for the next events; [] when none came.
Source = Callable[[float], Awaitable[list[Event]]]


def resume_point(request: Request, after: int) -> int:
    """Where a stream resumes: the ``Last-Event-ID`` header when present, else ``after``. Our event ids are
    integers; any other value was not sent by us, so it is refused (422) rather than guessed at."""
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return after
    try:
        return parse_int(raw, "Last-Event-ID", minimum=0, maximum=INT32_MAX)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.message}: an id of an event of this stream", exc.details) from None


def polled(fetch: Callable[[int], list[Event]], since: int, *, interval: float) -> Source:
    """A source over a durable log: ``fetch(since)`` (blocking, run in a worker thread, opening its own short
    session) returns the events after id ``since``; it is asked again every ``interval`` seconds while empty."""
    last = since

    async def next_events(timeout: float) -> list[Event]:
        nonlocal last
        deadline = time.monotonic() + timeout
        while True:
            batch = await run_in_threadpool(fetch, last)
            if batch:
                last = batch[-1].id if batch[-1].id is not None else last
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await asyncio.sleep(min(interval, remaining))

    return next_events


class LiveHub:
    """Fan-out of changes heard on another thread (a bus listener) to this worker's live streams. Each subscriber
    is ``(loop, queue, key)``: ``key`` is what ``publish`` asks its ``wants`` about (a scope, a person …). Queues
    are bounded: one that falls behind is emptied and told so (an ``overflow`` item), and its page reloads."""

    def __init__(self, queue_size: int = 1000):
        self.queue_size = queue_size
        self._subs: set = set()
        self._lock = threading.Lock()

    def subscribe(self, key) -> tuple:
        sub = (asyncio.get_running_loop(), asyncio.Queue(self.queue_size), key)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub) -> None:
        with self._lock:
            self._subs.discard(sub)

    def publish(self, data: dict, wants: Callable[[object], bool], overflow: dict | None = None) -> None:
        with self._lock:
            subs = list(self._subs)
        for loop, q, key in subs:
            if wants(key):
                loop.call_soon_threadsafe(self._put, q, data, overflow or {"event": "overflow"})

    @staticmethod
    def _put(q: asyncio.Queue, data: dict, overflow: dict) -> None:
        try:
            q.put_nowait(data)
        except asyncio.QueueFull:
            q._queue.clear()  # noqa: SLF001 - make room for the overflow marker
            q.put_nowait(overflow)


def queued(queue: asyncio.Queue, event: Callable[[object], Event]) -> Source:
    """A source over an in-process queue (fed from other threads with ``call_soon_threadsafe``); ``event``
    turns an item into its Event."""

    async def next_events(timeout: float) -> list[Event]:
        try:
            first = await asyncio.wait_for(queue.get(), timeout)
        except asyncio.TimeoutError:
            return []
        batch = [first]
        while not queue.empty():
            batch.append(queue.get_nowait())
        return [event(item) for item in batch]

    return next_events


def stream(request: Request, source: Source, *, seconds: float = MAX_SECONDS, max_events: int | None = None,
           first: list[Event] | None = None, last: Callable[[Event], bool] | None = None,
           on_close: Callable[[], None] | None = None) -> StreamingResponse:
    """The SSE response: what is there now (``first`` when the route read it already, so that errors are answered
    before the stream starts), then what ``source`` yields for at most ``seconds`` and ``max_events`` events; an
    event for which ``last`` is true ends the stream after it is sent. ``on_close`` runs however it ends."""
    seconds = min(seconds, MAX_SECONDS)

    async def body() -> AsyncIterator[str]:
        deadline = time.monotonic() + seconds
        sent = 0
        try:
            yield f"retry: {RETRY_MS}\n\n"
            pending = list(first) if first is not None else await source(0)
            while True:
                for event in pending:
                    yield event.encode()
                    sent += 1
                    if (max_events is not None and sent >= max_events) or (last is not None and last(event)):
                        return
                remaining = deadline - time.monotonic()
                if remaining <= 0 or await request.is_disconnected():
                    return
                pending = await source(min(KEEPALIVE_SECONDS, remaining))
                if not pending:
                    yield ": keep-alive\n\n"
        finally:
            if on_close is not None:
                on_close()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

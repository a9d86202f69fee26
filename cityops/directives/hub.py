"""The receipt boards' live fan-out in one worker: fed by the broadcast subscription ``directives.board_stream``
(every worker hears every ``directive.changed``), it hands each change to the streams of that directive whose
viewer's scope covers the change. Queues are bounded; a stream that falls behind is told (``overflow``) and
reloads its board."""

from __future__ import annotations

import asyncio
import threading

from cityops.core.bus import Envelope
from cityops.identity.scope import Scope


class DirectiveHub:
    def __init__(self, queue_size: int = 1000):
        self.queue_size = queue_size
        self._subs: dict[int, set] = {}
        self._lock = threading.Lock()

    def subscribe(self, directive_id: int, scope: Scope):
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue(self.queue_size)
        sub = (loop, q, scope)
        with self._lock:
            self._subs.setdefault(directive_id, set()).add(sub)
        return sub

    def unsubscribe(self, directive_id: int, sub) -> None:
        with self._lock:
            subs = self._subs.get(directive_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[directive_id]

    def publish(self, data: dict) -> None:
        with self._lock:
            subs = list(self._subs.get(data["directive_id"], ()))
        for loop, q, scope in subs:
            receipt = data.get("receipt")
            # A receipt change goes to those who see that receipt; other changes make every board reload (it
            # reads only what its viewer covers).
            if receipt is not None and not scope.covers(receipt.get("unit_path")):
                continue
            loop.call_soon_threadsafe(self._put, q, data)

    @staticmethod
    def _put(q: asyncio.Queue, data: dict) -> None:
        try:
            q.put_nowait(data)
        except asyncio.QueueFull:
            q._queue.clear()  # noqa: SLF001 - make room for the overflow marker
            q.put_nowait({"event": "overflow", "directive_id": data["directive_id"]})


def board_stream(hub: DirectiveHub):
    """``directive.changed`` (broadcast, every worker) → the hub of this worker."""

    def listener(env: Envelope) -> None:
        hub.publish(env.payload.model_dump())

    return listener

"""Live indicators kept fresh while someone watches, pushed to the open cockpits.

One thread per server process (``LiveIndicators``) recomputes the live indicators (``period = "live"``) and then
wakes the indicator streams of the process, which read the stored changes at once; nothing polls per stream.
It recomputes:

- **at once** when a fact that moves a live indicator is committed: an alarm raised or changed, a warning level
  changed (bus broadcasts, ``wiring.py``: every worker process hears them), a case created or moved (the event
  center's outbox grew: one ``max(id)`` read every ``MARK_SECONDS``; the event center publishes no bus event per
  case, its intake path stays one write);
- **at least every** ``indicators_live_seconds`` for what moves without such a fact (sensor readings under
  ingest, devices going offline), so the cheap fast path is never the only one.

Only while at least one stream is open; a recomputation that finds the store busy (SQLite, another writer) is
tried again on the next turn. Facts that arrive during a recomputation are picked up by the next one (the dirty
flag is cleared before reading, not after).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from cityops.indicators import service

log = logging.getLogger("cityops.indicators")

#: How often the event center's outbox is looked at for a new case change (one indexed max(id) read).
MARK_SECONDS = 0.1


class LiveIndicators:
    def __init__(self, sessions, settings):
        self.sessions, self.settings = sessions, settings
        self._cond = threading.Condition()
        self._dirty = False
        self._watchers = 0
        self._waiters: set = set()  # (loop, asyncio.Event) of each open stream
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._mark: int | None = None
        self.last = 0.0
        #: recomputations done (tests and benchmarks read it)
        self.runs = 0

    # ------------------------------------------------------------------------------------------ facts

    def poke(self, *_args) -> None:
        """A fact that moves a live indicator was committed (a bus broadcast listener; any thread)."""
        with self._cond:
            self._dirty = True
            self._cond.notify()

    # ------------------------------------------------------------------------------------------ streams

    def watch(self) -> tuple:
        """An open stream (on the running event loop): its handle for ``wait`` and ``unwatch``."""
        handle = (asyncio.get_running_loop(), asyncio.Event())
        with self._cond:
            if not self._watchers:  # nobody watched: the values may be old, the first watcher gets fresh ones
                self._dirty = True
            self._waiters.add(handle)
            self._watchers += 1
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="indicators-live", daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def unwatch(self, handle) -> None:
        with self._cond:
            if handle in self._waiters:
                self._waiters.discard(handle)
                self._watchers -= 1

    async def wait(self, handle, timeout: float) -> bool:
        """Until the next recomputation that stored something (True), or ``timeout`` seconds (False)."""
        event = handle[1]
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        event.clear()
        return True

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify()

    # ------------------------------------------------------------------------------------------ the thread

    def _case_mark(self) -> int:
        from cityops.events.models import Outbox

        with self.sessions() as session:
            return session.scalar(select(func.max(Outbox.id))) or 0

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if not self._watchers:
                    self._cond.wait(5.0)
                    if not self._watchers:  # nobody watches: the thread ends (the next watcher starts one)
                        self._thread = None
                        return
                due = self.last + self.settings.indicators_live_seconds - time.monotonic()
                if not self._dirty and due > 0:
                    self._cond.wait(min(MARK_SECONDS, due))
            try:
                mark = self._case_mark()
            except OperationalError:
                mark = self._mark
            with self._cond:
                if mark != self._mark:
                    self._dirty, self._mark = True, mark
                due = self.last + self.settings.indicators_live_seconds - time.monotonic()
                if not self._dirty and due > 0:
                    continue
                self._dirty = False
            if self._recompute():
                self._wake()

    def _recompute(self) -> bool:
        """Recompute the live indicators; True when it stored something."""
        try:
            cat = service.load_catalogue(self.settings)
            live = {c for c, i in cat.indicators.items() if i.period == "live"}
            if not live:
                return False
            with self.sessions() as session:
                result = service.run(session, cat, "day", codes=live)
                session.commit()
            self.runs += 1
            return bool(result.inserted or result.updated)
        except OperationalError:  # SQLite busy with another writer: the next turn tries again
            log.warning("live indicators not refreshed: database busy")
            with self._cond:
                self._dirty = True
            return False
        except Exception:  # noqa: BLE001 - the thread outlives one bad turn; the error is in the log
            log.exception("live indicators not refreshed")
            return False
        finally:
            self.last = time.monotonic()

    def _wake(self) -> None:
        with self._cond:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that stream's loop is closed
                pass

"""Live indicators kept fresh while someone watches, pushed to the open cockpits.

One thread per server process (``LiveIndicators``) recomputes the live indicators (``period = "live"``) and then
wakes the indicator streams of the process, which read the stored changes at once; nothing polls per stream.
It recomputes:

- **at once, only what the fact moves** when a fact is committed: an alarm raised or changed, a warning level
  changed (bus broadcasts, ``wiring.py``: every worker process hears them), a case created or moved (the event
  center's outbox grew: one ``max(id)`` read every ``MARK_SECONDS``; the event center publishes no bus event per
  case, its intake path stays one write; it stands for ``case.changed``). Each platform metric names the facts that
  move it (``Metric.moved_by``); a fact recomputes the live indicators on those metrics and the formulas over them
  — a case recomputes the three case counts, not the sensor aggregates of a district under ingest;
- **the others every** ``indicators_live_seconds``: what moves without such a fact (sensor readings under ingest,
  devices going offline, evacuations), and **all of them every** ``Settings.indicators_full_seconds`` (what a fact moves also moves
  with time: a case becomes overdue). A turn is short so a fact never waits long behind it: recomputing the
  indicators a fact does not move every second, or all of them, held the thread for most of every second under
  ingest, and a case waited behind it.

The unit tree (every unit of the district with its ancestors, the costliest part of a small recomputation) is
built once and kept until a unit changes (``unit.changed``, a broadcast) or the next full recomputation.

Only while at least one stream is open; a recomputation that finds the store busy (SQLite, another writer) is
tried again on the next turn. Facts that arrive during a recomputation are picked up by the next one (the pending
facts are taken before reading, not after).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from cityops.indicators import compute, service
from cityops.indicators.metrics import registry

log = logging.getLogger("cityops.indicators")

#: How often the event center's outbox is looked at for a new case change (one indexed max(id) read).
MARK_SECONDS = 0.1
#: The fact the event center's outbox growing stands for.
CASE_FACT = "case.changed"
#: The units changed: the unit tree is built again.
UNITS_FACT = "unit.changed"


def unmoved(cat) -> set[str]:
    """The live indicators no fact moves (they follow the periodic refresh only)."""
    facts = {f for m in registry().metrics.values() for f in m.moved_by}
    return {c for c, i in cat.indicators.items() if i.period == "live"} - moved_by(cat, facts)


def moved_by(cat, facts: set[str]) -> set[str]:
    """The live indicators of ``cat`` that ``facts`` (event names) may have moved: those on a metric moved by one
    of them, and the formulas over those (``formula_order`` is topological: one pass follows chains)."""
    metrics = registry()
    moved = set()
    for code, ind in cat.indicators.items():
        if ind.period == "live" and ind.source.kind == "metric":
            metric = metrics.get(ind.source.metric)
            if metric is not None and facts.intersection(metric.moved_by):
                moved.add(code)
    for code in cat.formula_order:
        if cat.indicators[code].period == "live" and moved.intersection(cat.formulas[code].inputs):
            moved.add(code)
    return moved


class LiveIndicators:
    def __init__(self, sessions, settings):
        self.sessions, self.settings = sessions, settings
        self._cond = threading.Condition()
        self._dirty = False  # every live indicator is due (the first watcher, the periodic refresh)
        self._facts: set[str] = set()  # facts committed since the last recomputation (event names)
        self._watchers = 0
        self._waiters: set = set()  # (loop, asyncio.Event) of each open stream
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._mark: int | None = None
        self._tree = None  # the unit tree of the last recomputation (compute.UnitTree)
        self.last = 0.0  # the last periodic refresh
        self.last_full = 0.0
        #: recomputations done (tests and benchmarks read it)
        self.runs = 0

    # ------------------------------------------------------------------------------------------ facts

    def poke(self, env=None) -> None:
        """A fact that moves a live indicator was committed (a bus broadcast listener, given the event's envelope;
        any thread). Without an envelope every live indicator is recomputed."""
        name = getattr(env, "name", None)
        with self._cond:
            if name == UNITS_FACT:
                self._tree = None
            if name is None or name == UNITS_FACT:
                self._dirty = True
            else:
                self._facts.add(name)
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
                if not self._dirty and not self._facts and due > 0:
                    self._cond.wait(min(MARK_SECONDS, due))
            try:
                mark = self._case_mark()
            except OperationalError:
                mark = self._mark
            with self._cond:
                if mark != self._mark:
                    if self._mark is not None:
                        self._facts.add(CASE_FACT)
                    else:  # the first look: what was there is in the first (full) recomputation
                        self._dirty = True
                    self._mark = mark
                facts, self._facts = self._facts, set()
                now = time.monotonic()
                everything = self._dirty or now - self.last_full >= self.settings.indicators_full_seconds
                periodic = everything or now - self.last >= self.settings.indicators_live_seconds
                if not periodic and not facts:
                    continue
                if everything:
                    self._dirty = False
            # A fact first: its few indicators now, the periodic refresh on the next turn.
            if facts:
                if self._recompute("facts", facts):
                    self._wake()
                if periodic:
                    with self._cond:
                        self._dirty = self._dirty or everything
                continue
            if self._recompute("all" if everything else "rest"):
                self._wake()

    def _recompute(self, what: str, facts: set[str] | None = None) -> bool:
        """Recompute the live indicators ``what`` says: those ``facts`` moved, the ``rest`` (no fact moves them) or
        ``all``; True when it stored something."""
        started = time.monotonic()
        try:
            cat = service.load_catalogue(self.settings)
            if what == "facts":
                codes = moved_by(cat, facts)
            elif what == "rest":
                codes = unmoved(cat)
            else:
                codes = {c for c, i in cat.indicators.items() if i.period == "live"}
            if not codes:
                return False
            with self.sessions() as session:
                if what == "all" or self._tree is None:
                    self._tree = compute.unit_tree(session)
                result = service.run(session, cat, "day", codes=codes, tree=self._tree)
                session.commit()
            self.runs += 1
            return bool(result.inserted or result.updated)
        except OperationalError:  # SQLite busy with another writer: the next turn tries again
            log.warning("live indicators not refreshed: database busy")
            with self._cond:
                if facts is not None:
                    self._facts |= facts
                elif what == "all":
                    self._dirty = True
            return False
        except Exception:  # noqa: BLE001 - the thread outlives one bad turn; the error is in the log
            log.exception("live indicators not refreshed")
            return False
        finally:
            now = time.monotonic()
            if what != "facts":  # the periodic refresh is timed from its last turn
                self.last = now
            if what == "all":
                self.last_full = now
            log.debug("live indicators (%s) recomputed in %.3f s", ", ".join(sorted(facts)) if facts else what,
                      now - started)

    def _wake(self) -> None:
        with self._cond:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that stream's loop is closed
                pass

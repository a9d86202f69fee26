"""Group commit of case creations (集中提交): the single-case HTTP channels (REST, Open311) hand their validated,
located and routed drafts (``creation.draft_case``) to one writer thread per process, which stores whatever has
queued up meanwhile in one transaction and commits once.

Why: one committed transaction per case is itself limited to a few hundred to ~1,500 commits/s (SQLite's and
PostgreSQL's commit waits for the disk flush, and SQLite takes one writer at a time), below the intake target
before any HTTP, locating or routing is done. A group shares one commit.

A report with a point comes as a ``creation.PointReport``, not yet drafted: the writer drafts a whole group
before its transaction, locating all its points in one vectorised pass (``creation.draft_reports``), so the event
loop only authenticates, parses and answers. Other reports (an address, a building or unit code, Open311) come
drafted.

Guarantees: a request is answered only after the transaction holding its case committed; a bad draft fails
alone (``creation.insert_drafts``); retries are idempotent on ``external_key``. The queue is bounded
(``CITYOPS_EVENTS_QUEUE`` drafts, default 2,000): when it is full ``submit`` raises ``IntakeBusy`` (HTTP 503 with
Retry-After) instead of waiting without limit. The thread starts on the first submission and ends after a
minute without one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

from sqlalchemy.orm import Session, sessionmaker

from cityops.core.errors import Busy
from cityops.core.web import per_app
from cityops.events.creation import CaseDraft, PointReport, draft_reports, insert_drafts
from cityops.events.routing import write_section
from cityops.org.locate import LocatorCache

log = logging.getLogger("cityops.events.intake")


class IntakeBusy(Busy):
    code = "intake_busy"


class CaseWriter:
    """Bounded queue of drafts and the thread that stores them in groups of at most ``max_group``."""

    IDLE_SECONDS = 60.0

    def __init__(self, sessions: sessionmaker[Session], capacity: int = 2000, max_group: int = 256, registry=None,
                 locator: LocatorCache | None = None):
        self.sessions = sessions
        self.locator = locator
        self.capacity = capacity
        self.max_group = max_group
        self._q: queue.Queue[tuple[CaseDraft | PointReport, Future]] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._metrics(registry)

    def _metrics(self, registry) -> None:
        self._committed = self._rejected = self._groups = None
        if registry is None:
            return
        from prometheus_client import Counter, Gauge, Histogram

        Gauge("cityops_events_intake_pending", "Case reports queued for the group commit", registry=registry
              ).set_function(self._q.qsize)
        Gauge("cityops_events_intake_capacity", "Capacity of the case intake queue (reports)", registry=registry).set(self.capacity)
        self._committed = Counter("cityops_events_intake_committed", "Case reports stored by the group commit", registry=registry)
        self._rejected = Counter("cityops_events_intake_rejected", "Case reports refused with 503 (queue full)", registry=registry)
        self._groups = Histogram("cityops_events_intake_group_size", "Case reports per group commit", registry=registry,
                                 buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))

    @property
    def pending(self) -> int:
        return self._q.qsize()

    def submit(self, draft: CaseDraft | PointReport) -> Future:
        """Queue a draft or a point report; the future gives ``(case id, created)`` after the commit, or the error
        that refused it (a point report's draft is then in its ``draft``)."""
        fut: Future = Future()
        with self._lock:
            try:
                self._q.put_nowait((draft, fut))
            except queue.Full:
                if self._rejected is not None:
                    self._rejected.inc()
                raise IntakeBusy(f"case intake queue full ({self.capacity} reports pending); retry shortly",
                                 {"capacity": self.capacity}) from None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="events-intake", daemon=True)
                self._thread.start()
        return fut

    def _run(self) -> None:
        while True:
            try:
                group = [self._q.get(timeout=self.IDLE_SECONDS)]
            except queue.Empty:
                with self._lock:  # submit() starts a new thread under this lock, so nothing is left unserved
                    if self._q.empty():
                        self._thread = None
                        return
                continue
            while len(group) < self.max_group:
                try:
                    group.append(self._q.get_nowait())
                except queue.Empty:
                    break
            self._store(group)

    def _store(self, group: list[tuple[CaseDraft | PointReport, Future]]) -> None:
        started = time.perf_counter()
        futures = [fut for _, fut in group]
        drafts: list = [item for item, _ in group]
        try:
            with self.sessions() as session:
                reports = [i for i, item in enumerate(drafts) if isinstance(item, PointReport)]
                if reports:  # before the write lock: located and routed from cached data
                    for i, d in zip(reports, draft_reports(session, [drafts[i] for i in reports], self.locator), strict=True):
                        drafts[i] = d
                ready = [i for i, d in enumerate(drafts) if not isinstance(d, Exception)]
                stored = []
                if ready:
                    with write_section(session):
                        stored = insert_drafts(session, [drafts[i] for i in ready])
                        session.commit()
        except Exception as exc:  # the transaction failed: nothing of the group is stored, every request hears it
            log.exception("case intake group of %d failed", len(group))
            for fut in futures:
                fut.set_exception(exc)
            return
        results = list(drafts)
        for i, result in zip(ready, stored, strict=True):
            results[i] = result
        for fut, result in zip(futures, results, strict=True):
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        if self._committed is not None:
            self._committed.inc(sum(1 for r in results if not isinstance(r, Exception)))
            self._groups.observe(len(group))
        log.debug("stored %d case reports in %.1f ms", len(group), 1000 * (time.perf_counter() - started))


def writer(app_state) -> CaseWriter:
    """The app's case writer, made on first use."""
    return per_app(app_state, "events_writer", lambda ctx: CaseWriter(
        ctx.sessions, capacity=ctx.settings.events_queue, registry=ctx.registry, locator=ctx.locator))

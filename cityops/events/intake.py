"""Group commit of case creations (集中提交): the single-case HTTP channels (REST, Open311) hand their validated,
located and routed drafts (``creation.draft_case``) to the process's case writer, whose thread stores whatever has
queued up meanwhile in one transaction and commits once. Where the store takes concurrent writes (PostgreSQL),
``events_writers`` threads (default 1) may take turns: one gathers the next group while another waits for its commit.

Why: one committed transaction per case is itself limited to a few hundred to ~1,500 commits/s (SQLite's and
PostgreSQL's commit waits for the disk flush, and SQLite takes one writer at a time), below the intake target
before any HTTP, locating or routing is done. A group shares one commit.

A report with a point comes as a ``creation.PointReport``, not yet drafted: the writer drafts a whole group
before its transaction, locating all its points in one vectorised pass (``creation.draft_reports``), so the event
loop only authenticates, parses and answers. Other reports (an address, a building or unit code, Open311) come
drafted.

Guarantees: a request is answered only after the transaction holding its case committed; a bad draft fails
alone (the group goes in without savepoints; if a unique value collides, the transaction is rolled back and the
group written again one savepoint per case, ``creation.insert_drafts``); retries are idempotent on ``external_key``.
A ``Batch`` (the batch intake route: several reports of one request) joins a group as one unit, all or nothing: if
one of its reports is refused (drafting or storing), none of them is stored and its request hears which.
On PostgreSQL a group's case rows, first log entries and outbox rows are one statement (``Storage.insert_family``),
run as its own transaction (``core.db.statement_sessionmaker``): it has committed when it returns. The queue is bounded
(``CITYOPS_EVENTS_QUEUE`` reports, default 2,000, a batch counting its reports): when it is full ``submit`` raises
``IntakeBusy`` (HTTP 503 with Retry-After) instead of waiting without limit. The thread starts on the first submission and ends after a
minute without one.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cityops.core.errors import Busy
from cityops.core.web import per_app
from cityops.core.db import statement_sessionmaker
from cityops.core.storage import storage_of
from cityops.events.creation import (CaseDraft, PointReport, refuse_units, draft_reports, insert_drafts,
                                     one_statement)
from cityops.events.routing import write_section
from cityops.org.locate import LocatorCache

log = logging.getLogger("cityops.events.intake")


class IntakeBusy(Busy):
    code = "intake_busy"


@dataclass
class Batch:
    """Reports of one request stored all or nothing (``POST /api/events/cases/batch``): drafts, or point reports
    the writer drafts with the rest of its group. Its future gives the list of ``(case id, created)`` in order, or
    a ``creation.BatchRefused`` naming the report that refused it."""

    items: list

    def __len__(self) -> int:
        return len(self.items)


def _size(item) -> int:
    return len(item) if isinstance(item, Batch) else 1


class CaseWriter:
    """Bounded queue of drafts and the thread that stores them in groups of at most ``max_group``."""

    IDLE_SECONDS = 60.0

    def __init__(self, sessions: sessionmaker[Session], capacity: int = 2000, max_group: int = 256, registry=None,
                 locator: LocatorCache | None = None, group_wait: float = 0.0, writers: int = 1):
        self.sessions = sessions
        #: Writer threads: while one waits for its group's commit, the next gathers, drafts and sends its group.
        #: One where the store takes one writer at a time (SQLite's write lock: a second would only queue for it).
        self.writers = writers if storage_of(sessions.kw["bind"]).concurrent_writes else 1
        #: Seconds to wait for more reports after a group's first, when the last group was not a lone report.
        self.group_wait = group_wait
        self.locator = locator
        self.capacity = capacity
        self.max_group = max_group
        #: (draft, report or batch, waiter): a ``concurrent.futures.Future``, or (event loop, asyncio future). The
        #: bound is on reports (``_pending``), not entries: a batch takes as many places as it has reports.
        self._q: queue.Queue[tuple[CaseDraft | PointReport | Batch, object]] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        #: Held by the writer thread gathering a group: the others store theirs meanwhile, never split one.
        self._taking = threading.Lock()
        self._running = 0  # writer threads alive (started on demand, each ends after IDLE_SECONDS without work)
        self._one_statement: sessionmaker[Session] | None = None
        self._metrics(registry)

    def _metrics(self, registry) -> None:
        self._committed = self._rejected = self._groups = None
        if registry is None:
            return
        from prometheus_client import Counter, Gauge, Histogram

        Gauge("cityops_events_intake_pending", "Case reports queued for the group commit", registry=registry
              ).set_function(lambda: self._pending)
        Gauge("cityops_events_intake_capacity", "Capacity of the case intake queue (reports)", registry=registry).set(self.capacity)
        self._committed = Counter("cityops_events_intake_committed", "Case reports stored by the group commit", registry=registry)
        self._rejected = Counter("cityops_events_intake_rejected", "Case reports refused with 503 (queue full)", registry=registry)
        self._groups = Histogram("cityops_events_intake_group_size", "Case reports per group commit", registry=registry,
                                 buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, draft: CaseDraft | PointReport | Batch) -> Future:
        """Queue a draft or a point report; the future gives ``(case id, created)`` after the commit, or the error
        that refused it (a point report's draft is then in its ``draft``). For callers in a thread (Open311)."""
        fut: Future = Future()
        self._put(draft, fut)
        return fut

    def submit_async(self, draft: CaseDraft | PointReport | Batch) -> asyncio.Future:
        """``submit`` for a request on an event loop: the answer comes as an asyncio future of that loop, settled
        together with the rest of its group in one call onto the loop (``_answer``). A ``concurrent.futures``
        future per request, wrapped, cost a cross-thread wake-up of the loop per case (``Future.set_result`` was
        16 % of the writer thread)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._put(draft, (loop, fut))
        return fut

    def _put(self, draft: CaseDraft | PointReport | Batch, waiter) -> None:
        n = _size(draft)
        with self._lock:
            if self._pending + n > self.capacity:
                if self._rejected is not None:
                    self._rejected.inc(n)
                raise IntakeBusy(f"case intake queue full ({self._pending} of {self.capacity} reports pending); "
                                 "retry shortly", {"capacity": self.capacity, "pending": self._pending})
            self._pending += n
            self._q.put_nowait((draft, waiter))
            if self._running < self.writers:
                self._running += 1
                threading.Thread(target=self._run, name="events-intake", daemon=True).start()

    def _run(self) -> None:
        last = 1
        while True:
            # One thread takes a group at a time; the others meanwhile store theirs (PostgreSQL: the commit's WAL
            # flush, ~5 ms a group whatever its size, overlaps the next group's gathering, drafting and sending).
            with self._taking:
                group, size = self._take(last)
            if group is None:
                return
            last = size
            self._store(group)

    def _take(self, last: int) -> tuple[list | None, int]:
        """The next group (None: idle for IDLE_SECONDS, this thread ends) and its size in reports."""
        while True:
            try:
                group = [self._q.get(timeout=self.IDLE_SECONDS)]
                break
            except queue.Empty:
                with self._lock:  # submit() starts a new thread under this lock, so nothing is left unserved
                    if self._q.empty():
                        self._running -= 1
                        return None, 0
        size = _size(group[0][0])
        if self.group_wait and last > 1 and size < self.max_group:
            # Under load: the other requests in flight reach the queue within about a millisecond of this one,
            # and the group shares one transaction's fixed cost among them. A lone report (an idle server) is
            # stored at once.
            self._gather(min(last, self.max_group))
        while size < self.max_group:  # a batch goes in whole, so a group may pass max_group by one batch
            try:
                group.append(self._q.get_nowait())
            except queue.Empty:
                break
            size += _size(group[-1][0])
        with self._lock:
            self._pending -= size
        return group, size

    def _gather(self, expected: int) -> None:
        """Wait up to ``group_wait`` for the reports on their way, or only until ``expected`` (the last group's
        size) are queued. Clients answered by the last group send their next reports together: once as many as
        it held are here, waiting longer only delays them all (a fixed sleep of the whole wait was ~1 ms of every
        group's turn). Checked a few times within the wait, not woken per arrival (a wake-up per report cost
        the event loop more than the wait saved)."""
        deadline = time.monotonic() + self.group_wait
        step = self.group_wait / 8
        while self._pending < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(step, left))

    def _group_sessions(self) -> sessionmaker[Session]:
        """Where a group's write is one statement (PostgreSQL: ``creation.one_statement``), a session whose
        statement is its own transaction: committed when it returns, no BEGIN and COMMIT round trips (they were
        the writer's waits once the three tables went into one statement). Else the ordinary sessions."""
        if self._one_statement is None:
            engine = self.sessions.kw["bind"]
            self._one_statement = statement_sessionmaker(engine) if one_statement(engine) else self.sessions
        return self._one_statement

    def _store(self, group: list[tuple[CaseDraft | PointReport | Batch, object]]) -> None:
        started = time.perf_counter()
        waiters = [w for _, w in group]
        # The group's reports in one list; a batch's reports are a unit of it (stored all or nothing).
        drafts: list = []
        spans: list[tuple[int, int]] = []
        units: list[list[int]] = []
        for item, _ in group:
            start = len(drafts)
            if isinstance(item, Batch):
                drafts.extend(item.items)
                units.append(list(range(start, len(drafts))))
            else:
                drafts.append(item)
            spans.append((start, len(drafts)))
        try:
            with self._group_sessions()() as session:
                reports = [i for i, item in enumerate(drafts) if isinstance(item, PointReport)]
                if reports:  # before the write lock: located and routed from cached data
                    for i, d in zip(reports, draft_reports(session, [drafts[i] for i in reports], self.locator), strict=True):
                        drafts[i] = d
                refuse_units(drafts, units)  # a batch with a report that cannot be drafted is refused whole
                ready = [i for i, d in enumerate(drafts) if not isinstance(d, Exception)]
                at = {i: k for k, i in enumerate(ready)}
                ready_units = [[at[i] for i in u] for u in units if u and u[0] in at]
                stored = []
                if ready:
                    batch = [drafts[i] for i in ready]
                    try:
                        # The drafts are validated, located and routed: the group goes in without a savepoint
                        # (on PostgreSQL its SAVEPOINT/RELEASE round trips were 28 % of the group's insert).
                        with write_section(session):
                            stored = insert_drafts(session, batch, savepoint=False, units=ready_units)
                            session.commit()
                    except IntegrityError:
                        # A unique value collided (a key stored meanwhile by another process): the transaction is
                        # gone with it, so the group is written again, each case (each batch) in its own
                        # savepoint, and only the colliding one is refused.
                        with self.sessions() as again, write_section(again):
                            stored = insert_drafts(again, batch, units=ready_units)
                            again.commit()
        except Exception as exc:  # the transaction failed: nothing of the group is stored, every request hears it
            log.exception("case intake group of %d reports failed", len(drafts))
            _answer(waiters, [exc] * len(waiters))
            return
        results = list(drafts)
        for i, result in zip(ready, stored, strict=True):
            results[i] = result
        answers = []
        for (item, _), (start, end) in zip(group, spans, strict=True):
            if isinstance(item, Batch):
                part = results[start:end]
                answers.append(next((r for r in part if isinstance(r, Exception)), part))
            else:
                answers.append(results[start])
        _answer(waiters, answers)
        if self._committed is not None:
            self._committed.inc(sum(1 for r in results if not isinstance(r, Exception)))
            self._groups.observe(len(drafts))
        log.debug("stored %d case reports in %.1f ms", len(drafts), 1000 * (time.perf_counter() - started))


def _answer(waiters: list, results: list) -> None:
    """Settle each request's future with its result (or error): a thread's ``concurrent.futures`` future directly,
    the asyncio futures with one ``call_soon_threadsafe`` per event loop for the whole group."""
    by_loop: dict = {}
    for waiter, result in zip(waiters, results, strict=True):
        if isinstance(waiter, Future):
            if isinstance(result, Exception):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
        else:
            loop, fut = waiter
            by_loop.setdefault(loop, []).append((fut, result))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, pairs)
        except RuntimeError:  # the loop has closed (server shutting down): nobody waits for these answers
            pass


def _settle(pairs: list) -> None:
    for fut, result in pairs:
        if fut.done():  # the request was cancelled (client gone)
            continue
        if isinstance(result, Exception):
            fut.set_exception(result)
        else:
            fut.set_result(result)


def writer(app_state) -> CaseWriter:
    """The app's case writer, made on first use."""
    return per_app(app_state, "events_writer", lambda ctx: CaseWriter(
        ctx.sessions, capacity=ctx.settings.events_queue, registry=ctx.registry, locator=ctx.locator,
        group_wait=ctx.settings.events_group_wait_ms / 1000, writers=ctx.settings.events_writers))

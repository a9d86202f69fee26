"""The bus of one database: publishing into the outbox, and delivering it to subscriptions.

Two kinds of subscription:

- **durable** (``Subscription(kind="durable")``): once per deployment, each event applied exactly once. The
  handler runs in a transaction that also records ``(consumer, event id)`` in ``bus_processed``; that commit
  comes before the acknowledgement (the cursor moves, or JetStream is acked), so a crash in between redelivers
  an event that is then recognised and skipped. A handler that raises is retried (``bus_max_attempts`` in
  all, with back-off); then the event goes to ``bus_dead_letters`` with its error and the consumer moves on.
  Handlers must not commit: the bus does.
- **broadcast** (``kind="broadcast"``): every worker process, in memory, no transaction — cache invalidation
  and live streams. A failing listener is logged.

Transports (``Settings.bus_transport``): ``inprocess`` (default; nothing else to run) reads the outbox in order
per durable consumer in the one process that holds the ``bus.dispatch`` lease; ``jetstream`` relays the outbox
to NATS JetStream (``jetstream.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from cityops.core.bus import store
from cityops.core.bus.events import DomainEvent, Envelope
from cityops.core.bus.models import DeadLetter
from cityops.core.settings import Settings
from cityops.core.storage import storage_of

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("cityops.bus")



@dataclass(frozen=True)
class Subscription:
    consumer: str
    events: tuple[type[DomainEvent], ...]
    handler: Callable
    kind: Literal["durable", "broadcast"] = "durable"
    #: Durable: one event at a time across the deployment, in outbox order (JetStream: max_ack_pending=1).
    ordered: bool = True

    @property
    def names(self) -> set[str]:
        return {e.name for e in self.events}


# --------------------------------------------------------------------------------------------- publishing

def publish(session: Session, *events: DomainEvent) -> list[str]:
    """Write ``events`` to the outbox in the session's transaction (they exist if and only if it commits);
    the buses of this database hear of them after the commit."""
    if not events:
        return []
    # Other processes hear of them at commit: on PostgreSQL the outbox's statement trigger sends NOTIFY (migration
    # 0026c: no round trip of its own); SQLite processes poll.
    appended = store.append(session, list(events))
    # After the commit this process's readers take these envelopes from memory (the outbox stays the record: a
    # reader that cannot tell that nothing lies before them reads it as before).
    if (handoff := session.info.get("cityops_bus_handoff")) is None:
        session.info["cityops_bus_handoff"] = appended
    else:
        handoff.envelopes.extend(appended.envelopes)  # the first insert's place stands for the transaction's
    if not session.info.get("cityops_bus_rollbacks"):
        session.info["cityops_bus_rollbacks"] = True
        # Any rollback after the insert (a savepoint's included) may have taken rows of it: those envelopes are
        # not handed on (the readers read the outbox). A listener on this session only, for its life.
        event.listen(session, "after_soft_rollback", _after_rollback)
    if not session.info.get("cityops_bus_poke"):
        session.info["cityops_bus_poke"] = True
        # This process wakes its own buses at the commit (below); the NOTIFY of that commit is for other processes,
        # so the listener here leaves it alone (else every batch cost its reader a second, empty read).
        if (backend := store.backend_id(session)) is not None:
            _OWN_BACKENDS.setdefault(_key(session.get_bind().engine), set()).add(backend)
        # A listener on this session only (not a global one), removed after it fires.
        event.listen(session, "after_commit", _after_commit, once=True)
    return [env.id for env in appended.envelopes]


def _after_rollback(session: Session, _transaction) -> None:
    if (handoff := session.info.get("cityops_bus_handoff")) is not None:
        handoff.void = True


def _after_commit(session: Session) -> None:
    session.info.pop("cityops_bus_poke", None)
    handoff = session.info.pop("cityops_bus_handoff", None)
    bind = session.get_bind()
    for bus in list(_BUSES.get(_key(getattr(bind, "engine", bind)), ())):
        try:
            if bus.published is not None and handoff is not None:
                bus.published.add(handoff)  # SQLite: the poll does not wake the readers for it again
            if handoff is None or handoff.void:
                bus.wake(None if handoff is None else {env.name for env in handoff.envelopes})
            else:
                bus.offer(handoff)
        except Exception:  # noqa: BLE001
            # The transaction has committed: its caller must hear so (an ingest batch answered 500 would be sent
            # again for nothing). The readers find the events in the outbox at their next read.
            log.exception("waking the bus after a commit failed")
            bus.wake()


#: The running buses per database URL (a process may serve several databases, e.g. in tests).
_BUSES: dict[str, list["Bus"]] = {}
#: Per database URL, the server backends this process has published through (their NOTIFYs are its own).
_OWN_BACKENDS: dict[str, set[int]] = {}


def _key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


# -------------------------------------------------------------------------------------------------- metrics

class Metrics:
    def __init__(self, registry: CollectorRegistry | None):
        # Here, not at the module's import: a command that only publishes (writes to the outbox) runs no bus.
        from prometheus_client import CollectorRegistry, Counter, Gauge

        registry = registry if registry is not None else CollectorRegistry()
        self.delivered = Counter("cityops_bus_delivered_total", "Events applied by a durable consumer", ["consumer"], registry=registry)
        self.redeliveries = Counter("cityops_bus_redeliveries_total", "Event deliveries retried after a failure", ["consumer"], registry=registry)
        self.dead = Counter("cityops_bus_dead_letters_total", "Events given up after bus_max_attempts", ["consumer"], registry=registry)
        self.lag = Gauge("cityops_bus_lag_seconds", "From an event's commit to its consumer, last event", ["consumer"], registry=registry)
        self.timer_runs = Counter("cityops_timer_runs_total", "Runs of a periodic job in this process", ["timer"], registry=registry)
        self.timer_failures = Counter("cityops_timer_failures_total", "Failed runs of a periodic job", ["timer"], registry=registry)


# ------------------------------------------------------------------------------------------------ the bus

class Bus:
    """Delivers one database's outbox to its subscriptions, on the transport the settings name."""

    def __init__(self, engine: Engine, settings: Settings, *, registry: CollectorRegistry | None = None):
        self.engine = engine
        self.settings = settings
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.metrics = Metrics(registry)
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.subscriptions: list[Subscription] = []
        self.timers: list[Timer] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[_Reader] = []
        self._lease = threading.Event()  # set while this process holds the dispatch lease
        self._lease_term = 0  # counts the times this process took the lease (readers reload their cursors)
        self._start_lock = threading.Lock()
        self.transport = None
        self.started = False
        #: The last error of each consumer (for the dead-letter subject's header).
        self.errors: dict[str, str] = {}
        #: SQLite: what this process's commits wrote to the outbox (``store.Published``); PostgreSQL tells them apart
        #: by the NOTIFY's sender instead.
        self.published = None if storage_of(engine).commit_notifications else store.Published()

    def last_error(self, consumer: str) -> str:
        return self.errors.get(consumer, "")[:1000]

    # -- set-up
    def subscribe(self, sub: Subscription) -> None:
        if self.started:
            raise RuntimeError("subscribe before the bus starts")
        if any(s.consumer == sub.consumer for s in self.subscriptions):
            raise ValueError(f"consumer {sub.consumer!r} is subscribed twice")
        self.subscriptions.append(sub)

    def every(self, timer: "Timer") -> None:
        """Run ``timer`` once per its period per deployment (in the dispatch lease holder), while the bus runs."""
        if self.started:
            raise RuntimeError("add timers before the bus starts")
        if any(t.name == timer.name for t in self.timers):
            raise ValueError(f"timer {timer.name!r} is added twice")
        self.timers.append(timer)

    def ensure_started(self) -> "Bus":
        with self._start_lock:
            if not self.started:
                self.start()
        return self

    def register(self) -> "Bus":
        """Register the durable consumers (their cursors) without delivering yet: a new consumer receives what
        is committed from here on, whenever the bus starts."""
        with self.sessions() as s:
            for name in self._durable_names():
                store.cursor(s, name)
            s.commit()
        return self

    def _durable_names(self) -> list[str]:
        if self.settings.bus_transport == "jetstream":
            return ["bus.relay"]
        return [s.consumer for s in self.subscriptions if s.kind == "durable"]

    def start(self) -> "Bus":
        self.register()  # first: an unreachable database fails the start before anything is set up
        durable = [s for s in self.subscriptions if s.kind == "durable"]
        broadcast = [s for s in self.subscriptions if s.kind == "broadcast"]
        if self.settings.bus_transport == "jetstream":
            from cityops.core.bus.jetstream import JetStream

            self.transport = JetStream(self, durable, broadcast)
            self._workers.append(_Reader(self, "bus.relay", None, relay=self.transport.relay_batch))
        else:
            self._workers.extend(_Reader(self, s.consumer, s) for s in durable)
            if broadcast:
                self._workers.append(_Broadcast(self, broadcast))
        _BUSES.setdefault(_key(self.engine), []).append(self)
        self.started = True
        self._spawn(self._keep_lease, "bus-lease")
        for w in self._workers:
            self._spawn(w.run, f"bus-{w.name}")
        if self.transport is not None:
            self.transport.start()
        self._spawn(self._listen, "bus-listen")
        if self.timers:
            self._spawn(self._run_timers, "bus-timers")
        return self

    def _run_timers(self) -> None:
        """The lease holder tries each timer every so often; its tick in ``bus_timers`` says whether it is due."""
        check = max(0.2, min(5.0, min(t.seconds for t in self.timers) / 4))
        while not self._stop.wait(check):
            if not self._lease.is_set():
                continue
            for timer in self.timers:
                if self._stop.is_set():
                    return
                try:
                    run_timer(self, timer)
                except Exception:  # noqa: BLE001 - the database went away: the next check tries again
                    log.exception("timer %s could not run", timer.name)

    def _spawn(self, fn, name: str) -> None:
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        if not self.started:
            return
        self._stop.set()
        self.wake()
        if self.transport is not None:
            self.transport.stop()
        for t in self._threads:
            t.join(timeout=10)
        buses = _BUSES.get(_key(self.engine), [])
        if self in buses:
            buses.remove(self)
        self.started = False

    # -- waking
    def wake(self, names: set[str] | None = None) -> None:
        """Have the readers that consume any of ``names`` (the relay and the broadcast reader when they do), or every
        reader, read the outbox."""
        for w in self._workers:
            if names is None or w.names is None or not w.names.isdisjoint(names):
                w.poke()

    def offer(self, handoff: store.Appended) -> None:
        """A commit of this process: its events, for the readers to take from memory."""
        for w in self._workers:
            w.offer(handoff)

    def _listen(self) -> None:
        """Wake the readers when another process commits events (PostgreSQL NOTIFY; this process's own commits
        wake them directly); on SQLite one poll of the outbox's newest event for all of them, which leaves out
        what this process committed."""
        store.listen(self.engine, self._stop, self.wake, self.settings.bus_poll_seconds,
                     own=_OWN_BACKENDS.setdefault(_key(self.engine), set()), published=self.published)

    def _keep_lease(self) -> None:
        """One process per deployment dispatches durable consumers (or relays to JetStream): the lease holder.
        Another worker takes over within ``bus_lease_seconds`` of the holder's death."""
        ttl = self.settings.bus_lease_seconds
        file_lease = store.FileLease(self.engine, "bus") if self.engine.dialect.name == "sqlite" else None
        try:
            while not self._stop.is_set():
                held = self._renew(file_lease, ttl)
                if held and not self._lease.is_set():
                    log.info("bus: this process dispatches (lease %s)", self.holder)
                    self._lease_term += 1
                    self._lease.set()
                    self.wake()
                elif not held:
                    self._lease.clear()
                self._stop.wait(ttl / 3)
        finally:
            self._lease.clear()
            if file_lease is not None:
                file_lease.release()
            else:
                with self.sessions() as s:
                    store.release_lease(s, "bus.dispatch", self.holder)
                    s.commit()

    def _renew(self, file_lease, ttl: float) -> bool:
        if file_lease is not None:
            return file_lease.take()
        try:
            with self.sessions() as s:
                held = store.take_lease(s, "bus.dispatch", self.holder, ttl)
                s.commit()
            return held
        except Exception:  # noqa: BLE001 - a database hiccup: keep what we had until it expires
            log.exception("bus lease renewal failed")
            return self._lease.is_set()

    def dispatching(self) -> bool:
        """This process holds the dispatch lease: work that runs once per deployment (timers, the notification
        dispatcher) runs here now."""
        return self._lease.is_set()

    # -- operators and tests
    def dead_letters(self) -> list[DeadLetter]:
        with self.sessions() as s:
            return list(s.scalars(select(DeadLetter).order_by(DeadLetter.id)))

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until every event committed so far (and every event those cause) has been applied by every
        durable consumer (whichever process holds the lease) and heard by this process's listeners."""
        started = time.monotonic()
        woken = 0.0
        quiet = 0
        while quiet < 2:
            now = time.monotonic()
            if now - started > timeout:
                raise TimeoutError(f"bus not idle after {timeout} s")
            if now - woken > 1.0:  # not at every check: a reader woken again before it finished is never idle
                self.wake()
                woken = now
            time.sleep(0.02)
            quiet = 0 if self._busy() else quiet + 1

    def _busy(self) -> bool:
        if any(not w.idle() for w in self._workers):
            return True
        with self.sessions() as s:
            for w in self._workers:
                # The relay's own position when it runs here (its cursor is written only every so often).
                position = (w.unsaved or w.position) if isinstance(w, _Reader) and w.relay is not None else None
                if isinstance(w, _Reader) and store.has_after(s, position or store.cursor(s, w.name), w.sub and w.sub.names):
                    return True
        return self.transport is not None and not self.transport.idle()


# ----------------------------------------------------------------------------------------------- timers

@dataclass(frozen=True)
class Timer:
    """A periodic job of the deployment (SLA sweep, overdue tasks, alarm escalation): run once per
    ``seconds`` per deployment, however many workers serve it. Only the dispatch lease holder tries, and each
    run claims its tick in ``bus_timers`` in the job's own transaction (a conditional update: of two processes
    that both believe they hold the lease, one finds the tick taken), so a run is never doubled. The first
    sighting of a timer starts its clock: it first runs one period after the deployment first started it."""

    name: str
    seconds: float
    job: Callable[[Session], object]


def run_timer(bus: "Bus", timer: Timer) -> bool:
    """Run ``timer`` if its tick is due (claimed in the job's transaction); True when it ran."""
    try:
        with bus.sessions() as s:
            store.begin_write(s)
            if not store.claim_tick(s, timer.name, timer.seconds, bus.holder):
                s.commit()  # a first sighting's clock, else nothing
                return False
            timer.job(s)
            s.commit()
        bus.metrics.timer_runs.labels(timer.name).inc()
        return True
    except Exception:  # noqa: BLE001 - logged; the tick is taken all the same, so a failing job waits its period
        log.exception("timer %s failed", timer.name)
        bus.metrics.timer_failures.labels(timer.name).inc()
        with bus.sessions() as s:
            store.begin_write(s)
            store.claim_tick(s, timer.name, timer.seconds, bus.holder)
            s.commit()
        return False


# ------------------------------------------------------------------------------------- in-process delivery

class _Reader:
    """Reads the outbox in order after its cursor and applies each event (a durable consumer), or hands
    batches to the JetStream relay. Runs only in the lease holder.

    One transaction per batch: claim, handle, move the cursor, commit. While this process holds the lease the
    cursor is kept in memory (it is also written in each batch's transaction, for the next holder); it is read from
    the database again whenever the lease is taken anew.

    Where a batch comes from: the events a commit of this process wrote are handed over from memory
    (``offer``) when the reader knows that no event it has not seen lies before them in the outbox's order —
    its ``chain``: every event at or below it has been applied or is waiting in ``pending``. The chain grows by
    the commits of this process, each of which says where its events stand (``store.Appended``: the greatest
    position committed before them and, on PostgreSQL, the transactions still running that might commit events
    ordered before them), and is set again by every read of the outbox. Anything else — another process's commit
    (its NOTIFY, or the poll on SQLite), a commit that did not follow on, a rollback inside the publishing
    transaction, the lease taken anew, more than ``bus_batch`` events waiting — makes the reader read the outbox
    after its cursor, as it always did. Either way an event is applied in the transaction that moves the cursor
    past it and records it as processed, so nothing is lost and nothing applied twice."""

    def __init__(self, bus: Bus, name: str, sub: Subscription | None, relay=None):
        self.bus, self.name, self.sub, self.relay = bus, name, sub, relay
        #: What this reader applies; None: everything (the JetStream relay).
        self.names = sub.names if sub is not None else None
        self.wake = threading.Event()
        self._busy = True
        self.frontier = store.Frontier()
        self.position: tuple[int, int] | None = None
        self._term = -1  # the lease term the position was read in
        #: The relay's position not yet written to its cursor, and when the cursor was last written.
        self.unsaved: tuple[int, int] | None = None
        self.saved_at = 0.0
        self._lock = threading.Lock()  # chain, pending and must_read (publishing threads offer, this one takes)
        self.chain: tuple[int, int] | None = None
        self.pending: list[Envelope] = []
        self.must_read = True
        self.read_at = 0.0  # when the outbox was last read, and batches taken from memory since
        self.since_read = 0
        self.held = False  # the last read found committed events held back behind a running transaction
        #: Batches taken from memory and read from the outbox (tests, profiles).
        self.handed = self.read = 0

    def idle(self) -> bool:
        return not self._busy and not self.wake.is_set()

    def poke(self) -> None:
        """Read the outbox."""
        with self._lock:
            self.must_read = True
        self.wake.set()

    def offer(self, handoff: store.Appended) -> None:
        """A commit of this process (called in the publishing thread, after the commit)."""
        if self.relay is not None:
            # The JetStream relay reads the outbox for every commit, as before: the hand-over is the in-process
            # transport's (the relay's path across workers is not shown safe with it yet).
            self.poke()
            return
        mine = [e for e in handoff.envelopes if e.name in self.names]
        last = handoff.last
        with self._lock:
            chain = self.chain
            if chain is not None and last <= chain:
                return  # already read from the outbox
            if (chain is not None and handoff.prev <= chain and self.bus._lease.is_set()
                    and len(self.pending) + len(mine) <= self.bus.settings.bus_batch
                    and all(self.frontier.ours.get(x) is False for x in handoff.running)):
                self.pending.extend(mine)
                self.chain = last
                if not mine:
                    return
            else:
                # Not known to follow on: the outbox after the cursor has it (and what lies before it).
                self.chain = None
                self.pending.clear()
                if not mine:
                    return
                self.must_read = True
        self.wake.set()

    def _reset(self) -> None:
        with self._lock:
            self.chain = None
            self.pending.clear()
            self.must_read = True

    def run(self) -> None:
        bus = self.bus
        while not bus._stop.is_set():
            wait = store.reader_poll_seconds(bus.engine, bus.settings.bus_poll_seconds)
            if self.unsaved is not None:
                wait = min(wait, max(0.0, self.saved_at + bus.settings.bus_relay_checkpoint_seconds - time.monotonic()))
            woken = self.wake.wait(wait)
            if (not woken and self.unsaved is not None
                    and time.monotonic() - self.saved_at >= bus.settings.bus_relay_checkpoint_seconds):
                try:
                    self._checkpoint()  # the relay went quiet: the cursor it still owes
                except Exception:  # noqa: BLE001 - the database went away: a successor republishes (de-duplicated)
                    log.exception("bus relay could not write its cursor")
            self.wake.clear()
            if not woken:
                with self._lock:
                    self.must_read = True  # the backstop: a wake-up missed
            if not bus._lease.is_set():
                self.position = None
                self._reset()
                self._busy = False
                continue
            self._busy = True
            try:
                while not bus._stop.is_set() and self._round():
                    pass
            except Exception:  # noqa: BLE001 - the database went away: the loop tries again
                self.position = None
                self._reset()
                log.exception("bus reader %s failed", self.name)
                bus._stop.wait(1.0)
            self._busy = False
        if self.unsaved is not None:
            try:
                self._checkpoint()
            except Exception:  # noqa: BLE001 - the next holder publishes those events again (dropped as duplicates)
                log.exception("bus relay could not write its cursor on stopping")

    def _checkpoint(self) -> None:
        """Write the relay's cursor (only ever forward: a later holder may have moved it on)."""
        position, self.unsaved = self.unsaved, None
        with self.bus.sessions() as s:
            store.begin_write(s)
            store.advance(s, self.name, position)
            s.commit()
        self.saved_at = time.monotonic()

    def _start(self) -> tuple[int, int]:
        term = self.bus._lease_term
        if self.position is None or self._term != term:
            self._reset()
            with self.bus.sessions() as s:
                self.position = store.cursor(s, self.name)
                s.commit()
            self._term = term
        return self.position

    def _take(self, position: tuple[int, int]) -> tuple[list[Envelope], bool]:
        """The events handed over from memory (after ``position``), else whether the outbox must be read."""
        with self._lock:
            if self.since_read and time.monotonic() - self.read_at >= self.bus.settings.bus_poll_seconds:
                self.must_read = True  # the poll, also while commits of this process keep the reader busy
            if self.must_read and not (self.held and self.pending):
                # A read first (another process committed, say): a stream of commits handed over must not hold it
                # off. What waits in memory stays: after the read it is taken beyond the new position, or passed.
                # (After a read that found events held back, what waits is taken first: reading again at once
                # would find them held back still.)
                self.must_read = False
                self.read_at = time.monotonic()
                self.since_read = 0
                return [], True
            batch = [env for env in self.pending if env.position > position]
            self.pending.clear()
            self.held = False
            self.since_read += bool(batch)
        return batch, False

    def _covered(self, covered: tuple[int, int] | None) -> None:
        """A read saw every event up to ``covered``, and its batch is applied: the chain goes on from there."""
        if covered is None:
            return
        with self._lock:
            if self.chain is None or covered > self.chain:
                self.chain = covered

    def _round(self) -> bool:
        """One batch; True when there may be more."""
        bus, limit = self.bus, self.bus.settings.bus_batch
        position = self._start()
        names = self.names
        batch, must_read = self._take(position)
        covered: list = [None]
        from_memory = bool(batch)
        if batch:
            self.handed += 1
            taken = batch

            def read(_s):
                return taken
        elif not must_read:
            return False
        else:
            self.read += 1

            def read(s):
                got, covered[0] = store.read_covered(s, position, names, limit, self.frontier)
                if s.info.pop("cityops_bus_held_back", False):
                    # Committed events held back behind a running transaction (another process's, say, behind one of
                    # this process): read again at the next wake (a commit handed over says nothing of them).
                    with self._lock:
                        self.must_read = self.held = True
                return got
        if self.relay is not None:
            with bus.sessions() as s:
                batch = read(s)
            if batch:
                self.relay(batch)  # acknowledged by JetStream before the position moves
                self.position = self.unsaved = batch[-1].position
                # The cursor is written at most every bus_relay_checkpoint_seconds, not in a transaction per batch:
                # the stream's de-duplication by message id covers what a successor publishes again.
                if time.monotonic() - self.saved_at >= bus.settings.bus_relay_checkpoint_seconds:
                    self._checkpoint()
        else:
            batch, done = read_and_apply(bus, self.sub, read)
            if batch and done:
                self.position = batch[-1].position
            elif batch:
                for env in batch:  # one of them failed: each on its own, with retries and dead letters
                    if bus._stop.is_set():
                        return False
                    if apply(bus, self.sub, env, advance=True) == "retry":  # stopping
                        return False
                    self.position = env.position
        self._covered(covered[0])  # the batch is applied (or relayed): what the read saw is accounted for
        if batch:
            bus.metrics.lag.labels(self.name).set(max(0.0, time.time() - batch[-1].occurred_ms / 1000))
        # Taken from memory: look again; read: more when the batch was full, or what waits in memory.
        return from_memory or len(batch) == limit or bool(self.pending)


def apply_batch(bus: Bus, sub: Subscription, envs: list[Envelope], *, advance: bool) -> bool:
    """Apply several events in one transaction (one commit for the lot, then the acknowledgement); False, with
    nothing applied, when any of them fails (the caller then applies them one by one)."""
    try:
        with bus.sessions() as s:
            applied = _apply_in(s, sub, envs, advance)
    except Exception:  # noqa: BLE001 - found again, with its error, one by one
        return False
    bus.metrics.delivered.labels(sub.consumer).inc(applied)
    return True


def read_and_apply(bus: Bus, sub: Subscription, read: Callable[[Session], list[Envelope]]) -> tuple[list[Envelope], bool]:
    """The in-process reader's batch: read after the cursor and apply in the same transaction (the read before it
    becomes the writer, so an empty read never holds SQLite's writer lock). Returns the batch and whether it was
    applied; a failed read raises."""
    with bus.sessions() as s:
        batch = read(s)
        if not batch:
            return batch, True
        _validate(batch)
        try:
            applied = _apply_in(s, sub, batch, True)
        except Exception:  # noqa: BLE001 - found again, with its error, one by one
            return batch, False
    bus.metrics.delivered.labels(sub.consumer).inc(applied)
    return batch, True


def _validate(batch: list[Envelope]) -> None:
    """Validate the payloads before the transaction becomes the writer, so that (on SQLite) the writer lock the
    publisher also needs is not held for it. A payload that fails is left for its handler to meet again (retried,
    then dead-lettered)."""
    for env in batch:
        try:
            env.payload
        except Exception:  # noqa: BLE001, S110 - raised again where the handler reads it
            pass


def _apply_in(s: Session, sub: Subscription, envs: list[Envelope], advance: bool) -> int:
    store.begin_write(s)
    applied = 0
    ids = [env.id for env in envs]
    if advance:
        claimed = store.claim_and_advance(s, sub.consumer, ids, envs[-1].position)
    else:
        claimed = store.claim_many(s, sub.consumer, ids)
    for env in envs:
        if env.id in claimed:
            claimed.discard(env.id)  # the same event twice in one batch (a redelivery): applied once
            sub.handler(s, env)
            applied += 1
    s.commit()
    return applied


def apply(bus: Bus, sub: Subscription, env: Envelope, *, advance: bool, attempt: int | None = None) -> str:
    """Apply ``env`` to a durable consumer: claim + handler (+ cursor) in one transaction, retried with back-off.
    Returns "done" (applied, or applied before), "dead" (dead-lettered) or, with ``attempt`` (JetStream counts
    the deliveries, one try here), "retry"."""
    tries = range(attempt, attempt + 1) if attempt is not None else range(1, bus.settings.bus_max_attempts + 1)
    for n in tries:
        try:
            with bus.sessions() as s:
                store.begin_write(s)
                if store.claim(s, sub.consumer, env.id):
                    sub.handler(s, env)
                    bus.metrics.delivered.labels(sub.consumer).inc()
                if advance:
                    store.advance(s, sub.consumer, env.position)
                s.commit()
            return "done"
        except Exception as exc:  # noqa: BLE001 - any failure of a handler is retried, then dead-lettered
            error = f"{type(exc).__name__}: {exc}"
            bus.errors[sub.consumer] = error
            if n >= bus.settings.bus_max_attempts:
                log.exception("bus: %s gives up on %s %s after %d attempts", sub.consumer, env.name, env.id, n)
                with bus.sessions() as s:
                    store.begin_write(s)
                    store.dead_letter(s, sub.consumer, env, error, n)
                    store.claim(s, sub.consumer, env.id)
                    if advance:
                        store.advance(s, sub.consumer, env.position)
                    s.commit()
                bus.metrics.dead.labels(sub.consumer).inc()
                return "dead"
            bus.metrics.redeliveries.labels(sub.consumer).inc()
            log.warning("bus: %s failed on %s %s (attempt %d): %s", sub.consumer, env.name, env.id, n, exc)
            if attempt is not None:
                return "retry"
            bus._stop.wait(min(2.0, 0.05 * 2 ** n))
            if bus._stop.is_set():
                break
    return "retry"


class _Broadcast:
    """Every process: reads what is committed from its start on and tells the broadcast listeners."""

    name = "broadcast"

    def __init__(self, bus: Bus, subs: list[Subscription]):
        self.bus, self.subs = bus, subs
        self.names = set().union(*(s.names for s in subs))
        self.wake = threading.Event()
        self._busy = True
        self.frontier = store.Frontier()
        with bus.sessions() as s:
            self.position = store.head(s)

    def idle(self) -> bool:
        return not self._busy and not self.wake.is_set()

    def poke(self) -> None:
        self.wake.set()

    def offer(self, handoff: store.Appended) -> None:
        """A commit of this process: read the outbox when it wrote anything listened to."""
        if any(env.name in self.names for env in handoff.envelopes):
            self.wake.set()

    def run(self) -> None:
        bus = self.bus
        while not bus._stop.is_set():
            self.wake.wait(store.reader_poll_seconds(bus.engine, bus.settings.bus_poll_seconds))
            self.wake.clear()
            self._busy = True
            try:
                while True:
                    with bus.sessions() as s:
                        batch = store.read_after(s, self.position, self.names, bus.settings.bus_batch, self.frontier)
                    for env in batch:
                        deliver_broadcast(self.subs, env)
                    if batch:
                        self.position = batch[-1].position
                    if len(batch) < bus.settings.bus_batch:
                        break
            except Exception:  # noqa: BLE001
                log.exception("bus broadcast reader failed")
                bus._stop.wait(1.0)
            self._busy = False


def deliver_broadcast(subs: list[Subscription], env: Envelope) -> None:
    for sub in subs:
        if env.name in sub.names:
            try:
                sub.handler(env)
            except Exception:  # noqa: BLE001 - a listener's failure is its own
                log.exception("bus listener %s failed on %s", sub.consumer, env.name)

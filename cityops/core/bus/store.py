"""The outbox in the database, the same on both backends; what differs between them is here.

Reading in order without skipping: outbox rows get their ``seq`` when inserted, but transactions commit in
their own order. On SQLite there is one writer at a time, so ``seq`` is commit order. On PostgreSQL a reader
could see seq 12 committed while seq 11 is still in flight, move past it, and never see 11. So each row carries
its transaction id (``tx``) and readers take only rows of transactions older than every transaction of this
database still running (``Frontier``), in (tx, seq) order: that set never grows below the cursor.
"""

from __future__ import annotations

import threading

from sqlalchemy import Integer, and_, bindparam, delete, func, insert, literal_column, or_, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cityops.core import db
from cityops.core.bus.events import DomainEvent, Envelope
from cityops.core.bus.outbox import now_ms, rows as outbox_rows
from cityops.core.bus.models import Cursor, DeadLetter, Lease, OutboxEvent, Processed, TimerRun
from cityops.core.storage import storage_of


class Appended:
    """What a transaction wrote to the outbox, as its envelopes, and where they stand in the outbox's order: what the
    in-process readers may take from memory once it commits (``runtime._Reader.offer``)."""

    __slots__ = ("envelopes", "prev", "running", "void")

    def __init__(self, envelopes: list[Envelope], prev: tuple[int, int], running: tuple[int, ...]):
        self.envelopes = envelopes
        #: The greatest position committed before these events in the outbox's order, at the insert: every event
        #: ordered before them is at or below it, once ``running`` are over.
        self.prev = prev
        #: PostgreSQL: the transactions running at the insert with a lower id (they may still commit events ordered
        #: before these, unless they belong to another database).
        self.running = running
        #: A rollback happened in the transaction after the insert (a savepoint's rows may be gone): not handed on.
        self.void = False

    @property
    def last(self) -> tuple[int, int]:
        return max(env.position for env in self.envelopes)


def append(session: Session, events: list[DomainEvent]) -> Appended:
    """Add events to the outbox in the session's transaction; returns them as envelopes, with their place in the
    outbox's order."""
    ms = now_ms()
    ids, rows = outbox_rows(events, ms)
    pg = session.get_bind().dialect.name == "postgresql"
    # Core on the table: the ORM's bulk path adds per-row bookkeeping an outbox row never needs. RETURNING makes
    # SQLAlchemy send the rows as multi-row INSERTs ("insertmanyvalues"): on PostgreSQL one statement for a batch,
    # not one execution per row.
    returned = session.execute(_APPEND_PG if pg else _APPEND, rows).all()
    where = {r.event_id: r for r in returned}
    envelopes = []
    for i, e in zip(ids, events):
        r = where[i]
        envelopes.append(Envelope(i, r.seq, r.tx, e.name, e.version, occurred_ms=ms, payload=e))
    if not pg:
        # One writer at a time, which holds the database from before this insert to its commit, and seq = the
        # greatest rowid + 1: every event committed before these has a lower seq.
        return Appended(envelopes, (0, min(r.seq for r in returned) - 1), ())
    first = returned[0]
    prev = tuple(int(x) for x in first.prev.split(":")) if first.prev else (0, 0)
    _xmin, xmax, xip = first.snap.split(":")
    running = [x for x in (int(v) for v in xip.split(",") if v) if x < first.tx]
    # A snapshot's xmax is one past the highest *completed* transaction id, and its xip lists running ids below xmax
    # only: an id in [xmax, tx) was handed to a transaction that had not completed when the insert ran (another
    # process's, typically, that got its id just before this one), so it is running too and may still commit events
    # ordered before these. Left out, such a commit was passed by a reader that took these from memory and moved
    # its cursor beyond them (events lost with several workers publishing at once).
    gap = first.tx - int(xmax)
    if gap > _GAP_LISTED:
        appended = Appended(envelopes, prev, ())
        appended.void = True  # too many to know of: the readers read the outbox
        return appended
    running.extend(range(int(xmax), first.tx))
    return Appended(envelopes, prev, tuple(running))


#: The most ids between a snapshot's xmax and the inserting transaction's own id listed as running (beyond that the
#: hand-over is not tried: a reader would not know them all).
_GAP_LISTED = 64


#: The hot path's statements are built once: building a statement and computing its cache key on every call cost
#: more of the reader's time than the database did on SQLite (a built statement keeps its cache key).
_APPEND = insert(OutboxEvent.__table__).returning(OutboxEvent.__table__.c.event_id, OutboxEvent.__table__.c.seq,
                                                  OutboxEvent.__table__.c.tx)
#: PostgreSQL: also, from the insert's snapshot, the greatest position of an earlier transaction (the index on
#: (tx, seq) read backwards: one entry) and the transactions still running; both uncorrelated, evaluated once.
_APPEND_PG = _APPEND.returning(
    literal_column("(SELECT o.tx::text || ':' || o.seq::text FROM bus_outbox o WHERE o.tx < pg_current_xact_id()::text::bigint"
                   " ORDER BY o.tx DESC, o.seq DESC LIMIT 1)").label("prev"),
    literal_column("pg_current_snapshot()::text").label("snap"))


class Frontier:
    """Where a PostgreSQL reader may read up to: events of transactions older than every transaction *of this
    database* still running at the read's snapshot (``tx < frontier``).

    The read's statement also returns its snapshot (``pg_current_snapshot()``, the same snapshot as its rows).
    The snapshot's running transaction ids (``xip``) are cluster-wide: one of another database never writes this
    outbox, so it must not hold the frontier back (another application's long transaction would stall delivery);
    telling them apart needs ``pg_stat_activity``, a scan of every backend. So which database a running
    transaction belongs to is remembered here (it never changes), and ``pg_stat_activity`` is read only when an
    unknown running transaction would hold back rows this read found. A running id not found there (it ended
    since the snapshot, or it is a subtransaction) blocks this read only: the next snapshot no longer has it."""

    def __init__(self):
        #: running transaction id (64-bit) → True when it belongs to this database.
        self.ours: dict[int, bool] = {}
        self.lookups = 0  # pg_stat_activity reads (tests, profiles)

    def limit(self, session: Session, snapshot: str, candidates: list[int]) -> int:
        """The frontier for ``snapshot`` ('xmin:xmax:xip,...'), given the ``tx`` of the rows read beyond the cursor."""
        xmin, xmax, xip = snapshot.split(":")
        running = [int(x) for x in xip.split(",") if x]
        xmin = int(xmin)
        for x in [x for x in self.ours if x < xmin]:  # ended: forget
            del self.ours[x]
        top = max(candidates, default=0)
        unknown = [x for x in running if x < top and x not in self.ours]
        if unknown:
            self.lookups += 1
            found = {x: ours for x, ours in session.execute(_RUNNING)}
            for x in running:  # all of them: a commit handed over in memory is checked against them too
                if (db := found.get(x % 4294967296)) is not None:
                    self.ours[x] = db
        blocking = [x for x in running if self.ours.get(x, True)]
        return min(blocking, default=int(xmax))


#: Running transactions (with an id) and whether each belongs to this database.
_RUNNING = text("SELECT backend_xid::text::bigint, datname IS NOT DISTINCT FROM current_database() "
                "FROM pg_stat_activity WHERE backend_xid IS NOT NULL")


_OUTBOX = OutboxEvent.__table__
#: The columns an envelope is made of, read as plain rows (Core: no ORM identity map for rows only passed on).
_COLUMNS = (_OUTBOX.c.event_id, _OUTBOX.c.seq, _OUTBOX.c.tx, _OUTBOX.c.name, _OUTBOX.c.version, _OUTBOX.c.created_ms,
            _OUTBOX.c.payload)


def read_after(session: Session, position: tuple[int, int], names: set[str] | None, limit: int,
               frontier: Frontier | None = None) -> list[Envelope]:
    """Up to ``limit`` events after ``position`` (tx, seq), in order; only ``names`` when given. On PostgreSQL only
    events below the frontier (``Frontier``; a reader passes its own to keep what it learnt between reads)."""
    return read_covered(session, position, names, limit, frontier)[0]


#: A position after every event of a transaction (seq is a 64-bit integer).
END = 2**63


def read_covered(session: Session, position: tuple[int, int], names: set[str] | None, limit: int,
                 frontier: Frontier | None = None) -> tuple[list[Envelope], tuple[int, int] | None]:
    """``read_after``, and the position up to which the read saw every event there will ever be (of ``names``): no
    event at or below it is missing from the batch or before ``position``. None when the batch is full (there may
    be more) or, on PostgreSQL, when nothing was found (the snapshot comes with the rows)."""
    pg = session.get_bind().dialect.name == "postgresql"
    key = (frozenset(names) if names is not None else None, pg)
    if (q := _READS.get(key)) is None:
        q = select(*_COLUMNS).where(tuple_(_OUTBOX.c.tx, _OUTBOX.c.seq) > tuple_(bindparam("tx"), bindparam("seq")))
        if names is not None:
            q = q.where(_OUTBOX.c.name.in_(sorted(names)))
        q = q.order_by(_OUTBOX.c.tx, _OUTBOX.c.seq).limit(bindparam("limit", type_=Integer))
        if pg:  # one statement: the rows and the snapshot they were read in (one round trip, no backend scan)
            q = q.add_columns(text("pg_current_snapshot()::text"))
        _READS[key] = q
    rows = session.execute(q, {"tx": position[0], "seq": position[1], "limit": limit}).all()
    if not pg:
        batch = [envelope(r) for r in rows]
        # One writer at a time: whatever commits after this read gets a greater seq than the newest now.
        covered = (0, session.execute(_NEWEST).scalar() or 0) if len(batch) < limit else None
        return batch, covered
    if not rows:
        return [], None
    limit_tx = (frontier or Frontier()).limit(session, rows[0][-1], [r.tx for r in rows])
    batch = [envelope(r) for r in rows if r.tx < limit_tx]
    if len(batch) < len(rows):
        session.info["cityops_bus_held_back"] = True  # committed events a running transaction holds back
    # Every transaction below the frontier is over: all its events were visible to this read.
    return batch, ((limit_tx - 1, END) if len(batch) < limit else None)


_NEWEST = select(func.max(_OUTBOX.c.seq))


#: read_after's statements per (event names, PostgreSQL), built once.
_READS: dict = {}


def has_after(session: Session, position: tuple[int, int], names: set[str] | None) -> bool:
    """Whether any committed event lies after ``position``, visible to readers yet or not (for "idle")."""
    q = select(OutboxEvent.seq).where(tuple_(OutboxEvent.tx, OutboxEvent.seq) > tuple_(*position))
    if names is not None:
        q = q.where(OutboxEvent.name.in_(sorted(names)))
    return session.execute(q.limit(1)).first() is not None


def envelope(row) -> Envelope:
    """An outbox row (an ``OutboxEvent`` or a row of its columns) as an envelope (its payload validated on use)."""
    return Envelope(row.event_id, row.seq, row.tx, row.name, row.version, occurred_ms=row.created_ms, data=row.payload)


def head(session: Session) -> tuple[int, int]:
    """The position of the newest event a reader may read now ((0, 0) when the outbox is empty)."""
    q = select(OutboxEvent.tx, OutboxEvent.seq).order_by(OutboxEvent.tx.desc(), OutboxEvent.seq.desc()).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        row = session.execute(q.add_columns(text("pg_current_snapshot()::text"))).first()
        if row is None:
            return 0, 0
        frontier = Frontier().limit(session, row[2], [row[0]])
        if row[0] >= frontier:  # the newest is held back: the newest below the frontier
            row = session.execute(q.where(OutboxEvent.tx < frontier)).first()
    else:
        row = session.execute(q).first()
    return (row[0], row[1]) if row else (0, 0)


def cursor(session: Session, consumer: str) -> tuple[int, int]:
    """The consumer's position; a consumer seen for the first time starts at the head (it receives what is
    published from now on, as a new JetStream consumer with the ``new`` deliver policy does)."""
    row = session.get(Cursor, consumer)
    if row is not None:
        return row.tx, row.seq
    tx, seq = head(session)
    try:
        with session.begin_nested():
            session.add(Cursor(consumer=consumer, tx=tx, seq=seq, updated_ms=now_ms()))
    except IntegrityError:  # another worker registered it first
        row = session.get(Cursor, consumer)
        return row.tx, row.seq
    return tx, seq


_CURSORS = Cursor.__table__


#: On the table (Core), not the mapped class: an ORM UPDATE first works out which loaded objects to refresh.
_ADVANCE = (update(_CURSORS).where(_CURSORS.c.consumer == bindparam("name"),
                                   tuple_(_CURSORS.c.tx, _CURSORS.c.seq) < tuple_(bindparam("to_tx"), bindparam("to_seq")))
            .values(tx=bindparam("to_tx"), seq=bindparam("to_seq"), updated_ms=bindparam("ms")))


def advance(session: Session, consumer: str, position: tuple[int, int]) -> None:
    """Move the consumer's cursor to ``position`` (only ever forward)."""
    session.execute(_ADVANCE, {"name": consumer, "to_tx": position[0], "to_seq": position[1], "ms": now_ms()})


def claim(session: Session, consumer: str, event_id: str) -> bool:
    """Record that ``consumer`` applies ``event_id`` in this transaction; False when it already has (on
    PostgreSQL a concurrent claim waits for the other transaction and then finds it)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = dialect_insert(Processed.__table__).values(consumer=consumer, event_id=event_id, processed_ms=now_ms())
    table = Processed.__table__
    return session.execute(stmt.on_conflict_do_nothing().returning(table.c.event_id)).first() is not None


def claim_many(session: Session, consumer: str, event_ids: list[str]) -> set[str]:
    """``claim`` for a batch in one statement (one round trip instead of one per event): the ids this transaction
    now applies; those ``consumer`` has applied before are left out."""
    if not event_ids:
        return set()
    dialect = session.get_bind().dialect.name
    if (stmt := _CLAIMS.get(dialect)) is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        table = Processed.__table__
        # An executemany of one statement, which SQLAlchemy sends as multi-row INSERTs ("insertmanyvalues"): a
        # VALUES list built per batch was compiled anew each time (its length varies), the reader's largest cost.
        stmt = _CLAIMS[dialect] = dialect_insert(table).on_conflict_do_nothing().returning(table.c.event_id)
    ms = now_ms()
    rows = [{"consumer": consumer, "event_id": i, "processed_ms": ms} for i in event_ids]
    return set(session.execute(stmt, rows).scalars())


#: claim_many's statement per dialect, built once.
_CLAIMS: dict = {}


#: PostgreSQL: a batch's claims and its cursor in one statement (one round trip; a data-modifying WITH always runs).
_CLAIM_AND_ADVANCE = text("""
  WITH moved AS (UPDATE bus_cursors SET tx = :tx, seq = :seq, updated_ms = :ms
                  WHERE consumer = :consumer AND (tx, seq) < (:tx, :seq))
  INSERT INTO bus_processed (consumer, event_id, processed_ms)
  SELECT :consumer, id, :ms FROM unnest(CAST(:ids AS text[])) AS id
  ON CONFLICT DO NOTHING RETURNING event_id""")


def claim_and_advance(session: Session, consumer: str, event_ids: list[str], position: tuple[int, int]) -> set[str]:
    """``claim_many`` and ``advance`` together, in the session's transaction: the ids this transaction applies."""
    if session.get_bind().dialect.name != "postgresql":
        claimed = claim_many(session, consumer, event_ids)
        advance(session, consumer, position)
        return claimed
    return set(session.scalars(_CLAIM_AND_ADVANCE, {"tx": position[0], "seq": position[1], "ms": now_ms(),
                                                    "consumer": consumer, "ids": event_ids}))


def dead_letter(session: Session, consumer: str, env: Envelope, error: str, attempts: int) -> None:
    if session.scalar(select(DeadLetter.id).where(DeadLetter.consumer == consumer, DeadLetter.event_id == env.id)):
        return
    session.add(DeadLetter(consumer=consumer, event_id=env.id, seq=env.seq, name=env.name, version=env.version,
                           payload=env.data, error=error[:4000], attempts=attempts,
                           dead_ms=now_ms()))


def begin_write(session: Session) -> None:
    """Start the session's transaction as the embedded store's writer (``core.db.begin_write``)."""
    db.begin_write(session)


class FileLease:
    """The lease on SQLite: an ``flock`` on ``<database>-<name>.lock``, held while the process lives (the kernel
    releases it when the holder dies). A lease row would be a write every few seconds, and on SQLite every write
    makes a concurrent transaction that has read and then writes fail with "database is locked"."""

    def __init__(self, engine, name: str):
        self.path = f"{engine.url.database}-{name}.lock"
        self.fd: int | None = None

    def take(self) -> bool:
        import fcntl
        import os

        if self.fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        import os

        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def take_lease(session: Session, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease ``name`` for ``holder``; False while another holder's lease runs."""
    ms = now_ms()
    until = ms + int(seconds * 1000)
    taken = session.execute(update(Lease).where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_ms < ms))
                            .values(holder=holder, expires_ms=until)).rowcount
    if not taken:
        if session.get(Lease, name) is not None:
            return False
        try:
            with session.begin_nested():
                session.add(Lease(name=name, holder=holder, expires_ms=until))
        except IntegrityError:
            return False
    return True


def release_lease(session: Session, name: str, holder: str) -> None:
    session.execute(delete(Lease).where(and_(Lease.name == name, Lease.holder == holder)))


def backend_id(session: Session) -> int | None:
    """The server backend (PostgreSQL process id) of the session's connection, as a NOTIFY names its sender; None
    on SQLite. Read from the driver's connection, no round trip."""
    dbapi = session.connection().connection.dbapi_connection
    info = getattr(dbapi, "info", None)
    return getattr(info, "backend_pid", None)


#: On SQLite the readers' own poll is only a backstop: ``listen`` polls the outbox once for all of them.
SQLITE_READER_BACKSTOP_S = 15.0


def reader_poll_seconds(engine, poll_seconds: float) -> float:
    """How long a reader waits for a wake-up before it reads the outbox anyway: ``poll_seconds`` on PostgreSQL
    (its LISTEN ignores this process's own connections, whose process ids the server may hand to another client),
    a backstop on SQLite, where ``listen`` polls for every reader."""
    return poll_seconds if storage_of(engine).commit_notifications else max(poll_seconds, SQLITE_READER_BACKSTOP_S)


def listen(engine, stop, wake, poll_seconds: float, own: set[int] = frozenset(),
           published: "Published | None" = None) -> None:
    """Call ``wake`` whenever another process commits events (PostgreSQL LISTEN; the outbox's statement trigger
    sends the NOTIFY, delivered at commit), until ``stop`` is set. NOTIFYs sent by the backends in ``own`` (this
    process's connections, whose commits wake the readers directly) are ignored; should the server reuse such a
    process id for another client, its events are found by the readers' poll instead (``poll_seconds``).

    SQLite has no NOTIFY: one query every ``poll_seconds`` for the newest event, and ``wake`` when events came
    that this process did not commit itself (``published``: what its commits wrote; without it, whenever the newest
    changed). Each of a server's 20-odd readers polled the outbox itself every ``poll_seconds`` before: 40 reads a
    second with nothing to find, a tenth of the server's CPU under 500 household updaters (py-spy), each read a
    pooled connection that the updaters' peak then had to open anew."""
    if not storage_of(engine).commit_notifications:
        _poll_newest(engine, stop, wake, poll_seconds, published)
        return
    import psycopg

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    while not stop.is_set():
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("LISTEN cityops_bus")
                while not stop.is_set():
                    for note in conn.notifies(timeout=poll_seconds, stop_after=1):
                        if note.pid not in own:
                            wake()
        except Exception:  # noqa: BLE001 - the server went away: readers still poll; listen again shortly
            stop.wait(1.0)


class Published:
    """SQLite: the stretches of the outbox that this process's commits wrote, for the newest-event poll to tell them
    from other processes' commits. This process wakes its own readers at each commit, so a poll that woke them
    for those too gave each of 20-odd readers an extra read per poll during case intake (thousands of commits a
    second). One writer at a time, and seq = the greatest rowid + 1: a commit's events are every seq in
    ``(prev, last]`` of its ``Appended`` (the outbox is written by ``publish`` only)."""

    #: Stretches kept at most: a poll that keeps failing must not let them grow without bound (those dropped make
    #: the next poll wake the readers, as before).
    LIMIT = 10_000

    def __init__(self):
        self._lock = threading.Lock()  # publishing threads add, the poll's thread takes
        self._spans: list[tuple[int, int]] = []

    def add(self, appended: Appended) -> None:
        """A commit of this process (after it committed: recorded before, a commit that failed would leave its seqs
        for another process's events)."""
        prev, last = appended.prev[1], appended.last[1]
        with self._lock:
            spans = self._spans
            if spans and spans[-1][1] == prev:  # follows on from the previous commit (intake: the usual case)
                spans[-1] = (spans[-1][0], last)
            else:
                if len(spans) >= self.LIMIT:
                    spans.clear()
                spans.append((prev, last))

    def covers(self, since: int, newest: int) -> bool:
        """Whether this process committed every event after seq ``since`` up to ``newest``."""
        with self._lock:
            spans = sorted(self._spans)
        reach = since
        for prev, last in spans:
            if prev > reach:
                break
            reach = max(reach, last)
        return reach >= newest

    def forget(self, newest: int) -> None:
        """The poll has seen up to seq ``newest``: the stretches at or below it are of no more use."""
        with self._lock:
            self._spans = [s for s in self._spans if s[1] > newest]


#: How long the poll waits for this process's publishing threads to record commits it already sees (the record
#: follows the commit; a thread waiting for the GIL takes a few ms) before it takes them for another process's.
_RECORD_GRACE_S = 0.05


def _poll_newest(engine, stop, wake, poll_seconds: float, published: Published | None = None) -> None:
    newest = -1  # the first poll wakes the readers: whatever came before it is read once more, never missed
    while not stop.wait(poll_seconds):
        try:
            with engine.connect() as conn:
                seen = conn.execute(_NEWEST).scalar() or 0
        except Exception:  # noqa: BLE001 - the store went away for a moment: the next poll tries again
            continue
        if seen == newest:
            continue
        # Only this process's commits since the last poll: its readers heard of each at its commit. In doubt (the
        # first poll, the outbox emptied, a stretch not recorded), wake: a needless read, never a missed event.
        own = published is not None and 0 <= newest < seen and (
            published.covers(newest, seen)
            or (not stop.wait(min(_RECORD_GRACE_S, poll_seconds)) and published.covers(newest, seen)))
        if published is not None:
            published.forget(seen)
        newest = seen
        if not own:
            wake()


def claim_tick(session: Session, name: str, seconds: float, holder: str) -> bool:
    """Take the timer ``name``'s tick if ``seconds`` passed since its last run, in the caller's transaction (on
    PostgreSQL a concurrent claim waits for it and then finds the tick taken). A timer seen for the first time
    starts its clock and does not run."""
    ms = now_ms()
    taken = session.execute(update(TimerRun).where(TimerRun.name == name, TimerRun.last_ms <= ms - int(seconds * 1000))
                            .values(last_ms=ms, holder=holder, runs=TimerRun.runs + 1)).rowcount
    if taken:
        return True
    if session.get(TimerRun, name) is None:
        try:
            with session.begin_nested():
                session.add(TimerRun(name=name, last_ms=ms, holder=holder, runs=0))
        except IntegrityError:
            pass
    return False

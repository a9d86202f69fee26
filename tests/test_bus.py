"""The event bus on both backends, in process: an event exists if and only if its change commits; each
durable consumer applies each event once, in order, after retries; a poison event goes to the dead letters
with its error and the consumer goes on; broadcast listeners hear every event; on PostgreSQL an event
committed after a later one is not skipped."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, func, insert, select, text, update

from cityops.core.bus import Bus, DomainEvent, Subscription, event_type, publish
from cityops.core.bus.events import REGISTRY
from cityops.core.bus.models import Cursor, OutboxEvent, Processed
from tests.conftest import make_store


@event_type
class Counted(DomainEvent):
    name = "testbus.counted"
    version = 1
    n: int
    label: str = ""


META = MetaData()
#: What a consumer writes: the effect whose count shows "applied once".
APPLIED = Table("testbus_applied", META, Column("id", Integer, primary_key=True), Column("consumer", Text),
                Column("n", Integer))


@pytest.fixture(params=["sqlite", "postgis"])
def store(request, tmp_path):
    s, close = make_store(request.param, tmp_path / "data", bus_poll_seconds=0.05, bus_max_attempts=3)
    META.create_all(s.engine)
    yield s
    close()


def _applied(store, consumer="c") -> list[int]:
    with store.sessions() as s:
        return list(s.scalars(select(APPLIED.c.n).where(APPLIED.c.consumer == consumer).order_by(APPLIED.c.id)))


def _record(consumer: str, fail: dict | None = None):
    def handler(session, env):
        if fail is not None and fail.get(env.payload.n, 0) > 0:
            fail[env.payload.n] -= 1
            raise RuntimeError(f"cannot take {env.payload.n}")
        session.execute(insert(APPLIED).values(consumer=consumer, n=env.payload.n))
    return handler


def _bus(store, *subs, settings=None) -> Bus:
    bus = Bus(store.engine, settings or store.settings)
    for sub in subs:
        bus.subscribe(sub)
    return bus.start()


def _publish(store, *ns, commit=True):
    with store.sessions() as s:
        publish(s, *(Counted(n=n) for n in ns))
        s.execute(text("SELECT 1"))
        if commit:
            s.commit()
        else:
            s.rollback()


def test_payloads_are_typed_and_registered():
    assert REGISTRY[("testbus.counted", 1)] is Counted
    with pytest.raises(ValueError):
        Counted(n="not a number")
    with pytest.raises(ValueError):
        Counted(n=1, unknown=2)
    with pytest.raises(ValueError, match="twice"):
        @event_type
        class Again(DomainEvent):
            name = "testbus.counted"
            version = 1


@event_type
class Unrelated(DomainEvent):
    name = "testbus.unrelated"
    version = 1


class _CountedWake:
    """A reader's wake flag that counts who set it (the reader clears it as it goes)."""

    def __init__(self, flag):
        self.flag, self.sets = flag, 0

    def set(self):
        self.sets += 1
        self.flag.set()

    def __getattr__(self, name):
        return getattr(self.flag, name)


def test_a_commit_wakes_only_the_readers_of_what_it_published(store):
    """A commit wakes the readers that consume the events it wrote, not every reader of the bus (each woken
    reader reads the outbox); those events are applied and the other consumer sees none."""
    # The poll for the newest event (SQLite's stand-in for NOTIFY) wakes every reader at its first round, which on a
    # busy machine fell between the commit and the count: polled rarely here, it stays out of what is counted.
    bus = _bus(store, Subscription("c", (Counted,), _record("c")),
               Subscription("u", (Unrelated,), lambda s, env: None),
               settings=store.settings.model_copy(update={"bus_poll_seconds": 60}))
    try:
        bus.wait_idle()
        flags = {w.name: w for w in bus._workers}
        for w in flags.values():
            w.wake = _CountedWake(w.wake)
        _publish(store, 1, 2)
        assert flags["c"].wake.sets == 1 and flags["u"].wake.sets == 0
        bus.wake()  # an unnamed wake (another process's NOTIFY, the poll) still reaches every reader
        assert flags["c"].wake.sets == 2 and flags["u"].wake.sets == 1
        bus.wait_idle()
        assert _applied(store) == [1, 2]
    finally:
        bus.stop()


def test_event_only_with_its_change_and_applied_once_in_order(store):
    bus = _bus(store, Subscription("c", (Counted,), _record("c")))
    try:
        _publish(store, 1, 2, 3)
        _publish(store, 99, commit=False)  # rolled back: no event
        _publish(store, 4)
        bus.wait_idle()
        assert _applied(store) == [1, 2, 3, 4]
        with store.sessions() as s:
            assert s.scalar(select(func.count()).select_from(OutboxEvent)) == 4
            assert s.scalar(select(func.count()).select_from(Processed).where(Processed.consumer == "c")) == 4
            # A redelivery (the cursor moved back, as after a crash between commit and acknowledgement) is
            # recognised: nothing is applied twice.
            s.execute(update(Cursor).where(Cursor.consumer == "c").values(tx=0, seq=0))
            s.commit()
        _publish(store, 5)
        bus.wait_idle()
        assert _applied(store) == [1, 2, 3, 4, 5]
    finally:
        bus.stop()


def test_a_batch_claims_its_events_at_once_and_applies_each_once(store):
    """A batch is claimed in one statement: an event met twice in one batch (a redelivery fetched beside the
    original) or again in a later batch is applied once."""
    from cityops.core.bus.runtime import apply_batch
    from cityops.core.bus.store import read_after

    bus = Bus(store.engine, store.settings)
    sub = Subscription("c", (Counted,), _record("c"))
    _publish(store, 1, 2, 3)
    with store.sessions() as s:
        envs = read_after(s, (0, 0), {"testbus.counted"}, 10)
    assert [e.payload.n for e in envs] == [1, 2, 3]
    assert apply_batch(bus, sub, [envs[0], envs[1], envs[0]], advance=False)
    assert _applied(store) == [1, 2]
    assert apply_batch(bus, sub, envs, advance=False)
    assert _applied(store) == [1, 2, 3]


def test_retried_then_dead_lettered_and_the_consumer_goes_on(store):
    fail = {2: 1, 3: 10}  # 2 fails once, 3 always
    bus = _bus(store, Subscription("c", (Counted,), _record("c", fail)))
    try:
        _publish(store, 1, 2, 3, 4)
        bus.wait_idle()
        assert _applied(store) == [1, 2, 4]
        dead = bus.dead_letters()
        assert [(d.consumer, d.payload["n"], d.attempts) for d in dead] == [("c", 3, 3)]
        assert "cannot take 3" in dead[0].error
        assert bus.metrics.redeliveries.labels("c")._value.get() >= 2  # 3's retries (2's failure may be its batch's)
        assert bus.metrics.dead.labels("c")._value.get() == 1
    finally:
        bus.stop()


def test_a_payload_is_validated_when_read_and_a_stored_one_that_fails_is_dead_lettered(store):
    """An envelope read from the outbox validates its payload on first use (a relay that never reads it pays
    nothing); a stored payload that no longer validates fails in the handler, is retried, dead-lettered with its
    stored JSON, and the consumer goes on."""
    from cityops.core.bus.store import read_after

    _publish(store, 7)
    with store.sessions() as s:
        (env,) = read_after(s, (0, 0), {"testbus.counted"}, 10)
    assert env.data == {"n": 7, "label": ""} and env.payload == Counted(n=7) and env.payload is env.payload
    bus = Bus(store.engine, store.settings)
    bus.subscribe(Subscription("c", (Counted,), _record("c")))
    bus.register()
    try:
        # Stored before this process's bus runs (so it reads them from the outbox, nothing is handed over from
        # memory): 2 as an older publisher might have stored it (in the same transaction: never seen valid).
        with store.sessions() as s:
            ids = publish(s, Counted(n=1), Counted(n=2), Counted(n=3))
            s.execute(update(OutboxEvent).where(OutboxEvent.event_id == ids[1]).values(payload={"n": "two"}))
            s.commit()
        bus.start()
        bus.wait_idle()
        assert _applied(store) == [1, 3]
        dead = bus.dead_letters()
        assert [(d.payload, d.attempts) for d in dead] == [({"n": "two"}, 3)]
        assert "ValidationError" in dead[0].error
    finally:
        bus.stop()


def test_own_commits_are_handed_over_from_memory_and_what_another_process_commits_is_read_in_order(store):
    """A commit of this process gives its events to the readers from memory when nothing can lie before them; an
    event written by someone else (here: into the outbox without this process's hand-over) breaks that chain, and
    the reader reads the outbox after its cursor: every event applied once, in order."""
    from cityops.core.bus import store as bus_store

    bus = _bus(store, Subscription("c", (Counted,), _record("c")))
    (reader,) = [w for w in bus._workers if w.name == "c"]

    def applied(*ns):  # not wait_idle: it asks every reader to read the outbox
        deadline = time.monotonic() + 30
        while _applied(store) != list(ns):
            assert time.monotonic() < deadline, _applied(store)
            time.sleep(0.01)

    try:
        _publish(store, 1)
        applied(1)
        handed, read = reader.handed, reader.read
        for n in (2, 3):
            _publish(store, n)
            applied(*range(1, n + 1))
        assert reader.handed > handed  # from memory (on PostgreSQL another database's transaction may have had
        # an id unknown to the reader: that commit was read instead)
        with store.sessions() as s:  # as another process would: no hand-over, no wake
            bus_store.append(s, [Counted(n=4)])
            s.commit()
        _publish(store, 5)  # does not follow on from what the reader knows: it reads 4 and 5
        bus.wait_idle()
        assert _applied(store) == [1, 2, 3, 4, 5]
        assert reader.read > read
        _publish(store, 6)
        bus.wait_idle()
        assert _applied(store) == [1, 2, 3, 4, 5, 6]
    finally:
        bus.stop()


def test_a_commit_handed_over_never_passes_a_transaction_that_took_its_id_before_it(store):
    """PostgreSQL: another process's transaction takes its id, then this process publishes and commits (its events
    handed over from memory when nothing can lie before them), then the other commits. The other's events come first
    in the outbox's order, so the reader must not move past them: each event applied once, in order. A snapshot
    lists as running only the ids below its xmax, which is one past the highest *completed* id, so the other's id
    is usually not listed; taken as "nothing running", the commit was handed over and the other's events were
    passed (lost). Repeated: a transaction of another database completing in between lists it, by chance."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("one writer at a time on SQLite: no transaction commits around another")
    from cityops.core.bus import store as bus_store

    bus = _bus(store, Subscription("c", (Counted,), _record("c")))
    try:
        for n in (0, 1, 2):  # the reader's chain starts (a read), then commits follow on
            _publish(store, n)
            bus.wait_idle()
        expected = [0, 1, 2]
        for n in range(3, 43, 2):
            with store.sessions() as other:
                bus_store.append(other, [Counted(n=n)])  # as another process would: no hand-over, no wake
                _publish(store, n + 1)
                time.sleep(0.01)  # the reader takes n + 1 if it believes nothing lies before it
                other.commit()
            expected += [n, n + 1]
        bus.wait_idle()
        assert _applied(store) == expected
    finally:
        bus.stop()


def test_a_rollback_inside_the_publishing_transaction_hands_nothing_over(store):
    """A savepoint rolled back after a publish may have taken events (on SQLite a later insert even reuses their
    seq): the commit's events are then read from the outbox, never taken from memory."""
    bus = _bus(store, Subscription("c", (Counted,), _record("c")))
    try:
        _publish(store, 1)
        bus.wait_idle()
        with store.sessions() as s:
            publish(s, Counted(n=2))
            try:
                with s.begin_nested():
                    publish(s, Counted(n=3))
                    raise RuntimeError("changed its mind")
            except RuntimeError:
                pass
            publish(s, Counted(n=4))
            s.commit()
        bus.wait_idle()
        assert _applied(store) == [1, 2, 4]
    finally:
        bus.stop()


def test_each_consumer_on_its_own_and_broadcast_hears_everything(store):
    heard = []
    bus = _bus(store, Subscription("a", (Counted,), _record("a")), Subscription("b", (Counted,), _record("b", {1: 9})),
               Subscription("screen", (Counted,), lambda env: heard.append(env.payload.n), kind="broadcast"))
    try:
        _publish(store, 1, 2)
        bus.wait_idle()
        assert _applied(store, "a") == [1, 2] and _applied(store, "b") == [2]  # b's poison does not hold up a
        assert heard == [1, 2]
    finally:
        bus.stop()


def test_a_new_consumer_starts_at_the_head(store):
    _publish(store, 1)
    bus = _bus(store, Subscription("late", (Counted,), _record("late")))
    try:
        bus.wait_idle()
        _publish(store, 2)
        bus.wait_idle()
        assert _applied(store, "late") == [2]
    finally:
        bus.stop()


def test_a_renamed_consumer_takes_over_the_old_ones_position_on_upgrade(store):
    """An upgrade that renames a consumer (migration 0027: the incident's case moved to the task center) carries its
    position and its record of events applied over, instead of starting the new name at the head and skipping what
    the old one had not applied yet."""
    from alembic import command
    from cityops.core.db import alembic_config, migrate

    command.downgrade(alembic_config(store.engine), "0026c")
    with store.sessions() as s, s.begin():
        s.add(Cursor(consumer="events.incident_case", tx=5, seq=7, updated_ms=1))
        s.add(Processed(consumer="events.incident_case", event_id="e-1", processed_ms=1))
        s.add(Cursor(consumer="notify.warning", tx=9, seq=11, updated_ms=1))
    migrate(store.engine)
    with store.sessions() as s:
        cursors = {c.consumer: (c.tx, c.seq) for c in s.scalars(select(Cursor))}
        processed = {(p.consumer, p.event_id) for p in s.scalars(select(Processed))}
    assert cursors == {"tasks.incident_case": (5, 7), "notify.warning": (9, 11)}
    assert processed == {("tasks.incident_case", "e-1")}


def test_one_process_dispatches(store):
    """Two buses on one database (two workers): each event is applied once, by the lease holder."""
    one = _bus(store, Subscription("c", (Counted,), _record("c")))
    two = _bus(store, Subscription("c", (Counted,), _record("c")))
    try:
        _publish(store, *range(50))
        one.wait_idle()
        two.wait_idle()
        assert sorted(_applied(store)) == list(range(50))
        assert one._lease.is_set() != two._lease.is_set()
    finally:
        one.stop()
        two.stop()


def test_an_event_committed_late_is_not_skipped(store):
    """Transaction A writes an event first and commits last: the consumer still gets both, A's first."""
    if store.backend != "postgis":
        pytest.skip("SQLite has one writer at a time: outbox order is commit order")
    bus = _bus(store, Subscription("c", (Counted,), _record("c")))
    try:
        a = store.sessions()
        publish(a, Counted(n=1))
        a.flush()
        _publish(store, 2)
        bus.wake()
        time.sleep(1.0)
        assert _applied(store) == []  # 2 waits for the transaction that began before it
        a.commit()
        a.close()
        bus.wait_idle()
        assert _applied(store) == [1, 2]
    finally:
        bus.stop()


def test_the_frontier_waits_for_this_database_only_and_remembers(store):
    """The read's frontier (store.Frontier): an event of a transaction that wrote first and commits last is held
    back until it commits, read after read (the classic outbox gap: reading 2 and moving the cursor past 1 loses
    1); a running transaction of another database does not hold anything back; which database a running
    transaction belongs to is looked up (pg_stat_activity) and remembered, not asked again at every read."""
    if store.backend != "postgis":
        pytest.skip("SQLite has one writer at a time: outbox order is commit order")
    import psycopg

    from cityops.core.bus.store import Frontier, read_after
    from tests.conftest import create_pg_database, drop_pg_database, pg_database_url

    def read(frontier):
        with store.sessions() as s:
            return [e.payload.n for e in read_after(s, (0, 0), {"testbus.counted"}, 100, frontier)]

    other_db = create_pg_database("cityops_test_other")
    other = psycopg.connect(pg_database_url(other_db).replace("postgresql+psycopg", "postgresql"))
    try:
        frontier = Frontier()
        # Another database's transaction, running, older than ours. (The shared server's other databases may
        # have running transactions too: the assertions name the two transactions of this test.)
        foreign = int(other.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
        _publish(store, 1)
        assert read(frontier) == [1]  # not held back by the other database's transaction
        assert frontier.ours[foreign] is False  # looked up once; a known transaction is never looked up again
        _publish(store, 2)
        assert read(frontier) == [1, 2]

        late = store.sessions()
        publish(late, Counted(n=3))
        mine = int(late.execute(text("SELECT pg_current_xact_id()::text")).scalar())
        _publish(store, 4)  # committed by a transaction younger than ``late``'s
        assert read(frontier) == [1, 2]  # 4 is committed, but 3's transaction is running: nothing past it
        assert frontier.ours[mine] is True
        assert read(frontier) == [1, 2]  # still held back, read after read
        assert read(Frontier()) == [1, 2]  # a reader that knows nothing yet decides the same
        late.commit()
        late.close()
        assert read(frontier) == [1, 2, 3, 4]
    finally:
        other.rollback()
        other.close()
        drop_pg_database(other_db)


def test_the_reader_keeps_its_cursor_and_rereads_it_when_it_takes_the_lease_again(store):
    """One transaction per batch, the cursor in memory while the lease is held: what another holder applied
    meanwhile is not applied again when this process takes the lease back (its cursor is read again)."""
    bus = _bus(store, Subscription("c", (Counted,), _record("c")))
    try:
        _publish(store, 1, 2)
        bus.wait_idle()
        reader = next(w for w in bus._workers if w.name == "c")
        assert reader.position is not None
        with store.sessions() as s:
            row = s.get(Cursor, "c")
            assert (row.tx, row.seq) == reader.position  # written in the batch's own transaction
        # Another holder applied 3 (its effect -3) and moved the cursor past it, while this process, which
        # remembers its old position, did not hold the lease (the processed record is left out here so that a
        # reader which did not read its cursor again would apply 3 a second time, and the test would see it).
        bus._lease.clear()  # as when a renewal fails: the lease thread takes it again at its next renewal
        with store.sessions() as s:
            publish(s, Counted(n=3))
            s.flush()
            last = s.scalars(select(OutboxEvent).order_by(OutboxEvent.seq.desc()).limit(1)).one()
            s.execute(insert(APPLIED).values(consumer="c", n=-3))
            s.execute(update(Cursor).where(Cursor.consumer == "c").values(tx=last.tx, seq=last.seq))
            s.commit()
        term = bus._lease_term
        deadline = time.monotonic() + 3 * store.settings.bus_lease_seconds
        while bus._lease_term == term and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bus._lease.is_set()
        _publish(store, 4)
        bus.wait_idle()
        assert _applied(store) == [1, 2, -3, 4]
    finally:
        bus.stop()


def test_sqlite_readers_read_the_outbox_only_when_another_process_wrote_to_it(store):
    """SQLite has no NOTIFY: one poll per process of the outbox's newest event wakes the readers when another
    process wrote events. An idle server's readers do not each read the outbox every ``bus_poll_seconds`` (20-odd
    readers polling were a tenth of the server's CPU under 500 household updaters); another process's event is
    still applied within a poll or two."""
    from cityops.core.db import make_engine, make_sessionmaker

    if store.backend != "sqlite":
        pytest.skip("PostgreSQL processes hear of other processes' commits by NOTIFY")
    consumers = [f"c{i}" for i in range(5)]
    bus = _bus(store, *(Subscription(c, (Counted,), _record(c)) for c in consumers))
    readers = [w for w in bus._workers if w.name in consumers]
    other = make_engine(store.settings)  # another process's connections: nothing handed over to this bus
    try:
        _publish(store, 1)
        bus.wait_idle()
        time.sleep(4 * store.settings.bus_poll_seconds)  # the listener's first poll wakes every reader once
        reads = [r.read for r in readers]
        time.sleep(20 * store.settings.bus_poll_seconds)
        assert [r.read for r in readers] == reads  # nothing new: nobody read the outbox
        with make_sessionmaker(other)() as s:
            publish(s, Counted(n=2))
            s.commit()
        deadline = time.monotonic() + 5
        while any(_applied(store, c) != [1, 2] for c in consumers):
            assert time.monotonic() < deadline, {c: _applied(store, c) for c in consumers}
            time.sleep(0.01)
        assert all(r.read > n for r, n in zip(readers, reads))
    finally:
        bus.stop()
        other.dispose()


def test_sqlite_poll_wakes_the_readers_for_other_processes_commits_not_for_its_own(store):
    """SQLite: this process's commits wake its readers at the commit, so the newest-event poll leaves them out (each
    poll woke every reader during case intake); an event another process commits still wakes every reader within a
    poll or so, also when a commit of this process follows it before the poll (the newest is then this process's)."""
    from cityops.core.bus import store as bus_store

    if store.backend != "sqlite":
        pytest.skip("PostgreSQL processes hear of other processes' commits by NOTIFY")
    bus = _bus(store, Subscription("c", (Counted,), _record("c")),
               Subscription("u", (Unrelated,), lambda s, env: None))
    (unrelated,) = [w for w in bus._workers if w.name == "u"]
    poll = store.settings.bus_poll_seconds

    def another_process(event):  # into the outbox as another process would: no hand-over, nothing recorded
        with store.sessions() as s:
            bus_store.append(s, [event])
            s.commit()

    def woken_within(seconds) -> bool:
        deadline = time.monotonic() + seconds
        while not unrelated.wake.sets and time.monotonic() < deadline:
            time.sleep(0.01)
        return unrelated.wake.sets > 0

    try:
        bus.wait_idle()
        time.sleep(4 * poll)  # the poll's first round wakes every reader once
        unrelated.wake = _CountedWake(unrelated.wake)
        for n in range(1, 6):
            _publish(store, n)
            time.sleep(3 * poll)  # a poll or more after each commit
        assert _applied(store) == [1, 2, 3, 4, 5]
        assert unrelated.wake.sets == 0  # the poll saw the newest change five times, all of this process
        another_process(Unrelated())
        assert woken_within(5)
        unrelated.wake.sets = 0
        time.sleep(3 * poll)
        assert unrelated.wake.sets == 0  # once
        another_process(Unrelated())
        _publish(store, 6)  # the newest is this process's, and another process's lies before it
        assert woken_within(5)
        bus.wait_idle()
        assert _applied(store) == [1, 2, 3, 4, 5, 6]
    finally:
        bus.stop()


def test_other_processes_hear_of_a_publishing_commit_and_only_then(store):
    """PostgreSQL: the outbox's statement trigger sends the NOTIFY that wakes other processes' readers; it is
    delivered when the publishing transaction commits, never for one rolled back."""
    if store.backend != "postgis":
        pytest.skip("SQLite processes poll")
    import psycopg

    listener = psycopg.connect(store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                               autocommit=True)
    try:
        listener.execute("LISTEN cityops_bus")

        def heard() -> int:
            return sum(1 for _ in listener.notifies(timeout=0.5, stop_after=10))

        _publish(store, 1, commit=False)
        assert heard() == 0
        with store.sessions() as s:
            publish(s, Counted(n=2))
            s.flush()
            assert heard() == 0  # not before the commit
            publish(s, Counted(n=3))
            s.commit()
        assert heard() == 1  # one per transaction, however many statements wrote events
    finally:
        listener.close()


def test_a_process_ignores_the_notify_of_its_own_commits_and_hears_others(store):
    """PostgreSQL: a process's commits wake its readers directly, so the NOTIFY of such a commit does not wake them a
    second time (that was a second, empty read per batch); a commit through a connection of someone else does."""
    if store.backend != "postgis":
        pytest.skip("SQLite processes poll")
    import threading

    import psycopg

    from cityops.core.bus import store as bus_store

    woken, stop, own = [], threading.Event(), set()
    listener = threading.Thread(target=bus_store.listen, args=(store.engine, stop, lambda: woken.append(1), 0.1),
                                kwargs={"own": own}, daemon=True)
    with store.sessions() as s:
        publish(s, Counted(n=1))
        own.add(bus_store.backend_id(s))
        s.rollback()
    listener.start()
    try:
        time.sleep(0.5)  # listening
        with store.sessions() as s:
            publish(s, Counted(n=2))
            assert bus_store.backend_id(s) in own  # the pool hands back the same connection
            s.commit()
        time.sleep(0.5)
        assert woken == []
        other = psycopg.connect(store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                                autocommit=True)
        try:
            other.execute("NOTIFY cityops_bus")
        finally:
            other.close()
        deadline = time.monotonic() + 5
        while not woken and time.monotonic() < deadline:
            time.sleep(0.05)
        assert woken
    finally:
        stop.set()
        listener.join(5)


def test_a_timer_runs_once_per_period_whatever_the_number_of_buses(store, monkeypatch):
    """Two buses on one database (two workers): each tick of a periodic job is claimed once, in the job's own
    transaction; the first sighting only starts the clock."""
    from cityops.core.bus import Timer
    from cityops.core.bus import store as bus_store
    from cityops.core.bus.models import TimerRun

    # The timers' clock moves two minutes per check, by hand: what runs depends on the ticks, not on how long a busy
    # machine takes over a check (0.2 s real sleeps counted more or fewer periods than the 1.6 s they were meant to).
    shift = [0]
    real = bus_store.now_ms
    monkeypatch.setattr(bus_store, "now_ms", lambda: real() + shift[0])
    ran = []  # the tick each run claimed (its bus_timers row as the job's transaction sees it)
    buses = []
    for _ in range(2):
        bus = Bus(store.engine, store.settings)
        bus.every(Timer("test.tick", 300, lambda session: ran.append(session.get(TimerRun, "test.tick").last_ms)))
        buses.append(bus)
    try:
        from cityops.core.bus.runtime import run_timer

        sighted = None
        for _ in range(8):  # both try at every check, as two lease holders in overlap would
            for bus in buses:
                run_timer(bus, bus.timers[0])
            if sighted is None:
                with store.sessions() as s:
                    sighted = s.get(TimerRun, "test.tick").last_ms
            shift[0] += 120_000
        with store.sessions() as s:
            row = s.get(TimerRun, "test.tick")
        assert row is not None and row.runs == len(ran)
        # 8 checks 120 s apart at a 300 s period: the first starts the clock, then one run at 360 s and one at 720 s.
        assert len(ran) == 2, ran
        assert all(b - a >= 300_000 for a, b in zip([sighted, *ran], ran)), (sighted, ran)
    finally:
        for bus in buses:
            bus.stop()

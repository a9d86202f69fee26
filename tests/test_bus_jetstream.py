"""The bus on NATS JetStream (PostgreSQL, the several-worker deployment): the relay publishes the outbox once
(message ids), durable consumers shared by the workers apply each event once and in order, a poison event is
dead-lettered (table and subject) with its error, and every worker's broadcast listeners hear every event."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cityops.core.bus import Bus, Subscription
from tests.conftest import make_store
from tests.natsserver import nats_server
from tests.test_bus import APPLIED, META, Counted, _applied, _publish, _record


@pytest.fixture
def js_store(tmp_path):
    with nats_server(tmp_path / "nats") as url:
        s, close = make_store("postgis", tmp_path / "data", bus_transport="jetstream", nats_url=url,
                              bus_stream="T", bus_poll_seconds=0.05, bus_max_attempts=3)
        META.create_all(s.engine)
        yield s
        close()


def _bus(store, *subs) -> Bus:
    bus = Bus(store.engine, store.settings)
    for sub in subs:
        bus.subscribe(sub)
    return bus.start()


def _until(predicate, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_two_workers_apply_each_event_once_in_order(js_store):
    heard_a, heard_b = [], []
    workers = [_bus(js_store, Subscription("c", (Counted,), _record("c")),
                    Subscription("screen", (Counted,), lambda env, h=h: h.append(env.payload.n), kind="broadcast"))
               for h in (heard_a, heard_b)]
    try:
        for n in range(0, 60, 3):
            _publish(js_store, n, n + 1, n + 2)
        for w in workers:
            w.wait_idle()
        assert _applied(js_store) == list(range(60))  # once each, in order, whichever worker applied it
        _until(lambda: len(heard_a) == 60 and len(heard_b) == 60)
        assert heard_a == heard_b == list(range(60))
        assert workers[0]._lease.is_set() != workers[1]._lease.is_set()  # one relay
    finally:
        for w in workers:
            w.stop()


def test_poison_event_goes_to_the_dead_letters(js_store):
    bus = _bus(js_store, Subscription("c", (Counted,), _record("c", {2: 99})))
    try:
        _publish(js_store, 1, 2, 3)
        _until(lambda: _applied(js_store) == [1, 3])
        bus.wait_idle()
        dead = bus.dead_letters()
        assert [(d.payload["n"], d.attempts) for d in dead] == [(2, 3)] and "cannot take 2" in dead[0].error

        async def dead_subject():
            import nats

            nc = await nats.connect(js_store.settings.nats_url)
            sub = await nc.jetstream().pull_subscribe("t.dead.c", stream="T")
            msgs = await sub.fetch(1, timeout=5)
            await nc.close()
            return msgs[0]

        msg = asyncio.run(dead_subject())
        assert json.loads(msg.data)["payload"]["n"] == 2 and "cannot take 2" in msg.headers["CityOps-Error"]
    finally:
        bus.stop()


def test_a_worker_killed_mid_stream_loses_nothing_and_applies_nothing_twice(js_store):
    """Three worker processes share the consumer; one is killed with SIGKILL while events stream in. Its
    unacknowledged events go to the others (after bus_ack_wait_seconds); what it committed is not applied again."""
    import os
    import signal
    import subprocess
    import sys

    from sqlalchemy import func, select

    settings = {k: str(v) for k, v in js_store.settings.model_dump().items()
                if k in ("data_dir", "database_url", "secret_key", "bus_transport", "nats_url", "bus_stream",
                         "bus_poll_seconds", "bus_max_attempts")}
    settings["bus_ack_wait_seconds"] = "2"
    relay = _bus(js_store)  # this process relays the outbox (it holds the lease); the workers consume
    workers = [subprocess.Popen([sys.executable, "-m", "tests.bus_worker", json.dumps(settings)], stdout=subprocess.PIPE,
                                text=True, cwd=os.getcwd()) for _ in range(3)]
    try:
        for w in workers:
            assert w.stdout.readline().strip() == "ready"
        total = 3000
        for n in range(0, total, 50):
            _publish(js_store, *range(n, n + 50))
            if n == 1000:
                time.sleep(0.3)
                os.kill(workers[0].pid, signal.SIGKILL)  # mid-stream, with events in hand
        with js_store.sessions() as s:
            def counts():
                return s.execute(select(func.count(), func.count(func.distinct(APPLIED.c.n)))
                                 .where(APPLIED.c.consumer == "c")).one()
            _until(lambda: counts()[1] == total, seconds=90)
            time.sleep(3)  # anything applied twice would show up now
            applied, distinct = counts()
        assert (applied, distinct) == (total, total)
        assert workers[0].wait(5) == -signal.SIGKILL
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(10)
        relay.stop()


def test_the_relay_writes_its_cursor_now_and_then_and_a_successor_republishes_without_doubles(js_store):
    """The relay writes its cursor at most every bus_relay_checkpoint_seconds. A relay gone before writing it leaves
    its successor to publish those events again: the stream drops them as duplicates (message id = event id), and
    each is applied once."""
    from cityops.core.bus.models import Cursor

    js_store.settings.bus_relay_checkpoint_seconds = 60.0
    first = _bus(js_store, Subscription("c", (Counted,), _record("c")))
    try:
        _publish(js_store, 1, 2)  # the first batch writes the cursor (none written yet)
        _until(lambda: _applied(js_store) == [1, 2])
        with js_store.sessions() as s:
            written = (s.get(Cursor, "bus.relay").tx, s.get(Cursor, "bus.relay").seq)
        _publish(js_store, 3, 4)
        _until(lambda: _applied(js_store) == [1, 2, 3, 4])
        with js_store.sessions() as s:
            assert (s.get(Cursor, "bus.relay").tx, s.get(Cursor, "bus.relay").seq) == written  # not per batch
        relay = next(w for w in first._workers if w.name == "bus.relay")
        relay.unsaved = None  # gone before writing it
    finally:
        first.stop()
    second = _bus(js_store, Subscription("c", (Counted,), _record("c")))
    try:
        _publish(js_store, 5)
        second.wait_idle()
        assert _applied(js_store) == [1, 2, 3, 4, 5]

        async def stored():
            import nats

            nc = await nats.connect(js_store.settings.nats_url)
            info = await nc.jetstream().stream_info("T")
            await nc.close()
            return info.state.messages

        assert asyncio.run(stored()) == 5  # 3 and 4 came twice, and were stored once
    finally:
        second.stop()

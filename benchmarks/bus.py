"""The event bus: latency from a publishing commit to a durable consumer, beside a direct function call.

- direct call: the handler called in the publishing thread (no bus at all) — the floor;
- in process, SQLite and PostGIS: one process publishes (events written to the outbox in the transaction) and
  its bus applies them (claim + handler + commit per batch);
- JetStream (PostGIS, nats-server of its own): the consumer is another worker process; the publisher's lease
  holder relays the outbox to JetStream.

Each event carries its publication time (taken before the commit: the figures include the commit). The
consumer records when its handler ran. Events are published in transactions of --per-commit events at
--rate events/s for --seconds.

    .venv/bin/python benchmarks/bus.py [--rate 5000] [--seconds 10] [--per-commit 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cityops.core.bus import Bus, DomainEvent, Subscription, event_type, publish  # noqa: E402
from cityops.core.db import make_engine, migrate  # noqa: E402
from cityops.core.settings import Settings  # noqa: E402


@event_type
class Pinged(DomainEvent):
    name = "bench.pinged"
    version = 1
    n: int
    sent: float


def _handler(latencies: list):
    def handle(_session, env):
        latencies.append(time.time() - env.payload.sent)
    return handle


def _publish(settings: Settings, rate: int, seconds: float, per_commit: int) -> int:
    from sqlalchemy.orm import sessionmaker

    engine = make_engine(settings)
    sessions = sessionmaker(engine)
    interval = per_commit / rate
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        due = start + (n // per_commit) * interval
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        with sessions() as s:
            now = time.time()
            publish(s, *(Pinged(n=n + i, sent=now) for i in range(per_commit)))
            s.commit()
        n += per_commit
    engine.dispose()
    return n


def _stats(lat: list[float]) -> dict:
    a = np.asarray(lat) * 1000
    return {"events": len(a), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def direct(count: int = 100_000) -> dict:
    lat: list[float] = []
    handle = _handler(lat)

    class Env:
        pass

    for i in range(count):
        env = Env()
        env.payload = Pinged(n=i, sent=time.time())
        handle(None, env)
    return _stats(lat)


def in_process(settings: Settings, args) -> dict:
    engine = make_engine(settings)
    migrate(engine)
    lat: list[float] = []
    bus = Bus(engine, settings)
    bus.subscribe(Subscription("bench.consumer", (Pinged,), _handler(lat), ordered=False))
    bus.start()
    time.sleep(0.5)
    sent = _publish(settings, args.rate, args.seconds, args.per_commit)
    bus.wait_idle(timeout=300)
    bus.stop()
    engine.dispose()
    return {"published": sent, **_stats(lat)}


def consumer_main(args) -> None:
    """The other worker: a durable consumer on JetStream; prints its latencies as JSON when told to stop."""
    settings = Settings(**json.loads(args.consume))
    engine = make_engine(settings)
    lat: list[float] = []
    bus = Bus(engine, settings)
    bus.subscribe(Subscription("bench.consumer", (Pinged,), _handler(lat), ordered=False))
    bus.start()
    print("ready", flush=True)
    sys.stdin.readline()
    expected = int(sys.stdin.readline())
    deadline = time.monotonic() + 120
    while len(lat) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    bus.stop()
    print(json.dumps(lat), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jetstream(settings_kw: dict, args, work: Path) -> dict:
    port = _free_port()
    nats = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-js", "-p", str(port), "-a", "127.0.0.1",
                             "-sd", str(work / "nats")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        kw = {**settings_kw, "bus_transport": "jetstream", "nats_url": f"nats://127.0.0.1:{port}", "bus_stream": "BENCH"}
        settings = Settings(**kw)
        engine = make_engine(settings)
        migrate(engine)
        relay = Bus(engine, settings)  # the publishing worker: holds the lease and relays (no consumer of its own)
        relay.start()
        consumer = subprocess.Popen([sys.executable, __file__, "--consume", json.dumps({k: str(v) for k, v in kw.items()})],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert consumer.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        sent = _publish(settings, args.rate, args.seconds, args.per_commit)
        consumer.stdin.write(f"go\n{sent}\n")
        consumer.stdin.flush()
        lat = json.loads(consumer.stdout.readline())
        consumer.wait(30)
        relay.stop()
        engine.dispose()
        return {"published": sent, **_stats(lat)}
    finally:
        nats.terminate()
        nats.wait(10)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--per-commit", type=int, default=50)
    p.add_argument("--consume", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.consume:
        return consumer_main(args)
    from tests.conftest import create_pg_database, drop_pg_database, pg_database_url

    work = Path(tempfile.mkdtemp(prefix="cityops-bus-bench-"))
    rows = [("direct function call", direct())]
    sqlite = Settings(data_dir=work / "sqlite", secret_key="bench", log_json=False)
    rows.append(("in process, SQLite", in_process(sqlite, args)))
    name = create_pg_database("cityops_bench_bus")
    try:
        pg = {"data_dir": work / "pg", "database_url": pg_database_url(name), "secret_key": "bench", "log_json": False}
        rows.append(("in process, PostGIS", in_process(Settings(**pg), args)))
        rows.append(("JetStream, PostGIS, consumer in another process", jetstream(pg, args, work)))
    finally:
        drop_pg_database(name)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbus latency, publish (before commit) → durable consumer; {args.rate} events/s offered for {args.seconds:g} s "
          f"in commits of {args.per_commit}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'path':<50} {'events':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, r in rows:
        print(f"{label:<50} {r['events']:>8} {r['p50_ms']:>8.3f} {r['p95_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['max_ms']:>8.1f}")
    targets = {"in process, SQLite": 5.0, "in process, PostGIS": 5.0, "JetStream, PostGIS, consumer in another process": 50.0}
    for label, r in rows:
        if label in targets:
            verdict = "PASS" if r["p95_ms"] < targets[label] else "FAIL"
            record(f"bus publish → durable consumer, {label}", f"p95 {r['p95_ms']:.2f} ms",
                   f"direct call p95 {rows[0][1]['p95_ms']:.3f} ms", None, f"p95 < {targets[label]:g} ms",
                   r["p95_ms"] < targets[label])
            print(f"{verdict}: {label} p95 {r['p95_ms']:.2f} ms (target < {targets[label]:g} ms)")


if __name__ == "__main__":
    main()

"""The event bus: latency from a publishing commit to a durable consumer, beside a direct function call.

- direct call: the handler called in the publishing thread (no bus at all) — the floor;
- in process, SQLite and PostGIS: one process publishes (events written to the outbox in the transaction) and
  its bus applies them (claim + handler + commit per batch);
- JetStream (PostGIS, nats-server of its own): the consumer is another worker process; the publisher's lease
  holder relays the outbox to JetStream.

The latency is measured from the publisher's commit returning (the events are committed; the publisher's
process notes the time right after ``commit()``) to the consumer's handler being called with the event (the
consumer notes the time; delivery is the handler running — the consumer's own commit and acknowledgement
follow). Both clocks are the machine's wall clock, so the two processes of the JetStream path compare. Each
event also carries the time taken before it was written (before the insert and the commit): "publish → consumer"
is reported beside it, and includes the publisher's insert and commit (on PostgreSQL its WAL flush). Events are
published in transactions of --per-commit events at each offered rate (--rates) for --seconds.

A latency is a verdict on the bus only when the machine offered the rate: each row states the rate the publisher
reached and whether the consumers kept up, and reads

- **rate not reached**: the publisher fell short of 95 % of the offered rate (the machine could not commit that
  fast; the latency is then measured at the lower rate reached and is no verdict on the target);
- **not sustained**: the rate was offered but the consumer fell behind (its backlog after the last commit took
  longer than 10 % of the run to drain): a throughput limit of the consuming side;
- **met** / **latency missed**: the rate was offered and absorbed; p95 against the target.

``--find-max`` also steps the rate down (halving from the first rate, to 100/s) on each path until a rate is
offered and absorbed, and states the highest such rate.

    .venv/bin/python benchmarks/bus.py [--rates 5000] [--seconds 10] [--per-commit 50] [--find-max]
                                       [--paths inprocess-sqlite,inprocess-postgis,jetstream]
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


def _handler(latencies: list, seen: list | None = None, handled: list | None = None):
    def handle(_session, env):
        now = time.time()
        payload = env.payload
        latencies.append(now - payload.sent)
        if seen is not None:
            seen.append(now)
        if handled is not None:
            handled.append((payload.n, now))
    return handle


def _from_commit(handled: list, committed: list[float], per_commit: int) -> list[float]:
    """Commit returned → handler called, per event (event n was committed by commit n // per_commit)."""
    return [t - committed[n // per_commit] for n, t in handled]


def _publish(settings: Settings, rate: int, seconds: float, per_commit: int) -> dict:
    """Commit ``per_commit`` events every ``per_commit / rate`` s for ``seconds`` (open loop: a late commit is not
    made up by a burst beyond the schedule); returns what was published and the rate actually reached."""
    from sqlalchemy.orm import sessionmaker

    engine = make_engine(settings)
    sessions = sessionmaker(engine)
    interval = per_commit / rate
    committed: list[float] = []  # when each commit returned
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        due = start + (n // per_commit) * interval
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        with sessions() as s:
            now = time.time()
            publish(s, *(Pinged(n=n + i, sent=now) for i in range(per_commit)))
            s.commit()
            committed.append(time.time())
        n += per_commit
    elapsed = time.perf_counter() - start
    engine.dispose()
    return {"published": n, "offered": rate, "reached": n / elapsed, "ended": time.time(), "committed": committed}


def _stats(lat: list[float]) -> dict:
    a = np.asarray(lat) * 1000
    if not len(a):
        return {"events": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"events": len(a), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


#: The publisher reached the offered rate when it committed at least this share of it.
REACHED = 0.95


def _verdict(pub: dict, lat: list[float], seen: list[float], seconds: float, target_ms: float | None,
             since_publish: list[float] | None = None) -> dict:
    """The run's figures and what they say: rate not reached, not sustained (the consumer fell behind), met or
    latency missed. ``lat``: commit returned → handler; ``since_publish``: before the insert → handler."""
    stats = _stats(lat)
    pub = {k: v for k, v in pub.items() if k != "committed"}
    stats["publish_p95_ms"] = _stats(since_publish)["p95_ms"] if since_publish is not None else float("nan")
    drain = max(0.0, max(seen) - pub["ended"]) if seen else float("inf")
    reached = pub["reached"] >= REACHED * pub["offered"]
    # All delivered, and the backlog at the end drained within a tenth of the run (or 0.5 s): the consumer kept pace.
    sustained = reached and stats["events"] >= pub["published"] and drain <= max(0.5, 0.1 * seconds)
    if target_ms is None:
        verdict = ""
    elif not reached:
        verdict = "rate not reached"
    elif not sustained:
        verdict = "not sustained"
    else:
        verdict = "met" if stats["p95_ms"] < target_ms else "latency missed"
    return {**pub, **stats, "drain_s": drain, "sustained": sustained, "verdict": verdict, "target_ms": target_ms}


def direct(count: int = 100_000) -> dict:
    lat: list[float] = []
    handle = _handler(lat)

    class Env:
        pass

    start = time.perf_counter()
    for i in range(count):
        env = Env()
        env.payload = Pinged(n=i, sent=time.time())
        handle(None, env)
    rate = count / (time.perf_counter() - start)
    return {"published": count, "offered": count, "reached": rate, "drain_s": 0.0, "sustained": True, "verdict": "",
            "target_ms": None, "cpu_us": 1e6 / rate, **_stats(lat)}


def in_process(settings: Settings, args, rate: int, target_ms: float) -> dict:
    """One process publishes and its bus applies (the embedded default)."""
    engine = make_engine(settings)
    migrate(engine)
    lat: list[float] = []
    seen: list[float] = []
    handled: list = []
    bus = Bus(engine, settings)
    # A consumer of its own per run: it starts at the head, so a backlog an earlier run left is not measured here.
    bus.subscribe(Subscription(f"bench.consumer{time.time_ns()}", (Pinged,), _handler(lat, seen, handled), ordered=False))
    bus.start()
    time.sleep(0.5)
    cpu = time.process_time()
    pub = _publish(settings, rate, args.seconds, args.per_commit)
    try:
        bus.wait_idle(timeout=max(60.0, 10 * args.seconds))
    except TimeoutError:
        pass  # reported as "not sustained" (fewer events than published)
    cpu = time.process_time() - cpu
    bus.stop()
    engine.dispose()
    since_commit = _from_commit(handled, pub["committed"], args.per_commit)
    return {**_verdict(pub, since_commit, seen, args.seconds, target_ms, lat),
            "cpu_us": cpu / max(1, pub["published"]) * 1e6}


def consumer_main(args) -> None:
    """The other worker: a durable consumer on JetStream; prints its latencies as JSON when told to stop."""
    settings = Settings(**json.loads(args.consume))
    engine = make_engine(settings)
    lat: list[float] = []
    seen: list[float] = []
    handled: list = []
    bus = Bus(engine, settings)
    bus.subscribe(Subscription(args.consumer_name, (Pinged,), _handler(lat, seen, handled), ordered=False))
    bus.start()
    print("ready", flush=True)
    cpu = time.process_time()
    sys.stdin.readline()
    expected = int(sys.stdin.readline())
    deadline = time.monotonic() + 120
    while len(lat) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = time.process_time() - cpu
    bus.stop()
    print(json.dumps({"lat": lat, "seen": seen, "handled": handled, "cpu": cpu}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jetstream(settings_kw: dict, args, work: Path, rate: int, target_ms: float) -> dict:
    """The publishing worker (lease holder, relay) here; the consumer in another process; a nats-server of its own
    on a free port (never a shared one)."""
    port = _free_port()
    nats = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-js", "-p", str(port), "-a", "127.0.0.1",
                             "-sd", str(work / f"nats-{rate}-{time.time_ns()}")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    consumer = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nats-server did not start") from None
                time.sleep(0.1)
        kw = {**settings_kw, "bus_transport": "jetstream", "nats_url": f"nats://127.0.0.1:{port}", "bus_stream": "BENCH"}
        settings = Settings(**kw)
        engine = make_engine(settings)
        migrate(engine)
        relay = Bus(engine, settings)  # the publishing worker: holds the lease and relays (no consumer of its own)
        relay.start()
        # A consumer name of its own per run: a durable consumer's cursor on the database would otherwise carry over.
        consumer = subprocess.Popen([sys.executable, __file__, "--consume", json.dumps({k: str(v) for k, v in kw.items()}),
                                     "--consumer-name", f"bench.consumer{rate}"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert consumer.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        cpu = time.process_time()
        pub = _publish(settings, rate, args.seconds, args.per_commit)
        consumer.stdin.write(f"go\n{pub['published']}\n")
        consumer.stdin.flush()
        got = json.loads(consumer.stdout.readline())
        cpu = time.process_time() - cpu
        consumer.wait(30)
        relay.stop()
        engine.dispose()
        since_commit = _from_commit(got["handled"], pub["committed"], args.per_commit)
        return {**_verdict(pub, since_commit, got["seen"], args.seconds, target_ms, got["lat"]),
                "cpu_us": (cpu + got["cpu"]) / max(1, pub["published"]) * 1e6}
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
            consumer.wait(10)
        nats.terminate()
        nats.wait(10)


PATHS = {"inprocess-sqlite": ("in process, SQLite", 5.0), "inprocess-postgis": ("in process, PostGIS", 5.0),
         "jetstream": ("JetStream, PostGIS, consumer in another process", 50.0)}


def measure(path: str, rate: int, args, work: Path, pg: dict | None) -> dict:
    label, target = PATHS[path]
    if path == "inprocess-sqlite":
        settings = Settings(data_dir=work / f"sqlite-{rate}-{time.time_ns()}", secret_key="bench", log_json=False)
        return in_process(settings, args, rate, target)
    if path == "inprocess-postgis":
        return in_process(Settings(**pg), args, rate, target)
    return jetstream(pg, args, work, rate, target)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rates", default="5000", help="offered events/s, comma-separated (each path at each rate)")
    p.add_argument("--rate", type=int, help="one offered rate (same as --rates N)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--per-commit", type=int, default=50)
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated: " + ", ".join(PATHS))
    p.add_argument("--find-max", action="store_true",
                   help="also halve the rate from the first one down to 100/s until it is offered and absorbed")
    p.add_argument("--consume", default=None, help=argparse.SUPPRESS)
    p.add_argument("--consumer-name", default="bench.consumer", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.consume:
        return consumer_main(args)
    from tests.conftest import create_pg_database, drop_pg_database, pg_database_url

    rates = [args.rate] if args.rate else [int(r) for r in args.rates.split(",")]
    paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    unknown = set(paths) - set(PATHS)
    if unknown:
        p.error(f"unknown path(s) {', '.join(sorted(unknown))}; choose from {', '.join(PATHS)}")
    work = Path(tempfile.mkdtemp(prefix="cityops-bus-bench-"))
    load_before = os.getloadavg()
    floor = direct()
    rows: list[tuple[str, dict]] = []
    best: dict[str, int | None] = {}
    name = create_pg_database("cityops_bench_bus") if any(x != "inprocess-sqlite" for x in paths) else None
    try:
        pg = None if name is None else {"data_dir": work / "pg", "database_url": pg_database_url(name), "secret_key": "bench",
                                        "log_json": False}
        for path in paths:
            tried = []
            for rate in rates:
                r = measure(path, rate, args, work, pg)
                rows.append((path, r))
                tried.append(r)
                print(f"{PATHS[path][0]} at {rate}/s: reached {r['reached']:.0f}/s, p95 {r['p95_ms']:.1f} ms "
                      f"(from before the insert {r['publish_p95_ms']:.1f} ms), drain {r['drain_s']:.2f} s → {r['verdict']}", flush=True)
            ok = [r["offered"] for r in tried if r["sustained"]]
            if args.find_max and not ok:
                rate = rates[0] // 2
                while rate >= 100:
                    r = measure(path, rate, args, work, pg)
                    rows.append((path, r))
                    print(f"{PATHS[path][0]} at {rate}/s: reached {r['reached']:.0f}/s, p95 {r['p95_ms']:.1f} ms, "
                          f"drain {r['drain_s']:.2f} s → {r['verdict']}", flush=True)
                    if r["sustained"]:
                        ok.append(rate)
                        break
                    rate //= 2
            best[path] = max(ok) if ok else None
    finally:
        if name is not None:
            drop_pg_database(name)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"\nbus latency, commit returned → durable consumer's handler called (pub→ p95: from before the insert, "
          f"the publisher's insert and commit included); {args.seconds:g} s per rate in commits of "
          f"{args.per_commit}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    head = (f"{'path':<48} {'offered/s':>9} {'reached/s':>9} {'events':>8} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} "
            f"{'pub→ p95':>9} {'drain s':>7} {'CPU µs/ev':>9}  verdict")
    print(head)
    print(f"{'direct function call':<48} {'':>9} {floor['reached']:>9.0f} {floor['events']:>8} {floor['p50_ms']:>9.4f} "
          f"{floor['p95_ms']:>9.4f} {floor['p99_ms']:>9.4f} {'':>9} {'':>7} {floor['cpu_us']:>9.2f}")
    for path, r in rows:
        print(f"{PATHS[path][0]:<48} {r['offered']:>9} {r['reached']:>9.0f} {r['events']:>8} {r['p50_ms']:>9.2f} "
              f"{r['p95_ms']:>9.2f} {r['p99_ms']:>9.2f} {r['publish_p95_ms']:>9.2f} {r['drain_s']:>7.2f} {r['cpu_us']:>9.1f}  {r['verdict']} "
              f"(p95 < {r['target_ms']:g} ms)")
    print("CPU µs/ev: the CPU time of the run's processes (publisher with its bus, and on JetStream the consumer's "
          "process; not PostgreSQL or nats-server) per event published — the bus's cost where the wall-clock "
          "latency is queueing for a busy machine's cores")
    for path in paths:
        print(f"highest rate offered and absorbed, {PATHS[path][0]}: "
              + (f"{best[path]}/s" if best[path] else f"none of {', '.join(str(r['offered']) for q, r in rows if q == path)}/s"))
    for path, r in rows:
        label, target = PATHS[path]
        met = {"met": True, "latency missed": False}.get(r["verdict"])  # not reached / not sustained: no verdict
        note = ""
        if r["verdict"] == "rate not reached":
            note = (f"the publisher reached {r['reached']:,.0f} of {r['offered']:,} events/s offered: the latency is "
                    f"measured at that rate, not at the target's")
        elif r["verdict"] == "not sustained":
            note = f"the consumer fell behind: {r['events']:,} of {r['published']:,} events, backlog drained {r['drain_s']:.1f} s after"
        record(f"bus commit → consumer p95, {label}, {r['offered']:,}/s offered",
               f"p95 {r['p95_ms']:.1f} ms at {r['reached']:,.0f}/s (from before the insert {r['publish_p95_ms']:.1f} ms)",
               f"direct call p95 {floor['p95_ms'] * 1000:.1f} µs", r["p95_ms"] / target, f"p95 < {target:g} ms (ratio to it < 1)",
               met, note=note)


if __name__ == "__main__":
    main()

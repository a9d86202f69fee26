"""Sensing ingest and alarm latency, side by side with the raw insert limit of the same store.

For each backend (embedded SQLite/GeoPackage, PostgreSQL) on a small demo district with 200 water-level
datastreams (rules on: the waterlogging ladder and its rising-rate rule):

1. raw      bare executemany INSERT into ``sta_observations`` (same columns, batches of 10,000), one commit
            per batch — the limit of the store from Python; on PostgreSQL also ``raw copy``: COPY of the same
            batches (the best bare bulk load; the ratios use the better of the two);
2. pipeline the ingest write path in process (Ingestor: validation, idempotent insert, rollups, stream state, rules);
3. http     ``POST /api/sensing/observations`` to a live uvicorn server (batches of 10,000, 2 client threads);
4. mqtt     one Observation per message, QoS 1, published by ``mosquitto_pub -l`` (C, one message per
            line: the load generator is not the limit), consumed by the server's bridge (acknowledged after
            commit); time until all are committed;
   mqtt batch  the same with SensorThings dataArray messages on ``v1.1/CreateObservations`` (500
            observations per message, 10 datastreams × 50), as a gateway that batches sends them;
   mqtt sub    the raw limit of the consuming side: a bare paho MQTT 5 subscriber (manual QoS 1 ack, no
            work) receiving single-observation messages from ``mosquitto_pub``;
5. latency  observation → rule → alarm → SSE event, p50/p95, while a background load of ~10,000 obs/s
            is posted over HTTP.

With ``--mqtt-workers 1,2`` the MQTT paths are also measured against ``cityops serve --workers N`` (each worker's
bridge on an MQTT 5 shared subscription, ``$share/<client id>/…``, so the broker splits the messages between them),
rounds interleaved (1, 2, 1, 2, …); the figure is the ratio N workers / 1 worker (target: not below 1).

Prints a table (medians of --rounds) and the ratio of each path to the raw insert.
  .venv/bin/python benchmarks/sensing_ingest.py [--seconds 15] [--backends sqlite,postgis] [--paths mqtt,http,...]
        [--load 10000]
Needs Mosquitto at 127.0.0.1:1883 and ``mosquitto_pub`` (scripts/install-system-deps.sh); ``--own-broker`` runs a
``mosquitto`` of its own on a free port instead (nothing published to a broker others use).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from report import record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402

from cityops.core.db import make_engine, make_sessionmaker, migrate  # noqa: E402
from cityops.core.settings import Settings  # noqa: E402
from cityops.demo.generator import DemoConfig, build_demo  # noqa: E402
from cityops.org.levels import load_levels  # noqa: E402
from cityops.org.service import OrgConfig  # noqa: E402

PG_ADMIN = os.environ.get("CITYOPS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
N_STREAMS = 200
#: committed observations/s of each whole minute of the last long measure, per path (the sustained check)
MINUTES: dict[str, list[float]] = {}
BATCH = 10_000
#: The MQTT broker the measures publish to (``--own-broker`` starts one of this run's own on a free port).
MQTT_PORT = 1883
SERVE = """
import sys, uvicorn
from cityops.app import create_app
from cityops.core.settings import Settings
data_dir, url, port = sys.argv[1:4]
app = create_app(Settings(data_dir=data_dir, database_url=url, secret_key="bench", log_json=False, log_level="WARNING"),
                 run_migrations=False)
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", lifespan="off")
"""


class Clock:
    """Monotonic, strictly increasing observation times per run (so every observation is new)."""

    def __init__(self):
        self.t = 1_700_000_000_000

    def take(self, n: int) -> int:
        start = self.t
        self.t += n
        return start


def make_store(backend: str, data_dir: Path):
    if backend == "postgis":
        name = f"{os.environ.get('CITYOPS_BENCH_DB_PREFIX', 'cityops_bench')}_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    else:
        name, url = None, ""
    settings = Settings(data_dir=data_dir, database_url=url, secret_key="bench", log_json=False)
    engine = make_engine(settings)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    levels = load_levels(settings.grid_code_length)
    build_demo(sessions, OrgConfig(levels, settings.grid_code_length, settings.topology_tolerance_m2, settings.metric_crs),
               DemoConfig(grids=30, village_scale=0.2, townships=("义和镇",)))
    return settings, engine, sessions, name


def drop(name):
    if name:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def setup_streams(sessions) -> tuple[list[int], list[int], str]:
    from cityops.identity import service
    from cityops.identity.models import User
    from cityops.identity.scope import Scope
    from cityops.org.models import Unit
    from cityops.sensing import sta
    from cityops.sensing.demo import _catalogue_entities, add_device

    with sessions() as s:
        grid = s.scalar(select(Unit).where(Unit.level == "grid").order_by(Unit.code))
        w = sta.Writer(sta.Ctx(s, Scope(all_units=True), "", catalogue=True), "bench")
        ents = _catalogue_entities(w)
        p = grid.geom.representative_point()
        ids = [add_device(w, ents, "water_level", f"bench{i}", grid, p)[0] for i in range(N_STREAMS)]
        # One probe datastream per latency sample: a cleared alarm's key is suppressed for a while, so each
        # probe raises a fresh alarm on its own stream.
        alarm_ds = [add_device(w, ents, "water_level", f"probe{i}", grid, p)[0] for i in range(400)]
        user = s.scalar(select(User).where(User.username == "admin"))
        raw, _ = service.issue_token(s, "bench", user, kind="api_key", name="bench")
        s.commit()
    return ids, alarm_ds, raw


def rows_for(ids, clock: Clock, n: int):
    from cityops.sensing.ingest import Row

    t0 = clock.take(n)
    k = len(ids)
    return [Row(ids[i % k], t0 + i, None, None, float(i % 4)) for i in range(n)]


def bench_raw(engine, ids, clock, seconds) -> float:
    stmt = text("INSERT INTO sta_observations (datastream_id, t_ms, result_num) VALUES (:d, :t, :v)")
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rows = rows_for(ids, clock, BATCH)
        with engine.begin() as conn:
            conn.execute(stmt, [{"d": r.datastream_id, "t": r.t_ms, "v": r.value} for r in rows])
        n += BATCH
    return n / (time.perf_counter() - start)


def bench_raw_copy(engine, ids, clock, seconds) -> float:
    """PostgreSQL only: COPY of the same batches, one transaction each."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rows = rows_for(ids, clock, BATCH)
        with engine.begin() as conn:
            cur = conn.connection.driver_connection.cursor()
            with cur.copy("COPY sta_observations (datastream_id, t_ms, result_num) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row((r.datastream_id, r.t_ms, r.value))
        n += BATCH
    return n / (time.perf_counter() - start)


def bench_pipeline(sessions, ids, clock, seconds) -> float:
    from cityops.sensing.ingest import Ingestor

    ing = Ingestor(sessions, capacity=200_000)
    ing.start()
    metas = {i: ing.metas.get(i) for i in ids}
    n, start, futures = 0, time.perf_counter(), []
    while time.perf_counter() - start < seconds:
        futures.append(ing.submit(rows_for(ids, clock, BATCH), metas, block=True))
        n += BATCH
    for f in futures:
        f.result()
    rate = n / (time.perf_counter() - start)
    ing.stop()
    return rate


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(settings, env=None):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(settings.data_dir), settings.database_url, str(port)], cwd=ROOT,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.1)


def serve_workers(settings, env: dict, workers: int):
    """``cityops serve --workers N`` (as deployed; N = 1 runs the same command with one process)."""
    port = _free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    full.update(CITYOPS_DATA_DIR=str(settings.data_dir), CITYOPS_DATABASE_URL=settings.database_url, CITYOPS_SECRET_KEY="bench",
                CITYOPS_LOG_JSON="false", CITYOPS_LOG_LEVEL="WARNING", **env)
    proc = subprocess.Popen([sys.executable, "-m", "cityops.cli", "serve", "--workers", str(workers), "--port", str(port)],
                            cwd=ROOT, env=full, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("server did not start")
        time.sleep(0.2)
    time.sleep(3 * workers)  # every worker's bridge subscribed (the health answer comes from one of them)
    return proc, base


def own_broker(work: Path) -> subprocess.Popen:
    """A Mosquitto of this run's own on a free port (MQTT 5 shared subscriptions are on by default)."""
    global MQTT_PORT
    MQTT_PORT = _free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {MQTT_PORT} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", MQTT_PORT), timeout=0.5).close()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("mosquitto did not start") from None
            time.sleep(0.1)


def bench_mqtt_workers(settings, sessions, ids, clock, args, workers: int) -> dict:
    """The MQTT paths against ``cityops serve --workers N`` with the bridge on (shared subscription when N > 1)."""
    client_id = f"cityops-bench-{uuid.uuid4().hex[:8]}"
    env = {"CITYOPS_SENSING_QUEUE": "200000", "CITYOPS_MQTT_URL": f"mqtt://127.0.0.1:{MQTT_PORT}",
           "CITYOPS_MQTT_CLIENT_ID": client_id}
    proc, _base = serve_workers(settings, env, workers)
    out = {}
    try:
        out["mqtt"], _ = bench_mqtt(sessions, ids, clock, args.seconds, min(args.mqtt_rate, 5_000))
        out["mqtt batch"], _ = bench_mqtt(sessions, ids, clock, args.seconds, args.mqtt_rate * 4, batch=500)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        from cityops.sensing.mqtt import end_session

        for cid in [client_id] if workers == 1 else [f"{client_id}-{slot}" for slot in range(workers * 2)]:
            end_session(f"mqtt://127.0.0.1:{MQTT_PORT}", cid)
    return out


def _iso(t_ms: int) -> str:
    from cityops.sensing.timeutil import iso

    return iso(t_ms)


def _body(ids, clock: Clock, n: int) -> bytes:
    """A POST /api/sensing/observations body of ``n`` new observations, encoded with orjson: the load
    generator shares the 2 cores with the server, so it must cost little per observation."""
    import orjson

    return orjson.dumps({"observations": [{"datastream_id": r.datastream_id, "phenomenonTime": _iso(r.t_ms), "result": r.value}
                                          for r in rows_for(ids, clock, n)]})


_JSON = {"Content-Type": "application/json"}


def bench_http(base, token, ids, clock, seconds) -> float:
    import httpx

    lock = threading.Lock()
    count = [0]
    done_at: list[float] = []
    stop = time.perf_counter() + seconds

    def worker():
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            while time.perf_counter() < stop:
                with lock:
                    body = _body(ids, clock, BATCH)
                r = c.post("/api/sensing/observations", content=body, headers=_JSON)
                if r.status_code == 201:
                    with lock:
                        count[0] += BATCH
                        done_at.append(time.perf_counter())
                elif r.status_code == 503:
                    time.sleep(float(r.headers.get("retry-after", "1")) / 10)
                else:
                    raise RuntimeError(r.text)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    MINUTES["http"] = [sum(1 for t in done_at if m * 60 <= t - start < (m + 1) * 60) * BATCH / 60 for m in range(int(elapsed // 60))]
    return count[0] / elapsed


def _mqtt_lines(ids, t0: int, n: int, batch: int) -> bytes:
    """Message payloads, one per line (``mosquitto_pub -l``): single Observations, or dataArray documents of
    ``batch`` observations (10 datastreams × batch/10 each)."""
    import orjson

    out = []
    k = len(ids)
    if batch <= 1:
        for i in range(n):
            out.append(orjson.dumps({"Datastream": {"@iot.id": ids[i % k]}, "phenomenonTime": _iso(t0 + i), "result": float(i % 4)}))
    else:
        per = batch // 10
        for m in range(0, n, batch):
            docs = []
            for d in range(10):
                base = m + d * per
                docs.append({"Datastream": {"@iot.id": ids[(m // batch * 10 + d) % k]}, "components": ["phenomenonTime", "result"],
                             "dataArray": [[_iso(t0 + base + j), float((base + j) % 4)] for j in range(per)]})
            out.append(orjson.dumps(docs))
    return b"\n".join(out) + b"\n"


def _mosquitto_pub(topic: str, lines: bytes, per_connection: int = 20_000) -> None:
    """``mosquitto_pub -l`` (QoS 1), at most ``per_connection`` messages per connection: Mosquitto 2.0.11 here
    disconnected a publisher "due to out of memory" after ~34,000 fast QoS 1 messages on one connection."""
    parts = lines.split(b"\n")
    for k in range(0, len(parts), per_connection):
        chunk = b"\n".join(p for p in parts[k:k + per_connection] if p)
        if chunk:
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(MQTT_PORT), "-q", "1", "-t", topic, "-l"],
                           input=chunk + b"\n", check=True)


def _count_obs(sessions) -> int:
    from cityops.sensing.models import Observation

    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Observation))


def _last_obs_id(sessions) -> int:
    """The highest observation id: an index probe, cheap enough to poll while the server works (a count(*)
    every 0.1 s scans the table and took a good part of PostgreSQL's CPU away from the ingest it measures).
    On SQLite one writer numbers the rows of a run consecutively; on PostgreSQL it can run ahead of the rows
    (see ``_wait_committed``), so per-minute rates from it are upper bounds there."""
    from cityops.sensing.models import Observation

    with sessions() as s:
        return s.scalar(select(func.max(Observation.id))) or 0


def bench_mqtt_paced(sessions, ids, clock, seconds, rate, batch) -> tuple[float, float, list[float]]:
    """Sustained: publish ``rate`` observations/s for ``seconds`` (one ``mosquitto_pub -l`` fed a second's worth
    at a time, a new connection every 20,000 messages), then wait until all are committed. Returns the
    observations/s until the last commit, the rate offered, and the committed rate of each minute."""
    per_connection = 20_000
    before, last_before = _count_obs(sessions), _last_obs_id(sessions)
    topic = "v1.1/CreateObservations" if batch > 1 else "v1.1/Observations"
    n = (rate // batch) * batch
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(MQTT_PORT), "-q", "1", "-t", topic, "-l"]
    minutes, next_minute, minute_mark = [], 60.0, 0
    pub, sent_on_connection, total = None, 0, 0
    start = time.perf_counter()
    for second in range(int(seconds)):
        if pub is None or sent_on_connection + n // batch > per_connection:
            if pub is not None:
                pub.stdin.close()
                pub.wait()
            pub, sent_on_connection = subprocess.Popen(cmd, stdin=subprocess.PIPE), 0
        pub.stdin.write(_mqtt_lines(ids, clock.take(n), n, batch))
        pub.stdin.flush()
        sent_on_connection += n // batch
        total += n
        now = time.perf_counter() - start
        if now >= next_minute:
            committed = _last_obs_id(sessions) - last_before
            minutes.append((committed - minute_mark) / 60)
            minute_mark, next_minute = committed, next_minute + 60
        time.sleep(max(0.0, second + 1 - (time.perf_counter() - start)))
    offered = total / (time.perf_counter() - start)
    pub.stdin.close()
    pub.wait()
    _wait_committed(sessions, before, last_before, total, start + seconds * 3 + 120)
    elapsed = time.perf_counter() - start
    done = _count_obs(sessions) - before
    if done < total:
        print(f"mqtt paced (batch {batch}): {total - done:,} of {total:,} observations never committed", file=sys.stderr)
    return done / elapsed, offered, minutes


def _wait_committed(sessions, before: int, last_before: int, n: int, deadline: float) -> None:
    """Until ``n`` more observations are stored, or ``deadline`` (perf_counter). The last id is cheap to read but
    not exact (PostgreSQL takes a sequence value for every row offered to INSERT … ON CONFLICT DO NOTHING, stored
    or not); the count is exact, and read only once the id says all are in."""
    while time.perf_counter() <= deadline:
        if _last_obs_id(sessions) - last_before >= n and _count_obs(sessions) - before >= n:
            return
        time.sleep(0.2)


def bench_mqtt(sessions, ids, clock, seconds, rate_hint=20_000, batch=1) -> tuple[float, float]:
    """Observations/s until all are committed, and the publisher's own rate (mosquitto_pub, QoS 1)."""
    n = int(seconds * rate_hint)
    n -= n % max(batch, 1)
    before, last_before = _count_obs(sessions), _last_obs_id(sessions)
    lines = _mqtt_lines(ids, clock.take(n), n, batch)
    topic = "v1.1/CreateObservations" if batch > 1 else "v1.1/Observations"
    start = time.perf_counter()
    _mosquitto_pub(topic, lines)
    published = time.perf_counter() - start
    _wait_committed(sessions, before, last_before, n, start + 10 * seconds + 120)
    elapsed = time.perf_counter() - start
    done = _count_obs(sessions) - before  # exact, after the clock stopped
    if done < n:
        print(f"mqtt (batch {batch}): {n - done:,} of {n:,} observations never committed", file=sys.stderr)
    return done / elapsed, n / published


def bench_mqtt_subscriber(ids, clock, seconds, rate_hint=20_000) -> float:
    """The consuming side's raw limit: a bare paho MQTT 5 subscriber (manual ack of each message, no work)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    n = int(seconds * rate_hint)
    topic = f"bench/{uuid.uuid4().hex[:8]}"
    got = [0]
    done = threading.Event()

    def on_message(client, userdata, msg):
        client.ack(msg.mid, msg.qos)
        got[0] += 1
        if got[0] == n:
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5,
                    manual_ack=True)
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 65_535
    c.connect("127.0.0.1", MQTT_PORT, properties=props, clean_start=True)
    c.loop_start()
    c.subscribe(topic, qos=1)
    time.sleep(0.5)
    lines = _mqtt_lines(ids, clock.take(n), n, 1)
    start = time.perf_counter()
    _mosquitto_pub(topic, lines)
    done.wait(10 * seconds + 60)
    elapsed = time.perf_counter() - start
    c.loop_stop()
    c.disconnect()
    if got[0] < n:
        print(f"mqtt sub: {n - got[0]:,} of {n:,} messages never arrived", file=sys.stderr)
    return got[0] / elapsed


def bench_latency(base, token, ids, alarm_ds, clock, seconds, load_rate=10_000) -> tuple[float, float, int, float]:
    import httpx

    probes = set(alarm_ds)
    events: dict[int, float] = {}
    sent: dict[int, float] = {}
    ready = threading.Event()
    stop = threading.Event()

    def listen():
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=None) as c:
            with c.stream("GET", "/api/sensing/alarms/stream", params={"timeout": seconds + 30}) as r:
                for line in r.iter_lines():
                    if line.startswith(": connected"):
                        ready.set()
                    if line.startswith("data: "):
                        d = json.loads(line[6:])
                        if d.get("change") == "raised" and d.get("datastream_id") in probes:
                            events.setdefault(d["datastream_id"], time.perf_counter())
                    if stop.is_set():
                        return

    loaded = [0]

    def load():
        # Paced by what is owed at load_rate since the start (at most a second's worth a request), so a slow
        # answer is caught up by the next request instead of lowering the background rate.
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            begin = time.perf_counter()
            while not stop.is_set():
                owed = int((time.perf_counter() - begin) * load_rate) - loaded[0]
                if owed < load_rate // 20:
                    time.sleep(0.05)
                    continue
                n = min(owed, load_rate)
                r = c.post("/api/sensing/observations", content=_body(ids, clock, n), headers=_JSON)
                if r.status_code == 201:
                    loaded[0] += n

    lt = threading.Thread(target=listen, daemon=True)
    lt.start()
    ready.wait(10)
    ld = threading.Thread(target=load, daemon=True)
    ld.start()
    start = time.perf_counter()
    seq = 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while time.perf_counter() - start < seconds and seq < len(alarm_ds):
            probe = alarm_ds[seq]
            seq += 1
            sent[probe] = time.perf_counter()
            c.post("/api/sensing/observations", json={"observations": [{"datastream_id": probe, "phenomenonTime": _iso(clock.take(1)),
                                                                         "result": 60.0}]})
            time.sleep(0.2)
    time.sleep(2)
    stop.set()
    elapsed = time.perf_counter() - start
    lat = sorted((events[v] - sent[v]) for v in sent if v in events)
    if not lat:
        return float("nan"), float("nan"), 0, loaded[0] / elapsed
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    return p50, p95, len(lat), loaded[0] / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", default="sqlite,postgis")
    ap.add_argument("--paths", default="pipeline,http,latency,mqtt,mqtt batch,mqtt sub",
                    help="which to measure besides the raw insert (comma-separated)")
    ap.add_argument("--load", type=int, default=10_000, help="background obs/s of the latency probe")
    ap.add_argument("--mqtt-rate", type=int, default=20_000, help="observations per second of measuring time to publish")
    ap.add_argument("--paced", action="store_true",
                    help="sustained MQTT: publish --mqtt-rate observations/s for --seconds instead of all at once")
    ap.add_argument("--raw-seconds", type=float, help="length of the raw insert measures (default: --seconds)")
    ap.add_argument("--mqtt-workers", help="also the MQTT paths against `cityops serve --workers N` for each N "
                                           "(comma-separated, e.g. 1,2), rounds interleaved")
    ap.add_argument("--own-broker", action="store_true", help="a mosquitto of this run's own on a free port")
    args = ap.parse_args()
    broker = own_broker(Path(tempfile.mkdtemp(prefix="bench-sensing-mqtt-"))) if args.own_broker else None
    try:
        run(args)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)


def run(args) -> None:
    results = {}
    sel = set(args.paths.split(","))
    paths_order = ("raw", "raw copy", "pipeline", "http", "mqtt", "mqtt batch", "mqtt sub", "mqtt publish", "mqtt batch publish")
    for backend in args.backends.split(","):
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-sensing-{backend}-"))
        settings, engine, sessions, dbname = make_store(backend, tmp)
        try:
            ids, alarm_ds, token = setup_streams(sessions)
            clock = Clock()
            r = {p: [] for p in paths_order}
            for _ in range(args.rounds):
                raw_seconds = args.raw_seconds or args.seconds
                r["raw"].append(bench_raw(engine, ids, clock, raw_seconds))
                if backend == "postgis":
                    r["raw copy"].append(bench_raw_copy(engine, ids, clock, raw_seconds))
                if "pipeline" in sel:
                    r["pipeline"].append(bench_pipeline(sessions, ids, clock, args.seconds))
                if "mqtt sub" in sel:
                    r["mqtt sub"].append(bench_mqtt_subscriber(ids, clock, args.seconds, args.mqtt_rate))
            # HTTP and latency against a server without the MQTT bridge; MQTT against one with it (the bridge
            # also publishes every stored observation, a cost the HTTP figure would otherwise carry too).
            for env, paths in (({"CITYOPS_SENSING_QUEUE": "200000"}, ("http", "latency")),
                               ({"CITYOPS_SENSING_QUEUE": "200000", "CITYOPS_MQTT_URL": f"mqtt://127.0.0.1:{MQTT_PORT}",
                                "CITYOPS_MQTT_CLIENT_ID": f"cityops-bench-{uuid.uuid4().hex[:8]}"}, ("mqtt", "mqtt batch"))):
                paths = tuple(p for p in paths if p in sel)
                if not paths:
                    continue
                proc, base = serve(settings, env)
                try:
                    for _ in range(args.rounds):
                        if "http" in paths:
                            r["http"].append(bench_http(base, token, ids, clock, args.seconds))
                        if "mqtt" in paths:
                            rate, pub_rate = bench_mqtt(sessions, ids, clock, args.seconds, min(args.mqtt_rate, 5_000))
                            r["mqtt"].append(rate)
                            r["mqtt publish"].append(pub_rate)
                        if "mqtt batch" in paths and args.paced:
                            rate, pub_rate, MINUTES["mqtt batch"] = bench_mqtt_paced(sessions, ids, clock, args.seconds,
                                                                                      args.mqtt_rate, batch=500)
                            r["mqtt batch"].append(rate)
                            r["mqtt batch publish"].append(pub_rate)
                        elif "mqtt batch" in paths:
                            rate, pub_rate = bench_mqtt(sessions, ids, clock, args.seconds, args.mqtt_rate * 4, batch=500)
                            r["mqtt batch"].append(rate)
                            r["mqtt batch publish"].append(pub_rate)
                    if "latency" in paths:
                        r["latency"] = bench_latency(base, token, ids, alarm_ds, clock, args.seconds, args.load)
                finally:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(10)
                    if "CITYOPS_MQTT_CLIENT_ID" in env:  # its session would collect the next measure's messages
                        from cityops.sensing.mqtt import end_session

                        end_session(env["CITYOPS_MQTT_URL"], env["CITYOPS_MQTT_CLIENT_ID"])
            if args.mqtt_workers:
                counts = [int(n) for n in args.mqtt_workers.split(",")]
                r["workers"] = {n: {"mqtt": [], "mqtt batch": []} for n in counts}
                for _ in range(args.rounds):
                    for n in counts:
                        got = bench_mqtt_workers(settings, sessions, ids, clock, args, n)
                        print(f"{backend}: {n} worker(s): mqtt {got['mqtt']:,.0f} obs/s, mqtt batch {got['mqtt batch']:,.0f} obs/s",
                              flush=True)
                        for k, v in got.items():
                            r["workers"][n][k].append(v)
            r["minutes"] = dict(MINUTES)
            MINUTES.clear()
            results[backend] = r
        finally:
            engine.dispose()
            drop(dbname)
    print(f"\nsensing ingest, {args.seconds:.0f} s per measure, median of {args.rounds} rounds, {N_STREAMS} datastreams, rules on\n")
    print("(raw: executemany; raw copy: COPY (PostgreSQL); ratios are to the better of the two. mqtt sub: a bare paho "
          "subscriber, the consuming side's limit for one observation per message; mqtt … publish: mosquitto_pub alone)\n")
    print(f"{'backend':<8} {'path':<19} {'obs/s':>10} {'ratio to raw':>13} {'target':>12} verdict")
    for backend, r in results.items():
        raw = max(statistics.median(r["raw"]), statistics.median(r["raw copy"]) if r["raw copy"] else 0)
        for path in paths_order:
            if not r[path]:
                continue
            v = statistics.median(r[path])
            target = "≥ 50,000" if path in ("http", "mqtt", "mqtt batch") else ""
            verdict = "" if not target else ("PASS" if v >= 50_000 else "FAIL")
            print(f"{backend:<8} {path:<19} {v:>10,.0f} {v / raw:>12.0%} {target:>12} {verdict}")
            if path == "http":
                floor = 0.5 if backend == "postgis" else 0.7
                limit = "COPY" if r["raw copy"] and statistics.median(r["raw copy"]) >= statistics.median(r["raw"]) else "executemany"
                record(f"sensing HTTP bulk ingest ({backend})", f"{v:,.0f} obs/s", f"{limit} {raw:,.0f} obs/s", v / raw,
                       f"≥ {floor:.0%} of {limit}", v / raw >= floor)
        if r.get("workers"):
            counts = sorted(r["workers"])
            one = r["workers"][counts[0]]
            for n in counts[1:]:
                for path in ("mqtt", "mqtt batch"):
                    a, b = statistics.median(r["workers"][n][path]), statistics.median(one[path])
                    print(f"{backend:<8} {path:<19} {n} workers {a:,.0f} obs/s, {counts[0]} worker {b:,.0f} obs/s: "
                          f"{a / b:.2f}× (target ≥ 1: not slower) {'PASS' if a >= b else 'FAIL'}")
                    record(f"MQTT ingest ({path}), {n} workers on a shared subscription vs {counts[0]} ({backend})",
                           f"{a:,.0f} obs/s", f"{counts[0]} worker {b:,.0f} obs/s", a / b, "≥ 1.0× one worker", a >= b)
        for path, minutes in r["minutes"].items():
            if minutes:
                print(f"{backend:<8} {path:<19} per minute: min {min(minutes):,.0f}, median {statistics.median(minutes):,.0f}, "
                      f"max {max(minutes):,.0f} obs/s over {len(minutes)} whole minutes")
        if "latency" not in r:
            continue
        p50, p95, n, load = r["latency"]
        record(f"observation → alarm → SSE at {load:,.0f} obs/s background ({backend})", f"p95 {p95 * 1000:.0f} ms", "", None,
               "p95 < 1 s", p95 < 1 and load >= 9_000)
        print(f"{backend:<8} latency         p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms over {n} alarms at {load:,.0f} obs/s "
              f"background (target p95 < 1 s at 10,000 obs/s) {'PASS' if p95 < 1 and load >= 9_000 else 'FAIL'}")


if __name__ == "__main__":
    main()

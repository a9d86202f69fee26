"""Case creation over HTTP (locate + route + persist + log + outbox), side by side with the raw insert limit.

    .venv/bin/python benchmarks/events_intake.py [--seconds 10] [--concurrency 16,32,64,128] [--rate 0] [--backends sqlite,postgis] [--workers 1] [--raw-group 64] [--batch 100] [--batch-concurrency 4] [--client wrk|python] [--profile DIR]

For each backend a fresh small demo district (the test district: 3 townships, 120 grids, its departments
and people) is built, and uvicorn serves it (``intake_server:create_app``: the app as deployed plus the floor route
of measure 4; ``--workers`` processes, each with its own listening socket as ``cityops serve`` runs them;
``--shared-socket``: uvicorn's own workers sharing one).

The load generator runs on the same 2 cores as the server, while a deployment's reporters (phones, hotline seats,
upstream systems) are other machines: every µs of CPU the client spends a request is taken from the server under
test. ``--client wrk`` (the default when Debian's ``wrk`` is installed, ``scripts/install-system-deps.sh``) drives
the closed loops — the capacity sweep and the HTTP floor, the same tool for both so that their ratio stays fair —
with wrk, a compiled, standard load generator: one thread, a Lua script sending the bearer token and a body per
request drawn from the same sample as below (4,096 reports drawn per run, taken in turn). Measured on this
machine (2026-12-07, load 8–10; the server's and the client's CPU from /proc and ``getrusage``): the asyncio client
took 61–81 µs a request, 22 % of all CPU on the floor route and 8 % on intake; wrk 13–38 µs, 8–12 % and 2–7 %.
``--client python`` keeps the asyncio client of this process (HTTP/1.1 over keep-alive streams; a general client
such as httpx costs more CPU per request than the server handler). The open loop (2.) is always the asyncio client:
it sends on a schedule, counting latency from the scheduled time (no coordinated omission), at half the capacity,
where its CPU (~60 µs a request) is a small share.

1. Capacity: closed loop at each of ``--concurrency``'s connection counts (default 16, 32, 64, 128), ``--seconds``
   each; cases/s, p50/p99 per count, and the highest throughput is the capacity. A closed loop of C clients
   cannot pass C / round trip: with 16 (the default until 2026-12-07) over 2 server processes each writer's group
   held at most 8 cases, so the figure was the round trip's, not the server's (the grouped raw insert it is set
   beside writes 64 a commit). A city's intake has hundreds of reporters at once (hotline seats, grid workers'
   phones, devices). Target ≥ 1,000 cases/s, ≥ 0.5× the grouped raw insert.
2. Latency at a fixed rate: open loop at ``--rate`` requests/s for ``--seconds``; latency counted from the
   scheduled send time (no coordinated omission). ``--rate 0`` (the default): half the capacity the closed loop
   just measured, as the target is stated (p99 < 100 ms at half the measured capacity).
3. Raw insert limits: the same three rows per case (case, transition, outbox; the server's own rows: the
   sample's reports drafted beforehand, ``sample_drafts``) with SQLAlchemy Core, single thread, no HTTP, no
   locate, no routing, no rollups: one transaction per case (the ceiling of committed single-case
   writes), and ``--raw-group`` cases per transaction with multi-row inserts (the ceiling of the group
   commit the server uses; the ratio is taken to this one).

4. The HTTP floor: the closed loop of 1 against ``POST /bench/floor`` on the same server (authenticated, the same
   body parsed and checked, answered without the case writer): what the HTTP stack leaves for intake at all.
5. Intake in batches: the closed loop against ``POST /api/events/cases/batch`` with ``--batch`` reports per request
   (``--batch-concurrency`` connections, ``--seconds``), the way upstream systems (12345 platforms, alarm gateways)
   forward cases; cases/s beside the same grouped raw insert. ``--batch 0`` leaves it out.

Every created case is checked afterwards: the cases stored grew by at least the 201 answers (every 201 a stored case),
and by no more than the requests wrk had in flight when each of its runs ended (at most one a connection; the server
stores them, wrk no longer reads their answers); with the asyncio client the two counts are equal. Each measure
prints the server's CPU a request (the process group's user + system time from /proc) and the client's. Exit code
is always 0.

``--profile DIR``: the server runs under ``py-spy record --subprocesses`` (``--py-spy`` names the program), and
its samples over the whole run land in ``DIR/intake-<backend>.txt`` (collapsed stacks, one line per stack). The
server runs in a process group of its own, ended as a whole (no uvicorn worker outlives its measure).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from report import record  # noqa: E402
from settle import checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(width=220)
PG_ADMIN = os.environ.get("CITYOPS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TICK = os.sysconf("SC_CLK_TCK")
WRK = shutil.which("wrk")
CLASSES = ("06010", "06012", "09006", "07001", "06042", "01001", "06028", "08004")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(backend: str, data_dir: Path) -> tuple[dict, callable]:
    from sqlalchemy import create_engine, text

    from cityops.core.db import make_engine, migrate
    from cityops.core.settings import Settings
    from cityops.demo.generator import DemoConfig, build_demo
    from cityops.core.db import make_sessionmaker
    from cityops.org.levels import load_levels
    from cityops.org.service import OrgConfig

    env = {"CITYOPS_DATA_DIR": str(data_dir), "CITYOPS_SECRET_KEY": "bench-secret", "CITYOPS_LOG_LEVEL": "WARNING"}
    cleanup = []
    if backend == "postgis":
        name = f"cityops_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        env["CITYOPS_DATABASE_URL"] = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"

        def drop():
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        cleanup.append(drop)
    settings = Settings(data_dir=data_dir, database_url=env.get("CITYOPS_DATABASE_URL", ""), secret_key="bench-secret",
                        log_json=False)
    engine = make_engine(settings)
    migrate(engine)
    build_demo(make_sessionmaker(engine), OrgConfig(load_levels(15), 15, 1.0, settings.metric_crs),
               DemoConfig(grids=120, village_scale=0.35, townships=("汉丰街道", "义和镇", "大德镇")))
    engine.dispose()
    return env, lambda: [fn() for fn in cleanup]


def sample_points(env: dict, n: int = 5000) -> list[tuple[float, float]]:
    import shapely
    from sqlalchemy import select

    from cityops.core.db import make_engine, make_sessionmaker
    from cityops.core.settings import Settings
    from cityops.org.models import Unit

    settings = Settings(data_dir=env["CITYOPS_DATA_DIR"], database_url=env.get("CITYOPS_DATABASE_URL", ""), secret_key="x", log_json=False)
    engine = make_engine(settings)
    with make_sessionmaker(engine)() as s:
        grids = [g for (g,) in s.execute(select(Unit.geom).where(Unit.level == "grid"))]
    engine.dispose()
    rng = random.Random(4)
    pts = []
    while len(pts) < n:
        g = grids[rng.randrange(len(grids))]
        minx, miny, maxx, maxy = g.bounds
        p = shapely.Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if g.contains(p):
            pts.append((p.x, p.y))
    return pts


def http_request(method: str, path: str, body: bytes, headers: dict) -> bytes:
    """An HTTP/1.1 request as the benchmark's clients write it."""
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
    return (head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + body


class Conn:
    """One keep-alive HTTP/1.1 connection: write a request, read status line, headers and the body."""

    def __init__(self, reader, writer, port: int):
        self.reader, self.writer, self.port = reader, writer, port

    @classmethod
    async def open(cls, port: int) -> "Conn":
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w, port)

    async def request(self, method: str, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        request = http_request(method, path, body, headers)
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:  # the server closed a connection idle past its keep-alive (a slow open loop): reconnect
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.write(request)
            status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.lower() == "content-length":
                length = int(v)
        return status, await self.reader.readexactly(length)


#: wrk's Lua script (``--client wrk``): each request a report drawn like ``case_item``'s (a class code and a point of
#: the same sample, the same description), sent with the bearer token; one JSON line of totals at the end. No
#: ``response`` callback: wrk would build a Lua table of each answer's headers; its own count of answers that are
#: not 2xx (``errors.status``) is the error count, and the database count afterwards is the check.
WRK_SCRIPT = r"""
local points = {%(points)s}
local classes = {%(classes)s}
wrk.method = "POST"
wrk.path = "%(path)s"
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Content-Type"] = "application/json"
local n = 0
function setup(thread)
  n = n + 1
  thread:set("seed", %(seed)d + n * 7919)
end
function init(args)
  math.randomseed(seed)
  -- The requests drawn once per thread, then taken in turn: a request built per call (string.format and wrk.format
  -- in Lua) cost wrk ~30 µs of CPU a request, as much as a tenth of the floor route's server time.
  requests = {}
  for i = 1, %(variants)d do
    local p = points[math.random(#points)]
    local body = string.format('{"class_code":"%%s","lon":%%.9f,"lat":%%.9f,"description":"\\u5de1\\u67e5\\u53d1\\u73b0\\u95ee\\u9898"}',
                               classes[math.random(#classes)], p[1], p[2])
    requests[i] = wrk.format(nil, nil, nil, body)
  end
  next_request = 0
end
function request()
  next_request = next_request %% #requests + 1
  return requests[next_request]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %%d, "duration_us": %%d, "status": %%d, "connect": %%d, "read": %%d, ' ..
                         '"write": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d}\n', summary.requests,
                         summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
                         latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_closed_loop(port, token, pts, seconds, concurrency, path="/api/events/cases", seed=1) -> dict:
    """The closed loop of ``concurrency`` connections driven by wrk (one thread, C, epoll): a request's CPU on the
    client side is a few µs instead of the asyncio client's ~50–140, so the server gets the cores it would have
    behind a deployment's network (reporters' phones and upstream systems are other machines)."""
    script = Path(tempfile.mkstemp(prefix="intake-wrk-", suffix=".lua")[1])
    script.write_text(WRK_SCRIPT % {
        "points": ",".join(f"{{{lon:.9f},{lat:.9f}}}" for lon, lat in pts),
        "classes": ",".join(f'"{c}"' for c in CLASSES), "path": path, "token": token, "seed": seed,
        "variants": 4096})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = subprocess.run([WRK, "-t", "1", "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s", "--timeout", "30s",
                              "-s", str(script), f"http://127.0.0.1:{port}"], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"wrk failed: {out.stderr or out.stdout}")
    finally:
        script.unlink()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("WRK "))
    w = json.loads(line[4:])
    errors = w["status"] + w["connect"] + w["read"] + w["write"] + w["timeout"]
    return {"n": w["requests"], "errors": errors, "elapsed": w["duration_us"] / 1e6, "p50": w["p50_us"] / 1000,
            "p99": w["p99_us"] / 1000, "client_cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "in_flight": concurrency}


def python_closed_loop(port, headers, pts, seconds, concurrency, path="/api/events/cases") -> dict:
    """``closed_loop`` in this process, in the shape of ``wrk_closed_loop``'s answer."""
    cpu0 = time.process_time()
    lat, n, errors, elapsed = asyncio.run(closed_loop(port, headers, pts, seconds, concurrency, path=path))
    return {"n": n, "errors": errors, "elapsed": elapsed, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
            "client_cpu": time.process_time() - cpu0, "in_flight": 0}


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the processes of a process group so far, from /proc (the server and its
    workers)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5, pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15, utime and stime in clock ticks
    return total / TICK


def measured(server: subprocess.Popen, fn, *a, **kw) -> dict:
    """``fn``'s closed loop with the server's CPU over it: µs of server and of client CPU a request."""
    s0 = group_cpu(server.pid)
    m = fn(*a, **kw)
    server_cpu = group_cpu(server.pid) - s0
    answered = max(1, m["n"])
    return m | {"rate": m["n"] / m["elapsed"], "server_us": server_cpu / answered * 1e6,
                "client_us": m["client_cpu"] / answered * 1e6,
                "client_share": m["client_cpu"] / (m["client_cpu"] + server_cpu) if server_cpu else float("nan")}


def case_item(rng: random.Random, pts) -> dict:
    lon, lat = pts[rng.randrange(len(pts))]
    return {"class_code": rng.choice(CLASSES), "lon": lon, "lat": lat, "description": "巡查发现问题"}


def case_body(rng: random.Random, pts) -> bytes:
    return json.dumps(case_item(rng, pts)).encode()


async def closed_loop(port, headers, pts, seconds, concurrency, path="/api/events/cases", batch=0) -> tuple[list[float], int, int, float]:
    """``batch``: that many reports per request (a JSON array, the batch route); the count is then of reports."""
    conns = [await Conn.open(port) for _ in range(concurrency)]
    lat, errors = [], 0
    end = time.perf_counter() + seconds
    rng = random.Random(1)

    async def worker(c):
        nonlocal errors
        while time.perf_counter() < end:
            body = json.dumps([case_item(rng, pts) for _ in range(batch)]).encode() if batch else case_body(rng, pts)
            t = time.perf_counter()
            status, _ = await c.request("POST", path, body, headers)
            lat.append(time.perf_counter() - t)
            if status != 201:
                errors += max(1, batch)

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    for c in conns:
        c.writer.close()
    return lat, len(lat) * max(1, batch), errors, elapsed


class _Answering(asyncio.Protocol):
    """One keep-alive connection of the open loop as a protocol: ``request`` writes a request and returns a future of
    its answer's status (answers with a Content-Length, as the intake route gives). About a fifth of the CPU of
    ``Conn``'s stream reader (a ``readline`` per header): the open loop shares the server's 2 cores."""

    def __init__(self):
        self.transport = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        line_end = head.find(b"\r\n", at)
        length = int(head[at + 15:line_end if line_end >= 0 else None]) if at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[:end + 4 + length]
        waiter, self.waiter = self.waiter, None
        waiter.set_result(int(head[9:12]))

    def connection_lost(self, exc):
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("the server closed the connection"))

    def request(self, data: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


async def open_loop(port, headers, pts, seconds, rate, connections: int = 64) -> tuple[list[float], int, int, dict]:
    """Requests sent on a fixed schedule, one every 1/rate s whatever the answers (no coordinated omission), each
    on a free connection of ``connections`` kept open (a request finding none free waits for one, and that wait is
    counted); latency counts from the scheduled send time. Also returns the client's own delays, so that a tail of the
    client's making is told apart from the server's: ``send_lag`` (the scheduled time to the request written)
    and ``service`` (written to answered).

    One dispatcher sleeps until each send time and starts that request; the connections are ``_Answering``
    protocols, on uvloop (``on_uvloop``). Until 2026-12-07 every request of the run was a task from the start
    (18,000 sleeping tasks at 1,800/s), on asyncio streams: the client's loop then ran up to 130 ms late (p99 of
    its own lateness 46–88 ms at 1,800/s on PostGIS, against the server's p99 of 39–41 ms; in the evening's
    ``make bench``, with the dispatcher alone, still 235 ms on SQLite), and all 64 connections of its pool were
    taken whenever it caught up, so its own lateness was counted as the server's."""
    loop = asyncio.get_running_loop()

    async def connect() -> _Answering:
        return (await loop.create_connection(_Answering, "127.0.0.1", port))[1]

    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await connect())
    rng = random.Random(2)
    # The requests made beforehand, 4,096 taken in turn (as the wrk script does): none is built on the schedule.
    requests = [http_request("POST", "/api/events/cases", case_body(rng, pts), headers) for _ in range(4096)]
    lat, lag, service = [], [], []
    failures: dict[int, int] = {}  # status → requests not answered 201 (0: the connection closed or failed)
    n = int(seconds * rate)
    tasks = set()

    async def one(scheduled, request):
        c = await pool.get()
        if c.transport is None or c.transport.is_closing():  # closed by the server's keep-alive timeout
            c = await connect()
        sent = time.perf_counter()
        try:
            status = await c.request(request)
        except ConnectionError:
            status = 0
        finally:
            pool.put_nowait(c)
        done = time.perf_counter()
        lat.append(done - scheduled)
        lag.append(sent - scheduled)
        service.append(done - sent)
        if status != 201:
            failures[status] = failures.get(status, 0) + 1

    start = time.perf_counter()
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t = asyncio.create_task(one(scheduled, requests[i % len(requests)]))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    while not pool.empty():
        c = pool.get_nowait()
        if c.transport is not None:
            c.transport.close()
    return lat, n, sum(failures.values()), {"send_lag_p99": pct(lag, 0.99), "service_p99": pct(service, 0.99), "failures": failures}


def on_uvloop(coro):
    """``asyncio.run`` on uvloop where it is installed (it comes with uvicorn's standard extras)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def point_report(item: dict, actor):
    """A sample report (``case_item``) as the intake route hands it to the case writer."""
    from cityops.events.creation import PointReport
    from cityops.events.routing import ALL

    return PointReport(dict(
        source="public", class_code=item["class_code"], kind=None, title=None, description=item["description"],
        lon=item["lon"], lat=item["lat"], address=None, address_id=None, unit_code=None, urgency="normal",
        reporter=None, attributes=None, external_key=None, actor=actor, scope=ALL))


def sample_drafts(env: dict, pts, n: int = 4096) -> list:
    """``n`` reports of the benchmark's sample drafted as the server drafts them (located, routed, numbered; the
    writer's ``creation.draft_reports``), for the raw insert limits: the rows they store are the server's own."""
    from cityops.core.audit import Actor
    from cityops.core.db import make_engine, make_sessionmaker
    from cityops.core.settings import Settings
    from cityops.events.creation import draft_reports
    from cityops.org.levels import load_levels
    from cityops.org.locate import LocatorCache

    settings = Settings(data_dir=env["CITYOPS_DATA_DIR"], database_url=env.get("CITYOPS_DATABASE_URL", ""), secret_key="x", log_json=False)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    locator = LocatorCache(sessions, load_levels(settings.grid_code_length))
    rng, actor = random.Random(6), Actor("bench", None, None)
    reports = [point_report(case_item(rng, pts), actor) for _ in range(n)]
    with sessions() as session:
        drafts = draft_reports(session, reports, locator)
    engine.dispose()
    return [d for d in drafts if not isinstance(d, Exception)]


def raw_insert(env: dict, drafts: list, seconds: float, group: int = 1, driver: bool = False) -> float:
    """Committed writes of the same three rows per case (case, first log entry, outbox row) with Core, ``group``
    cases per transaction (multi-row inserts): the storage ceiling for one case per commit (group 1) and for grouped
    commits. The rows are the server's own (``sample_drafts``: the sample's reports drafted as the writer drafts
    them, each stored under a new number): until 2026-12-07 they were one grid, one unit path and one class for
    every case with empty JSON, whose index entries all went to the same few pages — 0.66–0.88× the rate of
    these rows in alternated runs on SQLite, a limit no intake of a real district's reports could approach.
    ``driver``: the rows as the server writes them instead (``Storage.insert_family``: ids reserved and multi-row
    statements on SQLite, one statement for the three tables on PostgreSQL), past SQLAlchemy's statement building
    — the grouped limit is the better of the two. Neither locates, routes nor keeps the evaluation rollups: that is
    the server's own work, measured against this."""
    import shapely
    from sqlalchemy import insert

    from cityops.core.db import make_engine
    from cityops.core.settings import Settings
    from cityops.core.storage import storage_of
    from cityops.events.creation import _CASE_DEFAULTS, _ENTRY_DEFAULTS, _NOTICE_DEFAULTS
    from cityops.events.models import Case, Outbox, Transition

    settings = Settings(data_dir=env["CITYOPS_DATA_DIR"], database_url=env.get("CITYOPS_DATABASE_URL", ""), secret_key="x", log_json=False)
    engine = make_engine(settings)
    n, k, end = 0, 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        taken = [drafts[(k + i) % len(drafts)] for i in range(group)]
        k += group
        cases = [{**_CASE_DEFAULTS, **d.values, "number": uuid.uuid4().hex} for d in taken]
        entries = [{**_ENTRY_DEFAULTS, **d.entry} for d in taken]
        notices = [{**_NOTICE_DEFAULTS, **d.notice} for d in taken]
        points = shapely.points([c["lon"] for c in cases], [c["lat"] for c in cases])
        with engine.begin() as conn:
            if driver:  # as the server writes a group: ids drawn, then the rows past SQLAlchemy's statement building
                storage = storage_of(conn)
                geoms = storage.bulk_geometries(points)
                storage.insert_family(conn, Case, [{**c, "geom": g} for c, g in zip(cases, geoms)], [
                    (Transition, "case_id", entries), (Outbox, "case_id", notices)])
            else:
                ids = conn.execute(insert(Case).returning(Case.id, sort_by_parameter_order=True),
                                   [{**c, "geom": g} for c, g in zip(cases, points)]).scalars().all()
                conn.execute(insert(Transition), [{**e, "case_id": cid} for e, cid in zip(entries, ids)])
                conn.execute(insert(Outbox), [{**o, "case_id": cid} for o, cid in zip(notices, ids)])
        n += group
    rate = n / (time.perf_counter() - start)
    engine.dispose()
    return rate


def count_cases(env: dict) -> int:
    from sqlalchemy import func, select

    from cityops.core.db import make_engine
    from cityops.core.settings import Settings
    from cityops.events.models import Case

    settings = Settings(data_dir=env["CITYOPS_DATA_DIR"], database_url=env.get("CITYOPS_DATABASE_URL", ""), secret_key="x", log_json=False)
    engine = make_engine(settings)
    with engine.connect() as c:
        n = c.execute(select(func.count(Case.id))).scalar()
    engine.dispose()
    return n


def run_backend(backend: str, args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-events-{backend}-"))
    env, cleanup = build(backend, tmp)
    port = free_port()
    spy = [args.py_spy, "record", "--subprocesses", "--nonblocking", "-f", "raw", "-o",
           str(Path(args.profile) / f"intake-{backend}.txt"), "--"] if args.profile else []
    # The app as deployed plus the benchmark's floor route (intake_server.py). A process group of its own: the
    # server's uvicorn workers (and py-spy's) are ended with it, whatever reaches them of the first signal.
    serve = ([sys.executable, "-m", "uvicorn", "intake_server:create_app", "--factory", "--app-dir", str(ROOT / "benchmarks"),
              "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"] if args.shared_socket else
             [sys.executable, str(ROOT / "benchmarks" / "intake_server.py")])
    server = subprocess.Popen([*spy, *serve, "--port", str(port), "--workers", str(args.workers)],
                              env={**os.environ, **env}, cwd=ROOT, start_new_session=True)
    try:
        import httpx

        for _ in range(300):
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/api/auth/login", json={"username": "admin", "password": "cityops-demo"})
                break
            except httpx.TransportError:
                time.sleep(0.1)
        token = r.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        pts = sample_points(env)
        asyncio.run(closed_loop(port, headers, pts, 2, 8))  # warm-up
        before = count_cases(env)
        # The district built in this process is a large heap: a full collection of it paused the load
        # generator for up to 125 ms, which the open loop counted as the server's latency. Frozen, the
        # collector leaves it alone.
        gc.collect()
        gc.freeze()
        # The district just built wrote a great deal: its checkpoint runs now, not during the sweep (settle.py).
        checkpoint()
        # The capacity: the closed loop at each of --concurrency's client counts, the saturated (highest) throughput
        # taken. A closed loop of C clients is bounded by C / round trip, a latency figure while C is below what
        # the server can take in; a city's intake has hundreds of reporters at once, and the writer's group (the
        # clients waiting in one process) is at most C / workers.
        sweep = []
        use_wrk = args.client == "wrk"

        def loop(concurrency, path="/api/events/cases", seed=1):
            if use_wrk:
                return measured(server, wrk_closed_loop, port, token, pts, args.seconds, concurrency, path=path, seed=seed)
            return measured(server, python_closed_loop, port, headers, pts, args.seconds, concurrency, path=path)

        for i, concurrency in enumerate(args.concurrency):
            sweep.append({"concurrency": concurrency} | loop(concurrency, seed=1 + i))
        best = max(sweep, key=lambda m: m["rate"])
        err_c = sum(m["errors"] for m in sweep)
        n_all = sum(m["n"] for m in sweep)
        in_flight = sum(m["in_flight"] for m in sweep)
        rate = args.rate or max(1.0, round(best["rate"] / 2))
        # The sweep wrote up to ~510 MB of WAL on PostGIS, near the ~540 MB at which the default max_wal_size starts a
        # checkpoint: it starts now, not during the open loop (settle.py).
        checkpoint()
        lat_o, n_o, err_o, client_o = on_uvloop(open_loop(port, headers, pts, args.seconds, rate))
        created = count_cases(env) - before
        # The HTTP floor: the same client and connections against the floor route (authenticated, the same body
        # parsed and checked, no case writer) on the same server processes.
        floor = loop(best["concurrency"], path="/bench/floor")
        # Intake in batches: the same server, the batch route, --batch reports a request.
        lat_b, n_b, err_b, elapsed_b = [], 0, 0, 1.0
        if args.batch:
            before_b = count_cases(env)
            lat_b, n_b, err_b, elapsed_b = asyncio.run(closed_loop(port, headers, pts, args.seconds, args.batch_concurrency,
                                                                   path="/api/events/cases/batch", batch=args.batch))
            created_b = count_cases(env) - before_b
    finally:
        stop_group(server, signal.SIGINT if args.profile else signal.SIGTERM)
    drafts = sample_drafts(env, pts)
    checkpoint()  # the limit from the same state as the server's measures
    raw = raw_insert(env, drafts, 5)
    raw_core = raw_insert(env, drafts, 5, group=args.raw_group)
    raw_driver = raw_insert(env, drafts, 5, group=args.raw_group, driver=True)
    raw_group = max(raw_core, raw_driver)
    cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"backend": backend, "throughput": best["rate"], "floor": floor["rate"], "floor_p50": floor["p50"],
            "floor_server_us": floor["server_us"], "floor_client_us": floor["client_us"],
            "floor_client_share": floor["client_share"],
            "batch_rate": n_b / elapsed_b, "batch_p50": pct(lat_b, 0.5), "batch_p99": pct(lat_b, 0.99),
            "batch_errors": err_b, "batch_created": created_b if args.batch else 0, "batch_answered": n_b - err_b,
            "floor_errors": floor["errors"], "closed_p50": best["p50"], "closed_p99": best["p99"],
            "server_us": best["server_us"], "client_us": best["client_us"], "client_share": best["client_share"],
            "rate": rate, "open_p50": pct(lat_o, 0.5), "open_p99": pct(lat_o, 0.99), **{f"open_{k}": v for k, v in client_o.items()}, "errors": err_c + err_o,
            "raw": raw, "raw_group": raw_group, "raw_core": raw_core, "raw_driver": raw_driver, "created": created,
            "answered": n_all - err_c + n_o - err_o, "in_flight": in_flight, "client": args.client,
            "concurrency": best["concurrency"], "sweep": sweep}

def stop_group(server: subprocess.Popen, sig: int) -> None:
    """End the server's process group: ``sig`` first (py-spy writes its samples on SIGINT; uvicorn stops on either),
    then, after up to 30 s, SIGKILL to whatever of the group is left. py-spy's interrupt never reached uvicorn's
    spawned workers, which kept spinning on their deleted store beside every later measure."""
    try:
        os.killpg(server.pid, sig)
    except ProcessLookupError:
        return
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[16, 32, 64, 128],
                   help="client connections of the closed loop, comma-separated: each is measured for --seconds and the "
                        "highest throughput is the capacity (default 16,32,64,128)")
    p.add_argument("--rate", type=float, default=0, help="open-loop requests/s; 0: half the closed loop's cases/s")
    p.add_argument("--profile", help="directory for py-spy samples of the server (collapsed stacks)")
    p.add_argument("--py-spy", default="py-spy", help="the py-spy program")
    p.add_argument("--backends", default="sqlite,postgis")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (a listening socket each, as "
                                                            "`cityops serve --workers` runs them)")
    p.add_argument("--shared-socket", action="store_true", help="the workers as `uvicorn --workers` runs them instead: "
                                                                "one listening socket shared by all (for comparison)")
    p.add_argument("--raw-group", type=int, default=64, help="cases per transaction of the grouped raw insert")
    p.add_argument("--batch", type=int, default=100, help="reports per request of the batch measure (0: none)")
    p.add_argument("--client", choices=("wrk", "python"), default="wrk" if WRK else "python",
                   help="the closed loops' load generator (capacity sweep and HTTP floor): wrk (the default when "
                        "installed) or the asyncio client of this process; the open loop is always the asyncio client")
    p.add_argument("--batch-concurrency", type=int, default=4, help="connections of the batch measure")
    args = p.parse_args()
    results = [run_backend(b, args) for b in args.backends.split(",")]
    t = Table(title=f"Case creation over HTTP (locate+route+persist+log+outbox), {os.cpu_count()} cores, "
              f"{args.workers} server process(es), load generator ({args.client}) on the same cores")
    for col in ("backend", "HTTP cases/s (closed loop, the capacity)", "p50 / p99 ms", "open loop: rate, p50 / p99 ms",
                "HTTP floor req/s (p50 ms)", "intake / floor",
                "raw, one case per commit (cases/s)", f"raw, {args.raw_group} per commit: Core / driver (cases/s)", "HTTP / raw grouped",
                "errors", "CPU µs a request: server / client (client's share), capacity | floor", "target"):
        t.add_column(col)
    for r in results:
        ok = r["throughput"] / r["raw_group"] >= 0.5 and r["open_p99"] < 100
        t.add_row(r["backend"], f"{r['throughput']:.0f}", f"{r['closed_p50']:.1f} / {r['closed_p99']:.1f}",
                  f"{r['rate']:g}/s: {r['open_p50']:.1f} / {r['open_p99']:.1f}",
                  f"{r['floor']:.0f} ({r['floor_p50']:.1f}){' ERRORS' if r['floor_errors'] else ''}",
                  f"{r['throughput'] / r['floor']:.2f}", f"{r['raw']:.0f}", f"{r['raw_core']:.0f} / {r['raw_driver']:.0f}",
                  f"{r['throughput'] / r['raw_group']:.2f}",
                  str(r["errors"]), f"{r['server_us']:.0f} / {r['client_us']:.0f} ({r['client_share'] * 100:.0f} %) | "
                  f"{r['floor_server_us']:.0f} / {r['floor_client_us']:.0f} ({r['floor_client_share'] * 100:.0f} %)", ("PASS" if ok else "FAIL") + " (≥ 0.5× raw grouped, p99 < 100 ms at half)")
    console.print(t)
    s = Table(title="Closed loop by client connections, one case per request (the capacity is the highest)")
    for col in ("backend", "connections", "cases/s", "p50 / p99 ms", "errors", "CPU µs a case: server / client (client's share)"):
        s.add_column(col)
    for r in results:
        for m in r["sweep"]:
            s.add_row(r["backend"], str(m["concurrency"]) + (" ← capacity" if m["concurrency"] == r["concurrency"] else ""),
                      f"{m['rate']:.0f}", f"{m['p50']:.1f} / {m['p99']:.1f}", str(m["errors"]),
                      f"{m['server_us']:.0f} / {m['client_us']:.0f} ({m['client_share'] * 100:.0f} %)")
    console.print(s)
    if args.batch:
        b = Table(title=f"Case intake over HTTP in batches of {args.batch} (POST /api/events/cases/batch), "
                  f"{args.batch_concurrency} connections, same server, beside the same grouped raw insert")
        for col in ("backend", "cases/s", "requests p50 / p99 ms", f"raw, {args.raw_group} per commit (better of Core / driver)",
                    "batches / raw grouped", "batches / single-case", "errors (cases)", "target"):
            b.add_column(col)
        for r in results:
            ratio = r["batch_rate"] / r["raw_group"]
            b.add_row(r["backend"], f"{r['batch_rate']:.0f}", f"{r['batch_p50']:.1f} / {r['batch_p99']:.1f}",
                      f"{r['raw_group']:.0f}", f"{ratio:.2f}", f"{r['batch_rate'] / r['throughput']:.1f}",
                      str(r["batch_errors"]), ("PASS" if ratio >= 0.5 and not r["batch_errors"] else "FAIL") + " (≥ 0.5× raw grouped)")
        console.print(b)
    for r in results:
        record(f"case intake over HTTP, {args.workers} process(es) ({r['backend']})", f"{r['throughput']:.0f} cases/s",
               f"grouped raw insert {r['raw_group']:.0f}/s", r["throughput"] / r["raw_group"],
               "≥ 0.5× limit, p99 < 100 ms at half",
               r["throughput"] / r["raw_group"] >= 0.5 and r["open_p99"] < 100 and not r["errors"],
               note=f"capacity at {r['concurrency']} connections (closed loop by connections: "
                    + ", ".join(f"{m['concurrency']}: {m['rate']:.0f}/s" for m in r["sweep"]) + "); "
                    f"p99 {r['open_p99']:.0f} ms at {r['rate']:g}/s = half capacity (target < 100 ms; the client's own lateness "
                    f"p99 {r['open_send_lag_p99']:.0f} ms, written to answered p99 {r['open_service_p99']:.0f} ms); "
                    f"{r['errors']} errors"
                    + (" (open loop by status, 0 = connection closed: "
                       + ", ".join(f"{k}: {v}" for k, v in sorted(r["open_failures"].items())) + ")"
                       if r["open_failures"] else "") + "; "
                    f"HTTP floor (authenticated route, body parsed, no writer) {r['floor']:.0f} req/s, "
                    f"intake / floor {r['throughput'] / r['floor']:.2f}; load generator {r['client']}, "
                    f"server CPU {r['server_us']:.0f} µs a case (floor {r['floor_server_us']:.0f} µs a request)")
        if args.batch:
            record(f"case intake over HTTP in batches of {args.batch}, {args.workers} process(es) ({r['backend']})",
                   f"{r['batch_rate']:.0f} cases/s", f"grouped raw insert {r['raw_group']:.0f}/s", r["batch_rate"] / r["raw_group"],
                   "≥ 0.5× limit", r["batch_rate"] / r["raw_group"] >= 0.5 and not r["batch_errors"],
                   note=f"{args.batch_concurrency} connections, request p99 {r['batch_p99']:.0f} ms; {r['batch_errors']} errors; "
                        f"{r['batch_created']} cases stored for {r['batch_answered']} answered")
    for r in results:
        # Every 201 a stored case: the cases grew by at least the 201 answers. wrk ends a measure with requests in
        # flight (at most one per connection) that the server may still store, unanswered: that many more at most.
        ok = r["answered"] <= r["created"] <= r["answered"] + r["in_flight"]
        console.print(f"{r['backend']}: cases in the database grew by {r['created']} for {r['answered']} answered 201 "
                      f"(+ at most {r['in_flight']} in flight at the ends of the wrk runs): {'OK' if ok else 'MISMATCH'}"
                      + (f"; batches: {r['batch_created']} stored, {r['batch_answered']} answered" if args.batch else ""))

if __name__ == "__main__":
    main()

"""Mixed soak on the embedded store (SQLite/GeoPackage): a real server process under the demo storm's load × 10.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--data-dir DIR] [--grids 300] [--scale 10]

Without ``--data-dir`` a demo district is built into a temporary directory (``cityops demo --no-serve``) and
removed afterwards. The server is ``cityops serve`` in its own process with the deployed defaults (capabilities wired:
observations run the rules, warnings and plans).

The load, open-loop (each kind sends on its own clock whatever the answers take), at ``--scale`` times the rates
of the demo as it serves (the July storm at 60×: every 10 s one storm step of every storm sensor):

| kind | demo rate | what |
|---|---|---|
| ingest | 1 / 10 s | ``POST /api/sensing/observations``: the next storm step (rain gauges, GNSS, crack and tilt meters) |
| intake | 1 / 5 s | ``POST /api/events/cases``: a citizen report at a point of 义和镇 |
| household | 1 / 5 s | ``PATCH /api/households/{code}``: a household's room, round the households of 义和镇 |
| login | 1 / 50 s | ``POST /api/auth/login`` (a duty operator; argon2) |
| read | 1 / 5 s | in turn: open cases, devices with their latest values, townships, one household, risk points |

Reported: requests and errors by kind (an error is any answer other than the route's 2xx, or no answer within
120 s), latency median and p99 by kind, the server's resident memory (RSS) sampled every 30 s, and the load
average at start and end. The soak passes with 0 errors and flat memory: the mean RSS of the last fifth of the
run within 10 % of that between 20 % and 40 % of it (the first fifth warms up: caches, pools, the thread pool).
Exit code 1 when it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "cityops-demo"
#: Seconds between two requests of each kind in the demo (the rates above); divided by --scale.
#: An answer later than this counts as an error.
TIMEOUT_S = 120
DEMO_PERIOD = {"ingest": 10.0, "intake": 5.0, "household": 5.0, "login": 50.0, "read": 5.0}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(data_dir: Path, grids: int) -> dict:
    """Build the district when needed; the storm's steps, households and points of 义和镇 the load uses."""
    from sqlalchemy import select, text

    from cityops.core.db import make_engine, make_sessionmaker
    from cityops.core.settings import Settings
    from cityops.org.models import Unit
    from cityops.sensing.simulate import find_streams, iso, storm_steps

    if not (data_dir / "cityops.gpkg").exists():
        subprocess.run([sys.executable, "-m", "cityops.cli", "demo", "--no-serve", "--grids", str(grids), "--data-dir", str(data_dir)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    engine = make_engine(Settings(data_dir=data_dir))
    with make_sessionmaker(engine)() as session:
        streams = find_streams(session)
        town = session.scalar(select(Unit).where(Unit.name == "义和镇", Unit.level == "township"))
        households = list(session.scalars(text("SELECT h.code FROM households h JOIN buildings b ON b.id = h.building_id "
                                               "WHERE b.unit_path LIKE :p ORDER BY h.code LIMIT 500"), {"p": f"%/{town.code}/%"}))
        grids_of_town = session.scalars(select(Unit).where(Unit.path.like(f"{town.path}%"), Unit.level == "grid").limit(50)).all()
        points = [(g.geom.representative_point().x, g.geom.representative_point().y) for g in grids_of_town]
    engine.dispose()
    # Storm steps from a week ago on, one step (10 storm minutes) per ingest request.
    start_ms = int((time.time() - 7 * 86400) * 1000)
    steps = [[{"datastream_id": r.datastream_id, "phenomenonTime": iso(r.t_ms), "result": r.value} for r in rows]
             for _, rows in storm_steps(streams, start_ms=start_ms, hours=24 * 6)]
    return {"steps": steps, "households": households, "points": points, "town": town.code}


class Load:
    def __init__(self, url: str, world: dict, token: str):
        self.url, self.world, self.headers = url, world, {"Authorization": f"Bearer {token}"}
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.requests: Counter = Counter()
        self.errors: Counter = Counter()

    async def one(self, client: httpx.AsyncClient, kind: str, i: int) -> None:
        w = self.world
        if kind == "ingest":
            call, ok = client.post("/api/sensing/observations", headers=self.headers,
                                   json={"observations": w["steps"][i % len(w["steps"])]}), 201
        elif kind == "intake":
            lon, lat = w["points"][i % len(w["points"])]
            call, ok = client.post("/api/events/cases", headers=self.headers,
                                   json={"class_code": "06010", "lon": lon, "lat": lat, "description": f"浸泡测试 {i}"}), 201
        elif kind == "household":
            code = w["households"][i % len(w["households"])]
            call, ok = client.patch(f"/api/households/{code}", headers=self.headers, json={"room": f"{i % 97}室"}), 200
        elif kind == "login":
            call, ok = client.post("/api/auth/login", json={"username": "yihe", "password": PASSWORD}), 200
        else:
            path = [("/api/events/cases", {"limit": 20}), ("/api/sensing/devices", {"limit": 50}),
                    ("/api/units", {"level": "township"}), (f"/api/households/{w['households'][i % len(w['households'])]}", {}),
                    ("/api/risk-points", {})][i % 5]
            call, ok = client.get(path[0], headers=self.headers, params=path[1]), 200
        self.requests[kind] += 1
        start = time.perf_counter()
        try:
            r = await call
            if r.status_code != ok:
                self.errors[f"{kind}: {r.status_code} {r.text[:80]}"] += 1
        except httpx.HTTPError as exc:
            self.errors[f"{kind}: {type(exc).__name__}"] += 1
        self.latency[kind].append(time.perf_counter() - start)

    async def run(self, seconds: float, scale: float, on_tick) -> None:
        # httpx's own idle expiry (5 s): the server keeps idle connections longer (keep_alive_seconds), so the
        # client always drops them first. The other way round, a request sent on a connection the server was
        # closing failed (ReadError) — 8 and 1 of them in two early runs, before the setting.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT_S, limits=limits) as client:
            start = time.monotonic()
            pending: set[asyncio.Task] = set()

            async def clock(kind: str):
                period, i = DEMO_PERIOD[kind] / scale, 0
                while (at := start + i * period) < start + seconds:
                    await asyncio.sleep(max(0.0, at - time.monotonic()))
                    task = asyncio.create_task(self.one(client, kind, i))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    i += 1

            async def ticker():
                while time.monotonic() < start + seconds:
                    on_tick(time.monotonic() - start)
                    await asyncio.sleep(30)

            await asyncio.gather(*(clock(k) for k in DEMO_PERIOD), ticker())
            if pending:
                await asyncio.gather(*pending)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--grids", type=int, default=300)
    parser.add_argument("--scale", type=float, default=10.0)
    args = parser.parse_args()

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="cityops-soak-"))
        data_dir = tmp / "data"
    proc = None
    try:
        t = time.perf_counter()
        world = prepare(data_dir, args.grids)
        print(f"district ready in {time.perf_counter() - t:.0f} s: {len(world['households'])} households, "
              f"{len(world['steps'][0])} storm sensors")
        port = free_port()
        env = {**os.environ, "CITYOPS_DATA_DIR": str(data_dir), "CITYOPS_LOG_JSON": "false"}
        env.pop("CITYOPS_DATABASE_URL", None)
        # The server as deployed: ``cityops serve`` (its keep-alive, its logging).
        proc = subprocess.Popen([str(Path(sys.executable).with_name("cityops")), "serve", "--port", str(port)],
                                env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        token = httpx.post(f"{url}/api/auth/login", json={"username": "admin", "password": PASSWORD}, timeout=60).json()["access_token"]
        load = Load(url, world, token)
        rss: list[tuple[float, int]] = []
        load_start = os.getloadavg()

        def tick(elapsed: float) -> None:
            rss.append((elapsed, rss_kb(proc.pid)))
            done = sum(load.requests.values())
            print(f"  {elapsed:5.0f} s  requests {done:6d}  errors {sum(load.errors.values()):4d}  RSS {rss[-1][1] / 1024:7.1f} MiB  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)

        print(f"soak: {args.minutes:g} min at {args.scale:g}× the demo's rates against {url}")
        asyncio.run(load.run(args.minutes * 60, args.scale, tick))
        rss.append((args.minutes * 60, rss_kb(proc.pid)))
        load_end = os.getloadavg()
        alive = proc.poll() is None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n| kind | requests | errors | median ms | p99 ms |\n|---|---|---|---|---|")
    for kind in DEMO_PERIOD:
        lat = sorted(load.latency[kind])
        errors = sum(n for k, n in load.errors.items() if k.startswith(kind + ":"))
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        print(f"| {kind} | {load.requests[kind]:,} | {errors} | {statistics.median(lat) * 1000:.0f} | {p99 * 1000:.0f} |")
    print(f"| all | {sum(load.requests.values()):,} | {sum(load.errors.values())} | | |")
    for k, n in load.errors.most_common(10):
        print(f"  error {n}× {k}")
    total = args.minutes * 60
    warm = [r for t, r in rss if 0.2 * total <= t <= 0.4 * total] or [rss[0][1]]
    late = [r for t, r in rss if t >= 0.8 * total] or [rss[-1][1]]
    first, last = statistics.mean(warm), statistics.mean(late)
    print(f"\nserver RSS: start {rss[0][1] / 1024:.1f} MiB, end {rss[-1][1] / 1024:.1f} MiB, max {max(r for _, r in rss) / 1024:.1f} MiB; "
          f"20–40 % of the run {first / 1024:.1f} MiB, last 20 % {last / 1024:.1f} MiB ({(last / first - 1) * 100:+.1f} %), "
          f"{len(rss)} samples")
    print(f"load average (1/5/15 min): start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
          f"end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f}; 2 cores")
    flat = last <= first * 1.10
    passed = alive and not load.errors and flat
    print(f"\n{'PASS' if passed else 'FAIL'}: {sum(load.errors.values())} errors, memory {'flat' if flat else 'growing'}, "
          f"server {'alive' if alive else 'dead'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""OGC API – Features items with a bbox: CityOps ``/ogc`` against pygeoapi, side by side in one run.

Both servers read the same PostGIS database (a fresh CityOps store: N generated building footprints clustered
around town centres, in ``layer_buildings``; pygeoapi reads an indexed copy of the same rows, see
``build_store`` for why) and run the same way: one uvicorn process each, on
127.0.0.1. pygeoapi uses its PostgreSQL provider on that table (it comes from PyPI into its own venv:
``python3 -m venv /tmp/pygeoapi-venv && /tmp/pygeoapi-venv/bin/pip install pygeoapi psycopg2-binary
geoalchemy2 pygeofilter uvicorn``). The client sends ``/collections/buildings/items?bbox=…&limit=100`` for a
fixed, seeded list of ~1 km boxes in dense areas, from C keep-alive connections in threads, for a fixed
number of requests; rounds alternate between the servers and the table shows medians and the ratio.
Every response is checked (200, a FeatureCollection with ``numberMatched``) so an error is never fast.

    .venv/bin/python benchmarks/ogc_items.py                      # N = 200,000, C = 8, 3 rounds
    .venv/bin/python benchmarks/ogc_items.py --buildings 1000000 --concurrency 16 --requests 2000
"""

from __future__ import annotations

import argparse
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

import httpx
import numpy as np
import pyogrio
import shapely
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

console = Console()
PG_ADMIN = os.environ.get("CITYOPS_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CENTRES = [(108.393, 31.160), (108.25, 31.05), (108.55, 31.30), (108.70, 31.40), (108.10, 31.20)]

SERVE_OURS = """
import sys, uvicorn
from cityops.app import create_app
from cityops.core.settings import Settings
url, data_dir, port = sys.argv[1:4]
app = create_app(Settings(data_dir=data_dir, database_url=url, secret_key="bench-secret", log_json=False,
                          log_level="WARNING"), run_migrations=False)
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False, lifespan="off")
"""

PYGEOAPI_CONFIG = """
server:
  bind: {{host: 127.0.0.1, port: {port}}}
  url: http://127.0.0.1:{port}
  mimetype: application/json; charset=UTF-8
  encoding: utf-8
  language: en-US
  limits: {{default_items: 10, max_items: 10000}}
  map:
    url: "https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png"
    attribution: OSM
logging:
  level: ERROR
metadata:
  identification:
    title: bench
    description: bench
    keywords: [bench]
    keywords_type: theme
    terms_of_service: https://example.org
    url: https://example.org
  license: {{name: CC-BY 4.0, url: https://creativecommons.org/licenses/by/4.0/}}
  provider: {{name: bench, url: https://example.org}}
  contact: {{name: bench, position: bench, address: x, city: x, stateorprovince: x, postalcode: x, country: x,
            phone: x, fax: x, email: x, url: https://example.org, hours: x, instructions: x, role: pointOfContact}}
resources:
  buildings:
    type: collection
    title: buildings
    description: buildings
    keywords: [buildings]
    extents:
      spatial: {{bbox: [107.9, 30.8, 108.9, 31.7], crs: http://www.opengis.net/def/crs/OGC/1.3/CRS84}}
    providers:
      - type: feature
        name: PostgreSQL
        data: {{host: 127.0.0.1, port: 5432, dbname: {db}, user: postgres, password: ""}}
        id_field: id
        table: pygeoapi_buildings
        geom_field: geom
        storage_crs: http://www.opengis.net/def/crs/OGC/1.3/CRS84
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start (exit {proc.poll()})")
            time.sleep(0.2)


def make_buildings(path: Path, n: int, seed: int = 11) -> None:
    rng = np.random.default_rng(seed)
    centre = rng.integers(0, len(CENTRES), n)
    cx, cy = np.array(CENTRES)[centre].T
    x = cx + rng.normal(0, 0.03, n)
    y = cy + rng.normal(0, 0.02, n)
    w = rng.uniform(0.00008, 0.0003, n)
    h = rng.uniform(0.00008, 0.0003, n)
    geoms = shapely.box(x, y, x + w, y + h)
    fields = [np.array([f"B{i:08d}" for i in range(n)], dtype=object), rng.integers(1, 33, n).astype("int32"),
              rng.choice(np.array(["砖混", "框架", "砖木", "钢结构"], dtype=object), n)]
    pyogrio.raw.write(path, shapely.to_wkb(geoms), fields, ["code", "floors", "structure"], driver="FlatGeobuf",
                      geometry_type="Polygon", crs="EPSG:4490")


def build_store(db: str, data_dir: Path, source: Path) -> None:
    from cityops.base import service
    from cityops.core import audit
    from cityops.core.db import make_engine, make_sessionmaker, migrate
    from cityops.core.settings import Settings
    from cityops.identity.scope import Scope
    from cityops.identity.service import create_user
    from cityops.org.models import Unit

    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
    settings = Settings(data_dir=data_dir, database_url=url, secret_key="bench-secret", log_json=False)
    engine = make_engine(settings)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    everything = Scope(all_units=True)
    with sessions() as session:
        session.add(Unit(code="500154", name="开州区", level="district", path="/500154/", attributes={},
                         geom=shapely.MultiPolygon([shapely.box(107.9, 30.8, 108.9, 31.7)])))
        create_user(session, audit.SYSTEM, username="bench", password="bench-password", role="administrator")
        service.create_layer(session, audit.SYSTEM, everything, {"key": "buildings", "title_zh": "房屋",
                                                                   "category": "0201", "geometry_type": "POLYGON"})
        session.commit()
        service.import_file(session, audit.SYSTEM, everything, "buildings", source)
        session.commit()
    with engine.begin() as conn:
        # pygeoapi 0.21 turns a CRS84 bbox into the storage CRS with pyproj's authority axis order, so with
        # EPSG:4490 storage it builds a lat/lon envelope and finds nothing. Its table is therefore the same rows
        # with the SRID label 4326 (coordinates identical: both CRSs are lon/lat here), its own GiST index and
        # primary key, served with storage_crs CRS84 — equal work, and a correct answer (checked below).
        conn.exec_driver_sql("CREATE TABLE pygeoapi_buildings AS SELECT id, fid, properties, "
                             "ST_SetSRID(geom, 4326)::geometry(Polygon, 4326) AS geom, v_from FROM layer_buildings")
        conn.exec_driver_sql("ALTER TABLE pygeoapi_buildings ADD PRIMARY KEY (id)")
        conn.exec_driver_sql("CREATE INDEX ON pygeoapi_buildings USING gist (geom)")
        conn.exec_driver_sql("ANALYZE layer_buildings")
        conn.exec_driver_sql("ANALYZE pygeoapi_buildings")
    engine.dispose()


def boxes(count: int, size_deg: float = 0.01, seed: int = 5) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        cx, cy = CENTRES[i % len(CENTRES)]
        x, y = cx + rng.normal(0, 0.02), cy + rng.normal(0, 0.015)
        out.append(f"{x:.5f},{y:.5f},{x + size_deg:.5f},{y + size_deg * 0.9:.5f}")
    return out


def load(base: str, headers: dict, bboxes: list[str], concurrency: int, total: int) -> tuple[float, list[float]]:
    """Requests per second over ``total`` requests from ``concurrency`` threads, and the latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                r = client.get("/collections/buildings/items", params={"bbox": bboxes[i % len(bboxes)], "limit": 100,
                                                                       "f": "json"})
                took = time.perf_counter() - start
                if r.status_code != 200 or "numberMatched" not in r.json():
                    errors.append(f"{r.status_code} {r.text[:200]}")
                with lock:
                    latencies.append(took)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{base}: {len(errors)} failed requests, e.g. {errors[0]}")
    return total / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buildings", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pygeoapi-venv", default=os.environ.get("PYGEOAPI_VENV", "/tmp/pygeoapi-venv"))
    args = parser.parse_args()
    pg_bin = Path(args.pygeoapi_venv) / "bin"
    if not (pg_bin / "pygeoapi").exists():
        raise SystemExit(f"pygeoapi not found in {args.pygeoapi_venv}; see the module docstring")
    pg_version = subprocess.run([str(pg_bin / "python"), "-c", "import pygeoapi; print(pygeoapi.__version__)"],
                                capture_output=True, text=True).stdout.strip()

    db = f"cityops_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    procs: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cityops-ogc-bench-") as tmp:
            tmp = Path(tmp)
            source = tmp / "buildings.fgb"
            console.print(f"generating {args.buildings:,} buildings and loading them into {db} …")
            make_buildings(source, args.buildings)
            build_store(db, tmp / "data", source)

            ours_port, theirs_port = free_port(), free_port()
            url = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
            procs.append(subprocess.Popen([sys.executable, "-c", SERVE_OURS, url, str(tmp / "data"), str(ours_port)],
                                          cwd=Path(__file__).resolve().parents[1]))
            config = tmp / "pygeoapi.yml"
            config.write_text(PYGEOAPI_CONFIG.format(port=theirs_port, db=db), encoding="utf-8")
            openapi = tmp / "pygeoapi-openapi.yml"
            subprocess.run([str(pg_bin / "pygeoapi"), "openapi", "generate", str(config), "--output-file", str(openapi)],
                           check=True, capture_output=True)
            env = {**os.environ, "PYGEOAPI_CONFIG": str(config), "PYGEOAPI_OPENAPI": str(openapi)}
            procs.append(subprocess.Popen([str(pg_bin / "uvicorn"), "pygeoapi.starlette_app:APP", "--host", "127.0.0.1",
                                           "--port", str(theirs_port), "--log-level", "warning", "--no-access-log"],
                                          env=env, cwd=tmp))
            wait_for(ours_port, procs[0], "CityOps")
            wait_for(theirs_port, procs[1], "pygeoapi")
            token = httpx.post(f"http://127.0.0.1:{ours_port}/api/auth/login",
                               json={"username": "bench", "password": "bench-password"}).json()["access_token"]
            servers = {
                "CityOps /ogc": (f"http://127.0.0.1:{ours_port}/ogc", {"Authorization": f"Bearer {token}"}),
                f"pygeoapi {pg_version}": (f"http://127.0.0.1:{theirs_port}", {}),
            }
            bboxes = boxes(200)
            # Same answer from both (numberMatched), so both do the same work.
            for bbox in bboxes[:5]:
                counts = [httpx.get(f"{base}/collections/buildings/items", headers=h,
                                    params={"bbox": bbox, "limit": 1, "f": "json"}).json()["numberMatched"]
                          for base, h in servers.values()]
                if counts[0] != counts[1]:
                    detail = [httpx.get(f"{base}/collections/buildings/items", headers=h, params={"bbox": bbox, "limit": 1, "f": "json"}).text[:600] for base, h in servers.values()]
                    raise SystemExit(f"numberMatched differs for bbox {bbox}: {counts}\n{detail}")
            for base, h in servers.values():  # warm-up
                load(base, h, bboxes, args.concurrency, 50)
            rps: dict[str, list[float]] = {name: [] for name in servers}
            lat: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name, (base, h) in servers.items():
                    r, latencies = load(base, h, bboxes, args.concurrency, args.requests)
                    rps[name].append(r)
                    lat[name] += latencies
            matched = statistics.median(
                httpx.get(f"{servers['CityOps /ogc'][0]}/collections/buildings/items", headers=servers["CityOps /ogc"][1],
                          params={"bbox": b, "limit": 1}).json()["numberMatched"] for b in bboxes[:20])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()

    table = Table("server", "median req/s", "rounds req/s", "median latency ms", "p95 latency ms",
                  title=(f"/collections/buildings/items?bbox=…&limit=100 — {args.buildings:,} buildings on PostGIS, "
                         f"concurrency {args.concurrency}, {args.requests} requests × {args.rounds} rounds, "
                         f"median numberMatched {matched:.0f}, {os.cpu_count()} CPUs"))
    for name in servers:
        ms = sorted(v * 1000 for v in lat[name])
        table.add_row(name, f"{statistics.median(rps[name]):.1f}", ", ".join(f"{v:.1f}" for v in rps[name]),
                      f"{statistics.median(ms):.1f}", f"{ms[int(len(ms) * 0.95) - 1]:.1f}")
    console.print(table)
    names = list(servers)
    ratio = statistics.median(rps[names[0]]) / statistics.median(rps[names[1]])
    console.print(f"ratio CityOps / pygeoapi (median req/s): [bold]{ratio:.2f}×[/bold] (target ≥ 3×)")


if __name__ == "__main__":
    main()

"""OGC API – Features items with a bbox: CityOps ``/ogc`` against pygeoapi, side by side in one run.

Both servers read the same PostGIS database (a fresh CityOps store: N generated building footprints clustered
around town centres, in the layer ``footprints`` (table ``layer_footprints``), or an existing district) and run the same way: one uvicorn
process each, on 127.0.0.1; CityOps also serves the same data on SQLite. pygeoapi uses its PostgreSQL
provider on that very table (it comes from PyPI into its own venv:
``python3 -m venv /tmp/pygeoapi-venv && /tmp/pygeoapi-venv/bin/pip install pygeoapi starlette psycopg2-binary
geoalchemy2 pygeofilter uvicorn``). The client sends ``/collections/footprints/items?bbox=…&limit=100`` for the
200 densest ~1 km boxes, from C keep-alive connections in threads, for a fixed
number of requests; rounds alternate between the servers and the table shows medians and the ratio.
Every response is checked (200, a FeatureCollection with ``numberMatched``) so an error is never fast.

    .venv/bin/python benchmarks/ogc_items.py                      # N = 200,000, C = 8, 3 rounds
    .venv/bin/python benchmarks/ogc_items.py --buildings 1000000 --concurrency 16 --requests 2000
    # an existing district, read only (nothing is built or written); its layer ``buildings`` is served by
    # CityOps on PostGIS (and on SQLite with --data-dir) and by pygeoapi straight from its table layer_buildings:
    .venv/bin/python benchmarks/ogc_items.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/cityops_census \
        --data-dir /work/census/sqlite --collection buildings

The boxes are the 200 densest cells of about 1 km × 1 km (0.01° × 0.009°) of the collection, counted by
envelope centre in SQL, so the choice is automatic on any district. pygeoapi reads the same table
(``layer_<key>``, SRID 4490): its bbox is sent with ``bbox-crs`` = its storage CRS EPSG:4490 in lon/lat
order and its output asked in that CRS, because pygeoapi 0.21 swaps a CRS84 bbox into EPSG:4490's
lat/lon axis order and then builds the envelope from those numbers (it would find nothing). So both
servers test the same envelope against the same rows and write the stored coordinates as they are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyogrio
import shapely
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import create_pg_database, drop_pg_database, free_port, pg_database_url, wait_for_port  # noqa: E402
from report import record  # noqa: E402

console = Console()
PG_ADMIN = os.environ.get("CITYOPS_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CENTRES = [(108.393, 31.160), (108.25, 31.05), (108.55, 31.30), (108.70, 31.40), (108.10, 31.20)]

SERVE_OURS = """
import os, sys, uvicorn
from cityops.app import create_app
from cityops.core.settings import Settings
url, data_dir, port = sys.argv[1:4]
app = create_app(Settings(data_dir=data_dir, database_url=url, log_json=False,
                          secret_key=os.environ.get("CITYOPS_SECRET_KEY", "bench-secret"),
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
  {collection}:
    type: collection
    title: buildings
    description: buildings
    keywords: [buildings]
    extents:
      spatial: {{bbox: [107.9, 30.8, 108.9, 31.7], crs: http://www.opengis.net/def/crs/OGC/1.3/CRS84}}
    providers:
      - type: feature
        name: PostgreSQL
        data: {{host: {host}, port: {port_db}, dbname: {db}, user: {user}, password: "{password}"}}
        id_field: id
        table: {table}
        geom_field: geom
        storage_crs: http://www.opengis.net/def/crs/EPSG/0/4490
        crs: [http://www.opengis.net/def/crs/OGC/1.3/CRS84, http://www.opengis.net/def/crs/EPSG/0/4490]
"""


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


def build_store(url: str | None, data_dir: Path, source: Path) -> None:
    """A fresh CityOps store (PostGIS at ``url``, else SQLite in ``data_dir``) with ``source`` as layer
    ``footprints`` and a user ``bench`` who sees everything."""
    from cityops.base import service
    from cityops.core import audit
    from cityops.core.db import make_engine, make_sessionmaker, migrate
    from cityops.core.settings import Settings
    from cityops.identity.scope import Scope
    from cityops.identity.service import create_user
    from cityops.org.models import Unit

    settings = Settings(data_dir=data_dir, database_url=url or "", secret_key="bench-secret", log_json=False)
    engine = make_engine(settings)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    everything = Scope(all_units=True)
    with sessions() as session:
        session.add(Unit(code="500154", name="开州区", level="district", path="/500154/", attributes={},
                         geom=shapely.MultiPolygon([shapely.box(107.9, 30.8, 108.9, 31.7)])))
        create_user(session, audit.SYSTEM, username="bench", password="bench-password", role="administrator")
        service.create_layer(session, audit.SYSTEM, everything, {"key": "footprints", "title_zh": "房屋",
                                                                   "category": "0201", "geometry_type": "POLYGON"})
        session.commit()
        service.import_file(session, audit.SYSTEM, everything, "footprints", source)
        session.commit()
    if url is not None:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE layer_footprints")
    engine.dispose()


def densest_boxes(url: str, table: str, count: int = 200, cell: tuple[float, float] = (0.01, 0.009)) -> list[str]:
    """The ``count`` cells of about 1 km² holding the most features (by envelope centre), counted in SQL:
    no geometry is read into Python, so this is cheap on any district. Boxes as "minx,miny,maxx,maxy"."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                f"SELECT floor((ST_XMin(geom) + ST_XMax(geom)) / 2 / :w) AS i, "
                f"floor((ST_YMin(geom) + ST_YMax(geom)) / 2 / :h) AS j, count(*) AS c "
                f"FROM {table} WHERE geom IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT :n"),
                {"w": cell[0], "h": cell[1], "n": count}).all()
    finally:
        engine.dispose()
    if not rows:
        raise SystemExit(f"{table} holds no geometry")
    return [f"{r.i * cell[0]:.5f},{r.j * cell[1]:.5f},{(r.i + 1) * cell[0]:.5f},{(r.j + 1) * cell[1]:.5f}" for r in rows]


def load(base: str, headers: dict, extra: dict, bboxes: list[str], concurrency: int, total: int,
         path: str = "/collections/footprints/items") -> tuple[float, list[float]]:
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
                r = client.get(path, params={"bbox": bboxes[i % len(bboxes)], "limit": 100, "f": "json", **extra})
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
    parser.add_argument("--buildings", type=int, default=200_000, help="generated features (without --database-url)")
    parser.add_argument("--database-url", help="an existing PostGIS district, used read only")
    parser.add_argument("--data-dir", type=Path, help="with --database-url: the same district on SQLite, also served "
                                                      "by CityOps (read only)")
    parser.add_argument("--collection", default="footprints", help="layer key served (default footprints: the generated "
                        "layer; the key buildings names the buildings registry's collection)")
    parser.add_argument("--username", default="bench", help="CityOps user for an existing district")
    parser.add_argument("--password", default="bench-password")
    parser.add_argument("--api-key", help="an API key of the existing district instead of a login (which stores a "
                                          "token); the server then needs the district's CITYOPS_SECRET_KEY")
    parser.add_argument("--backends", nargs="+", choices=("postgis", "sqlite"), default=["postgis", "sqlite"],
                        help="CityOps backends to serve (sqlite needs --data-dir with --database-url)")
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
    if not args.collection.isidentifier():
        raise SystemExit(f"--collection {args.collection!r} is not a layer key")
    table = f"layer_{args.collection}"

    db = None
    procs: list[subprocess.Popen] = []
    tmp_dir = tempfile.TemporaryDirectory(prefix="cityops-ogc-bench-")
    tmp = Path(tmp_dir.name)
    try:
        if args.database_url:
            url, sqlite_dir = args.database_url, args.data_dir
            if "sqlite" in args.backends and sqlite_dir is None:
                console.print("no --data-dir: CityOps is served on PostGIS only")
            label = f"{url.rsplit('/', 1)[-1]} (existing, read only)"
        else:
            db = create_pg_database("cityops_bench", PG_ADMIN)
            url = pg_database_url(db, PG_ADMIN)
            source = tmp / "buildings.fgb"
            console.print(f"generating {args.buildings:,} buildings and loading them into {db} …")
            make_buildings(source, args.buildings)
            build_store(url, tmp / "pg", source)
            sqlite_dir = None
            if "sqlite" in args.backends:
                sqlite_dir = tmp / "sqlite"
                build_store(None, sqlite_dir, source)
            label = f"{args.buildings:,} generated buildings"
        parsed = make_url(url)
        root = Path(__file__).resolve().parents[1]
        cityops_servers: dict[str, tuple[str, dict, dict]] = {}
        backends = [("postgis", url, tmp / "pg")] if "postgis" in args.backends else []
        if "sqlite" in args.backends and sqlite_dir is not None:
            backends.append(("sqlite", None, sqlite_dir))
        for backend, db_url, data_dir in backends:
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", SERVE_OURS, db_url or "", str(data_dir), str(port)], cwd=root))
            wait_for_port(procs[-1], port, seconds=60)
            if args.api_key:
                auth = {"X-API-Key": args.api_key}
            else:
                # A password check takes seconds of CPU on a busy machine: more than httpx's default 5 s timeout.
                login = httpx.post(f"http://127.0.0.1:{port}/api/auth/login",
                                   json={"username": args.username, "password": args.password}, timeout=120)
                if login.status_code != 200:
                    raise SystemExit(f"CityOps ({backend}): login as {args.username!r} failed: {login.text[:200]}")
                auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            cityops_servers[f"CityOps /ogc, {backend}"] = (f"http://127.0.0.1:{port}/ogc", auth, {})

        theirs_port = free_port()
        config = tmp / "pygeoapi.yml"
        config.write_text(PYGEOAPI_CONFIG.format(
            port=theirs_port, collection=args.collection, db=parsed.database, table=table, host=parsed.host or "127.0.0.1", port_db=parsed.port or 5432,
            user=parsed.username or "postgres", password=parsed.password or ""), encoding="utf-8")
        openapi = tmp / "pygeoapi-openapi.yml"
        subprocess.run([str(pg_bin / "pygeoapi"), "openapi", "generate", str(config), "--output-file", str(openapi)],
                       check=True, capture_output=True)
        env = {**os.environ, "PYGEOAPI_CONFIG": str(config), "PYGEOAPI_OPENAPI": str(openapi)}
        procs.append(subprocess.Popen([str(pg_bin / "uvicorn"), "pygeoapi.starlette_app:APP", "--host", "127.0.0.1",
                                       "--port", str(theirs_port), "--log-level", "warning", "--no-access-log"],
                                      env=env, cwd=tmp))
        wait_for_port(procs[-1], theirs_port, seconds=60)
        storage = "http://www.opengis.net/def/crs/EPSG/0/4490"
        servers = {**cityops_servers,
                   f"pygeoapi {pg_version}": (f"http://127.0.0.1:{theirs_port}", {}, {"bbox-crs": storage, "crs": storage})}
        path = f"/collections/{args.collection}/items"
        t0 = time.perf_counter()
        bboxes = densest_boxes(url, table)
        console.print(f"{len(bboxes)} densest ~1 km² boxes of {table} found in {time.perf_counter() - t0:.1f} s")

        def matched_of(base, h, extra, bbox) -> int:
            r = httpx.get(f"{base}{path}", headers=h, params={"bbox": bbox, "limit": 1, "f": "json", **extra}, timeout=120)
            if r.status_code != 200:
                raise SystemExit(f"{base}{path}: {r.status_code} {r.text[:300]}")
            return r.json()["numberMatched"]

        # Same answer from every server (numberMatched), so all do the same work.
        for bbox in bboxes[:5]:
            counts = [matched_of(*server, bbox) for server in servers.values()]
            if len(set(counts)) != 1:
                raise SystemExit(f"numberMatched differs for bbox {bbox}: {dict(zip(servers, counts))}")
        for base, h, extra in servers.values():  # warm-up
            load(base, h, extra, bboxes, args.concurrency, 50, path)
        rps: dict[str, list[float]] = {name: [] for name in servers}
        lat: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (base, h, extra) in servers.items():
                r, latencies = load(base, h, extra, bboxes, args.concurrency, args.requests, path)
                rps[name].append(r)
                lat[name] += latencies
        first = next(iter(servers.values()))
        matched = statistics.median(matched_of(*first, b) for b in bboxes[:20])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        if db is not None:
            drop_pg_database(db, PG_ADMIN)
        tmp_dir.cleanup()

    table_out = Table("server", "median req/s", "rounds req/s", "median latency ms", "p95 latency ms", "ratio / pygeoapi",
                      title=(f"{path}?bbox=…&limit=100 — {label}, concurrency {args.concurrency}, "
                             f"{args.requests} requests × {args.rounds} rounds, median numberMatched {matched:.0f}, "
                             f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"))
    names = list(servers)
    peer = statistics.median(rps[names[-1]])
    for name in names:
        ms = sorted(v * 1000 for v in lat[name])
        med = statistics.median(rps[name])
        table_out.add_row(name, f"{med:.1f}", ", ".join(f"{v:.1f}" for v in rps[name]),
                          f"{statistics.median(ms):.1f}", f"{ms[int(len(ms) * 0.95) - 1]:.1f}", f"{med / peer:.2f}×")
    console.print(table_out)
    console.print("target: CityOps ≥ 3 × pygeoapi's req/s")
    for name in names[:-1]:
        med = statistics.median(rps[name])
        record(f"OGC items bbox limit=100, {label} ({name.rsplit(', ', 1)[-1]})", f"{med:.0f} req/s",
               f"{names[-1]} {peer:.0f} req/s", med / peer, "≥ 3× pygeoapi", med / peer >= 3)


if __name__ == "__main__":
    main()

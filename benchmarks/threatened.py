"""Benchmark: "who is threatened" (housing.service.threatened) for 1 km² zones in dense areas, side by side
with a raw spatial-index query of the same zones, on a store that already holds a district.

    .venv/bin/python benchmarks/threatened.py --data-dir /tmp/census-full            # embedded GeoPackage
    .venv/bin/python benchmarks/threatened.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/cityops_census

Zones: squares of 1,000 m × 1,000 m (in a local metric plane) centred on buildings of the densest grids (the
grids with most buildings), one per grid, ``--zones`` of them. Each zone is queried ``--rounds`` times,
interleaved with the raw query:

- ours: ``threatened(session, Scope(all_units=True), personal=True, zone, limit=--limit)`` — the whole answer
  of ``POST /api/threatened``: exact intersection, household/resident/vulnerable counts from the building rows (kept by triggers), exact totals and
  grouping by village and grid with the responsible people, and the first page (default 100, the API's
  default) of each item list;
- raw: the ids of buildings whose envelope meets the zone's envelope, straight from the spatial index
  (GeoPackage R*Tree / PostGIS GiST ``&&``), no exact test, no counts — the floor any answer pays.

Prints p50/p95 of both and their ratio; target (issue 3): p95 < 50 ms at census scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import shapely
from sqlalchemy import func, select, text

from cityops.core.crs import LocalPlane
from cityops.core.db import make_engine, make_sessionmaker
from cityops.core.settings import Settings
from cityops.housing.models import Building
from cityops.housing.service import threatened
from cityops.identity.scope import Scope
from report import record  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def zones(session, n: int, side_m: float) -> list:
    """1 km² squares on the densest grids: centred on a building of each (the median one by id)."""
    dense = session.execute(select(Building.grid_code, func.count()).group_by(Building.grid_code)
                            .order_by(func.count().desc()).limit(n)).all()
    out = []
    for grid_code, _ in dense:
        ids = session.scalars(select(Building.id).where(Building.grid_code == grid_code).order_by(Building.id)).all()
        footprint = session.scalar(select(Building.footprint).where(Building.id == ids[len(ids) // 2]))
        c = footprint.centroid
        plane = LocalPlane(c.x, c.y)
        out.append(plane.inverse(shapely.box(-side_m / 2, -side_m / 2, side_m / 2, side_m / 2)))
    return out


def raw_query(session, dialect: str, zone) -> int:
    minx, miny, maxx, maxy = zone.bounds
    if dialect == "postgresql":
        sql = text("SELECT id FROM buildings WHERE footprint && ST_MakeEnvelope(:minx, :miny, :maxx, :maxy, 4490)")
    else:
        sql = text("SELECT id FROM rtree_buildings_footprint WHERE minx <= :maxx AND maxx >= :minx "
                   "AND miny <= :maxy AND maxy >= :miny")
    return len(session.execute(sql, dict(minx=minx, miny=miny, maxx=maxx, maxy=maxy)).all())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="data directory of an embedded store")
    parser.add_argument("--database-url", help="a PostGIS database holding a district")
    parser.add_argument("--zones", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--side-m", type=float, default=1000.0)
    parser.add_argument("--limit", type=int, default=100, help="page size of the item lists (the API's default: 100)")
    args = parser.parse_args()
    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}),
                        **({"database_url": args.database_url} if args.database_url else {}))
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    dialect = engine.dialect.name
    everyone = Scope(all_units=True)
    with sessions() as session:
        n_buildings = session.scalar(select(func.count()).select_from(Building))
        targets = zones(session, args.zones, args.side_m)
        # Warm both paths once (page cache, prepared statements), outside the timed region.
        threatened(session, everyone, True, targets[0])
        raw_query(session, dialect, targets[0])
        ours, raw, sizes, hits, cpu = [], [], [], [], []
        for r in range(args.rounds):
            for i, zone in enumerate(targets):
                order = (0, 1) if (r + i) % 2 == 0 else (1, 0)  # alternate which goes first
                for which in order:
                    t0, c0 = time.perf_counter(), time.process_time()
                    if which == 0:
                        answer = threatened(session, everyone, True, zone, limit=args.limit)
                        ours.append(time.perf_counter() - t0)
                        cpu.append(time.process_time() - c0)
                        if r == 0:
                            sizes.append(answer["totals"]["buildings"])
                            hits.append(answer["totals"]["residents"])
                    else:
                        raw_query(session, dialect, zone)
                        raw.append(time.perf_counter() - t0)
    engine.dispose()
    backend = "PostGIS" if dialect == "postgresql" else "GeoPackage (SQLite)"
    ms = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
    print(f"\n'Who is threatened', {backend}, {n_buildings:,} buildings; {len(targets)} zones of "
          f"{args.side_m:.0f} m × {args.side_m:.0f} m × {args.rounds} rounds")
    print(f"buildings per zone: median {statistics.median(sizes):.0f}, max {max(sizes)}; "
          f"residents per zone: median {statistics.median(hits):.0f}, max {max(hits)}\n")
    print(f"| measure | ours: threatened() | raw spatial-index query | ratio ours / raw |")
    print(f"|---|---|---|---|")
    for label, q in (("p50", 50), ("p95", 95), ("max", 100)):
        a, b = percentile(ours, q), percentile(raw, q)
        print(f"| {label} | {ms(a)} | {ms(b)} | {a / b:.1f} |")
    print(f"\nours, this process's CPU per call (Python + SQLite in process; PostGIS works in its server): "
          f"median {ms(statistics.median(cpu))}, p95 {ms(percentile(cpu, 95))}; load average "
          f"{open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} CPUs")
    p95 = percentile(ours, 95)
    record(f"who is threatened, densest {args.side_m:.0f} m square, {n_buildings:,} buildings ({dialect})",
           f"p95 {ms(p95)}", f"raw index query p95 {ms(percentile(raw, 95))}", p95 / percentile(raw, 95), "p95 < 50 ms",
           p95 < 0.05)
    print(f"\ntarget p95 < 50 ms: {'PASS' if p95 < 0.05 else 'FAIL'} ({ms(p95)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

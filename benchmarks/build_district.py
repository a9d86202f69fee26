"""Build a district for the read benchmarks (threatened, tiles, evacuation) at any scale: the demo generator's
steps up to ``buildings`` (hierarchy, places, departments and people, users, buildings with their households and
residents), nothing after, then ANALYZE. The census scale is 8,090,000 buildings; ``--blocks`` builds only some
blocks of villages at that density (block 10 and 11 hold the densest villages of the census layout).

    nice -n 10 .venv/bin/python benchmarks/build_district.py --buildings 8090000 --data-dir /tmp/census-sqlite
    nice -n 10 .venv/bin/python benchmarks/build_district.py --buildings 8090000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/cityops_census   # the database must exist, empty
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from sqlalchemy import text

from cityops.core.db import make_engine, make_sessionmaker, migrate
from cityops.core.settings import Settings
from cityops.demo.generator import STEPS, DemoConfig, DemoContext, load_catalogue
from cityops.org.levels import load_levels
from cityops.org.service import OrgConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buildings", type=int, default=8_090_000)
    parser.add_argument("--data-dir", type=Path, help="data directory of an embedded store (created)")
    parser.add_argument("--database-url", help="an empty PostGIS database")
    parser.add_argument("--blocks", type=int, nargs="+", help="only these blocks of villages (DemoConfig.building_blocks)")
    args = parser.parse_args()
    if bool(args.data_dir) == bool(args.database_url):
        parser.error("give one of --data-dir and --database-url")
    import cityops.models  # noqa: F401  (every capability's steps registered)

    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {"database_url": args.database_url}),
                        secret_key="bench", log_json=False, wiring=False)
    engine = make_engine(settings)
    migrate(engine)
    org = OrgConfig(load_levels(settings.grid_code_length), settings.grid_code_length, settings.topology_tolerance_m2,
                    settings.metric_crs)
    config = DemoConfig(buildings=args.buildings, building_blocks=tuple(args.blocks) if args.blocks else None)
    started = time.perf_counter()
    ctx = DemoContext(make_sessionmaker(engine), org, config, load_catalogue(), random.Random(config.seed),
                      progress=lambda m: print(f"{time.perf_counter() - started:7.1f} s  {m}", flush=True))
    for name, step in STEPS:
        ctx.progress(f"step {name}")
        step(ctx)
        if name == "buildings":
            break
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()
    print(f"{time.perf_counter() - started:.1f} s; {ctx.summary.get('buildings'):,} buildings, "
          f"{ctx.summary.get('households'):,} households, {ctx.summary.get('residents'):,} residents; "
          f"{ctx.summary.get('buildings_timing_s')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

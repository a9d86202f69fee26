"""The case writer alone: ``CaseWriter._store`` fed groups of G point reports in one process, no HTTP.

    .venv/bin/python benchmarks/events_writer.py [--groups 8,64] [--seconds 3] [--backends sqlite,postgis] [--profile DIR]

For each backend a fresh test district is built (as ``events_intake.py`` builds it); then, per group size G, the
writer's ``_store`` is called with groups of G point reports (the reports of ``POST /api/events/cases``: located,
routed, stored with their log entry and outbox row, rollups kept, committed) for ``--seconds``, after a warm-up.
Printed per G: µs of CPU (this process: the writer's Python and, on SQLite, the store's work; not the PostgreSQL
server's) and µs of wall time per case, medians of the timed groups. ``--profile DIR``: a cProfile of each measure
in ``DIR/writer-<backend>-<G>.prof`` (read with ``python -m pstats``). Every stored case is counted afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from events_intake import build, case_item, count_cases, point_report, sample_points  # noqa: E402


def measure(env: dict, pts, groups: list[int], seconds: float, profile: Path | None, backend: str) -> dict:
    from cityops.core.audit import Actor
    from cityops.core.db import make_engine, make_sessionmaker
    from cityops.core.settings import Settings
    from cityops.events import routing
    from cityops.events.intake import CaseWriter
    from cityops.org.levels import load_levels
    from cityops.org.locate import LocatorCache

    settings = Settings(data_dir=env["CITYOPS_DATA_DIR"], database_url=env.get("CITYOPS_DATABASE_URL", ""),
                        secret_key="x", log_json=False)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    locator = LocatorCache(sessions, load_levels(settings.grid_code_length))
    routing.use_locator(engine, locator)
    writer = CaseWriter(sessions, locator=locator)
    rng = random.Random(7)
    actor = Actor("bench", None, None)

    def group(g: int) -> list:
        return [(point_report(case_item(rng, pts), actor), Future()) for _ in range(g)]

    out = {}
    for g in groups:
        for _ in range(5):  # warm-up: caches, compiled statements, the locator's arrays
            writer._store(group(g))
        cpu, wall = [], []
        prof = cProfile.Profile() if profile else None
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            batch = group(g)
            c0, w0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            writer._store(batch)
            if prof:
                prof.disable()
            cpu.append((time.process_time() - c0) / g * 1e6)
            wall.append((time.perf_counter() - w0) / g * 1e6)
            for _, fut in batch:
                fut.result(0)  # a failed group fails the measure
        if prof:
            prof.dump_stats(str(profile / f"writer-{backend}-{g}.prof"))
        out[g] = (statistics.median(cpu), statistics.median(wall), len(cpu))
    engine.dispose()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=lambda v: [int(x) for x in v.split(",")], default=[8, 64])
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--backends", default="sqlite,postgis")
    p.add_argument("--profile", type=Path)
    args = p.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            env, cleanup = build(backend, Path(tmp))
            try:
                pts = sample_points(env)
                before = count_cases(env)
                res = measure(env, pts, args.groups, args.seconds, args.profile, backend)
                stored = count_cases(env) - before
            finally:
                cleanup()
        for g, (cpu, wall, n) in res.items():
            print(f"{backend:8s} G={g:<4d} CPU {cpu:7.1f} µs/case  wall {wall:7.1f} µs/case  ({n} groups)")
        print(f"{backend:8s} stored {stored} cases")


if __name__ == "__main__":
    main()

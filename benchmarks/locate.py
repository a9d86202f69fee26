"""Locate (定位) engine benchmark on the demo district, against a bare Shapely 2 STRtree.

    .venv/bin/python benchmarks/locate.py [--data-dir DIR] [--single 20000] [--batch 1000000] [--rounds 5]

Without ``--data-dir`` the demo district is built into a temporary directory (``cityops demo --no-serve``,
removed afterwards); a given directory is reused when it already holds a district, otherwise built into.

Measured (targets from the issue):

1. Single-point locate, in process: ``Locator.locate(lon, lat)`` timed call by call with
   ``time.perf_counter_ns`` over random points inside the district. Target: median < 50 µs, p99 < 1 ms.
   For reference, a bare ``tree.query(shapely.Point(lon, lat), predicate="intersects")`` on an STRtree of
   the grid polygons is timed the same way.
2. Batch locate of 1,000,000 points: ``Locator.locate_many(lon, lat)`` vs the baseline
   ``shapely.STRtree(grid_polygons).query(shapely.points(lon, lat), predicate="intersects")``; points are
   created inside the timed region for both, the same seeded points uniform in the district's bounding
   box; the two are run alternately (``--rounds`` each) so they share the machine's noise. Target: ours
   ≥ 70 % of the baseline's throughput. Tree construction is outside the timed region for both.

Also cross-checks correctness: for every point the baseline matches to exactly one grid, ours must return
that grid (mismatch count must be 0).

Exit code is always 0 (this is a report); failed targets are printed as FAIL.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely
from rich.console import Console
from rich.table import Table
from report import record  # noqa: E402

SEED = 20261123
SINGLE_MEDIAN_TARGET_US = 50.0
SINGLE_P99_TARGET_US = 1000.0
BATCH_RATIO_TARGET = 0.70

console = Console()


def cityops_exe() -> str:
    """The venv's ``cityops`` script, next to the running interpreter."""
    exe = Path(sys.executable).with_name("cityops")
    return str(exe) if exe.exists() else "cityops"


def ensure_demo(data_dir: Path) -> None:
    """Build the demo district into ``data_dir`` unless it already holds one (the CLI checks)."""
    start = time.perf_counter()
    proc = subprocess.run([cityops_exe(), "demo", "--data-dir", str(data_dir), "--no-serve"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if proc.returncode != 0:
        console.print(proc.stdout, proc.stderr, markup=False)
        raise SystemExit(f"cityops demo --no-serve failed with exit code {proc.returncode}")
    reused = "already holds" in proc.stdout
    console.print(f"demo district {'reused' if reused else 'built'} in {data_dir} "
                  f"({time.perf_counter() - start:.1f} s)")


def load(data_dir: Path):
    from sqlalchemy import select

    from cityops.core.db import make_engine, make_sessionmaker
    from cityops.core.settings import Settings
    from cityops.org.levels import load_levels
    from cityops.org.locate import LocatorCache
    from cityops.org.models import Unit

    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    levels = load_levels(settings.grid_code_length)
    t = time.perf_counter()
    locator = LocatorCache(sessions, levels).get()
    build_s = time.perf_counter() - t
    with sessions() as session:
        grids = session.execute(select(Unit.code, Unit.geom).where(Unit.level == "grid")).all()
        district = [g for (g,) in session.execute(select(Unit.geom).where(Unit.level == "district")).all()
                    if g is not None]
    engine.dispose()
    grid_codes = np.array([c for c, g in grids if g is not None], dtype=object)
    grid_polys = np.array([g for _c, g in grids if g is not None], dtype=object)
    if district:
        area = shapely.union_all(district)
    else:  # no district polygon: the union of the grids stands in for it
        area = shapely.union_all(grid_polys)
    return locator, build_s, grid_codes, grid_polys, area


def pct(values_ns: np.ndarray, q: float) -> float:
    return float(np.percentile(values_ns, q)) / 1000.0


def time_calls(fn, lons: np.ndarray, lats: np.ndarray) -> np.ndarray:
    """Per-call wall time in ns (timer overhead included, measured separately)."""
    out = np.empty(len(lons), dtype=np.int64)
    clock = time.perf_counter_ns
    xs, ys = lons.tolist(), lats.tolist()
    for i in range(len(xs)):
        x, y = xs[i], ys[i]
        t0 = clock()
        fn(x, y)
        out[i] = clock() - t0
    return out


def timer_overhead_ns(n: int = 20000) -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        samples.append(clock() - t0)
    return float(np.median(samples))


def single_point(locator, grid_polys, area, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = area.bounds
    shapely.prepare(area)
    lons, lats = [], []
    while sum(len(a) for a in lons) < n:  # rejection sampling: uniform inside the district
        x, y = rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)
        inside = shapely.contains_xy(area, x, y)
        lons.append(x[inside])
        lats.append(y[inside])
    lon, lat = np.concatenate(lons)[:n], np.concatenate(lats)[:n]

    tree = shapely.STRtree(grid_polys)

    def bare(x, y):
        return tree.query(shapely.Point(x, y), predicate="intersects")

    # warm up both paths (caches, lazily prepared geometries inside the trees)
    time_calls(locator.locate, lon[:2000], lat[:2000])
    time_calls(bare, lon[:2000], lat[:2000])
    gc.collect()
    ours = time_calls(locator.locate, lon, lat)
    gc.collect()
    base = time_calls(bare, lon, lat)
    found = sum(locator.locate(x, y) is not None for x, y in zip(lon[:2000].tolist(), lat[:2000].tolist()))
    return {"n": n, "ours": ours, "base": base, "found_frac": found / min(n, 2000),
            "overhead_ns": timer_overhead_ns()}


def batch(locator, grid_codes, grid_polys, area, n: int, rounds: int, seed: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    minx, miny, maxx, maxy = area.bounds
    lon, lat = rng.uniform(minx, maxx, n), rng.uniform(miny, maxy, n)
    tree = shapely.STRtree(grid_polys)

    def baseline():
        return tree.query(shapely.points(lon, lat), predicate="intersects")

    def ours():
        return locator.locate_many(lon, lat)

    t_ours, t_base = [], []
    res_ours = res_base = None
    for r in range(rounds):
        # alternate which one goes first in a round, so neither always follows the other
        order = [("ours", ours), ("base", baseline)] if r % 2 == 0 else [("base", baseline), ("ours", ours)]
        for name, fn in order:
            res = None
            gc.collect()
            t = time.perf_counter()
            res = fn()
            dt = time.perf_counter() - t
            if name == "ours":
                t_ours.append(dt)
                res_ours = res
            else:
                t_base.append(dt)
                res_base = res
            console.print(f"  round {r + 1}/{rounds} {name:4s}: {dt:6.3f} s", highlight=False)
            del res

    # correctness cross-check on the last results
    src, hit = res_base
    counts = np.bincount(src, minlength=n)
    unique_pts = np.flatnonzero(counts == 1)
    first_hit = np.full(n, -1, dtype=np.int64)
    first_hit[src] = hit  # for uniquely matched points the only hit
    expected = grid_codes[first_hit[unique_pts]]
    mismatches = 0
    for i, code in zip(unique_pts.tolist(), expected.tolist()):
        got = res_ours[i]
        if got is None or got.unit.level != "grid" or got.unit.code != code:
            mismatches += 1
    multi = int((counts > 1).sum())
    # points the baseline matches several times must get the smallest code among them
    multi_bad = 0
    if multi:
        multi_pts = np.flatnonzero(counts > 1)
        by_pt: dict[int, list[str]] = {}
        mask = counts[src] > 1
        for s, h in zip(src[mask].tolist(), hit[mask].tolist()):
            by_pt.setdefault(s, []).append(grid_codes[h])
        for i in multi_pts.tolist():
            got = res_ours[i]
            if got is None or got.unit.code != min(by_pt[i]):
                multi_bad += 1
    located = sum(r is not None for r in res_ours)
    return {"n": n, "rounds": rounds, "ours": t_ours, "base": t_base, "unique": len(unique_pts),
            "mismatches": mismatches, "multi": multi, "multi_bad": multi_bad,
            "no_grid": int((counts == 0).sum()), "located": located}


def verdict(ok: bool) -> str:
    return "[bold green]PASS[/bold green]" if ok else "[bold red]FAIL[/bold red]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, help="demo data directory (reused if it holds a district)")
    ap.add_argument("--single", type=int, default=20_000, help="points for the single-point benchmark")
    ap.add_argument("--batch", type=int, default=1_000_000, help="points for the batch benchmark")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds of each side in the batch benchmark")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()

    tmp = None
    if args.data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="cityops-bench-"))
        data_dir = tmp / "data"
    else:
        data_dir = args.data_dir
    try:
        ensure_demo(data_dir)
        run(data_dir, args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def run(data_dir: Path, args) -> None:
    locator, build_s, grid_codes, grid_polys, area = load(data_dir)
    minx, miny, maxx, maxy = area.bounds
    console.print(f"Locator over {locator.size:,} units ({len(grid_polys):,} grids) built in {build_s:.2f} s; "
                  f"district bbox {minx:.4f},{miny:.4f} – {maxx:.4f},{maxy:.4f}; "
                  f"shapely {shapely.__version__}, GEOS {shapely.geos_version_string}, "
                  f"{os.cpu_count()} CPU(s)", highlight=False)

    console.print(f"\n[bold]1. single-point locate[/bold], {args.single:,} random points inside the district")
    s = single_point(locator, grid_polys, area, args.single, args.seed)
    t1 = Table(title="single-point latency, µs per call (perf_counter_ns)")
    for col in ("", "median", "p90", "p99", "max", "mean"):
        t1.add_column(col, justify="right" if col else "left")
    for label, v in (("Locator.locate (ours)", s["ours"]), ("bare grid STRtree.query(Point)", s["base"])):
        t1.add_row(label, *(f"{pct(v, q):.1f}" for q in (50, 90, 99, 100)), f"{v.mean() / 1000:.1f}")
    console.print(t1)
    console.print(f"timer overhead ≈ {s['overhead_ns']:.0f} ns per call (included above); "
                  f"{s['found_frac']:.1%} of the sample points located", highlight=False)

    console.print(f"\n[bold]2. batch locate[/bold], {args.batch:,} points uniform in the district bbox, "
                  f"{args.rounds} interleaved rounds each")
    b = batch(locator, grid_codes, grid_polys, area, args.batch, args.rounds, args.seed)
    mo, mb = statistics.median(b["ours"]), statistics.median(b["base"])
    ratio = mb / mo  # throughput ours / throughput baseline
    t2 = Table(title=f"batch locate of {b['n']:,} points (median of {b['rounds']} rounds)")
    for col in ("", "median s", "min s", "max s", "points/s"):
        t2.add_column(col, justify="right" if col else "left")
    t2.add_row("Locator.locate_many (ours)", f"{mo:.3f}", f"{min(b['ours']):.3f}", f"{max(b['ours']):.3f}",
               f"{b['n'] / mo:,.0f}")
    t2.add_row("bare STRtree.query(points) baseline", f"{mb:.3f}", f"{min(b['base']):.3f}",
               f"{max(b['base']):.3f}", f"{b['n'] / mb:,.0f}")
    console.print(t2)
    console.print(f"cross-check: {b['unique']:,} points matched to exactly one grid by the baseline; "
                  f"mismatches {b['mismatches']}; {b['multi']:,} on shared boundaries "
                  f"(wrong tie-break: {b['multi_bad']}); {b['no_grid']:,} in no grid; "
                  f"ours located {b['located']:,} of {b['n']:,} (coarser tiers included)", highlight=False)

    med, p99 = pct(s["ours"], 50), pct(s["ours"], 99)
    summary = Table(title="targets (issue)")
    summary.add_column("target")
    summary.add_column("measured", justify="right")
    summary.add_column("verdict")
    summary.add_row("single-point locate median < 50 µs", f"{med:.1f} µs", verdict(med < SINGLE_MEDIAN_TARGET_US))
    summary.add_row("single-point locate p99 < 1 ms", f"{p99:.1f} µs", verdict(p99 < SINGLE_P99_TARGET_US))
    summary.add_row("batch 1M points ≥ 70 % of bare STRtree throughput",
                    f"{ratio:.0%} ({b['n'] / mo:,.0f} vs {b['n'] / mb:,.0f} pts/s)",
                    verdict(ratio >= BATCH_RATIO_TARGET))
    summary.add_row("batch cross-check: 0 mismatches", f"{b['mismatches'] + b['multi_bad']}",
                    verdict(b["mismatches"] + b["multi_bad"] == 0))
    record("locate one point, median", f"{med:.1f} µs", f"bare STRtree {pct(s['base'], 50):.1f} µs",
           med / pct(s["base"], 50), "< 50 µs", med < SINGLE_MEDIAN_TARGET_US)
    record(f"locate a batch of {b['n']:,} points", f"{b['n'] / mo:,.0f} pts/s", f"bare STRtree {b['n'] / mb:,.0f} pts/s", ratio,
           "≥ 0.7× STRtree", ratio >= BATCH_RATIO_TARGET and b["mismatches"] + b["multi_bad"] == 0)
    console.print()
    console.print(summary)
    failed = [med >= SINGLE_MEDIAN_TARGET_US, p99 >= SINGLE_P99_TARGET_US, ratio < BATCH_RATIO_TARGET,
              b["mismatches"] + b["multi_bad"] > 0]
    if any(failed):
        console.print("[bold red]FAIL: at least one target is not met (see above)[/bold red]")
    else:
        console.print("[bold green]all targets met[/bold green]")


if __name__ == "__main__":
    main()
    sys.exit(0)

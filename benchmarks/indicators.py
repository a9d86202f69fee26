"""Recompute every indicator of the city-scale catalogue (8 sectors, 68 runways, 249 + 104 sub-runways, 706
indicators) for every unit of the demo district above the grids (1 district, 40 townships, ~490 villages: ~530
units) for one period (the current day), beside the naive way: one SQL query per indicator per unit.

    .venv/bin/python benchmarks/indicators.py [--backends sqlite,postgis] [--rounds 5] [--naive-units 12] [--data-dir DIR]
                                              [--database-url URL] [--buildings N]

The demo district is built once per backend (``DemoConfig()``, the default scale: ~99,000 buildings, the events,
sensors, risk points and evacuations of the demo) unless ``--data-dir`` / ``--database-url`` name a built one.
The catalogue is ``cityops.indicators.generate`` (the same as the capacity test).

Timed, median of ``--rounds``:
- ``compute``: every metric asked once for all its parameter sets and all units, roll-ups, reported values and
  formulas, in memory (``compute.compute``);
- ``recompute`` (the target): compute + definition versions + storing what changed (``service.run`` without acting
  on breaches), against values already stored for the period;
- ``first store``: the period's first write (every value inserted), once.
Naive: for ``--naive-units`` units drawn at random (seeded), each indicator of the catalogue with one query of its
own restricted to the unit's subtree (formulas from those values, no query); the time per (indicator, unit) is
extrapolated to all pairs. The naive values are checked against the engine's for those units.
Target: recompute < 2 s on both backends. Exit code is always 0.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import and_, create_engine, delete, distinct, func, or_, select, text  # noqa: E402

import cityops.models  # noqa: E402,F401
from cityops.core.db import make_engine, make_sessionmaker, migrate  # noqa: E402
from cityops.core.settings import Settings  # noqa: E402
from cityops.demo.generator import DemoConfig, build_demo  # noqa: E402
from cityops.events.evaluation import per_case_counts  # noqa: E402
from cityops.events.metrics import RATES  # noqa: E402
from cityops.events.models import Case  # noqa: E402
from cityops.housing.models import Building  # noqa: E402
from cityops.identity.scope import Scope  # noqa: E402
from cityops.indicators import catalogue as catalogues  # noqa: E402
from cityops.indicators import generate, service  # noqa: E402
from cityops.indicators.compute import compute, period_bounds, unit_tree  # noqa: E402
from cityops.core.metrics import Window  # noqa: E402
from cityops.indicators.metrics import registry  # noqa: E402
from cityops.indicators.models import Digest, Report, Value  # noqa: E402
from cityops.org.levels import load_levels  # noqa: E402
from cityops.org.models import Unit  # noqa: E402
from cityops.org.service import OrgConfig  # noqa: E402
from cityops.sensing.catalog import SEVERITIES, SEVERITY_RANK  # noqa: E402
from cityops.sensing.models import Alarm, Datastream, Rollup, Thing  # noqa: E402
from cityops.tasks.catalogue import catalogue as plans  # noqa: E402
from cityops.tasks.models import Evacuation, EvacuationEvent, Incident, Shelter, Task  # noqa: E402
from cityops.warning.metrics import RANK  # noqa: E402
from cityops.warning.tables import RiskPoint, RiskWarning  # noqa: E402

from report import record  # noqa: E402

console = Console(width=200)
PG_ADMIN = os.environ.get("CITYOPS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


BUILDINGS = None  # --buildings: None = the demo's default (~99,000)


def open_store(backend: str, data_dir: Path | None, url: str | None):
    cleanup = []
    if backend == "postgis":
        if url:
            settings = Settings(data_dir=data_dir or Path(tempfile.mkdtemp()), database_url=url, secret_key="b", wiring=False)
            build = False
        else:
            name = f"cityops_bench_ind_{uuid.uuid4().hex[:8]}"
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            cleanup.append(lambda: _drop(admin, name))
            settings = Settings(data_dir=Path(tempfile.mkdtemp()), database_url=PG_ADMIN.rsplit("/", 1)[0] + f"/{name}",
                                secret_key="b", wiring=False)
            build = True
    else:
        d = data_dir or Path(tempfile.mkdtemp())
        if data_dir is None:
            cleanup.append(lambda: shutil.rmtree(d, ignore_errors=True))
        build = not (d / "cityops.gpkg").exists()
        settings = Settings(data_dir=d, secret_key="b", wiring=False)
    engine = make_engine(settings)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    if build:
        t = time.perf_counter()
        levels = load_levels(settings.grid_code_length)
        build_demo(sessions, OrgConfig(levels, settings.grid_code_length, settings.topology_tolerance_m2, settings.metric_crs),
                   DemoConfig(buildings=BUILDINGS))
        console.print(f"[{backend}] demo built in {time.perf_counter() - t:.0f} s")
    return engine, sessions, cleanup


def _drop(admin, name):
    with admin.connect() as c:
        c.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


# ---------------------------------------------------------------------------------------------- the naive way

def _ms(t):
    return int(t.timestamp() * 1000)


def naive_metric(session, ind, path: str, window: Window):
    """One query for one indicator at one unit (its subtree), as a per-unit implementation would write it."""
    p = ind.source.params
    name = ind.source.metric
    end = window.end
    inside = lambda col: col.startswith(path, autoescape=True)  # noqa: E731
    if name == "events.cases":
        count = p.get("count", "open")
        open_at = and_(Case.reported_at < end, or_(Case.closed_at.is_(None), Case.closed_at >= end),
                       or_(Case.voided_at.is_(None), Case.voided_at >= end), Case.merged_into.is_(None))
        cond = {"reported": and_(Case.reported_at >= window.start, Case.reported_at < end),
                "filed": and_(Case.filed_at >= window.start, Case.filed_at < end),
                "closed": and_(Case.closed_at >= window.start, Case.closed_at < end),
                "open": open_at, "overdue": and_(open_at, Case.deadline_at < end)}[count]
        stmt = select(func.count()).select_from(Case).where(inside(Case.unit_path), cond)
        if p.get("class_prefix"):
            stmt = stmt.where(Case.class_code.startswith(p["class_prefix"]))
        return float(session.scalar(stmt)), None
    if name == "events.evaluation":
        c = per_case_counts(session, Scope(unit_paths=(path,)), window.start, window.end, "district")
        c = next(iter(c.values()), None)
        if not c:
            return 0.0, 0.0
        c = {**c, "dispatched_ok": c["dispatched"] - c["dispatch_returned"], "filed_ok": c["filed"] - c["voided"]}
        num, den = RATES[p["measure"]]
        return float(c[num]), float(c[den])
    if name == "sensing.alarms":
        floor = SEVERITY_RANK[p.get("min_severity", "blue")]
        return float(session.scalar(select(func.count()).select_from(Alarm).where(
            inside(Alarm.unit_path), Alarm.first_at < end, or_(Alarm.cleared_at.is_(None), Alarm.cleared_at >= end),
            Alarm.severity.in_(SEVERITIES[floor:])))), None
    if name == "sensing.devices_online":
        since = _ms(end) - int(p.get("window_hours", 2)) * 3_600_000
        total, online = session.execute(select(
            func.count(distinct(Thing.id)),
            func.count(distinct(Thing.id)).filter(Rollup.bucket_ms.is_not(None)))
            .select_from(Thing).outerjoin(Datastream, Datastream.thing_id == Thing.id)
            .outerjoin(Rollup, and_(Rollup.datastream_id == Datastream.id, Rollup.tier == "1h",
                                    Rollup.bucket_ms >= since - 3_600_000, Rollup.bucket_ms < _ms(end)))
            .where(inside(Thing.unit_path))).one()
        return float(online), float(total)
    if name == "sensing.reading_max":
        v = session.scalar(select(func.max(Rollup.vmax)).select_from(Thing).join(Datastream, Datastream.thing_id == Thing.id)
                           .join(Rollup, and_(Rollup.datastream_id == Datastream.id, Rollup.tier == "1h"))
                           .where(inside(Thing.unit_path), Thing.device_type == p["device_type"],
                                  Rollup.bucket_ms >= _ms(window.start), Rollup.bucket_ms < _ms(end)))
        return (None if v is None else float(v)), None
    if name == "warning.risk_points":
        last = (select(RiskWarning.level).where(RiskWarning.risk_point_id == RiskPoint.id, RiskWarning.issued_at < end)
                .order_by(RiskWarning.id.desc()).limit(1).scalar_subquery())
        levels = [lv for lv, r in RANK.items() if r >= RANK[p.get("min_level", "none")]]
        return float(session.scalar(select(func.count()).select_from(RiskPoint).where(
            inside(RiskPoint.unit_path), func.coalesce(last, "none").in_(levels)))), None
    if name == "housing.buildings":
        col = {"buildings": func.count(), "households": func.sum(Building.households), "residents": func.sum(Building.residents),
               "vulnerable": func.sum(Building.vulnerable)}[p.get("measure", "buildings")]
        stmt = select(col).select_from(Building).where(inside(Building.unit_path))
        if p.get("grades"):
            stmt = stmt.where(Building.safety_grade.in_(p["grades"]))
        return float(session.scalar(stmt) or 0), None
    if name == "tasks.evacuations":
        last = (select(EvacuationEvent.to_state).where(EvacuationEvent.evacuation_id == Evacuation.id, EvacuationEvent.at < end)
                .order_by(EvacuationEvent.id.desc()).limit(1).scalar_subquery())
        stmt = (select(func.count()).select_from(Evacuation).join(Incident, Incident.id == Evacuation.incident_id)
                .where(inside(Evacuation.unit_path), Evacuation.drill.is_(False),
                       func.coalesce(Incident.activated_at, Incident.created_at) < end))
        if p.get("states"):
            stmt = stmt.where(func.coalesce(last, plans().evacuation.initial).in_(p["states"]))
        return float(session.scalar(stmt)), None
    if name == "tasks.shelter_occupancy":
        o, c = session.execute(select(func.sum(Shelter.occupancy), func.sum(Shelter.capacity)).where(inside(Shelter.unit_path))).one()
        return float(o or 0), float(c or 0)
    if name == "tasks.overdue":
        return float(session.scalar(select(func.count()).select_from(Task).where(
            inside(Task.unit_path), Task.drill.is_(False), Task.status != "cancelled", Task.created_at < end, Task.deadline < end,
            or_(Task.completed_at.is_(None), Task.completed_at >= end)))), None
    raise ValueError(f"no naive query for {name}")


def naive(session, cat, units: list[Unit], window: Window, start: datetime) -> tuple[dict, int]:
    """Every indicator at each of ``units``: one query per (indicator, unit); returns values and the query count."""
    out, queries = {}, 0
    for u in units:
        vals = {}
        for code, ind in cat.indicators.items():
            if ind.stored_period != "day" or u.level not in ind.levels or ind.source.kind == "formula":
                continue
            if ind.source.kind == "reported":
                vals[code] = session.scalar(select(Report.value).where(Report.indicator_code == code, Report.unit_code == u.code,
                                                                       Report.period == "day", Report.period_start == start))
                queries += 1
                continue
            if ind.rollup in ("mean", "worst", "max", "min") and ind.source.metric != "sensing.reading_max":
                continue  # a mean of the children's values: not one query per unit (left out of the comparison)
            num, den = naive_metric(session, ind, u.path, window)
            queries += 1
            metric = registry().get(ind.source.metric)
            if metric.ratio or ind.rollup == "ratio":
                vals[code] = None if not den else num / den * ind.scale
            else:
                vals[code] = None if num is None else num * ind.scale
        for code in cat.formula_order:
            ind = cat.indicators[code]
            # Over inputs the naive way computed (mean/worst roll-ups are not one query per unit: left out).
            if ind.stored_period == "day" and u.level in ind.levels and cat.formulas[code].inputs <= set(vals):
                v = cat.formulas[code].evaluate(vals)
                vals[code] = None if v is None else v * ind.scale
        out[u.code] = vals
    return out, queries


# ---------------------------------------------------------------------------------------------- the run

def bench(backend: str, args) -> dict:
    engine, sessions, cleanup = open_store(backend, args.data_dir if backend == "sqlite" else None,
                                           args.database_url if backend == "postgis" else None)
    try:
        with sessions() as session:
            townships = list(session.scalars(select(Unit.code).where(Unit.level == "township").order_by(Unit.code)))
        work = Path(tempfile.mkdtemp())
        pack, _ = generate.write(work, townships=townships)
        t = time.perf_counter()
        cat = catalogues.load(work / "district", pack=pack)
        load_s = time.perf_counter() - t
        now = datetime.now(UTC)
        start, end = period_bounds("day", now)
        with sessions() as session:
            tree = unit_tree(session)
            n_units = sum(len(tree.by_level.get(lv, [])) for lv in ("district", "township", "village"))
            # A store used before (--data-dir) holds this period already: the first store starts from nothing.
            for table in (Value, Digest):
                session.execute(delete(table).where(table.period == "day", table.period_start == start))
            session.commit()
            t = time.perf_counter()
            first = service.run(session, cat, "day", now, act=False)
            session.commit()
            first_s = time.perf_counter() - t
        computes, reruns = [], []
        for _ in range(args.rounds):
            with sessions() as session:
                t = time.perf_counter()
                c = compute(session, cat, "day", now)
                computes.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = service.run(session, cat, "day", now, act=False)
                session.commit()
                reruns.append(time.perf_counter() - t)
        values = int(sum((~np.isnan(v)).sum() for v in c.values.values()))
        # The naive way on a sample of units (all levels represented), checked against the engine's values.
        with sessions() as session:
            all_units = list(session.scalars(select(Unit).where(Unit.level.in_(("district", "township", "village")))))
            rng = random.Random(7)
            sample = [u for u in all_units if u.level == "district"] + rng.sample(
                [u for u in all_units if u.level != "district"], min(args.naive_units - 1, len(all_units) - 1))
            t = time.perf_counter()
            got, queries = naive(session, cat, sample, Window(start, min(end, now)), start)
            naive_s = time.perf_counter() - t
        mismatches = 0
        for u in sample:
            i = c.tree.index[u.code]
            for code, v in got[u.code].items():
                mine = c.values[code][i]
                if (v is None) != bool(np.isnan(mine)) or (v is not None and abs(v - mine) > 1e-6 * max(1, abs(v))):
                    mismatches += 1
        pairs = sum(1 for ind in cat.indicators.values() if ind.stored_period == "day"
                    for u in all_units if u.level in ind.levels and ind.source.kind != "formula"
                    and (ind.rollup not in ("mean", "worst", "max", "min") or ind.source.metric == "sensing.reading_max"))
        per_pair = naive_s / max(queries, 1)
        return {"backend": backend, "units": n_units, "indicators": len(cat.indicators),
                "day_indicators": len(c.values), "values": values, "load_s": load_s, "first_s": first_s,
                "first_inserted": first.inserted, "compute_s": statistics.median(computes),
                "rerun_s": statistics.median(reruns), "rerun_written": r.inserted + r.updated,
                "naive_queries": queries, "naive_s": naive_s, "naive_pairs": pairs, "naive_total_s": per_pair * pairs,
                "mismatches": mismatches, "sample": len(sample)}
    finally:
        engine.dispose()
        for fn in cleanup:
            fn()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgis")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--naive-units", type=int, default=12)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--database-url")
    ap.add_argument("--buildings", type=int, help="buildings of the demo built (default: the demo's ~99,000)")
    args = ap.parse_args()
    global BUILDINGS
    BUILDINGS = args.buildings
    results = [bench(b.strip(), args) for b in args.backends.split(",") if b.strip()]
    table = Table(title=f"Indicators: one period, every unit above the grids — load average {os.getloadavg()[0]:.1f} "
                        f"{os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    for col in ("backend", "units", "indicators (day)", "values", "catalogue load", "first store (inserted)",
                "compute (median)", "recompute (median, written)", "target < 2 s",
                "naive: sample (queries, s)", "naive: all pairs (extrapolated)", "ratio naive/recompute", "mismatches"):
        table.add_column(col)
    for r in results:
        table.add_row(r["backend"], str(r["units"]), f"{r['indicators']} ({r['day_indicators']})", f"{r['values']:,}",
                      f"{r['load_s']:.2f} s", f"{r['first_s']:.2f} s ({r['first_inserted']:,})", f"{r['compute_s']:.2f} s",
                      f"{r['rerun_s']:.2f} s ({r['rerun_written']:,})", "PASS" if r["rerun_s"] < 2 else "FAIL",
                      f"{r['sample']} units: {r['naive_queries']:,} q, {r['naive_s']:.1f} s",
                      f"{r['naive_pairs']:,} q ≈ {r['naive_total_s']:.0f} s", f"{r['naive_total_s'] / r['rerun_s']:.0f}×",
                      str(r["mismatches"]))
    console.print(table)
    for r in results:
        record(f"indicators: recompute {r['indicators']} indicators × {r['units']} units, one day ({r['backend']})",
               f"{r['rerun_s']:.2f} s", f"naive ≈ {r['naive_total_s']:.0f} s", r["rerun_s"] / r["naive_total_s"],
               "< 2 s", r["rerun_s"] < 2 and r["mismatches"] == 0,
               note=f"{r['mismatches']} mismatches against the naive values")


if __name__ == "__main__":
    main()

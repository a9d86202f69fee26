"""Demo step ``risk_points``: 风险点位 across the district and the July storm over 义和镇.

老沟湾 (太康村 6组) is the landslide of the signature scenario: a rain gauge, two GNSS displacement stations
and a tilt meter on one of its houses. Its July storm is replayed into the warning observation store and
evaluated every 3 hours, so the warning rises through the levels (the history and the CAP feed show it).
A few dozen other risk points are spread over the villages, each read by its township's rain gauge, and are
evaluated once at the end of the storm.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import shapely
from sqlalchemy import select

from cityops.core import audit
from cityops.core.crs import LocalPlane
from cityops.demo.generator import DemoContext, register_step
from cityops.housing import demo as _housing_demo  # noqa: F401  (the "buildings" step this one follows)
from cityops.housing.models import Building
from cityops.identity.scope import Scope
from cityops.org.models import Place, Unit
from cityops.warning import service

BEIJING = timezone(timedelta(hours=8))
SCENARIO_PLACE = "老沟湾"
SCENARIO_CODE = "RP-LGW-001"
#: Replay window of the storm: ten antecedent days, then the storm of 8–10 July.
REPLAY_START = datetime(2026, 6, 28, 0, 0, tzinfo=BEIJING)
STORM_START = datetime(2026, 7, 8, 14, 0, tzinfo=BEIJING)
REPLAY_END = datetime(2026, 7, 10, 12, 0, tzinfo=BEIJING)
EVALUATE_EVERY = timedelta(hours=3)
#: The slope's constant-stage creep (mm/day): resolvable by GNSS over a day (its noise floor is 3 × √2 × 2 mm
#: per day ≈ 8.5 mm/day, catalogue [displacement]), so the slope is watched at 注意级 before the storm.
CREEP_MM_PER_DAY = 10.0
#: Datastream ids of the demo (the sensing registry's ids replace them when it is wired in).
SCENARIO_STREAMS = {"rainfall": 900101, "displacement": [900102, 900103], "tilt": 900104}
TOWNSHIP_GAUGE_BASE = 900200
#: Risk points per village drawn from these weights, at most MAX_POINTS in all (the scenario comes extra).
_PER_VILLAGE = ((0, 0.35), (1, 0.45), (2, 0.2))
MAX_POINTS = 60
_HAZARDS = (("landslide", 0.45), ("unstable_slope", 0.2), ("collapse", 0.15), ("debris_flow", 0.1),
            ("ground_subsidence", 0.05), ("dangerous_house", 0.05))
_NAMES = {"landslide": "滑坡", "unstable_slope": "不稳定斜坡", "collapse": "危岩崩塌", "debris_flow": "泥石流沟",
          "ground_subsidence": "地面塌陷", "dangerous_house": "危房片区"}
_SPOTS = ("后山", "大湾", "岩口", "老屋基", "槽口", "堡坎", "沟头", "坪上", "弯里", "梁子")


def _hours(start: datetime, end: datetime) -> np.ndarray:
    n = int((end - start).total_seconds() // 3600) + 1
    return start.timestamp() + 3600.0 * np.arange(n)


def storm_rainfall(times: np.ndarray, heavy: bool) -> np.ndarray:
    """Hourly rain (mm): showers over the ten antecedent days, then (if ``heavy``) the 8–10 July storm."""
    day = ((times - REPLAY_START.timestamp()) // 86400).astype(int)
    hour = ((times - REPLAY_START.timestamp()) % 86400) / 3600
    daily = np.array([0, 12, 0, 25, 8, 0, 30, 5, 0, 0, 0, 0, 0, 0], dtype=float)
    # Antecedent showers: each day's total falls over 16:00–19:59.
    rain = np.where((hour >= 16) & (hour < 20), daily[np.minimum(day, len(daily) - 1)] / 4, 0.0) * (day < 10)
    if not heavy:
        return np.round(rain * 0.6, 1)
    h = (times - STORM_START.timestamp()) / 3600
    # The storm: a wet front building up for 12 h, a 12-h 暴雨 core at 6 mm/h, then 16 h of steady rain (≈ 130 mm).
    storm = np.select([(h >= 0) & (h < 12), (h >= 12) & (h < 24), (h >= 24) & (h < 40)], [0.5 + 0.25 * h, 6.0, 2.0], 0.0)
    return np.round(rain + storm, 1)


def storm_displacement(times: np.ndarray, station: int) -> np.ndarray:
    """Cumulative displacement (mm): creep at CREEP_MM_PER_DAY (the constant-velocity stage, above the GNSS
    noise floor), then acceleration as the storm soaks the slope (the α = 2 law: 1/v falls linearly toward
    failure a few days after the storm)."""
    days = (times - REPLAY_START.timestamp()) / 86400
    t_storm = (STORM_START.timestamp() - REPLAY_START.timestamp()) / 86400 + 0.2
    t_fail = t_storm + 2.6 + 0.3 * station
    creep = CREEP_MM_PER_DAY * days
    # After onset: v = v0 / (1 − (t − t_s)/(t_f − t_s)) (1/v linear), integrated: −v0·T·ln(1 − τ/T).
    tau = np.clip(days - t_storm, 0, None)
    span = t_fail - t_storm
    accel = -CREEP_MM_PER_DAY * span * np.log(np.clip(1 - tau / span, 1e-3, None)) - CREEP_MM_PER_DAY * tau
    return np.round(creep + accel, 2)


def storm_tilt(times: np.ndarray) -> np.ndarray:
    """House tilt (%) drifting upward as the slope below it moves."""
    days = (times - REPLAY_START.timestamp()) / 86400
    t_storm = (STORM_START.timestamp() - REPLAY_START.timestamp()) / 86400
    return np.round(0.35 + 0.004 * days + np.clip(days - t_storm, 0, None) ** 2 * 0.12, 3)


def _pick(rng: np.random.Generator, table, size=None):
    values = [v for v, _ in table]
    p = np.array([w for _, w in table], dtype=float)
    idx = rng.choice(len(values), size=size, p=p / p.sum())
    return values[idx] if size is None else [values[i] for i in idx]


def step_risk_points(ctx: DemoContext) -> None:
    started = time.perf_counter()
    rng = np.random.default_rng(ctx.rng.getrandbits(63))
    actor = audit.SYSTEM
    everywhere = Scope(all_units=True)
    with ctx.sessions() as session:
        units = session.execute(select(Unit.code, Unit.name, Unit.level, Unit.path, Unit.parent_code, Unit.geom)).all()
        by_code = {u.code: u for u in units}
        district = next(u for u in units if u.level == "district")
        plane = LocalPlane(district.geom.centroid.x, district.geom.centroid.y)
        townships = sorted((u for u in units if u.level == "township"), key=lambda u: u.code)
        gauges = {t.code: TOWNSHIP_GAUGE_BASE + i for i, t in enumerate(townships)}
        grids_of: dict[str, list] = {}
        for u in units:
            if u.level == "grid":
                grids_of.setdefault(u.parent_code, []).append(u)

        def buildings_in(grid_codes) -> tuple[list, np.ndarray]:
            """Buildings of these grids with their centroids in the metric plane (vectorised)."""
            rows = session.execute(select(Building.code, Building.floors, Building.unit_path, Building.footprint,
                                          Building.attributes).where(Building.grid_code.in_(sorted(set(grid_codes))))).all()
            xy = shapely.get_coordinates(shapely.centroid(np.array([r.footprint for r in rows], dtype=object))).reshape(-1, 2)
            return rows, np.column_stack(((xy[:, 0] - plane.lon0) * plane.kx, (xy[:, 1] - plane.lat0) * plane.ky))

        def near(rows, xy, point, radius_m: float, path: str, limit: int = 30) -> list[str]:
            if not len(rows):
                return []
            d = np.hypot(xy[:, 0] - (point.x - plane.lon0) * plane.kx, xy[:, 1] - (point.y - plane.lat0) * plane.ky)
            idx = [i for i in np.argsort(d)[: limit * 2] if d[i] <= radius_m and rows[i].unit_path.startswith(path)]
            return [rows[i].code for i in idx[:limit]]

        created = []
        place = session.scalar(select(Place).where(Place.name == SCENARIO_PLACE))
        if place is not None:
            grid = by_code[place.unit_code]
            rows, _ = buildings_in([g.code for g in grids_of.get(grid.parent_code, [])] or [grid.code])
            houses = [r for r in rows if (r.attributes or {}).get("place") == SCENARIO_PLACE]
            tilt_house = min(houses, key=lambda r: (r.floors, r.code)) if houses else None
            links = {"rainfall": SCENARIO_STREAMS["rainfall"], "displacement": SCENARIO_STREAMS["displacement"]}
            if tilt_house is not None:
                links["tilt"] = [{"id": SCENARIO_STREAMS["tilt"], "building_code": tilt_house.code}]
            service.create_risk_point(session, actor, everywhere, {
                "code": SCENARIO_CODE, "name": "太康村6组老沟湾滑坡", "hazard_type": "landslide", "unit_code": grid.code,
                "geometry": place.geom, "radius_m": 250.0, "building_codes": sorted(r.code for r in houses),
                "datastreams": links,
                "model": {"threshold_set": "kaizhou_demo", "displacement": {"v_constant_mm_per_day": CREEP_MM_PER_DAY}},
                "attributes": {"place": SCENARIO_PLACE, "volume_m3": 1.2e6, "monitor": "群测群防 + 专业监测",
                               "township_gauge": gauges.get(grid.path.strip('/').split('/')[2])}})
            created.append(SCENARIO_CODE)

        # The storm's township first (its slopes are the story), the rest in a seeded random order.
        villages = sorted((u for u in units if u.level == "village"), key=lambda u: u.code)
        storm_path = next((t.path for t in townships if t.name == "义和镇"), "~")
        villages = ([v for v in villages if v.path.startswith(storm_path)]
                    + [villages[i] for i in rng.permutation(len(villages)) if not villages[i].path.startswith(storm_path)])
        counts = _pick(rng, _PER_VILLAGE, len(villages))
        specs = []
        for village, n in zip(villages, counts):
            grids = grids_of.get(village.code, [])
            for k in range(n):
                if len(specs) >= MAX_POINTS or not grids:
                    break
                grid = grids[int(rng.integers(0, len(grids)))]
                hazard = _pick(rng, _HAZARDS)
                specs.append(dict(village=village, grid=grid, k=k, point=_random_point(grid.geom, rng), hazard=hazard,
                                  radius=float(rng.choice([100, 150, 200, 300])),
                                  spot=_SPOTS[int(rng.integers(0, len(_SPOTS)))]))
        rows, xy = buildings_in([spec["grid"].code for spec in specs])
        for spec in specs:
            village, grid, hazard = spec["village"], spec["grid"], spec["hazard"]
            township_code = grid.path.strip("/").split("/")[2]
            code = f"RP-{village.code}-{spec['k'] + 1:02d}"
            service.create_risk_point(session, actor, everywhere, {
                "code": code, "name": f"{village.name}{spec['spot']}{_NAMES[hazard]}",
                "hazard_type": hazard, "unit_code": grid.code, "geometry": spec["point"], "radius_m": spec["radius"],
                "building_codes": near(rows, xy, spec["point"], spec["radius"], village.path),
                "datastreams": {"rainfall": gauges[township_code]}, "model": {"threshold_set": "kaizhou_demo"},
                "attributes": {}})
            created.append(code)
        session.commit()

        # Observations: every township gauge (heavy over 义和镇), the scenario's slope and house.
        times = _hours(REPLAY_START, REPLAY_END)
        yihe = next((t.code for t in townships if t.name == "义和镇"), None)
        for township_code, gauge in gauges.items():
            service.store_observations(session, gauge, times, storm_rainfall(times, heavy=township_code == yihe))
        if place is not None:
            service.store_observations(session, SCENARIO_STREAMS["rainfall"], times, storm_rainfall(times, heavy=True))
            for i, ds in enumerate(SCENARIO_STREAMS["displacement"]):
                service.store_observations(session, ds, times, storm_displacement(times, i))
            service.store_observations(session, SCENARIO_STREAMS["tilt"], times, storm_tilt(times))
        session.commit()

        series = service.stored_series(session)
        changes = 0
        if place is not None:
            at = STORM_START - 4 * EVALUATE_EVERY
            while at <= REPLAY_END:
                changes += service.evaluate_risk_point(session, SCENARIO_CODE, series, at).changed
                at += EVALUATE_EVERY
        for code in created:
            if code != SCENARIO_CODE:
                changes += service.evaluate_risk_point(session, code, series, REPLAY_END).changed
    ctx.summary["risk_points"] = len(created)
    ctx.summary["warnings"] = changes
    ctx.progress(f"risk points: {len(created)}, warning level changes: {changes}, {time.perf_counter() - started:.1f} s")


def _random_point(geom, rng: np.random.Generator):
    minx, miny, maxx, maxy = geom.bounds
    for _ in range(200):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if shapely.contains_xy(geom, x, y):
            return shapely.Point(x, y)
    return geom.representative_point()


register_step("risk_points", step_risk_points, after="buildings")

"""Demo step ``base_layers``: geological boreholes (地质钻孔) and hazard points (地质灾害隐患点) as catalogue
layers, generated from ``demo_layers.toml`` and loaded with ``service.load_features`` (a versioned import).

Boreholes follow construction: most are drilled next to buildings (surveys precede building), the rest are
spread over the district. Hazard points sit on slopes of villages, a few per village, plus the named ones of
the scenarios (老沟湾) on their demo place. At the census scale there are 600,000 boreholes.
"""

from __future__ import annotations

import math
import time
import tomllib
from pathlib import Path

import numpy as np
import shapely
from sqlalchemy import select, text

from cityops.base import service
from cityops.core import audit
from cityops.core.crs import LocalPlane
from cityops.demo.generator import DemoContext, register_step
from cityops.housing import demo as _housing_demo  # noqa: F401  (the "buildings" step this one follows)
from cityops.identity.scope import Scope
from cityops.housing.models import Building
from cityops.org.models import Place, Unit

CATALOGUE = Path(__file__).with_name("demo_layers.toml")
_BATCH = 20_000
_ALL = Scope(all_units=True)

BOREHOLE_SCHEMA = [{"name": n, "type": t} for n, t in (
    ("code", "string"), ("purpose", "string"), ("depth_m", "number"), ("collar_elevation_m", "number"),
    ("groundwater_depth_m", "number"), ("bedrock_depth_m", "number"), ("top_stratum", "string"),
    ("bottom_stratum", "string"), ("drilled_year", "integer"), ("survey_unit", "string"))]
HAZARD_SCHEMA = [{"name": n, "type": t} for n, t in (
    ("code", "string"), ("name", "string"), ("type", "string"), ("scale", "string"), ("stability", "string"),
    ("threat_households", "integer"), ("threat_people", "integer"), ("threat_property_wan", "number"),
    ("volume_m3", "number"), ("township", "string"), ("village", "string"), ("unit_code", "string"),
    ("monitor_post", "string"), ("place", "string"))]


def _weighted(pairs, what: str) -> tuple[list, np.ndarray]:
    if not pairs or any(len(p) != 2 or not isinstance(p[1], (int, float)) or p[1] < 0 for p in pairs):
        raise ValueError(f"{CATALOGUE.name}: {what} must be [[value, weight], …] with weights ≥ 0")
    weights = np.array([p[1] for p in pairs], dtype=float)
    if weights.sum() <= 0:
        raise ValueError(f"{CATALOGUE.name}: {what} weights add up to 0")
    return [p[0] for p in pairs], weights / weights.sum()


def _range(values, what: str) -> tuple[float, float]:
    if not isinstance(values, list) or len(values) != 2 or not values[0] <= values[1]:
        raise ValueError(f"{CATALOGUE.name}: {what} must be [low, high] with low ≤ high")
    return float(values[0]), float(values[1])


def load_catalogue(path: Path = CATALOGUE) -> dict:
    """The demo layers' catalogue, validated: every weight table and range is checked here, on load."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != 1:
        raise ValueError(f"{path.name}: unsupported version {data.get('version')!r}")
    b, h = data.get("boreholes"), data.get("hazards")
    if not isinstance(b, dict) or not isinstance(h, dict):
        raise ValueError(f"{path.name}: needs [boreholes] and [hazards]")
    for section in (b, h):
        for key in ("key", "category", "title_zh", "title_en"):
            if not isinstance(section.get(key), str) or not section[key]:
                raise ValueError(f"{path.name}: {key} is missing")
    b["purposes"] = _weighted(b.get("purposes"), "boreholes.purposes")
    for key in ("depth_m", "collar_elevation_m", "drilled_year"):
        b[key] = _range(b.get(key), f"boreholes.{key}")
    if not 0 <= float(b.get("near_buildings", -1)) <= 1 or float(b.get("per_building", -1)) < 0:
        raise ValueError(f"{path.name}: boreholes.near_buildings must lie in [0, 1] and per_building ≥ 0")
    if not b.get("strata") or not b.get("survey_units"):
        raise ValueError(f"{path.name}: boreholes.strata and boreholes.survey_units must not be empty")
    for key in ("types", "scales", "stability"):
        h[key] = _weighted(h.get(key), f"hazards.{key}")
    h["threat_households"] = _range(h.get("threat_households"), "hazards.threat_households")
    if float(h.get("per_village", -1)) < 0 or not h.get("monitor_posts"):
        raise ValueError(f"{path.name}: hazards.per_village must be ≥ 0 and monitor_posts not empty")
    for named in h.get("named", []):
        for key in ("place", "name", "type", "scale", "stability"):
            if not named.get(key):
                raise ValueError(f"{path.name}: hazards.named needs {key}")
        if named["type"] not in h["types"][0] or named["scale"] not in h["scales"][0]:
            raise ValueError(f"{path.name}: hazard {named['name']}: unknown type or scale")
    return data


def _layer(session, spec: dict) -> None:
    service.create_layer(session, audit.SYSTEM, _ALL, {
        "key": spec["key"], "category": spec["category"], "title_zh": spec["title_zh"], "title_en": spec["title_en"],
        "description_zh": spec.get("description_zh"), "description_en": spec.get("description_en"),
        "owner_department": spec.get("owner_department"), "source": spec.get("source"), "geometry_type": "POINT"})


def _borehole_batches(session, rng: np.random.Generator, spec: dict, n: int, district, plane: LocalPlane):
    """(fids, properties, points) batches of ``n`` boreholes."""
    max_building = session.scalar(text("SELECT max(id) FROM buildings")) or 0
    purposes, p_purpose = spec["purposes"]
    strata = spec["strata"]
    shapely.prepare(district)
    minx, miny, maxx, maxy = district.bounds
    made = 0
    while made < n:
        size = min(_BATCH, n - made)
        near = rng.random(size) < (spec["near_buildings"] if max_building else 0)
        xy = np.empty((size, 2))
        if near.any():
            ids = np.unique(rng.integers(1, max_building + 1, int(near.sum())))
            points = _centroids(session, Building, ids.tolist())
            pick = rng.integers(0, len(points), int(near.sum())) if len(points) else np.zeros(0, dtype=int)
            offset = rng.normal(0, 25, (len(pick), 2))  # metres beside the building
            xy[near] = points[pick] + offset / np.array([plane.kx, plane.ky])
        far = ~near
        filled = np.zeros(0, dtype=float).reshape(0, 2)
        while len(filled) < far.sum():
            cand = np.column_stack((rng.uniform(minx, maxx, size), rng.uniform(miny, maxy, size)))
            filled = np.vstack((filled, cand[shapely.contains_xy(district, cand[:, 0], cand[:, 1])]))
        xy[far] = filled[: far.sum()]
        depth_lo, depth_hi = spec["depth_m"]
        depth = np.round(np.exp(rng.uniform(math.log(depth_lo), math.log(depth_hi), size)), 1)
        elev = np.round(rng.uniform(*spec["collar_elevation_m"], size), 1)
        water = np.round(np.minimum(depth, rng.gamma(2.0, 4.0, size)), 1)
        bedrock = np.round(np.minimum(depth, rng.gamma(1.5, 3.0, size)), 1)
        purpose = rng.choice(len(purposes), size, p=p_purpose)
        year_lo, year_hi = spec["drilled_year"]
        year = rng.integers(int(year_lo), int(year_hi) + 1, size)
        top = rng.integers(0, 3, size)
        bottom = np.minimum(top + 2 + rng.integers(0, len(strata) - 2, size), len(strata) - 1)
        unit = rng.integers(0, len(spec["survey_units"]), size)
        fids = [f"ZK{made + i + 1:07d}" for i in range(size)]
        props = [{"code": fids[i], "purpose": purposes[purpose[i]], "depth_m": float(depth[i]),
                  "collar_elevation_m": float(elev[i]), "groundwater_depth_m": float(water[i]),
                  "bedrock_depth_m": float(bedrock[i]), "top_stratum": strata[top[i]],
                  "bottom_stratum": strata[bottom[i]], "drilled_year": int(year[i]),
                  "survey_unit": spec["survey_units"][unit[i]]} for i in range(size)]
        made += size
        yield fids, props, shapely.points(xy)


def _centroids(session, model, ids: list[int]) -> np.ndarray:
    """Centroids (lon/lat) of ``model`` rows by id, decoded through the model's geometry type."""
    if not ids:
        return np.empty((0, 2))
    out = []
    for start in range(0, len(ids), 5000):
        geoms = session.scalars(select(model.footprint).where(model.id.in_(ids[start:start + 5000]))).all()
        out.append(shapely.get_coordinates(shapely.centroid(np.array(geoms, dtype=object))))
    return np.vstack(out)


def _hazard_features(session, rng: np.random.Generator, spec: dict, plane: LocalPlane):
    villages = list(session.scalars(select(Unit).where(Unit.level == "village").order_by(Unit.code)))
    by_code = {u.code: u for u in session.scalars(select(Unit).where(Unit.level == "township"))}
    types, p_type = spec["types"]
    scales, p_scale = spec["scales"]
    stability, p_stab = spec["stability"]
    lo, hi = spec["threat_households"]
    fids, props, geoms = [], [], []
    serial = 0

    def add(geom, village, **attrs):
        nonlocal serial
        serial += 1
        code = f"{village.code[:6]}{serial:05d}"
        township = by_code.get(village.parent_code)
        fids.append(code)
        props.append({"code": code, "township": township.name if township else None, "village": village.name,
                      "unit_code": village.code, **attrs})
        geoms.append(geom)

    for named in spec.get("named", []):
        place = session.scalar(select(Place).where(Place.name == named["place"]))
        if place is None:
            continue
        village = next((v for v in villages if place.unit_code.startswith(v.code)), None)
        if village is None:
            continue
        add(place.geom, village, name=named["name"], type=named["type"], scale=named["scale"],
            stability=named["stability"], threat_households=int(named.get("threat_households", 0)),
            threat_people=int(named.get("threat_people", 0)),
            threat_property_wan=float(named.get("threat_property_wan", 0)), volume_m3=float(named.get("volume_m3", 0)),
            monitor_post=spec["monitor_posts"][0], place=named["place"])
    counts = rng.poisson(spec["per_village"], len(villages))
    for village, count in zip(villages, counts, strict=True):
        if not count:
            continue
        shapely.prepare(village.geom)
        minx, miny, maxx, maxy = village.geom.bounds
        placed = 0
        for _ in range(50 * count):
            x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            if not shapely.contains_xy(village.geom, x, y):
                continue
            kind = types[rng.choice(len(types), p=p_type)]
            scale_i = rng.choice(len(scales), p=p_scale)
            households = int(min(hi, lo + rng.gamma(1.2, 4.0) * (1 + scale_i)))
            people = int(households * rng.uniform(2.2, 3.6))
            group = int(rng.integers(1, 12))
            add(shapely.Point(x, y), village, name=f"{village.name}{group}组{kind}", type=kind, scale=scales[scale_i],
                stability=stability[rng.choice(len(stability), p=p_stab)], threat_households=households,
                threat_people=people, threat_property_wan=round(float(households * rng.uniform(15, 60)), 1),
                volume_m3=round(float(10 ** rng.uniform(2.5, 4.5 + scale_i)), -1),
                monitor_post=spec["monitor_posts"][int(rng.integers(0, len(spec["monitor_posts"])))], place=None)
            placed += 1
            if placed == count:
                break
    yield fids, props, np.array(geoms, dtype=object)


def step_base_layers(ctx: DemoContext) -> None:
    started = time.perf_counter()
    catalogue = load_catalogue()
    rng = np.random.default_rng(ctx.rng.getrandbits(63))
    b_spec, h_spec = catalogue["boreholes"], catalogue["hazards"]
    with ctx.sessions() as session:
        district = session.scalar(select(Unit).where(Unit.level == "district"))
        plane = LocalPlane(district.geom.centroid.x, district.geom.centroid.y)
        n_buildings = ctx.summary.get("buildings") or 0
        n_boreholes = ctx.config.boreholes if getattr(ctx.config, "boreholes", None) is not None \
            else round(n_buildings * float(b_spec["per_building"]))
        _layer(session, b_spec)
        _layer(session, h_spec)
        session.flush()
        if n_boreholes:
            service.load_features(session, audit.SYSTEM, _ALL, b_spec["key"],
                                  _borehole_batches(session, rng, b_spec, n_boreholes, district.geom, plane),
                                  source_name="demo generator", schema=BOREHOLE_SCHEMA)
        hazards = service.load_features(session, audit.SYSTEM, _ALL, h_spec["key"],
                                        _hazard_features(session, rng, h_spec, plane),
                                        source_name="demo generator", schema=HAZARD_SCHEMA)
        session.commit()
    ctx.summary["boreholes"] = n_boreholes
    ctx.summary["hazard_points"] = hazards.feature_count
    ctx.progress(f"base layers: {n_boreholes} boreholes, {hazards.feature_count} hazard points "
                 f"in {time.perf_counter() - started:.1f} s")


register_step("base_layers", step_base_layers, after="buildings")

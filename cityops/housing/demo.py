"""Demo step ``buildings``: seeded buildings, households and residents.

Buildings are 8–20 m rectangles, rotated, clustered around village centres and along the lines between
neighbouring villages (the valleys and roads of a mountain district), plus some scatter. Each lies wholly
inside one grid (located with the Locator; the rest are dropped) and overlaps no other. About 40 stand
around 老沟湾 (太康村 6组), the slope of the signature scenario. Everything is written with Core bulk inserts.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import shapely
from sqlalchemy import insert, select, text

from cityops.core import audit
from cityops.core.bulk import rtree_trigger_suspended, write_rtree
from cityops.core.crs import LocalPlane
from cityops.core.geometry import encode_many
from cityops.core.types import JSONText
from cityops.demo import names
from cityops.demo.generator import DemoContext, register_step
from cityops.housing.models import Building, Household, Resident
from cityops.org.locate import Locator
from cityops.org.models import Place, Unit

#: Buildings per grid when the demo config names no total (the full demo's ~4 000 grids → ~100 000).
DEFAULT_BUILDINGS_PER_GRID = 25
#: Buildings guaranteed around the scenario place.
SCENARIO_PLACE, SCENARIO_BUILDINGS = "老沟湾", 40
REFERENCE_YEAR = 2026
_BATCH = 10_000

_STRUCTURES = (("砖混", 0.42), ("框架", 0.2), ("砖木", 0.14), ("土木", 0.16), ("钢结构", 0.03), ("其他", 0.05))
_USES = (("住宅", 0.82), ("商业", 0.08), ("公共", 0.04), ("工业", 0.03), ("其他", 0.03))
_GRADES = (("A", 0.5), ("B", 0.3), ("C", 0.1), ("D", 0.03), (None, 0.07))
_RELATIONS = ("配偶", "子女", "子女", "父母", "孙子女", "兄弟姐妹", "其他")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _pick(rng: np.random.Generator, table, n: int) -> list:
    values = [v for v, _ in table]
    p = np.array([w for _, w in table], dtype=float)
    return [values[i] for i in rng.choice(len(values), size=n, p=p / p.sum())]


def _candidate_centres(ctx: DemoContext, rng: np.random.Generator, plane: LocalPlane, villages: list[Unit],
                       district_m, n: int) -> np.ndarray:
    """Centres (metric plane) of ``n`` candidate buildings: village clusters, roads between neighbours, scatter."""
    centres = np.array([[p.x, p.y] for p in (plane.forward(v.geom).representative_point() for v in villages)])
    n_cluster, n_road = int(n * 0.45), int(n * 0.4)
    n_scatter = n - n_cluster - n_road
    # Village clusters: a few hamlets per village, around its centre.
    which = rng.integers(0, len(centres), n_cluster)
    hamlet = rng.normal(0, 350, (len(centres), 4, 2))
    offsets = hamlet[which, rng.integers(0, 4, n_cluster)] + rng.normal(0, 90, (n_cluster, 2))
    cluster = centres[which] + offsets
    # Roads: segments between each village centre and its two nearest neighbours, buildings strung along them.
    segments = []
    for i, c in enumerate(centres):
        d = np.hypot(*(centres - c).T)
        for j in np.argsort(d)[1:3]:
            if i < j or i not in np.argsort(np.hypot(*(centres - centres[j]).T))[1:3]:
                segments.append((c, centres[j]))
    if segments and n_road:
        a = np.array([s[0] for s in segments])
        b = np.array([s[1] for s in segments])
        length = np.hypot(*(b - a).T)
        seg = rng.choice(len(segments), n_road, p=length / length.sum())
        t = rng.random(n_road)
        direction = (b - a)[seg] / np.maximum(length[seg], 1)[:, None]
        normal = np.column_stack((-direction[:, 1], direction[:, 0]))
        # A valley road meanders: a sine wobble across the straight line, then houses on either side of it.
        wobble = 120 * np.sin(t * math.pi * 3 + seg) + rng.normal(0, 30, n_road)
        side = np.where(rng.random(n_road) < 0.5, -1, 1) * rng.uniform(10, 35, n_road)
        road = a[seg] + (b - a)[seg] * t[:, None] + normal * (wobble + side)[:, None]
    else:
        road = np.empty((0, 2))
        n_scatter += n_road
    minx, miny, maxx, maxy = district_m.bounds
    scatter = np.column_stack((rng.uniform(minx, maxx, n_scatter), rng.uniform(miny, maxy, n_scatter)))
    return np.vstack((cluster, road, scatter))


def _rectangles(rng: np.random.Generator, centres: np.ndarray, plane: LocalPlane):
    """Rotated 8–20 m rectangles around ``centres`` (metric) → MultiPolygons in lon/lat, plus the sides."""
    n = len(centres)
    half = rng.uniform(8, 20, (n, 2)) / 2
    angle = rng.uniform(0, math.pi, n)
    cos, sin = np.cos(angle), np.sin(angle)
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)], dtype=float)
    local = corners[None, :, :] * half[:, None, :]
    x = centres[:, 0, None] + local[:, :, 0] * cos[:, None] - local[:, :, 1] * sin[:, None]
    y = centres[:, 1, None] + local[:, :, 0] * sin[:, None] + local[:, :, 1] * cos[:, None]
    lon = x / plane.kx + plane.lon0
    lat = y / plane.ky + plane.lat0
    polygons = shapely.polygons(np.stack((lon, lat), axis=-1))
    return shapely.multipolygons(polygons, indices=np.arange(n)), half * 2


def _bulk_insert(conn, table, rows: list[dict]) -> None:
    """Core bulk insert. On SQLite straight to the driver's executemany (SQLAlchemy's per-row bind processing
    would double the demo's build time); values are already in storage form but for JSON."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(insert(table), rows)
        return
    columns = list(rows[0])
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSONText)}
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    if json_columns:
        dumps = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
        values = [tuple(dumps(r[c]) if c in json_columns else r[c] for c in columns) for r in rows]
    else:
        values = [tuple(r.values()) for r in rows]
    conn.exec_driver_sql(sql, values)


def _people(rng: np.random.Generator, buildings: list[dict], first_building: int,
            first_household: int, first_resident: int, region: str) -> tuple[list[dict], list[dict], int]:
    """Households (1–3 per dwelling) and residents (1–6 each) of ``buildings``; numbers drawn in arrays."""
    dwelling = np.array([b["use"] == "住宅" for b in buildings])
    per_building = np.where(dwelling, rng.choice([1, 2, 3], size=len(buildings), p=[0.6, 0.28, 0.12]), 0)
    n_h = int(per_building.sum())
    h_building = np.repeat(np.arange(len(buildings)), per_building)
    h_number = np.arange(n_h) - np.repeat(np.cumsum(per_building) - per_building, per_building) + 1
    members = rng.choice(np.arange(1, 7), size=n_h, p=np.array([12, 25, 22, 20, 13, 8]) / 100)
    n_r = int(members.sum())
    r_household = np.repeat(np.arange(n_h), members)
    r_position = np.arange(n_r) - np.repeat(np.cumsum(members) - members, members)
    u = rng.random(n_r)
    head = r_position == 0
    age = np.where(head, np.where(u < 0.15, rng.integers(66, 91, n_r), rng.integers(25, 65, n_r)),
                   np.where(u < 0.14, rng.integers(65, 96, n_r),
                            np.where(u < 0.34, rng.integers(0, 14, n_r), rng.integers(14, 65, n_r))))
    birth = REFERENCE_YEAR - age
    male = rng.random(n_r) < 0.51
    month, day = rng.integers(1, 13, n_r), rng.integers(1, 29, n_r)
    seq = rng.integers(0, 500, n_r) * 2 + male
    disabled = rng.random(n_r) < 0.03
    bedridden = rng.random(n_r) < np.where(age >= 75, 0.08, 0.003)
    has_phone = head | ((age >= 16) & (age < 80) & (rng.random(n_r) < 0.7))
    relation = rng.integers(0, len(_RELATIONS), n_r)
    same_surname = rng.random(n_r) < 0.7
    # GB 11643 check digit, vectorised over the numeric parts.
    w = _ID_WEIGHTS
    check = sum(int(c) * w[i] for i, c in enumerate(region))
    for number, positions in ((birth, range(6, 10)), (month, range(10, 12)), (day, range(12, 14)), (seq, range(14, 17))):
        width = len(positions)
        for j, pos in enumerate(positions):
            check = check + (number // 10 ** (width - 1 - j)) % 10 * w[pos]
    check = check % 11

    # Names and phones drawn in arrays too (same alphabets as cityops.demo.names).
    surnames = np.array(list(names.SURNAMES))
    given = np.array(list(names.GIVEN))
    first = surnames[rng.integers(0, len(surnames), n_r)]
    g1 = given[rng.integers(0, len(given), n_r)]
    g2 = np.where(rng.random(n_r) < 0.7, given[rng.integers(0, len(given), n_r)], "")
    full = np.char.add(np.char.add(first, g1), g2).tolist()
    given_only = np.char.add(g1, g2).tolist()
    prefixes = np.array(names.MOBILE_PREFIXES)[rng.integers(0, len(names.MOBILE_PREFIXES), n_r)]
    phones = np.char.add(prefixes, np.char.zfill(rng.integers(0, 10**8, n_r).astype(str), 8)).tolist()
    head_of = np.repeat(np.cumsum(members) - members, members)  # the head's resident index per resident

    households = []
    head_index = (np.cumsum(members) - members).tolist()
    for h in range(n_h):
        b = buildings[h_building[h]]
        r0 = head_index[h]
        households.append(dict(id=first_household + h, code=f"{b['code']}{h_number[h]:02d}", building_id=first_building + int(h_building[h]),
                               head_name=full[r0], phone=phones[r0], address=b["address"],
                               room=f"{h_number[h]}单元" if b["floors"] > 3 else None, members=int(members[h]),
                               grid_code=b["grid_code"], unit_path=b["unit_path"]))
    head_l, same_l, phone_l = head.tolist(), same_surname.tolist(), has_phone.tolist()
    birth_l, month_l, day_l, seq_l, check_l = birth.tolist(), month.tolist(), day.tolist(), seq.tolist(), check.tolist()
    male_l, elderly_l, child_l = male.tolist(), (age >= 65).tolist(), (age < 14).tolist()
    disabled_l, bedridden_l, relation_l, hh_l, head_of_l = (disabled.tolist(), bedridden.tolist(), relation.tolist(),
                                                           r_household.tolist(), head_of.tolist())
    residents = []
    for r in range(n_r):
        h = hh_l[r]
        if head_l[r]:
            name, phone, relation_name = full[r], phones[r], "户主"
        else:
            name = full[head_of_l[r]][0] + given_only[r] if same_l[r] else full[r]
            phone = phones[r] if phone_l[r] else None
            relation_name = _RELATIONS[relation_l[r]]
        residents.append(dict(
            id=first_resident + r, household_id=first_household + h, name=name,
            id_number=f"{region}{birth_l[r]:04d}{month_l[r]:02d}{day_l[r]:02d}{seq_l[r]:03d}{_ID_CHECK[check_l[r]]}",
            birth_year=birth_l[r], sex="男" if male_l[r] else "女", phone=phone, relation=relation_name,
            elderly=elderly_l[r], disabled=disabled_l[r], child=child_l[r], bedridden=bedridden_l[r],
            unit_path=households[h]["unit_path"]))
    return households, residents, int((age >= 65).sum())


def step_buildings(ctx: DemoContext) -> None:
    started = time.perf_counter()
    rng = np.random.default_rng(ctx.rng.getrandbits(63))
    with ctx.sessions() as session:
        units = session.execute(select(Unit.code, Unit.name, Unit.level, Unit.path, Unit.geom)).all()
        by_code = {u.code: u for u in units}
        villages = list(session.scalars(select(Unit).where(Unit.level == "village").order_by(Unit.code)))
        district = session.scalar(select(Unit).where(Unit.level == "district"))
        n_grids = sum(1 for u in units if u.level == "grid")
        per_grid = getattr(ctx.config, "buildings_per_grid", DEFAULT_BUILDINGS_PER_GRID)
        target = int(getattr(ctx.config, "buildings", None) or per_grid * n_grids)
        place = session.scalar(select(Place).where(Place.name == SCENARIO_PLACE))
        locator = Locator([tuple(u) for u in units], ctx.org_config.levels)
        plane = LocalPlane(district.geom.centroid.x, district.geom.centroid.y)

        # Candidates: the scenario cluster first (so it survives the overlap pass), then the rest.
        scenario = np.empty((0, 2))
        if place is not None:
            p = plane.forward(place.geom)
            r = np.sqrt(rng.random(SCENARIO_BUILDINGS * 3)) * 150
            a = rng.uniform(0, 2 * math.pi, len(r))
            scenario = np.column_stack((p.x + r * np.cos(a), p.y + r * np.sin(a)))
        rest = _candidate_centres(ctx, rng, plane, villages, plane.forward(district.geom), int(target * 1.6) + 50)
        centres = np.vstack((scenario, rest))
        footprints, sides = _rectangles(rng, centres, plane)
        is_scenario = np.arange(len(centres)) < len(scenario)

        # Each wholly inside one grid.
        located = locator.locate_many(*shapely.get_coordinates(shapely.centroid(footprints)).T)
        grid_of = np.array([loc.unit.code if loc is not None and loc.unit.level == "grid" else "" for loc in located], dtype=object)
        keep = grid_of != ""
        grid_geoms = {code: by_code[code].geom for code in set(grid_of[keep])}
        for g in grid_geoms.values():
            shapely.prepare(g)
        idx = np.flatnonzero(keep)
        inside = shapely.contains(np.array([grid_geoms[c] for c in grid_of[idx]], dtype=object), footprints[idx])
        keep[idx[~inside]] = False
        if place is not None:  # the scenario cluster stays in 太康村
            keep &= ~is_scenario | np.array([str(c).startswith(place.unit_code[:12]) for c in grid_of], dtype=bool)
        # No overlaps: of two intersecting candidates the later goes (scenario ones come first).
        idx = np.flatnonzero(keep)
        tree = shapely.STRtree(footprints[idx])
        left, right = tree.query(footprints[idx], predicate="intersects")
        clash = left > right
        keep[idx[np.unique(left[clash])]] = False
        chosen = np.flatnonzero(keep)
        scenario_chosen = chosen[is_scenario[chosen]][:SCENARIO_BUILDINGS]
        others = chosen[~is_scenario[chosen]]
        others = others[rng.permutation(len(others))][: max(0, target - len(scenario_chosen))]
        chosen = np.concatenate((scenario_chosen, np.sort(others)))
        # Stable order: by grid, so codes run grid by grid.
        chosen = chosen[np.argsort(grid_of[chosen].astype(str), kind="stable")]

        dialect = session.get_bind().dialect.name
        first_building = (session.scalar(text("SELECT max(id) FROM buildings")) or 0) + 1
        first_household = (session.scalar(text("SELECT max(id) FROM households")) or 0) + 1
        first_resident = (session.scalar(text("SELECT max(id) FROM residents")) or 0) + 1
        region = ctx.catalogue["district"]["code"][:6]
        serial: dict[str, int] = {}
        n_b = n_h = n_r = n_elderly = 0
        bid, hid, rid = first_building, first_household, first_resident
        timing = {"insert": 0.0, "prepare": time.perf_counter() - started}
        for start in range(0, len(chosen), _BATCH):
            batch = chosen[start : start + _BATCH]
            n = len(batch)
            geoms = encode_many(footprints[batch], dialect)
            structures = _pick(rng, _STRUCTURES, n)
            uses = _pick(rng, _USES, n)
            grades = _pick(rng, _GRADES, n)
            floors = np.minimum(1 + rng.poisson(1.1, n), 7)
            years = rng.integers(1965, 2024, n)
            buildings = []
            for k, i in enumerate(batch):
                grid = grid_of[i]
                grid_path = by_code[grid].path
                codes = grid_path.strip("/").split("/")
                township, village = by_code[codes[-3]].name, by_code[codes[-2]].name
                serial[grid] = serial.get(grid, 0) + 1
                code = f"{grid}{serial[grid]:04d}"
                group = int(grid[-3:]) if grid[-3:].isdigit() else 1
                scenario_house = bool(is_scenario[i])
                use = "住宅" if scenario_house else uses[k]
                structure = structures[k]
                if structure == "土木" and years[k] > 1995:
                    structure = "砖混"
                grade = grades[k]
                if scenario_house:
                    grade = ("B", "C", "C", "D")[serial[grid] % 4]
                    address = f"{township}{village}6组{SCENARIO_PLACE}{serial[grid]}号"
                else:
                    address = f"{township}{village}{group}组{serial[grid]}号"
                f = int(floors[k]) if structure in ("框架", "钢结构", "砖混") else min(int(floors[k]), 3)
                buildings.append(dict(
                    id=bid + k, code=code, name=None if use == "住宅" else f"{village}{use}用房{serial[grid]}",
                    address=address, footprint=geoms[k], floors=f, height_m=round(f * 3.0 + 0.4, 1),
                    structure=structure, use=use, year_built=int(years[k]), safety_grade=grade, grid_code=grid,
                    unit_path=grid_path,
                    attributes={"footprint_m": [round(float(sides[i, 0]), 1), round(float(sides[i, 1]), 1)],
                                **({"place": SCENARIO_PLACE} if scenario_house else {})}))
            households, residents, elderly = _people(rng, buildings, bid, hid, rid, region)
            bid, hid, rid = bid + len(buildings), hid + len(households), rid + len(residents)
            n_elderly += elderly
            t0 = time.perf_counter()
            conn = session.connection()
            if dialect == "sqlite" and start == 0:
                conn.exec_driver_sql("PRAGMA cache_size=-262144")  # 256 MB for this connection: the load's indexes fit
            with rtree_trigger_suspended(conn, Building.__table__.name, "footprint") as index_by_hand:
                for table, rows in ((Building.__table__, buildings), (Household.__table__, households), (Resident.__table__, residents)):
                    t1 = time.perf_counter()
                    _bulk_insert(conn, table, rows)
                    timing[table.name] = timing.get(table.name, 0.0) + time.perf_counter() - t1
                if index_by_hand:
                    t1 = time.perf_counter()
                    write_rtree(conn, Building.__table__.name, [b["id"] for b in buildings], footprints[batch], "footprint")
                    timing["rtree"] = timing.get("rtree", 0.0) + time.perf_counter() - t1
            timing["insert"] += time.perf_counter() - t0
            n_b, n_h, n_r = n_b + len(buildings), n_h + len(households), n_r + len(residents)
            ctx.progress(f"buildings: {n_b}")
        if dialect == "sqlite":
            session.connection().exec_driver_sql("PRAGMA cache_size=-2000")  # back to SQLite's default
        if dialect == "postgresql":  # explicit ids: move the sequences past them
            for table in ("buildings", "households", "residents"):
                session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"))
        audit.record(session, audit.SYSTEM, "demo.buildings", "building", "*",
                     after={"buildings": n_b, "households": n_h, "residents": n_r})
        session.commit()
    timing["total"] = time.perf_counter() - started
    ctx.progress("buildings step timing: " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items()))
    ctx.summary["buildings"] = n_b
    ctx.summary["households"] = n_h
    ctx.summary["residents"] = n_r
    ctx.summary["elderly"] = n_elderly


register_step("buildings", step_buildings, after="users")

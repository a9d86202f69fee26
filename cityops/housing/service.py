"""Domain logic of the housing registry. No HTTP here.

Reads take a Scope (only covered records come back) and a ``personal`` flag: whether the caller holds
``personal.read``. Personal data (names, phones, id numbers) is shown in the clear only when the flag is
set *and* the record lies in the caller's scope; otherwise ``mask_personal`` masks it. That one function is
what every response and export goes through.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import LargeBinary, bindparam, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased

from cityops.core import audit
from cityops.core.bus import publish
from cityops.core.crs import geodesic_area_m2
from cityops.core.errors import Conflict, InvalidGeometry, InvalidInput, NotFound
from cityops.core.geometry import CANONICAL_SRID
from cityops.core.spatial import spatial_filter
from cityops.core.storage import storage_of
from cityops.core.types import utcnow
from cityops.housing.counts import COUNT_COLUMNS, VULNERABLE_FLAGS
from cityops.housing.manifest import BuildingChanged
from cityops.housing.models import SAFETY_GRADES, STRUCTURES, USES, Building, Household, Resident
from cityops.identity.scope import Scope
from cityops.org import service as org
from cityops.org.models import Unit

#: Personal fields per record kind, and how each is masked.
PERSONAL_FIELDS = {
    "household": {"head_name": "name", "phone": "phone"},
    "resident": {"name": "name", "phone": "phone", "id_number": "id_number"},
}
#: Chunk size of ``IN (…)`` lists (SQLite allows 32 766 parameters per statement).
_CHUNK = 5000


# ---------------------------------------------------------------------------------------------- masking

def _mask_value(kind: str, value: str | None) -> str | None:
    if not value:
        return value
    if kind == "name":
        return value[0] + "**"
    if kind == "phone":
        return value[:3] + "****" + value[-4:] if len(value) >= 11 else "****"
    return "****"  # id numbers: nothing of them


def mask_personal(kind: str, data: dict, clear: bool) -> dict:
    """The one place personal data is masked: ``data`` (a household or resident dict) as the caller may see
    it. ``clear`` = the caller holds ``personal.read`` and the record lies in the caller's scope."""
    if clear:
        return data
    out = dict(data)
    for key, how in PERSONAL_FIELDS[kind].items():
        if key in out:
            out[key] = _mask_value(how, out[key])
    out["masked"] = True
    return out


def sees_personal(scope: Scope, personal: bool, unit_path: str | None) -> bool:
    return personal and scope.covers(unit_path)


# -------------------------------------------------------------------------------------------- snapshots

def building_dict(b: Building, *, geometry: bool = False) -> dict:
    data = {"code": b.code, "name": b.name, "address": b.address, "floors": b.floors, "height_m": b.height_m,
            "structure": b.structure, "use": b.use, "year_built": b.year_built, "safety_grade": b.safety_grade,
            "grid_code": b.grid_code, "unit_path": b.unit_path, "attributes": b.attributes}
    if geometry:
        data["geometry"] = b.footprint
    return data


def household_dict(h: Household, scope: Scope, personal: bool, building_code: str | None = None) -> dict:
    data = {"code": h.code, "building_code": building_code, "head_name": h.head_name, "phone": h.phone,
            "address": h.address, "room": h.room, "members": h.members, "grid_code": h.grid_code,
            "unit_path": h.unit_path}
    return mask_personal("household", data, sees_personal(scope, personal, h.unit_path))


def resident_dict(r: Resident, scope: Scope, personal: bool) -> dict:
    data = {"id": r.id, "name": r.name, "id_number": r.id_number, "birth_year": r.birth_year, "sex": r.sex, "phone": r.phone,
            "relation": r.relation, "unit_path": r.unit_path, **{f: bool(getattr(r, f)) for f in VULNERABLE_FLAGS}}
    return mask_personal("resident", data, sees_personal(scope, personal, r.unit_path))


# ------------------------------------------------------------------------------------------------ reads

def parse_grades(value: str | None) -> list[str | None] | None:
    """``"C,D"`` → ["C", "D"]; ``none`` stands for unassessed buildings."""
    if not value:
        return None
    grades: list[str | None] = []
    for part in value.split(","):
        part = part.strip()
        if part.lower() == "none":
            grades.append(None)
        elif part.upper() in SAFETY_GRADES:
            grades.append(part.upper())
        else:
            raise InvalidInput(f"safety grade {part!r} is not one of A, B, C, D (JGJ 125) or none")
    return grades


def list_buildings(
    session: Session,
    scope: Scope,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    root: str | None = None,
    grades: list[str | None] | None = None,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Building], int | None]:
    """Buildings in scope, by code. ``q`` (the map's search box) matches a code prefix or any part of the
    address; its total is not counted (None): the first ``limit`` matches are what a search shows, and counting
    every match would read the whole registry for a common word."""
    stmt = select(Building).where(scope.covers_clause(Building.unit_path))
    if q:
        stmt = stmt.where(Building.code.startswith(q, autoescape=True) | Building.address.contains(q, autoescape=True))
    if root:
        root_unit = org.get_unit(session, root, scope)
        stmt = stmt.where(Building.unit_path.startswith(root_unit.path, autoescape=True))
    if grades is not None:
        named = [g for g in grades if g is not None]
        clause = Building.safety_grade.in_(named) if named else None
        if None in grades:
            clause = Building.safety_grade.is_(None) if clause is None else (clause | Building.safety_grade.is_(None))
        stmt = stmt.where(clause)
    if bbox is not None:
        rows = spatial_filter(session, Building, stmt, "intersects", shapely.box(*bbox), geom_attr="footprint")
        return rows[offset : offset + limit], None if q else len(rows)
    if q:
        return list(session.scalars(stmt.limit(limit).offset(offset))), None
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = list(session.scalars(stmt.order_by(Building.code).limit(limit).offset(offset)))
    return rows, total


def get_building(session: Session, scope: Scope, code: str) -> Building:
    building = session.scalar(select(Building).where(Building.code == code))
    if building is None or not scope.covers(building.unit_path):
        raise NotFound(f"building {code!r} not found")
    return building


def building_detail(session: Session, scope: Scope, personal: bool, code: str) -> dict:
    building = get_building(session, scope, code)
    households = list(session.scalars(select(Household).where(Household.building_id == building.id).order_by(Household.code)))
    residents = defaultdict(list)
    if households:
        for r in session.scalars(select(Resident).where(Resident.household_id.in_([h.id for h in households])).order_by(Resident.id)):
            residents[r.household_id].append(resident_dict(r, scope, personal))
    data = building_dict(building, geometry=True)
    data["households"] = [{**household_dict(h, scope, personal, building.code), "residents": residents[h.id]}
                          for h in households]
    return data


def household_detail(session: Session, scope: Scope, personal: bool, code: str) -> dict:
    household = session.scalar(select(Household).where(Household.code == code))
    if household is None or not scope.covers(household.unit_path):
        raise NotFound(f"household {code!r} not found")
    building_code = session.scalar(select(Building.code).where(Building.id == household.building_id))
    data = household_dict(household, scope, personal, building_code)
    data["residents"] = [resident_dict(r, scope, personal) for r in
                         session.scalars(select(Resident).where(Resident.household_id == household.id).order_by(Resident.id))]
    return data


# ----------------------------------------------------------------------------------- who is threatened

def _chunks(values: list, size: int = _CHUNK):
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _totals(counts: np.ndarray) -> dict:
    """Totals over buildings whose count rows (COUNT_COLUMNS order) are ``counts``: one column sum."""
    return {"buildings": len(counts), **dict(zip(COUNT_COLUMNS, counts.sum(axis=0).tolist()))}


def _person(p) -> dict:
    return {"id": p.id, "name": p.name, "post": p.post, "title": p.title, "phone": p.phone}


_BUILDING_COLUMNS = ("id", "code", "name", "address", "floors", "height_m", "structure", "use", "year_built",
                     "safety_grade", "grid_code", "unit_path", "attributes")
_HOUSEHOLD_COLUMNS = ("id", "code", "building_id", "head_name", "phone", "address", "room", "members", "grid_code",
                      "unit_path")
_RESIDENT_COLUMNS = ("id", "household_id", "name", "id_number", "birth_year", "sex", "phone", "relation", "unit_path",
                     *VULNERABLE_FLAGS)




@dataclass
class _ZoneBuildings:
    """The buildings whose footprint intersects a zone, by id, as columns: ids and per-building counts
    (COUNT_COLUMNS order) as NumPy arrays, code, grid and unit path as lists."""

    ids: np.ndarray
    codes: list[str]
    grids: list[str]
    paths: list[str]
    counts: np.ndarray

    def take(self, rows: np.ndarray) -> "_ZoneBuildings":
        listed = rows.tolist()
        return _ZoneBuildings(self.ids[rows], [self.codes[i] for i in listed], [self.grids[i] for i in listed],
                              [self.paths[i] for i in listed], self.counts[rows])


#: How much wider than stored an envelope is taken (degrees, ~0.1 mm): an envelope read back through SQLite's JSON
#: (15 significant digits) may have lost its last bits; widened, it still holds its geometry.
_ENVELOPE_SLACK = 1e-9


#: How far (degrees, ~5 m) ``_inner_box`` keeps from the zone's edge: PostGIS compares boxes in single precision,
#: rounded outwards (up to ~1.5e-5 degrees at 180° of longitude), so the box it compares stays inside the zone.
_INNER_BOX_MARGIN = 5e-5
#: A box that holds nothing (no inner box found).
_NO_BOX = (0.0, 0.0, 0.0, 0.0)


def _inner_box(zone: BaseGeometry) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a box inside ``zone``, ``_INNER_BOX_MARGIN`` from its edge: the zone's envelope
    when the zone is a rectangle, else the envelope scaled about a point inside the zone until the zone holds it
    (a dozen tests of the prepared zone). ``_NO_BOX`` when none is found."""
    minx, miny, maxx, maxy = zone.bounds
    shapely.prepare(zone)
    cx, cy = zone.representative_point().coords[0]
    lo, hi = 0.0, 1.0
    if not zone.contains(shapely.box(minx, miny, maxx, maxy)):
        for _ in range(12):
            mid = (lo + hi) / 2
            box = shapely.box(cx + (minx - cx) * mid, cy + (miny - cy) * mid, cx + (maxx - cx) * mid, cy + (maxy - cy) * mid)
            lo, hi = (mid, hi) if zone.contains(box) else (lo, mid)
        hi = lo
    box = (cx + (minx - cx) * hi + _INNER_BOX_MARGIN, cy + (miny - cy) * hi + _INNER_BOX_MARGIN,
           cx + (maxx - cx) * hi - _INNER_BOX_MARGIN, cy + (maxy - cy) * hi - _INNER_BOX_MARGIN)
    return box if box[0] < box[2] and box[1] < box[3] else _NO_BOX


def _zone_columns() -> list:
    return [Building.id, Building.code, Building.grid_code, Building.unit_path,
            *[getattr(Building, c) for c in COUNT_COLUMNS]]


# The statements of ``_buildings_in`` where the envelopes decide (SQLite), built once per backend (their boxes and
# ids are bound at each run): building and wrapping them on every call cost more than SQLite's R*Tree search.
@lru_cache(maxsize=None)
def _zone_statement(storage):
    return storage.bbox_undecided(select(*_zone_columns()), Building.__tablename__, Building.id, Building.footprint,
                                  geom_name="footprint")


@lru_cache(maxsize=None)
def _footprints_statement(storage):
    return (select(Building.id, storage.raw_geometry(Building.footprint))
            .where(storage.in_bound_ids(Building.id, "edge_ids")))


def _buildings_in(session: Session, zone: BaseGeometry) -> _ZoneBuildings:
    """Buildings whose footprint intersects ``zone``, by id (the hot path of an evacuation and of "who is
    threatened"). At the census density a 1 km² zone holds ~2,800 buildings, so nothing here goes row by row:

    - the spatial index narrows by envelope, and the candidates' columns (id, code, grid, unit path, the counts)
      come back as one list per column, aggregated by the database (``Storage.column_lists``): no row tuple, no
      per-row Python;
    - PostGIS decides in that statement: a candidate whose box lies within a box inside the zone by that
      comparison, the others by GEOS;
    - on SQLite the R*Tree's boxes decide most buildings in that statement: one within a box inside the zone is
      in (``Storage.bbox_undecided``), and only the others' envelopes come back. Of those, one whose envelope
      lies inside the zone is in, one apart from it out; only the buildings near the zone's edge (a few per
      cent of a 1 km² zone) have their footprints read, and GEOS decides those exactly, the zone prepared once.

    The other columns are read only for the page of items returned (``threatened``)."""
    storage = storage_of(session)
    conn = session.connection()
    columns = _zone_columns()
    k = len(COUNT_COLUMNS)
    if storage.spatial_sql:
        # PostGIS decides exactly in the same statement (GEOS, as below; the zone is a constant, prepared once for
        # the statement's rows): only the zone's buildings come back, in one round trip. Deciding by envelopes here
        # took a second round trip for the footprints near the edge, and at census density every zone has some.
        # A building whose box lies within a box inside the zone is in it without GEOS (a box comparison; GEOS for
        # every candidate was two thirds of the statement's server time at census density).
        zone_sql = func.ST_GeomFromWKB(literal(shapely.to_wkb(zone), LargeBinary), CANONICAL_SRID)
        footprint = Building.footprint.expression
        stmt = storage.bbox_prefilter(select(*columns), Building.__tablename__, Building.id, Building.footprint,
                                      zone.bounds, geom_name="footprint")
        inside_box = footprint.op("@")(func.ST_MakeEnvelope(*_inner_box(zone), CANONICAL_SRID))
        ids, codes, grids, paths, *rest = storage.column_lists(
            conn, stmt.where(or_(inside_box, func.ST_Intersects(footprint, zone_sql))))
        if len(ids) == 0:
            return _ZoneBuildings(np.zeros(0, dtype=np.int64), [], [], [], np.zeros((0, k), dtype=np.int64))
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")  # by id; sorted here, not in SQL (the spatial index drives)
        listed = order.tolist()
        return _ZoneBuildings(ids[order], [codes[i] for i in listed], [grids[i] for i in listed],
                              [paths[i] for i in listed], np.array(rest, dtype=np.int64).T[order])
    # A candidate whose index box lies within a box inside the zone is in it; only the others' envelopes come back.
    ids, codes, grids, paths, *rest = storage.column_lists(conn, _zone_statement(storage),
                                                           storage.bbox_params(zone.bounds, _inner_box(zone)))
    if len(ids) == 0:
        return _ZoneBuildings(np.zeros(0, dtype=np.int64), [], [], [], np.zeros((0, k), dtype=np.int64))
    ids = np.asarray(ids, dtype=np.int64)
    counts = np.array(rest[:k], dtype=np.int64).T
    hit = np.asarray(rest[k], dtype=bool)
    undecided = np.flatnonzero(~hit)
    minx, miny, maxx, maxy = (np.asarray(v, dtype=np.float64)[undecided] for v in rest[k + 1:])
    # Each envelope lies within ``reach`` of its centre (half its diagonal). Beyond ``radius`` the zone's
    # edge band would grow for a few large buildings: those are decided by their footprints.
    cx, cy, reach = (minx + maxx) / 2, (miny + maxy) / 2, np.hypot(maxx - minx, maxy - miny) / 2 + _ENVELOPE_SLACK
    edge = undecided
    if len(undecided):
        radius = float(np.quantile(reach, 0.99))
        # The zone shrunk and grown by the radius (5 % more: GEOS draws the round corners of a buffer with chords
        # inside the arcs): a centre in the shrunk zone has its whole envelope inside the zone, a centre outside
        # the grown one an envelope apart from it. Points, not envelope polygons: GEOS tests them without building
        # an object per building.
        inner, outer = shapely.buffer(zone, -1.05 * radius), shapely.buffer(zone, 1.05 * radius)
        shapely.prepare(inner)
        shapely.prepare(outer)
        small = reach <= radius
        inside = small & shapely.contains_xy(inner, cx, cy)
        apart = small & ~shapely.intersects_xy(outer, cx, cy)
        hit[undecided[inside]] = True
        edge = undecided[~inside & ~apart]
    shapely.prepare(zone)
    if len(edge):
        wkb = dict(conn.execute(_footprints_statement(storage),
                                {"edge_ids": storage.ids_value(ids[edge].tolist())}).all())
        footprints = storage.decode_geometries([wkb[i] for i in ids[edge].tolist()])
        hit[edge[shapely.intersects(zone, footprints)]] = True
    rows = np.flatnonzero(hit)
    rows = rows[np.argsort(ids[rows], kind="stable")]  # by id; sorted here, not in SQL (the index drives)
    listed = rows.tolist()
    return _ZoneBuildings(ids[rows], [codes[i] for i in listed], [grids[i] for i in listed], [paths[i] for i in listed],
                          counts[rows])


def _page_window(counts: np.ndarray, offset: int, limit: int) -> tuple[np.ndarray, int]:
    """For a list that goes building by building, each building holding ``counts`` items (in list order): the
    positions of the buildings holding items [offset, offset + limit), and how many of the first one's items
    come before ``offset``."""
    ends = np.cumsum(counts)
    starts = ends - counts
    chosen = np.flatnonzero((counts > 0) & (ends > offset) & (starts < offset + limit))
    return chosen, (offset - int(starts[chosen[0]]) if len(chosen) else 0)


_DETAILS: dict = {}


def _detail_statements(storage, names: tuple[str, ...]) -> list:
    """The statements of a "who is threatened" answer after its zone (``names`` of them, in that order), built
    once per backend with their values as bound parameters: building them on every call cost more than running
    them. Parameters: ``grid_codes``, ``unit_codes`` (lists), ``page_ids``, ``household_buildings``,
    ``vulnerable_buildings`` (``storage.ids_value``)."""
    from cityops.org.models import Person, person_units

    built = _DETAILS.get(storage.name)
    if built is None:
        parent_unit = aliased(Unit)
        # The same predicate as the partial index ix_residents_vulnerable_household, so both databases use it.
        vulnerable = Resident.elderly | Resident.disabled | Resident.child | Resident.bedridden
        built = _DETAILS[storage.name] = {
            "grids": (select(Unit.code, Unit.name, Unit.parent_code, parent_unit.name.label("parent_name"))
                      .outerjoin(parent_unit, parent_unit.code == Unit.parent_code)
                      .where(Unit.code.in_(bindparam("grid_codes", expanding=True)))),
            # People linked to a zone's grids and every unit above them. The post is filtered in Python
            # (``_responsible``), not in SQL: with it in the WHERE clause SQLite walks the post index (thousands
            # of grid workers) instead of the unit index (a handful of people per unit).
            "people": (select(Person.id, Person.name, Person.post, Person.title, Person.phone, person_units.c.unit_code)
                       .join(person_units, person_units.c.person_id == Person.id)
                       .where(person_units.c.unit_code.in_(bindparam("unit_codes", expanding=True)))),
            "buildings": select(*[getattr(Building, c) for c in _BUILDING_COLUMNS]).where(
                storage.in_bound_ids(Building.id, "page_ids")),
            "households": select(*[getattr(Household, c) for c in _HOUSEHOLD_COLUMNS]).where(
                storage.in_bound_ids(Household.building_id, "household_buildings")),
            "vulnerable": (select(*[getattr(Resident, c) for c in _RESIDENT_COLUMNS],
                                  Household.code.label("household_code"), Household.building_id)
                           .join(Household, Household.id == Resident.household_id)
                           .where(storage.in_bound_ids(Household.building_id, "vulnerable_buildings"), vulnerable)),
        }
    return [built[name] for name in names]


def _responsible(ancestors: dict[str, list[str]], rows) -> tuple[dict[str, list], dict[str, list]]:
    """Grid workers of each grid and village cadres over it (closest unit first), from the rows of the "people"
    statement (``_detail_statements``) for every grid's chain of units (``ancestors``: grid code → unit codes, top first)."""
    linked: dict[str, list] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.id):
        if row.post in ("grid_worker", "village_cadre"):
            linked[row.unit_code].append(row)
    workers, cadres = {}, {}
    for code, chain in ancestors.items():
        workers[code] = [_person(p) for p in linked.get(code, []) if p.post == "grid_worker"]
        seen, mine = set(), []
        for unit in reversed(chain):  # the village before the township before the district
            for p in linked.get(unit, []):
                if p.post == "village_cadre" and p.id not in seen:
                    seen.add(p.id)
                    mine.append(_person(p))
        cadres[code] = mine
    return workers, cadres


#: Default and largest page of each item list in the "who is threatened" answer. Totals and groups are
#: always exact and complete; only the item lists are paged (the map's table shows the first page).
THREAT_PAGE, THREAT_PAGE_MAX = 100, 100_000


def threatened(session: Session, scope: Scope, personal: bool, zone: BaseGeometry, *, limit: int = THREAT_PAGE,
               offset: int = 0) -> dict:
    """Buildings whose footprint intersects ``zone`` (canonical CRS), with their households, residents and
    vulnerable residents: totals, grouped by village and grid with who answers for each. Only records in
    ``scope``; those outside it are counted, never described.

    Totals, ``outside_scope``, ``by_village`` and ``by_grid`` are exact and complete. The three item lists
    (buildings by id; households building by building — building code, then household code —;
    vulnerable residents the same way, then by resident id) are pages: ``limit`` items from
    ``offset`` of each; ``page.next_offset`` is the offset of the next page while any list has more, and
    ``building_codes`` names every building in scope in the zone (for highlighting on the map)."""
    if zone is None or zone.is_empty:
        raise InvalidGeometry("the threat zone is empty")
    if zone.geom_type not in ("Polygon", "MultiPolygon"):
        raise InvalidGeometry(f"the threat zone must be a Polygon or MultiPolygon, got {zone.geom_type}")
    if not zone.is_valid:
        raise InvalidGeometry(f"invalid threat zone: {shapely.is_valid_reason(zone)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= THREAT_PAGE_MAX:
        raise InvalidInput(f"limit must be an integer from 0 to {THREAT_PAGE_MAX}, got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput(f"offset must be a non-negative integer, got {offset!r}")
    # Read through the session's connection (Core rows, not ORM loading); pending changes are written first, as
    # Session.execute would.
    session.flush()
    hits = _buildings_in(session, zone)
    covered_path = {path: scope.covers(path) for path in set(hits.paths)}  # a few grids' paths, not every building
    if all(covered_path.values()):  # the usual case: the caller's scope holds the whole zone
        inside, outside = hits, hits.take(np.zeros(0, dtype=np.int64))
    else:
        covered = np.fromiter(map(covered_path.__getitem__, hits.paths), dtype=bool, count=len(hits.paths))
        inside, outside = hits.take(np.flatnonzero(covered)), hits.take(np.flatnonzero(~covered))

    outside_total = _totals(outside.counts)
    total = _totals(inside.counts)
    # Per-grid totals: the zone's grids numbered, their buildings' count rows summed per number in one pass.
    # Fixed-width text, not Python objects: NumPy sorts it without calling back into Python per comparison.
    grid_codes, grid_of = np.unique(np.array(inside.grids, dtype=str), return_inverse=True) if inside.grids \
        else (np.array([], dtype=str), np.zeros(0, dtype=np.int64))
    grid_sums = np.zeros((len(grid_codes), len(COUNT_COLUMNS)), dtype=np.int64)
    np.add.at(grid_sums, grid_of, inside.counts)
    grid_buildings = np.bincount(grid_of, minlength=len(grid_codes)).tolist()
    by_grid = {code: {"buildings": n, **dict(zip(COUNT_COLUMNS, sums))}
               for code, n, sums in zip(grid_codes.tolist(), grid_buildings, grid_sums.tolist())}
    grid_paths = {code: path for code, path in zip(inside.grids, inside.paths)}

    storage = storage_of(session)
    # Everything else the answer reads depends only on the zone's buildings found above: the grids with their
    # villages' names, the people answering for them, and the three pages. One round trip for all
    # (``Storage.row_sets``), each statement's rows in any order (sorted here).
    statements, params = [], {}
    if by_grid:
        ancestors = {code: [c for c in path.strip("/").split("/") if c] for code, path in grid_paths.items()}
        statements += ["grids", "people"]
        params.update(grid_codes=list(by_grid), unit_codes=sorted({c for chain in ancestors.values() for c in chain}))
    page_ids = household_rank = vulnerable_rank = code_by_id = mine = None
    if limit and len(inside.ids):
        page = slice(offset, offset + limit)
        mine = dict(zip(inside.ids[page].tolist(), inside.counts[page, :3].tolist()))
        page_ids = list(mine)
        if page_ids:
            statements.append("buildings")
            params["page_ids"] = storage.ids_value(page_ids)
        # The household and vulnerable-resident lists go building by building (building code, then household code,
        # then resident id). The per-building counts (kept exact at write time by housing.counts) say which
        # buildings hold a page's items, so a page reads only those buildings' rows: ~100 households, not every
        # household of the zone sorted for a top-N (at census density most of the answer's time).
        by_code = np.argsort(np.array(inside.codes, dtype=str), kind="stable")
        ordered_ids, ordered_counts = inside.ids[by_code], inside.counts[by_code]
        if offset < total["households"]:
            chosen, household_skip = _page_window(ordered_counts[:, 0], offset, limit)
            household_rank = dict(zip(ordered_ids[chosen].tolist(), range(len(chosen))))
            code_by_id = {i: inside.codes[j] for i, j in zip(ordered_ids[chosen].tolist(), by_code[chosen].tolist())}
            statements.append("households")
            params["household_buildings"] = storage.ids_value(list(household_rank))
        if offset < total["vulnerable"]:
            chosen, vulnerable_skip = _page_window(ordered_counts[:, 2], offset, limit)
            vulnerable_rank = dict(zip(ordered_ids[chosen].tolist(), range(len(chosen))))
            statements.append("vulnerable")
            params["vulnerable_buildings"] = storage.ids_value(list(vulnerable_rank))
    rows_of = dict(zip(statements, storage.row_sets(session.connection(), _detail_statements(storage, tuple(statements)),
                                                    params)))

    grids = {u.code: u for u in rows_of.get("grids", ())}
    villages = {g.parent_code: g.parent_name for g in grids.values() if g.parent_code and g.parent_name is not None}
    workers, cadres_of = _responsible(ancestors, rows_of["people"]) if by_grid else ({}, {})
    grid_groups, village_groups = [], {}
    for code in sorted(by_grid):
        grid = grids.get(code)
        cadres = cadres_of.get(code, [])
        village_code = grid.parent_code if grid else None
        grid_groups.append({"code": code, "name": grid.name if grid else None, "village_code": village_code,
                            **by_grid[code], "grid_workers": workers.get(code, []), "village_cadres": cadres})
        village = village_groups.setdefault(village_code, {
            "code": village_code, "name": villages.get(village_code),
            "buildings": 0, **dict.fromkeys(COUNT_COLUMNS, 0), "village_cadres": cadres})
        for key, value in by_grid[code].items():
            village[key] += value

    building_items, household_items, vulnerable_items = [], [], []
    if page_ids:
        by_id = {b.id: b for b in rows_of["buildings"]}
        for i in page_ids:
            if i in by_id:
                b = by_id[i]
                building_items.append({**building_dict(b), "households": mine[i][0], "residents": mine[i][1],
                                       "vulnerable": mine[i][2]})
    if "households" in rows_of:
        rows = sorted(rows_of["households"], key=lambda h: (household_rank[h.building_id], h.code))
        household_items = [household_dict(h, scope, personal, code_by_id[h.building_id])
                           for h in rows[household_skip:household_skip + limit]]
    if "vulnerable" in rows_of:
        rows = sorted(rows_of["vulnerable"], key=lambda r: (vulnerable_rank[r.building_id], r.household_code, r.id))
        vulnerable_items = [{**resident_dict(r, scope, personal), "household_code": r.household_code}
                            for r in rows[vulnerable_skip:vulnerable_skip + limit]]
    largest = max(len(inside.ids), total["households"], total["vulnerable"])
    return {
        "zone_area_m2": round(geodesic_area_m2(zone), 1),
        "totals": total,
        "outside_scope": outside_total,
        "by_village": list(village_groups.values()),
        "by_grid": grid_groups,
        "building_codes": inside.codes,
        "buildings": building_items,
        "households": household_items,
        "vulnerable_residents": vulnerable_items,
        "page": {"offset": offset, "limit": limit,
                 "next_offset": offset + limit if limit and offset + limit < largest else None},
        "truncated": offset > 0 or largest > offset + limit,
        "masked": not personal,
    }


# ------------------------------------------------------------------------------------------------ writes

#: Bounds a write is checked against (JGJ 125 grades and the model's code lists are in models.py).
MAX_FLOORS, MAX_HEIGHT_M, EARLIEST_YEAR = 200, 600.0, 1800
MAX_MEMBERS = 50
_PHONE = re.compile(r"^(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
SEXES = ("男", "女")
BUILDING_FIELDS = ("name", "address", "floors", "height_m", "structure", "use", "year_built", "safety_grade", "attributes")
HOUSEHOLD_FIELDS = ("head_name", "phone", "address", "room", "members")
RESIDENT_FIELDS = ("name", "id_number", "birth_year", "sex", "phone", "relation", *VULNERABLE_FLAGS)


def _no_nulls(changes: dict, required: tuple[str, ...]) -> None:
    nulls = sorted(k for k in required if k in changes and changes[k] is None)
    if nulls:
        raise InvalidInput(f"{', '.join(nulls)} cannot be null")


def valid_id_number(value: str) -> bool:
    """GB 11643-1999 citizen id number: 17 digits and the ISO 7064 MOD 11-2 check character."""
    if not re.fullmatch(r"\d{17}[\dX]", value or ""):
        return False
    return _ID_CHECK[sum(int(c) * w for c, w in zip(value[:17], _ID_WEIGHTS)) % 11] == value[17]


def _check_building_values(data: dict) -> None:
    problems = []
    floors = data.get("floors")
    if floors is not None and (not isinstance(floors, int) or not 1 <= floors <= MAX_FLOORS):
        problems.append(f"floors must be an integer from 1 to {MAX_FLOORS}, got {floors!r}")
    height = data.get("height_m")
    if height is not None and (not isinstance(height, (int, float)) or not 0 < height <= MAX_HEIGHT_M):
        problems.append(f"height_m must be above 0 and at most {MAX_HEIGHT_M:g}, got {height!r}")
    if "structure" in data and data["structure"] not in STRUCTURES:
        problems.append(f"structure {data['structure']!r} is not one of {', '.join(STRUCTURES)}")
    if "use" in data and data["use"] not in USES:
        problems.append(f"use {data['use']!r} is not one of {', '.join(USES)}")
    year = data.get("year_built")
    if year is not None and (not isinstance(year, int) or not EARLIEST_YEAR <= year <= utcnow().year):
        problems.append(f"year_built must lie from {EARLIEST_YEAR} to {utcnow().year}, got {year!r}")
    if data.get("safety_grade") is not None and data["safety_grade"] not in SAFETY_GRADES:
        problems.append(f"safety_grade {data['safety_grade']!r} is not one of A, B, C, D (JGJ 125) or null")
    if "attributes" in data and not isinstance(data["attributes"], dict):
        problems.append("attributes must be an object")
    if problems:
        raise InvalidInput("; ".join(problems), details={"problems": problems})


def _check_footprint(footprint: BaseGeometry) -> BaseGeometry:
    if footprint is None or footprint.is_empty:
        raise InvalidGeometry("the building footprint is empty")
    if footprint.geom_type not in ("Polygon", "MultiPolygon"):
        raise InvalidGeometry(f"a building footprint must be a Polygon or MultiPolygon, got {footprint.geom_type}")
    if not footprint.is_valid:
        raise InvalidGeometry(f"invalid building footprint: {shapely.is_valid_reason(footprint)}")
    area = geodesic_area_m2(footprint)
    if not 1 <= area <= 1_000_000:
        raise InvalidGeometry(f"a building footprint of {area:.1f} m² is implausible (1 m² to 1 km²); check the CRS")
    return footprint if footprint.geom_type == "MultiPolygon" else shapely.MultiPolygon([footprint])


def _grid_of(session: Session, footprint: BaseGeometry, grid_code: str | None) -> Unit:
    """The grid a footprint belongs to: the named one (which must hold its representative point), else the
    grid holding that point."""
    point = footprint.representative_point()
    if grid_code:
        grid = session.scalar(select(Unit).where(Unit.code == grid_code))
        if grid is None or grid.level != "grid":
            raise InvalidInput(f"unknown grid {grid_code!r}")
        if not grid.geom.intersects(point):
            raise InvalidGeometry(f"the footprint does not lie in grid {grid_code}")
        return grid
    hits = spatial_filter(session, Unit, select(Unit).where(Unit.level == "grid"), "intersects", point)
    if not hits:
        raise InvalidGeometry("the footprint lies in no unit grid of the district")
    return min(hits, key=lambda u: u.code)


def _next_code(session: Session, column, prefix: str, width: int) -> str:
    """The next free ``prefix`` + serial code (serials are per grid or per building)."""
    last = session.scalar(select(func.max(column)).where(column.startswith(prefix, autoescape=True),
                                                         func.length(column) == len(prefix) + width))
    serial = int(last[len(prefix):]) + 1 if last and last[len(prefix):].isdigit() else 1
    if serial >= 10 ** width:
        raise Conflict(f"no free code left under {prefix}")
    return f"{prefix}{serial:0{width}d}"


def _audit_household(h: Household) -> dict:
    """Snapshot for the audit log: personal data masked (the log is read by roles without personal.read)."""
    return mask_personal("household", household_dict(h, Scope(), False), False)


def _audit_resident(r: Resident) -> dict:
    return mask_personal("resident", resident_dict(r, Scope(), False), False)


def _grid_label(grid, named: str | None) -> str:
    """How a refusal names the grid: by the code the caller gave, never by one found from the footprint (it
    may be another township's)."""
    return f"grid {grid.code}" if named else "the footprint's location"


def create_building(session: Session, actor: audit.Actor, scope: Scope, data: dict, footprint: BaseGeometry) -> Building:
    """A new building (footprint in the canonical CRS). Its grid is the one named, or the one it lies in;
    both must be in the caller's scope. The code is the grid's next serial unless given."""
    _check_building_values(data)
    footprint = _check_footprint(footprint)
    grid = _grid_of(session, footprint, data.get("grid_code"))
    scope.require_covers(grid.path, _grid_label(grid, data.get("grid_code")))
    code = data.get("code") or _next_code(session, Building.code, grid.code, 4)
    if session.scalar(select(Building.id).where(Building.code == code)) is not None:
        raise Conflict(f"building {code!r} already exists")
    floors = data.get("floors") or 1
    building = Building(code=code, footprint=footprint, grid_code=grid.code, unit_path=grid.path, floors=floors,
                        height_m=data.get("height_m") if data.get("height_m") is not None else round(floors * 3.0 + 0.4, 1),
                        structure=data.get("structure") or "其他", use=data.get("use") or "住宅",
                        name=data.get("name"), address=data.get("address"), year_built=data.get("year_built"),
                        safety_grade=data.get("safety_grade"), attributes=data.get("attributes") or {})
    session.add(building)
    session.flush()
    audit.record(session, actor, "building.create", "building", code, after=building_dict(building), unit_path=grid.path)
    publish(session, BuildingChanged(codes=[code], change="created", unit_paths=[grid.path]))
    return building


def update_building(session: Session, actor: audit.Actor, scope: Scope, code: str, changes: dict,
                    footprint: BaseGeometry | None = None) -> Building:
    """Change a building's attributes and/or footprint. A footprint moved into another grid moves the
    building there (its households and residents follow); both grids must be in scope."""
    building = get_building(session, scope, code)
    scope.require_covers(building.unit_path, f"building {code}")
    unknown = set(changes) - set(BUILDING_FIELDS) - {"grid_code"}
    if unknown:
        raise InvalidInput(f"unknown building field(s): {', '.join(sorted(unknown))}")
    _no_nulls(changes, ("floors", "structure", "use", "attributes"))
    _check_building_values(changes)
    before = building_dict(building)
    if footprint is not None or changes.get("grid_code"):
        footprint = _check_footprint(footprint) if footprint is not None else building.footprint
        grid = _grid_of(session, footprint, changes.get("grid_code"))
        scope.require_covers(grid.path, _grid_label(grid, changes.get("grid_code")))
        building.footprint = footprint
        if grid.code != building.grid_code:
            building.grid_code, building.unit_path = grid.code, grid.path
            household_ids = select(Household.id).where(Household.building_id == building.id)
            session.execute(update(Resident).where(Resident.household_id.in_(household_ids)).values(unit_path=grid.path))
            session.execute(update(Household).where(Household.building_id == building.id)
                            .values(grid_code=grid.code, unit_path=grid.path))
    for name in BUILDING_FIELDS:
        if name in changes:
            setattr(building, name, changes[name])
    session.flush()
    audit.record(session, actor, "building.update", "building", code, before=before, after=building_dict(building),
                 unit_path=building.unit_path)
    publish(session, BuildingChanged(codes=[code], change="updated", unit_paths=[building.unit_path]))
    return building


def _check_household_values(data: dict) -> None:
    problems = []
    if "head_name" in data and not (isinstance(data["head_name"], str) and 1 <= len(data["head_name"].strip()) <= 50):
        problems.append("head_name must be 1 to 50 characters")
    if data.get("phone") and not _PHONE.match(str(data["phone"])):
        problems.append(f"phone {data['phone']!r} is neither a mobile number (11 digits) nor a fixed line (0xx-xxxxxxxx)")
    members = data.get("members")
    if members is not None and (not isinstance(members, int) or not 0 <= members <= MAX_MEMBERS):
        problems.append(f"members must be an integer from 0 to {MAX_MEMBERS}, got {members!r}")
    if problems:
        raise InvalidInput("; ".join(problems), details={"problems": problems})


def _household(session: Session, scope: Scope, code: str) -> Household:
    household = session.scalar(select(Household).where(Household.code == code))
    if household is None or not scope.covers(household.unit_path):
        raise NotFound(f"household {code!r} not found")
    return household


def create_household(session: Session, actor: audit.Actor, scope: Scope, data: dict) -> Household:
    """A household in a building of the caller's scope; its code is the building's next two-digit serial."""
    if not data.get("building_code"):
        raise InvalidInput("building_code is required")
    if not data.get("head_name"):
        raise InvalidInput("head_name is required")
    _check_household_values(data)
    building = get_building(session, scope, data["building_code"])
    scope.require_covers(building.unit_path, f"building {building.code}")
    household = Household(code=_next_code(session, Household.code, building.code, 2), building_id=building.id,
                          head_name=data["head_name"].strip(), phone=data.get("phone"),
                          address=data.get("address") or building.address, room=data.get("room"),
                          members=data.get("members") or 0, grid_code=building.grid_code, unit_path=building.unit_path)
    session.add(household)
    session.flush()
    audit.record(session, actor, "household.create", "household", household.code, after=_audit_household(household),
                 unit_path=household.unit_path)
    return household


def update_household(session: Session, actor: audit.Actor, scope: Scope, code: str, changes: dict) -> Household:
    household = _household(session, scope, code)
    unknown = set(changes) - set(HOUSEHOLD_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown household field(s): {', '.join(sorted(unknown))}")
    _no_nulls(changes, ("head_name", "members"))
    _check_household_values(changes)
    before = _audit_household(household)
    for name, value in changes.items():
        setattr(household, name, value.strip() if name == "head_name" else value)
    session.flush()
    audit.record(session, actor, "household.update", "household", code, before=before, after=_audit_household(household),
                 unit_path=household.unit_path)
    return household


def _check_resident_values(data: dict) -> None:
    problems = []
    if "name" in data and not (isinstance(data["name"], str) and 1 <= len(data["name"].strip()) <= 50):
        problems.append("name must be 1 to 50 characters")
    if data.get("id_number") and not valid_id_number(str(data["id_number"])):
        problems.append("id_number is not a valid GB 11643 citizen id number (18 characters, check digit)")
    year = data.get("birth_year")
    if year is not None and (not isinstance(year, int) or not 1900 <= year <= utcnow().year):
        problems.append(f"birth_year must lie from 1900 to {utcnow().year}, got {year!r}")
    if data.get("sex") is not None and data["sex"] not in SEXES:
        problems.append(f"sex must be one of {', '.join(SEXES)}")
    if data.get("phone") and not _PHONE.match(str(data["phone"])):
        problems.append(f"phone {data['phone']!r} is neither a mobile number (11 digits) nor a fixed line")
    for flag in VULNERABLE_FLAGS:
        if flag in data and not isinstance(data[flag], bool):
            problems.append(f"{flag} must be true or false")
    if data.get("id_number") and year is not None and str(data["id_number"])[6:10] != str(year):
        problems.append("birth_year does not match the id number")
    if problems:
        raise InvalidInput("; ".join(problems), details={"problems": problems})


def _derive_flags(resident: Resident) -> None:
    """Elderly (65+) and child (under 14) follow the birth year when it is known."""
    if resident.birth_year is not None:
        age = utcnow().year - resident.birth_year
        resident.elderly, resident.child = age >= 65, age < 14


def create_resident(session: Session, actor: audit.Actor, scope: Scope, household_code: str, data: dict) -> Resident:
    """A resident of a household in scope; the household's member count follows."""
    if not data.get("name"):
        raise InvalidInput("name is required")
    unknown = set(data) - set(RESIDENT_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown resident field(s): {', '.join(sorted(unknown))}")
    _check_resident_values(data)
    household = _household(session, scope, household_code)
    if data.get("birth_year") is None and data.get("id_number"):
        data = {**data, "birth_year": int(str(data["id_number"])[6:10])}
    if data.get("id_number") and session.scalar(select(Resident.id).where(Resident.id_number == data["id_number"])):
        raise Conflict("a resident with this id number is already registered")
    resident = Resident(household_id=household.id, unit_path=household.unit_path,
                        **{k: (v.strip() if k == "name" else v) for k, v in data.items()})
    for flag in VULNERABLE_FLAGS:
        setattr(resident, flag, bool(getattr(resident, flag)))
    if "elderly" not in data and "child" not in data:
        _derive_flags(resident)
    session.add(resident)
    household.members = (household.members or 0) + 1
    session.flush()
    audit.record(session, actor, "resident.create", "resident", str(resident.id), after=_audit_resident(resident),
                 unit_path=resident.unit_path)
    return resident


def update_resident(session: Session, actor: audit.Actor, scope: Scope, resident_id: int, changes: dict) -> Resident:
    resident = session.get(Resident, resident_id)
    if resident is None or not scope.covers(resident.unit_path):
        raise NotFound(f"resident {resident_id} not found")
    unknown = set(changes) - set(RESIDENT_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown resident field(s): {', '.join(sorted(unknown))}")
    _no_nulls(changes, ("name", *VULNERABLE_FLAGS))
    _check_resident_values({**({"birth_year": resident.birth_year} if "id_number" in changes and "birth_year" not in changes
                                else {}), **changes})
    if changes.get("id_number") and session.scalar(select(Resident.id).where(Resident.id_number == changes["id_number"],
                                                                              Resident.id != resident.id)):
        raise Conflict("a resident with this id number is already registered")
    before = _audit_resident(resident)
    for name, value in changes.items():
        setattr(resident, name, value.strip() if name == "name" else value)
    if "birth_year" in changes and "elderly" not in changes and "child" not in changes:
        _derive_flags(resident)
    session.flush()
    audit.record(session, actor, "resident.update", "resident", str(resident.id), before=before,
                 after=_audit_resident(resident), unit_path=resident.unit_path)
    return resident


# ----------------------------------------------------------------------------------------------- export

EXPORT_KINDS = ("buildings", "households")
_EXPORT_BATCH = 10_000
BUILDING_EXPORT_SCHEMA = [{"name": n, "type": t} for n, t in (
    ("code", "string"), ("name", "string"), ("address", "string"), ("floors", "integer"), ("height_m", "number"),
    ("structure", "string"), ("use", "string"), ("year_built", "integer"), ("safety_grade", "string"),
    ("grid_code", "string"))]
HOUSEHOLD_EXPORT_SCHEMA = [{"name": n, "type": t} for n, t in (
    ("code", "string"), ("building_code", "string"), ("head_name", "string"), ("phone", "string"),
    ("address", "string"), ("room", "string"), ("members", "integer"), ("vulnerable", "integer"),
    ("grid_code", "string"), ("masked", "boolean"))]


def _export_stmt(session: Session, scope: Scope, model, root: str | None, columns=None):
    stmt = select(*(columns or [model])).where(scope.covers_clause(model.unit_path))
    if root:
        stmt = stmt.where(model.unit_path.startswith(org.get_unit(session, root, scope).path, autoescape=True))
    return stmt


def iter_buildings(session: Session, scope: Scope, *, root: str | None = None,
                   bbox: tuple[float, float, float, float] | None = None, batch_size: int = _EXPORT_BATCH):
    """Buildings in scope as (fids, properties, footprints) batches, streamed in id order. Arguments are
    checked now (a bad ``root`` raises here), rows are read as the batches are consumed."""
    names = [f["name"] for f in BUILDING_EXPORT_SCHEMA]
    # Columns, not ORM objects: an export of millions of rows must not build an identity map.
    stmt = _export_stmt(session, scope, Building, root, [getattr(Building, n) for n in names] + [Building.footprint])
    stmt = stmt.order_by(Building.id)
    box = shapely.box(*bbox) if bbox else None
    if bbox:
        stmt = storage_of(session).bbox_prefilter(stmt, Building.__tablename__, Building.id, Building.footprint, bbox,
                                                  geom_name="footprint")
    return _building_batches(session, stmt, names, box, batch_size)


def _building_batches(session: Session, stmt, names: list[str], box, batch_size: int):
    result = session.execute(stmt.execution_options(stream_results=True, yield_per=batch_size))
    for chunk in result.partitions(batch_size):
        geoms = np.array([row[-1] for row in chunk], dtype=object)
        keep = shapely.intersects(geoms, box) if box is not None else np.ones(len(chunk), dtype=bool)
        rows = [row for row, k in zip(chunk, keep) if k]
        if rows:
            yield [row[0] for row in rows], [dict(zip(names, row[:-1])) for row in rows], geoms[keep]


def iter_households(session: Session, scope: Scope, personal: bool, *, root: str | None = None,
                    batch_size: int = _EXPORT_BATCH):
    """Households in scope as (fids, properties, points at their building) batches; personal data masked
    (``mask_personal``) unless the caller may read it."""
    stmt = _export_stmt(session, scope, Household, root).order_by(Household.id)
    return _household_batches(session, scope, personal, stmt, batch_size)


def _household_batches(session: Session, scope: Scope, personal: bool, stmt, batch_size: int):
    vulnerable = Resident.elderly | Resident.disabled | Resident.child | Resident.bedridden
    for chunk in session.execute(stmt.execution_options(yield_per=batch_size)).scalars().partitions(batch_size):
        building_ids = sorted({h.building_id for h in chunk})
        buildings, counts = {}, {}
        for ids in _chunks(building_ids):
            buildings.update({bid: (code, fp) for bid, code, fp in session.execute(
                select(Building.id, Building.code, Building.footprint).where(Building.id.in_(ids)))})
        for ids in _chunks([h.id for h in chunk]):
            counts.update(dict(session.execute(select(Resident.household_id, func.count()).where(
                Resident.household_id.in_(ids), vulnerable).group_by(Resident.household_id)).all()))
        props = []
        for h in chunk:
            data = household_dict(h, scope, personal, buildings[h.building_id][0])
            props.append({f["name"]: data.get(f["name"]) for f in HOUSEHOLD_EXPORT_SCHEMA}
                         | {"vulnerable": counts.get(h.id, 0), "masked": bool(data.get("masked"))})
        footprints = np.array([buildings[h.building_id][1] for h in chunk], dtype=object)
        yield [h.code for h in chunk], props, shapely.point_on_surface(footprints)


def export(session: Session, scope: Scope, personal: bool, kind: str, target, fmt: str, *, crs: str = "EPSG:4490",
           root: str | None = None, bbox: tuple[float, float, float, float] | None = None):
    """Write buildings (footprints) or households (a point at their building, personal data masked for
    callers without ``personal.read``) to a file in any layer format; streamed, memory stays bounded."""
    from cityops.base import layerfiles

    if kind not in EXPORT_KINDS:
        raise InvalidInput(f"unknown export {kind!r}; use one of {', '.join(EXPORT_KINDS)}")
    if kind == "buildings":
        batches, schema, geometry_type = iter_buildings(session, scope, root=root, bbox=bbox), BUILDING_EXPORT_SCHEMA, "MULTIPOLYGON"
    else:
        if bbox:
            raise InvalidInput("bbox applies to buildings; choose households by root (a unit code)")
        batches, schema, geometry_type = iter_households(session, scope, personal, root=root), HOUSEHOLD_EXPORT_SCHEMA, "POINT"
    return layerfiles.write_layer_file(target, fmt, batches, schema, geometry_type, crs=crs, layer_name=kind)

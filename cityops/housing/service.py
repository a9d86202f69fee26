"""Domain logic of the housing registry. No HTTP here.

Reads take a Scope (only covered records come back) and a ``personal`` flag: whether the caller holds
``personal.read``. Personal data (names, phones, id numbers) is shown in the clear only when the flag is
set *and* the record lies in the caller's scope; otherwise ``mask_personal`` masks it. That one function is
what every response and export goes through.
"""

from __future__ import annotations

from collections import defaultdict

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from cityops.core.crs import geodesic_area_m2
from cityops.core.errors import InvalidGeometry, InvalidInput, NotFound
from cityops.core.spatial import spatial_filter
from cityops.housing.models import SAFETY_GRADES, Building, Household, Resident
from cityops.identity.scope import Scope
from cityops.org import service as org
from cityops.org.models import Unit

#: Personal fields per record kind, and how each is masked.
PERSONAL_FIELDS = {
    "household": {"head_name": "name", "phone": "phone"},
    "resident": {"name": "name", "phone": "phone", "id_number": "id_number"},
}
VULNERABLE_FLAGS = ("elderly", "disabled", "child", "bedridden")
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
    data = {"name": r.name, "id_number": r.id_number, "birth_year": r.birth_year, "sex": r.sex, "phone": r.phone,
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
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Building], int]:
    stmt = select(Building).where(scope.covers_clause(Building.unit_path))
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
        return rows[offset : offset + limit], len(rows)
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


def _per_building_counts(session: Session, building_ids: list[int]) -> dict[int, dict]:
    """households, residents and vulnerable residents per building, counted in SQL."""
    counts: dict[int, dict] = defaultdict(lambda: dict.fromkeys(("households", "residents", "vulnerable", *VULNERABLE_FLAGS), 0))
    as_int = lambda column: func.coalesce(func.sum(case((column, 1), else_=0)), 0)  # noqa: E731
    vulnerable = Resident.elderly | Resident.disabled | Resident.child | Resident.bedridden
    for chunk in _chunks(building_ids):
        for bid, n in session.execute(select(Household.building_id, func.count(Household.id))
                                      .where(Household.building_id.in_(chunk)).group_by(Household.building_id)):
            counts[bid]["households"] = n
        stmt = (select(Household.building_id, func.count(Resident.id), as_int(vulnerable),
                       *[as_int(getattr(Resident, f)) for f in VULNERABLE_FLAGS])
                .join(Resident, Resident.household_id == Household.id)
                .where(Household.building_id.in_(chunk)).group_by(Household.building_id))
        for bid, n, vul, *flags in session.execute(stmt):
            c = counts[bid]
            c["residents"], c["vulnerable"] = n, int(vul)
            for f, v in zip(VULNERABLE_FLAGS, flags, strict=True):
                c[f] = int(v)
    return counts


def _zero() -> dict:
    return dict.fromkeys(("buildings", "households", "residents", "vulnerable", *VULNERABLE_FLAGS), 0)


def _add(total: dict, counts: dict) -> None:
    total["buildings"] += 1
    for key, value in counts.items():
        total[key] += value


def _person(p) -> dict:
    return {"name": p.name, "post": p.post, "title": p.title, "phone": p.phone}


def threatened(session: Session, scope: Scope, personal: bool, zone: BaseGeometry, *, limit: int = 1000) -> dict:
    """Buildings whose footprint intersects ``zone`` (canonical CRS), with their households, residents and
    vulnerable residents: totals, grouped by village and grid with who answers for each. Only records in
    ``scope``; those outside it are counted, never described."""
    if zone is None or zone.is_empty:
        raise InvalidGeometry("the threat zone is empty")
    if zone.geom_type not in ("Polygon", "MultiPolygon"):
        raise InvalidGeometry(f"the threat zone must be a Polygon or MultiPolygon, got {zone.geom_type}")
    if not zone.is_valid:
        raise InvalidGeometry(f"invalid threat zone: {shapely.is_valid_reason(zone)}")
    hits = spatial_filter(session, Building, select(Building), "intersects", zone, geom_attr="footprint")
    inside = [b for b in hits if scope.covers(b.unit_path)]
    outside = [b for b in hits if not scope.covers(b.unit_path)]
    counts = _per_building_counts(session, [b.id for b in hits])

    outside_total = _zero()
    for b in outside:
        _add(outside_total, counts[b.id])
    total = _zero()
    by_grid: dict[str, dict] = {}
    for b in inside:
        _add(total, counts[b.id])
        _add(by_grid.setdefault(b.grid_code, _zero()), counts[b.id])

    grids = {u.code: u for u in session.scalars(select(Unit).where(Unit.code.in_(list(by_grid))))} if by_grid else {}
    village_codes = sorted({g.parent_code for g in grids.values() if g.parent_code})
    villages = {u.code: u for u in session.scalars(select(Unit).where(Unit.code.in_(village_codes)))} if village_codes else {}
    grid_groups, village_groups = [], {}
    for code in sorted(by_grid):
        grid = grids.get(code)
        people = org.responsible_people(session, code)
        workers = [_person(p) for p in people if p.post == "grid_worker" and any(u.code == code for u in p.units)]
        cadres = [_person(p) for p in people if p.post == "village_cadre"]
        village_code = grid.parent_code if grid else None
        grid_groups.append({"code": code, "name": grid.name if grid else None, "village_code": village_code,
                            **by_grid[code], "grid_workers": workers, "village_cadres": cadres})
        village = village_groups.setdefault(village_code, {
            "code": village_code, "name": villages[village_code].name if village_code in villages else None,
            **_zero(), "village_cadres": cadres})
        for key, value in by_grid[code].items():
            village[key] += value

    building_items, household_items, vulnerable_items = [], [], []
    for b in inside[:limit]:
        building_items.append({**building_dict(b), **{k: counts[b.id][k] for k in ("households", "residents", "vulnerable")}})
    code_by_id = {b.id: b.code for b in inside}
    for chunk in _chunks(list(code_by_id)):
        if len(household_items) >= limit:
            break
        for h in session.scalars(select(Household).where(Household.building_id.in_(chunk)).order_by(Household.code)):
            household_items.append(household_dict(h, scope, personal, code_by_id[h.building_id]))
        vulnerable = Resident.elderly | Resident.disabled | Resident.child | Resident.bedridden
        stmt = (select(Resident, Household.code).join(Household, Household.id == Resident.household_id)
                .where(Household.building_id.in_(chunk), vulnerable).order_by(Resident.id))
        for r, household_code in session.execute(stmt):
            vulnerable_items.append({**resident_dict(r, scope, personal), "household_code": household_code})
    return {
        "zone_area_m2": round(geodesic_area_m2(zone), 1),
        "totals": total,
        "outside_scope": outside_total,
        "by_village": list(village_groups.values()),
        "by_grid": grid_groups,
        "buildings": building_items,
        "households": household_items[:limit],
        "vulnerable_residents": vulnerable_items[:limit],
        "truncated": max(len(inside), total["households"], total["vulnerable"]) > limit,
        "masked": not personal,
    }

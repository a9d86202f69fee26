"""Domain logic of the administrative hierarchy, departments and people. No HTTP here.

Every read takes a Scope; every write takes an Actor (for the audit log) and a Scope, and happens in
the caller's transaction.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import publish
from cityops.core.crs import geodesic_area_m2
from cityops.core.types import utcnow
from cityops.core.errors import Conflict, Forbidden, InvalidGeometry, InvalidInput, NotFound, ValidationFailed
from cityops.identity.scope import Scope
from cityops.org.levels import Levels
from cityops.org.manifest import UnitsChanged
from cityops.org.models import Department, Person, Place, Unit, person_departments, person_units
from cityops.org.unitfiles import UnitRecord
from cityops.org.validation import ExistingUnit, ValidationReport, validate_units


@dataclass(frozen=True)
class OrgConfig:
    levels: Levels
    grid_code_length: int = 15
    tolerance_m2: float = 1.0
    metric_crs: str = "EPSG:4545"


# ---------------------------------------------------------------------------------------------- units

def unit_snapshot(unit: Unit, with_geometry: bool = False) -> dict:
    data = {
        "code": unit.code,
        "name": unit.name,
        "name_en": unit.name_en,
        "level": unit.level,
        "parent_code": unit.parent_code,
        "area_m2": unit.area_m2,
        "attributes": unit.attributes,
    }
    if unit.geom is not None:
        data["geometry_wkb_sha1"] = hashlib.sha1(shapely.to_wkb(unit.geom)).hexdigest()
        if with_geometry:
            data["geometry"] = shapely.geometry.mapping(unit.geom)
    return data


def get_unit(session: Session, code: str, scope: Scope) -> Unit:
    unit = session.scalar(select(Unit).where(Unit.code == code))
    if unit is None or not scope.sees(unit.path):
        raise NotFound(f"unit {code!r} not found")
    return unit


def unit_chain(session: Session, unit: Unit) -> list[Unit]:
    codes = [c for c in unit.path.strip("/").split("/") if c]
    by_code = {u.code: u for u in session.scalars(select(Unit).where(Unit.code.in_(codes)))}
    return [by_code[c] for c in codes if c in by_code]


def list_units(
    session: Session,
    scope: Scope,
    *,
    level: str | None = None,
    parent: str | None = None,
    root: str | None = None,
    q: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Unit], int]:
    stmt = select(Unit).where(scope.sees_clause(Unit.path))
    if level:
        stmt = stmt.where(Unit.level == level)
    if parent:
        stmt = stmt.where(Unit.parent_code == parent)
    if root:
        root_unit = get_unit(session, root, scope)
        stmt = stmt.where(Unit.path.startswith(root_unit.path, autoescape=True))
    if q:
        stmt = stmt.where((Unit.name.contains(q, autoescape=True)) | (Unit.code.startswith(q, autoescape=True)))
    if bbox is not None:
        from cityops.core.spatial import spatial_filter

        rows = spatial_filter(session, Unit, stmt, "intersects", shapely.box(*bbox))
        return rows[offset : offset + limit], len(rows)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = list(session.scalars(stmt.order_by(Unit.code).limit(limit).offset(offset)))
    return rows, total


def _as_multipolygon(geom: BaseGeometry | None) -> MultiPolygon | None:
    if geom is None:
        return None
    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    if isinstance(geom, MultiPolygon):
        return geom
    raise InvalidGeometry(f"a unit needs a Polygon or MultiPolygon, got {geom.geom_type}")


def _existing_context(session: Session, codes: set[str]) -> dict[str, ExistingUnit]:
    """The existing units a validation of ``codes`` needs: those codes, their parents and siblings."""
    if not codes:
        return {}
    rows = list(session.scalars(select(Unit).where(Unit.code.in_(codes))))
    parents = {u.parent_code for u in rows if u.parent_code} | codes
    rows += list(session.scalars(select(Unit).where(Unit.parent_code.in_(parents) | Unit.code.in_(parents))))
    return {u.code: ExistingUnit(u.code, u.level, u.parent_code, u.geom) for u in rows}


def validate_records(session: Session, config: OrgConfig, records: list[UnitRecord], replace: bool) -> ValidationReport:
    codes = {r.code for r in records} | {r.parent_code for r in records if r.parent_code}
    existing = _existing_context(session, codes)
    return validate_units(
        records,
        existing=existing,
        replace=replace,
        grid_code_length=config.grid_code_length,
        tolerance_m2=config.tolerance_m2,
    )


def import_units(
    session: Session,
    config: OrgConfig,
    actor: audit.Actor,
    scope: Scope,
    records: list[UnitRecord],
    *,
    replace: bool = False,
    dry_run: bool = False,
) -> ValidationReport:
    """All-or-nothing import: validate everything, then write everything in the caller's transaction.
    Raises ValidationFailed (with the report) and writes nothing when any check fails."""
    if not records:
        raise InvalidInput("the file holds no units")
    report = validate_records(session, config, records, replace)
    # Scope: every imported unit must land inside the importer's subtrees.
    paths = _compute_paths(session, records)
    for record in records:
        if not scope.covers(paths.get(record.code)):
            raise Forbidden(f"unit {record.code} is outside your scope; nothing was imported")
    if not report.ok:
        raise ValidationFailed(
            f"import rejected: {sum(1 for i in report.issues if i.severity == 'error')} problem(s); nothing was imported",
            details=report.to_dict(),
        )
    if dry_run:
        return report
    existing = {u.code: u for u in session.scalars(select(Unit).where(Unit.code.in_([r.code for r in records])))}
    rows = []
    for record in sorted(records, key=lambda r: len(paths[r.code])):
        level = record.level or config.levels.infer(record.code).key
        geom = _as_multipolygon(record.geometry)
        values = dict(
            code=record.code,
            name=record.name,
            name_en=record.name_en,
            level=level,
            parent_code=record.parent_code,
            path=paths[record.code],
            area_m2=geodesic_area_m2(geom) if geom is not None else None,
            attributes=record.attributes or {},
            geom=geom,
        )
        if record.code in existing:
            unit = existing[record.code]
            before = unit_snapshot(unit)
            for key, value in values.items():
                setattr(unit, key, value)
            session.flush()
            audit.record(session, actor, "unit.replace", "unit", record.code, before=before,
                         after=unit_snapshot(unit), unit_path=unit.path)
        else:
            rows.append(values)
    if rows:
        now = utcnow()
        for values in rows:
            values.update(created_at=now, updated_at=now)
        # Core bulk insert (the ORM would round-trip per row); parents sort first so FKs hold.
        session.execute(insert(Unit), rows)
        for values in rows:
            snap = {k: v for k, v in values.items() if k not in ("geom", "path", "created_at", "updated_at")}
            audit.record(session, actor, "unit.create", "unit", values["code"], after=snap, unit_path=values["path"])
    session.flush()
    publish(session, UnitsChanged(codes=sorted(r.code for r in records)[:1000], change="import"))
    return report


def _compute_paths(session: Session, records: list[UnitRecord]) -> dict[str, str]:
    in_file = {r.code: r for r in records}
    parent_codes = {r.parent_code for r in records if r.parent_code and r.parent_code not in in_file}
    known = dict(session.execute(select(Unit.code, Unit.path).where(Unit.code.in_(parent_codes))).all())
    paths: dict[str, str] = {}

    def path_of(code: str, depth: int = 0) -> str:
        if code in paths:
            return paths[code]
        if depth > 32:
            raise InvalidInput(f"unit {code} is part of a parent cycle")
        record = in_file.get(code)
        if record is None:
            return known.get(code, f"/{code}/")
        parent = record.parent_code
        base = path_of(parent, depth + 1) if parent else "/"
        paths[code] = f"{base}{code}/"
        return paths[code]

    for code in in_file:
        path_of(code)
    return paths


def update_unit(session: Session, config: OrgConfig, actor: audit.Actor, scope: Scope, code: str, changes: dict) -> Unit:
    unit = get_unit(session, code, scope)
    scope.require_covers(unit.path, f"unit {code}")
    before = unit_snapshot(unit)
    if "geometry" in changes and changes["geometry"] is not None:
        record = UnitRecord(code=unit.code, name=changes.get("name") or unit.name, level=unit.level,
                            parent_code=unit.parent_code, geometry=changes["geometry"], row=1)
        report = validate_records(session, config, [record], replace=True)
        if not report.ok:
            raise ValidationFailed("geometry rejected; nothing changed", details=report.to_dict())
        unit.geom = _as_multipolygon(changes["geometry"])
        unit.area_m2 = geodesic_area_m2(unit.geom)
    for key in ("name", "name_en"):
        if changes.get(key) is not None:
            value = changes[key].strip()
            if not value:
                raise InvalidInput(f"{key} must not be empty")
            setattr(unit, key, value)
    if changes.get("attributes") is not None:
        unit.attributes = dict(changes["attributes"])
    session.flush()
    audit.record(session, actor, "unit.update", "unit", code, before=before, after=unit_snapshot(unit), unit_path=unit.path)
    publish(session, UnitsChanged(codes=[code], change="update"))
    return unit


def delete_unit(session: Session, actor: audit.Actor, scope: Scope, code: str) -> None:
    unit = get_unit(session, code, scope)
    scope.require_covers(unit.path, f"unit {code}")
    if scope.unit_paths and unit.path in scope.unit_paths:
        raise Forbidden(f"unit {code} is the root of your own scope")
    children = session.scalar(select(func.count(Unit.id)).where(Unit.parent_code == code))
    if children:
        raise Conflict(f"unit {code} has {children} child unit(s); delete or move them first")
    for model, label in ((Person, "people"), (Department, "departments")):
        count = session.scalar(select(func.count(model.id)).where(model.unit_code == code))
        if count:
            raise Conflict(f"unit {code} still has {count} {label} attached")
    before = unit_snapshot(unit)
    session.execute(delete(person_units).where(person_units.c.unit_code == code))
    session.delete(unit)
    session.flush()
    audit.record(session, actor, "unit.delete", "unit", code, before=before, unit_path=unit.path)
    publish(session, UnitsChanged(codes=[code], change="delete"))


def export_records(session: Session, scope: Scope, *, root: str | None = None, level: str | None = None) -> list[UnitRecord]:
    stmt = select(Unit).where(scope.covers_clause(Unit.path))
    if root:
        root_unit = get_unit(session, root, scope)
        stmt = stmt.where(Unit.path.startswith(root_unit.path, autoescape=True))
    if level:
        stmt = stmt.where(Unit.level == level)
    return [
        UnitRecord(code=u.code, name=u.name, level=u.level, parent_code=u.parent_code, geometry=u.geom,
                   name_en=u.name_en, attributes=u.attributes or {})
        for u in session.scalars(stmt.order_by(Unit.path))
    ]


def unit_path(session: Session, code: str) -> str:
    path = session.scalar(select(Unit.path).where(Unit.code == code))
    if path is None:
        raise InvalidInput(f"unknown unit code {code!r}")
    return path


# ------------------------------------------------------------------------------------------ departments

def department_snapshot(d: Department) -> dict:
    return {"code": d.code, "name": d.name, "name_en": d.name_en, "kind": d.kind, "unit_code": d.unit_code,
            "matter_classes": list(d.matter_classes), "covered_units": list(d.covered_units), "phone": d.phone,
            "attributes": d.attributes}


def _department_visible(scope: Scope, d: Department) -> bool:
    return scope.sees(d.unit_path) or d.code in scope.department_codes


def require_department_in_scope(scope: Scope, d: Department) -> None:
    """The caller may assign people or users to ``d``: its unit is in the scope, or it is one of the
    scope's own departments."""
    if d.code not in scope.department_codes:
        scope.require_covers(d.unit_path, f"department {d.code}")


def list_departments(session: Session, scope: Scope) -> list[Department]:
    rows = session.scalars(select(Department).order_by(Department.code))
    return [d for d in rows if _department_visible(scope, d)]


def get_department(session: Session, code: str, scope: Scope) -> Department:
    d = session.scalar(select(Department).where(Department.code == code))
    if d is None or not _department_visible(scope, d):
        raise NotFound(f"department {code!r} not found")
    return d


def _check_matter_classes(values: list[str]) -> list[str]:
    for value in values:
        if not re.fullmatch(r"(component|matter):\d{2}(\d{3})?", value):
            raise InvalidInput(f"matter class {value!r} must look like 'matter:06' or 'component:01001'")
    return list(values)


def save_department(session: Session, actor: audit.Actor, scope: Scope, data: dict, code: str | None = None) -> Department:
    """Create (code None) or update a department."""
    if code is None:
        if session.scalar(select(Department.id).where(Department.code == data["code"])) is not None:
            raise Conflict(f"department {data['code']!r} already exists")
        path = unit_path(session, data["unit_code"])
        scope.require_covers(path, f"unit {data['unit_code']}")
        d = Department(code=data["code"], name=data["name"], unit_code=data["unit_code"], unit_path=path,
                       matter_classes=[], covered_units=[], attributes={})
        session.add(d)
        before = None
    else:
        d = get_department(session, code, scope)
        scope.require_covers(d.unit_path, f"department {code}")
        before = department_snapshot(d)
    for key in ("name", "name_en", "kind", "phone", "attributes"):
        if data.get(key) is not None:
            setattr(d, key, data[key])
    if data.get("matter_classes") is not None:
        d.matter_classes = _check_matter_classes(data["matter_classes"])
    if data.get("covered_units") is not None:
        for unit_code in data["covered_units"]:
            scope.require_covers(unit_path(session, unit_code), f"unit {unit_code}")
        d.covered_units = list(data["covered_units"])
    session.flush()
    audit.record(session, actor, "department.create" if before is None else "department.update", "department",
                 d.code, before=before, after=department_snapshot(d), unit_path=d.unit_path)
    return d


def delete_department(session: Session, actor: audit.Actor, scope: Scope, code: str) -> None:
    d = get_department(session, code, scope)
    scope.require_covers(d.unit_path, f"department {code}")
    before = department_snapshot(d)
    session.delete(d)
    session.flush()
    audit.record(session, actor, "department.delete", "department", code, before=before, unit_path=d.unit_path)


# ----------------------------------------------------------------------------------------------- people

POSTS = ("operator", "leader", "department_staff", "village_cadre", "grid_worker")


def person_snapshot(p: Person) -> dict:
    return {"id": p.id, "name": p.name, "post": p.post, "title": p.title, "phone": p.phone, "email": p.email,
            "unit_code": p.unit_code, "units": sorted(u.code for u in p.units),
            "departments": sorted(d.code for d in p.departments), "attributes": p.attributes}


def _person_visible(scope: Scope, p: Person) -> bool:
    return scope.covers(p.unit_path) or any(d.code in scope.department_codes for d in p.departments)


def list_people(session: Session, scope: Scope, *, unit: str | None = None, post: str | None = None,
                limit: int = 100, offset: int = 0) -> tuple[list[Person], int]:
    stmt = select(Person)
    if scope.department_codes and not scope.all_units:
        dept_people = select(person_departments.c.person_id).join(
            Department, Department.id == person_departments.c.department_id
        ).where(Department.code.in_(scope.department_codes))
        stmt = stmt.where(scope.covers_clause(Person.unit_path) | Person.id.in_(dept_people))
    else:
        stmt = stmt.where(scope.covers_clause(Person.unit_path))
    if unit:
        # People assigned to a unit or anywhere beneath it (e.g. a village's grid workers).
        path = unit_path(session, unit)
        assigned = select(person_units.c.person_id).join(Unit, Unit.code == person_units.c.unit_code).where(
            Unit.path.startswith(path, autoescape=True)
        )
        stmt = stmt.where(Person.id.in_(assigned) | Person.unit_path.startswith(path, autoescape=True))
    if post:
        stmt = stmt.where(Person.post == post)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    return list(session.scalars(stmt.order_by(Person.id).limit(limit).offset(offset))), total


def get_person(session: Session, person_id: int, scope: Scope) -> Person:
    p = session.get(Person, person_id)
    if p is None or not _person_visible(scope, p):
        raise NotFound(f"person {person_id} not found")
    return p


def save_person(session: Session, actor: audit.Actor, scope: Scope, data: dict, person_id: int | None = None) -> Person:
    if data.get("post") is not None and data["post"] not in POSTS:
        raise InvalidInput(f"unknown post {data['post']!r}; known posts: {', '.join(POSTS)}")
    if person_id is None:
        path = unit_path(session, data["unit_code"])
        scope.require_covers(path, f"unit {data['unit_code']}")
        p = Person(name=data["name"], post=data["post"], unit_code=data["unit_code"], unit_path=path, attributes={})
        session.add(p)
        before = None
    else:
        p = get_person(session, person_id, scope)
        scope.require_covers(p.unit_path, f"person {person_id}")
        before = person_snapshot(p)
        if data.get("unit_code") is not None:
            path = unit_path(session, data["unit_code"])
            scope.require_covers(path, f"unit {data['unit_code']}")
            p.unit_code, p.unit_path = data["unit_code"], path
    for key in ("name", "post", "title", "phone", "email", "attributes"):
        if data.get(key) is not None:
            setattr(p, key, data[key])
    if data.get("units") is not None:
        units = list(session.scalars(select(Unit).where(Unit.code.in_(data["units"]))))
        missing = set(data["units"]) - {u.code for u in units}
        if missing:
            raise InvalidInput(f"unknown unit codes: {', '.join(sorted(missing))}")
        for u in units:
            scope.require_covers(u.path, f"unit {u.code}")
        p.units = units
    if data.get("departments") is not None:
        depts = list(session.scalars(select(Department).where(Department.code.in_(data["departments"]))))
        # A department the caller cannot see is reported as unknown, so the answer does not reveal it exists.
        missing = set(data["departments"]) - {d.code for d in depts if _department_visible(scope, d)}
        if missing:
            raise InvalidInput(f"unknown department codes: {', '.join(sorted(missing))}")
        # Joining or leaving a department changes that department's staff: each one added or removed must be
        # the caller's (in its scope, or one of its own departments), as for units.
        for d in set(depts).symmetric_difference(p.departments):
            require_department_in_scope(scope, d)
        p.departments = depts
    session.flush()
    audit.record(session, actor, "person.create" if before is None else "person.update", "person", str(p.id),
                 before=before, after=person_snapshot(p), unit_path=p.unit_path)
    return p


def delete_person(session: Session, actor: audit.Actor, scope: Scope, person_id: int) -> None:
    p = get_person(session, person_id, scope)
    scope.require_covers(p.unit_path, f"person {person_id}")
    before = person_snapshot(p)
    session.delete(p)
    session.flush()
    audit.record(session, actor, "person.delete", "person", str(person_id), before=before, unit_path=p.unit_path)


def responsible_people(session: Session, grid_code: str) -> list[Person]:
    """Grid workers of a grid, then the village cadres of its village: who answers for a place."""
    grid = session.scalar(select(Unit).where(Unit.code == grid_code))
    if grid is None:
        return []
    codes = [c for c in grid.path.strip("/").split("/") if c]
    stmt = (select(Person).join(person_units, person_units.c.person_id == Person.id)
            .where(person_units.c.unit_code.in_(codes)).order_by(Person.id))
    people = list(session.scalars(stmt))
    rank = {code: -i for i, code in enumerate(codes)}
    return sorted(people, key=lambda p: min(rank.get(u.code, 0) for u in p.units))


def list_places(session: Session, scope: Scope, q: str | None = None, limit: int = 50) -> list[Place]:
    stmt = select(Place).where(scope.covers_clause(Place.unit_path))
    if q:
        stmt = stmt.where(Place.name.contains(q, autoescape=True))
    return list(session.scalars(stmt.order_by(Place.id).limit(limit)))


def names_of(session: Session, units=(), departments=()) -> tuple[dict[str, str], dict[str, str]]:
    """Names of units and departments by code, for API answers that show them to people who may not read the
    units or departments themselves (a department's staff see the grid of a case by name, not by code)."""
    unit_codes, dept_codes = sorted({c for c in units if c}), sorted({c for c in departments if c})
    unit_names = dict(session.execute(select(Unit.code, Unit.name).where(Unit.code.in_(unit_codes))).all()) if unit_codes else {}
    dept_names = (dict(session.execute(select(Department.code, Department.name).where(Department.code.in_(dept_codes))).all())
                  if dept_codes else {})
    return unit_names, dept_names

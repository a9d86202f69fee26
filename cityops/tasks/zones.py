"""Risk zones (风险区): versions of an incident's zone, the households inside locked into evacuation tasks assigned to
their grid workers, and who a zone threatens."""

from __future__ import annotations

from collections import defaultdict

import shapely
import shapely.ops
from shapely.geometry import MultiPolygon, mapping
from shapely.geometry.base import BaseGeometry
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.crs import geodesic_area_m2
from cityops.core.errors import Conflict, Forbidden, InvalidGeometry, InvalidInput, NotFound
from cityops.core.spatial import buffer_m, spatial_filter
from cityops.core.types import utcnow
from cityops.housing import service as housing
from cityops.housing.models import Building, Household, Resident
from cityops.identity.scope import Scope
from cityops.org.models import Person, Unit, person_units
from cityops.tasks.catalogue import ROMAN, catalogue
from cityops.tasks.incidents import ALL, _CHUNK, get_incident, log_step
from cityops.tasks.models import Evacuation, Incident, RiskZone


def _check_geometry_in_unit(session: Session, geometry: BaseGeometry, unit: Unit) -> None:
    if geometry.is_empty or not geometry.is_valid:
        raise InvalidGeometry("the hazard geometry is empty or invalid")
    if unit.geom is not None and not unit.geom.intersects(geometry):
        raise InvalidGeometry(f"the hazard geometry lies outside unit {unit.code} ({unit.name})")


def _computed_zone(session: Session, actor: audit.Actor, incident: Incident) -> None:
    """The plan's zone: the hazard body plus the plan's buffer (a proposal shows it before confirmation)."""
    if incident.hazard_geom is None:
        return
    plan = catalogue().plan(incident.plan_key)
    zone = buffer_m(incident.hazard_geom, plan.zone_buffer_m, _metric_crs(session))
    set_zone(session, actor, ALL, incident.id, zone, source="computed", note=f"隐患体外扩 {plan.zone_buffer_m:g} m",
             _incident=incident)


def _metric_crs(session: Session) -> str:
    # Routes put the deployment's metric CRS on the session; other callers get the settings' default.
    from cityops.core.settings import Settings

    return session.info.get("metric_crs") or Settings.model_fields["metric_crs"].default


def _as_multipolygon(geom: BaseGeometry) -> MultiPolygon:
    if geom.geom_type == "Polygon":
        return MultiPolygon([geom])
    if geom.geom_type == "MultiPolygon":
        return geom
    if geom.geom_type == "GeometryCollection":
        polys = [g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        if polys and len(polys) == len(geom.geoms):
            return _as_multipolygon(shapely.union_all(polys))
    raise InvalidGeometry(f"a risk zone must be a Polygon or MultiPolygon, got {geom.geom_type}")


def set_zone(session: Session, actor: audit.Actor, scope: Scope, incident_id: int, geom: BaseGeometry, *,
             source: str, note: str | None = None, _incident: Incident | None = None) -> RiskZone:
    """A new version of the incident's risk zone. The zone must lie in the actor's jurisdiction (no threatened
    building outside it) and touch the incident's township. An active incident's households inside are locked
    into evacuation tasks; those a newer version leaves out, and not yet acted on, are released."""
    incident = _incident or get_incident(session, scope, incident_id, for_change=True)
    if incident.status not in ("proposed", "active"):
        raise Conflict(f"incident {incident.id} is {incident.status}; its zone can no longer change")
    if source not in ("drawn", "imported", "computed"):
        raise InvalidInput(f"zone source {source!r} is not drawn, imported or computed")
    if geom is None or geom.is_empty:
        raise InvalidGeometry("the risk zone is empty")
    if not geom.is_valid:
        raise InvalidGeometry(f"invalid risk zone: {shapely.is_valid_reason(geom)}")
    zone = _as_multipolygon(geom)
    if not scope.all_units:
        roots = list(session.scalars(select(Unit.geom).where(Unit.path.in_(scope.unit_paths))))
        if not roots or not any(g is not None and g.intersects(zone) for g in roots):
            raise Forbidden("the risk zone lies outside your jurisdiction")
    township = session.scalar(select(Unit).where(Unit.path == incident.unit_path))
    if township is not None and township.geom is not None and not township.geom.intersects(zone):
        raise InvalidGeometry(f"the risk zone lies outside {township.name} ({township.code}), the incident's area")
    threat = housing.threatened(session, scope, False, zone, limit=0)
    outside = threat["outside_scope"]["buildings"]
    if outside:
        raise Forbidden(f"the risk zone reaches {outside} building(s) outside your jurisdiction; "
                        "draw it inside your area or ask the level above", {"outside_scope": threat["outside_scope"]})
    version = (session.scalar(select(func.max(RiskZone.version)).where(RiskZone.incident_id == incident.id)) or 0) + 1
    people = threat["totals"]["residents"]
    grade = catalogue().grading.grade(people)
    summary = {k: threat[k] for k in ("totals", "by_village", "by_grid", "zone_area_m2")}
    summary["event_grade"] = grade
    row = RiskZone(incident_id=incident.id, version=version, source=source, geom=zone, area_m2=geodesic_area_m2(zone),
                   summary=summary, note=note, created_by=actor.name, created_at=utcnow(), unit_path=incident.unit_path)
    session.add(row)
    previous_grade = incident.event_grade
    incident.event_grade = grade
    session.flush()
    log_step(session, incident, actor.name, "zone.version",
             f"风险区第{version}版({ {'drawn': '手绘', 'imported': '导入', 'computed': '计算'}[source] }):"
             f"{threat['totals']['buildings']} 栋 {threat['totals']['households']} 户 {people} 人,"
             f"其中重点人员 {threat['totals']['vulnerable']} 人;建议事件等级 {ROMAN[grade]} 级",
             {"version": version, "totals": threat["totals"], "event_grade": grade, "previous_grade": previous_grade})
    audit.record(session, actor, "zone.create", "risk_zone", f"{incident.id}:{version}",
                 after={"source": source, "area_m2": row.area_m2, "totals": threat["totals"], "event_grade": grade},
                 unit_path=incident.unit_path)
    if incident.status == "active":
        lock_households(session, actor, incident, zone)
    return row


def current_zone(session: Session, incident_id: int) -> RiskZone | None:
    return session.scalar(select(RiskZone).where(RiskZone.incident_id == incident_id).order_by(RiskZone.version.desc()).limit(1))


def _assignees(session: Session, grid_codes: list[str]) -> dict[str, tuple[int, str, str] | None]:
    """Per grid: its grid worker, else the village cadre of its village (one query)."""
    grids = {u.code: u for u in session.scalars(select(Unit).where(Unit.code.in_(grid_codes)))}
    parents = {g.parent_code for g in grids.values() if g.parent_code}
    rows = session.execute(select(person_units.c.unit_code, Person.id, Person.name, Person.post)
                           .join(Person, Person.id == person_units.c.person_id)
                           .where(person_units.c.unit_code.in_(list(grids) + list(parents)))
                           .order_by(Person.id)).all()
    by_unit: dict[str, list] = defaultdict(list)
    for unit_code, pid, name, post in rows:
        by_unit[unit_code].append((pid, name, post))
    out = {}
    for code, grid in grids.items():
        workers = [p for p in by_unit[code] if p[2] == "grid_worker"]
        cadres = [p for p in by_unit.get(grid.parent_code, []) if p[2] == "village_cadre"]
        out[code] = (workers or cadres or [None])[0]
    return out


def lock_households(session: Session, actor: audit.Actor, incident: Incident, zone: BaseGeometry) -> dict:
    """Lock the zone's households: one evacuation task each, assigned to its grid worker (else village cadre)."""
    buildings = spatial_filter(session, Building, select(Building), "intersects", zone, geom_attr="footprint")
    centre = {b.id: b.footprint.representative_point() for b in buildings}
    code_of = {b.id: b.code for b in buildings}
    households = []
    for i in range(0, len(buildings), _CHUNK):
        ids = [b.id for b in buildings[i : i + _CHUNK]]
        households.extend(session.execute(select(Household.id, Household.code, Household.building_id, Household.members,
                                                 Household.grid_code, Household.unit_path)
                                          .where(Household.building_id.in_(ids))).all())
    vulnerable: dict[int, int] = {}
    flag = Resident.elderly | Resident.disabled | Resident.child | Resident.bedridden
    hh_ids = [h.id for h in households]
    for i in range(0, len(hh_ids), _CHUNK):
        for hid, n in session.execute(select(Resident.household_id, func.count(Resident.id))
                                      .where(Resident.household_id.in_(hh_ids[i : i + _CHUNK]), flag).group_by(Resident.household_id)):
            vulnerable[hid] = n
    existing = dict(session.execute(select(Evacuation.household_id, Evacuation.id).where(Evacuation.incident_id == incident.id)).all())
    inside = {h.id for h in households}
    assignees = _assignees(session, sorted({h.grid_code for h in households})) if households else {}
    initial = catalogue().evacuation.initial
    now = utcnow()
    rows = []
    for h in households:
        if h.id in existing:
            continue
        parts = [c for c in h.unit_path.strip("/").split("/") if c]
        who = assignees.get(h.grid_code)
        p = centre[h.building_id]
        rows.append(dict(incident_id=incident.id, household_id=h.id, household_code=h.code, building_code=code_of[h.building_id],
                         members=h.members, vulnerable=vulnerable.get(h.id, 0), lon=p.x, lat=p.y, grid_code=h.grid_code,
                         village_code=parts[-2], township_code=parts[-3], unit_path=h.unit_path,
                         assignee_person_id=who[0] if who else None, assignee_name=who[1] if who else None,
                         assignee_post=who[2] if who else None, state=initial, shelter_id=None, in_zone=True, version=1,
                         drill=incident.drill, updated_at=now, updated_by=actor.name))
    if rows:
        session.execute(insert(Evacuation), rows)
    back = [eid for hid, eid in existing.items() if hid in inside]
    gone = [eid for hid, eid in existing.items() if hid not in inside]
    if back:
        session.execute(update(Evacuation).where(Evacuation.id.in_(back), Evacuation.in_zone.is_(False)).values(in_zone=True))
    released = 0
    if gone:
        released = session.execute(update(Evacuation).where(Evacuation.id.in_(gone), Evacuation.state == initial,
                                                            Evacuation.in_zone.is_(True)).values(in_zone=False)).rowcount
    per_grid: dict[str, int] = defaultdict(int)
    for r in rows:
        per_grid[r["grid_code"]] += 1
    result = {"locked": len(rows), "households_in_zone": len(inside), "released": released,
              "people": sum(r["members"] for r in rows), "per_grid": dict(per_grid)}
    log_step(session, incident, actor.name, "evacuation.locked",
             f"锁定受威胁住户 {len(inside)} 户,新增转移任务 {len(rows)} 户" + (f",移出风险区 {released} 户" if released else ""),
             result)
    return result


def zone_dict(z: RiskZone, geometry: bool = True) -> dict:
    data = {"id": z.id, "incident_id": z.incident_id, "version": z.version, "source": z.source, "area_m2": round(z.area_m2, 1),
            "summary": z.summary, "note": z.note, "created_by": z.created_by, "created_at": z.created_at.isoformat(),
            "unit_path": z.unit_path}
    if geometry:
        data["geometry"] = mapping(z.geom)
    return data


def zone_threat(session: Session, scope: Scope, personal: bool, incident_id: int) -> dict:
    """Who is threatened in the current zone, at the caller's scope, with the proposed event grade."""
    incident = get_incident(session, scope, incident_id)
    zone = current_zone(session, incident.id)
    if zone is None:
        raise NotFound(f"incident {incident_id} has no risk zone yet")
    threat = housing.threatened(session, scope, personal, zone.geom)
    threat["zone_version"] = zone.version
    grade = catalogue().grading.grade(threat["totals"]["residents"] + threat["outside_scope"]["residents"])
    threat["event_grade"] = grade
    threat["event_grade_roman"] = ROMAN[grade]
    return threat

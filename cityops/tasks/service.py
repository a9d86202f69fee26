"""Domain logic of the task center: incidents and plans, risk zones, household evacuation, shelters, tasks.
No HTTP here. Functions take the principal's ``Scope``: reads return only what it sees, writes refuse what
it does not cover, and every write records an audit entry in the same transaction.

Three-level totals (village, township, district) are computed from one grouped query and summed upward, so
they agree with each other by construction, at every instant.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta

import shapely
import shapely.ops
from shapely.geometry import MultiPolygon, mapping
from shapely.geometry.base import BaseGeometry
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cityops.core import audit
from cityops.core.crs import geodesic_area_m2
from cityops.core.errors import Conflict, Forbidden, InvalidGeometry, InvalidInput, NotFound
from cityops.core.spatial import buffer_m, spatial_filter
from cityops.core.types import utcnow
from cityops.housing import service as housing
from cityops.housing.models import Building, Household, Resident
from cityops.identity import service as identity
from cityops.identity.scope import Scope
from cityops.org import service as org
from cityops.org.models import Person, Unit, person_units
from cityops.tasks import links
from cityops.tasks.catalogue import ROMAN, catalogue, parse_level
from cityops.tasks.models import Evacuation, EvacuationEvent, Incident, IncidentLog, RiskZone, Shelter, Task

ALL = Scope(all_units=True)
_CHUNK = 5000
#: Log kinds that are per-household (the stream carries them; the decision timeline leaves them out).
HOUSEHOLD_KINDS = ("evacuation.state",)


# -------------------------------------------------------------------------------------------- helpers

def _unit(session: Session, code: str) -> Unit:
    unit = session.scalar(select(Unit).where(Unit.code == code))
    if unit is None:
        raise InvalidInput(f"unknown unit code {code!r}")
    return unit


def _ancestor(session: Session, unit: Unit, level: str) -> Unit:
    """The ancestor (or self) of ``unit`` at ``level``; the unit itself when it lies above that level."""
    codes = [c for c in unit.path.strip("/").split("/") if c]
    found = session.scalar(select(Unit).where(Unit.code.in_(codes), Unit.level == level))
    return found or unit


def log_step(session: Session, incident: Incident, actor: str, kind: str, message: str, data: dict | None = None,
             unit_path: str | None = None) -> IncidentLog:
    entry = IncidentLog(incident_id=incident.id, at=utcnow(), actor=actor, kind=kind, message=message,
                        data=data or {}, unit_path=unit_path or incident.unit_path)
    session.add(entry)
    return entry


def incident_dict(i: Incident) -> dict:
    plan = catalogue().plan(i.plan_key)
    return {"id": i.id, "title": i.title, "hazard_type": i.hazard_type, "plan_key": i.plan_key, "plan_name": plan.name_zh,
            "response_level": i.response_level, "response_level_roman": ROMAN[i.response_level],
            "warning_level": i.warning_level, "status": i.status, "activation": i.activation,
            "risk_point_code": i.risk_point_code, "unit_code": i.unit_code, "unit_path": i.unit_path,
            "event_grade": i.event_grade, "event_grade_roman": ROMAN.get(i.event_grade) if i.event_grade else None,
            "case_ref": i.case_ref, "case_link": links.case_link(i.case_ref), "drill": i.drill,
            "created_by": i.created_by, "created_at": i.created_at.isoformat(),
            "activated_at": i.activated_at.isoformat() if i.activated_at else None,
            "stood_down_at": i.stood_down_at.isoformat() if i.stood_down_at else None,
            "closed_at": i.closed_at.isoformat() if i.closed_at else None, "closing_note": i.closing_note,
            "hazard_geometry": mapping(i.hazard_geom) if i.hazard_geom is not None else None}


def get_incident(session: Session, scope: Scope, incident_id: int, *, for_change: bool = False) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None or not scope.sees(incident.unit_path):
        raise NotFound(f"incident {incident_id} not found")
    if for_change and not scope.covers(incident.unit_path):
        raise Forbidden(f"incident {incident_id} is outside your scope: only its own level and above may command it")
    return incident


def list_incidents(session: Session, scope: Scope, *, status: str | None = None, drill: bool | None = None) -> list[Incident]:
    stmt = select(Incident).where(scope.sees_clause(Incident.unit_path))
    if status:
        stmt = stmt.where(Incident.status == status)
    if drill is not None:
        stmt = stmt.where(Incident.drill.is_(drill))
    return list(session.scalars(stmt.order_by(Incident.id.desc())))


# ---------------------------------------------------------------------------------- incidents and plans

def open_incident(session: Session, actor: audit.Actor, scope: Scope, *, hazard_type: str, level, unit_code: str,
                  geometry: BaseGeometry | None = None, risk_point_code: str | None = None, title: str | None = None,
                  activation: str = "manual", drill: bool = False, evidence: dict | None = None,
                  warning_level: int | None = None, place_name: str | None = None) -> Incident:
    """Open a response under the plan for ``hazard_type`` at ``level`` (1–4). ``activation`` "manual" or
    "auto" activates at once; "proposed" waits for an operator's confirmation. Without a ``title`` the
    response is named after ``place_name`` (the risk point's name; else the unit and the plan), see ``_title``."""
    cat = catalogue()
    plan = cat.plan_for(hazard_type)
    response = parse_level(level)
    if response is None:
        raise InvalidInput("a response needs a level 1–4 (I–IV)")
    unit = _unit(session, unit_code)
    scope.require_covers(unit.path, f"unit {unit_code}")
    if geometry is not None:
        _check_geometry_in_unit(session, geometry, unit)
    incident = Incident(title=title or _title(session, place_name or f"{unit.name}{plan.name_zh.removesuffix('应急预案')}", response),
                        hazard_type=plan.hazard_type, plan_key=plan.key, response_level=response,
                        warning_level=warning_level, status="proposed" if activation == "proposed" else "active",
                        activation=activation, risk_point_code=risk_point_code, hazard_geom=geometry,
                        unit_code=unit.code, unit_path=_ancestor(session, unit, "township").path if unit.level in ("village", "grid") else unit.path,
                        drill=drill, created_by=actor.name, created_at=utcnow(), evidence=evidence or {})
    # The incident belongs to the township of its place, so the whole chain (district, township, villages
    # of the zone) sees it; the village or grid of the hazard is kept in unit_code.
    session.add(incident)
    session.flush()
    what = "演练" if drill else "响应"
    log_step(session, incident, actor.name, "incident.proposed" if activation == "proposed" else "incident.opened",
             f"{plan.name_zh} {ROMAN[response]}级{what}{'待确认' if activation == 'proposed' else '启动'}"
             f"({'自动' if activation == 'auto' else '建议' if activation == 'proposed' else '人工'})",
             {"plan": plan.key, "level": response, "activation": activation, "evidence": evidence or {}})
    audit.record(session, actor, "incident.open", "incident", str(incident.id), after=incident_dict(incident),
                 unit_path=incident.unit_path)
    if incident.status == "active":
        _activate(session, actor, incident)
    else:
        _computed_zone(session, actor, incident)
    return incident


def _title(session: Session, base: str, level: int) -> str:
    """「太康村6组老沟湾滑坡II级响应」: the risk point (its name says the hazard; else the unit and the plan) and
    the response level (kept current by ``change_level``); a second response there is numbered（第2次）so no
    two incidents share a title."""
    before = session.scalar(select(func.count(Incident.id)).where(Incident.title.startswith(base, autoescape=True)))
    return f"{base}{ROMAN[level]}级响应" + (f"（第{before + 1}次）" if before else "")


def _retitle(incident: Incident, old: int, new: int) -> None:
    """A generated title follows the response level; a title an operator wrote stays as written."""
    marker = f"{ROMAN[old]}级响应"
    head, sep, tail = incident.title.rpartition(marker)
    if sep and not head.endswith("I"):  # "II级响应" must not match as "I级响应"
        incident.title = f"{head}{ROMAN[new]}级响应{tail}"


def _check_geometry_in_unit(session: Session, geometry: BaseGeometry, unit: Unit) -> None:
    if geometry.is_empty or not geometry.is_valid:
        raise InvalidGeometry("the hazard geometry is empty or invalid")
    if unit.geom is not None and not unit.geom.intersects(geometry):
        raise InvalidGeometry(f"the hazard geometry lies outside unit {unit.code} ({unit.name})")


def activate(session: Session, actor: audit.Actor, scope: Scope, incident_id: int) -> Incident:
    """One-click confirmation of a proposed response."""
    incident = get_incident(session, scope, incident_id, for_change=True)
    if incident.status != "proposed":
        raise Conflict(f"incident {incident_id} is {incident.status}, only a proposed response can be activated")
    incident.status = "active"
    log_step(session, incident, actor.name, "incident.confirmed", "值班员确认启动响应")
    _activate(session, actor, incident)
    audit.record(session, actor, "incident.activate", "incident", str(incident.id), after={"status": "active"},
                 unit_path=incident.unit_path)
    return incident


def dismiss(session: Session, actor: audit.Actor, scope: Scope, incident_id: int, reason: str) -> Incident:
    incident = get_incident(session, scope, incident_id, for_change=True)
    if incident.status != "proposed":
        raise Conflict(f"incident {incident_id} is {incident.status}, only a proposed response can be dismissed")
    incident.status = "dismissed"
    incident.closed_at = utcnow()
    log_step(session, incident, actor.name, "incident.dismissed", f"不启动响应:{reason}")
    audit.record(session, actor, "incident.dismiss", "incident", str(incident.id), after={"reason": reason},
                 unit_path=incident.unit_path)
    return incident


def _activate(session: Session, actor: audit.Actor, incident: Incident) -> None:
    plan = catalogue().plan(incident.plan_key)
    incident.activated_at = utcnow()
    incident.case_ref = links.create_case(
        session, title=incident.title, description=f"{plan.name_zh} {ROMAN[incident.response_level]}级响应",
        unit_code=incident.unit_code, geometry=incident.hazard_geom, hazard_type=incident.hazard_type,
        event_class=plan.event_class, grade=incident.event_grade, drill=incident.drill, incident_id=incident.id, actor=actor,
        risk_point_code=incident.risk_point_code)
    if incident.case_ref:
        log_step(session, incident, actor.name, "case.linked", f"事件中心立案 {incident.case_ref}", {"case_ref": incident.case_ref})
    _instantiate(session, actor, incident, incident.response_level)
    zone = current_zone(session, incident.id)
    if zone is not None:  # drawn or computed while proposed: its households are locked now
        lock_households(session, actor, incident, zone.geom)
    else:
        _computed_zone(session, actor, incident)


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


def _instantiate(session: Session, actor: audit.Actor, incident: Incident, level: int) -> list[Task]:
    """Tasks of the plan's actions at ``level`` not instantiated yet (an upgrade adds only what is new)."""
    plan = catalogue().plan(incident.plan_key)
    spec = plan.levels[level]
    have = set(session.scalars(select(Task.action_key).where(Task.incident_id == incident.id, Task.action_key.is_not(None))))
    unit = _unit(session, incident.unit_code)
    now = utcnow()
    made = []
    for action in spec.actions:
        if action.key in have:
            continue
        target = _ancestor(session, unit, action.level if action.level != "grid" else "township")
        task = Task(incident_id=incident.id, title=action.title, goal=f"{plan.name_zh}:{action.title}",
                    deadline=now + timedelta(minutes=action.minutes), status="open", unit_code=target.code,
                    unit_path=target.path, level=target.level, assignee_role=action.role, attachments=[],
                    source_kind="plan", source_ref=f"incident:{incident.id}", action_key=action.key, drill=incident.drill,
                    created_by=actor.name, created_at=now)
        session.add(task)
        made.append(task)
    session.flush()
    if made:
        log_step(session, incident, actor.name, "plan.actions",
                 f"{ROMAN[level]}级响应措施下达 {len(made)} 项", {"tasks": [t.id for t in made], "actions": [t.action_key for t in made]})
    if spec.notify:
        log_step(session, incident, actor.name, "plan.notify", "通知:" + "、".join(spec.notify), {"notify": spec.notify})
    return made


def change_level(session: Session, actor: audit.Actor, scope: Scope, incident_id: int, level, reason: str) -> Incident:
    """Upgrade (more severe: adds the new level's actions) or lower the response."""
    incident = get_incident(session, scope, incident_id, for_change=True)
    new = parse_level(level)
    if new is None:
        raise InvalidInput("level must be 1–4 (I–IV); to end the response, stand down")
    if incident.status not in ("active", "proposed"):
        raise Conflict(f"incident {incident_id} is {incident.status}; its level can no longer change")
    old = incident.response_level
    if new == old:
        return incident
    incident.response_level = new
    _retitle(incident, old, new)
    kind = "incident.upgrade" if new < old else "incident.downgrade"
    log_step(session, incident, actor.name, kind, f"响应由{ROMAN[old]}级调整为{ROMAN[new]}级:{reason}", {"from": old, "to": new})
    if new < old and incident.status == "active":
        _instantiate(session, actor, incident, new)
    audit.record(session, actor, kind, "incident", str(incident.id), before={"level": old}, after={"level": new, "reason": reason},
                 unit_path=incident.unit_path)
    return incident


def on_warning(session: Session, *, risk_point_code: str, hazard_type: str, level, unit_code: str,
               geometry: BaseGeometry | None, evidence: dict | None, actor: audit.Actor | None = None,
               drill: bool = False, place_name: str | None = None) -> Incident | None:
    """What a warning level change does (see ``cityops.tasks.plans.on_warning_level``)."""
    actor = actor or audit.Actor("warning")
    cat = catalogue()
    plan = cat.plan_for(hazard_type)
    warning = parse_level(level)
    current = session.scalar(select(Incident).where(Incident.risk_point_code == risk_point_code, Incident.plan_key == plan.key,
                                                    Incident.status.in_(("proposed", "active")), Incident.drill.is_(drill)))
    if current is not None:
        if warning == current.warning_level:
            return current
        previous = current.warning_level
        current.warning_level = warning
        if warning is None or warning > plan.trigger_level:
            log_step(session, current, actor.name, "warning.lowered",
                     f"预警{'解除' if warning is None else '降为' + ROMAN[warning] + '级'},建议研判是否解除响应",
                     {"from": previous, "to": warning, "evidence": evidence or {}})
            return current
        if warning < current.response_level:
            change_level(session, actor, ALL, current.id, warning, "预警升级")
        else:
            log_step(session, current, actor.name, "warning.changed", f"预警调整为{ROMAN[warning]}级", {"to": warning})
        return current
    if warning is None or warning > plan.trigger_level or plan.activation == "manual":
        return None
    return open_incident(session, actor, ALL, hazard_type=hazard_type, level=warning, unit_code=unit_code,
                         geometry=geometry, risk_point_code=risk_point_code,
                         activation="auto" if plan.activation == "auto" else "proposed", drill=drill,
                         evidence=evidence, warning_level=warning, place_name=place_name)


# ------------------------------------------------------------------------------------------ risk zones

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


# ------------------------------------------------------------------------------------------ evacuation

def evacuation_dict(e: Evacuation, shelters: dict[int, str] | None = None) -> dict:
    states = catalogue().evacuation.states
    return {"id": e.id, "incident_id": e.incident_id, "household_code": e.household_code, "building_code": e.building_code,
            "members": e.members, "vulnerable": e.vulnerable, "lon": e.lon, "lat": e.lat, "grid_code": e.grid_code,
            "village_code": e.village_code, "township_code": e.township_code, "unit_path": e.unit_path,
            "assignee_person_id": e.assignee_person_id, "assignee_name": e.assignee_name, "assignee_post": e.assignee_post,
            "state": e.state, "state_zh": states[e.state].zh, "state_en": states[e.state].en, "shelter_id": e.shelter_id,
            "shelter_name": (shelters or {}).get(e.shelter_id), "in_zone": e.in_zone, "version": e.version,
            "drill": e.drill, "updated_at": e.updated_at.isoformat(), "updated_by": e.updated_by}


def _distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    # Haversine is exact enough to order a worker's households (metres apart, within one village).
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


def list_evacuations(session: Session, scope: Scope, incident_id: int, *, states: list[str] | None = None,
                     grid: str | None = None, near: tuple[float, float] | None = None, limit: int = 500,
                     offset: int = 0, personal: bool = False) -> dict:
    """Household tasks at the caller's scope; with ``near`` (lon, lat) nearest first (the phone page). Each
    item of the page names its household as people know it (head, address, phone; masked unless ``personal``
    and in scope, as the housing registry masks them)."""
    get_incident(session, scope, incident_id)
    known = catalogue().evacuation.states
    for s in states or []:
        if s not in known:
            raise InvalidInput(f"unknown evacuation state {s!r}", {"states": list(known)})
    stmt = select(Evacuation).where(Evacuation.incident_id == incident_id, Evacuation.in_zone.is_(True),
                                    scope.covers_clause(Evacuation.unit_path))
    if states:
        stmt = stmt.where(Evacuation.state.in_(states))
    if grid:
        stmt = stmt.where(Evacuation.grid_code == grid)
    rows = list(session.scalars(stmt.order_by(Evacuation.id)))
    shelters = dict(session.execute(select(Shelter.id, Shelter.name)).all()) if rows else {}
    items = [evacuation_dict(e, shelters) for e in rows]
    if near is not None:
        for item in items:
            item["distance_m"] = round(_distance_m(near[0], near[1], item["lon"], item["lat"]), 1)
        items.sort(key=lambda i: (i["distance_m"], i["id"]))
    page = items[offset : offset + limit]
    codes = [i["household_code"] for i in page]
    households = {}
    for n in range(0, len(codes), 500):
        households.update({h.code: h for h in session.scalars(select(Household).where(Household.code.in_(codes[n:n + 500])))})
    for item in page:
        h = households.get(item["household_code"])
        if h is not None:
            who = housing.mask_personal("household", {"head_name": h.head_name, "phone": h.phone},
                                        housing.sees_personal(scope, personal, h.unit_path))
            item.update(head_name=who["head_name"], phone=who["phone"], address=h.address, room=h.room)
    return {"total": len(items), "items": page}


def change_state(session: Session, actor: audit.Actor, scope: Scope, evacuation_id: int, *, state: str,
                 shelter_id: int | None = None, lon: float | None = None, lat: float | None = None,
                 note: str | None = None, expected_version: int | None = None, request_key: str | None = None) -> Evacuation:
    """Record a household's new state (with time and the worker's position). Idempotent under
    ``request_key``; refuses illegal transitions, a full shelter and a stale ``expected_version``.

    The same change sent many times at once (a phone retrying over a bad link) gets the same answer every time:
    a request that lost the race to the one that recorded its key (PostgreSQL: it read the household before the
    winner committed, and its guarded UPDATE then found the version moved on) answers with the recorded state
    instead of a conflict; whatever it had done is rolled back."""
    try:
        return _change_state(session, actor, scope, evacuation_id, state=state, shelter_id=shelter_id, lon=lon, lat=lat,
                             note=note, expected_version=expected_version, request_key=request_key)
    except Conflict:
        if not request_key:
            raise
        session.rollback()
        ev = session.get(Evacuation, evacuation_id)
        if ev is None or not _recorded(session, ev, request_key):
            raise
        return ev


def _recorded(session: Session, ev: Evacuation, request_key: str) -> bool:
    return session.scalar(select(EvacuationEvent.id).where(EvacuationEvent.evacuation_id == ev.id,
                                                           EvacuationEvent.request_key == request_key).limit(1)) is not None


def _change_state(session: Session, actor: audit.Actor, scope: Scope, evacuation_id: int, *, state: str,
                  shelter_id: int | None, lon: float | None, lat: float | None, note: str | None,
                  expected_version: int | None, request_key: str | None) -> Evacuation:
    ev = session.get(Evacuation, evacuation_id)
    if ev is None or not scope.covers(ev.unit_path):
        raise NotFound(f"household task {evacuation_id} not found")
    if request_key and _recorded(session, ev, request_key):
        session.refresh(ev)  # read before the change was committed (PostgreSQL)
        return ev  # a retry of a change already recorded
    cat = catalogue().evacuation
    if state not in cat.states:
        raise InvalidInput(f"unknown evacuation state {state!r}", {"states": list(cat.states)})
    if lon is not None or lat is not None:
        if lon is None or lat is None or not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise InvalidInput("position needs both lon (−180…180) and lat (−90…90)")
    # Only the status: the hot path needs no geometry decoded.
    incident_status = session.scalar(select(Incident.status).where(Incident.id == ev.incident_id))
    if not ev.in_zone:
        raise Conflict(f"household {ev.household_code} is no longer in the risk zone")
    if state == cat.return_state:
        if incident_status != "standing_down":
            raise Conflict("households return home only after the response is stood down (解除响应)")
    elif incident_status != "active":
        raise Conflict(f"incident {ev.incident_id} is {incident_status}; evacuation states can no longer change")
    if expected_version is not None and expected_version != ev.version:
        raise Conflict(f"household task {ev.id} changed meanwhile (version {ev.version}, you sent {expected_version}); reload it")
    if state == ev.state and (state != "in_shelter" or shelter_id == ev.shelter_id):
        return ev
    if state not in cat.states[ev.state].next:
        raise Conflict(f"illegal change of household {ev.household_code}: {cat.states[ev.state].zh}({ev.state}) → "
                       f"{cat.states[state].zh}({state}) is not allowed",
                       {"from": ev.state, "to": state, "allowed": cat.states[ev.state].next})
    if state == "in_shelter":
        if shelter_id is None:
            raise InvalidInput("state in_shelter needs shelter_id")
        shelter = session.get(Shelter, shelter_id)
        if shelter is None or not scope.sees(shelter.unit_path):
            raise NotFound(f"shelter {shelter_id} not found")
    elif shelter_id is not None:
        raise InvalidInput("shelter_id is only given with state in_shelter")
    previous, old_shelter, old_version = ev.state, ev.shelter_id, ev.version
    # Check in first, guarded in SQL, so two workers can never fill a shelter past capacity.
    if state == "in_shelter":
        taken = session.execute(update(Shelter).where(Shelter.id == shelter_id, Shelter.occupancy + ev.members <= Shelter.capacity)
                                .values(occupancy=Shelter.occupancy + ev.members)).rowcount
        if not taken:
            raise Conflict(f"shelter {shelter.name} is full: no room for {ev.members} more people")
    if old_shelter is not None:
        session.execute(update(Shelter).where(Shelter.id == old_shelter).values(occupancy=Shelter.occupancy - ev.members))
    now = utcnow()
    changed = session.execute(update(Evacuation).where(Evacuation.id == ev.id, Evacuation.version == old_version)
                              .values(state=state, shelter_id=shelter_id if state == "in_shelter" else None,
                                      version=Evacuation.version + 1, updated_at=now, updated_by=actor.name)).rowcount
    if not changed:
        raise Conflict(f"household task {ev.id} changed meanwhile; reload it")
    session.add(EvacuationEvent(evacuation_id=ev.id, incident_id=ev.incident_id, at=now, actor=actor.name, from_state=previous,
                                to_state=state, shelter_id=shelter_id, lon=lon, lat=lat, note=note, request_key=request_key))
    session.add(IncidentLog(incident_id=ev.incident_id, at=now, actor=actor.name, kind="evacuation.state",
                            message=f"{ev.household_code} {cat.states[previous].zh} → {cat.states[state].zh}",
                            data={"evacuation_id": ev.id, "household_code": ev.household_code, "from": previous, "to": state,
                                  "shelter_id": shelter_id, "lon": lon, "lat": lat, "members": ev.members,
                                  "village_code": ev.village_code, "grid_code": ev.grid_code}, unit_path=ev.unit_path))
    audit.record(session, actor, "evacuation.state", "evacuation", str(ev.id), before={"state": previous, "shelter_id": old_shelter},
                 after={"state": state, "shelter_id": shelter_id, "lon": lon, "lat": lat, "note": note}, unit_path=ev.unit_path)
    # The row as written (no read-back): the UPDATE above was guarded by the version we hold.
    for key, value in (("state", state), ("shelter_id", shelter_id if state == "in_shelter" else None), ("version", old_version + 1),
                       ("updated_at", now), ("updated_by", actor.name)):
        set_committed_value(ev, key, value)
    return ev


def history(session: Session, scope: Scope, evacuation_id: int) -> list[dict]:
    ev = session.get(Evacuation, evacuation_id)
    if ev is None or not scope.covers(ev.unit_path):
        raise NotFound(f"household task {evacuation_id} not found")
    return [{"at": e.at.isoformat(), "actor": e.actor, "from": e.from_state, "to": e.to_state, "shelter_id": e.shelter_id,
             "lon": e.lon, "lat": e.lat, "note": e.note}
            for e in session.scalars(select(EvacuationEvent).where(EvacuationEvent.evacuation_id == ev.id).order_by(EvacuationEvent.id))]


def _bucket() -> dict:
    states = catalogue().evacuation.states
    return {"households": 0, "people": 0, "vulnerable": 0, "safe_households": 0, "safe_people": 0, "remaining_households": 0,
            "remaining_people": 0, "by_state": dict.fromkeys(states, 0)}


def _finish(b: dict) -> dict:
    b["percent_safe"] = round(100.0 * b["safe_households"] / b["households"], 1) if b["households"] else 100.0
    # "Every household at home moved": nobody left to move or refusing; those not at home are reported apart.
    b["all_at_home_moved"] = b["remaining_households"] == 0
    return b


def totals(session: Session, scope: Scope, incident_id: int) -> dict:
    """Live totals at district, township, village and grid level, at the caller's scope. One grouped query,
    summed upward: the levels agree by construction."""
    incident = get_incident(session, scope, incident_id)
    cat = catalogue().evacuation
    safe = set(cat.safe_states())
    remaining = {cat.initial, "refused"}
    rows = session.execute(select(Evacuation.township_code, Evacuation.village_code, Evacuation.grid_code, Evacuation.state,
                                  func.count(Evacuation.id), func.coalesce(func.sum(Evacuation.members), 0),
                                  func.coalesce(func.sum(Evacuation.vulnerable), 0))
                           .where(Evacuation.incident_id == incident.id, Evacuation.in_zone.is_(True),
                                  scope.covers_clause(Evacuation.unit_path))
                           .group_by(Evacuation.township_code, Evacuation.village_code, Evacuation.grid_code, Evacuation.state)).all()
    district, townships, villages, grids = _bucket(), defaultdict(_bucket), defaultdict(_bucket), defaultdict(_bucket)
    for township, village, grid, state, n, people, vul in rows:
        for b in (district, townships[township], villages[village], grids[grid]):
            b["households"] += n
            b["people"] += int(people)
            b["vulnerable"] += int(vul)
            b["by_state"][state] += n
            if state in safe:
                b["safe_households"] += n
                b["safe_people"] += int(people)
            if state in remaining:
                b["remaining_households"] += n
                b["remaining_people"] += int(people)
    codes = set(townships) | set(villages) | set(grids)
    names = dict(session.execute(select(Unit.code, Unit.name).where(Unit.code.in_(codes))).all()) if codes else {}
    parent = {}
    for township, village, grid, *_ in rows:
        parent[village], parent[grid] = township, village
    shelters = session.execute(select(Shelter.id, Shelter.name, Shelter.capacity, Shelter.occupancy)
                               .where(scope.sees_clause(Shelter.unit_path)).order_by(Shelter.id)).all()
    return {"incident_id": incident.id, "status": incident.status, "at": utcnow().isoformat(),
            "district": _finish(district),
            "townships": [{"code": c, "name": names.get(c), **_finish(b)} for c, b in sorted(townships.items())],
            "villages": [{"code": c, "name": names.get(c), "township_code": parent.get(c), **_finish(b)} for c, b in sorted(villages.items())],
            "grids": [{"code": c, "name": names.get(c), "village_code": parent.get(c), **_finish(b)} for c, b in sorted(grids.items())],
            "shelters": [{"id": s.id, "name": s.name, "capacity": s.capacity, "occupancy": s.occupancy} for s in shelters]}


# ------------------------------------------------------------------------------------------- shelters

def shelter_dict(s: Shelter) -> dict:
    return {"id": s.id, "code": s.code, "name": s.name, "capacity": s.capacity, "occupancy": s.occupancy,
            "free": s.capacity - s.occupancy, "lon": s.geom.x, "lat": s.geom.y, "unit_code": s.unit_code,
            "unit_path": s.unit_path, "attributes": s.attributes}


def list_shelters(session: Session, scope: Scope, near: tuple[float, float] | None = None,
                  incident_id: int | None = None) -> list[dict]:
    """Shelters in sight; nearest first from a point (``near``) or from an incident's risk zone (its edge; 0
    inside), as the command view lists them."""
    items = [shelter_dict(s) for s in session.scalars(select(Shelter).where(scope.sees_clause(Shelter.unit_path)).order_by(Shelter.id))]
    zone = None
    if incident_id is not None:
        incident = get_incident(session, scope, incident_id)
        found = current_zone(session, incident.id)
        zone = found.geom if found is not None else incident.hazard_geom
        if zone is None:
            raise Conflict(f"incident {incident_id} has no risk zone yet")
    if near or zone is not None:
        for i in items:
            if zone is not None:
                # The zone's nearest point in degrees, then the true distance: exact enough to order shelters.
                edge = shapely.ops.nearest_points(zone, shapely.Point(i["lon"], i["lat"]))[0]
                i["distance_m"] = round(_distance_m(edge.x, edge.y, i["lon"], i["lat"]), 1)
            else:
                i["distance_m"] = round(_distance_m(near[0], near[1], i["lon"], i["lat"]), 1)
        items.sort(key=lambda i: (i["distance_m"], i["id"]))
    return items


def create_shelter(session: Session, actor: audit.Actor, scope: Scope, *, code: str, name: str, capacity: int,
                   lon: float, lat: float, unit_code: str | None = None, attributes: dict | None = None) -> Shelter:
    from shapely.geometry import Point

    if capacity < 1 or capacity > 100_000:
        raise InvalidInput(f"capacity {capacity} is out of range 1…100000")
    point = Point(lon, lat)
    if unit_code is None:
        raise InvalidInput("unit_code is required")
    unit = _unit(session, unit_code)
    scope.require_covers(unit.path, f"unit {unit_code}")
    if unit.geom is not None and not unit.geom.intersects(point):
        raise InvalidGeometry(f"the shelter position lies outside unit {unit.code} ({unit.name})")
    if session.scalar(select(Shelter.id).where(Shelter.code == code)) is not None:
        raise Conflict(f"shelter {code!r} already exists")
    shelter = Shelter(code=code, name=name, capacity=capacity, occupancy=0, geom=point, unit_code=unit.code,
                      unit_path=unit.path, attributes=attributes or {})
    session.add(shelter)
    session.flush()
    audit.record(session, actor, "shelter.create", "shelter", code, after=shelter_dict(shelter), unit_path=unit.path)
    return shelter


# ------------------------------------------------------------------------------------ stand down, close

def stand_down(session: Session, actor: audit.Actor, scope: Scope, incident_id: int, reason: str) -> Incident:
    incident = get_incident(session, scope, incident_id, for_change=True)
    if incident.status != "active":
        raise Conflict(f"incident {incident_id} is {incident.status}; only an active response can be stood down")
    incident.status = "standing_down"
    incident.stood_down_at = utcnow()
    session.execute(update(Task).where(Task.incident_id == incident.id, Task.status == "open", Task.action_key == "evacuate")
                    .values(status="done", completed_at=utcnow()))
    log_step(session, incident, actor.name, "incident.stand_down", f"解除响应,群众可有序返家:{reason}")
    audit.record(session, actor, "incident.stand_down", "incident", str(incident.id), after={"reason": reason},
                 unit_path=incident.unit_path)
    return incident


def figures(session: Session, incident: Incident) -> dict:
    t = totals(session, ALL, incident.id)["district"]
    zone = current_zone(session, incident.id)
    return {"households": t["households"], "people": t["people"], "vulnerable": t["vulnerable"],
            "safe_households": t["safe_households"], "safe_people": t["safe_people"],
            "remaining_households": t["remaining_households"], "by_state": t["by_state"],
            "zone_versions": zone.version if zone else 0, "event_grade": incident.event_grade}


def close(session: Session, actor: audit.Actor, scope: Scope, incident_id: int, note: str) -> Incident:
    """Close the incident: the closing note carries the figures, and the case is closed in the event center."""
    incident = get_incident(session, scope, incident_id, for_change=True)
    if incident.status != "standing_down":
        raise Conflict(f"incident {incident_id} is {incident.status}; stand the response down before closing it")
    f = figures(session, incident)
    states = catalogue().evacuation.states
    by_state = ",".join(f"{states[k].zh} {v} 户" for k, v in f["by_state"].items() if v)
    grade = f" 事件等级 {ROMAN[f['event_grade']]} 级;" if f["event_grade"] else ""
    incident.closing_note = (f"{note.strip()}\n受威胁 {f['households']} 户 {f['people']} 人(重点人员 {f['vulnerable']} 人);"
                             f"安全转移 {f['safe_households']} 户 {f['safe_people']} 人;{by_state};{grade}"
                             f"风险区 {f['zone_versions']} 版。")
    incident.status = "closed"
    incident.closed_at = utcnow()
    session.execute(update(Task).where(Task.incident_id == incident.id, Task.status == "open").values(status="done", completed_at=utcnow()))
    closed = links.close_case(session, incident.case_ref, incident.closing_note, actor)
    log_step(session, incident, actor.name, "incident.closed", "响应结束,事件关闭" + ("(事件中心已结案)" if closed else ""),
             {"figures": f, "case_closed": closed})
    audit.record(session, actor, "incident.close", "incident", str(incident.id), after={"note": incident.closing_note, "figures": f},
                 unit_path=incident.unit_path)
    return incident


def remove_drill(session: Session, actor: audit.Actor, scope: Scope, incident_id: int) -> dict:
    """Remove a drill and everything it made (tasks, zones, household tasks, log); shelters give back the
    places it took. A real incident is never removed."""
    incident = get_incident(session, scope, incident_id, for_change=True)
    if not incident.drill:
        raise Conflict(f"incident {incident_id} is real, not a drill; real incidents are closed, never removed")
    occupied = session.execute(select(Evacuation.shelter_id, func.sum(Evacuation.members))
                               .where(Evacuation.incident_id == incident.id, Evacuation.shelter_id.is_not(None))
                               .group_by(Evacuation.shelter_id)).all()
    for shelter_id, people in occupied:
        session.execute(update(Shelter).where(Shelter.id == shelter_id).values(occupancy=Shelter.occupancy - int(people)))
    counts = {}
    for model in (EvacuationEvent, Evacuation, RiskZone, IncidentLog):
        counts[model.__tablename__] = session.execute(delete(model).where(model.incident_id == incident.id)).rowcount
    # Children before parents: the task tree is deleted deepest first.
    ids = list(session.scalars(select(Task.id).where(Task.incident_id == incident.id).order_by(Task.id.desc())))
    if ids:
        session.execute(update(Task).where(Task.id.in_(ids)).values(parent_id=None))
        counts["tasks"] = session.execute(delete(Task).where(Task.id.in_(ids))).rowcount
    snapshot = incident_dict(incident)
    session.delete(incident)
    session.flush()
    audit.record(session, actor, "incident.remove_drill", "incident", str(incident_id), before=snapshot, after=counts,
                 unit_path=snapshot["unit_path"])
    return counts


def statistics(session: Session, scope: Scope, *, include_drills: bool = False) -> dict:
    """Real statistics: incidents by status and households/people moved. Drills are left out unless asked."""
    inc = select(Incident.status, func.count(Incident.id)).where(scope.sees_clause(Incident.unit_path))
    ev = select(Evacuation.state, func.count(Evacuation.id), func.coalesce(func.sum(Evacuation.members), 0)).where(
        scope.covers_clause(Evacuation.unit_path), Evacuation.in_zone.is_(True))
    if not include_drills:
        inc = inc.where(Incident.drill.is_(False))
        ev = ev.where(Evacuation.drill.is_(False))
    safe = set(catalogue().evacuation.safe_states())
    by_state = {s: {"households": n, "people": int(p)} for s, n, p in session.execute(ev.group_by(Evacuation.state))}
    return {"incidents": dict(session.execute(inc.group_by(Incident.status)).all()),
            "households": sum(v["households"] for v in by_state.values()),
            "safe_households": sum(v["households"] for s, v in by_state.items() if s in safe),
            "safe_people": sum(v["people"] for s, v in by_state.items() if s in safe),
            "by_state": by_state, "drills_included": include_drills}


def timeline(session: Session, scope: Scope, incident_id: int, *, after: int = 0, decisions_only: bool = False,
             limit: int = 1000) -> list[dict]:
    incident = get_incident(session, scope, incident_id)
    stmt = select(IncidentLog).where(IncidentLog.incident_id == incident.id, IncidentLog.id > after).order_by(IncidentLog.id)
    if decisions_only:
        stmt = stmt.where(IncidentLog.kind.not_in(HOUSEHOLD_KINDS))
    out = []
    for e in session.scalars(stmt.limit(limit * 4)):
        if scope.sees(e.unit_path):
            out.append(log_dict(e))
            if len(out) >= limit:
                break
    names = identity.display_names(session, {e["actor"] for e in out})
    for e in out:
        e["actor_name"] = names.get(e["actor"])
    return out


def log_dict(e: IncidentLog) -> dict:
    return {"id": e.id, "incident_id": e.incident_id, "at": e.at.isoformat(), "actor": e.actor, "kind": e.kind,
            "message": e.message, "data": e.data, "unit_path": e.unit_path}


# ---------------------------------------------------------------------------------------------- tasks

def task_dict(t: Task) -> dict:
    now = utcnow()
    return {"id": t.id, "parent_id": t.parent_id, "incident_id": t.incident_id, "title": t.title, "goal": t.goal,
            "deadline": t.deadline.isoformat() if t.deadline else None, "status": t.status, "unit_code": t.unit_code,
            "unit_path": t.unit_path, "level": t.level, "assignee_role": t.assignee_role,
            "assignee_person_id": t.assignee_person_id, "assignee_name": t.assignee_name, "attachments": t.attachments,
            "source_kind": t.source_kind, "source_ref": t.source_ref,
            "source_link": links.case_link(t.source_ref) if t.source_kind == "case" else None,
            "action_key": t.action_key, "drill": t.drill, "progress_note": t.progress_note, "created_by": t.created_by,
            "created_at": t.created_at.isoformat(), "completed_at": t.completed_at.isoformat() if t.completed_at else None,
            "overdue": t.status == "open" and t.deadline is not None and t.deadline < now,
            "reminded_at": t.reminded_at.isoformat() if t.reminded_at else None,
            "escalated_at": t.escalated_at.isoformat() if t.escalated_at else None}


def _check_attachments(attachments: list) -> list[dict]:
    out = []
    for i, a in enumerate(attachments or []):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not isinstance(a.get("url"), str) or not a["name"]:
            raise InvalidInput(f"attachment {i} needs a name and a url")
        if not (a["url"].startswith(("http://", "https://", "/"))):
            raise InvalidInput(f"attachment {a['name']!r}: url must be http(s) or a path on this server")
        out.append({"name": a["name"][:200], "url": a["url"][:2000]})
    return out


def _person_in(session: Session, person_id: int, unit: Unit) -> Person:
    person = session.get(Person, person_id)
    if person is None or not (person.unit_path.startswith(unit.path) or any(u.path.startswith(unit.path) for u in person.units)):
        raise InvalidInput(f"person {person_id} does not work in {unit.name} ({unit.code})")
    return person


def publish_task(session: Session, actor: audit.Actor, scope: Scope, *, title: str, goal: str | None, deadline: datetime | None,
                 unit_code: str, target_units: list[str] | None = None, attachments: list | None = None,
                 assignee_person_id: int | None = None, source_kind: str | None = None, source_ref: str | None = None,
                 drill: bool = False, parent: Task | None = None) -> Task:
    """Publish a task owned by ``unit_code``; one sub-task per target unit (the next level down)."""
    if not title or not title.strip():
        raise InvalidInput("a task needs a title")
    now = utcnow()
    if deadline is not None:
        if deadline.tzinfo is None:
            raise InvalidInput("deadline needs a time zone (e.g. 2026-07-23T18:00:00+08:00)")
        if deadline <= now and parent is None:
            raise InvalidInput("the deadline is in the past")
        if parent is not None and parent.deadline is not None and deadline > parent.deadline:
            raise InvalidInput(f"a sub-task's deadline cannot be later than its parent's ({parent.deadline.isoformat()})")
    if source_kind not in (None, "case", "alarm", "plan"):
        raise InvalidInput(f"source_kind {source_kind!r} is not case, alarm or plan")
    if (source_kind is None) != (source_ref is None):
        raise InvalidInput("source_kind and source_ref go together")
    unit = _unit(session, unit_code)
    scope.require_covers(unit.path, f"unit {unit_code}")
    if parent is not None:
        if not unit.path.startswith(parent.unit_path) or (unit.path == parent.unit_path and assignee_person_id is None):
            raise InvalidInput(f"a sub-task goes to a unit below {parent.unit_code} (or to a person of it)")
    person = _person_in(session, assignee_person_id, unit) if assignee_person_id is not None else None
    task = Task(parent_id=parent.id if parent else None, incident_id=parent.incident_id if parent else None, title=title.strip(),
                goal=goal, deadline=deadline if deadline is not None else (parent.deadline if parent else None), status="open",
                unit_code=unit.code, unit_path=unit.path, level=unit.level, assignee_person_id=person.id if person else None,
                assignee_name=person.name if person else None, attachments=_check_attachments(attachments or []),
                source_kind=source_kind if parent is None else parent.source_kind,
                source_ref=source_ref if parent is None else parent.source_ref,
                drill=drill if parent is None else parent.drill, created_by=actor.name, created_at=now)
    session.add(task)
    session.flush()
    audit.record(session, actor, "task.publish", "task", str(task.id), after=task_dict(task), unit_path=unit.path)
    for code in target_units or []:
        publish_task(session, actor, scope, title=title, goal=goal, deadline=task.deadline, unit_code=code, parent=task)
    return task


def get_task(session: Session, scope: Scope, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None or not (scope.covers(task.unit_path) or _sees_as_ancestor(session, scope, task)):
        raise NotFound(f"task {task_id} not found")
    return task


def _sees_as_ancestor(session: Session, scope: Scope, task: Task) -> bool:
    """A unit sees a task above it when some descendant of that task lies in its scope (its own part of it)."""
    if not scope.sees(task.unit_path):
        return False
    return any(scope.covers(t.unit_path) for t in _descendants(session, task))


def _descendants(session: Session, task: Task) -> list[Task]:
    out, frontier = [], [task.id]
    while frontier:
        children = list(session.scalars(select(Task).where(Task.parent_id.in_(frontier))))
        out.extend(children)
        frontier = [c.id for c in children]
    return out


def decompose(session: Session, actor: audit.Actor, scope: Scope, task_id: int, items: list[dict]) -> list[Task]:
    """The level owning ``task_id`` splits it: sub-tasks for its sub-units or its own people."""
    parent = get_task(session, scope, task_id)
    scope.require_covers(parent.unit_path, f"task {task_id}")
    if parent.status != "open":
        raise Conflict(f"task {task_id} is {parent.status}; it can no longer be split")
    if not items:
        raise InvalidInput("no sub-tasks given")
    made = []
    for item in items:
        made.append(publish_task(session, actor, scope, title=item.get("title") or parent.title, goal=item.get("goal") or parent.goal,
                                 deadline=item.get("deadline"), unit_code=item["unit_code"], attachments=item.get("attachments"),
                                 assignee_person_id=item.get("assignee_person_id"), parent=parent))
    return made


def report_progress(session: Session, actor: audit.Actor, scope: Scope, task_id: int, *, status: str, note: str | None) -> Task:
    task = get_task(session, scope, task_id)
    scope.require_covers(task.unit_path, f"task {task_id}")
    if status not in ("open", "done", "cancelled"):
        raise InvalidInput(f"status {status!r} is not open, done or cancelled")
    if task.status != "open" and status != "open":
        raise Conflict(f"task {task_id} is already {task.status}")
    if status == "done":
        children = session.scalar(select(func.count(Task.id)).where(Task.parent_id == task.id, Task.status == "open"))
        if children:
            raise Conflict(f"task {task_id} still has {children} open sub-task(s); their progress rolls up to it")
    before = task_dict(task)
    task.status = status
    task.progress_note = note
    task.completed_at = utcnow() if status == "done" else None
    # A parent whose sub-tasks are all done is done too (reported upward).
    parent_id = task.parent_id
    session.flush()
    while parent_id is not None and status == "done":
        parent = session.get(Task, parent_id)
        if session.scalar(select(func.count(Task.id)).where(Task.parent_id == parent.id, Task.status == "open")):
            break
        if parent.status == "open":
            parent.status, parent.completed_at = "done", utcnow()
        parent_id = parent.parent_id
    audit.record(session, actor, "task.progress", "task", str(task.id), before=before, after=task_dict(task), unit_path=task.unit_path)
    if task.incident_id:
        incident = session.get(Incident, task.incident_id)
        log_step(session, incident, actor.name, "task.progress", f"任务「{task.title}」{ {'done': '完成', 'open': '重开', 'cancelled': '取消'}[status] }"
                 + (f":{note}" if note else ""), {"task_id": task.id, "status": status}, unit_path=task.unit_path)
    return task


def progress(session: Session, scope: Scope, task: Task) -> dict:
    """Rolled-up progress of a task: its leaf sub-tasks (in the caller's scope) done, %, overdue; an evacuation
    action counts its households instead."""
    now = utcnow()
    if task.action_key == "evacuate" and task.incident_id:
        t = totals(session, scope, task.incident_id)["district"]
        return {"total": t["households"], "done": t["safe_households"], "percent": t["percent_safe"], "overdue":
                t["remaining_households"] if task.deadline and task.deadline < now else 0, "unit": "households"}
    nodes = [task, *_descendants(session, task)]
    parents = {n.parent_id for n in nodes}
    leaves = [n for n in nodes if n.id not in parents and scope.covers(n.unit_path) and n.status != "cancelled"]
    done = sum(1 for n in leaves if n.status == "done")
    overdue = sum(1 for n in leaves if n.status == "open" and n.deadline is not None and n.deadline < now)
    return {"total": len(leaves), "done": done, "percent": round(100.0 * done / len(leaves), 1) if leaves else 0.0,
            "overdue": overdue, "unit": "tasks"}


def task_tree(session: Session, scope: Scope, task_id: int) -> dict:
    task = get_task(session, scope, task_id)
    data = task_dict(task)
    data["unit_name"] = org.names_of(session, [task.unit_code])[0].get(task.unit_code)
    data["progress"] = progress(session, scope, task)
    data["children"] = []
    for child in session.scalars(select(Task).where(Task.parent_id == task.id).order_by(Task.id)):
        if scope.covers(child.unit_path) or _sees_as_ancestor(session, scope, child):
            data["children"].append(task_tree(session, scope, child.id))
    return data


def list_tasks(session: Session, scope: Scope, *, incident_id: int | None = None, status: str | None = None,
               overdue: bool = False, source_ref: str | None = None, include_drills: bool = True, limit: int = 200) -> list[dict]:
    stmt = select(Task).where(scope.covers_clause(Task.unit_path))
    if incident_id is not None:
        stmt = stmt.where(Task.incident_id == incident_id)
    if status:
        stmt = stmt.where(Task.status == status)
    if overdue:
        stmt = stmt.where(Task.status == "open", Task.deadline < utcnow())
    if source_ref:
        stmt = stmt.where(Task.source_ref == source_ref)
    if not include_drills:
        stmt = stmt.where(Task.drill.is_(False))
    out = []
    for t in session.scalars(stmt.order_by(Task.id).limit(limit)):
        d = task_dict(t)
        d["progress"] = progress(session, scope, t)
        out.append(d)
    units, _ = org.names_of(session, [d["unit_code"] for d in out])
    for d in out:
        d["unit_name"] = units.get(d["unit_code"])
    return out


def check_overdue(session: Session, actor: audit.Actor, scope: Scope, *, now: datetime | None = None,
                  escalate_after: timedelta = timedelta(minutes=30)) -> dict:
    """Remind the assignees of overdue open tasks (once), and escalate to the level above those still open
    ``escalate_after`` past the deadline (once). Returns what was done."""
    now = now or utcnow()
    reminded, escalated = [], []
    stmt = select(Task).where(Task.status == "open", Task.deadline < now, scope.covers_clause(Task.unit_path)).order_by(Task.id)
    for task in session.scalars(stmt):
        if task.reminded_at is None:
            task.reminded_at = now
            reminded.append(task.id)
            audit.record(session, actor, "task.remind", "task", str(task.id), after={"deadline": task.deadline.isoformat()},
                         unit_path=task.unit_path)
            if task.incident_id:
                log_step(session, session.get(Incident, task.incident_id), actor.name, "task.reminder",
                         f"催办:任务「{task.title}」已超期", {"task_id": task.id}, unit_path=task.unit_path)
        if task.escalated_at is None and now - task.deadline >= escalate_after:
            task.escalated_at = now
            unit = session.scalar(select(Unit).where(Unit.code == task.unit_code))
            above = unit.parent_code if unit is not None else None
            escalated.append({"task_id": task.id, "to_unit": above})
            audit.record(session, actor, "task.escalate", "task", str(task.id), after={"to_unit": above}, unit_path=task.unit_path)
            if task.incident_id:
                log_step(session, session.get(Incident, task.incident_id), actor.name, "task.escalated",
                         f"督办:任务「{task.title}」超期未完成,已报上级", {"task_id": task.id, "to_unit": above},
                         unit_path=task.unit_path)
    return {"reminded": reminded, "escalated": escalated, "at": now.isoformat()}


"""The emergency response (预案响应): an incident opened, activated from its plan (tasks instantiated, risk zone computed,
households locked), raised or lowered in level, stood down, closed, or removed when a drill; ``on_warning`` is the
response to a warning level."""

from __future__ import annotations

from datetime import timedelta

from shapely.geometry.base import BaseGeometry
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import publish
from cityops.core.errors import Conflict, InvalidInput
from cityops.core.types import utcnow
from cityops.identity.scope import Scope
from cityops.tasks.catalogue import ROMAN, catalogue, parse_level
from cityops.tasks.manifest import IncidentActivated, IncidentClosed, PlanActivated
from cityops.tasks.evacuation import totals
from cityops.tasks.incidents import ALL, _ancestor, _unit, get_incident, incident_dict, log_step
from cityops.tasks.models import Evacuation, EvacuationEvent, Incident, IncidentLog, RiskZone, Shelter, Task
from cityops.tasks.zones import _check_geometry_in_unit, _computed_zone, current_zone, lock_households


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
    # The consumer of incident.activated has the event center open the incident's case (or join the danger's open one).
    geometry = incident.hazard_geom
    point = geometry.representative_point() if geometry is not None and not geometry.is_empty else None
    publish(session, IncidentActivated(
        incident_id=incident.id, title=incident.title, description=f"{plan.name_zh} {ROMAN[incident.response_level]}级响应",
        unit_code=incident.unit_code, unit_path=incident.unit_path, hazard_type=incident.hazard_type,
        event_class=plan.event_class, event_grade=incident.event_grade, risk_point_code=incident.risk_point_code,
        lon=point.x if point else None, lat=point.y if point else None, drill=bool(incident.drill), actor=actor.name))
    _instantiate(session, actor, incident, incident.response_level)
    zone = current_zone(session, incident.id)
    if zone is not None:  # drawn or computed while proposed: its households are locked now
        lock_households(session, actor, incident, zone.geom)
    else:
        _computed_zone(session, actor, incident)


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
    if spec.notify or made:  # the notification list and the new tasks' assignees are told (notifications)
        publish(session, PlanActivated(
            incident_id=incident.id, title=incident.title, plan_key=plan.key, plan_name=plan.name_zh, response_level=level,
            unit_code=incident.unit_code, unit_path=incident.unit_path, risk_point_code=incident.risk_point_code,
            notify=list(spec.notify), drill=bool(incident.drill),
            tasks=[{"id": t.id, "title": t.title, "role": t.assignee_role, "unit_code": t.unit_code,
                    "deadline": t.deadline.isoformat()} for t in made]))
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
    # The event center closes the incident's case with the closing note.
    publish(session, IncidentClosed(incident_id=incident.id, case_ref=incident.case_ref,
                                    risk_point_code=incident.risk_point_code, closing_note=incident.closing_note,
                                    unit_path=incident.unit_path, drill=bool(incident.drill), actor=actor.name))
    log_step(session, incident, actor.name, "incident.closed", "响应结束,事件关闭", {"figures": f})
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

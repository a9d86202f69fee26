"""Incidents of the task center (应急事件): reading them within a scope, their log (timeline and stream), statistics.

Functions of the task center's modules take the principal's ``Scope``: reads return only what it sees, writes refuse
what it does not cover, and every write records an audit entry in the same transaction. No HTTP here."""

from __future__ import annotations

from shapely.geometry import mapping
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.core.errors import Forbidden, InvalidInput, NotFound
from cityops.core.types import utcnow
from cityops.identity import service as identity
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.tasks import links
from cityops.tasks.catalogue import ROMAN, catalogue
from cityops.tasks.models import Evacuation, Incident, IncidentLog


ALL = Scope(all_units=True)


_CHUNK = 5000

#: Log kinds that are per-household (the stream carries them; the decision timeline leaves them out).
HOUSEHOLD_KINDS = ("evacuation.state",)


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

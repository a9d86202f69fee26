"""Reading cases: queues and lists within a scope, the views the API answers with, duplicates nearby, the outbox feed."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session

from cityops.core.errors import InvalidInput, NotFound
from cityops.events import catalogue
from cityops.events.models import Attachment, Case, Outbox, Transition
from cityops.events.routing import utcnow
from cityops.events.sla import sla_status
from cityops.events.workflow import ACTIONS, CLOCK_RUNNING, STATES, allowed_actions
from cityops.identity import service as identity
from cityops.identity.scope import Scope
from cityops.org import service as org_service
from cityops.org.models import Unit


def duplicate_candidates(session: Session, scope: Scope, case: Case, *, distance_m: float | None = None,
                         window_hours: float | None = None) -> list[tuple[Case, float]]:
    """Open cases of the same class within ``distance_m`` and ``window_hours`` of ``case`` (nearest first)."""
    settings = catalogue.settings()
    distance_m = distance_m or settings.duplicate_distance_m
    window = timedelta(hours=window_hours or settings.duplicate_window_hours)
    dlat = distance_m / 111_320.0
    dlon = distance_m / (111_320.0 * max(math.cos(math.radians(case.lat)), 0.01))
    stmt = (select(Case).where(Case.id != case.id, Case.class_code == case.class_code, Case.kind == case.kind,
                               Case.state.not_in(("void", "closed")), Case.merged_into.is_(None),
                               Case.lon.between(case.lon - dlon, case.lon + dlon), Case.lat.between(case.lat - dlat, case.lat + dlat),
                               Case.reported_at.between(case.reported_at - window, case.reported_at + window),
                               scope.covers_clause(Case.unit_path)))
    found = session.scalars(stmt).all()
    if not found:
        return []
    from pyproj import Geod

    _, _, dist = Geod(ellps="GRS80").inv([case.lon] * len(found), [case.lat] * len(found),
                                         [c.lon for c in found], [c.lat for c in found])
    pairs = [(c, float(d)) for c, d in zip(found, np.atleast_1d(dist), strict=True) if d <= distance_m]
    return sorted(pairs, key=lambda p: p[1])


QUEUES = {
    "to_accept": ("reported",), "to_file": ("accepted",), "to_dispatch": ("filed", "returned"),
    "to_handle": ("dispatched", "in_handling", "rework"), "to_approve": ("extension_requested",),
    "to_verify": ("handled",), "backlog": ("backlogged",), "closed": ("closed",), "void": ("void",),
}


def scope_clause(scope: Scope):
    """SQL filter: the cases ``scope`` sees (its subtrees; department staff only their departments' cases)."""
    clause = scope.covers_clause(Case.unit_path)
    if scope.department_codes and not scope.all_units:
        clause = clause & Case.department_code.in_(scope.department_codes)
    return clause


def public_clause():
    """SQL filter: the cases published to everyone — reported through a public citizen channel
    (events.toml ``[open311] public_sources``) and of a class marked public in the taxonomy."""
    classes = [(c.kind, c.code) for c in catalogue.taxonomy().classes.values() if c.public]
    if not classes:
        return false()
    return Case.source.in_(catalogue.settings().open311_public_sources) & or_(
        *[(Case.kind == kind) & (Case.class_code == code) for kind, code in classes])


def list_cases(session: Session, scope: Scope, *, queue: str | None = None, state: str | None = None,
               class_code: str | None = None, root: str | None = None, department: str | None = None,
               q: str | None = None, overdue: bool | None = None, source: str | None = None,
               limit: int = 100, offset: int = 0) -> tuple[list[Case], int]:
    stmt = select(Case).where(scope_clause(scope))
    if queue:
        if queue not in QUEUES:
            raise InvalidInput(f"unknown queue {queue!r}; queues: {', '.join(QUEUES)}", {"field": "queue"})
        stmt = stmt.where(Case.state.in_(QUEUES[queue]))
    if state:
        states = state.split(",")
        unknown = [s for s in states if s not in STATES]
        if unknown:
            raise InvalidInput(f"unknown state(s) {unknown}", {"field": "state"})
        stmt = stmt.where(Case.state.in_(states))
    if class_code:
        stmt = stmt.where(Case.class_code == catalogue.taxonomy().resolve(class_code).code)
    if source:
        stmt = stmt.where(Case.source == source)
    if root:
        unit = session.scalar(select(Unit).where(Unit.code == root))
        if unit is None or not scope.covers(unit.path):
            raise NotFound(f"no unit {root!r} in your scope")
        stmt = stmt.where(Case.unit_path.startswith(unit.path, autoescape=True))
    if department:
        stmt = stmt.where(Case.department_code == department)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(or_(Case.title.like(like), Case.number.like(like), Case.description.like(like),
                              Case.address.like(like)))
    if overdue is not None:
        now = utcnow()
        cond = (Case.deadline_at <= now) & Case.state.in_(CLOCK_RUNNING)
        stmt = stmt.where(cond if overdue else ~cond)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = session.scalars(stmt.order_by(Case.reported_at.desc(), Case.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), int(total or 0)


def _iso(v):
    return v.isoformat() if v else None


def case_dict(case: Case, now: datetime | None = None) -> dict:
    cls = catalogue.taxonomy().classes.get((case.kind, case.class_code))
    return {"id": case.id, "number": case.number, "source": case.source, "kind": case.kind, "class_code": case.class_code,
            "class_name": cls.name if cls else None, "title": case.title, "description": case.description,
            "urgency": case.urgency, "state": case.state, "state_name": STATES[case.state][0], "lon": case.lon,
            "lat": case.lat, "address": case.address, "grid_code": case.grid_code, "township_code": case.township_code,
            "unit_path": case.unit_path, "department_code": case.department_code,
            "assigned_unit_code": case.assigned_unit_code, "route": case.route, "reported_by": case.reported_by,
            "reported_at": _iso(case.reported_at), "filed_at": _iso(case.filed_at), "dispatched_at": _iso(case.dispatched_at),
            "handled_at": _iso(case.handled_at), "closed_at": _iso(case.closed_at), "deadline_at": _iso(case.deadline_at),
            "sla": sla_status(case, now), "returned_count": case.returned_count, "rework_count": case.rework_count,
            "extension_count": case.extension_count, "supervision_count": case.supervision_count,
            "escalation_level": case.escalation_level, "escalated_to": case.escalated_to,
            "merged_into": case.merged_into, "rating": case.rating, "attributes": case.attributes}


def with_names(session: Session, items: list[dict]) -> list[dict]:
    """Cases as people read them: the grid, the department and the handling unit by name (``*_name``)."""
    units, depts = org_service.names_of(session, [c for i in items for c in (i.get("grid_code"), i.get("assigned_unit_code"))],
                                        [i.get("department_code") for i in items])
    for i in items:
        i.update(grid_name=units.get(i.get("grid_code")), department_name=depts.get(i.get("department_code")),
                 assigned_unit_name=units.get(i.get("assigned_unit_code")))
    return items


def case_detail(session: Session, case: Case, may=None) -> dict:
    data = with_names(session, [case_dict(case)])[0]
    log = session.scalars(select(Transition).where(Transition.case_id == case.id).order_by(Transition.seq)).all()
    names = identity.display_names(session, [t.actor for t in log] + [case.reported_by])
    data["reported_by_name"] = names.get(case.reported_by)
    data["history"] = [{"seq": t.seq, "action": t.action, "action_name": ACTIONS[t.action].zh if t.action in ACTIONS else "上报",
                        "from": t.from_state, "to": t.to_state, "at": t.at.isoformat(), "actor": t.actor,
                        "actor_name": names.get(t.actor), "note": t.note,
                        "data": t.data, "lon": t.lon, "lat": t.lat} for t in log]
    data["attachments"] = [{"id": a.id, "filename": a.filename, "content_type": a.content_type, "size": a.size,
                            "seq": a.transition_seq, "url": f"/api/events/cases/{case.number}/attachments/{a.id}"}
                           for a in session.scalars(select(Attachment).where(Attachment.case_id == case.id).order_by(Attachment.id))]
    data["children"] = [c for c in session.scalars(select(Case.number).where(Case.merged_into == case.id))]
    data["allowed_actions"] = allowed_actions(log[-1].to_state, may or (lambda p: True)) if log else []
    return data


def outbox_since(session: Session, scope: Scope, after_id: int, limit: int = 200) -> list[Outbox]:
    return list(session.scalars(select(Outbox).where(Outbox.id > after_id, scope.covers_clause(Outbox.unit_path))
                                .order_by(Outbox.id).limit(limit)))

"""Platform metrics of the task center (for the indicators capability): households threatened and moved (state as
of a time, from the evacuation log), shelter occupancy, active incidents and overdue tasks. Drills never count."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from cityops.core.metrics import Metric, Param, Window, per_param_set
from cityops.tasks.catalogue import catalogue
from cityops.tasks.models import Evacuation, EvacuationEvent, Incident, Shelter, Task


def _evacuations(session: Session, window: Window, param_sets: list[dict]):
    """Households (or people) locked into an evacuation by the window's end, by their state then."""
    end = window.end
    last = (select(EvacuationEvent.evacuation_id, func.max(EvacuationEvent.id).label("eid"))
            .where(EvacuationEvent.at < end).group_by(EvacuationEvent.evacuation_id).subquery())
    event = aliased(EvacuationEvent)
    state_at = func.coalesce(event.to_state, catalogue().evacuation.initial)
    rows = session.execute(
        select(Evacuation.unit_path, state_at, func.count(), func.sum(Evacuation.members))
        .join(Incident, Incident.id == Evacuation.incident_id)
        .outerjoin(last, last.c.evacuation_id == Evacuation.id)
        .outerjoin(event, event.id == last.c.eid)
        .where(Evacuation.drill.is_(False), func.coalesce(Incident.activated_at, Incident.created_at) < end)
        .group_by(Evacuation.unit_path, state_at)).all()
    out = []
    for params in param_sets:
        states, people = params.get("states"), params.get("measure") == "people"
        acc: dict[str, float] = defaultdict(float)
        for path, st, households, members in rows:
            if states is None or st in states:
                acc[path] += float(members or 0) if people else households
        out.append({p: (n, None) for p, n in acc.items() if n})
    return out


def _shelters(session: Session, window: Window, params: dict):
    rows = session.execute(select(Shelter.unit_path, func.sum(Shelter.occupancy), func.sum(Shelter.capacity))
                           .group_by(Shelter.unit_path)).all()
    return {p: (float(o or 0), float(c or 0)) for p, o, c in rows}


def _incidents(session: Session, window: Window, params: dict):
    end = window.end
    rows = session.execute(
        select(Incident.unit_path, func.count())
        .where(Incident.drill.is_(False), Incident.activated_at < end,
               or_(Incident.closed_at.is_(None), Incident.closed_at >= end))
        .group_by(Incident.unit_path)).all()
    return {p: (float(n), None) for p, n in rows}


def _overdue_tasks(session: Session, window: Window, params: dict):
    end = window.end
    rows = session.execute(
        select(Task.unit_path, func.count())
        .where(Task.drill.is_(False), Task.status != "cancelled", Task.created_at < end, Task.deadline < end,
               or_(Task.completed_at.is_(None), Task.completed_at >= end))
        .group_by(Task.unit_path)).all()
    return {p: (float(n), None) for p, n in rows}


def _states() -> tuple:
    return tuple(catalogue().evacuation.states)


METRICS = [
    Metric("tasks.evacuations", "转移群众(按状态)", "Households to evacuate, by state", _evacuations,
           {"states": Param(kind="list", choices=_states()), "measure": Param(choices=("households", "people"), default="households")}),
    Metric("tasks.shelter_occupancy", "避难场所使用率", "Shelter occupancy", per_param_set(_shelters), ratio=True),
    Metric("tasks.incidents_active", "处置中的突发事件", "Active incidents", per_param_set(_incidents)),
    Metric("tasks.overdue", "逾期任务数", "Overdue tasks", per_param_set(_overdue_tasks)),
]

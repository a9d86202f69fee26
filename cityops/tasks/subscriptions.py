"""The task center's consumers on the bus (cityops.core.bus); registered by cityops/wiring.py.

A warning level moves the emergency plan (``warning.level_changed``), and an activated or closed response opens
(or joins) and closes its event-center case (``incident.activated`` / ``incident.closed``). The event center is
below the task center (the tasks manifest's ``depends_on``): these consumers call it, and it knows nothing of
incidents.
"""

from __future__ import annotations

import logging

from shapely.geometry import Point
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import Envelope
from cityops.core.errors import CityOpsError
from cityops.core.spatial import buffer_m
from cityops.events.actions import close_case
from cityops.events.creation import adopt_open_case, create_case
from cityops.events.models import Case
from cityops.tasks.incidents import log_step
from cityops.tasks.manifest import IncidentClosed
from cityops.tasks.models import Incident
from cityops.tasks.plans import on_warning_level
from cityops.tasks.zones import _metric_crs

log = logging.getLogger("cityops.tasks")


def plan_response(session: Session, env: Envelope) -> None:
    """``warning.level_changed``: the emergency plan activates, is proposed, upgrades or logs a stand-down
    proposal, with the hazard body (the risk point's radius around it) as the zone's seed."""
    w = env.payload
    body = buffer_m(Point(w.lon, w.lat), w.radius_m or 0.0, _metric_crs(session)) if w.lon is not None else None
    try:
        with session.begin_nested():
            on_warning_level(session, risk_point_code=w.risk_point_code, hazard_type=w.hazard_type,
                             level=None if w.level == "none" else w.level, unit_code=w.unit_code, geometry=body,
                             actor=audit.Actor("warning"), place_name=w.risk_point_name,
                             evidence={"warning": w.identifier, "reasons": w.reasons})
    except CityOpsError as exc:  # e.g. no plan for this hazard type: a decision, not a failure to retry
        log.warning("no plan response to %s: %s", w.identifier, exc.message)


def incident_case(session: Session, env: Envelope) -> None:
    """``incident.activated`` / ``incident.closed`` (one consumer for both, so a close is applied after its
    activation, in outbox order): the incident's event-center case is opened or joined, then closed."""
    if isinstance(env.payload, IncidentClosed):
        incident_closed(session, env)
    else:
        incident_activated(session, env)


def incident_activated(session: Session, env: Envelope) -> int | None:
    """``incident.activated``: the event center opens the incident's case — or joins the open case of the same
    danger, the one its risk point's warning alarm filed under ``alarm:warning:<code>`` — and the incident keeps
    the reference, its timeline saying so. Drills open no case: they stay out of the event center's statistics.
    Idempotent: a redelivery finds the case filed under ``incident:<id>`` (or the joined case, which already
    carries the incident) and the reference already kept. A refusal (an unknown class, a place outside the
    district) is logged, never retried: the evacuation goes on without a case."""
    i = env.payload
    if i.drill:
        return None
    incident = session.get(Incident, i.incident_id)
    attributes = {"hazard_type": i.hazard_type, "event_grade": i.event_grade, "incident_id": i.incident_id,
                  "risk_point_code": i.risk_point_code}
    try:
        with session.begin_nested():
            joined = None
            if i.risk_point_code:
                # One danger, one case: holds the danger's key until this transaction ends, so a warning alarm
                # deciding at the same time (create_case_from_alarm) sees this case once it is committed.
                joined = adopt_open_case(session, f"alarm:warning:{i.risk_point_code}", attributes)
            case = joined or create_case(
                session, source="task", class_code=i.event_class, title=i.title, description=i.description,
                lon=i.lon, lat=i.lat, unit_code=None if i.lon is not None else i.unit_code, urgency="urgent",
                external_key=f"incident:{i.incident_id}", attributes=attributes, actor=audit.Actor(i.actor))
    except CityOpsError as exc:  # a decision of the event center, not a failure to retry
        log.warning("no case for incident %s: %s", i.incident_id, exc.message)
        return None
    if incident is not None and incident.case_ref != str(case.id):
        incident.case_ref = str(case.id)
        message = f"并入事件中心案卷 {case.number}" if joined is not None else f"事件中心立案 {case.number}"
        log_step(session, incident, "events", "case.linked", message,
                 {"case_ref": incident.case_ref, "number": case.number, "joined": joined is not None})
    return case.id


def incident_closed(session: Session, env: Envelope) -> None:
    """``incident.closed``: the incident's case walks its remaining steps to closure, with the closing note."""
    i = env.payload
    if i.drill:
        return
    incident = session.get(Incident, i.incident_id)
    case_ref = i.case_ref or (incident.case_ref if incident is not None else None)
    case_id = int(case_ref) if case_ref else _case_of(session, i.incident_id, i.risk_point_code)
    if case_id is None:
        return
    try:
        with session.begin_nested():
            close_case(session, case_id, i.closing_note, audit.Actor(i.actor))
    except CityOpsError as exc:
        log.warning("case %s of incident %s not closed: %s", case_id, i.incident_id, exc.message)


def _case_of(session: Session, incident_id: int, risk_point_code: str | None) -> int | None:
    """The incident's case when none was linked: filed for it, or the danger's case it joined."""
    keys = [f"incident:{incident_id}"] + ([f"alarm:warning:{risk_point_code}"] if risk_point_code else [])
    for case in session.scalars(select(Case).where(Case.external_key.in_(keys))):
        if case.external_key == keys[0] or (case.attributes or {}).get("incident_id") == incident_id:
            return case.id
    return None

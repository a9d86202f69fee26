"""The event center's consumers on the bus (cityops.core.bus); registered by cityops/wiring.py.

An emergency response's case: ``incident.activated`` opens it — or joins the open case of the same danger, the one
its risk point's warning alarm filed under ``alarm:warning:<code>`` — and answers ``case.linked`` for the task center
to keep; ``incident.closed`` closes it with the closing note. Drills open no case: they stay out of the event
center's statistics. A refusal (an unknown class, a place outside the district) is logged, never retried: the
evacuation goes on without a case.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import Envelope, publish
from cityops.core.errors import CityOpsError
from cityops.events.actions import close_case
from cityops.events.creation import adopt_open_case, create_case
from cityops.events.manifest import CaseLinked
from cityops.events.models import Case
from cityops.tasks.manifest import IncidentClosed

log = logging.getLogger("cityops.events")


def incident_event(session: Session, env: Envelope) -> None:
    """One consumer for both, so an incident's close is applied after its activation (outbox order)."""
    if isinstance(env.payload, IncidentClosed):
        incident_closed(session, env)
    else:
        incident_case(session, env)


def incident_case(session: Session, env: Envelope) -> int | None:
    """``incident.activated``: the incident's case, opened or joined (idempotent per incident: a redelivery finds
    the case filed under ``incident:<id>``, or the joined case that already carries the incident)."""
    i = env.payload
    if i.drill:
        return None
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
            publish(session, CaseLinked(case_id=case.id, number=case.number, subject_kind="incident",
                                        subject_id=i.incident_id, joined=joined is not None, unit_path=case.unit_path))
    except CityOpsError as exc:  # a decision of the event center, not a failure to retry
        log.warning("no case for incident %s: %s", i.incident_id, exc.message)
        return None
    return case.id


def incident_closed(session: Session, env: Envelope) -> None:
    """``incident.closed``: the incident's case walks its remaining steps to closure, with the closing note."""
    i = env.payload
    if i.drill:
        return
    case_id = int(i.case_ref) if i.case_ref else _case_of(session, i.incident_id, i.risk_point_code)
    if case_id is None:
        return
    try:
        with session.begin_nested():
            close_case(session, case_id, i.closing_note, audit.Actor(i.actor))
    except CityOpsError as exc:
        log.warning("case %s of incident %s not closed: %s", i.case_ref, i.incident_id, exc.message)


def _case_of(session: Session, incident_id: int, risk_point_code: str | None) -> int | None:
    """The incident's case when the incident closed before ``case.linked`` reached it: filed for it, or the danger's
    case it joined."""
    keys = [f"incident:{incident_id}"] + ([f"alarm:warning:{risk_point_code}"] if risk_point_code else [])
    for case in session.scalars(select(Case).where(Case.external_key.in_(keys))):
        if case.external_key == keys[0] or (case.attributes or {}).get("incident_id") == incident_id:
            return case.id
    return None

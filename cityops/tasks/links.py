"""The one seam between the task center and the event center (事件中心, ``cityops.events``, declared in the
tasks manifest's ``depends_on``): an incident's case is opened and closed in the incident's transaction. A
failure there is logged and never undoes an evacuation. ``case_ref`` is kept as opaque text.
"""

from __future__ import annotations

import logging

from cityops.events import actions as case_actions
from cityops.events import creation as case_creation

log = logging.getLogger("cityops.tasks.links")


def create_case(session, *, title: str, description: str, unit_code: str, geometry=None, hazard_type: str,
                event_class: str, grade: int | None, drill: bool, incident_id: int, actor,
                risk_point_code: str | None = None) -> str | None:
    """Open a case in the event center for an incident (class ``event_class`` from the plan); returns its
    reference, or None when the event center refused it (logged). Drills open no case: they must stay out of
    the event center's statistics. Runs in the caller's transaction, idempotent per incident.

    One danger, one case: when the risk point's warning alarm already opened a case (``alarm:warning:<code>``,
    the key the alarm escalation files it under), the incident joins that case instead of opening another."""
    if drill:
        return None
    point = geometry.representative_point() if geometry is not None and not geometry.is_empty else None
    attributes = {"hazard_type": hazard_type, "event_grade": grade, "incident_id": incident_id,
                  "risk_point_code": risk_point_code}
    try:
        with session.begin_nested():
            if risk_point_code:
                joined = case_creation.adopt_open_case(session, f"alarm:warning:{risk_point_code}", attributes)
                if joined is not None:
                    return str(joined.id)
            case = case_creation.create_case(
                session, source="task", class_code=event_class, title=title, description=description,
                lon=point.x if point else None, lat=point.y if point else None,
                unit_code=None if point else unit_code, urgency="urgent", external_key=f"incident:{incident_id}",
                attributes=attributes, actor=actor)
    except Exception:  # noqa: BLE001 - the evacuation must go on whatever the event center says
        log.exception("event center refused the case; the incident continues without one")
        return None
    return str(case.id)


def close_case(session, case_ref: str | None, note: str, actor) -> bool:
    """Close the incident's case with the closing note (which carries the figures); False when there is no
    case or the event center refused."""
    if not case_ref:
        return False
    try:
        with session.begin_nested():
            case_actions.close_case(session, int(case_ref), note, actor)
    except Exception:  # noqa: BLE001
        log.exception("event center could not close case %s", case_ref)
        return False
    return True


def case_link(case_ref: str | None) -> str | None:
    """Where the case lives in the API (the event center's route), for the link back."""
    return f"/api/events/cases/{case_ref}" if case_ref else None

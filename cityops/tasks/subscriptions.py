"""The task center's consumers on the bus (cityops.core.bus); registered by cityops/wiring.py."""

from __future__ import annotations

import logging

from shapely.geometry import Point
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import Envelope
from cityops.core.errors import CityOpsError
from cityops.core.spatial import buffer_m
from cityops.tasks.incidents import log_step
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


def case_link(session: Session, env: Envelope) -> None:
    """``case.linked`` of an incident: the incident keeps its case's reference, and its timeline says so."""
    c = env.payload
    if c.subject_kind != "incident":
        return
    incident = session.get(Incident, c.subject_id)
    if incident is None or incident.case_ref == str(c.case_id):
        return
    incident.case_ref = str(c.case_id)
    message = f"并入事件中心案卷 {c.number}" if c.joined else f"事件中心立案 {c.number}"
    log_step(session, incident, "events", "case.linked", message, {"case_ref": incident.case_ref, "number": c.number,
                                                                   "joined": c.joined})

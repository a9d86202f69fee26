"""The one seam between the task center and the event center (事件中心, ``cityops.events``).

Every call imports lazily: the task center works without the event center (an incident simply has no
case), and a failure there is logged and never undoes an evacuation. ``case_ref`` is kept as opaque text.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger("cityops.tasks.links")


def _events_service():
    try:
        return importlib.import_module("cityops.events.service")
    except ImportError:
        return None


def create_case(session, *, title: str, description: str, unit_code: str, geometry=None, hazard_type: str,
                grade: int | None, drill: bool, actor) -> str | None:
    """Open a case in the event center for an incident; returns its reference, or None when there is no
    event center (logged). Runs in the caller's transaction."""
    service = _events_service()
    if service is None or not hasattr(service, "create_case"):
        log.info("event center not installed: incident has no case", extra={"title": title})
        return None
    try:
        with session.begin_nested():
            case = service.create_case(session, title=title, description=description, unit_code=unit_code,
                                       geometry=geometry, source="tasks", category=hazard_type, grade=grade,
                                       drill=drill, actor=actor)
    except Exception:  # noqa: BLE001 - the evacuation must go on whatever the event center says
        log.exception("event center refused the case; the incident continues without one")
        return None
    ref = getattr(case, "code", None) or getattr(case, "id", None) or (case.get("code") if isinstance(case, dict) else case)
    return None if ref is None else str(ref)


def close_case(session, case_ref: str | None, note: str, actor) -> bool:
    """Close the incident's case with the closing note (which carries the figures); False when there is no
    case or no event center."""
    if not case_ref:
        return False
    service = _events_service()
    if service is None or not hasattr(service, "close_case"):
        log.info("event center not installed: case %s not closed there", case_ref)
        return False
    try:
        with session.begin_nested():
            service.close_case(session, case_ref, note, actor)
    except Exception:  # noqa: BLE001
        log.exception("event center could not close case %s", case_ref)
        return False
    return True


def case_link(case_ref: str | None) -> str | None:
    """Where the case lives in the API (the event center's route), for the link back."""
    return f"/api/cases/{case_ref}" if case_ref else None

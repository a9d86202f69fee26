"""An alarm at or above the configured severity opens an event-center case (事件中心).

The event center is its own capability; this is the one place that calls it. It is imported lazily, so
sensing works (and logs a warning) where the event center is not installed.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import CityOpsError

log = logging.getLogger("cityops.sensing.escalation")
_warned: list[bool] = []


def _event_class(device_type: str | None) -> str | None:
    """The device type's event class (device_types.toml); None lets the event center use its alarm default."""
    from cityops.sensing.catalog import device_types

    spec = device_types().get(device_type or "")
    return spec.event_class if spec is not None else None


def open_case(session: Session, alarm, *, device_type: str | None = None, actor: str = "sensing") -> str | None:
    """Open a case for ``alarm``; returns the case reference, or None when the event center is absent."""
    try:
        from cityops.events.creation import create_case_from_alarm  # noqa: PLC0415 - optional capability
    except ImportError:
        # Said once per process at warning level (then at debug), so a storm of alarms does not flood the log.
        (log.debug if _warned else log.warning)("event center not installed: alarm %s (%s) opened no case", alarm.key, alarm.severity)
        _warned.append(True)
        return None
    try:
        with session.begin_nested():  # the event center's refusal must not undo the observations or the alarm
            case = create_case_from_alarm(
                session, source="sensing", alarm_key=alarm.key, class_code=_event_class(device_type),
                title=alarm.title, description=f"{alarm.title}({alarm.severity})", lon=alarm.lon, lat=alarm.lat,
                unit_code=alarm.unit_code, level=alarm.severity, evidence=alarm.evidence,
                actor=audit.Actor(actor) if isinstance(actor, str) else actor)
    except CityOpsError:
        log.exception("event center refused a case for alarm %s", alarm.key)
        return None
    return str(case.id)

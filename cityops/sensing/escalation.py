"""An alarm at or above the configured severity opens an event-center case (事件中心).

The event center is its own capability, below sensing (declared in the sensing manifest's ``depends_on``); this
is the one place that calls it, from the consumer of the alarm's ``alarm.changed`` (sensing.subscriptions.alarm_case),
in the consumer's transaction: the alarm is committed without waiting for the case.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import CityOpsError
from cityops.events.creation import create_case_from_alarm

log = logging.getLogger("cityops.sensing.escalation")


def _event_class(device_type: str | None) -> str | None:
    """The device type's event class (device_types.toml); None lets the event center use its alarm default."""
    from cityops.sensing.catalog import device_types

    spec = device_types().get(device_type or "")
    return spec.event_class if spec is not None else None


def open_case(session: Session, alarm, *, device_type: str | None = None, actor: str = "sensing") -> str | None:
    """Open a case for ``alarm``; returns the case reference, or None when the event center refused it (logged)."""
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

"""An alarm at or above the configured severity opens an event-center case (事件中心).

The event center is its own capability; this is the one place that calls it. It is imported lazily, so
sensing works (and logs a warning) where the event center is not installed.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

log = logging.getLogger("cityops.sensing.escalation")
_warned: list[bool] = []

#: Event class of a case opened from a sensing alarm, by device type (domain.md §2 codes).
CLASS_BY_DEVICE = {"site_monitor": "08004", "water_level": "emergency", "tilt_meter": "emergency",
                   "crack_meter": "emergency", "gnss": "emergency", "rain_gauge": "emergency"}


def open_case(session: Session, alarm, *, device_type: str | None = None, actor: str = "sensing") -> str | None:
    """Open a case for ``alarm``; returns the case reference, or None when the event center is absent."""
    try:
        from cityops.events.service import create_case_from_alarm  # noqa: PLC0415 - optional capability
    except ImportError:
        # Said once per process at warning level (then at debug), so a storm of alarms does not flood the log.
        (log.debug if _warned else log.warning)("event center not installed: alarm %s (%s) opened no case", alarm.key, alarm.severity)
        _warned.append(True)
        return None
    case = create_case_from_alarm(
        session, source="sensing", alarm_key=alarm.key, class_code=CLASS_BY_DEVICE.get(device_type or "", "emergency"),
        title=alarm.title, description=f"{alarm.title}({alarm.severity})", lon=alarm.lon, lat=alarm.lat,
        level=alarm.severity, evidence=alarm.evidence, actor=actor)
    return str(getattr(case, "code", None) or getattr(case, "id", None) or case)

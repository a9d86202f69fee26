"""Sensing's consumers on the bus (cityops.core.bus); registered by cityops/wiring.py."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cityops.core import ladder
from cityops.core.bus import Envelope
from cityops.sensing import alarms, escalation
from cityops.sensing.models import Alarm


def warning_alarm(session: Session, env: Envelope) -> None:
    """``warning.level_changed``: the risk point's alarm (key ``warning:<code>``) follows the level; a cancelled
    warning clears it."""
    w = env.payload
    key = f"warning:{w.risk_point_code}"
    if w.level == "none":
        alarms.resolve_condition(session, key, w.at, reason=f"warning cancelled ({w.identifier})")
        return
    alarms.raise_alarm(session, key=key, severity=w.level, title=f"{w.risk_point_name}{ladder.ZH[w.level]}色预警",
                       unit_code=w.unit_code, risk_point_code=w.risk_point_code, datastream_id=None,
                       evidence={"warning": w.identifier, "reasons": w.reasons}, observed_at=w.at, source="warning",
                       lon=w.lon, lat=w.lat)


def alarm_case(session: Session, env: Envelope) -> None:
    """``alarm.changed`` raised or escalated at or above the policy's severity: the alarm's event-center case is
    opened (or the danger's open case joined) and the alarm holds it. Idempotent: a redelivery finds the alarm's
    ``case_ref`` set (and the event center files one case per alarm key)."""
    a = env.payload
    if a.change not in ("raised", "escalated"):
        return
    alarm = session.get(Alarm, a.alarm_id)
    if alarm is None or not alarms.wants_case(alarm, a.severity):
        return
    ref = escalation.open_case(session, alarm, device_type=a.device_type)
    if ref is not None:
        alarms.link_case(session, alarm, ref)


def alarm_stream(hub: alarms.AlarmHub):
    """``alarm.changed`` (broadcast, every worker): the live-stream subscribers of ``hub`` (one per app) hear it."""

    def listener(env: Envelope) -> None:
        hub.publish({**env.payload.alarm, "change": env.payload.change})

    return listener

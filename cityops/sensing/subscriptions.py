"""Sensing's consumers on the bus (cityops.core.bus); registered by cityops/wiring.py."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core import ladder
from cityops.core.bus import Envelope
from cityops.sensing import alarms, escalation, timeseries
from cityops.sensing.models import Alarm


def evaluate_fed_risk_points(session: Session, env: Envelope) -> list[str]:
    """``observation.batch_stored``: re-evaluate, at the newest observation's time, every risk point fed by one
    of the batch's datastreams (in the consumer's transaction), on the sensing time series. The warning models
    are below sensing (its manifest's ``depends_on``)."""
    from cityops.warning import service as warning
    from cityops.warning.tables import RiskPoint

    written = set(env.payload.datastream_ids)
    fed = sorted(code for code, links in session.execute(select(RiskPoint.code, RiskPoint.datastreams))
                 if written & _linked_ids(links or {}))
    now = datetime.fromtimestamp(env.payload.newest_ms / 1000.0, UTC)
    for code in fed:
        warning.evaluate_risk_point(session, code, timeseries.model_series(session), now, commit=False)
    return fed


def _linked_ids(links: dict) -> set[int]:
    ids = set()
    for value in links.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                item = item.get("id")
            if item is not None:
                ids.add(int(item))
    return ids


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

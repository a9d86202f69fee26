"""Alarms (告警): life cycle active → acknowledged → cleared, severity (蓝/黄/橙/红), assignee, comments,
deduplication by key, suppression after clearing, escalation by duration and de-escalation, and a live
stream (SSE) fed from the bus (``alarm.changed``, every worker hears it).

Other capabilities (the warning models) raise alarms through ``raise_alarm``; it deduplicates on ``key``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.core import audit, sse
from cityops.core.bus import publish
from cityops.core.errors import Conflict, InvalidInput, NotFound
from cityops.core.types import utcnow
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.sensing import catalog
from cityops.sensing.manifest import AlarmChanged
from cityops.sensing.models import Alarm, AlarmComment, Datastream

log = logging.getLogger("cityops.sensing.alarms")
OPEN = ("active", "acknowledged")


def _rank(severity: str) -> int:
    if severity not in catalog.SEVERITY_RANK:
        raise InvalidInput(f"unknown severity {severity!r} (blue, yellow, orange, red)")
    return catalog.SEVERITY_RANK[severity]


def alarm_dict(a: Alarm) -> dict:
    return {"id": a.id, "key": a.key, "status": a.status, "severity": a.severity, "severity_zh": catalog.SEVERITY_ZH[a.severity],
            "peak_severity": a.peak_severity, "title": a.title, "source": a.source, "rule_id": a.rule_id,
            "unit_code": a.unit_code, "unit_path": a.unit_path, "risk_point_code": a.risk_point_code,
            "datastream_id": a.datastream_id, "evidence": a.evidence, "lon": a.lon, "lat": a.lat,
            "first_at": a.first_at.isoformat(), "last_at": a.last_at.isoformat(), "occurrences": a.occurrences,
            "suppressed": a.suppressed, "assignee": a.assignee, "acknowledged_by": a.acknowledged_by,
            "acknowledged_at": a.acknowledged_at.isoformat() if a.acknowledged_at else None,
            "cleared_at": a.cleared_at.isoformat() if a.cleared_at else None, "cleared_by": a.cleared_by,
            "escalated_at": a.escalated_at.isoformat() if a.escalated_at else None, "case_ref": a.case_ref,
            "history": a.history}


# --------------------------------------------------------------------------------------- live stream

class AlarmHub(sse.LiveHub):
    """Fan-out of alarm changes to the SSE subscribers whose scope covers them (core.sse.LiveHub)."""

    def subscribe(self, scope: Scope):
        return super().subscribe(scope)

    def publish(self, data: dict) -> None:
        super().publish(data, lambda scope: scope.covers(data.get("unit_path")))


def _emit(session: Session, alarm: Alarm, change: str, device_type: str | None = None) -> None:
    """The change as an ``alarm.changed`` event in the caller's transaction: live streams in every worker hear
    it once it is committed (sensing.subscriptions.alarm_stream), and a raised or escalated alarm gets its case
    (sensing.subscriptions.alarm_case)."""
    session.flush()
    publish(session, AlarmChanged(alarm_id=alarm.id, key=alarm.key, change=change, severity=alarm.severity,
                                  status=alarm.status, unit_path=alarm.unit_path, alarm=alarm_dict(alarm),
                                  device_type=device_type))


def _history(alarm: Alarm, at: datetime, what: str, **extra) -> None:
    alarm.history = [*(alarm.history or []), {"at": at.isoformat(), "what": what, **extra}]


# ---------------------------------------------------------------------------------------------- raising

def _place(session: Session, unit_code: str | None, datastream_id: int | None) -> tuple[str | None, str]:
    if unit_code:
        unit = session.scalar(select(Unit).where(Unit.code == unit_code))
        if unit is None:
            raise InvalidInput(f"unknown unit code {unit_code!r}")
        return unit.code, unit.path
    if datastream_id is not None:
        ds = session.get(Datastream, datastream_id)
        if ds is None:
            raise InvalidInput(f"unknown datastream {datastream_id}")
        return ds.unit_path.rstrip("/").rsplit("/", 1)[-1], ds.unit_path
    root = session.scalar(select(Unit).where(Unit.parent_code.is_(None)).order_by(Unit.code))
    if root is None:
        raise InvalidInput("an alarm needs a unit: no administrative units exist")
    return root.code, root.path


def raise_alarm(session: Session, *, key: str, severity: str, title: str, unit_code: str | None,
                risk_point_code: str | None, datastream_id: int | None, evidence: dict, observed_at: datetime,
                source: str = "rule", rule_id: str | None = None, lon: float | None = None, lat: float | None = None,
                device_type: str | None = None, case_ref: str | None = None) -> Alarm:
    """Raise (or update) the alarm named ``key``. One open alarm per key: a repeat counts on it, a higher
    severity escalates it, a lower one de-escalates it. Within the suppression window after clearing, a
    repeat is counted as suppressed on the cleared alarm instead of opening a new one. ``case_ref``: the
    case already open for the same danger (an incident's), which the alarm joins instead of opening its own.
    The caller commits."""
    rank = _rank(severity)
    if not key or not title:
        raise InvalidInput("an alarm needs a key and a title")
    if observed_at.tzinfo is None:
        raise InvalidInput("observed_at must be timezone-aware")
    policy = catalog.rulebook().alarm
    alarm = session.scalar(select(Alarm).where(Alarm.key == key, Alarm.status.in_(OPEN)).order_by(Alarm.id.desc()))
    if alarm is not None:
        alarm.case_ref = alarm.case_ref or case_ref
        alarm.occurrences += 1
        alarm.last_at = max(alarm.last_at, observed_at)
        alarm.evidence = evidence
        old = _rank(alarm.severity)
        if rank != old:
            what = "escalated" if rank > old else "de-escalated"
            _history(alarm, observed_at, what, **{"from": alarm.severity, "to": severity})
            alarm.severity = severity
            if rank > _rank(alarm.peak_severity):
                alarm.peak_severity = severity
            if rank > old and alarm.status == "acknowledged":
                alarm.status = "active"  # worse than what was acknowledged: needs attention again
            audit.record(session, audit.Actor(source), f"alarm.{what.replace('-', '_')}", "alarm", key,
                         after={"severity": severity}, unit_path=alarm.unit_path)
            _emit(session, alarm, what, device_type)
        return alarm
    window = observed_at - timedelta(minutes=policy.suppression_minutes)
    recent = session.scalar(select(Alarm).where(Alarm.key == key, Alarm.status == "cleared", Alarm.cleared_at >= window)
                            .order_by(Alarm.id.desc()))
    if recent is not None:
        recent.suppressed += 1
        recent.last_at = max(recent.last_at, observed_at)
        session.flush()
        return recent
    code, path = _place(session, unit_code, datastream_id)
    alarm = Alarm(key=key, status="active", severity=severity, peak_severity=severity, title=title, source=source,
                  rule_id=rule_id, unit_code=code, unit_path=path, risk_point_code=risk_point_code,
                  datastream_id=datastream_id, evidence=evidence, lon=lon, lat=lat, first_at=observed_at, case_ref=case_ref,
                  last_at=observed_at, occurrences=1, suppressed=0, history=[{"at": observed_at.isoformat(), "what": "raised",
                                                                              "severity": severity}])
    session.add(alarm)
    session.flush()
    audit.record(session, audit.Actor(source), "alarm.raise", "alarm", key, after={"severity": severity, "title": title},
                 unit_path=path)
    _emit(session, alarm, "raised", device_type)
    return alarm


def wants_case(alarm: Alarm, severity: str) -> bool:
    """An alarm without a case, at or above the policy's severity, is to get one (sensing.subscriptions.alarm_case)."""
    return alarm.case_ref is None and _rank(severity) >= _rank(catalog.rulebook().alarm.case_min_severity)


def link_case(session: Session, alarm: Alarm, case_ref: str) -> None:
    """The alarm holds its event-center case: the live streams hear it (``case_linked``)."""
    alarm.case_ref = case_ref
    _emit(session, alarm, "case_linked")


def resolve_condition(session: Session, key: str, at: datetime, reason: str = "condition returned to normal") -> Alarm | None:
    """The rule no longer fires: clear the open alarm of ``key`` (if any)."""
    alarm = session.scalar(select(Alarm).where(Alarm.key == key, Alarm.status.in_(OPEN)))
    if alarm is None:
        return None
    alarm.status, alarm.cleared_at, alarm.cleared_by = "cleared", at, "system"
    _history(alarm, at, "cleared", reason=reason)
    audit.record(session, audit.SYSTEM, "alarm.clear", "alarm", key, after={"reason": reason}, unit_path=alarm.unit_path)
    _emit(session, alarm, "cleared")
    return alarm


# ------------------------------------------------------------------------------------------ life cycle

def get_alarm(session: Session, scope: Scope, alarm_id: int) -> Alarm:
    alarm = session.get(Alarm, alarm_id)
    if alarm is None or not scope.covers(alarm.unit_path):
        raise NotFound(f"alarm {alarm_id} does not exist")
    return alarm


def acknowledge(session: Session, scope: Scope, actor: audit.Actor, alarm_id: int, note: str | None = None) -> Alarm:
    alarm = get_alarm(session, scope, alarm_id)
    if alarm.status != "active":
        raise Conflict(f"alarm {alarm_id} is {alarm.status}; only an active alarm can be acknowledged")
    now = utcnow()
    alarm.status, alarm.acknowledged_by, alarm.acknowledged_at = "acknowledged", actor.name, now
    _history(alarm, now, "acknowledged", by=actor.name, note=note)
    audit.record(session, actor, "alarm.acknowledge", "alarm", alarm.key, unit_path=alarm.unit_path)
    _emit(session, alarm, "acknowledged")
    return alarm


def clear(session: Session, scope: Scope, actor: audit.Actor, alarm_id: int, reason: str) -> Alarm:
    alarm = get_alarm(session, scope, alarm_id)
    if alarm.status == "cleared":
        raise Conflict(f"alarm {alarm_id} is already cleared")
    if not reason or not reason.strip():
        raise InvalidInput("clearing an alarm needs a reason")
    now = utcnow()
    alarm.status, alarm.cleared_at, alarm.cleared_by = "cleared", now, actor.name
    _history(alarm, now, "cleared", by=actor.name, reason=reason)
    audit.record(session, actor, "alarm.clear", "alarm", alarm.key, after={"reason": reason}, unit_path=alarm.unit_path)
    _emit(session, alarm, "cleared")
    return alarm


def assign(session: Session, scope: Scope, actor: audit.Actor, alarm_id: int, assignee: str) -> Alarm:
    from cityops.identity.models import User

    alarm = get_alarm(session, scope, alarm_id)
    if alarm.status == "cleared":
        raise Conflict(f"alarm {alarm_id} is cleared")
    if session.scalar(select(User.id).where(User.username == assignee)) is None:
        raise InvalidInput(f"unknown user {assignee!r}")
    before = alarm.assignee
    alarm.assignee = assignee
    _history(alarm, utcnow(), "assigned", by=actor.name, to=assignee)
    audit.record(session, actor, "alarm.assign", "alarm", alarm.key, before={"assignee": before},
                 after={"assignee": assignee}, unit_path=alarm.unit_path)
    _emit(session, alarm, "assigned")
    return alarm


def add_comment(session: Session, scope: Scope, actor: audit.Actor, alarm_id: int, text: str) -> AlarmComment:
    alarm = get_alarm(session, scope, alarm_id)
    if not text or not text.strip() or len(text) > 4000:
        raise InvalidInput("a comment is 1–4000 characters")
    c = AlarmComment(alarm_id=alarm.id, author=actor.name, text=text.strip())
    session.add(c)
    audit.record(session, actor, "alarm.comment", "alarm", alarm.key, after={"text": text.strip()}, unit_path=alarm.unit_path)
    session.flush()
    return c


def comments(session: Session, alarm_id: int) -> list[dict]:
    rows = session.scalars(select(AlarmComment).where(AlarmComment.alarm_id == alarm_id).order_by(AlarmComment.id))
    return [{"id": c.id, "at": c.at.isoformat(), "author": c.author, "text": c.text} for c in rows]


def escalate_overdue(session: Session, now: datetime | None = None) -> list[Alarm]:
    """Active, unacknowledged alarms older than the policy's limit go one severity up (once per period)."""
    now = now or utcnow()
    limit = timedelta(minutes=catalog.rulebook().alarm.escalate_after_minutes)
    out = []
    for alarm in session.scalars(select(Alarm).where(Alarm.status == "active")):
        since = alarm.escalated_at or alarm.first_at
        rank = _rank(alarm.severity)
        if now - since >= limit and rank < len(catalog.SEVERITIES) - 1:
            new = catalog.SEVERITIES[rank + 1]
            _history(alarm, now, "escalated", reason="not acknowledged in time", **{"from": alarm.severity, "to": new})
            alarm.severity, alarm.escalated_at = new, now
            if rank + 1 > _rank(alarm.peak_severity):
                alarm.peak_severity = new
            audit.record(session, audit.SYSTEM, "alarm.escalate", "alarm", alarm.key, after={"severity": new},
                         unit_path=alarm.unit_path)
            _emit(session, alarm, "escalated")
            out.append(alarm)
    return out


def list_alarms(session: Session, scope: Scope, *, status: str | None = None, severity: str | None = None,
                risk_point: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[Alarm], int]:
    q = select(Alarm).where(scope.covers_clause(Alarm.unit_path))
    if status:
        wanted = status.split(",")
        bad = set(wanted) - {"active", "acknowledged", "cleared"}
        if bad:
            raise InvalidInput(f"unknown status {', '.join(sorted(bad))}")
        q = q.where(Alarm.status.in_(wanted))
    if severity:
        _rank(severity)
        q = q.where(Alarm.severity == severity)
    if risk_point:
        q = q.where(Alarm.risk_point_code == risk_point)
    total = session.scalar(select(func.count()).select_from(q.subquery()))
    rows = list(session.scalars(q.order_by(Alarm.last_at.desc(), Alarm.id.desc()).limit(limit).offset(offset)))
    return rows, total

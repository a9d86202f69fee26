"""Platform metrics of sensing (for the indicators capability): open alarms by severity, devices reporting, and
readings of a device type over a window (from the hourly rollups)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import and_, distinct, func, or_, select
from sqlalchemy.orm import Session

from cityops.core.metrics import Metric, Param, Window, per_param_set
from cityops.sensing.catalog import SEVERITIES, SEVERITY_RANK
from cityops.sensing.models import Alarm, Datastream, Rollup, Thing

HOUR_MS = 3_600_000


def _ms(t) -> int:
    return int(t.timestamp() * 1000)


def _alarms(session: Session, window: Window, param_sets: list[dict]):
    """Alarms open at the window's end (raised by then, not cleared by then), per unit and severity."""
    end = window.end
    rows = session.execute(
        select(Alarm.unit_path, Alarm.severity, func.count())
        .where(Alarm.first_at < end, or_(Alarm.cleared_at.is_(None), Alarm.cleared_at >= end))
        .group_by(Alarm.unit_path, Alarm.severity)).all()
    out = []
    for params in param_sets:
        floor = SEVERITY_RANK[params.get("min_severity", "blue")]
        acc: dict[str, float] = defaultdict(float)
        for path, severity, n in rows:
            if SEVERITY_RANK.get(severity, 0) >= floor:
                acc[path] += n
        out.append(dict((p, (n, None)) for p, n in acc.items()))
    return out


def _things(params: dict):
    stmt = select(Thing.id, Thing.unit_path)
    if params.get("device_type"):
        stmt = stmt.where(Thing.device_type == params["device_type"])
    return stmt


def _online(session: Session, window: Window, params: dict):
    """Devices with a reading in the last ``window_hours`` before the window's end / devices (a rate)."""
    end = _ms(window.end)
    since = end - int(params.get("window_hours", 2)) * HOUR_MS
    things = _things(params).subquery()
    total = session.execute(select(things.c.unit_path, func.count()).group_by(things.c.unit_path)).all()
    online = dict(session.execute(
        select(things.c.unit_path, func.count(distinct(things.c.id)))
        .join(Datastream, Datastream.thing_id == things.c.id)
        .join(Rollup, and_(Rollup.datastream_id == Datastream.id, Rollup.tier == "1h"))
        .where(Rollup.bucket_ms >= since - HOUR_MS, Rollup.bucket_ms < end)
        .group_by(things.c.unit_path)).all())
    return {path: (float(online.get(path, 0)), float(n)) for path, n in total}


def _reading(session: Session, window: Window, params: dict):
    """The highest (or lowest) reading of a device type's streams in the window, per unit (hourly rollups)."""
    stat = params.get("stat", "max")
    things = _things(params).subquery()
    agg = func.max(Rollup.vmax) if stat == "max" else func.min(Rollup.vmin)
    stmt = (select(things.c.unit_path, agg)
            .join(Datastream, Datastream.thing_id == things.c.id)
            .join(Rollup, and_(Rollup.datastream_id == Datastream.id, Rollup.tier == "1h"))
            .where(Rollup.bucket_ms >= _ms(window.start), Rollup.bucket_ms < _ms(window.end))
            .group_by(things.c.unit_path))
    if params.get("stream"):
        stmt = stmt.where(Datastream.name.contains(params["stream"], autoescape=True))
    return {path: (float(v), None) for path, v in session.execute(stmt) if v is not None}


METRICS = [
    Metric("sensing.alarms", "未解除告警数", "Open alarms", _alarms,
           {"min_severity": Param(choices=SEVERITIES, default="blue")}, moved_by=("alarm.changed",)),
    Metric("sensing.devices_online", "设备在线率", "Devices online", per_param_set(_online),
           {"device_type": Param(), "window_hours": Param(kind="int", default=2)}, ratio=True),
    Metric("sensing.reading_max", "监测读数极值", "Highest reading", per_param_set(_reading),
           {"device_type": Param(required=True), "stream": Param(), "stat": Param(choices=("max",), default="max")},
           fold="max"),
]

"""The rule engine: the rule book (rules.toml) applied to each committed batch of observations.

Per datastream the batch is reduced first (threshold and house tilt: the worst reading; rate, duration,
combination: the state after the latest reading), so cost grows with the number of streams touched, not of
readings. House tilt is judged by the warning capability's one tilt rule (``cityops.warning.models.house``,
parameters in the warning catalogue), with the storeys of the Thing's building.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.housing.models import Building
from cityops.sensing import alarms, catalog
from cityops.sensing.catalog import Rule, compare
from cityops.sensing.models import Datastream, Observation, Thing
from cityops.sensing.timeutil import now_ms, to_datetime

MS_PER_MINUTE = 60_000
MS_PER_HOUR = 3_600_000


@dataclass
class EngineState:
    """Per-process memory of the writer."""

    #: FeatureOfInterest per datastream for observations that name none (see ingest.foi_for)
    fois: dict[int, int] = field(default_factory=dict)


def rules_for(book, device_type: str | None, stream: str | None, ds_id: int, risk_point: str | None) -> list[Rule]:
    out = []
    for r in book.rules:
        if r.kind == "no_signal" or r.device_type != device_type or r.stream != stream:
            continue
        if r.datastream is not None and r.datastream != ds_id:
            continue
        if r.risk_point is not None and r.risk_point != risk_point:
            continue
        out.append(r)
    return out


_EXTREME = {
    "gt": lambda rows: max(rows, key=lambda r: r.value), "ge": lambda rows: max(rows, key=lambda r: r.value),
    "lt": lambda rows: min(rows, key=lambda r: r.value), "le": lambda rows: min(rows, key=lambda r: r.value),
    "abs_gt": lambda rows: max(rows, key=lambda r: abs(r.value)), "abs_ge": lambda rows: max(rows, key=lambda r: abs(r.value)),
}


def exceedance(op: str, value: float, limit: float) -> float:
    """By how much a reading passes its limit, in the reading's unit (a night noise of 58 dB(A) passes 55 by 3)."""
    if op in ("gt", "ge"):
        return value - limit
    if op in ("lt", "le"):
        return limit - value
    return abs(value) - limit


def _level(rule: Rule, value: float) -> str | None:
    for severity, limit in rule.ladder():
        if compare(rule.op, value, limit):
            return severity
    return None


def evaluate(session: Session, rows, metas: dict, book=None) -> list:
    book = book or catalog.rulebook()
    tz = ZoneInfo(book.alarm.timezone)
    by_ds: dict[int, list] = defaultdict(list)
    for r in rows:
        if r.value is not None:
            by_ds[r.datastream_id].append(r)
    judged = [(ds_id, items, rule, f"{rule.id}:ds{ds_id}") for ds_id, items in by_ds.items()
              for rule in rules_for(book, metas[ds_id].device_type, metas[ds_id].stream, ds_id, metas[ds_id].risk_point_code)]
    if not judged:
        return []
    # Which of these alarms are open, and at what severity, as the database says: one query a batch. Not a memory of
    # this process — other workers' writers, the no-signal timer and people clearing alarms change them too, and an
    # alarm remembered open after another cleared it was never raised again at the same level.
    open_now = dict(session.execute(select(alarms.Alarm.key, alarms.Alarm.severity).where(
        alarms.Alarm.key.in_([key for *_, key in judged]), alarms.Alarm.status.in_(alarms.OPEN))).all())
    changes = []
    for ds_id, items, rule, key in judged:
        meta = metas[ds_id]
        latest = max(items, key=lambda r: r.t_ms)
        level, evidence, at = _evaluate_rule(session, rule, meta, items, latest, tz)
        at_dt = to_datetime(at)
        if level is None:
            if key in open_now:
                alarms.resolve_condition(session, key, at_dt)
                changes.append((key, None))
            continue
        if open_now.get(key) == level:
            continue  # already open at this level: nothing new to say
        alarms.raise_alarm(session, key=key, severity=level, title=rule.title, unit_code=meta.unit_code,
                           risk_point_code=meta.risk_point_code, datastream_id=ds_id,
                           evidence={"rule": rule.id, "kind": rule.kind, "source": rule.source, **evidence},
                           observed_at=at_dt, rule_id=rule.id, device_type=meta.device_type)
        changes.append((key, level))
    return changes


def _evaluate_rule(session, rule: Rule, meta, items, latest, tz):
    if rule.kind == "threshold":
        if rule.hours:
            items = [r for r in items if rule.in_hours(to_datetime(r.t_ms).astimezone(tz).hour)]
            if not items:
                return None, {}, latest.t_ms
        # The level only rises with the reading (above a limit for gt/ge, below for lt/le, in magnitude for
        # abs_*), so the batch's extreme reading decides it: one level lookup per stream, not per reading.
        worst_row = _EXTREME[rule.op](items)
        worst = _level(rule, worst_row.value)
        if worst is None:
            return None, {}, latest.t_ms
        limit = rule.levels[worst]
        return worst, {"value": worst_row.value, "unit": meta.symbol, "at": to_datetime(worst_row.t_ms).isoformat(),
                       "op": rule.op, "limit": limit, "exceeded_by": exceedance(rule.op, worst_row.value, limit)}, worst_row.t_ms
    if rule.kind == "house_tilt":
        return _house_tilt(session, meta, items, latest)
    if rule.kind == "rate":
        if rule.min_value is not None and latest.value < rule.min_value:
            return None, {}, latest.t_ms  # below the level where a rise matters: no query needed
        window = int(rule.window_minutes * MS_PER_MINUTE)
        before = session.execute(select(Observation.t_ms, Observation.result_num)
                                 .where(Observation.datastream_id == meta.id, Observation.t_ms <= latest.t_ms - window,
                                        Observation.result_num.is_not(None))
                                 .order_by(Observation.t_ms.desc()).limit(1)).first()
        if before is None:
            before = session.execute(select(Observation.t_ms, Observation.result_num)
                                     .where(Observation.datastream_id == meta.id, Observation.t_ms < latest.t_ms,
                                            Observation.result_num.is_not(None))
                                     .order_by(Observation.t_ms.asc()).limit(1)).first()
        if before is None or latest.t_ms - before[0] <= 0:
            return None, {}, latest.t_ms
        rate = (latest.value - before[1]) / ((latest.t_ms - before[0]) / MS_PER_HOUR)
        if rule.min_value is not None and latest.value < rule.min_value:
            return None, {}, latest.t_ms
        lv = _level(rule, rate)
        return lv, {"rate_per_hour": round(rate, 4), "value": latest.value, "unit": meta.symbol,
                    "since": to_datetime(before[0]).isoformat()}, latest.t_ms
    if rule.kind == "duration":
        bad = _negation(rule.op)
        col = Observation.result_num
        cond = {"gt": col <= rule.value, "ge": col < rule.value, "lt": col >= rule.value, "le": col > rule.value,
                "abs_gt": func.abs(col) <= rule.value, "abs_ge": func.abs(col) < rule.value}[rule.op]
        del bad
        last_bad = session.scalar(select(func.max(Observation.t_ms)).where(Observation.datastream_id == meta.id,
                                                                            Observation.t_ms <= latest.t_ms, cond))
        first_good = session.scalar(select(func.min(Observation.t_ms)).where(
            Observation.datastream_id == meta.id, Observation.t_ms <= latest.t_ms,
            Observation.t_ms > (last_bad if last_bad is not None else -1), Observation.result_num.is_not(None)))
        if first_good is None or not compare(rule.op, latest.value, rule.value):
            return None, {}, latest.t_ms
        held = (latest.t_ms - first_good) / MS_PER_MINUTE
        if held < rule.minutes:
            return None, {}, latest.t_ms
        return rule.severity, {"value": latest.value, "unit": meta.symbol, "held_minutes": round(held, 1),
                               "limit": rule.value}, latest.t_ms
    if rule.kind == "combination":
        group = Thing.risk_point_code == meta.risk_point_code if meta.risk_point_code else Thing.id == meta.thing_id
        values = []
        for cond in rule.conditions:
            rows = session.execute(select(Datastream.id, Datastream.last_value, Datastream.properties)
                                   .join(Thing, Thing.id == Datastream.thing_id)
                                   .where(group, Thing.device_type == cond.device_type)).all()
            hit = [(i, v) for i, v, p in rows if (p or {}).get("stream") == cond.stream and v is not None
                   and compare(cond.op, v, cond.value)]
            if not hit:
                return None, {}, latest.t_ms
            values.append({"device_type": cond.device_type, "stream": cond.stream, "datastream": hit[0][0], "value": hit[0][1]})
        return rule.severity, {"conditions": values}, latest.t_ms
    return None, {}, latest.t_ms


def _house_tilt(session, meta, items, latest):
    """The batch's worst tilt judged by the one tilt rule: the limit from the storeys of the Thing's building
    (unknown → the rule's stricter assumption), 蓝 from the latest readings' rise above noise."""
    from cityops.warning.catalogue import catalogue
    from cityops.warning.models.levels import RANK, level_key

    rule = catalogue().tilt_rule
    worst = max(items, key=lambda r: abs(r.value))
    storeys = session.scalar(select(Building.floors).join(Thing, Thing.building_code == Building.code)
                             .where(Thing.id == meta.thing_id))
    recent = session.scalars(select(Observation.result_num)
                             .where(Observation.datastream_id == meta.id, Observation.t_ms <= latest.t_ms,
                                    Observation.result_num.is_not(None))
                             .order_by(Observation.t_ms.desc()).limit(rule.trend_readings + 1)).all()
    j = rule.judge(worst.value, storeys, rising_readings=rule.rising_readings(list(reversed(recent))))
    if j.rank == RANK["none"]:
        return None, {}, latest.t_ms
    return level_key(j.rank), {"value": worst.value, "unit": meta.symbol, "at": to_datetime(worst.t_ms).isoformat(),
                                    **j.as_dict(), "share_of_limit": round(j.share_of_limit, 4),
                                    "exceeded_by": round(abs(worst.value) - j.limit_pct, 4)}, worst.t_ms


def _negation(op: str) -> str:
    return {"gt": "le", "ge": "lt", "lt": "ge", "le": "gt", "abs_gt": "abs_le", "abs_ge": "abs_lt"}[op]


def check_no_signal(session: Session, now: int | None = None, book=None) -> list:
    """Devices silent longer than their no-signal rule raise an alarm; those heard again clear it."""
    book = book or catalog.rulebook()
    now = now or now_ms()
    changes = []
    for rule in (r for r in book.rules if r.kind == "no_signal"):
        rows = session.execute(select(Datastream, Thing).join(Thing, Thing.id == Datastream.thing_id)
                               .where(Thing.device_type == rule.device_type)).all()
        for ds, thing in rows:
            if (ds.properties or {}).get("stream") != rule.stream:
                continue
            key = f"{rule.id}:ds{ds.id}"
            silent = ds.last_ms is None or now - ds.last_ms > rule.minutes * MS_PER_MINUTE
            if silent:
                alarms.raise_alarm(session, key=key, severity=rule.severity, title=rule.title, unit_code=thing.unit_code,
                                   risk_point_code=thing.risk_point_code, datastream_id=ds.id,
                                   evidence={"rule": rule.id, "kind": "no_signal", "last": to_datetime(ds.last_ms).isoformat()
                                             if ds.last_ms else None, "minutes": rule.minutes},
                                   observed_at=to_datetime(now), rule_id=rule.id, device_type=thing.device_type)
                changes.append((key, rule.severity))
            elif alarms.resolve_condition(session, key, to_datetime(now), "signal received again") is not None:
                changes.append((key, None))
    return changes

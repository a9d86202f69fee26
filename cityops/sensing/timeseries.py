"""Time series: rollups (1 min, 1 h, 1 day: min/max/mean/sum/count), range queries with downsampling,
CSV export and retention per tier.

New observations are folded into their buckets (an upsert per touched bucket, resends excluded), so
out-of-order observations and resends leave exactly the numbers a full recomputation would give;
``recompute_rollups`` rebuilds buckets from the tier below where a correction makes folding impossible.
Days are local days (Asia/Shanghai, UTC+8, no daylight saving), which is what a duty report means by "day".
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Iterator

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.orm import Session

from cityops.core import csvexport
from cityops.core.errors import InvalidInput
from cityops.core.storage import storage_of
from cityops.sensing.models import Datastream, Observation, Rollup
from cityops.sensing.timeutil import iso, now_ms

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
LOCAL_OFFSET = 8 * HOUR
TIERS = {"1m": MINUTE, "1h": HOUR, "1d": DAY}
#: How long each tier is kept (days); None = for ever. Raw is the shortest, the daily tier the longest.
RETENTION_DAYS = {"raw": 400, "1m": 800, "1h": 3650, "1d": None}


def _bucket_expr(column: str, size: int, offset: int = 0) -> str:
    if offset:
        return f"((({column} + {offset}) / {size}) * {size} - {offset})"
    return f"(({column} / {size}) * {size})"


_UPSERT = ("ON CONFLICT (datastream_id, tier, bucket_ms) DO UPDATE SET vmin = excluded.vmin, vmax = excluded.vmax, "
           "vsum = excluded.vsum, vcount = excluded.vcount")


#: Folding a batch's bucket rows into the stored ones (``lo``/``hi``: the backend's least/greatest): also the rollup
#: part of the PostgreSQL ingest statement (``ingest._PG_STORE``).
ROLLUP_FOLD = ("ON CONFLICT (datastream_id, tier, bucket_ms) DO UPDATE SET "
               "vmin = {lo}(coalesce(sensing_rollups.vmin, excluded.vmin), excluded.vmin), "
               "vmax = {hi}(coalesce(sensing_rollups.vmax, excluded.vmax), excluded.vmax), "
               "vsum = coalesce(sensing_rollups.vsum, 0) + excluded.vsum, "
               "vcount = coalesce(sensing_rollups.vcount, 0) + excluded.vcount")


def _floor(t: int, size: int, offset: int = 0) -> int:
    return ((t + offset) // size) * size - offset


def update_rollups(session: Session, rows) -> None:
    """Fold newly stored observations into the 1m, 1h and 1d rollups: one upsert per touched bucket that adds
    the batch's count and sum and widens min/max. ``rows`` must be only what was actually inserted (the write
    path drops resends before calling), so the numbers stay those of a full recomputation whatever the
    arrival order, and the cost follows the batch, not the size of the buckets it touches."""
    # Per minute bucket first (one pass over the rows), then the minutes into hours and local days: the
    # minutes are far fewer than the rows, so the rows are walked once instead of once per tier.
    minutes: dict[tuple[int, int], list] = {}
    for r in rows:
        v = r.value
        if v is None:
            continue
        key = (r.datastream_id, r.t_ms // MINUTE * MINUTE)
        a = minutes.get(key)
        if a is None:
            minutes[key] = [v, v, v, 1]
        else:
            if v < a[0]:
                a[0] = v
            if v > a[1]:
                a[1] = v
            a[2] += v
            a[3] += 1
    agg: dict[tuple[int, str, int], list] = {(d, "1m", b): a for (d, b), a in minutes.items()}
    for tier, size, offset in (("1h", HOUR, 0), ("1d", DAY, LOCAL_OFFSET)):
        for (d, b), m in minutes.items():
            key = (d, tier, ((b + offset) // size) * size - offset)
            a = agg.get(key)
            if a is None:
                agg[key] = list(m)
            else:
                if m[0] < a[0]:
                    a[0] = m[0]
                if m[1] > a[1]:
                    a[1] = m[1]
                a[2] += m[2]
                a[3] += m[3]
    if not agg:
        return
    storage = storage_of(session)
    lo, hi = storage.least_greatest
    fold = ROLLUP_FOLD.format(lo=lo, hi=hi)
    items = sorted(agg.items())
    if storage.arrays:
        # One statement over arrays: an executemany of ~1,000 bucket rows a batch was 15 % of the writer's time,
        # one pipelined statement per row. The keys are distinct, as ON CONFLICT DO UPDATE requires.
        session.execute(text(
            "INSERT INTO sensing_rollups (datastream_id, tier, bucket_ms, vmin, vmax, vsum, vcount) "
            "SELECT * FROM unnest(CAST(:d AS integer[]), CAST(:tier AS text[]), CAST(:b AS bigint[]), CAST(:lo AS float8[]), "
            f"CAST(:hi AS float8[]), CAST(:s AS float8[]), CAST(:c AS integer[])) {fold}"),
            {"d": [k[0] for k, _ in items], "tier": [k[1] for k, _ in items], "b": [k[2] for k, _ in items],
             "lo": [float(a[0]) for _, a in items], "hi": [float(a[1]) for _, a in items],
             "s": [float(a[2]) for _, a in items], "c": [a[3] for _, a in items]})
        return
    session.execute(text(
        "INSERT INTO sensing_rollups (datastream_id, tier, bucket_ms, vmin, vmax, vsum, vcount) "
        f"VALUES (:d, :tier, :b, :lo, :hi, :s, :c) {fold}"),
        [{"d": d, "tier": t, "b": b, "lo": a[0], "hi": a[1], "s": a[2], "c": a[3]} for (d, t, b), a in items])


def recompute_rollups(session: Session, rows) -> None:
    """Recompute, from the tier below, every bucket ``rows`` touch: for corrections (a changed or deleted
    observation), where folding in is not possible."""
    if not rows:
        return
    by_ds: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        by_ds[r.datastream_id].append(r.t_ms)
    ids = sorted(by_ds)
    lo = min(min(v) for v in by_ds.values())
    hi = max(max(v) for v in by_ds.values())
    ids_param = bindparam("ids", expanding=True)
    m_lo, m_hi = _floor(lo, MINUTE), _floor(hi, MINUTE) + MINUTE
    session.execute(text(
        "INSERT INTO sensing_rollups (datastream_id, tier, bucket_ms, vmin, vmax, vsum, vcount) "
        f"SELECT datastream_id, '1m', {_bucket_expr('t_ms', MINUTE)}, min(result_num), max(result_num), sum(result_num), count(result_num) "
        "FROM sta_observations WHERE datastream_id IN :ids AND t_ms >= :lo AND t_ms < :hi AND result_num IS NOT NULL "
        f"GROUP BY datastream_id, {_bucket_expr('t_ms', MINUTE)} {_UPSERT}").bindparams(ids_param),
        {"ids": ids, "lo": m_lo, "hi": m_hi})
    h_lo, h_hi = _floor(lo, HOUR), _floor(hi, HOUR) + HOUR
    session.execute(text(
        "INSERT INTO sensing_rollups (datastream_id, tier, bucket_ms, vmin, vmax, vsum, vcount) "
        f"SELECT datastream_id, '1h', {_bucket_expr('bucket_ms', HOUR)}, min(vmin), max(vmax), sum(vsum), sum(vcount) "
        "FROM sensing_rollups WHERE tier = '1m' AND datastream_id IN :ids AND bucket_ms >= :lo AND bucket_ms < :hi "
        f"GROUP BY datastream_id, {_bucket_expr('bucket_ms', HOUR)} {_UPSERT}").bindparams(ids_param),
        {"ids": ids, "lo": h_lo, "hi": h_hi})
    d_lo, d_hi = _floor(lo, DAY, LOCAL_OFFSET), _floor(hi, DAY, LOCAL_OFFSET) + DAY
    session.execute(text(
        "INSERT INTO sensing_rollups (datastream_id, tier, bucket_ms, vmin, vmax, vsum, vcount) "
        f"SELECT datastream_id, '1d', {_bucket_expr('bucket_ms', DAY, LOCAL_OFFSET)}, min(vmin), max(vmax), sum(vsum), sum(vcount) "
        "FROM sensing_rollups WHERE tier = '1h' AND datastream_id IN :ids AND bucket_ms >= :lo AND bucket_ms < :hi "
        f"GROUP BY datastream_id, {_bucket_expr('bucket_ms', DAY, LOCAL_OFFSET)} {_UPSERT}").bindparams(ids_param),
        {"ids": ids, "lo": d_lo, "hi": d_hi})


def update_stream_state(session: Session, rows) -> None:
    """Datastream phenomenonTime bounds and latest value follow the observations (out of order too)."""
    per: dict[int, list] = {}
    for r in rows:
        cur = per.get(r.datastream_id)
        end = r.t_end_ms or r.t_ms
        if cur is None:
            per[r.datastream_id] = [r.t_ms, end, r.t_ms, r.value]
        else:
            cur[0] = min(cur[0], r.t_ms)
            cur[1] = max(cur[1], end)
            if r.t_ms >= cur[2]:
                cur[2], cur[3] = r.t_ms, r.value
    session.execute(text(
        "UPDATE sta_datastreams SET "
        "phenomenon_start_ms = CASE WHEN phenomenon_start_ms IS NULL OR phenomenon_start_ms > :lo THEN :lo ELSE phenomenon_start_ms END, "
        "phenomenon_end_ms = CASE WHEN phenomenon_end_ms IS NULL OR phenomenon_end_ms < :hi THEN :hi ELSE phenomenon_end_ms END, "
        "last_value = CASE WHEN last_ms IS NULL OR last_ms <= :t THEN :v ELSE last_value END, "
        "last_ms = CASE WHEN last_ms IS NULL OR last_ms < :t THEN :t ELSE last_ms END WHERE id = :id"),
        [{"id": k, "lo": v[0], "hi": v[1], "t": v[2], "v": v[3]} for k, v in per.items()])


def choose_tier(start: int, end: int, max_points: int) -> str:
    span = max(end - start, 1)
    if span <= 6 * HOUR:
        return "raw"
    for tier, size in TIERS.items():
        if span / size <= max_points:
            return tier
    return "1d"


def series(session: Session, ds_id: int, start: int, end: int, *, tier: str | None = None, max_points: int = 2000) -> dict:
    """Points for a chart: raw readings or rollup buckets, merged further so at most ``max_points`` come back."""
    if end <= start:
        raise InvalidInput("end must be after start")
    if tier is not None and tier != "raw" and tier not in TIERS:
        raise InvalidInput(f"unknown tier {tier!r} (raw, 1m, 1h, 1d)")
    tier = tier or choose_tier(start, end, max_points)
    if tier == "raw":
        rows = session.execute(select(Observation.t_ms, Observation.result_num)
                               .where(Observation.datastream_id == ds_id, Observation.t_ms >= start, Observation.t_ms < end,
                                      Observation.result_num.is_not(None)).order_by(Observation.t_ms)).all()
        points = [[t, v, v, v, v, 1] for t, v in rows]
    else:
        rows = session.execute(select(Rollup.bucket_ms, Rollup.vmin, Rollup.vmax, Rollup.vsum, Rollup.vcount)
                               .where(Rollup.datastream_id == ds_id, Rollup.tier == tier, Rollup.bucket_ms >= start,
                                      Rollup.bucket_ms < end).order_by(Rollup.bucket_ms)).all()
        points = [[t, lo, hi, s, s / c if c else None, c] for t, lo, hi, s, c in rows]
    if len(points) > max_points:
        # Downsample: merge consecutive points into groups, keeping min/max so peaks survive.
        size = -(-len(points) // max_points)
        merged = []
        for i in range(0, len(points), size):
            g = points[i:i + size]
            s, c = sum(p[3] for p in g), sum(p[5] for p in g)
            merged.append([g[0][0], min(p[1] for p in g), max(p[2] for p in g), s, s / c if c else None, c])
        points = merged
    return {"datastream_id": ds_id, "tier": tier, "start": iso(start), "end": iso(end),
            "points": [{"t": iso(p[0]), "min": p[1], "max": p[2], "sum": p[3], "mean": p[4], "count": p[5]} for p in points]}


def export_csv(session: Session, ds: Datastream, start: int, end: int) -> Iterator[str]:
    """Raw observations of one datastream over a period, as CSV (streamed in chunks)."""
    buf = io.StringIO()
    w = csvexport.Writer(buf)
    w.writerow(["datastream_id", "datastream", "phenomenon_time", "result", "unit"])
    yield buf.getvalue()
    last = start - 1
    symbol = ds.unit_of_measurement.get("symbol", "")
    while True:
        rows = session.execute(select(Observation.t_ms, Observation.result_num, Observation.result_json)
                               .where(Observation.datastream_id == ds.id, Observation.t_ms > last, Observation.t_ms < end)
                               .order_by(Observation.t_ms).limit(10_000)).all()
        if not rows:
            return
        buf = io.StringIO()
        w = csvexport.Writer(buf)
        for t, v, j in rows:
            w.writerow([ds.id, ds.name, iso(t), v if v is not None else j, symbol])
        last = rows[-1][0]
        yield buf.getvalue()


def apply_retention(session: Session, now: int | None = None, retention: dict | None = None) -> dict:
    """Delete what has outlived its tier; returns rows removed per tier."""
    now = now or now_ms()
    retention = retention or RETENTION_DAYS
    removed = {}
    for tier, days in retention.items():
        if days is None:
            continue
        cutoff = now - int(days * DAY)
        if tier == "raw":
            res = session.execute(delete(Observation).where(Observation.t_ms < cutoff))
        else:
            res = session.execute(delete(Rollup).where(Rollup.tier == tier, Rollup.bucket_ms < cutoff))
        removed[tier] = res.rowcount
    return removed


def model_series(session: Session):
    """A warning-model ``series`` over the SensorThings observations: (POSIX seconds, numeric results). The warning
    routes read it when the app is wired (``AppContext.series_source``), and so does the consumer that re-evaluates
    the risk points a batch feeds (sensing.subscriptions.evaluate_fed_risk_points)."""
    import numpy as np

    def series(datastream_id: int, start, end):
        rows = session.execute(
            select(Observation.t_ms, Observation.result_num)
            .where(Observation.datastream_id == datastream_id, Observation.result_num.is_not(None),
                   Observation.t_ms >= int(start.timestamp() * 1000), Observation.t_ms <= int(end.timestamp() * 1000))
            .order_by(Observation.t_ms)).all()
        return (np.array([r[0] / 1000.0 for r in rows], dtype=float), np.array([r[1] for r in rows], dtype=float))

    return series

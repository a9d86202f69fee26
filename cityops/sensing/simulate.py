"""The July storm over 义和镇 (the signature scenario), synthesised deterministically.

Rain gauges in 义和镇 report every hour, rising to a peak in the afternoon; the GNSS stations on the
老沟湾 slope report every ``step_minutes`` and accelerate as the rain soaks in (velocity grows as
v0 / (1 − t/t_f), the inverse-velocity shape of a slope approaching failure, science.md §3.3); the crack
and tilt meters on the houses there follow the displacement. The same seed gives the same numbers.

Runs compressed (``speed=None``: as fast as the store takes it, for tests; the 24 hours end now) or live
(``speed`` = simulated seconds per wall-clock second; 1 = real time). A live run stamps each step's readings
with the moment they are sent, so that every reading, warning, alarm and case it causes carries a time on
the clock a visitor reads, never one in the future; at a speed above 1 the storm is a time-lapse (its 24
hours of rain and slope movement pass in 24 h / speed). Observations go through the ingest write path
directly, or to a running server (``post``) so that its live alarm stream shows them.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from typing import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cityops.core.errors import InvalidInput
from cityops.org.models import Unit
from cityops.sensing import ingest
from cityops.sensing.demo import SCENARIO_RISK_POINT
from cityops.sensing.models import Alarm, Datastream, Thing
from cityops.sensing.timeutil import iso, now_ms, parse_instant

HOUR = 3_600_000
#: 2026-07-23 00:00 China time: a fixed start for reproducible series.
DEFAULT_START = parse_instant("2026-07-23T00:00:00+08:00")
PEAK_HOUR, PEAK_MM, SPREAD_H = 14, 45.0, 4.0
ONSET_H, FAILURE_H, V0 = 8.0, 24.5, 1.5  # acceleration starts at ONSET_H; t_f at FAILURE_H; mm/h scale


@dataclass
class Streams:
    rain: list[int]
    gnss: list[int]
    crack: list[int]
    tilt: list[int]


def find_streams(session: Session, township: str = "义和镇", risk_point: str = SCENARIO_RISK_POINT) -> Streams:
    town = session.scalar(select(Unit).where(Unit.name == township, Unit.level == "township"))
    if town is None:
        raise InvalidInput(f"no township {township!r}: build the demo district first")

    def ids(device_type: str, **where) -> list[int]:
        q = select(Datastream.id).join(Thing, Thing.id == Datastream.thing_id).where(Thing.device_type == device_type)
        if "path" in where:
            q = q.where(Thing.unit_path.startswith(where["path"]))
        if "rp" in where:
            q = q.where(Thing.risk_point_code == where["rp"])
        return list(session.scalars(q.order_by(Datastream.id)))

    s = Streams(ids("rain_gauge", path=town.path), ids("gnss", rp=risk_point), ids("crack_meter", rp=risk_point),
                ids("tilt_meter", rp=risk_point))
    if not s.rain or not s.gnss:
        raise InvalidInput(f"no rain gauges in {township} or GNSS stations at {risk_point}: run the demo's sensors step")
    return s


def rainfall(hour: float, factor: float) -> float:
    return PEAK_MM * factor * math.exp(-((hour - PEAK_HOUR) / SPREAD_H) ** 2)


def displacement(hours: float, factor: float) -> float:
    """Cumulative displacement (mm) since the storm began: steady creep, then v0/(1 − t/t_f) acceleration."""
    if hours <= ONSET_H:
        return V0 * 0.1 * hours * factor
    base = V0 * 0.1 * ONSET_H
    span = FAILURE_H - ONSET_H
    t = min(hours - ONSET_H, span - 0.05)
    # ∫ v0 / (1 − u/span) du = −v0·span·ln(1 − t/span)
    return (base - V0 * span * math.log(1 - t / span)) * factor


def storm_steps(streams: Streams, *, start_ms: int = DEFAULT_START, hours: int = 24, step_minutes: int = 10, seed: int = 20260723):
    """Yield (t_ms, [Row…]) per step; deterministic for a seed."""
    rng = random.Random(seed)
    rain_factor = {ds: rng.uniform(0.8, 1.25) for ds in streams.rain}
    gnss_factor = {ds: rng.uniform(0.7, 1.1) for ds in streams.gnss}
    step = step_minutes * 60_000
    for k in range(1, hours * 60 // step_minutes + 1):
        # Devices report 30 s after the mark (as real loggers do), so a storm laid over the demo's hourly
        # quiet-day history adds readings instead of colliding with them (a resend would be skipped).
        t = start_ms + k * step + 30_000
        h = (k * step) / HOUR
        rows = []
        if (k * step) % HOUR == 0:  # gauges report hourly totals
            for ds, f in rain_factor.items():
                rows.append(ingest.Row(ds, t, None, None, round(rainfall(h - 0.5, f) + rng.uniform(0, 0.4), 1)))
        for ds, f in gnss_factor.items():
            rows.append(ingest.Row(ds, t, None, None, round(displacement(h, f) + rng.gauss(0, 0.3), 2)))
        worst = max(displacement(h, f) for f in gnss_factor.values())
        for ds in streams.crack:
            rows.append(ingest.Row(ds, t, None, None, round(0.4 + 0.2 * worst, 3)))
        for ds in streams.tilt:
            rows.append(ingest.Row(ds, t, None, None, round(0.3 + 0.02 * worst, 3)))
        yield t, rows


def default_start(hours: int, live: bool) -> int:
    """Live runs start now; compressed runs end now (the storm lies in the recent past, after any history)."""
    hour_now = (now_ms() // HOUR) * HOUR
    return hour_now if live else hour_now - hours * HOUR


def simulate_storm(sessions: sessionmaker[Session], *, start_ms: int | None = None, hours: int = 24, step_minutes: int = 10,
                   seed: int = 20260723, speed: float | None = None, post: Callable[[list[dict]], None] | None = None,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Run the storm; returns what was written and the alarms open at the end, by severity."""
    if start_ms is None:
        start_ms = default_start(hours, live=bool(speed))
    with sessions() as session:
        streams = find_streams(session)
        metas = {ds_id: ingest.meta_for(session, session.get(Datastream, ds_id))
                 for ds_id in streams.rain + streams.gnss + streams.crack + streams.tilt}
    state = None
    from cityops.sensing.rules import EngineState

    state = EngineState()
    written = 0
    last = 0
    for t, rows in storm_steps(streams, start_ms=start_ms, hours=hours, step_minutes=step_minutes, seed=seed):
        if speed:  # live: the readings are sent now, so they say now (one millisecond apart at least)
            t = last = max(now_ms(), last + 1)
            rows = [replace(r, t_ms=t) for r in rows]
        if post is not None:
            post([{"datastream_id": r.datastream_id, "phenomenonTime": iso(r.t_ms), "result": r.value} for r in rows])
        else:
            with sessions() as session:
                ingest.write_batch(session, rows, metas, state)
                session.commit()
        written += len(rows)
        if progress:
            progress(f"{iso(t)}: {len(rows)} observations")
        if speed:
            time.sleep(step_minutes * 60 / speed)
    with sessions() as session:
        open_alarms = dict(session.execute(select(Alarm.severity, func.count()).where(Alarm.status.in_(("active", "acknowledged")))
                                           .group_by(Alarm.severity)).all())
    return {"observations": written, "rain_gauges": len(streams.rain), "gnss": len(streams.gnss), "open_alarms": open_alarms}


def http_poster(url: str, token: str) -> Callable[[list[dict]], None]:
    """Post batches to a running server's bulk ingest, retrying politely on back-pressure (503)."""
    import json
    import urllib.error
    import urllib.request

    def post(observations: list[dict]) -> None:
        body = json.dumps({"observations": observations}).encode()
        for _ in range(30):
            req = urllib.request.Request(url.rstrip("/") + "/api/sensing/observations", data=body, method="POST",
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, timeout=30):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code != 503:
                    raise InvalidInput(f"server refused the batch: {exc.code} {exc.read().decode(errors='replace')}") from None
                time.sleep(float(exc.headers.get("Retry-After", "1")))
        raise InvalidInput("server stayed busy (503) for 30 attempts")

    return post

"""Risk points (风险点位) and their warning evaluation. No HTTP here.

``evaluate_risk_point`` reads the datastreams linked to a risk point through a ``series`` callable, runs the
warning models of ``cityops.warning.models`` on them, records the level *and why* (the observations and model
output that decided it) on the risk point, stores every level change as a warning (the history, each one a
CAP message) and, after the commit, tells the subscribers of ``on_level_change`` (the task center activates
plans from there).

``series(datastream_id, start, end) -> (times, values)``: times as aware datetimes or POSIX seconds, values as
floats, ordered by time. Conventions per indicator: rainfall = rain per reading (mm); displacement =
cumulative displacement (mm); tilt = overall tilt against the construction baseline (%).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Callable

import numpy as np
from shapely.geometry import Point
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import Conflict, InvalidGeometry, InvalidInput, NotFound
from cityops.housing.models import Building
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.warning.catalogue import Catalogue, catalogue
from cityops.warning.models import antecedent, displacement, house, rainfall
from cityops.warning.models.levels import LEVEL_KEYS, RANK, level_key
from cityops.warning.tables import RiskPoint, RiskWarning, StoredObservation

log = logging.getLogger("cityops.warning")

Series = Callable[[int, datetime, datetime], tuple[np.ndarray, np.ndarray]]
BEIJING = timezone(timedelta(hours=8))
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")
ROLES = ("rainfall", "displacement", "tilt")
#: Observations listed in an assessment's evidence per indicator (the full series stays in the store).
EVIDENCE_READINGS = 12


@dataclass(frozen=True)
class LevelChange:
    """What ``on_level_change`` subscribers receive, after the change is committed."""

    risk_point_code: str
    risk_point_name: str
    hazard_type: str
    unit_code: str
    unit_path: str
    previous_level: str
    level: str
    warning_id: int
    identifier: str
    msg_type: str
    at: datetime
    assessment: dict
    building_codes: list = field(default_factory=list)
    lon: float | None = None
    lat: float | None = None
    #: The engine the change was committed to: subscribers open their own session on it.
    bind: object = None


#: Subscribers called with a ``LevelChange`` after every committed level change. A failing subscriber is
#: logged and does not undo the warning (it is already stored) nor stop the other subscribers.
on_level_change: list[Callable[[LevelChange], None]] = []


@dataclass
class Assessment:
    risk_point_code: str
    at: datetime
    level: str
    previous_level: str
    changed: bool
    indicators: list[dict]
    reasons: list[str]
    warning_id: int | None = None

    def as_dict(self) -> dict:
        return {"risk_point_code": self.risk_point_code, "at": self.at.isoformat(), "level": self.level,
                "previous_level": self.previous_level, "changed": self.changed, "indicators": self.indicators,
                "reasons": self.reasons}


# ------------------------------------------------------------------------------------------ helpers

def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise InvalidInput("evaluation time must be timezone-aware")
    return now.astimezone(UTC)


def _as_seconds(times) -> np.ndarray:
    t = np.asarray(times)
    if t.size == 0:
        return np.zeros(0)
    if t.dtype == object:
        return np.array([x.timestamp() for x in t], dtype=float)
    if np.issubdtype(t.dtype, np.datetime64):
        return t.astype("datetime64[ms]").astype(np.int64) / 1000.0
    return t.astype(float)


def _read(series: Series, datastream_id: int, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
    times, values = series(int(datastream_id), start, end)
    t, v = _as_seconds(times), np.asarray(values, dtype=float)
    if t.shape != v.shape:
        raise InvalidInput(f"datastream {datastream_id}: times and values differ in length")
    keep = np.isfinite(v) & (t >= start.timestamp()) & (t <= end.timestamp())
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], v[keep][order]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(float(seconds), UTC).isoformat(timespec="seconds")


def _evidence(t: np.ndarray, v: np.ndarray, start: datetime, end: datetime) -> dict:
    return {"window": [start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds")], "count": int(len(t)),
            "first": _iso(t[0]) if len(t) else None, "last": _iso(t[-1]) if len(t) else None,
            "recent": [[_iso(a), round(float(b), 4)] for a, b in zip(t[-EVIDENCE_READINGS:], v[-EVIDENCE_READINGS:])]}


def _no_data(role: str, ds: int, start: datetime, end: datetime) -> dict:
    return {"indicator": role, "datastream_id": ds, "status": "no_data", "level": "none", "rank": 0,
            "observations": {"window": [start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds")], "count": 0},
            "summary_zh": f"数据流 {ds} 在评估时段内无观测", "summary_en": f"datastream {ds} has no observations in the window"}


# -------------------------------------------------------------------------------------- indicators

def _rainfall_indicator(cat: Catalogue, rp: RiskPoint, ds: int, series: Series, now: datetime) -> dict:
    cfg = {**cat.params["rainfall"], **rp.model.get("rainfall", {})}
    ant = {**cat.params["antecedent"], **rp.model.get("antecedent", {})}
    thresholds = cat.threshold_sets[rp.model.get("threshold_set", next(iter(cat.threshold_sets)))]
    durations = [int(d) for d in cfg["durations_h"]]
    hours = max(max(durations), int(cfg["dry_spell_h"]) * 2, 24 * int(ant["n_days"]))
    # The current rainfall day starts at the configured Beijing hour (science §1.4: state the boundary).
    local = now.astimezone(BEIJING)
    day_start = local.replace(hour=int(ant["day_start_hour"]), minute=0, second=0, microsecond=0)
    if day_start > local:
        day_start -= timedelta(days=1)
    start = min(now - timedelta(hours=hours), day_start - timedelta(days=int(ant["n_days"])))
    t, v = _read(series, ds, start, now)
    if len(t) == 0:
        return _no_data("rainfall", ds, start, now)
    if np.any(v < 0):
        raise InvalidInput(f"datastream {ds}: negative rainfall in the window")
    # Hourly bins ending now: bin k holds readings in (now − (hours−k) h, now − (hours−k−1) h].
    age_h = np.ceil((now.timestamp() - t) / 3600.0).astype(int)  # 1 = the last hour
    recent = age_h <= hours
    hourly = np.bincount(np.clip(hours - age_h[recent], 0, hours - 1), weights=v[recent], minlength=hours)[None, :]
    hourly = np.where(hourly >= float(cfg["resolution_mm"]), hourly, 0.0)
    event_h = rainfall.current_event_hours(hourly, int(cfg["dry_spell_h"]), 0.0)
    ev = rainfall.evaluate_event(hourly, thresholds, durations, event_hours=event_h)
    r0 = float(v[t >= day_start.timestamp()].sum())
    days = antecedent.daily_totals(t, v, day_start.timestamp(), int(ant["n_days"]))
    pa = antecedent.antecedent_rainfall(days, float(ant["K"]))
    rank = int(ev.rank[0])
    d = float(ev.duration_h[0])
    index = None if np.isnan(ev.index[0]) else round(float(ev.index[0]), 3)
    thr = {k: round(float(thresholds.alpha[k] * d**thresholds.gamma), 2) for k in LEVEL_KEYS[1:]}
    obs = round(float(ev.observed_mm[0]), 2)
    return {
        "indicator": "rainfall", "datastream_id": ds, "status": "ok", "level": level_key(rank), "rank": rank,
        "model": thresholds.metadata(),
        "output": {"event_hours": int(event_h[0]), "deciding_duration_h": d, "event_rainfall_mm": obs,
                   "exceedance_index": index, "thresholds_mm": thr,
                   "by_duration": {str(int(dd)): round(float(e), 2) for dd, e in zip(ev.durations_h[0], ev.observed_by_duration[0])},
                   "current_day_mm": round(r0, 2), "antecedent_mm": round(float(pa), 3), "effective_mm": round(r0 + float(pa), 3),
                   "antecedent_K": float(ant["K"]), "antecedent_days": int(ant["n_days"]),
                   "day_start": day_start.isoformat(timespec="seconds")},
        "observations": _evidence(t, v, start, now),
        "summary_zh": f"{int(d)} 小时累计雨量 {obs} mm,{'达到' + cat.levels[level_key(rank)]['name_zh'] + '阈值 ' + str(thr[level_key(rank)]) + ' mm' if rank else '未达到蓝色阈值 ' + str(thr['blue']) + ' mm'};前期有效降雨量 {round(float(pa), 1)} mm",
        "summary_en": f"{obs} mm in {int(d)} h, {'at or above the ' + level_key(rank) + ' threshold ' + str(thr[level_key(rank)]) + ' mm' if rank else 'below the blue threshold ' + str(thr['blue']) + ' mm'}; antecedent effective rainfall {round(float(pa), 1)} mm",
    }


def _displacement_indicator(cat: Catalogue, rp: RiskPoint, ds: int, series: Series, now: datetime) -> dict:
    ta = {**cat.params["tangent_angle"], **rp.model.get("tangent_angle", {})}
    iv = {**cat.params["inverse_velocity"], **rp.model.get("inverse_velocity", {})}
    cfg = {"window_days": 30, "interval_h": 24.0, "baseline_days": 7, "iv_interval_h": 6.0, "iv_smoothing": 2,
           **rp.model.get("displacement", {})}
    start = now - timedelta(days=float(cfg["window_days"]))
    t, s = _read(series, ds, start, now)
    if len(t) < 3:
        return _no_data("displacement", ds, start, now) if len(t) == 0 else {
            **_no_data("displacement", ds, start, now), "status": "insufficient_data", "observations": _evidence(t, s, start, now),
            "summary_zh": f"数据流 {ds} 观测不足 3 条", "summary_en": f"datastream {ds}: fewer than 3 readings"}
    step = float(cfg["interval_h"]) / 24.0  # days
    days = (t - t[0]) / 86400.0
    grid = np.arange(days[-1], days[0] - 1e-9, -step)[::-1]  # regular steps ending at the last reading
    if len(grid) < 3:
        grid = days
    cum = np.interp(grid, days, s)
    dt = np.diff(grid)
    v_i = np.diff(cum) / dt  # mm/day per interval
    floor = float(iv["noise_floor_mm_per_day"])
    if "v_constant_mm_per_day" in cfg:
        v_const = max(float(cfg["v_constant_mm_per_day"]), floor)
        v_source = "configured"
    else:  # the first baseline_days of the window taken as the constant-velocity stage
        base = days <= days[0] + float(cfg["baseline_days"])
        v_const = displacement.constant_stage_velocity(days[base], s[base], floor) if base.sum() >= 2 else floor
        v_const = max(v_const, floor)
        v_source = f"fitted over the first {cfg['baseline_days']} days"
    angles = displacement.tangent_angle(np.diff(cum), dt, v_const)
    ranks = displacement.tangent_rank(angles, ta["yellow_above_deg"], ta["orange_from_deg"], ta["red_from_deg"])
    rank = int(ranks[-1])
    sustained = int(ta["red_sustained_readings"])
    notes = []
    if rank == 4 and not (len(ranks) >= sustained and np.all(ranks[-sustained:] == 4)):
        rank = 3
        notes.append(f"red needs α ≥ {ta['red_from_deg']}° over {sustained} consecutive readings; held at orange")
    if rank == 1 and abs(v_i[-1]) <= floor:
        rank = 0  # at rest within the noise: no 注意级 for a still slope
    # Inverse velocity on a finer grid (the tangent angle uses the daily interval; a forecast needs more points),
    # smoothed by a short moving average, fitted on the readings after the onset of acceleration.
    forecast = None
    iv_step = float(cfg.get("iv_interval_h", 6.0)) / 24.0
    iv_grid = np.arange(days[-1], days[0] - 1e-9, -iv_step)[::-1]
    onset = None
    if len(iv_grid) >= 4:
        iv_v = displacement.moving_average(np.diff(np.interp(iv_grid, days, s)) / np.diff(iv_grid), int(cfg.get("iv_smoothing", 2)))
        onset = displacement.onset_of_acceleration(iv_v)
        if onset is not None:
            f = displacement.inverse_velocity_forecast(iv_grid[1:][onset:], iv_v[onset:], min_points=int(iv["min_points"]),
                                                       min_r2=float(iv["min_r2"]), confidence=float(iv["confidence"]),
                                                       noise_floor=floor)
            if f is not None:
                to_s = lambda d: t[0] + d * 86400.0  # noqa: E731
                lead_h = (to_s(f.low) - now.timestamp()) / 3600.0
                forecast = {"t_failure": _iso(to_s(f.t_failure)), "low": _iso(to_s(f.low)), "high": _iso(to_s(f.high)),
                            "r2": round(f.r2, 4), "points": f.n, "lead_h_lower_bound": round(lead_h, 1)}
                if lead_h < float(iv["evacuation_lead_h"]):
                    rank = 4
                    notes.append(f"predicted failure (lower bound) within {round(lead_h, 1)} h, under the evacuation lead time "
                                 f"{iv['evacuation_lead_h']} h")
    angle = round(float(angles[-1]), 3)
    return {
        "indicator": "displacement", "datastream_id": ds, "status": "ok", "level": level_key(rank), "rank": rank,
        "model": {"key": "improved_tangent_angle", "formula": "alpha = arctan(v_i / v)", "source": "许强等 2009 地质通报 28(4):501-505",
                  "parameters": {**ta, "v_constant_mm_per_day": round(v_const, 4), "v_source": v_source},
                  "inverse_velocity": {"formula": "1/v = a t + b, t_f = -b/a", "source": "Fukuzono 1985; Voight 1988", **iv}},
        "output": {"tangent_angle_deg": angle, "velocity_mm_per_day": round(float(v_i[-1]), 4),
                   "velocity_ratio": round(float(v_i[-1] / v_const), 3), "cumulative_mm": round(float(s[-1]), 3),
                   "recent_angles_deg": [round(float(a), 2) for a in angles[-5:]], "onset_index": onset,
                   "failure_forecast": forecast, "notes": notes},
        "observations": _evidence(t, s, start, now),
        "summary_zh": f"位移速率 {round(float(v_i[-1]), 2)} mm/d,改进切线角 {angle}°" + (f",预测破坏时间 {forecast['t_failure']}" if forecast else ""),
        "summary_en": f"displacement rate {round(float(v_i[-1]), 2)} mm/d, improved tangent angle {angle}°"
                      + (f", predicted failure {forecast['t_failure']}" if forecast else ""),
    }


def _tilt_indicator(cat: Catalogue, rp: RiskPoint, item: dict, series: Series, now: datetime, storeys: int) -> dict:
    cfg = cat.params["house_tilt"]
    ds = int(item["id"])
    start = now - timedelta(days=float(rp.model.get("tilt", {}).get("window_days", 30)))
    t, v = _read(series, ds, start, now)
    if len(t) == 0:
        return _no_data("tilt", ds, start, now)
    limits = {k: cfg[k] for k in ("low_rise_max_storeys", "limit_low_rise_pct", "limit_other_pct")}
    noise = float(rp.model.get("tilt", {}).get("noise_pct", 0.01))
    rising = np.diff(np.abs(v)) > noise
    trend = int(len(rising) - (np.flatnonzero(~rising)[-1] + 1)) if (~rising).any() else int(len(rising))
    tilt = float(v[-1])
    rank = house.tilt_ladder_rank(tilt, storeys, yellow_fraction=cfg["yellow_fraction"], orange_fraction=cfg["orange_fraction"],
                                  crack_tilt_pct=cfg["crack_tilt_pct"], settlement_cracks=bool(item.get("settlement_cracks")),
                                  trend_readings=trend, **limits)
    limit = house.tilt_limit_pct(storeys, **limits)
    dangerous = house.foundation_dangerous(tilt, storeys, **limits)
    return {
        "indicator": "tilt", "datastream_id": ds, "building_code": item.get("building_code"), "status": "ok",
        "level": level_key(rank), "rank": rank,
        "model": {"key": "jgj125_tilt_ladder", "formula": "tilt vs limit (3 % for <= 2 storeys, else 2 %)",
                  "source": "JGJ 125-2016 §5.2; science.md §4.2", "parameters": {**cfg, "storeys": storeys}},
        "output": {"tilt_pct": round(tilt, 4), "limit_pct": limit, "share_of_limit": round(abs(tilt) / limit, 3),
                   "foundation_dangerous": dangerous, "rising_readings": trend},
        "observations": _evidence(t, v, start, now),
        "summary_zh": f"房屋倾斜 {round(tilt, 2)}%(限值 {limit}%,{storeys} 层)" + (",地基危险" if dangerous else ""),
        "summary_en": f"house tilt {round(tilt, 2)} % (limit {limit} %, {storeys} storeys)" + (", foundation dangerous" if dangerous else ""),
    }


def _combine(cat: Catalogue, indicators: list[dict]) -> tuple[int, list[str]]:
    """Highest indicator level; red only with a second independent indicator (science §3.5 project rule)."""
    if not indicators:
        return 0, ["no datastreams linked"]
    ranks = sorted((i["rank"] for i in indicators), reverse=True)
    rank = ranks[0]
    reasons = [i["summary_zh"] for i in sorted(indicators, key=lambda i: -i["rank"]) if i["status"] == "ok"]
    reasons += [i["summary_zh"] for i in indicators if i["status"] != "ok"]
    need = RANK[cat.params["combination"]["red_second_indicator"]]
    if rank == 4 and (len(ranks) < 2 or ranks[1] < need):
        rank = 3
        reasons.insert(0, f"红色预警需第二个独立指标达到{cat.levels[level_key(need)]['name_zh']}及以上,暂定橙色")
    return rank, reasons


# -------------------------------------------------------------------------------------- evaluation

def _storeys(session: Session, codes: list[str]) -> dict[str, int]:
    if not codes:
        return {}
    return dict(session.execute(select(Building.code, Building.floors).where(Building.code.in_(codes))).all())


def _identifier(cat: Catalogue, rp: RiskPoint, seq: int) -> str:
    return f"{cat.cap['district_code']}-{rp.code}-{seq:04d}"


def _hold_downgrade(cat: Catalogue, rp: RiskPoint, rank: int, now: datetime, reasons: list[str]) -> int:
    """Hysteresis: a lower level takes over only once every assessment for ``downgrade_hold_hours`` said lower;
    until then the current level is held (and why is recorded). A level not assessed for that long is stale
    and is not held."""
    hold = timedelta(hours=float(cat.params["combination"]["downgrade_hold_hours"]))
    current = RANK[rp.level]
    attributes = dict(rp.attributes or {})
    lower_since = attributes.pop("lower_since", None)
    fresh = rp.assessed_at is not None and now - _aware(rp.assessed_at) <= hold
    if rank < current and fresh:
        since = datetime.fromisoformat(lower_since) if lower_since else now
        if now - since < hold:
            attributes["lower_since"] = since.isoformat()
            reasons.insert(0, f"降级需持续 {hold.total_seconds() / 3600:g} 小时,维持{cat.level(rp.level)['name_zh']} "
                              f"(a lower level must last {hold.total_seconds() / 3600:g} h: level held)")
            rank = current
    rp.attributes = attributes
    return rank


def evaluate_risk_point(session: Session, code: str, series: Series, now: datetime) -> Assessment:
    """Evaluate one risk point at ``now`` from its linked datastreams; store the assessment, and a warning when
    the level changes; commit; then call the ``on_level_change`` subscribers. Re-evaluating with the same data
    gives the same level and stores nothing new (idempotent)."""
    now = _aware(now)
    cat = catalogue()
    rp = session.scalar(select(RiskPoint).where(RiskPoint.code == code))
    if rp is None:
        raise NotFound(f"risk point {code!r} not found")
    links = rp.datastreams or {}
    indicators: list[dict] = []
    if links.get("rainfall") is not None:
        indicators.append(_rainfall_indicator(cat, rp, int(links["rainfall"]), series, now))
    for ds in links.get("displacement", []) or []:
        indicators.append(_displacement_indicator(cat, rp, int(ds), series, now))
    tilt_items = [i if isinstance(i, dict) else {"id": i} for i in links.get("tilt", []) or []]
    floors = _storeys(session, [i["building_code"] for i in tilt_items if i.get("building_code")])
    for item in tilt_items:
        storeys = int(item.get("storeys") or floors.get(item.get("building_code"), 0) or rp.model.get("tilt", {}).get("storeys", 2))
        indicators.append(_tilt_indicator(cat, rp, item, series, now, storeys))
    rank, reasons = _combine(cat, indicators)
    previous = rp.level
    if indicators and all(i["status"] != "ok" for i in indicators) and previous != "none":
        # Silence is not safety: with no usable observation at all the level is held, never cancelled.
        rank = RANK[previous]
        reasons.insert(0, "无有效观测,维持原预警等级 (no usable observations: level held)")
    rank = _hold_downgrade(cat, rp, rank, now, reasons)
    level = level_key(rank)
    assessment = Assessment(rp.code, now, level, previous, level != previous, indicators, reasons)
    rp.assessment = assessment.as_dict()
    rp.assessed_at = now
    change = None
    if level != previous:
        seq = (session.scalar(select(func.count()).select_from(RiskWarning).where(RiskWarning.risk_point_id == rp.id)) or 0) + 1
        last = session.scalar(select(RiskWarning).where(RiskWarning.risk_point_id == rp.id).order_by(RiskWarning.id.desc()).limit(1))
        msg_type = "Alert" if previous == "none" else "Cancel" if level == "none" else "Update"
        refs = None
        if msg_type != "Alert" and last is not None:
            # CAP references: sender,identifier,sent of the message this one updates or cancels.
            from cityops.warning.cap import cap_time

            refs = f"{cat.cap['sender']},{last.identifier},{cap_time(last.issued_at)}"
        warning = RiskWarning(risk_point_id=rp.id, identifier=_identifier(cat, rp, seq), msg_type=msg_type, cap_references=refs,
                              level=level, previous_level=previous, issued_at=now, unit_path=rp.unit_path,
                              reasons={"reasons": reasons, "indicators": indicators})
        session.add(warning)
        rp.level, rp.level_since = level, now
        session.flush()
        assessment.warning_id = warning.id
        audit.record(session, audit.SYSTEM, "warning.level_change", "risk_point", rp.code,
                     before={"level": previous}, after={"level": level, "warning": warning.identifier}, unit_path=rp.unit_path)
        geom = rp.geom
        change = LevelChange(rp.code, rp.name, rp.hazard_type, rp.unit_code, rp.unit_path, previous, level, warning.id,
                             warning.identifier, msg_type, now, assessment.as_dict(), list(rp.building_codes or []),
                             geom.x if geom is not None else None, geom.y if geom is not None else None,
                             session.get_bind())
    session.commit()
    if change is not None:
        for subscriber in list(on_level_change):
            try:
                subscriber(change)
            except Exception:  # noqa: BLE001 - a subscriber must not undo a committed warning
                log.exception("level-change subscriber %r failed for %s", subscriber, change.identifier)
    return assessment


def stored_series(session: Session) -> Series:
    """A ``series`` reading the ``warning_observations`` store."""

    def series(datastream_id: int, start: datetime, end: datetime):
        rows = session.execute(select(StoredObservation.phenomenon_time, StoredObservation.value)
                               .where(StoredObservation.datastream_id == datastream_id,
                                      StoredObservation.phenomenon_time >= start, StoredObservation.phenomenon_time <= end)
                               .order_by(StoredObservation.phenomenon_time)).all()
        return np.array([r[0].timestamp() for r in rows], dtype=float), np.array([r[1] for r in rows], dtype=float)

    return series


def series_source(session: Session) -> Series:
    """Where the routes read observations: the stored observations by default; the sensing time series
    replaces this function at start-up (``cityops.warning.service.series_source = factory``)."""
    return stored_series(session)


def store_observations(session: Session, datastream_id: int, times, values) -> int:
    """Add observations to the store, skipping those already there (same datastream and time): idempotent."""
    t = _as_seconds(times)
    v = np.asarray(values, dtype=float)
    if t.shape != v.shape or not np.all(np.isfinite(v)):
        raise InvalidInput("observations need one finite value per time")
    existing = {r.timestamp() for r in session.scalars(select(StoredObservation.phenomenon_time)
                                                        .where(StoredObservation.datastream_id == datastream_id))}
    rows = [{"datastream_id": int(datastream_id), "phenomenon_time": datetime.fromtimestamp(float(a), UTC), "value": float(b)}
            for a, b in zip(t, v) if float(a) not in existing]
    if rows:
        session.execute(StoredObservation.__table__.insert(), rows)
    return len(rows)


# --------------------------------------------------------------------------------------- registry

def _validate_links(session: Session, scope: Scope, data: dict) -> None:
    links = data.get("datastreams") or {}
    if not isinstance(links, dict) or set(links) - set(ROLES):
        raise InvalidInput(f"datastreams: unknown roles {sorted(set(links) - set(ROLES))}; expected {ROLES}")
    ids = []
    if links.get("rainfall") is not None:
        ids.append(links["rainfall"])
    ids += list(links.get("displacement") or [])
    for item in links.get("tilt") or []:
        ids.append(item.get("id") if isinstance(item, dict) else item)
    if any(not isinstance(i, int) or isinstance(i, bool) or i <= 0 for i in ids):
        raise InvalidInput("datastreams: ids must be positive integers")
    cat = catalogue()
    model = data.get("model") or {}
    ts = model.get("threshold_set")
    if ts is not None and ts not in cat.threshold_sets:
        raise InvalidInput(f"model.threshold_set {ts!r} is unknown; known: {sorted(cat.threshold_sets)}")
    v = (model.get("displacement") or {}).get("v_constant_mm_per_day")
    if v is not None and not (isinstance(v, (int, float)) and 0 < v < 10_000):
        raise InvalidInput("model.displacement.v_constant_mm_per_day must be a positive number of mm/day")
    codes = data.get("building_codes") or []
    if codes:
        found = dict(session.execute(select(Building.code, Building.unit_path).where(Building.code.in_(codes))).all())
        missing = [c for c in codes if c not in found or not scope.covers(found[c])]
        if missing:
            raise InvalidInput(f"building_codes: unknown buildings {missing[:10]}")


def create_risk_point(session: Session, actor: audit.Actor, scope: Scope, data: dict) -> RiskPoint:
    """Register a risk point inside the caller's scope; validated, all or nothing."""
    cat = catalogue()
    code = data["code"]
    if not CODE_PATTERN.match(code):
        raise InvalidInput(f"code {code!r} must be 2–64 letters, digits, '_', '.' or '-' (it becomes part of CAP identifiers)")
    if data["hazard_type"] not in cat.hazard_types:
        raise InvalidInput(f"hazard_type {data['hazard_type']!r} is unknown; known: {sorted(cat.hazard_types)}")
    unit = session.scalar(select(Unit).where(Unit.code == data["unit_code"]))
    if unit is None or not scope.covers(unit.path):
        raise NotFound(f"unit {data['unit_code']!r} not found")
    geom = data["geometry"]
    if not isinstance(geom, Point) or geom.is_empty:
        raise InvalidGeometry("a risk point's geometry must be a Point")
    if unit.geom is not None and not unit.geom.buffer(1e-6).covers(geom):
        raise InvalidGeometry(f"the point lies outside unit {unit.code} ({unit.name})")
    radius = float(data.get("radius_m", 200.0))
    if not 1 <= radius <= 50_000:
        raise InvalidInput("radius_m must be between 1 and 50000")
    _validate_links(session, scope, data)
    if session.scalar(select(RiskPoint.id).where(RiskPoint.code == code)) is not None:
        raise Conflict(f"risk point {code!r} already exists")
    rp = RiskPoint(code=code, name=data["name"], hazard_type=data["hazard_type"], geom=geom, radius_m=radius,
                   unit_code=unit.code, unit_path=unit.path, building_codes=list(data.get("building_codes") or []),
                   datastreams=dict(data.get("datastreams") or {}), model=dict(data.get("model") or {}), level="none",
                   attributes=dict(data.get("attributes") or {}))
    session.add(rp)
    session.flush()
    audit.record(session, actor, "warning.risk_point.create", "risk_point", code, after=risk_point_dict(rp), unit_path=unit.path)
    return rp


def risk_point_dict(rp: RiskPoint, *, detail: bool = False) -> dict:
    cat = catalogue()
    lv = cat.levels[rp.level]
    data = {"code": rp.code, "name": rp.name, "hazard_type": rp.hazard_type,
            "hazard_name": cat.hazard_types.get(rp.hazard_type, {}).get("name_zh"),
            "lon": rp.geom.x if rp.geom is not None else None, "lat": rp.geom.y if rp.geom is not None else None,
            "radius_m": rp.radius_m, "unit_code": rp.unit_code, "unit_path": rp.unit_path, "level": rp.level,
            "level_name_zh": lv["name_zh"], "level_name_en": lv["name_en"], "colour": lv["colour"],
            "level_since": rp.level_since.isoformat() if rp.level_since else None,
            "assessed_at": rp.assessed_at.isoformat() if rp.assessed_at else None,
            "building_codes": rp.building_codes, "datastreams": rp.datastreams}
    if detail:
        data.update(model=rp.model, attributes=rp.attributes, assessment=rp.assessment)
    else:
        data["reasons"] = (rp.assessment or {}).get("reasons", [])[:3]
    return data


def warning_dict(w: RiskWarning, code: str | None = None) -> dict:
    cat = catalogue()
    return {"id": w.id, "identifier": w.identifier, "risk_point_code": code, "msg_type": w.msg_type, "level": w.level,
            "level_name_zh": cat.levels[w.level]["name_zh"], "previous_level": w.previous_level,
            "issued_at": w.issued_at.isoformat(), "references": w.cap_references, "unit_path": w.unit_path,
            "reasons": (w.reasons or {}).get("reasons", []), "cap_url": f"/cap/alerts/{w.identifier}.xml"}


def _parse_levels(value: str | None) -> list[str] | None:
    if not value:
        return None
    levels = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in levels if p not in LEVEL_KEYS]
    if bad:
        raise InvalidInput(f"level {bad[0]!r} is not one of {', '.join(LEVEL_KEYS)}")
    return levels


def list_risk_points(session: Session, scope: Scope, *, level: str | None = None, hazard_type: str | None = None,
                     root: str | None = None, min_level: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[RiskPoint], int]:
    stmt = select(RiskPoint).where(scope.covers_clause(RiskPoint.unit_path))
    if root:
        unit = session.scalar(select(Unit).where(Unit.code == root))
        if unit is None or not scope.covers(unit.path):
            raise NotFound(f"unit {root!r} not found")
        stmt = stmt.where(RiskPoint.unit_path.startswith(unit.path, autoescape=True))
    levels = _parse_levels(level)
    if levels:
        stmt = stmt.where(RiskPoint.level.in_(levels))
    if min_level:
        if min_level not in RANK:
            raise InvalidInput(f"min_level {min_level!r} is not one of {', '.join(LEVEL_KEYS)}")
        stmt = stmt.where(RiskPoint.level.in_([k for k in LEVEL_KEYS if RANK[k] >= RANK[min_level]]))
    if hazard_type:
        if hazard_type not in catalogue().hazard_types:
            raise InvalidInput(f"hazard_type {hazard_type!r} is unknown")
        stmt = stmt.where(RiskPoint.hazard_type == hazard_type)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = list(session.scalars(stmt.order_by(RiskPoint.code).limit(limit).offset(offset)))
    # Most severe first within the page is what an operator wants to read.
    rows.sort(key=lambda r: -RANK[r.level])
    return rows, total


def get_risk_point(session: Session, scope: Scope, code: str) -> RiskPoint:
    rp = session.scalar(select(RiskPoint).where(RiskPoint.code == code))
    if rp is None or not scope.covers(rp.unit_path):
        raise NotFound(f"risk point {code!r} not found")
    return rp


def risk_point_detail(session: Session, scope: Scope, code: str, history: int = 50) -> dict:
    rp = get_risk_point(session, scope, code)
    data = risk_point_dict(rp, detail=True)
    rows = session.scalars(select(RiskWarning).where(RiskWarning.risk_point_id == rp.id)
                           .order_by(RiskWarning.issued_at.desc(), RiskWarning.id.desc()).limit(history))
    data["history"] = [warning_dict(w, rp.code) for w in rows]
    return data


def list_warnings(session: Session, scope: Scope, *, level: str | None = None, since: datetime | None = None,
                  limit: int = 100, offset: int = 0) -> tuple[list[dict], int]:
    stmt = (select(RiskWarning, RiskPoint.code).join(RiskPoint, RiskPoint.id == RiskWarning.risk_point_id)
            .where(scope.covers_clause(RiskWarning.unit_path)))
    levels = _parse_levels(level)
    if levels:
        stmt = stmt.where(RiskWarning.level.in_(levels))
    if since is not None:
        stmt = stmt.where(RiskWarning.issued_at >= _aware(since))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = session.execute(stmt.order_by(RiskWarning.issued_at.desc(), RiskWarning.id.desc()).limit(limit).offset(offset)).all()
    return [warning_dict(w, code) for w, code in rows], total


def building_levels(session: Session, scope: Scope, building_codes: list[str]) -> dict[str, dict]:
    """Warning level of each building from the risk points that threaten it (science §4.2 inheritance: a house
    in a landslide mass at 橙 or worse takes the slope's level): ``{code: {"level", "risk_point_code"}}``, the
    most severe risk point per building; buildings outside the caller's scope or under no risk point are left out."""
    wanted = set(building_codes)
    out: dict[str, dict] = {}
    for rp in session.scalars(select(RiskPoint).where(scope.covers_clause(RiskPoint.unit_path), RiskPoint.level != "none")):
        for code in set(rp.building_codes or []) & wanted:
            if code not in out or RANK[rp.level] > RANK[out[code]["level"]]:
                out[code] = {"level": rp.level, "risk_point_code": rp.code, "hazard_type": rp.hazard_type}
    return out

"""The indicators of a risk point and how they combine into its level, each with the evidence behind it.

An indicator applies one published model (``cityops.warning.models``) to one linked datastream and returns a
plain dict that is stored with the assessment and with every warning it decides: the readings it read, the
model (formula, parameters, source), the model's output, the notes that raised or held its level, labelled
figures for a card, and a one-line summary in Chinese and English. ``combine`` takes the highest level and
applies the independence rule for red (science §3.5).

``series(datastream_id, start, end) -> (times, values)``: times as aware datetimes or POSIX seconds, values as
floats, ordered by time. Conventions per indicator: rainfall = rain per reading (mm); displacement =
cumulative displacement (mm); tilt = overall tilt against the construction baseline (%).

Every number a model uses comes from the catalogue (``catalogue.toml``), overridable per risk point in its
``model``; the numbers here are unit conversions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Callable
from zoneinfo import ZoneInfo

import numpy as np

from cityops.core.errors import InvalidInput
from cityops.warning.catalogue import Catalogue
from cityops.warning.models import antecedent, displacement, rainfall
from cityops.warning.models.house import TiltRule
from cityops.warning.models.levels import LEVEL_KEYS, RANK, level_key

Series = Callable[[int, datetime, datetime], tuple[np.ndarray, np.ndarray]]
BEIJING = ZoneInfo("Asia/Shanghai")
HOUR_S = 3600.0
DAY_S = 86400.0
HOURS_PER_DAY = 24.0


# ------------------------------------------------------------------------------------------ helpers

def as_seconds(times) -> np.ndarray:
    t = np.asarray(times)
    if t.size == 0:
        return np.zeros(0)
    if t.dtype == object:
        return np.array([x.timestamp() for x in t], dtype=float)
    if np.issubdtype(t.dtype, np.datetime64):
        return t.astype("datetime64[ms]").astype(np.int64) / 1000.0
    return t.astype(float)


def read(series: Series, datastream_id: int, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
    times, values = series(int(datastream_id), start, end)
    t, v = as_seconds(times), np.asarray(values, dtype=float)
    if t.shape != v.shape:
        raise InvalidInput(f"datastream {datastream_id}: times and values differ in length")
    keep = np.isfinite(v) & (t >= start.timestamp()) & (t <= end.timestamp())
    order = np.argsort(t[keep], kind="stable")
    return t[keep][order], v[keep][order]


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(float(seconds), UTC).isoformat(timespec="seconds")


def _observations(cat: Catalogue, t: np.ndarray, v: np.ndarray, start: datetime, end: datetime, unit: str) -> dict:
    n = int(cat.params["evidence"]["recent_readings"])
    return {"window": [start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds")], "count": int(len(t)),
            "unit": unit, "first": iso(t[0]) if len(t) else None, "last": iso(t[-1]) if len(t) else None,
            "recent": [[iso(a), round(float(b), 4)] for a, b in zip(t[-n:], v[-n:])]}


def _note(code: str, zh: str, en: str) -> dict:
    return {"code": code, "zh": zh, "en": en}


def _figure(key: str, zh: str, en: str, value, unit: str = "") -> dict:
    return {"key": key, "label_zh": zh, "label_en": en, "value": value, "unit": unit}


def _base(cat: Catalogue, role: str, ds: int) -> dict:
    """What every indicator says about itself: its role, names, observed property and mechanism."""
    spec = cat.indicators[role]
    return {"indicator": role, "datastream_id": ds, "name_zh": spec["name_zh"], "name_en": spec["name_en"],
            "observed_property": spec["observed_property"], "mechanism": spec["mechanism"],
            "mechanism_zh": spec["mechanism_zh"], "mechanism_en": spec["mechanism_en"]}


def _verdict(cat: Catalogue, rank: int) -> dict:
    lv = cat.levels[level_key(rank)]
    return {"level": level_key(rank), "rank": int(rank), "level_name_zh": lv["name_zh"], "level_name_en": lv["name_en"]}


def _no_data(cat: Catalogue, role: str, ds: int, t, v, start: datetime, end: datetime, unit: str, need: int = 1) -> dict:
    status = "no_data" if len(t) == 0 else "insufficient_data"
    zh = f"数据流 {ds} 在评估时段内无观测" if len(t) == 0 else f"数据流 {ds} 观测不足 {need} 条"
    en = f"datastream {ds} has no observations in the window" if len(t) == 0 else f"datastream {ds}: fewer than {need} readings"
    return {**_base(cat, role, ds), "status": status, **_verdict(cat, RANK["none"]), "model": None, "output": {},
            "notes": [], "figures": [], "observations": _observations(cat, t, v, start, end, unit),
            "summary_zh": zh, "summary_en": en}


# -------------------------------------------------------------------------------------- rainfall

def rainfall_indicator(cat: Catalogue, model: dict, ds: int, series: Series, now: datetime) -> dict:
    """Four-level ED thresholds on the running event (science §1.3, §1.7) and antecedent rainfall (§1.4)."""
    cfg = {**cat.params["rainfall"], **model.get("rainfall", {})}
    ant = {**cat.params["antecedent"], **model.get("antecedent", {})}
    thresholds = cat.threshold_sets[model.get("threshold_set", next(iter(cat.threshold_sets)))]
    durations = [int(d) for d in cfg["durations_h"]]
    # Enough hours to see a whole dry spell before the running event, and the antecedent days.
    hours = max(max(durations), int(cfg["dry_spell_h"]) * 2, int(HOURS_PER_DAY) * int(ant["n_days"]))
    # The current rainfall day starts at the configured Beijing hour (science §1.4: state the boundary).
    local = now.astimezone(BEIJING)
    day_start = local.replace(hour=int(ant["day_start_hour"]), minute=0, second=0, microsecond=0)
    if day_start > local:
        day_start -= timedelta(days=1)
    start = min(now - timedelta(hours=hours), day_start - timedelta(days=int(ant["n_days"])))
    t, v = read(series, ds, start, now)
    if len(t) == 0:
        return _no_data(cat, "rainfall", ds, t, v, start, now, "mm")
    if np.any(v < 0):
        raise InvalidInput(f"datastream {ds}: negative rainfall in the window")
    # Hourly bins ending now: bin k holds readings in (now − (hours−k) h, now − (hours−k−1) h].
    age_h = np.ceil((now.timestamp() - t) / HOUR_S).astype(int)  # 1 = the last hour
    recent = age_h <= hours
    hourly = np.bincount(np.clip(hours - age_h[recent], 0, hours - 1), weights=v[recent], minlength=hours)[None, :]
    hourly = np.where(hourly >= float(cfg["resolution_mm"]), hourly, 0.0)
    event_h = rainfall.current_event_hours(hourly, int(cfg["dry_spell_h"]), 0.0)
    ev = rainfall.evaluate_event(hourly, thresholds, durations, event_hours=event_h)
    r0 = float(v[t >= day_start.timestamp()].sum())
    days = antecedent.daily_totals(t, v, day_start.timestamp(), int(ant["n_days"]))
    pa = float(antecedent.antecedent_rainfall(days, float(ant["K"])))
    rank = int(ev.rank[0])
    d = float(ev.duration_h[0])
    index = None if np.isnan(ev.index[0]) else round(float(ev.index[0]), 3)
    thr = {k: round(float(thresholds.alpha[k] * d**thresholds.gamma), 2) for k in LEVEL_KEYS[1:]}
    obs = round(float(ev.observed_mm[0]), 2)
    reached = level_key(rank) if rank else LEVEL_KEYS[1]
    lv = cat.levels[reached]
    notes = []
    floor_h = float(ev.floor_withheld_h[0])
    floor_mm = None
    if thresholds.floor is not None and not np.isnan(floor_h):
        at = int(list(ev.durations_h[0]).index(floor_h))
        e_floor = round(float(ev.observed_by_duration[0][at]), 2)
        floor_mm = round(float(thresholds.floor.event_rainfall(floor_h)), 2)
        if rank == RANK["none"]:
            notes.append(_note("below_floor",
                               f"{int(floor_h)} 小时雨量 {e_floor} mm 达到蓝色阈值,但低于全球下限 {thresholds.floor.name} {floor_mm} mm:不发布降雨预警",
                               f"{e_floor} mm in {int(floor_h)} h reaches the blue curve but lies below the global floor "
                               f"{thresholds.floor.name} ({floor_mm} mm): no rainfall warning"))
    verdict = (f"达到{lv['name_zh']}阈值 {thr[reached]} mm" if rank else f"未达到蓝色阈值 {thr[reached]} mm")
    verdict_en = (f"at or above the {reached} threshold {thr[reached]} mm" if rank else f"below the blue threshold {thr[reached]} mm")
    return {
        **_base(cat, "rainfall", ds), "status": "ok", **_verdict(cat, rank),
        "model": {**thresholds.metadata(), "antecedent": {"formula": "Pa = sum_{i=1..n} K^i * R_i", "K": float(ant["K"]),
                                                          "n_days": int(ant["n_days"]), "source": "science.md §1.4"}},
        "output": {"event_hours": int(event_h[0]), "deciding_duration_h": d, "event_rainfall_mm": obs,
                   "exceedance_index": index, "thresholds_mm": thr,
                   "by_duration": {str(int(dd)): round(float(e), 2) for dd, e in zip(ev.durations_h[0], ev.observed_by_duration[0])},
                   "floor_withheld_at_h": None if np.isnan(floor_h) else floor_h, "floor_mm": floor_mm,
                   "current_day_mm": round(r0, 2), "antecedent_mm": round(pa, 3), "effective_mm": round(r0 + pa, 3),
                   "antecedent_K": float(ant["K"]), "antecedent_days": int(ant["n_days"]),
                   "day_start": day_start.isoformat(timespec="seconds")},
        "notes": notes,
        "figures": [_figure("event_rainfall", "事件雨量", "Event rainfall", obs, "mm"),
                    _figure("deciding_duration", "判定历时", "Deciding duration", d, "h"),
                    _figure("threshold", f"{lv['name_zh']}阈值", f"{lv['name_en']} threshold", thr[reached], "mm"),
                    _figure("exceedance_index", "超阈指数(对蓝色阈值)", "Exceedance index (blue curve)", index),
                    _figure("antecedent", "前期有效降雨量", "Antecedent effective rainfall", round(pa, 1), "mm")],
        "observations": _observations(cat, t, v, start, now, "mm"),
        "summary_zh": f"{int(d)} 小时累计雨量 {obs} mm,{verdict};前期有效降雨量 {round(pa, 1)} mm",
        "summary_en": f"{obs} mm in {int(d)} h, {verdict_en}; antecedent effective rainfall {round(pa, 1)} mm",
    }


# ---------------------------------------------------------------------------------- displacement

def displacement_indicator(cat: Catalogue, model: dict, ds: int, series: Series, now: datetime) -> dict:
    """Improved tangent angle (science §3.4) and the inverse-velocity forecast (§3.3) on cumulative displacement."""
    cfg = {**cat.params["displacement"], **model.get("displacement", {})}
    ta = {**cat.params["tangent_angle"], **model.get("tangent_angle", {})}
    iv = {**cat.params["inverse_velocity"], **model.get("inverse_velocity", {})}
    start = now - timedelta(days=float(cfg["window_days"]))
    t, s = read(series, ds, start, now)
    need = int(cfg["min_readings"])
    if len(t) < need:
        return _no_data(cat, "displacement", ds, t, s, start, now, "mm", need)
    days = (t - t[0]) / DAY_S
    step = float(cfg["interval_h"]) / HOURS_PER_DAY
    grid = displacement.regular_grid(days, step)
    if len(grid) < need:
        # A record shorter than (need − 1) intervals is judged on `need` readings spread over it: the floor
        # below follows the shorter interval, so its velocities are judged against their own noise.
        step = (days[-1] - days[0]) / (need - 1)
        grid = displacement.regular_grid(days, step) if step > 0 else grid
    if len(grid) < need:
        return _no_data(cat, "displacement", ds, t, s, start, now, "mm", need)
    cum = np.interp(grid, days, s)
    dt = np.diff(grid)
    v_i = np.diff(cum) / dt  # mm/day per interval
    noise = float(cfg["noise_mm"])
    floor = displacement.noise_floor(noise, step, float(cfg["noise_floor_factor"]))
    notes = []
    if "v_constant_mm_per_day" in cfg:
        v_set = float(cfg["v_constant_mm_per_day"])
        v_source_zh, v_source_en = "配置值", "configured"
    else:  # the first baseline_days of the window taken as the constant-velocity stage
        base = days <= days[0] + float(cfg["baseline_days"])
        v_set = displacement.constant_stage_velocity(days[base], s[base]) if base.sum() >= 2 else floor
        v_source_zh, v_source_en = f"前 {cfg['baseline_days']} 天拟合", f"fitted over the first {cfg['baseline_days']} days"
    v_const = max(v_set, floor)
    if v_const > v_set:
        v_source_zh, v_source_en = "噪声下限", "noise floor"
        notes.append(_note("v_floored", f"等速段速率 {round(v_set, 2)} mm/d 低于噪声下限 {round(floor, 2)} mm/d,取下限",
                           f"constant-stage velocity {round(v_set, 2)} mm/day is below the noise floor {round(floor, 2)} mm/day: "
                           "the floor is used"))
    angles = displacement.tangent_angle(np.diff(cum), dt, v_const)
    ranks = displacement.tangent_rank(angles, ta["yellow_above_deg"], ta["orange_from_deg"], ta["red_from_deg"])
    rank = int(ranks[-1])
    sustained = int(ta["red_sustained_readings"])
    if rank == RANK["red"] and not (len(ranks) >= sustained and np.all(ranks[-sustained:] == RANK["red"])):
        rank = RANK["orange"]
        notes.append(_note("red_not_sustained",
                           f"切线角 ≥ {ta['red_from_deg']}° 需连续 {sustained} 次读数,暂定橙色",
                           f"red needs α ≥ {ta['red_from_deg']}° over {sustained} consecutive readings; held at orange"))
    if rank == RANK["blue"] and abs(v_i[-1]) <= floor:
        rank = RANK["none"]  # at rest within the noise: no 注意级 for a slope whose movement noise could explain
        notes.append(_note("at_rest", f"位移速率 {round(float(v_i[-1]), 2)} mm/d 在噪声下限 {round(floor, 2)} mm/d 以内,视为静止",
                           f"velocity {round(float(v_i[-1]), 2)} mm/day is within the noise floor {round(floor, 2)} mm/day: at rest"))
    result = displacement.inverse_velocity(
        days, s, interval=float(iv["interval_h"]) / HOURS_PER_DAY, short_window=int(iv["short_window"]),
        long_window=int(iv["long_window"]), noise_mm=noise, floor_factor=float(cfg["noise_floor_factor"]),
        onset_span=int(iv["onset_span"]), onset_min_rise=int(iv["onset_min_rise"]), min_points=int(iv["min_points"]),
        min_r2=float(iv["min_r2"]), confidence=float(iv["confidence"]))
    to_s = lambda d: t[0] + d * DAY_S  # noqa: E731
    forecast = None
    if result.forecast is not None:
        f = result.forecast
        lead_h = (to_s(f.low) - now.timestamp()) / HOUR_S
        forecast = {"t_failure": iso(to_s(f.t_failure)), "low": iso(to_s(f.low)), "high": iso(to_s(f.high)),
                    "r2": round(f.r2, 4), "points": f.n, "lead_h_lower_bound": round(lead_h, 1)}
        if lead_h < float(iv["evacuation_lead_h"]):
            rank = RANK["red"]  # the forecast decides: the angle's wait for a sustained red no longer holds it
            notes = [n for n in notes if n["code"] != "red_not_sustained"]
            when_zh = f"已过 {round(-lead_h, 1)} 小时" if lead_h < 0 else f"距今 {round(lead_h, 1)} 小时"
            notes.append(_note("failure_forecast",
                               f"反速度法预测破坏时间下限{when_zh},短于撤离所需 {iv['evacuation_lead_h']} 小时",
                               f"predicted failure (lower bound) within {round(lead_h, 1)} h, under the evacuation lead time "
                               f"{iv['evacuation_lead_h']} h"))
    angle = round(float(angles[-1]), 3)
    velocity = round(float(v_i[-1]), 4)
    # Read by people: the forecast time in the district's clock, to the minute (the output keeps the ISO instant).
    when = (datetime.fromtimestamp(to_s(result.forecast.t_failure), BEIJING).strftime("%Y-%m-%d %H:%M")
            if forecast else "")
    n = int(cat.params["evidence"]["recent_readings"])
    return {
        **_base(cat, "displacement", ds), "status": "ok", **_verdict(cat, rank),
        "model": {"key": "improved_tangent_angle", "name": "改进切线角 improved tangent angle", "formula": "alpha = arctan(v_i / v)",
                  "source": "许强等 2009 地质通报 28(4):501-505", "confidence": "formula unconfirmed; level table confirmed",
                  "parameters": {**ta, "interval_h": round(step * HOURS_PER_DAY, 3), "v_constant_mm_per_day": round(v_const, 4),
                                 "noise_mm": noise, "noise_floor_factor": cfg["noise_floor_factor"]},
                  "inverse_velocity": {"formula": "1/v = a t + b, t_f = -b/a", "source": "Fukuzono 1985; Voight 1988; gates: science.md §3.3",
                                       **iv}},
        "output": {"tangent_angle_deg": angle, "velocity_mm_per_day": velocity,
                   "velocity_ratio": round(float(v_i[-1] / v_const), 3), "v_constant_mm_per_day": round(v_const, 4),
                   "v_source": v_source_en, "noise_floor_mm_per_day": round(floor, 4), "cumulative_mm": round(float(s[-1]), 3),
                   "recent_angles_deg": [round(float(a), 2) for a in angles[-n:]],
                   "inverse_velocity": {"gate": result.gate, "onset": iso(to_s(result.onset)) if result.onset is not None else None,
                                        "points": result.points, "short_floor_mm_per_day": round(result.short_floor, 4),
                                        "long_floor_mm_per_day": round(result.long_floor, 4),
                                        "short_velocity_mm_per_day": None if result.short_velocity is None else round(result.short_velocity, 4),
                                        "long_velocity_mm_per_day": None if result.long_velocity is None else round(result.long_velocity, 4)},
                   "failure_forecast": forecast},
        "notes": notes,
        "figures": [_figure("velocity", "位移速率", "Velocity", round(velocity, 2), "mm/d"),
                    _figure("tangent_angle", "改进切线角", "Improved tangent angle", angle, "°"),
                    _figure("v_constant", f"等速段速率({v_source_zh})", f"Constant-stage velocity ({v_source_en})",
                            round(v_const, 2), "mm/d"),
                    _figure("cumulative", "累计位移", "Cumulative displacement", round(float(s[-1]), 1), "mm")]
                   + ([_figure("failure_lead", "预测破坏剩余时间(下限)", "Time to predicted failure (lower bound)",
                               forecast["lead_h_lower_bound"], "h")] if forecast else []),
        "observations": _observations(cat, t, s, start, now, "mm"),
        "summary_zh": f"位移速率 {round(velocity, 2)} mm/d,改进切线角 {angle}°(等速段 {round(v_const, 2)} mm/d)"
                      + (f",预测破坏时间 {when}(北京时间)" if forecast else ""),
        "summary_en": f"displacement rate {round(velocity, 2)} mm/d, improved tangent angle {angle}° (constant stage "
                      f"{round(v_const, 2)} mm/d)" + (f", predicted failure {when} (Beijing time)" if forecast else ""),
    }


# ------------------------------------------------------------------------------------------ tilt

def tilt_rule(cat: Catalogue, model: dict) -> TiltRule:
    """The catalogue's tilt rule, with the risk point's overrides (``model.tilt``) if it has any."""
    overrides = model.get("tilt") or {}
    return TiltRule.from_params({**cat.params["house_tilt"], **overrides}) if overrides else cat.tilt_rule


def tilt_indicator(cat: Catalogue, model: dict, item: dict, series: Series, now: datetime, storeys: int | None) -> dict:
    """The one house-tilt rule (JGJ 125 §5.2 limit by storeys, science §4.2 ladder) on the latest reading."""
    rule = tilt_rule(cat, model)
    window = float({**cat.params["house_tilt"], **(model.get("tilt") or {})}["window_days"])
    ds = int(item["id"])
    start = now - timedelta(days=window)
    t, v = read(series, ds, start, now)
    if len(t) == 0:
        return {**_no_data(cat, "tilt", ds, t, v, start, now, "%"), "building_code": item.get("building_code")}
    j = rule.judge(float(v[-1]), storeys, settlement_cracks=bool(item.get("settlement_cracks")), rising_readings=rule.rising_readings(v))
    share = round(j.share_of_limit * 100, 1)
    notes = []
    if not j.storeys_known:
        notes.append(_note("storeys_unknown", f"层数不详,按 {j.storeys} 层(限值 {j.limit_pct}%)判定",
                           f"storeys unknown: judged as {j.storeys} storeys (limit {j.limit_pct} %)"))
    return {
        **_base(cat, "tilt", ds), "building_code": item.get("building_code"), "status": "ok", **_verdict(cat, j.rank),
        "model": {"key": "jgj125_tilt_ladder", "name": "JGJ 125-2016 房屋倾斜 house tilt",
                  "formula": f"limit = {rule.limit_low_rise_pct:g} % if storeys <= {rule.low_rise_max_storeys} else "
                             f"{rule.limit_other_pct:g} %; red if tilt > limit; orange >= {rule.orange_fraction:.0%}, "
                             f"yellow >= {rule.yellow_fraction:.0%} of the limit",
                  "source": rule.source, "confidence": "limit confirmed; ladder: engine defaults (science.md §4.2)",
                  "parameters": {**{k: getattr(rule, k) for k in rule.__dataclass_fields__ if k != "source"}, "storeys": j.storeys}},
        "output": {**j.as_dict(), "tilt_pct": round(j.tilt_pct, 4), "share_of_limit": round(j.share_of_limit, 3)},
        "notes": notes,
        "figures": [_figure("tilt", "倾斜率", "Tilt", round(j.tilt_pct, 2), "%"),
                    _figure("limit", "JGJ 125 限值", "JGJ 125 limit", j.limit_pct, "%"),
                    _figure("share_of_limit", "达到限值", "Share of the limit", share, "%"),
                    _figure("storeys", "层数", "Storeys", j.storeys)],
        "observations": _observations(cat, t, v, start, now, "%"),
        "summary_zh": f"房屋倾斜 {round(j.tilt_pct, 2)}%,达到限值 {j.limit_pct}%({j.storeys} 层)的 {share}%"
                      + (",地基危险" if j.dangerous else ""),
        "summary_en": f"house tilt {round(j.tilt_pct, 2)} %, {share} % of the limit {j.limit_pct} % ({j.storeys} storeys)"
                      + (", foundation dangerous" if j.dangerous else ""),
    }


# ----------------------------------------------------------------------------------- combination

_ATTR_ZH = {"observed_property": "观测量", "mechanism": "机理"}


def _ref(i: dict) -> dict:
    return {"indicator": i["indicator"], "datastream_id": i["datastream_id"], "level": i["level"],
            "observed_property": i["observed_property"], "mechanism": i["mechanism"]}


def independent(a: dict, b: dict, differ_in) -> bool:
    """Independent evidence: the two indicators differ in every attribute of ``differ_in`` (science §3.5)."""
    return all(a[attr] != b[attr] for attr in differ_in)


def combine(cat: Catalogue, indicators: list[dict]) -> tuple[int, dict]:
    """The level of a risk point from its indicators: the highest; red only when another indicator that is
    independent evidence (``[combination] independent_when_different``) is at ``red_second_indicator`` or above.
    Returns the rank and the decision (what decided, what confirmed, what held it)."""
    comb = cat.params["combination"]
    differ = list(comb["independent_when_different"])
    need = RANK[comb["red_second_indicator"]]
    need_name = cat.levels[level_key(need)]
    decision = {"rule_zh": f"取各指标最高等级;红色需另一独立指标(不同的{'、'.join(_ATTR_ZH[a] for a in differ)})"
                           f"达到{need_name['name_zh']}及以上",
                "rule_en": f"the highest indicator level; red needs another independent indicator (a different "
                           f"{' and '.join(a.replace('_', ' ') for a in differ)}) at {level_key(need)} or above",
                "independent_when_different": differ, "deciding": [], "confirmed_by": [], "held_at": None, "notes": []}
    ok = [i for i in indicators if i["status"] == "ok"]
    if not indicators:
        decision["notes"].append(_note("no_datastreams", "未关联数据流", "no datastreams linked"))
        return RANK["none"], decision
    if not ok:
        return RANK["none"], decision
    rank = max(i["rank"] for i in ok)
    top = [i for i in ok if i["rank"] == rank]
    decision["deciding"] = [_ref(i) for i in top]
    if rank == RANK["red"]:
        confirming = [o for o in ok if o["rank"] >= need and any(independent(o, i, differ) for i in top)]
        decision["confirmed_by"] = [_ref(o) for o in confirming]
        if not confirming:
            rank = RANK["orange"]
            decision["held_at"] = level_key(rank)
            # Other indicators at the needed level that are not independent of the red one(s): one line of evidence.
            alike = [o for o in ok if o["rank"] >= need and o not in top] + top[1:]
            decision["notes"].append(_note(
                "red_needs_independent",
                f"红色预警需第二个独立指标(不同的{'、'.join(_ATTR_ZH[a] for a in differ)})达到{need_name['name_zh']}及以上,"
                f"暂定橙色" + (f";{top[0]['name_zh']}等同类指标({len(alike) + 1} 个)只计一次" if alike else ""),
                f"red needs a second independent indicator (a different {' and '.join(a.replace('_', ' ') for a in differ)}) "
                f"at {level_key(need)} or above; held at orange"
                + (f"; {len(alike) + 1} indicators of one kind count once" if alike else "")))
    return rank, decision


def reasons(decision: dict, indicators: list[dict]) -> tuple[list[str], list[str]]:
    """Why, in order: what held or capped the level, then each indicator (most severe first) with its notes."""
    zh = [n["zh"] for n in decision["notes"]]
    en = [n["en"] for n in decision["notes"]]
    ok = sorted((i for i in indicators if i["status"] == "ok"), key=lambda i: -i["rank"])
    for i in ok + [i for i in indicators if i["status"] != "ok"]:
        zh.append(i["summary_zh"])
        en.append(i["summary_en"])
        zh += [n["zh"] for n in i.get("notes", [])]
        en += [n["en"] for n in i.get("notes", [])]
    return zh, en

"""The early-warning catalogue (``catalogue.toml``): levels, published curves, threshold sets, every model
parameter (with its source in the file) and the lookups (velocity classes, threat grades, the M1 logistic
coefficients), validated on load so a bad edit fails at start-up with the entry named."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cityops.warning.models.house import TiltRule
from cityops.warning.models.levels import LEVEL_KEYS
from cityops.warning.models.rainfall import LevelThresholds, PowerLawCurve

CATALOGUE = Path(__file__).with_name("catalogue.toml")
#: Indicator roles of a risk point (its datastream links) — each described in ``[indicators.<role>]``.
ROLES = ("rainfall", "displacement", "tilt")
#: Attributes by which two indicators may differ to count as independent evidence.
INDEPENDENCE_ATTRIBUTES = ("observed_property", "mechanism")
_INDICATOR_FIELDS = ("name_zh", "name_en", "observed_property", "mechanism", "mechanism_zh", "mechanism_en")
# Every number of a model section: (low, high, integer); bounds inclusive, None = open. The file says why each
# value is what it is; this says what values can mean anything at all.
_NUMBERS = {
    "rainfall": {"dry_spell_h": (1, None, True), "resolution_mm": (0, None, False)},
    "antecedent": {"n_days": (1, None, True), "day_start_hour": (0, 23, True)},
    "calibration": {"min_events": (3, None, True)},
    "displacement": {"window_days": (0, None, False), "min_readings": (3, None, True), "interval_h": (0, None, False),
                     "baseline_days": (0, None, False), "noise_mm": (0, None, False), "noise_floor_factor": (0, None, False)},
    "tangent_angle": {"yellow_above_deg": (0, 90, False), "orange_from_deg": (0, 90, False), "red_from_deg": (0, 90, False),
                      "red_sustained_readings": (1, None, True)},
    "inverse_velocity": {"interval_h": (0, None, False), "short_window": (1, None, True), "long_window": (1, None, True),
                         "onset_span": (1, None, True), "onset_min_rise": (1, None, True), "min_points": (3, None, True),
                         "min_r2": (0, 1, False), "confidence": (0, 1, False), "evacuation_lead_h": (0, None, False)},
    "house_tilt": {"limit_low_rise_pct": (0, None, False), "limit_other_pct": (0, None, False),
                   "low_rise_max_storeys": (1, None, True), "yellow_fraction": (0, 1, False), "orange_fraction": (0, 1, False),
                   "crack_tilt_pct": (0, None, False), "trend_readings": (1, None, True), "noise_pct": (0, None, False),
                   "window_days": (0, None, False), "unknown_storeys": (1, None, True)},
    "house_cracks": {"single_crack_mm": (0, None, False), "parallel_crack_mm": (0, None, False)},
    "dual_control": {k: (0, None, False) for k in ("yellow_both", "yellow_either", "orange_both", "orange_either", "red_both")},
    "combination": {"downgrade_hold_hours": (0, 168, False)},
    "evidence": {"recent_readings": (1, None, True), "list_reasons": (0, None, True)},
    "registry": {"default_radius_m": (0, None, False), "min_radius_m": (0, None, False), "max_radius_m": (0, None, False),
                 "max_v_constant_mm_per_day": (0, None, False), "unit_tolerance_deg": (0, None, False)},
}
_SECTIONS = (*_NUMBERS, "indicators")
#: Sections a risk point may override in its ``model`` (its key → the catalogue section), and the keys it may
#: add there: the constant-stage velocity a site geologist measured, the storeys of a house it watches.
_OVERRIDABLE = {"rainfall": "rainfall", "antecedent": "antecedent", "displacement": "displacement",
                "tangent_angle": "tangent_angle", "inverse_velocity": "inverse_velocity", "tilt": "house_tilt"}
_MODEL_EXTRAS = {"displacement": {"v_constant_mm_per_day"}, "tilt": {"storeys"}}
# Units of the velocity-class table → metres per second (a month of 30 days and a year of 365, as the
# classification's own m/s column has them).
_VELOCITY_UNITS = {"m/s": 1.0, "m/min": 1 / 60, "m/h": 1 / 3600, "m/month": 1 / (30 * 86400), "m/year": 1 / (365 * 86400),
                   "mm/year": 1e-3 / (365 * 86400)}
_SEVERITIES = ("Minor", "Moderate", "Severe", "Extreme")
_CAP_CATEGORIES = ("Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra", "CBRNE", "Other")


@dataclass(frozen=True)
class Catalogue:
    levels: dict[str, dict]
    curves: dict[str, PowerLawCurve]
    threshold_sets: dict[str, LevelThresholds]
    params: dict[str, dict]
    hazard_types: dict[str, dict]
    cap: dict
    #: [indicators.<role>]: names, observed property and mechanism of each indicator role.
    indicators: dict[str, dict]
    #: The one house-tilt rule (JGJ 125 + science §4.2) of the alarm and warning paths.
    tilt_rule: TiltRule
    #: (class, name, lower bound in m/s), fastest first, and the class below the last bound.
    velocity_classes: tuple
    velocity_class_below: tuple
    #: (grade, label, people ≥, loss ≥ yuan), most severe first, and the grade below them all.
    threat_grades: tuple
    threat_grade_below: tuple
    #: Staley 2017 M1: window minutes → (B, Ct, Cf, Cs).
    logistic_m1: dict

    def level(self, key: str) -> dict:
        return self.levels[key]

    def check_model(self, model) -> None:
        """A risk point's ``model`` (threshold set and section overrides) judged by the same rules as this file:
        raises ValueError naming what is wrong."""
        if not isinstance(model, dict):
            raise ValueError("model must be an object")
        unknown = set(model) - {"threshold_set", *_OVERRIDABLE}
        if unknown:
            raise ValueError(f"model: unknown entries {sorted(unknown)}; known: threshold_set, {', '.join(_OVERRIDABLE)}")
        merged = dict(self.params)
        for key, section in _OVERRIDABLE.items():
            override = model.get(key)
            if override is None:
                continue
            extras = _MODEL_EXTRAS.get(key, set())
            if not isinstance(override, dict) or set(override) - set(self.params[section]) - extras:
                raise ValueError(f"model.{key} must be an object with keys among {sorted(set(self.params[section]) | extras)}")
            merged[section] = {**self.params[section], **{k: v for k, v in override.items() if k not in extras}}
            for name, (low, high, integer) in _NUMBERS.get(section, {}).items():
                _check_number(Path(f"model.{key}"), section, name, merged[section].get(name), low, high, integer)
        storeys = (model.get("tilt") or {}).get("storeys")
        if storeys is not None:
            _check_number(Path("model.tilt"), "house_tilt", "storeys", storeys, 1, None, True)
        _check_models(Path("model"), merged, {})


def _fail(path: Path, what: str) -> None:
    raise ValueError(f"{path.name}: {what}")


def load_catalogue(path: Path = CATALOGUE) -> Catalogue:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != 1:
        _fail(path, f"unsupported version {data.get('version')!r}")
    levels = {lv["key"]: lv for lv in data.get("levels", [])}
    if tuple(levels) != LEVEL_KEYS or [lv["rank"] for lv in levels.values()] != list(range(5)):
        _fail(path, f"levels must be {LEVEL_KEYS} with ranks 0..4 in that order")
    for key, lv in levels.items():
        if key != "none" and lv.get("cap_severity") not in _SEVERITIES:
            _fail(path, f"level {key}: cap_severity must be one of {_SEVERITIES}")
        for field in ("name_zh", "name_en", "colour"):
            if not lv.get(field):
                _fail(path, f"level {key}: missing {field}")
    curves: dict[str, PowerLawCurve] = {}
    for c in data.get("curves", []):
        key = c.get("key")
        if not key or key in curves:
            _fail(path, f"curve key {key!r} missing or repeated")
        if c.get("form") != "ID" or not c.get("alpha", 0) > 0 or "beta" not in c:
            _fail(path, f"curve {key}: form must be 'ID' with alpha > 0 and beta")
        if not 0 <= c.get("d_min_h", 0) < c.get("d_max_h", 0):
            _fail(path, f"curve {key}: need 0 <= d_min_h < d_max_h")
        curves[key] = PowerLawCurve.from_id(key, c["alpha"], c["beta"], d_min_h=c["d_min_h"], d_max_h=c["d_max_h"],
                                            name=c.get("name", key), source=c.get("source", ""),
                                            confidence=c.get("confidence", ""), calibration=c.get("calibration", ""))
    sets: dict[str, LevelThresholds] = {}
    for t in data.get("threshold_sets", []):
        key = t.get("key")
        if not key or key in sets:
            _fail(path, f"threshold set key {key!r} missing or repeated")
        floor = t.get("floor_curve")
        if floor is not None and floor not in curves:
            _fail(path, f"threshold set {key}: unknown floor curve {floor!r}")
        try:
            sets[key] = LevelThresholds(key=key, gamma=float(t["gamma"]), alpha={k: float(v) for k, v in t["alpha"].items()},
                                        probabilities=dict(t.get("probabilities", {})), d_min_h=t.get("d_min_h", 0.0),
                                        d_max_h=t.get("d_max_h", float("inf")), floor=curves.get(floor) if floor else None,
                                        name=t.get("name", key), source=t.get("source", ""),
                                        confidence=t.get("confidence", ""), calibration=t.get("calibration", ""))
        except (KeyError, TypeError, ValueError) as exc:
            _fail(path, f"threshold set {key}: {exc}")
    params = {}
    for section in _SECTIONS:
        if section not in data:
            _fail(path, f"missing section [{section}]")
        params[section] = dict(data[section])
    for section, numbers in _NUMBERS.items():
        for key, (low, high, integer) in numbers.items():
            _check_number(path, section, key, params[section].get(key), low, high, integer)
    _check_models(path, params, sets)
    indicators = params["indicators"]
    for role in ROLES:
        missing = [f for f in _INDICATOR_FIELDS if not isinstance((indicators.get(role) or {}).get(f), str)]
        if missing:
            _fail(path, f"[indicators.{role}] missing {missing}")
    hazards = {h["key"]: h for h in data.get("hazard_types", [])}
    if not hazards:
        _fail(path, "no hazard_types")
    for key, h in hazards.items():
        if h.get("cap_category") not in _CAP_CATEGORIES or not h.get("name_zh") or not h.get("event_zh"):
            _fail(path, f"hazard type {key}: needs name_zh, event_zh and a CAP category among {_CAP_CATEGORIES}")
    cap = dict(data.get("cap", {}))
    for field in ("sender", "sender_name", "district_code"):
        if not cap.get(field) or any(ch in str(cap[field]) for ch in " ,<&"):
            if field != "sender_name" or not cap.get(field):
                _fail(path, f"[cap] {field} missing or holds a space, comma, '<' or '&'")
    tilt = TiltRule.from_params(params["house_tilt"])
    classes, below = _velocity_classes(path, data.get("velocity_classes") or {})
    grades, grade_below = _threat_grades(path, data.get("threat_grades") or {})
    return Catalogue(levels, curves, sets, params, hazards, cap, indicators, tilt, classes, below, grades, grade_below,
                     _logistic(path, data.get("logistic_m1") or {}))


def _check_number(path: Path, section: str, key: str, value, low, high, integer: bool) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (low is not None and value < low) or (high is not None and value > high):
        span = f"≥ {low}" if high is None else f"≤ {high}" if low is None else f"in [{low}, {high}]"
        _fail(path, f"[{section}] {key} must be {'an integer' if integer else 'a number'} {span}, got {value!r}")


def _check_models(path: Path, params: dict, sets: dict[str, LevelThresholds]) -> None:
    """What the number ranges alone cannot say: orders, lists and names."""
    rain = params["rainfall"]["durations_h"]
    if not (isinstance(rain, list) and rain and all(isinstance(d, int) and d > 0 for d in rain)):
        _fail(path, "[rainfall] durations_h must be a list of positive whole hours")
    k = params["antecedent"].get("K")
    if not (isinstance(k, float) and 0 < k < 1):
        _fail(path, f"[antecedent] K must be a number in (0, 1), got {k!r}")
    cal = params["calibration"]
    probs = cal.get("probabilities") or {}
    values = [probs.get(level) for level in LEVEL_KEYS[1:]]
    if set(probs) != set(LEVEL_KEYS[1:]) or not all(isinstance(v, float) and 0 < v < 1 for v in values) or values != sorted(set(values)):
        _fail(path, f"[calibration] probabilities must give each of {LEVEL_KEYS[1:]} a probability in (0, 1), increasing")
    quantiles = cal.get("bootstrap_quantiles")
    if not (isinstance(quantiles, list) and quantiles and all(isinstance(q, float) and 0 < q < 1 for q in quantiles)):
        _fail(path, "[calibration] bootstrap_quantiles must be a list of probabilities in (0, 1)")
    ta = params["tangent_angle"]
    if not ta["yellow_above_deg"] < ta["orange_from_deg"] < ta["red_from_deg"]:
        _fail(path, "[tangent_angle] angles must increase yellow < orange < red")
    iv = params["inverse_velocity"]
    if iv["long_window"] <= iv["short_window"]:
        _fail(path, "[inverse_velocity] long_window must be longer than short_window")
    reg = params["registry"]
    if not reg["min_radius_m"] <= reg["default_radius_m"] <= reg["max_radius_m"]:
        _fail(path, "[registry] default_radius_m must lie between min_radius_m and max_radius_m")
    if not params["displacement"]["noise_mm"] > 0:
        _fail(path, "[displacement] noise_mm must be positive: it sets the noise floor of every velocity")
    tilt = params["house_tilt"]
    if not tilt["yellow_fraction"] < tilt["orange_fraction"]:
        _fail(path, "[house_tilt] yellow_fraction must be below orange_fraction")
    comb = params["combination"]
    if comb.get("red_second_indicator") not in LEVEL_KEYS:
        _fail(path, "[combination] red_second_indicator must name a level")
    differ = comb.get("independent_when_different")
    if not (isinstance(differ, list) and differ and set(differ) <= set(INDEPENDENCE_ATTRIBUTES)):
        _fail(path, f"[combination] independent_when_different must list some of {INDEPENDENCE_ATTRIBUTES}")
    for key, ts in sets.items():
        # The floor may lift 蓝 only: where it reached the 黄 curve it would silence warnings the local set
        # calibrated. Both are power laws, so their ratio is monotone in D: the ends of the range decide.
        if ts.floor is not None:
            ends = np.array([ts.d_min_h, ts.d_max_h])
            if np.any(ts.floor.event_rainfall(ends) >= ts.curve(LEVEL_KEYS[2]).event_rainfall(ends)):
                _fail(path, f"threshold set {key}: the floor curve {ts.floor.key} reaches the yellow curve within "
                            f"[{ts.d_min_h}, {ts.d_max_h}] h")


def _velocity_classes(path: Path, section: dict) -> tuple[tuple, tuple]:
    out = []
    for row in section.get("classes") or []:
        lower = row.get("lower")
        if row.get("unit") not in _VELOCITY_UNITS or not isinstance(row.get("class"), int) or not row.get("name") \
                or not (isinstance(lower, (int, float)) and lower > 0):
            _fail(path, f"[velocity_classes] {row!r}: needs class, name, lower > 0 and a unit among {sorted(_VELOCITY_UNITS)}")
        out.append((row["class"], row["name"], row["lower"] * _VELOCITY_UNITS[row["unit"]]))
    below = section.get("below") or {}
    if not out or [c[2] for c in out] != sorted((c[2] for c in out), reverse=True) or "class" not in below:
        _fail(path, "[velocity_classes] classes must run fastest first, with a 'below' class")
    return tuple(out), (below["class"], below["name"])


def _threat_grades(path: Path, section: dict) -> tuple[tuple, tuple]:
    try:
        grades = tuple((g["grade"], g["name_zh"], int(g["people_min"]), float(g["loss_min_yuan"])) for g in section.get("grades") or [])
    except (KeyError, TypeError, ValueError):
        _fail(path, "[threat_grades] each grade needs grade, name_zh, people_min and loss_min_yuan")
    below = section.get("below") or {}
    people, money = [g[2] for g in grades], [g[3] for g in grades]
    if not grades or people != sorted(people, reverse=True) or money != sorted(money, reverse=True) or "grade" not in below:
        _fail(path, "[threat_grades] grades must run most severe first (people and loss decreasing), with a 'below' grade")
    return grades, (below["grade"], below["name_zh"])


def _logistic(path: Path, section: dict) -> dict:
    out = {}
    for row in section.get("windows") or []:
        try:
            out[int(row["minutes"])] = tuple(float(row[c]) for c in ("B", "Ct", "Cf", "Cs"))
        except (KeyError, TypeError, ValueError):
            _fail(path, f"[logistic_m1] window {row!r}: needs minutes, B, Ct, Cf and Cs")
    if not out:
        _fail(path, "[logistic_m1] no windows")
    return out


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    return load_catalogue()

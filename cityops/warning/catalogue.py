"""The early-warning catalogue (``catalogue.toml``): levels, published curves, threshold sets and model
defaults, validated on load so a bad edit fails at start-up with the entry named."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cityops.warning.models.levels import LEVEL_KEYS
from cityops.warning.models.rainfall import LevelThresholds, PowerLawCurve

CATALOGUE = Path(__file__).with_name("catalogue.toml")
_SECTIONS = ("rainfall", "antecedent", "tangent_angle", "inverse_velocity", "house_tilt", "dual_control", "combination")
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

    def level(self, key: str) -> dict:
        return self.levels[key]


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
    k = params["antecedent"].get("K")
    if not (isinstance(k, float) and 0 < k < 1):
        _fail(path, f"[antecedent] K must be a number in (0, 1), got {k!r}")
    if params["combination"].get("red_second_indicator") not in LEVEL_KEYS:
        _fail(path, "[combination] red_second_indicator must name a level")
    hold = params["combination"].get("downgrade_hold_hours")
    if not (isinstance(hold, (int, float)) and 0 <= hold <= 168):
        _fail(path, f"[combination] downgrade_hold_hours must be a number of hours in [0, 168], got {hold!r}")
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
    return Catalogue(levels, curves, sets, params, hazards, cap)


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    return load_catalogue()

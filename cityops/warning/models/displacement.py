"""Slope-displacement warnings (science §3): velocity classes, the improved tangent angle (改进切线角,
Xu Qiang et al. 2009), inverse-velocity time-of-failure (Fukuzono 1985; Voight 1988), Saito's three-point
formula and dual control (双控).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Cruden & Varnes 1996 velocity classes: lower bound of each class in m/s (science §3.1).
VELOCITY_CLASSES = (
    (7, "extremely rapid", 5.0),
    (6, "very rapid", 3.0 / 60),
    (5, "rapid", 1.8 / 3600),
    (4, "moderate", 13.0 / (30 * 86400)),
    (3, "slow", 1.6 / (365 * 86400)),
    (2, "very slow", 0.016 / (365 * 86400)),
)


def velocity_class(v_m_per_s: float) -> tuple[int, str]:
    for number, name, lower in VELOCITY_CLASSES:
        if v_m_per_s >= lower:
            return number, name
    return 1, "extremely slow"


# ---------------------------------------------------------------------------------------- tangent angle

def tangent_angle(delta_s, delta_t, v_constant) -> np.ndarray:
    """α_i = arctan((ΔS/v)/Δt) = arctan(v_i/v) in degrees; unit-free as long as v and v_i share units."""
    if np.any(np.asarray(v_constant) <= 0):
        raise ValueError("the constant-stage velocity v must be positive")
    v_i = np.asarray(delta_s, dtype=float) / np.asarray(delta_t, dtype=float)
    return np.degrees(np.arctan(v_i / np.asarray(v_constant, dtype=float)))


def tangent_rank(angle_deg, yellow_above: float = 45.0, orange_from: float = 80.0, red_from: float = 85.0) -> np.ndarray:
    """Pinned intervals (science §3.4): α ≤ 45° → 蓝 1; 45° < α < 80° → 黄 2; 80° ≤ α < 85° → 橙 3; α ≥ 85° → 红 4."""
    a = np.asarray(angle_deg, dtype=float)
    return np.select([a >= red_from, a >= orange_from, a > yellow_above], [4, 3, 2], default=1)


def constant_stage_velocity(times, displacement, noise_floor: float = 0.0) -> float:
    """v of the constant-velocity stage: least-squares slope of S(t) over a window the caller chose as stationary,
    floored at ``noise_floor`` (science §3.4: a tiny v lets noise push α above 80°)."""
    t = np.asarray(times, dtype=float)
    s = np.asarray(displacement, dtype=float)
    if len(t) < 2:
        raise ValueError("at least two readings are needed for the constant-stage velocity")
    slope = float(np.polyfit(t, s, 1)[0])
    return max(slope, noise_floor)


# ------------------------------------------------------------------------------------- inverse velocity

@dataclass(frozen=True)
class FailureForecast:
    t_failure: float
    low: float
    high: float
    slope: float
    intercept: float
    r2: float
    n: int

    def as_dict(self) -> dict:
        return {"t_failure": self.t_failure, "low": self.low, "high": self.high, "slope": self.slope,
                "intercept": self.intercept, "r2": self.r2, "n": self.n}


def inverse_velocity_forecast(times, velocity, *, min_points: int = 3, min_r2: float = 0.0, confidence: float = 0.95,
                              noise_floor: float = 0.0) -> FailureForecast | None:
    """Linear fit of 1/v on t; t_f = −intercept/slope, with a confidence interval from the fit (delta method).

    Returns None when the gates fail (science §3.3): too few points, v at or below the noise floor, slope of
    1/v not negative (not accelerating), or r² below ``min_r2``. Pass only readings after the onset of
    acceleration (``onset_of_acceleration``).
    """
    t = np.asarray(times, dtype=float)
    v = np.asarray(velocity, dtype=float)
    keep = np.isfinite(t) & np.isfinite(v) & (v > noise_floor)
    t, v = t[keep], v[keep]
    if len(t) < max(min_points, 2):
        return None
    fit = stats.linregress(t, 1.0 / v)
    if not fit.slope < 0:
        return None
    r2 = float(fit.rvalue**2)
    if r2 < min_r2:
        return None
    t_f = -fit.intercept / fit.slope
    n = len(t)
    if n > 2:
        # Var(t_f) by the delta method; cov(intercept, slope) = −mean(t)·se_slope².
        cov_ab = -np.mean(t) * fit.stderr**2
        grad_a, grad_b = -1.0 / fit.slope, fit.intercept / fit.slope**2
        var = grad_a**2 * fit.intercept_stderr**2 + grad_b**2 * fit.stderr**2 + 2 * grad_a * grad_b * cov_ab
        half = stats.t.ppf(0.5 + confidence / 2, n - 2) * math.sqrt(max(var, 0.0))
    else:
        half = math.inf
    return FailureForecast(float(t_f), float(t_f - half), float(t_f + half), float(fit.slope), float(fit.intercept), r2, n)


def moving_average(values, window: int) -> np.ndarray:
    """Trailing moving average (the first ``window − 1`` values average what exists so far)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def onset_of_acceleration(velocity, span: int = 5, min_rise: int = 3) -> int | None:
    """Index from which the smoothed velocity keeps rising: the exponential moving average's increments stay
    positive for the last run of at least ``min_rise`` readings (science §3.3 gate 2). None = not accelerating."""
    v = np.asarray(velocity, dtype=float)
    if len(v) < min_rise + 1:
        return None
    alpha = 2.0 / (span + 1)
    ema = np.empty_like(v)
    ema[0] = v[0]
    for i in range(1, len(v)):  # a short recursive filter; a few hundred readings at most
        ema[i] = alpha * v[i] + (1 - alpha) * ema[i - 1]
    rising = np.diff(ema) > 0
    if not rising[-1]:
        return None
    run = len(rising) - (np.flatnonzero(~rising)[-1] + 1 if (~rising).any() else 0)
    return int(len(v) - 1 - run) if run >= min_rise else None


def saito_three_point(t1: float, t2: float, t3: float) -> float:
    """Saito 1969: with equal displacement increments between t1, t2, t3, t_r = (t2² − t1·t3)/(2·t2 − t1 − t3)."""
    den = 2 * t2 - t1 - t3
    if den == 0:
        raise ValueError("the three times are equally spaced: displacement is not accelerating")
    return (t2 * t2 - t1 * t3) / den


# ------------------------------------------------------------------------------------------ dual control

def dual_control_rank(cumulative_pct: float, rate_pct: float, *, yellow_both: float = 70.0, yellow_either: float = 85.0,
                      orange_both: float = 85.0, orange_either: float = 100.0, red_both: float = 100.0,
                      rate_jump: bool = False) -> int:
    """双控 (science §3.5): percentages of the control values of cumulative displacement and its rate.

    红: both ≥ 100 % or a sharp rate jump; 橙: both ≥ 85 % or either ≥ 100 %; 黄: both ≥ 70 % or either ≥ 85 %.
    """
    both = min(cumulative_pct, rate_pct)
    either = max(cumulative_pct, rate_pct)
    if both >= red_both or rate_jump:
        return 4
    if both >= orange_both or either >= orange_either:
        return 3
    if both >= yellow_both or either >= yellow_either:
        return 2
    return 0

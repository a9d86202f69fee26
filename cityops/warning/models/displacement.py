"""Slope-displacement warnings (science §3): velocity classes, the improved tangent angle (改进切线角,
Xu Qiang et al. 2009), inverse-velocity time-of-failure (Fukuzono 1985; Voight 1988), Saito's three-point
formula and dual control (双控).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from cityops.warning.models.levels import RANK

def velocity_class(v_m_per_s: float, classes, below: tuple[int, str]) -> tuple[int, str]:
    """Cruden & Varnes class of a velocity (science §3.1): ``classes`` = (number, name, lower bound in m/s),
    fastest first (the catalogue's ``[velocity_classes]``); ``below`` is the class under the last bound."""
    for number, name, lower in classes:
        if v_m_per_s >= lower:
            return number, name
    return below


# ---------------------------------------------------------------------------------------- tangent angle

def tangent_angle(delta_s, delta_t, v_constant) -> np.ndarray:
    """α_i = arctan((ΔS/v)/Δt) = arctan(v_i/v) in degrees; unit-free as long as v and v_i share units."""
    if np.any(np.asarray(v_constant) <= 0):
        raise ValueError("the constant-stage velocity v must be positive")
    v_i = np.asarray(delta_s, dtype=float) / np.asarray(delta_t, dtype=float)
    return np.degrees(np.arctan(v_i / np.asarray(v_constant, dtype=float)))


def tangent_rank(angle_deg, yellow_above: float, orange_from: float, red_from: float) -> np.ndarray:
    """Pinned intervals (science §3.4): α ≤ 45° → 蓝; 45° < α < 80° → 黄; 80° ≤ α < 85° → 橙; α ≥ 85° → 红."""
    a = np.asarray(angle_deg, dtype=float)
    return np.select([a >= red_from, a >= orange_from, a > yellow_above], [RANK["red"], RANK["orange"], RANK["yellow"]],
                     default=RANK["blue"])


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


def inverse_velocity_forecast(times, velocity, *, min_points: int, min_r2: float, confidence: float,
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


def velocity_resolution(noise_mm: float, interval: float) -> float:
    """Standard deviation of a velocity measured from two readings of standard deviation ``noise_mm`` taken
    ``interval`` apart: √2·σ/Δt (mm per unit of ``interval``)."""
    if noise_mm < 0 or interval <= 0:
        raise ValueError("instrument noise must not be negative and the interval must be positive")
    return math.sqrt(2.0) * noise_mm / interval


def noise_floor(noise_mm: float, interval: float, factor: float) -> float:
    """The velocity below which a measurement over ``interval`` is indistinguishable from noise: ``factor`` times
    its resolution (science §3.4: "about 3× the noise-derived velocity resolution")."""
    return factor * velocity_resolution(noise_mm, interval)


def regular_grid(times, step: float) -> np.ndarray:
    """Times ``step`` apart ending at the last time, oldest first, none before the first time."""
    t = np.asarray(times, dtype=float)
    n = int(np.floor(round((t[-1] - t[0]) / step, 9)))  # rounding absorbs float error on whole multiples
    return t[-1] - step * np.arange(n, -1, -1)


@dataclass(frozen=True)
class WindowVelocity:
    """Mean velocity over each run of ``window`` consecutive grid intervals: the moving average of the interval
    velocities, which telescopes to (S_end − S_start)/(t_end − t_start). Only whole windows are kept."""

    start: np.ndarray
    end: np.ndarray
    v: np.ndarray
    window: int

    @property
    def mid(self) -> np.ndarray:
        """Where each mean velocity belongs in time: the middle of its window (no lag from a trailing average)."""
        return (self.start + self.end) / 2


def window_velocity(grid, cumulative, window: int) -> WindowVelocity:
    g = np.asarray(grid, dtype=float)
    s = np.asarray(cumulative, dtype=float)
    if window < 1:
        raise ValueError(f"a moving-average window holds at least one interval, got {window}")
    if len(g) <= window:
        empty = np.zeros(0)
        return WindowVelocity(empty, empty, empty, window)
    return WindowVelocity(g[:-window], g[window:], (s[window:] - s[:-window]) / (g[window:] - g[:-window]), window)


@dataclass(frozen=True)
class InverseVelocityResult:
    """The inverse-velocity assessment of a displacement series (times in days): the forecast, or the gate that
    stopped it (science §3.3), with what each gate saw."""

    forecast: FailureForecast | None
    #: None, or why there is no forecast: "too_few_readings", "not_accelerating", "below_noise_floor", "poor_fit".
    gate: str | None
    short_floor: float
    long_floor: float
    onset: float | None = None
    points: int = 0
    short_velocity: float | None = None
    long_velocity: float | None = None


def inverse_velocity(times, cumulative, *, interval: float, short_window: int, long_window: int, noise_mm: float,
                     floor_factor: float, onset_span: int, onset_min_rise: int, min_points: int, min_r2: float,
                     confidence: float) -> InverseVelocityResult:
    """Inverse-velocity forecast from cumulative displacement, with the gates of science §3.3.

    1. Velocities on a regular grid of ``interval``, smoothed by a short and a long moving average (in
       intervals); each smoothed velocity sits at the middle of its window.
    2. The onset of acceleration is found on the long average (it ignores scatter); only the short average's
       points after it are fitted (they follow the acceleration with little lag).
    3. Points at or below the noise floor of the short window (``floor_factor`` × √2·noise/(window·interval))
       are left out; then ``inverse_velocity_forecast`` applies the slope and r² gates.
    """
    t = np.asarray(times, dtype=float)
    s = np.asarray(cumulative, dtype=float)
    short_floor = noise_floor(noise_mm, short_window * interval, floor_factor)
    long_floor = noise_floor(noise_mm, long_window * interval, floor_factor)
    grid = regular_grid(t, interval) if len(t) >= 2 else t
    cum = np.interp(grid, t, s) if len(t) else s
    short, long = window_velocity(grid, cum, short_window), window_velocity(grid, cum, long_window)
    seen = {"short_floor": short_floor, "long_floor": long_floor,
            "short_velocity": float(short.v[-1]) if len(short.v) else None,
            "long_velocity": float(long.v[-1]) if len(long.v) else None}
    if len(long.v) <= onset_min_rise:
        return InverseVelocityResult(None, "too_few_readings", **seen)
    onset = onset_of_acceleration(long.v, onset_span, onset_min_rise)
    if onset is None:
        return InverseVelocityResult(None, "not_accelerating", **seen)
    onset_t = float(long.end[onset])
    after = short.mid >= onset_t
    keep = after & (short.v > short_floor)
    if keep.sum() < min_points:
        gate = "below_noise_floor" if after.sum() >= min_points else "too_few_readings"
        return InverseVelocityResult(None, gate, onset=onset_t, points=int(keep.sum()), **seen)
    forecast = inverse_velocity_forecast(short.mid[keep], short.v[keep], min_points=min_points, min_r2=min_r2,
                                         confidence=confidence, noise_floor=short_floor)
    return InverseVelocityResult(forecast, None if forecast else "poor_fit", onset=onset_t, points=int(keep.sum()), **seen)


def onset_of_acceleration(velocity, span: int, min_rise: int) -> int | None:
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

def dual_control_rank(cumulative_pct: float, rate_pct: float, *, yellow_both: float, yellow_either: float,
                      orange_both: float, orange_either: float, red_both: float, rate_jump: bool = False) -> int:
    """双控 (science §3.5): percentages of the control values of cumulative displacement and its rate.

    红: both ≥ red_both or a sharp rate jump; 橙: both ≥ orange_both or either ≥ orange_either; 黄: both ≥
    yellow_both or either ≥ yellow_either (the catalogue's ``[dual_control]``: 100; 85/100; 70/85 %).
    """
    both = min(cumulative_pct, rate_pct)
    either = max(cumulative_pct, rate_pct)
    if both >= red_both or rate_jump:
        return RANK["red"]
    if both >= orange_both or either >= orange_either:
        return RANK["orange"]
    if both >= yellow_both or either >= yellow_either:
        return RANK["yellow"]
    return RANK["none"]

"""Antecedent effective rainfall (前期有效降雨量), science §1.4.

``Pa = Σ_{i=1..n} K^i·R_i`` with R_i the rain of the i-th day *before* the current day (i = 1 yesterday) —
exponent i, the pinned CityOps convention (the K^(i−1) variant gives Pa/K). ``Re = R_0 + Pa``.
"""

from __future__ import annotations

import math

import numpy as np


def antecedent_rainfall(previous_days_mm, k: float, n_days: int | None = None) -> np.ndarray | float:
    """Pa from daily totals of the previous days, most recent first (R_1, R_2, …).

    ``previous_days_mm`` may be 1-D (one point) or 2-D (points × days); only the first ``n_days`` are used.
    """
    if not 0 < k < 1:
        raise ValueError(f"decay coefficient K must lie in (0, 1), got {k}")
    r = np.asarray(previous_days_mm, dtype=float)
    if n_days is not None:
        r = r[..., :n_days]
    if np.any(r < 0):
        raise ValueError("daily rainfall must not be negative")
    weights = k ** np.arange(1, r.shape[-1] + 1)
    pa = r @ weights
    return float(pa) if np.ndim(pa) == 0 else pa


def effective_rainfall(current_day_mm, previous_days_mm, k: float, n_days: int | None = None):
    """Re = R_0 + Pa."""
    return np.asarray(current_day_mm, dtype=float) + antecedent_rainfall(previous_days_mm, k, n_days)


def k_from_half_life(half_life: float, step: float = 1.0) -> float:
    """Decay coefficient per ``step`` for a half-life in the same unit: K = 0.5^(Δt/T_half)."""
    if half_life <= 0:
        raise ValueError("half-life must be positive")
    return 0.5 ** (step / half_life)


def half_life_from_k(k: float, step: float = 1.0) -> float:
    """Half-life (in units of ``step``) of a decay coefficient: T_half = Δt·ln 0.5 / ln K."""
    if not 0 < k < 1:
        raise ValueError(f"decay coefficient K must lie in (0, 1), got {k}")
    return step * math.log(0.5) / math.log(k)


def daily_totals(times_s: np.ndarray, values_mm: np.ndarray, day_end_s: float, n_days: int) -> np.ndarray:
    """Daily totals of rainfall readings for the ``n_days`` days before the day ending at ``day_end_s``.

    ``times_s`` are POSIX seconds, ``day_end_s`` the start of the current rainfall day (the configured day
    boundary). Returns R_1..R_n, most recent first.
    """
    t = np.asarray(times_s, dtype=float)
    v = np.asarray(values_mm, dtype=float)
    day = np.ceil((day_end_s - t) / 86400.0).astype(int)  # 1 = the day before the current one
    keep = (t < day_end_s) & (day >= 1) & (day <= n_days)
    return np.bincount(day[keep] - 1, weights=v[keep], minlength=n_days)[:n_days]

"""Logistic rainfall model M1 (USGS, Staley et al. 2017), science §5: p = e^X/(1 + e^X),
X = B + (Ct·T + Cf·F + Cs·S)·R, and its inversion R(p). The coefficients per rainfall window are the
catalogue's ``[logistic_m1]`` (``Catalogue.logistic_m1``: minutes → (B, Ct, Cf, Cs))."""

from __future__ import annotations

import numpy as np


def _coefficients(coefficients: dict, window_min: int):
    try:
        return coefficients[window_min]
    except KeyError:
        raise ValueError(f"no M1 coefficients for a {window_min}-minute window; expected one of {sorted(coefficients)}") from None


def probability(rain_mm, t: float, f: float, s: float, window_min: int, coefficients: dict):
    b, ct, cf, cs = _coefficients(coefficients, window_min)
    x = b + (ct * t + cf * f + cs * s) * np.asarray(rain_mm, dtype=float)
    return 1.0 / (1.0 + np.exp(-x))


def rainfall_for(p, t: float, f: float, s: float, window_min: int, coefficients: dict):
    """R (mm in the window) at which the likelihood reaches ``p``."""
    p = np.asarray(p, dtype=float)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("probability must lie strictly between 0 and 1")
    b, ct, cf, cs = _coefficients(coefficients, window_min)
    return (np.log(p / (1 - p)) - b) / (ct * t + cf * f + cs * s)

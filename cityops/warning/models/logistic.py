"""Logistic rainfall model M1 (USGS, Staley et al. 2017), science §5: p = e^X/(1 + e^X),
X = B + (Ct·T + Cf·F + Cs·S)·R, and its inversion R(p)."""

from __future__ import annotations

import numpy as np

# Window (minutes) → (B, Ct, Cf, Cs), confirmed from the USGS pfdf test suite.
M1 = {15: (-3.63, 0.41, 0.67, 0.70), 30: (-3.61, 0.26, 0.39, 0.50), 60: (-3.21, 0.17, 0.20, 0.22)}


def _coefficients(window_min: int):
    try:
        return M1[window_min]
    except KeyError:
        raise ValueError(f"no M1 coefficients for a {window_min}-minute window; expected one of {sorted(M1)}") from None


def probability(rain_mm, t: float, f: float, s: float, window_min: int = 15):
    b, ct, cf, cs = _coefficients(window_min)
    x = b + (ct * t + cf * f + cs * s) * np.asarray(rain_mm, dtype=float)
    return 1.0 / (1.0 + np.exp(-x))


def rainfall_for(p, t: float, f: float, s: float, window_min: int = 15):
    """R (mm in the window) at which the likelihood reaches ``p``."""
    p = np.asarray(p, dtype=float)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("probability must lie strictly between 0 and 1")
    b, ct, cf, cs = _coefficients(window_min)
    return (np.log(p / (1 - p)) - b) / (ct * t + cf * f + cs * s)

"""Local threshold calibration with the frequentist method (CNR-IRPI; Brunetti et al. 2010, Peruccacci
et al. 2012), science §1.6.

Fit ``log10 E = log10 α + γ·log10 D`` by least squares, model the residuals δ (a maximum-likelihood normal,
or a Gaussian kernel density as IRPI does), and move only the intercept to the δ_P of each non-exceedance
probability P. A bootstrap over events gives the uncertainty of α_P and γ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

@dataclass
class Calibration:
    alpha: float  # fitted intercept (50 % curve of the least-squares line), mm
    gamma: float
    mu: float  # residual distribution
    sigma: float
    n_events: int
    method: str
    alpha_p: dict[str, float]  # level → α_P
    probabilities: dict[str, float]
    bootstrap: dict = field(default_factory=dict)  # level/γ → {"q05": …, "q50": …, "q95": …} (the quantiles asked for)

    def threshold(self, level: str, duration_h):
        return self.alpha_p[level] * np.asarray(duration_h, dtype=float) ** self.gamma

    def as_threshold_set(self, key: str, **meta) -> dict:
        """Catalogue entry (``[[threshold_sets]]``) for this calibration."""
        return {"key": key, "gamma": round(self.gamma, 6), "alpha": {k: round(v, 6) for k, v in self.alpha_p.items()},
                "probabilities": dict(self.probabilities), "calibration": f"frequentist ({self.method}), {self.n_events} events",
                **meta}


def _validate(d: np.ndarray, e: np.ndarray, min_events: int) -> None:
    if d.shape != e.shape or d.ndim != 1:
        raise ValueError("durations and event rainfall must be 1-D arrays of equal length")
    if len(d) < min_events:
        raise ValueError(f"at least {min_events} rainfall conditions are needed to fit a threshold, got {len(d)}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(e))) or np.any(d <= 0) or np.any(e <= 0):
        raise ValueError("durations and event rainfall must be positive finite numbers")


def _delta_p(residuals: np.ndarray, p: float, method: str, mu: float, sigma: float) -> float:
    if method == "normal":
        return mu + stats.norm.ppf(p) * sigma
    # IRPI: Gaussian kernel density of δ; δ_P solves ∫_{−∞}^{δ_P} kde = P. The kde's CDF is the mean of
    # Φ((x − δ_i)/h), so δ_P lies between min(δ) + h·z_P and max(δ) + h·z_P: an exact bracket.
    kde = stats.gaussian_kde(residuals)
    shift = math.sqrt(float(kde.covariance[0, 0])) * stats.norm.ppf(p)
    lo, hi = residuals.min() + shift, residuals.max() + shift
    if lo == hi:
        return float(lo)
    return optimize.brentq(lambda x: kde.integrate_box_1d(-np.inf, x) - p, lo, hi)


def _fit(x: np.ndarray, y: np.ndarray, gamma: float | None):
    if gamma is None:
        gamma, intercept = np.polyfit(x, y, 1)
    else:  # fewer local events: γ fixed from a regional fit, only α estimated (science §1.6 step 9)
        intercept = float(np.mean(y - gamma * x))
    return float(intercept), float(gamma)


def fit_frequentist(durations_h, event_mm, probabilities: dict[str, float], *, min_events: int, method: str = "normal",
                    gamma: float | None = None, n_bootstrap: int = 0, quantiles=(), seed: int = 0) -> Calibration:
    """Calibrate E_P = α_P·D^γ at each probability of ``probabilities`` (the catalogue's ``[calibration]``:
    5/20/50/80 %); with ``n_bootstrap`` resamples, report the ``quantiles`` of α_P and γ."""
    if method not in ("normal", "kde"):
        raise ValueError(f"unknown residual model {method!r}: expected 'normal' or 'kde'")
    probabilities = dict(probabilities)
    if any(not 0 < p < 1 for p in probabilities.values()):
        raise ValueError("probabilities must lie strictly between 0 and 1")
    d = np.asarray(durations_h, dtype=float)
    e = np.asarray(event_mm, dtype=float)
    _validate(d, e, min_events)
    x, y = np.log10(d), np.log10(e)
    intercept, g = _fit(x, y, gamma)
    residuals = y - (intercept + g * x)
    mu, sigma = stats.norm.fit(residuals)  # maximum likelihood
    alpha_p = {k: float(10 ** (intercept + _delta_p(residuals, p, method, mu, sigma))) for k, p in probabilities.items()}
    result = Calibration(alpha=float(10**intercept), gamma=g, mu=float(mu), sigma=float(sigma), n_events=len(d),
                         method=method, alpha_p=alpha_p, probabilities=probabilities)
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        samples = {k: np.empty(n_bootstrap) for k in probabilities}
        gammas = np.empty(n_bootstrap)
        for b in range(n_bootstrap):
            pick = rng.integers(0, len(d), len(d))
            bi, bg = _fit(x[pick], y[pick], gamma)
            res = y[pick] - (bi + bg * x[pick])
            bmu, bsigma = stats.norm.fit(res)
            gammas[b] = bg
            for k, p in probabilities.items():
                samples[k][b] = 10 ** (bi + (bmu + stats.norm.ppf(p) * bsigma if method == "normal"
                                              else _delta_p(res, p, method, bmu, bsigma)))
        names = [f"q{round(q * 100):02d}" for q in quantiles]
        q = lambda a: dict(zip(names, map(float, np.quantile(a, list(quantiles)))))  # noqa: E731
        result.bootstrap = {"gamma": q(gammas), **{k: q(v) for k, v in samples.items()}}
    return result

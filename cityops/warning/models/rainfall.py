"""Rainfall thresholds for landslides (降雨阈值): power-law ID/ED curves, the exceedance index of a running
event, and the four-level ED threshold sets of the frequentist calibration.

Forms (science §1.1): ``I = α·D^(−β)`` (I mm/h, D h) and ``E = α·D^γ`` with E = I·D, so an ID curve is an
ED curve with γ = 1 − β. Everything is vectorised over risk points: a running event is an array of shape
(points, hours) and the evaluation is a handful of NumPy reductions (10 000 points well under a second).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cityops.warning.models.levels import LEVEL_KEYS


@dataclass(frozen=True)
class PowerLawCurve:
    """``E(D) = alpha·D^gamma`` (mm), equivalently ``I(D) = alpha·D^(gamma−1)`` (mm/h)."""

    key: str
    alpha: float
    gamma: float
    d_min_h: float = 0.0
    d_max_h: float = float("inf")
    name: str = ""
    source: str = ""
    confidence: str = ""
    calibration: str = "uncalibrated – literature default"

    @classmethod
    def from_id(cls, key: str, alpha: float, beta: float, **meta) -> "PowerLawCurve":
        """An intensity–duration curve ``I = α·D^(−β)``."""
        return cls(key=key, alpha=alpha, gamma=1.0 - beta, **meta)

    @property
    def beta(self) -> float:
        return 1.0 - self.gamma

    def intensity(self, duration_h):
        """Threshold mean intensity I (mm/h) at duration D (h)."""
        d = np.asarray(duration_h, dtype=float)
        return self.alpha * d ** (self.gamma - 1.0)

    def event_rainfall(self, duration_h):
        """Threshold cumulated event rainfall E (mm) at duration D (h)."""
        d = np.asarray(duration_h, dtype=float)
        return self.alpha * d**self.gamma

    def in_range(self, duration_h):
        d = np.asarray(duration_h, dtype=float)
        return (d >= self.d_min_h) & (d <= self.d_max_h)

    def exceedance(self, observed_mm, duration_h):
        """Exceedance index ``X = E_obs / E_thr`` (= I_obs / I_thr); NaN outside the validity range."""
        d = np.asarray(duration_h, dtype=float)
        x = np.asarray(observed_mm, dtype=float) / self.event_rainfall(d)
        return np.where(self.in_range(d), x, np.nan)

    def metadata(self) -> dict:
        return {"key": self.key, "name": self.name, "formula": "E = alpha * D^gamma (I = alpha * D^(gamma-1))",
                "parameters": {"alpha": self.alpha, "gamma": self.gamma}, "units": {"E": "mm", "I": "mm/h", "D": "h"},
                "valid_range": [self.d_min_h, self.d_max_h], "source": self.source, "confidence": self.confidence,
                "calibration": self.calibration}


@dataclass(frozen=True)
class LevelThresholds:
    """Four ED curves sharing γ: E_P = α_P·D^γ at the probabilities of blue/yellow/orange/red (science §1.7)."""

    key: str
    gamma: float
    alpha: dict[str, float]
    probabilities: dict[str, float] = field(default_factory=dict)
    d_min_h: float = 0.0
    d_max_h: float = float("inf")
    floor: PowerLawCurve | None = None
    name: str = ""
    source: str = ""
    confidence: str = ""
    calibration: str = "uncalibrated – literature default"

    def __post_init__(self):
        missing = [k for k in LEVEL_KEYS[1:] if k not in self.alpha]
        if missing:
            raise ValueError(f"threshold set {self.key!r}: no alpha for {missing}")
        values = [self.alpha[k] for k in LEVEL_KEYS[1:]]
        if any(v <= 0 for v in values) or values != sorted(values):
            raise ValueError(f"threshold set {self.key!r}: alpha must be positive and increase blue → red, got {values}")

    def curve(self, level: str) -> PowerLawCurve:
        return PowerLawCurve(f"{self.key}:{level}", self.alpha[level], self.gamma, self.d_min_h, self.d_max_h)

    def thresholds(self, duration_h) -> np.ndarray:
        """E_P(D) for blue..red, shape (4, *D.shape)."""
        d = np.asarray(duration_h, dtype=float)
        a = np.array([self.alpha[k] for k in LEVEL_KEYS[1:]]).reshape((len(LEVEL_KEYS) - 1,) + (1,) * d.ndim)
        return a * d**self.gamma

    def rank(self, observed_mm, duration_h) -> np.ndarray:
        """Level rank 0..4 reached by E_obs at D (elementwise); 0 outside the validity range and below the floor."""
        e = np.asarray(observed_mm, dtype=float)
        d = np.broadcast_to(np.asarray(duration_h, dtype=float), e.shape)
        reached = (e[None, ...] >= self.thresholds(d)).sum(axis=0)
        valid = (d >= self.d_min_h) & (d <= self.d_max_h)
        if self.floor is not None:  # no rainfall warning below the published floor curve (science §1.2)
            valid &= e >= self.floor.event_rainfall(d)
        return np.where(valid, reached, 0)

    def withheld_by_floor(self, observed_mm, duration_h) -> np.ndarray:
        """Where the floor, not the 蓝 curve, keeps E_obs from a warning: E_5(D) ≤ E_obs < floor(D) in range."""
        e = np.asarray(observed_mm, dtype=float)
        d = np.broadcast_to(np.asarray(duration_h, dtype=float), e.shape)
        if self.floor is None:
            return np.zeros(e.shape, dtype=bool)
        in_range = (d >= self.d_min_h) & (d <= self.d_max_h)
        return in_range & (e >= self.curve(LEVEL_KEYS[1]).event_rainfall(d)) & (e < self.floor.event_rainfall(d))

    def floor_crossing_h(self, level: str) -> float | None:
        """Duration at which the floor curve meets this level's curve (α_f·D^γ_f = α_P·D^γ), or None when they
        never meet (equal exponents). Beyond it the floor is the higher curve when γ_f > γ."""
        if self.floor is None or self.floor.gamma == self.gamma:
            return None
        return float((self.alpha[level] / self.floor.alpha) ** (1.0 / (self.floor.gamma - self.gamma)))

    def metadata(self) -> dict:
        return {"key": self.key, "name": self.name, "formula": "E_P = alpha_P * D^gamma",
                "parameters": {"gamma": self.gamma, "alpha": dict(self.alpha), "probabilities": dict(self.probabilities)},
                "units": {"E": "mm", "D": "h"}, "valid_range": [self.d_min_h, self.d_max_h],
                "floor": self.floor.key if self.floor else None, "source": self.source, "confidence": self.confidence,
                "calibration": self.calibration}


def trailing_sums(hourly_mm: np.ndarray, durations_h) -> np.ndarray:
    """E_obs(D) for each candidate D ending at the last hour: rain of the last D hours.

    ``hourly_mm`` has shape (points, hours), oldest first. Returns shape (points, len(durations)).
    """
    rain = np.atleast_2d(np.asarray(hourly_mm, dtype=float))
    hours = rain.shape[1]
    # Cumulative sums from the end: back[:, k] = rain of the last k hours.
    back = np.concatenate((np.zeros((rain.shape[0], 1)), np.cumsum(rain[:, ::-1], axis=1)), axis=1)
    idx = np.minimum(np.asarray(durations_h, dtype=int), hours)
    return back[:, idx]


def current_event_hours(hourly_mm: np.ndarray, dry_spell_h: int, resolution_mm: float = 0.0) -> np.ndarray:
    """Duration (h) of the running rainfall event at the end of each row: from the first wet hour after the
    last dry spell of at least ``dry_spell_h`` hours up to now (science §1.6 step 1). 0 = no event."""
    rain = np.atleast_2d(np.asarray(hourly_mm, dtype=float))
    wet = rain > resolution_mm
    n_points, hours = wet.shape
    idx = np.arange(hours)
    last_wet = np.where(wet, idx, -1).max(axis=1)
    # Length of the dry run ending at each hour; a spell at least dry_spell_h long splits events.
    dry_run = np.zeros_like(rain, dtype=int)
    run = np.zeros(n_points, dtype=int)
    for h in range(hours):  # hours ≤ a few hundred: a loop over time, vectorised over points
        run = np.where(wet[:, h], 0, run + 1)
        dry_run[:, h] = run
    split = dry_run >= dry_spell_h
    last_split = np.where(split, idx, -1)
    # First wet hour after the last split that precedes the last wet hour.
    masked = np.where(idx[None, :] <= last_wet[:, None], last_split, -1).max(axis=1)
    wet_after = wet & (idx[None, :] > masked[:, None])
    has = wet_after.any(axis=1)
    first_wet_after = np.where(has, wet_after.argmax(axis=1), -1)
    ended = (hours - 1 - last_wet) >= dry_spell_h
    duration = np.where(has & ~ended, hours - first_wet_after, 0)
    return duration


@dataclass
class RainfallEvaluation:
    """Result per risk point: level rank, exceedance index, the duration that decided it and E_obs there."""

    rank: np.ndarray
    index: np.ndarray
    duration_h: np.ndarray
    observed_mm: np.ndarray
    durations_h: np.ndarray
    observed_by_duration: np.ndarray
    #: Per point, the candidate duration at which the floor withheld a 蓝 warning (NaN: it withheld none).
    floor_withheld_h: np.ndarray


def evaluate_event(hourly_mm: np.ndarray, thresholds: LevelThresholds, durations_h,
                   event_hours: np.ndarray | None = None) -> RainfallEvaluation:
    """The four-level evaluation of a running event (science §1.3, §1.7), vectorised over points.

    For each candidate D (the catalogue's ``[rainfall] durations_h``) ending now (clipped to the event's length
    and the curve's validity range): E_obs(D), the level reached and ``X(D) = E_obs(D)/E_5(D)``. The level is the highest over D, and the
    D recorded is the one with the largest index (the "why" shown to the operator).
    """
    rain = np.atleast_2d(np.asarray(hourly_mm, dtype=float))
    n = rain.shape[0]
    durations = np.asarray(sorted(set(int(d) for d in durations_h)), dtype=int)
    observed = trailing_sums(rain, durations)
    d_grid = np.broadcast_to(durations.astype(float), observed.shape)
    if event_hours is not None:
        ev = np.asarray(event_hours, dtype=int)
        # The whole event is a candidate too; durations longer than the event add no rain and are skipped.
        back = np.concatenate((np.zeros((n, 1)), np.cumsum(rain[:, ::-1], axis=1)), axis=1)
        whole = back[np.arange(n), np.minimum(ev, rain.shape[1])]
        observed = np.column_stack((observed, whole))
        d_grid = np.column_stack((d_grid, np.maximum(ev, 1).astype(float)))
        usable = np.column_stack((durations[None, :] <= np.maximum(ev, 1)[:, None], ev > 0))
    else:
        usable = np.ones_like(observed, dtype=bool)
    ranks = np.where(usable, thresholds.rank(observed, d_grid), 0)
    withheld = usable & thresholds.withheld_by_floor(observed, d_grid)
    base = thresholds.curve("blue")
    index = np.where(usable & base.in_range(d_grid), observed / base.event_rainfall(d_grid), np.nan)
    index_filled = np.where(np.isnan(index), -np.inf, index)
    best = index_filled.argmax(axis=1)
    rows = np.arange(n)
    best_index = index[rows, best]
    floor_h = np.where(withheld.any(axis=1), d_grid[rows, withheld.argmax(axis=1)], np.nan)
    return RainfallEvaluation(rank=ranks.max(axis=1), index=best_index, duration_h=d_grid[rows, best],
                              observed_mm=observed[rows, best], durations_h=d_grid, observed_by_duration=observed,
                              floor_withheld_h=floor_h)

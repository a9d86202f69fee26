"""Skill scores of a threshold against an event table (science §2; Wilks, Jolliffe & Stephenson).

a = hits, b = false alarms, c = misses, d = correct negatives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def _div(num: float, den: float) -> float:
    return num / den if den else math.nan


@dataclass(frozen=True)
class Contingency:
    a: int
    b: int
    c: int
    d: int

    def __post_init__(self):
        for name in ("a", "b", "c", "d"):
            value = getattr(self, name)
            if int(value) != value or value < 0:
                raise ValueError(f"contingency cell {name} must be a non-negative integer, got {value}")

    @classmethod
    def from_arrays(cls, warned, observed) -> "Contingency":
        """From paired booleans per cell and window: was a warning issued, did a landslide occur."""
        w = np.asarray(warned, dtype=bool)
        o = np.asarray(observed, dtype=bool)
        if w.shape != o.shape:
            raise ValueError("warned and observed must have the same shape")
        return cls(int((w & o).sum()), int((w & ~o).sum()), int((~w & o).sum()), int((~w & ~o).sum()))

    @property
    def n(self) -> int:
        return self.a + self.b + self.c + self.d

    def scores(self) -> dict[str, float]:
        a, b, c, d, n = self.a, self.b, self.c, self.d, self.n
        pod = _div(a, a + c)
        pofd = _div(b, b + d)
        a_r = _div((a + b) * (a + c), n)
        return {
            "pc": _div(a + d, n),
            "pod": pod,
            "far": _div(b, a + b),
            "pofd": pofd,
            "tss": _div(a * d - b * c, (a + c) * (b + d)),
            "csi": _div(a, a + b + c),
            "hss": _div(2 * (a * d - b * c), (a + c) * (c + d) + (a + b) * (b + d)),
            "ets": _div(a - a_r, a + b + c - a_r),
            "a_random": a_r,
            "bias": _div(a + b, a + c),
        }

    def report(self) -> dict:
        return {**asdict(self), "n": self.n, **self.scores()}


def roc(scores, observed, thresholds) -> list[dict]:
    """POD and POFD as the warning threshold varies (warn when score ≥ threshold); ROC points."""
    s = np.asarray(scores, dtype=float)
    o = np.asarray(observed, dtype=bool)
    points = []
    for t in thresholds:
        sc = Contingency.from_arrays(s >= t, o).scores()
        points.append({"threshold": float(t), "pod": sc["pod"], "pofd": sc["pofd"], "tss": sc["tss"]})
    return points


def threshold_skill(durations_h, event_mm, landslide, alpha: float, gamma: float) -> Contingency:
    """Contingency of an ED threshold ``E = α·D^γ`` against an event table: one row per rainfall event
    (duration, cumulated rain, whether it triggered a landslide); warned = at or above the curve."""
    d = np.asarray(durations_h, dtype=float)
    e = np.asarray(event_mm, dtype=float)
    if d.shape != e.shape or np.any(d <= 0) or np.any(e < 0):
        raise ValueError("event table: durations must be positive and rainfall non-negative, one of each per event")
    return Contingency.from_arrays(e >= alpha * d**gamma, landslide)

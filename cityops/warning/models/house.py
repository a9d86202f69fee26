"""House tilt per JGJ 125-2016 (危险房屋鉴定标准) §5.2 and the sensor ladder of science §4.2.

Tilt is the overall inclination against the construction baseline (horizontal offset / height), in percent.
``TiltRule`` is the one tilt rule of CityOps: the sensing alarm path (rules.toml, kind ``house_tilt``) and the
warning path both judge a reading with it, its parameters from the warning catalogue (``[house_tilt]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cityops.warning.models.levels import RANK


@dataclass(frozen=True)
class TiltJudgement:
    """What the rule decided for one reading, and from what."""

    rank: int
    tilt_pct: float
    storeys: int
    storeys_known: bool
    limit_pct: float
    share_of_limit: float
    dangerous: bool
    rising_readings: int
    #: Which clause decided: "above_limit", "orange_share", "yellow_share", "tilt_with_cracks", "trend" or None.
    clause: str | None

    def as_dict(self) -> dict:
        return {"tilt_pct": self.tilt_pct, "storeys": self.storeys, "storeys_known": self.storeys_known,
                "limit_pct": self.limit_pct, "share_of_limit": self.share_of_limit, "foundation_dangerous": self.dangerous,
                "rising_readings": self.rising_readings, "clause": self.clause}


@dataclass(frozen=True)
class TiltRule:
    """JGJ 125 limit by storeys (strict ``>``) and the §4.2 ladder as fractions of that limit."""

    limit_low_rise_pct: float
    limit_other_pct: float
    low_rise_max_storeys: int
    yellow_fraction: float
    orange_fraction: float
    crack_tilt_pct: float
    trend_readings: int
    noise_pct: float
    unknown_storeys: int
    source: str = ""

    @classmethod
    def from_params(cls, params: dict) -> "TiltRule":
        return cls(**{name: params[name] for name in cls.__dataclass_fields__ if name in params})

    def limit_pct(self, storeys: int) -> float:
        """3 % for 1–2 storeys, else 2 % (JGJ 125-2016 §5.2, confirmed)."""
        if storeys < 1:
            raise ValueError(f"a house has at least one storey, got {storeys}")
        return self.limit_low_rise_pct if storeys <= self.low_rise_max_storeys else self.limit_other_pct

    def dangerous(self, tilt_pct: float, storeys: int) -> bool:
        """Foundation dangerous when the tilt is strictly above the limit."""
        return abs(tilt_pct) > self.limit_pct(storeys)

    def rising_readings(self, values) -> int:
        """How many of the last readings each rose (in magnitude) by more than the noise over the one before."""
        rising = np.diff(np.abs(np.asarray(values, dtype=float))) > self.noise_pct
        return int(len(rising) - (np.flatnonzero(~rising)[-1] + 1)) if (~rising).any() else int(len(rising))

    def judge(self, tilt_pct: float, storeys: int | None, *, settlement_cracks: bool = False, rising_readings: int = 0,
              accelerating: bool = False) -> TiltJudgement:
        """The ladder (science §4.2): 红 tilt > limit or accelerating; 橙 ≥ orange share of the limit; 黄 ≥ yellow
        share, or above ``crack_tilt_pct`` with settlement cracks; 蓝 a rise above noise over ``trend_readings``."""
        known = storeys is not None and storeys >= 1
        floors = int(storeys) if known else self.unknown_storeys
        tilt = abs(float(tilt_pct))
        limit = self.limit_pct(floors)
        if tilt > limit or accelerating:
            rank, clause = RANK["red"], "above_limit" if tilt > limit else "accelerating"
        elif tilt >= self.orange_fraction * limit:
            rank, clause = RANK["orange"], "orange_share"
        elif tilt >= self.yellow_fraction * limit:
            rank, clause = RANK["yellow"], "yellow_share"
        elif settlement_cracks and tilt > self.crack_tilt_pct:
            rank, clause = RANK["yellow"], "tilt_with_cracks"
        elif rising_readings >= self.trend_readings:
            rank, clause = RANK["blue"], "trend"
        else:
            rank, clause = RANK["none"], None
        return TiltJudgement(rank, float(tilt_pct), floors, known, limit, tilt / limit, tilt > limit, rising_readings, clause)


def tilt_with_cracks_dangerous(tilt_pct: float, *, crack_tilt_pct: float, single_crack_mm: float, parallel_crack_mm: float,
                               masonry_crack_mm: float = 0.0, parallel_crack_max_mm: float = 0.0,
                               rc_settlement_cracks: bool = False) -> bool:
    """JGJ 125 §5.2 criteria 2–3: tilt above ``crack_tilt_pct`` together with settlement cracks (a single masonry
    crack wider than ``single_crack_mm``, parallel cracks widest above ``parallel_crack_mm``, or RC cracks)."""
    cracked = masonry_crack_mm > single_crack_mm or parallel_crack_max_mm > parallel_crack_mm or rc_settlement_cracks
    return abs(tilt_pct) > crack_tilt_pct and cracked

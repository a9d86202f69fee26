"""House tilt per JGJ 125-2016 (危险房屋鉴定标准) §5.2 and the sensor ladder of science §4.2.

Tilt is the overall inclination against the construction baseline (horizontal offset / height), in percent.
"""

from __future__ import annotations


def tilt_limit_pct(storeys: int, *, low_rise_max_storeys: int = 2, limit_low_rise_pct: float = 3.0,
                   limit_other_pct: float = 2.0) -> float:
    """3 % for 1–2 storeys, else 2 % (JGJ 125-2016 §5.2, confirmed)."""
    if storeys < 1:
        raise ValueError(f"a house has at least one storey, got {storeys}")
    return limit_low_rise_pct if storeys <= low_rise_max_storeys else limit_other_pct


def foundation_dangerous(tilt_pct: float, storeys: int, **limits) -> bool:
    """Dangerous when the tilt is strictly above the limit."""
    return abs(tilt_pct) > tilt_limit_pct(storeys, **limits)


def tilt_with_cracks_dangerous(tilt_pct: float, *, masonry_crack_mm: float = 0.0, parallel_crack_max_mm: float = 0.0,
                               rc_settlement_cracks: bool = False, crack_tilt_pct: float = 1.0) -> bool:
    """Tilt > 1 % together with settlement cracks (single > 10 mm, parallel max > 5 mm, or RC cracks)."""
    cracked = masonry_crack_mm > 10 or parallel_crack_max_mm > 5 or rc_settlement_cracks
    return abs(tilt_pct) > crack_tilt_pct and cracked


def tilt_ladder_rank(tilt_pct: float, storeys: int, *, yellow_fraction: float = 0.5, orange_fraction: float = 0.75,
                     settlement_cracks: bool = False, crack_tilt_pct: float = 1.0, trend_readings: int = 0,
                     accelerating: bool = False, **limits) -> int:
    """Sensor ladder for houses on an active slope (science §4.2): 0 none … 4 红.

    红: tilt > limit or accelerating tilt; 橙: ≥ 75 % of the limit; 黄: ≥ 50 % of the limit or > 1 % with
    settlement cracks; 蓝: a trend above noise for ≥ 3 readings.
    """
    tilt = abs(tilt_pct)
    limit = tilt_limit_pct(storeys, **limits)
    if tilt > limit or accelerating:
        return 4
    if tilt >= orange_fraction * limit:
        return 3
    if tilt >= yellow_fraction * limit or (settlement_cracks and tilt > crack_tilt_pct):
        return 2
    if trend_readings >= 3:
        return 1
    return 0

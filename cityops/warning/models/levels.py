"""The four warning levels (预警等级, domain §6) as ranks: 0 none, 1 蓝, 2 黄, 3 橙, 4 红."""

from __future__ import annotations

from cityops.core.ladder import LEVELS as LEVEL_KEYS
from cityops.core.ladder import RANK


def level_key(rank: int) -> str:
    return LEVEL_KEYS[int(rank)]


def rank_of(level: str) -> int:
    try:
        return RANK[level]
    except KeyError:
        raise ValueError(f"unknown warning level {level!r}; expected one of {', '.join(LEVEL_KEYS)}") from None

"""The warning-level ladder (预警等级, domain §6), in one place: none < 蓝 blue < 黄 yellow < 橙 orange < 红 red.

Warnings (warning), alarm severities (sensing), plan response levels (tasks: red → I … blue → IV) and case
urgency (events: orange and red are urgent) all read it from here.
"""

from __future__ import annotations

#: Ascending, "none" first: a level's index is its rank (0 none … 4 red).
LEVELS = ("none", "blue", "yellow", "orange", "red")
#: The four colours, ascending (alarm severities have no "none").
COLOURS = LEVELS[1:]
RANK = {key: rank for rank, key in enumerate(LEVELS)}
ZH = {"blue": "蓝", "yellow": "黄", "orange": "橙", "red": "红"}
_BY_ZH = {zh: key for key, zh in ZH.items()}


def parse(value: str) -> str:
    """A level key from its key or Chinese name (red, 红, 红色); ValueError when it is neither."""
    text = str(value).strip()
    key = text.lower()
    if key in RANK:
        return key
    key = _BY_ZH.get(text.removesuffix("色"))
    if key is None:
        raise ValueError(f"unknown warning level {value!r}; expected one of {', '.join(LEVELS)} or 蓝/黄/橙/红")
    return key


def rank(level: str) -> int:
    """0 (none) … 4 (red)."""
    return RANK[parse(level)]


def response_level(level: str) -> int | None:
    """The response level a colour calls for: red → 1 (I, most severe) … blue → 4 (IV); None for none."""
    r = rank(level)
    return None if r == 0 else 5 - r


def urgent(level: str) -> bool:
    """Orange and red call for an urgent response."""
    return rank(level) >= RANK["orange"]

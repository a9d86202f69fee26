"""The administrative level catalogue (``levels.toml``), validated on load."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cityops.core.errors import InvalidInput

LEVELS_FILE = Path(__file__).with_name("levels.toml")


@dataclass(frozen=True)
class Level:
    key: str
    name_zh: str
    name_en: str
    code_length: int
    parents: tuple[str, ...]
    prefix_of_parent: bool
    alphabet: str
    #: Whether point location resolves to this level (professional grids overlap the territorial ones).
    locate: bool
    #: Units above the managed district (province, city) may come without an outline.
    geometry_optional: bool = False

    @property
    def code_pattern(self) -> re.Pattern:
        return re.compile(f"^[{self.alphabet}]{{{self.code_length}}}$")


class Levels:
    def __init__(self, levels: list[Level]):
        self.by_key = {level.key: level for level in levels}
        self.ordered = levels

    def get(self, key: str) -> Level:
        try:
            return self.by_key[key]
        except KeyError:
            raise InvalidInput(f"unknown level {key!r}; known levels: {', '.join(self.by_key)}") from None

    def code_length(self, key: str) -> int:
        """The code length of level ``key`` (6 district, 9 township, 12 village, the grid's from the settings)."""
        return self.get(key).code_length

    def level_of(self, code: str) -> str | None:
        """The territorial level a code in a unit path belongs to, by its length; None when no level has it."""
        level = self.infer(code)
        return level.key if level is not None else None

    def infer(self, code: str, parent_level: str | None = None) -> Level | None:
        """The territorial level a code's length implies (6 → district, 9 → township …)."""
        candidates = [lv for lv in self.ordered if lv.code_length == len(code) and lv.locate]
        if parent_level is not None:
            candidates = [lv for lv in candidates if parent_level in lv.parents] or candidates
        if len(code) == 6 and candidates:
            return self.by_key.get("district") if "district" in self.by_key else candidates[0]
        return candidates[0] if candidates else None

    @property
    def territorial_chain(self) -> list[str]:
        """district → township → village → grid: the chain that locate returns."""
        return [k for k in ("district", "township", "village", "grid") if k in self.by_key]


#: The catalogue the process started with (``levels_for``, at start-up); the shipped defaults until then.
_ACTIVE: list[Levels] = []


def levels_for(settings) -> Levels:
    """The levels catalogue with the grid's code length from the settings (``grid_code_length``); it becomes the
    process's ``active_levels``."""
    levels = load_levels(settings.grid_code_length)
    _ACTIVE[:] = [levels]
    return levels


def active_levels() -> Levels:
    """The levels catalogue of this process (validated at start-up with the deployment's grid code length)."""
    return _ACTIVE[0] if _ACTIVE else load_levels()


@lru_cache(maxsize=8)
def load_levels(grid_code_length: int = 15, path: Path = LEVELS_FILE) -> Levels:
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("version") != 1:
        raise ValueError(f"{path}: unsupported levels catalogue version {data.get('version')!r}")
    levels: list[Level] = []
    keys = {entry["key"] for entry in data["levels"]}
    for entry in data["levels"]:
        length = entry["code_length"]
        if length == "grid":
            length = grid_code_length
        if not isinstance(length, int) or length <= 0:
            raise ValueError(f"{path}: level {entry['key']!r} has invalid code_length {length!r}")
        unknown = set(entry.get("parents", [])) - keys
        if unknown:
            raise ValueError(f"{path}: level {entry['key']!r} names unknown parents {sorted(unknown)}")
        levels.append(
            Level(
                key=entry["key"],
                name_zh=entry["name_zh"],
                name_en=entry["name_en"],
                code_length=length,
                parents=tuple(entry.get("parents", [])),
                prefix_of_parent=bool(entry.get("prefix_of_parent", False)),
                alphabet=entry.get("alphabet", "0-9"),
                locate=bool(entry.get("locate", True)),
                geometry_optional=bool(entry.get("geometry_optional", False)),
            )
        )
    return Levels(levels)

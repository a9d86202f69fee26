"""The duty catalogue (shifts.toml) as data, validated on load: shifts, roles, generator, standing posts."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import time
from functools import lru_cache
from pathlib import Path

from cityops.core.errors import ValidationFailed

PATH = Path(__file__).with_name("shifts.toml")


@dataclass(frozen=True)
class Shift:
    code: str
    name_zh: str
    name_en: str
    start: time
    hours: float


@dataclass(frozen=True)
class Role:
    code: str
    name_zh: str
    name_en: str
    posts: tuple[str, ...]
    at_once: int


@dataclass(frozen=True)
class Catalogue:
    shifts: dict[str, Shift]
    roles: dict[str, Role]
    working_day_shifts: tuple[str, ...]
    rest_day_shifts: tuple[str, ...]
    #: post → role of a unit's own people when no roster answers.
    standing: dict[str, str]


def parse(data: dict, name: str = "shifts.toml") -> Catalogue:
    problems: list[str] = []
    if data.get("version") != 1:
        problems.append(f"{name}: version must be 1")
    shifts: dict[str, Shift] = {}
    for code, s in (data.get("shifts") or {}).items():
        try:
            hh, mm = (int(x) for x in str(s["start"]).split(":"))
            hours = float(s["hours"])
            if not 0 < hours <= 24:
                raise ValueError("hours must be in (0, 24]")
            shifts[code] = Shift(code, str(s["name_zh"]), str(s["name_en"]), time(hh, mm), hours)
        except (KeyError, ValueError, TypeError) as exc:
            problems.append(f"{name}: shifts.{code}: {exc}")
    roles: dict[str, Role] = {}
    for code, r in (data.get("roles") or {}).items():
        try:
            at_once = int(r["at_once"])
            if at_once < 1:
                raise ValueError("at_once must be at least 1")
            roles[code] = Role(code, str(r["name_zh"]), str(r["name_en"]), tuple(r["posts"]), at_once)
        except (KeyError, ValueError, TypeError) as exc:
            problems.append(f"{name}: roles.{code}: {exc}")
    if not shifts:
        problems.append(f"{name}: no shifts")
    if set(roles) != {"leader", "operator"}:
        problems.append(f"{name}: roles must be exactly leader and operator")
    gen = data.get("generator") or {}
    for key in ("working_day_shifts", "rest_day_shifts"):
        for code in gen.get(key, []):
            if code not in shifts:
                problems.append(f"{name}: generator.{key} names unknown shift {code!r}")
        if not gen.get(key):
            problems.append(f"{name}: generator.{key} is empty")
    standing = {str(k): str(v) for k, v in (data.get("standing") or {}).items()}
    for post, role in standing.items():
        if role not in roles:
            problems.append(f"{name}: standing.{post} names unknown role {role!r}")
    if problems:
        raise ValidationFailed(f"{name} is invalid", {"problems": problems})
    return Catalogue(shifts, roles, tuple(gen["working_day_shifts"]), tuple(gen["rest_day_shifts"]), standing)


@lru_cache(maxsize=1)
def load() -> Catalogue:
    return parse(tomllib.loads(PATH.read_text(encoding="utf-8")), PATH.name)

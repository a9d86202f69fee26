"""The sensing catalogues — device types and alarm rules — loaded from versioned TOML and validated.

A broken catalogue fails loudly at start-up with the file and the field named, never half-loaded.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from cityops.core import ladder
from cityops.core.errors import InvalidInput

HERE = Path(__file__).parent
SEVERITIES = ladder.COLOURS
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
SEVERITY_ZH = ladder.ZH
Op = Literal["gt", "ge", "lt", "le", "abs_gt", "abs_ge"]


def compare(op: str, value: float, limit: float) -> bool:
    if op == "gt":
        return value > limit
    if op == "ge":
        return value >= limit
    if op == "lt":
        return value < limit
    if op == "le":
        return value <= limit
    if op == "abs_gt":
        return abs(value) > limit
    return abs(value) >= limit


class Unit(BaseModel):
    name: str
    symbol: str
    definition: str


class StreamSpec(BaseModel):
    key: str
    name_zh: str
    property: str
    definition: str
    unit: Unit
    range: tuple[float, float]

    @model_validator(mode="after")
    def _range(self):
        if self.range[0] >= self.range[1]:
            raise ValueError(f"range {self.range} is empty")
        return self


class DeviceType(BaseModel):
    key: str = ""
    name_zh: str
    name_en: str
    sensor: str
    #: Event-center class (5-digit code) of the case an alarm of this device type opens; None: no case.
    event_class: str | None = Field(default=None, pattern=r"^\d{5}$")
    datastreams: list[StreamSpec] = Field(min_length=1)

    def stream(self, key: str) -> StreamSpec:
        for s in self.datastreams:
            if s.key == key:
                return s
        raise InvalidInput(f"device type {self.key!r} has no datastream {key!r}",
                           {"known": [s.key for s in self.datastreams]})


class Condition(BaseModel):
    device_type: str
    stream: str
    op: Op
    value: float


class Rule(BaseModel):
    id: str
    title: str
    kind: Literal["threshold", "rate", "duration", "combination", "no_signal", "house_tilt"]
    device_type: str
    stream: str
    risk_point: str | None = None
    datastream: int | None = None
    hours: tuple[int, int] | None = None
    op: Op = "gt"
    levels: dict[str, float] = Field(default_factory=dict)
    value: float | None = None
    minutes: float | None = None
    window_minutes: float | None = None
    min_value: float | None = None
    severity: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    source: str = ""

    @model_validator(mode="after")
    def _shape(self):
        for level in self.levels:
            if level not in SEVERITIES:
                raise ValueError(f"unknown severity {level!r} (known: {', '.join(SEVERITIES)})")
        if self.severity is not None and self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        need = {"threshold": ("levels",), "rate": ("levels", "window_minutes"), "duration": ("value", "minutes", "severity"),
                "combination": ("conditions", "severity"), "no_signal": ("minutes", "severity"), "house_tilt": ()}[self.kind]
        if self.kind == "house_tilt" and (self.levels or self.value is not None):
            raise ValueError("a house_tilt rule takes its limits from the warning catalogue's [house_tilt]: no levels or value")
        for name in need:
            if not getattr(self, name):
                raise ValueError(f"a {self.kind} rule needs {name!r}")
        if self.hours and not all(0 <= h <= 24 for h in self.hours):
            raise ValueError("hours must lie in 0..24")
        return self

    def ladder(self) -> list[tuple[str, float]]:
        """Levels from the most severe down, so the first match is the answer."""
        return sorted(self.levels.items(), key=lambda kv: -SEVERITY_RANK[kv[0]])

    def in_hours(self, local_hour: int) -> bool:
        if not self.hours:
            return True
        start, end = self.hours
        return start <= local_hour < end if start < end else (local_hour >= start or local_hour < end)


class AlarmPolicy(BaseModel):
    """rules.toml [alarm]; every value is stated there."""

    case_min_severity: str
    suppression_minutes: float = Field(ge=0)
    escalate_after_minutes: float = Field(gt=0)
    timezone: str


class RuleBook(BaseModel):
    version: int
    alarm: AlarmPolicy
    rules: list[Rule]


def _load_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path.name}: not valid TOML: {exc}") from None


def _problems(path: Path, exc: ValidationError) -> InvalidInput:
    errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return InvalidInput(f"{path.name} is invalid: {'; '.join(errors)}", errors)


@lru_cache(maxsize=4)
def device_types(path: Path = HERE / "device_types.toml") -> dict[str, DeviceType]:
    data = _load_toml(path)
    try:
        types = {key: DeviceType(key=key, **spec) for key, spec in data.get("types", {}).items()}
    except ValidationError as exc:
        raise _problems(path, exc) from None
    if not types:
        raise InvalidInput(f"{path.name} defines no device types")
    return types


def rules_from_dict(data: dict, name: str = "rules") -> RuleBook:
    try:
        book = RuleBook(**data)
    except ValidationError as exc:
        raise _problems(Path(name), exc) from None
    types = device_types()
    seen = set()
    for rule in book.rules:
        if rule.id in seen:
            raise InvalidInput(f"{name}: rule id {rule.id!r} repeated")
        seen.add(rule.id)
        if rule.device_type not in types:
            raise InvalidInput(f"{name}: rule {rule.id!r} names unknown device type {rule.device_type!r}")
        types[rule.device_type].stream(rule.stream)
        for cond in rule.conditions:
            if cond.device_type not in types:
                raise InvalidInput(f"{name}: rule {rule.id!r} condition names unknown device type {cond.device_type!r}")
            types[cond.device_type].stream(cond.stream)
    if book.alarm.case_min_severity not in SEVERITIES:
        raise InvalidInput(f"{name}: unknown case_min_severity {book.alarm.case_min_severity!r}")
    return book


@lru_cache(maxsize=4)
def rulebook(path: Path = HERE / "rules.toml") -> RuleBook:
    return rules_from_dict(_load_toml(path), path.name)

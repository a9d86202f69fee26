"""The plan catalogue (plans.toml): emergency plans, evacuation states and grading, validated on load."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from cityops.core import ladder
from cityops.core.errors import InvalidInput

CATALOGUE = Path(__file__).with_name("plans.toml")
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV"}


class Action(BaseModel):
    key: str = Field(pattern=r"^[a-z_]+$")
    title: str = Field(min_length=1)
    role: str
    level: Literal["district", "township", "village", "grid"]
    minutes: int = Field(gt=0, le=60 * 24 * 30)
    kind: Literal["task", "evacuate"] = "task"


class PlanLevel(BaseModel):
    notify: list[str] = []
    actions: list[Action] = Field(min_length=1)


class Plan(BaseModel):
    key: str = Field(pattern=r"^[a-z_]+$")
    hazard_type: str
    hazard_aliases: list[str] = []
    name_zh: str
    name_en: str
    trigger_level: int = Field(ge=1, le=4)
    #: Event-center class (事件分类, 5-digit code) of the case an activation opens.
    event_class: str = Field(pattern=r"^\d{5}$")
    activation: Literal["auto", "propose", "manual"]
    zone_buffer_m: float = Field(gt=0, le=5000)
    levels: dict[int, PlanLevel]

    @model_validator(mode="after")
    def _all_levels(self):
        if sorted(self.levels) != [1, 2, 3, 4]:
            raise ValueError(f"plan {self.key!r} must define response levels 1, 2, 3 and 4")
        return self


class State(BaseModel):
    zh: str
    en: str
    safe: bool
    next: list[str]


class Evacuation(BaseModel):
    initial: str
    return_state: str
    states: dict[str, State]

    @model_validator(mode="after")
    def _closed(self):
        for name, state in self.states.items():
            unknown = set(state.next) - set(self.states)
            if unknown:
                raise ValueError(f"state {name!r} leads to unknown states {sorted(unknown)}")
        if self.initial not in self.states or self.return_state not in self.states:
            raise ValueError("initial and return_state must be states")
        return self

    def safe_states(self) -> list[str]:
        return [k for k, s in self.states.items() if s.safe]


class Grading(BaseModel):
    people_min: list[int] = Field(min_length=3, max_length=3)

    def grade(self, people: int) -> int:
        """Event grade 1–4 (I–IV) for ``people`` to relocate; thresholds are inclusive ("以上")."""
        for grade, minimum in enumerate(self.people_min, start=1):
            if people >= minimum:
                return grade
        return 4


class Catalogue(BaseModel):
    version: int
    grading: Grading
    evacuation: Evacuation
    plans: list[Plan] = Field(min_length=1)

    def plan_for(self, hazard_type: str) -> Plan:
        for plan in self.plans:
            if hazard_type == plan.hazard_type or hazard_type in plan.hazard_aliases or hazard_type == plan.key:
                return plan
        raise InvalidInput(f"no emergency plan for hazard type {hazard_type!r}",
                           {"known": [p.hazard_type for p in self.plans]})

    def plan(self, key: str) -> Plan:
        for plan in self.plans:
            if plan.key == key:
                return plan
        raise InvalidInput(f"unknown plan {key!r}")


def load_catalogue(path: Path = CATALOGUE) -> Catalogue:
    try:
        with open(path, "rb") as fh:
            return Catalogue.model_validate(tomllib.load(fh))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValueError(f"invalid plan catalogue {path}: {exc}") from exc


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    return load_catalogue()


def parse_level(value) -> int | None:
    """A warning or response level as 1–4 (I most severe); None/0/"none" = no warning. Accepts 1–4, "I"…"IV",
    and the colours (red/orange/yellow/blue, 红/橙/黄/蓝)."""
    if value is None or value == 0 or (isinstance(value, str) and value.strip().lower() in ("", "none", "0", "cleared")):
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"level {value!r} is not a level")
    if isinstance(value, int):
        if 1 <= value <= 4:
            return value
        raise InvalidInput(f"level {value} is out of range: 1 (I, most severe) to 4 (IV)")
    if isinstance(value, str):
        text = value.strip()
        lowered = text.lower()
        try:
            return ladder.response_level(ladder.parse(lowered))
        except ValueError:
            pass
        roman = {v: k for k, v in ROMAN.items()}
        if text.upper() in roman:
            return roman[text.upper()]
        if text.isdigit():
            return parse_level(int(text))
    raise InvalidInput(f"level {value!r} is not one of 1–4, I–IV or red/orange/yellow/blue")

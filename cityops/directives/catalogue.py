"""The directives catalogue (directives.toml), validated on load."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cityops.core.errors import ValidationFailed

PATH = Path(__file__).with_name("directives.toml")


class Levels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order: list[str] = Field(min_length=1)


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=1)
    remind_after_minutes: float = Field(gt=0)
    remind_every_minutes: float = Field(gt=0)
    escalate_after_reminders: int = Field(ge=1)
    max_receipts: int = Field(ge=1)
    levels: Levels


def parse(data: dict, name: str = "directives.toml") -> Catalogue:
    try:
        return Catalogue.model_validate(data)
    except ValidationError as exc:
        problems = [f"{name}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ValidationFailed(f"{name} is invalid", {"problems": problems}) from None


@lru_cache(maxsize=1)
def load() -> Catalogue:
    return parse(tomllib.loads(PATH.read_text(encoding="utf-8")), PATH.name)

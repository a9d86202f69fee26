"""Domain events (领域事件): typed, versioned payloads, and the registry that maps a stored event back to its type.

A capability declares each event it publishes as a subclass of ``DomainEvent`` with a ``name``
("<capability noun>.<what happened>", e.g. ``warning.level_changed``) and a ``version``, registered with
``@event_type``. Payloads are plain data (JSON types): a consumer must understand an event without importing
the publisher's services. A breaking change to a payload is a new version; the old class stays registered
so that stored events still read.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

NAME = re.compile(r"^[a-z][a-z_]*\.[a-z][a-z_]*$")


class DomainEvent(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: ClassVar[str]
    version: ClassVar[int] = 1


#: (name, version) → payload class.
REGISTRY: dict[tuple[str, int], type[DomainEvent]] = {}


def event_type(cls: type[DomainEvent]) -> type[DomainEvent]:
    """Register a payload class (a class decorator). The same (name, version) twice is an error."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{cls.__qualname__}: event name {name!r} must look like 'noun.verb_ed'")
    if not isinstance(cls.version, int) or cls.version < 1:
        raise ValueError(f"{cls.__qualname__}: version must be a positive integer")
    key = (name, cls.version)
    if key in REGISTRY and REGISTRY[key] is not cls:
        raise ValueError(f"event {name} v{cls.version} is registered twice ({REGISTRY[key].__qualname__}, {cls.__qualname__})")
    REGISTRY[key] = cls
    return cls


def lookup(name: str, version: int) -> type[DomainEvent]:
    try:
        return REGISTRY[(name, version)]
    except KeyError:
        raise LookupError(f"unknown event {name} v{version}: no payload class registered") from None


@dataclass(frozen=True)
class Envelope:
    """An event as it travels: its identity (``id``, the de-duplication key everywhere), its position in the
    outbox (``seq``) and its typed payload."""

    id: str
    seq: int
    #: The writing transaction (PostgreSQL; 0 on SQLite): (tx, seq) orders the outbox (store.py).
    tx: int
    name: str
    version: int
    occurred_at: datetime
    payload: DomainEvent

    @property
    def position(self) -> tuple[int, int]:
        return self.tx, self.seq

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

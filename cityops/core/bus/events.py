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
from datetime import UTC, datetime
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


class Envelope:
    """An event as it travels: its identity (``id``, the de-duplication key everywhere), its position in the
    outbox (``seq``) and its typed payload.

    Built from a stored row or a JetStream message, an envelope keeps the payload's JSON (``data``) and validates
    it into its class on first use of ``payload``: a relay or a consumer that never reads it pays no validation
    (one per event was the reader's largest cost). Type safety stays at publishing, where the payload is built as
    its class; a stored payload that no longer validates fails in the consumer's handler, which retries it and
    then dead-letters it."""

    __slots__ = ("id", "seq", "tx", "name", "version", "occurred_ms", "_payload", "_data", "_cls")

    def __init__(self, id: str, seq: int, tx: int, name: str, version: int, occurred_at: datetime | None = None,
                 payload: DomainEvent | None = None, *, occurred_ms: int | None = None, data: dict | None = None):
        self.id, self.seq, self.name, self.version = id, seq, name, version
        #: The writing transaction (PostgreSQL; 0 on SQLite): (tx, seq) orders the outbox (store.py).
        self.tx = tx
        if occurred_ms is None:
            occurred_ms = int(occurred_at.timestamp() * 1000)
        self.occurred_ms = occurred_ms
        if payload is None and data is None:
            raise TypeError("an envelope needs its payload or its payload's JSON")
        self._payload, self._data = payload, data
        # The class is looked up now: an event of no registered class fails where it is read, as before.
        self._cls = type(payload) if payload is not None else lookup(name, version)

    @property
    def payload(self) -> DomainEvent:
        if self._payload is None:
            self._payload = self._cls.model_validate(self._data)
        return self._payload

    @property
    def data(self) -> dict:
        """The payload as JSON (as stored in the outbox)."""
        if self._data is None:
            self._data = self._payload.model_dump(mode="json")
        return self._data

    @property
    def occurred_at(self) -> datetime:
        return datetime.fromtimestamp(self.occurred_ms / 1000, UTC)

    @property
    def position(self) -> tuple[int, int]:
        return self.tx, self.seq

    def __eq__(self, other) -> bool:
        return isinstance(other, Envelope) and (self.id, self.seq, self.tx) == (other.id, other.seq, other.tx)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Envelope(id={self.id!r}, seq={self.seq}, tx={self.tx}, name={self.name!r}, version={self.version})"

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

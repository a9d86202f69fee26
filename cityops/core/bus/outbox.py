"""The outbox's rows as Core: what ``publish`` writes, for a caller that writes through a Core connection and has no
bus of its own in the process (``cityops import-layer``). The ORM's models of the bus (``models``) are not needed to
write an event, so such a caller never imports the ORM."""

from __future__ import annotations

import time

from sqlalchemy import column, insert, table
from sqlalchemy.types import BigInteger, Integer, Text

from cityops.core.bus.events import DomainEvent, Envelope
from cityops.core.types import JSONText

#: ``bus_outbox`` as written (``models.OutboxEvent``); ``seq`` and ``tx`` come from the database (rowid / the
#: column's default: the transaction's id on PostgreSQL).
OUTBOX = table("bus_outbox", column("event_id", Text), column("name", Text), column("version", Integer),
               column("payload", JSONText), column("created_ms", BigInteger))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rows(events: list[DomainEvent], ms: int | None = None) -> tuple[list[str], list[dict]]:
    """(event ids, outbox rows) of ``events``, written at ``ms``: the rows ``publish`` inserts."""
    ms = now_ms() if ms is None else ms
    ids = [Envelope.new_id() for _ in events]
    return ids, [{"event_id": i, "name": e.name, "version": e.version, "payload": e.model_dump(mode="json"),
                  "created_ms": ms} for i, e in zip(ids, events)]


def write(conn, *events: DomainEvent) -> list[str]:
    """Write ``events`` to the outbox in ``conn``'s transaction (they exist if and only if it commits). The buses of
    this database read them from the outbox (on PostgreSQL its statement trigger notifies other processes at the
    commit); no bus of this process is told, so use ``publish`` where one runs."""
    if not events:
        return []
    ids, values = rows(list(events))
    conn.execute(insert(OUTBOX), values)
    return ids

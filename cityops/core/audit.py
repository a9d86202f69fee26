"""Append-only audit log (审计日志): who, when, what, before and after — for every write.

The table rejects UPDATE and DELETE at the database level (triggers on both backends). Entries are
written in the same transaction as the change they describe, so a change without its entry cannot be
committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from cityops.core.actor import SYSTEM, Actor  # noqa: F401 - audit.Actor and audit.SYSTEM, as every writer names them
from cityops.core.db import Base
from cityops.core.types import JSONText, UTCDateTime, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    entity: Mapped[str] = mapped_column(Text, nullable=False)
    entity_key: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    #: Unit path of the record, so audit reads are scoped like the records themselves.
    unit_path: Mapped[str | None] = mapped_column(Text, index=True)
    before: Mapped[Any] = mapped_column(JSONText)
    after: Mapped[Any] = mapped_column(JSONText)
    request_id: Mapped[str | None] = mapped_column(Text)


def record(
    session: Session,
    actor: Actor,
    action: str,
    entity: str,
    entity_key: str,
    *,
    before: Any = None,
    after: Any = None,
    unit_path: str | None = None,
) -> None:
    session.add(
        AuditEntry(
            actor_id=actor.user_id,
            actor=actor.name,
            action=action,
            entity=entity,
            entity_key=str(entity_key),
            unit_path=unit_path,
            before=before,
            after=after,
            request_id=actor.request_id,
        )
    )

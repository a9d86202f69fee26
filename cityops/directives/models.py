"""Tables of directives (一键智达): the directive, one receipt per receiving unit (a tree: passed down level by
level), and the log that is the directive's timeline."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import JSONText, UTCDateTime, utcnow

#: A receipt's states in order: sent → read → confirmed (签收) → reported (反馈落实).
STATES = ("sent", "read", "confirmed", "reported")


class Directive(Base):
    __tablename__ = "directives"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    #: [{"name", "url"}]
    attachments: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The selectors it was sent with (levels, units, posts in a zone, departments, a runway's owners).
    targets: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    issued_by: Mapped[str] = mapped_column(Text, nullable=False)
    issuer_name: Mapped[str] = mapped_column(Text, nullable=False)
    #: The issuing unit (the sender's scope root): first-level receipts escalate to its leader on duty.
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    status: Mapped[str] = mapped_column(Text, nullable=False, default="open")


class Receipt(Base):
    """One receiving unit (or department) of a directive: its recipients (the people on duty, or the posts
    selected), its state and when each step happened; ``parent_id`` is the receipt that passed it down."""

    __tablename__ = "directive_receipts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    directive_id: Mapped[int] = mapped_column(Integer, ForeignKey("directives.id", ondelete="CASCADE"), nullable=False)
    parent_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("directive_receipts.id", ondelete="CASCADE"))
    depth: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    department_code: Mapped[str] = mapped_column(Text, nullable=False, default="")
    unit_path: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    level: Mapped[str] = mapped_column(Text, nullable=False)
    #: [{"person_id", "name", "phone", "post", "role", "rostered"}]
    recipients: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    state: Mapped[str] = mapped_column(Text, nullable=False, default="sent")
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_by: Mapped[str | None] = mapped_column(Text)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_by: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reported_by: Mapped[str | None] = mapped_column(Text)
    report: Mapped[str | None] = mapped_column(Text)
    reminders: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("directive_id", "unit_code", "department_code", name="uq_directive_receipts_unit"),
        Index("ix_directive_receipts_directive_path", "directive_id", "unit_path"),
        Index("ix_directive_receipts_open", "state", "sent_at"),
        CheckConstraint("state IN ('sent', 'read', 'confirmed', 'reported')", name="ck_directive_receipts_state"),
    )


class LogEntry(Base):
    """The directive's timeline: issued, delivered, read, confirmed, reported, passed down, reminded, escalated.
    Its id is the live board's event id (Last-Event-ID)."""

    __tablename__ = "directive_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    directive_id: Mapped[int] = mapped_column(Integer, ForeignKey("directives.id", ondelete="CASCADE"), nullable=False, index=True)
    receipt_id: Mapped[int | None] = mapped_column(Integer)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    data: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)

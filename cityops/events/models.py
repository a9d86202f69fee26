"""Tables of the event center: cases (案卷), their append-only transition log, attachments and the outbox.

``event_transitions`` is the record: every action on a case is one immutable row (triggers reject UPDATE
and DELETE on both backends). The columns of ``event_cases`` that describe progress (state, step
timestamps, deadline, counters) are a projection of that log, written in the same transaction;
``cityops.events.workflow.project`` rebuilds them from the log alone, and the tests compare the two.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Double, ForeignKey, Index, Integer, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.geometry import Geometry
from cityops.core.types import JSONText, UTCDateTime, utcnow


def _set(column: str) -> Index:
    """An index of a column that is NULL until a step sets it (a new case has no entry in it)."""
    where = text(f"{column} IS NOT NULL")
    return Index(f"ix_event_cases_{column}", column, sqlite_where=where, postgresql_where=where)


class Case(Base):
    __tablename__ = "event_cases"
    #: What each index serves is listed in docs/architecture.md ("The indexes of event_cases"); every other
    #: column is only read from rows these (or a scan) found. A case insert maintains as few as the queries need.
    __table_args__ = (
        Index("ix_event_cases_reported_at", "reported_at"),
        Index("ix_event_cases_unit_path", "unit_path"),
        Index("ix_event_cases_state_reported", "state", "reported_at"),
        Index("ix_event_cases_class_reported", "class_code", "reported_at"),
        *(_set(c) for c in ("filed_at", "dispatched_at", "handled_at", "deadline_at", "department_code")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Public case number, also the Open311 service_request_id.
    number: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    #: rest, patrol, public, open311, hotline, sensor, task.
    source: Mapped[str] = mapped_column(Text, nullable=False)
    #: Idempotency key of the channel (alarm key, 12345 ticket id, client request key); unique per source.
    external_key: Mapped[str | None] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    class_code: Mapped[str] = mapped_column(Text, nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    urgency: Mapped[str] = mapped_column(Text, nullable=False, default="normal")
    state: Mapped[str] = mapped_column(Text, nullable=False)
    lon: Mapped[float] = mapped_column(Double, nullable=False)
    lat: Mapped[float] = mapped_column(Double, nullable=False)
    geom = mapped_column(Geometry("POINT"), nullable=False)
    address: Mapped[str | None] = mapped_column(Text)
    grid_code: Mapped[str] = mapped_column(Text, nullable=False)
    township_code: Mapped[str | None] = mapped_column(Text)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False)
    #: Routing result: the department or, by territorial fallback, the unit that answers for the case.
    department_code: Mapped[str | None] = mapped_column(Text)
    assigned_unit_code: Mapped[str | None] = mapped_column(Text)
    route: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    reporter: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    reported_by: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    # --- projection of the transition log
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    filed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    filed_by: Mapped[str | None] = mapped_column(Text)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_by: Mapped[str | None] = mapped_column(Text)
    dispatch_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Deadline in force (after approved 延期 and 挂账 pauses).
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: While paused (挂账): the working seconds that were left.
    paused_remaining_s: Mapped[float | None] = mapped_column(Double)
    returned_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rework_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    extension_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    supervision_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    escalation_level: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    escalated_to: Mapped[str | None] = mapped_column(Text)
    due_soon_warned: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    merged_into: Mapped[int | None] = mapped_column(Integer, ForeignKey("event_cases.id"))
    rating: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Transition(Base):
    """One immutable entry of a case's history: who did what, when, from which state to which."""

    __tablename__ = "event_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(Integer, ForeignKey("event_cases.id", ondelete="RESTRICT"), nullable=False, index=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    from_state: Mapped[str | None] = mapped_column(Text)
    to_state: Mapped[str] = mapped_column(Text, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    actor_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    lon: Mapped[float | None] = mapped_column(Double)
    lat: Mapped[float | None] = mapped_column(Double)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False)


class Attachment(Base):
    __tablename__ = "event_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(Integer, ForeignKey("event_cases.id", ondelete="RESTRICT"), nullable=False, index=True)
    transition_seq: Mapped[int | None] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(Text, nullable=False)
    content_type: Mapped[str] = mapped_column(Text, nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(Text, nullable=False)
    #: Relative to the data directory.
    path: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False)


class Outbox(Base):
    """Transactional outbox: one row per case change or reporter notice, written with the change itself,
    so a crash can never lose a notification; consumers (live stream, notifiers) read it by id."""

    __tablename__ = "event_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    topic: Mapped[str] = mapped_column(Text, nullable=False)
    recipient: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EvaluationRollup(Base):
    """Evaluation counts per month (duty calendar time zone) and dimension; see ``cityops.events.rollup``."""

    __tablename__ = "event_eval_rollups"
    __table_args__ = (UniqueConstraint("dim", "month", "key", "path", name="uq_event_eval_rollups"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: grid, department, reporter, filer, dispatcher.
    dim: Mapped[str] = mapped_column(Text, nullable=False)
    #: YYYY-MM.
    month: Mapped[str] = mapped_column(Text, nullable=False)
    key: Mapped[str] = mapped_column(Text, nullable=False)
    #: Unit path for scope: the case's for ``grid``, cut at the township for the other dimensions.
    path: Mapped[str] = mapped_column(Text, nullable=False)
    reported: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    valid_reports: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    filed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    public_filed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    voided: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    due: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    closed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    closed_on_time: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    handled: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reworks: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    dispatched: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    dispatched_on_time: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    dispatch_returned: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    supervised: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

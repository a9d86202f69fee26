"""Tables of duty (值班值守): roster assignments (one person, one role, one shift) and shift handovers."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import JSONText, UTCDateTime, utcnow


class DutyAssignment(Base):
    """One person in one role (带班领导 leader / 值班员 operator) for one shift of one roster.

    A roster is a center's (``roster = <unit code>``: the district, a township) or a department's
    (``roster = dept:<code>``); ``unit_path`` is the center's unit path, or the department's owning unit's,
    and scope checks use it. ``starts_at``/``ends_at`` are UTC; ``day`` is the shift's local day."""

    __tablename__ = "duty_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    roster: Mapped[str] = mapped_column(Text, nullable=False)
    unit_code: Mapped[str] = mapped_column(Text, ForeignKey("units.code", ondelete="CASCADE"), nullable=False)
    department_code: Mapped[str | None] = mapped_column(Text)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    person_id: Mapped[int] = mapped_column(Integer, ForeignKey("people.id", ondelete="CASCADE"), nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    shift: Mapped[str] = mapped_column(Text, nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    #: The person this assignment had before a swap or substitution (换班/替班), and why.
    swapped_from: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(Text, nullable=False, default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (
        Index("ix_duty_assignments_roster_time", "roster", "starts_at"),
        Index("ix_duty_assignments_person_time", "person_id", "starts_at"),
        Index("ix_duty_assignments_time", "starts_at", "ends_at"),
        CheckConstraint("ends_at > starts_at", name="ck_duty_assignments_span"),
    )


class DutyHandover(Base):
    """A shift handover (交接班): who handed over to whom, what happened, and the open items (未办结事项); the
    next handover of the roster starts from the open items of this one (``carried_from``)."""

    __tablename__ = "duty_handovers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    roster: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    handed_by: Mapped[int] = mapped_column(Integer, ForeignKey("people.id", ondelete="RESTRICT"), nullable=False)
    taken_by: Mapped[int] = mapped_column(Integer, ForeignKey("people.id", ondelete="RESTRICT"), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    summary: Mapped[str] = mapped_column(Text, nullable=False, default="")
    #: [{"text", "done", "since"}]: items still open are carried to the next handover.
    items: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    carried_from: Mapped[int | None] = mapped_column(Integer, ForeignKey("duty_handovers.id", ondelete="SET NULL"))
    created_by: Mapped[str] = mapped_column(Text, nullable=False, default="system")

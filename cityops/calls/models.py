"""The call log (通话记录): one row per call an operator made or took, to or from a person or a unit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import UTCDateTime, utcnow


class CallLog(Base):
    __tablename__ = "call_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: outgoing | incoming
    direction: Mapped[str] = mapped_column(Text, nullable=False)
    person_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("people.id", ondelete="SET NULL"))
    #: A department called on its duty phone.
    department_code: Mapped[str | None] = mapped_column(Text)
    #: The person's home unit, the department's unit, or the unit called (its duty phone): scope is this unit's path.
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    callee_name: Mapped[str] = mapped_column(Text, nullable=False)
    number: Mapped[str] = mapped_column(Text, nullable=False)
    called_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    duration_s: Mapped[int | None] = mapped_column(Integer)
    #: answered | no_answer | busy | unreachable | rejected | wrong_number | voicemail
    outcome: Mapped[str] = mapped_column(Text, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("task_incidents.id", ondelete="SET NULL"))
    case_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("event_cases.id", ondelete="SET NULL"))
    operator: Mapped[str] = mapped_column(Text, nullable=False)
    operator_id: Mapped[int | None] = mapped_column(Integer)
    #: The client's key of this entry: a retried submission answers the stored row.
    request_key: Mapped[str | None] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

"""Tables of the indicators capability (体征指标): definition versions, values per unit and period, the change
feed of the live stream, breaches and reported values (填报)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Double, Index, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import JSONText, UTCDateTime, utcnow


class DefinitionVersion(Base):
    """One version of an indicator's definition: a changed definition (unit, bands, source …) is a new row, and
    every stored value names the version it was computed with, so history stays comparable."""

    __tablename__ = "indicator_definitions"
    __table_args__ = (UniqueConstraint("code", "version", name="uq_indicator_definition_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    digest: Mapped[str] = mapped_column(Text, nullable=False)
    definition: Mapped[dict] = mapped_column(JSONText, nullable=False)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Value(Base):
    """The value of an indicator for a unit and a period (period = hour/day/week/month/quarter, start in UTC)."""

    __tablename__ = "indicator_values"
    __table_args__ = (
        UniqueConstraint("indicator_code", "unit_code", "period", "period_start", name="uq_indicator_value"),
        Index("ix_indicator_values_unit_period", "unit_code", "period", "period_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    indicator_code: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    level: Mapped[str] = mapped_column(Text, nullable=False)
    period: Mapped[str] = mapped_column(Text, nullable=False)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    value: Mapped[float | None] = mapped_column(Double)
    numerator: Mapped[float | None] = mapped_column(Double)
    denominator: Mapped[float | None] = mapped_column(Double)
    band: Mapped[str | None] = mapped_column(Text)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Digest(Base):
    """A digest of an indicator's whole array of values (and bands, numerators, version) for a period: a recompute
    whose digest is unchanged skips the indicator without reading its rows."""

    __tablename__ = "indicator_digests"
    __table_args__ = (UniqueConstraint("indicator_code", "period", "period_start", name="uq_indicator_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    indicator_code: Mapped[str] = mapped_column(Text, nullable=False)
    period: Mapped[str] = mapped_column(Text, nullable=False)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    digest: Mapped[str] = mapped_column(Text, nullable=False)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Change(Base):
    """A value that changed (new, or another number or band): the source of the live stream."""

    __tablename__ = "indicator_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    indicator_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    period: Mapped[str] = mapped_column(Text, nullable=False)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    value: Mapped[float | None] = mapped_column(Double)
    band: Mapped[str | None] = mapped_column(Text)
    previous_band: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Breach(Base):
    """An indicator of a unit in its red band: opened when it enters, closed when the value recovers; the case it
    opened is named here and the case names the breach (its external key)."""

    __tablename__ = "indicator_breaches"
    __table_args__ = (Index("ix_indicator_breaches_open", "indicator_code", "unit_code", "closed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    indicator_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    period: Mapped[str] = mapped_column(Text, nullable=False)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    value: Mapped[float | None] = mapped_column(Double)
    band: Mapped[str] = mapped_column(Text, nullable=False)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recovered_value: Mapped[float | None] = mapped_column(Double)
    case_id: Mapped[int | None] = mapped_column(Integer)
    case_number: Mapped[str | None] = mapped_column(Text)


class Report(Base):
    """A reported value (填报) of a unit for a period; each entry and revision is in the audit log."""

    __tablename__ = "indicator_reports"
    __table_args__ = (UniqueConstraint("indicator_code", "unit_code", "period", "period_start", name="uq_indicator_report"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    indicator_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    period: Mapped[str] = mapped_column(Text, nullable=False)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    value: Mapped[float] = mapped_column(Double, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    entered_by: Mapped[str] = mapped_column(Text, nullable=False)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)

"""Tables of the early-warning capability: risk points (风险点位), their warning history (预警记录) and the
observation store the evaluation reads until the sensing time series is wired in.

Every row carries the unit it lies in and that unit's materialised ``unit_path``, so scope is the usual prefix
match.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Double, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.geometry import Geometry
from cityops.core.types import JSONText, UTCDateTime


class RiskPoint(Base):
    """A monitored hazard site: its place, the buildings it threatens, the datastreams and model that judge it,
    and its current level with the assessment that decided it."""

    __tablename__ = "risk_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    hazard_type: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    geom = mapped_column(Geometry("POINT"), nullable=False)
    radius_m: Mapped[float] = mapped_column(Double, nullable=False, default=200.0)
    unit_code: Mapped[str] = mapped_column(Text, ForeignKey("units.code", ondelete="RESTRICT"), nullable=False, index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    building_codes: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    #: role → datastream id(s): {"rainfall": 12, "displacement": [13, 14], "tilt": [{"id": 15, "building_code": "…"}]}
    datastreams: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    #: model choice and parameters: {"threshold_set": "kaizhou_demo", "displacement": {"v_constant_mm_per_day": 2.0}, …}
    model: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    level: Mapped[str] = mapped_column(Text, nullable=False, default="none", index=True)
    level_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assessed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assessment: Mapped[dict | None] = mapped_column(JSONText)
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)


class RiskWarning(Base):
    """One level change of a risk point (the warning history); each is also a CAP message
    (Alert when a warning starts, Update when its level changes, Cancel when it ends)."""

    __tablename__ = "risk_warnings"
    __table_args__ = (Index("ix_risk_warnings_point_issued", "risk_point_id", "issued_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    risk_point_id: Mapped[int] = mapped_column(Integer, ForeignKey("risk_points.id", ondelete="CASCADE"), nullable=False)
    identifier: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    msg_type: Mapped[str] = mapped_column(Text, nullable=False)
    cap_references: Mapped[str | None] = mapped_column(Text)
    level: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    previous_level: Mapped[str] = mapped_column(Text, nullable=False)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    reasons: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)


class StoredObservation(Base):
    """Observations (datastream id, time, value) the warning evaluation reads through ``stored_series``: the
    replay store of demos and tests, and the source until the sensing time series is wired in."""

    __tablename__ = "warning_observations"
    __table_args__ = (UniqueConstraint("datastream_id", "phenomenon_time", name="uq_warning_observations_stream_time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datastream_id: Mapped[int] = mapped_column(Integer, nullable=False)
    phenomenon_time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    value: Mapped[float] = mapped_column(Double, nullable=False)

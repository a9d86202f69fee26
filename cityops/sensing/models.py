"""Tables of the sensing capability.

SensorThings entities live in ``sta_*`` tables. Scope follows the Thing: every Thing belongs to a unit
(``unit_code`` and its materialised ``unit_path``), and its Datastreams, Locations and FeaturesOfInterest
carry the same path so that scoped reads are a prefix match. Sensors and ObservedProperties are a shared
catalogue, visible to anyone who may read sensing data.

Times of observations are epoch milliseconds (UTC) in BIGINT columns: they bucket and compare the same
on both backends, and the unique key ``(datastream_id, t_ms)`` makes a resent observation a no-op.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Double, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import JSONText, UTCDateTime, utcnow


class Thing(Base):
    __tablename__ = "sta_things"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    properties: Mapped[dict | None] = mapped_column(JSONText)
    device_type: Mapped[str | None] = mapped_column(Text, index=True)
    building_code: Mapped[str | None] = mapped_column(Text, index=True)
    risk_point_code: Mapped[str | None] = mapped_column(Text, index=True)
    unit_code: Mapped[str] = mapped_column(Text, ForeignKey("units.code", ondelete="RESTRICT"), nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)


class Location(Base):
    __tablename__ = "sta_locations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    encoding_type: Mapped[str] = mapped_column(Text, nullable=False)
    location: Mapped[dict] = mapped_column(JSONText, nullable=False)
    properties: Mapped[dict | None] = mapped_column(JSONText)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)


class ThingLocation(Base):
    __tablename__ = "sta_thing_locations"
    thing_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_things.id", ondelete="CASCADE"), primary_key=True)
    location_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_locations.id", ondelete="CASCADE"), primary_key=True)


class HistoricalLocation(Base):
    __tablename__ = "sta_historical_locations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thing_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_things.id", ondelete="CASCADE"), nullable=False, index=True)
    time_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)


class HistoricalLocationLocation(Base):
    __tablename__ = "sta_historical_location_locations"
    historical_location_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_historical_locations.id", ondelete="CASCADE"),
                                                        primary_key=True)
    location_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_locations.id", ondelete="CASCADE"), primary_key=True)


class Sensor(Base):
    __tablename__ = "sta_sensors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    encoding_type: Mapped[str] = mapped_column(Text, nullable=False)
    sensor_metadata: Mapped[str] = mapped_column("metadata", Text, nullable=False)
    properties: Mapped[dict | None] = mapped_column(JSONText)


class ObservedProperty(Base):
    __tablename__ = "sta_observed_properties"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    definition: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    properties: Mapped[dict | None] = mapped_column(JSONText)


class Datastream(Base):
    __tablename__ = "sta_datastreams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    unit_of_measurement: Mapped[dict] = mapped_column(JSONText, nullable=False)
    observation_type: Mapped[str] = mapped_column(Text, nullable=False)
    properties: Mapped[dict | None] = mapped_column(JSONText)
    observed_area: Mapped[dict | None] = mapped_column(JSONText)
    phenomenon_start_ms: Mapped[int | None] = mapped_column(BigInteger)
    phenomenon_end_ms: Mapped[int | None] = mapped_column(BigInteger)
    result_time_start_ms: Mapped[int | None] = mapped_column(BigInteger)
    result_time_end_ms: Mapped[int | None] = mapped_column(BigInteger)
    thing_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_things.id", ondelete="CASCADE"), nullable=False, index=True)
    sensor_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_sensors.id", ondelete="RESTRICT"), nullable=False, index=True)
    observed_property_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_observed_properties.id", ondelete="RESTRICT"),
                                                      nullable=False, index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    #: Latest observation (by phenomenon time): for no-signal rules and map status.
    last_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_value: Mapped[float | None] = mapped_column(Double)


class FeatureOfInterest(Base):
    __tablename__ = "sta_features"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    encoding_type: Mapped[str] = mapped_column(Text, nullable=False)
    feature: Mapped[dict] = mapped_column(JSONText, nullable=False)
    properties: Mapped[dict | None] = mapped_column(JSONText)
    #: The Location this feature was derived from (auto-created FoI is reused per location).
    location_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("sta_locations.id", ondelete="SET NULL"), index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)


class Observation(Base):
    __tablename__ = "sta_observations"
    __table_args__ = (UniqueConstraint("datastream_id", "t_ms", name="uq_sta_observations_ds_time"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    datastream_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_datastreams.id", ondelete="CASCADE"), nullable=False)
    t_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    t_end_ms: Mapped[int | None] = mapped_column(BigInteger)
    result_time_ms: Mapped[int | None] = mapped_column(BigInteger)
    #: Numeric results here (indexed, aggregated); anything else as JSON in ``result_json``.
    result_num: Mapped[float | None] = mapped_column(Double)
    result_json: Mapped[object | None] = mapped_column(JSONText)
    result_quality: Mapped[object | None] = mapped_column(JSONText)
    valid_time: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict | None] = mapped_column(JSONText)
    foi_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("sta_features.id", ondelete="SET NULL"))


class Rollup(Base):
    """Aggregates per datastream, tier (1m, 1h, 1d) and bucket start; new observations are folded into
    the buckets they touch (resends excluded), so out-of-order and resent observations give the same numbers."""

    __tablename__ = "sensing_rollups"
    datastream_id: Mapped[int] = mapped_column(Integer, ForeignKey("sta_datastreams.id", ondelete="CASCADE"), primary_key=True)
    tier: Mapped[str] = mapped_column(Text, primary_key=True)
    bucket_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vmin: Mapped[float] = mapped_column(Double, nullable=False)
    vmax: Mapped[float] = mapped_column(Double, nullable=False)
    vsum: Mapped[float] = mapped_column(Double, nullable=False)
    vcount: Mapped[int] = mapped_column(Integer, nullable=False)


class Alarm(Base):
    """告警: active → acknowledged → cleared. ``key`` deduplicates: one open alarm per key."""

    __tablename__ = "sensing_alarms"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    status: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    severity: Mapped[str] = mapped_column(Text, nullable=False)
    peak_severity: Mapped[str] = mapped_column(Text, nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False, default="rule")
    rule_id: Mapped[str | None] = mapped_column(Text)
    unit_code: Mapped[str | None] = mapped_column(Text)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    risk_point_code: Mapped[str | None] = mapped_column(Text, index=True)
    datastream_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("sta_datastreams.id", ondelete="SET NULL"), index=True)
    evidence: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    lon: Mapped[float | None] = mapped_column(Double)
    lat: Mapped[float | None] = mapped_column(Double)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    occurrences: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    suppressed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    assignee: Mapped[str | None] = mapped_column(Text)
    acknowledged_by: Mapped[str | None] = mapped_column(Text)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_by: Mapped[str | None] = mapped_column(Text)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    case_ref: Mapped[str | None] = mapped_column(Text)
    history: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class AlarmComment(Base):
    __tablename__ = "sensing_alarm_comments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alarm_id: Mapped[int] = mapped_column(Integer, ForeignKey("sensing_alarms.id", ondelete="CASCADE"), nullable=False, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    author: Mapped[str] = mapped_column(Text, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)


Index("ix_sensing_alarms_key_status", Alarm.key, Alarm.status)

"""Tables of the task center (任务中心): incidents (应急事件/响应), their decision log, risk zones (风险区),
household evacuations (转移安置) with their state history, shelters (安置点) and tasks (任务).

Every row carries the materialised ``unit_path`` of the unit it belongs to, so scope is the usual prefix
match; every row of an incident carries ``incident_id`` and ``drill`` so a drill (演练) is excluded from
real statistics with one predicate and removed with one delete per table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Double, ForeignKey, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.geometry import Geometry
from cityops.core.types import JSONText, UTCDateTime, utcnow


class Incident(Base):
    """One emergency response (应急响应) to a hazard: plan, response level I–IV, zone, evacuation."""

    __tablename__ = "task_incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    hazard_type: Mapped[str] = mapped_column(Text, nullable=False)
    plan_key: Mapped[str] = mapped_column(Text, nullable=False)
    #: 1 = I (most severe) … 4 = IV.
    response_level: Mapped[int] = mapped_column(Integer, nullable=False)
    warning_level: Mapped[int | None] = mapped_column(Integer)
    #: proposed → active → standing_down → closed (or proposed → dismissed).
    status: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    activation: Mapped[str] = mapped_column(Text, nullable=False)  # manual | auto | proposed
    risk_point_code: Mapped[str | None] = mapped_column(Text, index=True)
    hazard_geom = mapped_column(Geometry("GEOMETRY"))
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    #: Event grade I–IV (1–4) proposed from people to relocate (domain.md §7).
    event_grade: Mapped[int | None] = mapped_column(Integer)
    case_ref: Mapped[str | None] = mapped_column(Text)
    drill: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, index=True)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stood_down_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closing_note: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)


class IncidentLog(Base):
    """The decision timeline (决策时间线) and the live stream's source: one row per step, in order."""

    __tablename__ = "task_incident_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, ForeignKey("task_incidents.id", ondelete="CASCADE"), nullable=False, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    #: Where the step happened: the stream shows a principal only the steps its scope sees.
    unit_path: Mapped[str] = mapped_column(Text, nullable=False)


class RiskZone(Base):
    """A version of an incident's risk zone (风险区). The newest version is current."""

    __tablename__ = "task_risk_zones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, ForeignKey("task_incidents.id", ondelete="CASCADE"), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)  # drawn | imported | computed
    geom = mapped_column(Geometry("MULTIPOLYGON"), nullable=False)
    area_m2: Mapped[float] = mapped_column(Double, nullable=False)
    summary: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False)


class Shelter(Base):
    """A shelter (安置点) with its capacity and current occupancy (people checked in)."""

    __tablename__ = "task_shelters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    occupancy: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    geom = mapped_column(Geometry("POINT"), nullable=False)
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)


class Evacuation(Base):
    """One household's evacuation task (一户一转移任务) in an incident."""

    __tablename__ = "task_evacuations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer, ForeignKey("task_incidents.id", ondelete="CASCADE"), nullable=False, index=True)
    household_id: Mapped[int] = mapped_column(Integer, nullable=False)
    household_code: Mapped[str] = mapped_column(Text, nullable=False)
    building_code: Mapped[str] = mapped_column(Text, nullable=False)
    members: Mapped[int] = mapped_column(Integer, nullable=False)
    vulnerable: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lon: Mapped[float] = mapped_column(Double, nullable=False)
    lat: Mapped[float] = mapped_column(Double, nullable=False)
    grid_code: Mapped[str] = mapped_column(Text, nullable=False)
    village_code: Mapped[str] = mapped_column(Text, nullable=False)
    township_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    assignee_person_id: Mapped[int | None] = mapped_column(Integer)
    assignee_name: Mapped[str | None] = mapped_column(Text)
    assignee_post: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    shelter_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("task_shelters.id", ondelete="RESTRICT"))
    #: False once a newer zone version no longer covers the household (kept for the record, not counted).
    in_zone: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    drill: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(Text)


class EvacuationEvent(Base):
    """One state change of a household evacuation, with when, who and where (position of the worker)."""

    __tablename__ = "task_evacuation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evacuation_id: Mapped[int] = mapped_column(Integer, ForeignKey("task_evacuations.id", ondelete="CASCADE"), nullable=False, index=True)
    incident_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    from_state: Mapped[str | None] = mapped_column(Text)
    to_state: Mapped[str] = mapped_column(Text, nullable=False)
    shelter_id: Mapped[int | None] = mapped_column(Integer)
    lon: Mapped[float | None] = mapped_column(Double)
    lat: Mapped[float | None] = mapped_column(Double)
    note: Mapped[str | None] = mapped_column(Text)
    request_key: Mapped[str | None] = mapped_column(Text)


class Task(Base):
    """A task (任务): goal, deadline, target unit, assignee; decomposed level by level through ``parent_id``."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    incident_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("task_incidents.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    goal: Mapped[str | None] = mapped_column(Text)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(Text, nullable=False, index=True)  # open | done | cancelled
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    level: Mapped[str] = mapped_column(Text, nullable=False)
    assignee_role: Mapped[str | None] = mapped_column(Text)
    assignee_person_id: Mapped[int | None] = mapped_column(Integer)
    assignee_name: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    source_kind: Mapped[str | None] = mapped_column(Text)  # case | alarm | plan
    source_ref: Mapped[str | None] = mapped_column(Text)
    action_key: Mapped[str | None] = mapped_column(Text)
    drill: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    progress_note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

"""Tables of the administrative hierarchy (行政区划 · 单元网格), places, departments and people."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Double, ForeignKey, Index, Integer, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cityops.core.db import Base
from cityops.core.geometry import Geometry
from cityops.core.types import JSONText, UTCDateTime, utcnow


class Unit(Base):
    """An administrative unit or unit grid. ``path`` is the materialised chain of codes, e.g.
    ``/500154/500154107/500154107201/500154107201001/``; scope checks are prefix matches on it."""

    __tablename__ = "units"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    name_en: Mapped[str | None] = mapped_column(Text)
    level: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    parent_code: Mapped[str | None] = mapped_column(Text, ForeignKey("units.code", ondelete="RESTRICT"), index=True)
    path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    area_m2: Mapped[float | None] = mapped_column(Double)
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    geom = mapped_column(Geometry("MULTIPOLYGON"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


class Place(Base):
    """A named place (地名): a hamlet, a village group (组), a landmark — e.g. 太康村6组 老沟湾."""

    __tablename__ = "places"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    unit_code: Mapped[str] = mapped_column(Text, ForeignKey("units.code", ondelete="CASCADE"), nullable=False, index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    geom = mapped_column(Geometry("POINT"), nullable=False)


person_units = Table(
    "person_units",
    Base.metadata,
    Column("person_id", Integer, ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
    Column("unit_code", Text, ForeignKey("units.code", ondelete="CASCADE"), primary_key=True),
    Index("ix_person_units_unit", "unit_code"),
)

person_departments = Table(
    "person_departments",
    Base.metadata,
    Column("person_id", Integer, ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
    Column("department_id", Integer, ForeignKey("departments.id", ondelete="CASCADE"), primary_key=True),
)


class Department(Base):
    """A department (部门) with the matter classes it answers for and the units it covers."""

    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    name_en: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text, nullable=False, default="line")
    #: The unit that owns the department (district for 区住建委, township for 镇应急办).
    unit_code: Mapped[str] = mapped_column(Text, ForeignKey("units.code", ondelete="RESTRICT"), nullable=False, index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    #: Taxonomy codes "kind:code" (e.g. "matter:08" a major, "matter:08004" a minor).
    matter_classes: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    #: Unit codes covered; empty = the whole owning unit.
    covered_units: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    phone: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)


class Person(Base):
    """A person on duty: operator, leader, department staff, village cadre (村干部) or grid worker (网格员)."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    post: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    title: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    #: Home unit: scope checks use its path.
    unit_code: Mapped[str] = mapped_column(Text, ForeignKey("units.code", ondelete="RESTRICT"), nullable=False, index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    units: Mapped[list[Unit]] = relationship(secondary=person_units, lazy="selectin")
    departments: Mapped[list[Department]] = relationship(secondary=person_departments, lazy="selectin")

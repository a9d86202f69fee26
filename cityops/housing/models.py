"""Tables of the housing registry: buildings (房屋), households (住户) and residents (人口).

Every row carries the grid it lies in (``grid_code``) and that grid's materialised ``unit_path``, so scope
is the usual prefix match. Personal data (names, phones, id numbers) is stored in the clear and masked on the
way out (``cityops.housing.service.mask_personal``) for principals without ``personal.read``.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Double, ForeignKey, Index, Integer, LargeBinary, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.geometry import Geometry
from cityops.core.types import JSONText

STRUCTURES = ("砖混", "框架", "砖木", "钢结构", "土木", "其他")
USES = ("住宅", "商业", "公共", "工业", "其他")
#: JGJ 125-2016 house safety grades: A safe, B safe with defects, C 局部危房, D 整幢危房.
SAFETY_GRADES = ("A", "B", "C", "D")


class Building(Base):
    __tablename__ = "buildings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    name: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    footprint = mapped_column(Geometry("MULTIPOLYGON"), nullable=False)
    floors: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    height_m: Mapped[float | None] = mapped_column(Double)
    structure: Mapped[str] = mapped_column(Text, nullable=False, default="其他")
    use: Mapped[str] = mapped_column(Text, nullable=False, default="住宅")
    year_built: Mapped[int | None] = mapped_column(Integer)
    safety_grade: Mapped[str | None] = mapped_column(Text, index=True)
    grid_code: Mapped[str] = mapped_column(Text, ForeignKey("units.code", ondelete="RESTRICT"), nullable=False, index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    # Kept by triggers on households and residents (cityops.housing.counts), never written by the service.
    households: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    residents: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    vulnerable: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    elderly: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    disabled: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    child: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    bedridden: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # The footprint ready for the dense vector tiles (cityops.tiles.prepared, after building.changed); read only there.
    tile_geom: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class Household(Base):
    __tablename__ = "households"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    building_id: Mapped[int] = mapped_column(Integer, ForeignKey("buildings.id", ondelete="CASCADE"), nullable=False, index=True)
    head_name: Mapped[str] = mapped_column(Text, nullable=False)
    phone: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    room: Mapped[str | None] = mapped_column(Text)
    members: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    grid_code: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)


class Resident(Base):
    __tablename__ = "residents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_id: Mapped[int] = mapped_column(Integer, ForeignKey("households.id", ondelete="CASCADE"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    id_number: Mapped[str | None] = mapped_column(Text)
    birth_year: Mapped[int | None] = mapped_column(Integer)
    sex: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    relation: Mapped[str | None] = mapped_column(Text)
    elderly: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    child: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    bedridden: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)


#: The vulnerable residents of a zone's households, by id, without reading the others ("who is threatened"
#: repeats this predicate in its WHERE clause, which is what lets both databases use the partial index).
VULNERABLE_PREDICATE = "elderly OR disabled OR child OR bedridden"
Index("ix_residents_vulnerable_household", Resident.household_id, Resident.id,
      sqlite_where=text(VULNERABLE_PREDICATE), postgresql_where=text(VULNERABLE_PREDICATE))

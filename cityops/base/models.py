"""Catalogue tables of the digital base: layers (图层) and their versions (版本).

Each layer's features live in a table of their own, ``layer_<key>`` (current features only, registered as
a GeoPackage layer so GDAL/QGIS see it), with ``layer_<key>_history`` keeping superseded rows for rollback.
Those tables are made at run time (see ``featurestore``), not by migrations.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import JSONText, UTCDateTime, utcnow


class Layer(Base):
    __tablename__ = "layers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    title_zh: Mapped[str] = mapped_column(Text, nullable=False)
    title_en: Mapped[str] = mapped_column(Text, nullable=False)
    description_zh: Mapped[str] = mapped_column(Text, nullable=False, default="")
    description_en: Mapped[str] = mapped_column(Text, nullable=False, default="")
    category: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    owner_department: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text, nullable=False, default="")
    #: Declared geometry type (POINT, LINESTRING, POLYGON, their MULTI forms, or GEOMETRY for any).
    geometry_type: Mapped[str] = mapped_column(Text, nullable=False)
    #: [{"name": ..., "type": "string|integer|number|boolean|datetime|json"}]
    attribute_schema: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    #: CRS of the last import's source (storage is always canonical).
    source_crs: Mapped[str | None] = mapped_column(Text)
    editable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: Open data (公开数据): anyone may read it through /ogc and the tiles, without logging in.
    public_read: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    current_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    feature_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    bounds: Mapped[list | None] = mapped_column(JSONText)
    #: The unit that owns the layer (scope of writes); usually the district.
    unit_code: Mapped[str] = mapped_column(Text, ForeignKey("units.code", ondelete="RESTRICT"), nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    @property
    def table_name(self) -> str:
        return f"layer_{self.key}"


class LayerVersion(Base):
    """One version of a layer: who did what, when, with what counts. Rows are never changed."""

    __tablename__ = "layer_versions"
    __table_args__ = (UniqueConstraint("layer_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    layer_id: Mapped[int] = mapped_column(Integer, ForeignKey("layers.id", ondelete="CASCADE"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    #: import_replace | import_append | rollback | edit
    action: Mapped[str] = mapped_column(Text, nullable=False)
    source_name: Mapped[str | None] = mapped_column(Text)
    added: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    removed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    repaired: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    feature_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: For a rollback: the version restored.
    restores: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)

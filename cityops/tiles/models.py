"""Tile data stamps: one row per tile source whose generation is bumped when its data changes.

The tile cache keys tiles by these stamps, so a bump makes every cached tile of the source unreachable (and
the cache drops them). Layers need no row: their catalogue entry's version and update time are the stamp."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import UTCDateTime, utcnow


class TileSource(Base):
    __tablename__ = "tile_sources"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

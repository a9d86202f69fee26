"""Tables of the video capability: cameras (视频监控点位) with their GB/T 28181 code, place, view and streams.

Every row carries its unit and the unit's materialised ``unit_path``, so scope is the usual prefix match.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Double, ForeignKey, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.geometry import Geometry
from cityops.core.types import JSONText, UTCDateTime, utcnow


class Camera(Base):
    """One camera: where it stands, where it looks (azimuth and field of view, how far it sees) and where its
    picture is (HLS for the browser, RTSP for the video platform)."""

    __tablename__ = "video_cameras"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: GB/T 28181 20-digit code (统一编码); its type digits are 131 or 132.
    code: Mapped[str] = mapped_column(Text, unique=True, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    type_code: Mapped[str] = mapped_column(Text, nullable=False)
    geom = mapped_column(Geometry("POINT"), nullable=False)
    #: Azimuth of the view's centre line, degrees clockwise from north.
    direction_deg: Mapped[float] = mapped_column(Double, nullable=False)
    #: Horizontal field of view, degrees (360 = a panoramic or dome camera that sees all round).
    fov_deg: Mapped[float] = mapped_column(Double, nullable=False)
    #: How far it sees usefully, metres.
    range_m: Mapped[float] = mapped_column(Double, nullable=False)
    hls_url: Mapped[str | None] = mapped_column(Text)
    rtsp_url: Mapped[str | None] = mapped_column(Text)
    #: online | offline | fault
    status: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    unit_code: Mapped[str] = mapped_column(Text, ForeignKey("units.code", ondelete="RESTRICT"), nullable=False, index=True)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    #: What it watches: {"risk_point_code": …} or {"road": …}, free-form otherwise.
    attributes: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

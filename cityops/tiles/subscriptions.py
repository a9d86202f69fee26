"""Vector tiles' consumers on the bus (cityops.core.bus); registered by cityops/wiring.py."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cityops.core.bus import Envelope
from cityops.tiles.service import invalidate


def buildings_changed(session: Session, _env: Envelope) -> None:
    """``building.changed``: every cached tile showing buildings is stale (the source's generation moves; each
    worker's tile cache keys carry it)."""
    invalidate(session, "buildings")

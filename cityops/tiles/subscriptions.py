"""Vector tiles' consumers on the bus (cityops.core.bus); registered by cityops/wiring.py."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cityops.core.bus import Envelope
from cityops.tiles import prepared
from cityops.tiles.service import TileService, invalidate


def buildings_changed(session: Session, env: Envelope) -> None:
    """``building.changed``: the changed buildings' footprints are prepared for the dense zoom again (those
    still prepared are left: a change of the footprint or of a tile attribute clears its bytes), and every cached tile showing buildings is
    stale (the source's generation moves; each worker's tile cache keys carry it)."""
    prepared.fill(session.connection(), codes=env.payload.codes)
    invalidate(session, "buildings")


def units_changed(session: Session, _env: Envelope) -> None:
    """``unit.changed``: every cached tile showing units is stale."""
    invalidate(session, "units")


def stamps_listener(tiles: TileService):
    """``tile_source.changed`` (broadcast, every worker): ``tiles`` (one per app) re-reads its data stamps at the
    next request, so a building changed through any worker reaches its tile on every worker at once."""

    def listener(_env: Envelope) -> None:
        tiles.stamps.refresh()

    return listener

"""Identity's listeners on the bus (cityops.core.bus); registered by cityops/wiring.py."""

from __future__ import annotations

from cityops.core.bus import Envelope
from cityops.identity.service import forget_principals


def token_cache(_env: Envelope) -> None:
    """``access.changed`` (broadcast, every worker): the cached token resolutions are dropped, so a revoked
    token or a changed user is refused or re-read by every worker, not only the one that made the change."""
    forget_principals()

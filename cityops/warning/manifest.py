"""What early warning (风险预警) publishes on the bus (cityops.core.bus)."""

from __future__ import annotations

from datetime import datetime

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue


@event_type
class WarningLevelChanged(DomainEvent):
    """A risk point's warning level changed (a CAP message was issued). Carries what a responder needs
    without asking the warning capability: where (point and hazard radius), what, and why."""

    name = "warning.level_changed"
    version = 1
    risk_point_code: str
    risk_point_name: str
    hazard_type: str
    unit_code: str
    unit_path: str
    previous_level: str
    level: str
    warning_id: int
    identifier: str
    msg_type: str
    at: datetime
    reasons: list[str]
    building_codes: list[str] = []
    lon: float | None = None
    lat: float | None = None
    radius_m: float | None = None


MANIFEST = Manifest(
    "warning",
    publishes=(WarningLevelChanged,),
    # New observations re-evaluate the risk points they feed: that subscription is in cityops/wiring.py, which
    # reads the sensing time series for the warning models.
    consumes=(),
    depends_on=("org", "identity", "housing"),
    catalogues=(Catalogue("catalogue.toml", "cityops.warning.catalogue:catalogue"),),
)

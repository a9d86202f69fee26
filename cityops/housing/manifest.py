"""What the housing registry (房屋 · 住户 · 人口) publishes on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type


@event_type
class BuildingChanged(DomainEvent):
    """Buildings were created or changed (footprint, floors, height …): maps and tiles showing them are stale."""

    name = "building.changed"
    version = 1
    codes: list[str]
    change: str
    unit_paths: list[str] = []


MANIFEST = Manifest("housing", publishes=(BuildingChanged,), depends_on=("org", "identity", "base"))

"""What administrative units, places, departments and people (组织 · 网格) publish on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue


@event_type
class UnitsChanged(DomainEvent):
    """Administrative units were created, replaced, changed or deleted (boundaries, names, levels): locators
    and the units' tiles are stale in every worker."""

    name = "unit.changed"
    version = 1
    codes: list[str]
    change: str


MANIFEST = Manifest("org", publishes=(UnitsChanged,), depends_on=("identity",),
                    catalogues=(Catalogue("levels.toml", "cityops.org.levels:levels_for"),))

"""What vector tiles (矢量瓦片) publish and consume on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue
from cityops.housing.manifest import BuildingChanged
from cityops.org.manifest import UnitsChanged


@event_type
class TileSourceChanged(DomainEvent):
    """The data behind a tile source ("units" or "buildings") changed: its generation moved, so every worker
    re-reads the data stamps its cached tiles are keyed by (old tiles become unreachable)."""

    name = "tile_source.changed"
    version = 1
    source: str
    generation: int


MANIFEST = Manifest("tiles", publishes=(TileSourceChanged,), consumes=(BuildingChanged, UnitsChanged),
                    depends_on=("org", "identity", "base", "housing", "ogc"),
                    catalogues=(Catalogue("tilesets.toml", "cityops.tiles.catalogue:load_catalogue"),))

"""What vector tiles (矢量瓦片) consume on the bus (cityops.core.bus)."""

from cityops.core.bus import Manifest
from cityops.housing.manifest import BuildingChanged

MANIFEST = Manifest("tiles", consumes=(BuildingChanged,), depends_on=("org", "identity", "base", "housing", "ogc"))

"""OGC API – Features: nothing on the bus (cityops.core.bus); serves housing's buildings as a collection."""

from cityops.core.bus import Manifest

MANIFEST = Manifest("ogc", depends_on=("org", "identity", "base", "housing"))

"""The layer catalogue (数字底座): nothing on the bus yet (cityops.core.bus)."""

from cityops.core.bus import Manifest

MANIFEST = Manifest("base", depends_on=("org", "identity"))

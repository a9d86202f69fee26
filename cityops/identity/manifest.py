"""Users, roles and scope: nothing on the bus yet (cityops.core.bus)."""

from cityops.core.bus import Manifest

MANIFEST = Manifest("identity", depends_on=("org",))

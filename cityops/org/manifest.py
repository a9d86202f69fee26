"""Administrative units, places, departments, people: nothing on the bus yet (cityops.core.bus)."""

from cityops.core.bus import Manifest

MANIFEST = Manifest("org", depends_on=("identity",))

"""The event center (事件中心): nothing on the bus yet (cityops.core.bus); other capabilities call its
service for cases (sensing/escalation.py, tasks/links.py)."""

from cityops.core.bus import Manifest

MANIFEST = Manifest("events", depends_on=("org", "identity", "housing"))

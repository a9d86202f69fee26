"""What the task center (任务中心) consumes on the bus (cityops.core.bus)."""

from cityops.core.bus import Manifest
from cityops.warning.manifest import WarningLevelChanged

MANIFEST = Manifest(
    "tasks",
    # A warning level activates, proposes, upgrades or stands down the emergency plan (tasks.subscriptions).
    consumes=(WarningLevelChanged,),
    # events: the incident's case (tasks/links.py).
    depends_on=("org", "identity", "housing", "events"),
)

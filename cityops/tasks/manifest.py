"""What the task center (任务中心) publishes and consumes on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue
from cityops.warning.manifest import WarningLevelChanged


@event_type
class PlanActivated(DomainEvent):
    """An emergency plan's response level took effect (activation or upgrade): its notification list is to be told
    and each new task's assignees (``tasks``: [{id, title, role, unit_code, deadline}])."""

    name = "plan.activated"
    version = 1
    incident_id: int
    title: str
    plan_key: str
    plan_name: str
    response_level: int
    unit_code: str
    unit_path: str
    risk_point_code: str | None = None
    notify: list[str] = []
    tasks: list[dict] = []
    drill: bool = False


MANIFEST = Manifest(
    "tasks",
    publishes=(PlanActivated,),
    # A warning level activates, proposes, upgrades or stands down the emergency plan (tasks.subscriptions).
    consumes=(WarningLevelChanged,),
    # events: the incident's case (tasks/links.py).
    depends_on=("org", "identity", "housing", "events"),
    catalogues=(Catalogue("plans.toml", "cityops.tasks.catalogue:catalogue"),),
)

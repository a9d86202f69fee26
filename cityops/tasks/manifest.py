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


@event_type
class IncidentActivated(DomainEvent):
    """A response took effect (activated at once or confirmed): its consumer (tasks.subscriptions) has the
    event center open the incident's case, or join the open case of the same danger (its risk point's warning
    alarm), and the incident keeps the reference.
    ``lon``/``lat``: a point inside the hazard (None: the case is placed by ``unit_code``)."""
    name = "incident.activated"
    version = 1
    incident_id: int
    title: str
    description: str
    unit_code: str
    unit_path: str
    hazard_type: str
    event_class: str
    event_grade: int | None = None
    risk_point_code: str | None = None
    lon: float | None = None
    lat: float | None = None
    drill: bool = False
    actor: str


@event_type
class IncidentClosed(DomainEvent):
    """A response ended: its case (``case_ref``, when one was linked) is closed with the closing note,
    which carries the figures."""
    name = "incident.closed"
    version = 1
    incident_id: int
    case_ref: str | None = None
    risk_point_code: str | None = None
    closing_note: str
    unit_path: str
    drill: bool = False
    actor: str


MANIFEST = Manifest(
    "tasks",
    publishes=(PlanActivated, IncidentActivated, IncidentClosed),
    # A warning level activates, proposes, upgrades or stands down the emergency plan; an activated or closed
    # response opens (or joins) and closes its event-center case (tasks.subscriptions).
    consumes=(WarningLevelChanged, IncidentActivated, IncidentClosed),
    # events: the incident's case, from the consumer of its own incident.activated / incident.closed.
    depends_on=("org", "identity", "housing", "events"),
    catalogues=(Catalogue("plans.toml", "cityops.tasks.catalogue:catalogue"),),
)

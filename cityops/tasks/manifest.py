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
    """A response took effect (activated at once or confirmed): the event center opens the incident's case, or
    joins the open case of the same danger (its risk point's warning alarm), and answers with ``case.linked``.
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
    """A response ended: its case (``case_ref``, when the event center linked one) is closed with the closing note,
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


# After this module's own event types: the event center's manifest consumes them, and this one consumes its
# case.linked (an incident's case is a request and an answer between the two).
from cityops.events.manifest import CaseLinked  # noqa: E402


MANIFEST = Manifest(
    "tasks",
    publishes=(PlanActivated, IncidentActivated, IncidentClosed),
    # A warning level activates, proposes, upgrades or stands down the emergency plan; the event center's case of an
    # incident is linked to it (tasks.subscriptions).
    consumes=(WarningLevelChanged, CaseLinked),
    depends_on=("org", "identity", "housing"),
    catalogues=(Catalogue("plans.toml", "cityops.tasks.catalogue:catalogue"),),
)

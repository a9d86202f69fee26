"""What the event center (事件中心) publishes and consumes on the bus (cityops.core.bus). Sensing still calls it to open
an alarm's case (sensing/escalation.py)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue


@event_type
class CaseChanged(DomainEvent):
    """A case was dispatched (派遣), escalated when overdue (超期升级) or closed (结案): the people it concerns are told
    (the handler, the level above, the reporter). ``outbox_ids``: the case's ``event_outbox`` notices of this change,
    which whoever delivers marks ``delivered_at``."""

    name = "case.changed"
    version = 1
    case_id: int
    number: str
    action: str  # dispatch | escalate | close
    state: str
    title: str
    unit_path: str
    grid_code: str | None = None
    township_code: str | None = None
    department_code: str | None = None
    #: dispatch to a unit, or the unit an overdue case escalated to
    unit_code: str | None = None
    escalation_level: str | None = None
    deadline_at: str | None = None
    #: the reporter's contact (close): e-mail and/or phone, when given
    reporter_email: str | None = None
    reporter_phone: str | None = None
    #: close: the reporter's rating link token (the case keeps only its digest)
    rating_token: str | None = None
    source: str | None = None
    outbox_ids: list[int] = []


@event_type
class CaseLinked(DomainEvent):
    """A case holds another capability's record: opened for it, or an open case of the same danger that it joined
    (``joined``). ``subject_kind``/``subject_id``: what it holds (``incident``)."""
    name = "case.linked"
    version = 1
    case_id: int
    number: str
    subject_kind: str
    subject_id: int
    joined: bool = False
    unit_path: str


# After this module's own event types: the task center's manifest consumes case.linked from here, and this one
# consumes its incident events (an incident's case is a request and an answer between the two).
from cityops.tasks.manifest import IncidentActivated, IncidentClosed  # noqa: E402


MANIFEST = Manifest(
    "events", publishes=(CaseChanged, CaseLinked),
    # An activated incident gets its case (opened, or joined to the open case of its danger); a closed one closes it
    # (events.subscriptions).
    consumes=(IncidentActivated, IncidentClosed),
    depends_on=("org", "identity", "housing"), catalogues=(
    Catalogue("taxonomy.toml", "cityops.events.catalogue:load_taxonomy"),
    Catalogue("calendar.toml", "cityops.events.catalogue:load_calendar"),
    Catalogue("events.toml", "cityops.events.catalogue:load_settings"),
))

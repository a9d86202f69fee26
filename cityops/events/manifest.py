"""What the event center (事件中心) publishes on the bus (cityops.core.bus). It consumes nothing: it is below the
capabilities whose facts open cases — an alarm (sensing), an incident (tasks), an indicator breach (indicators) —
and their consumers of those facts call it (each declares ``events`` in its ``depends_on``)."""

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
    """No longer published (the consumer that asks for a case keeps its reference itself): kept registered so that
    outboxes written before still read."""
    name = "case.linked"
    version = 1
    case_id: int
    number: str
    subject_kind: str
    subject_id: int
    joined: bool = False
    unit_path: str


MANIFEST = Manifest(
    "events", publishes=(CaseChanged,),
    depends_on=("org", "identity", "housing"), catalogues=(
    Catalogue("taxonomy.toml", "cityops.events.catalogue:load_taxonomy"),
    Catalogue("calendar.toml", "cityops.events.catalogue:load_calendar"),
    Catalogue("events.toml", "cityops.events.catalogue:load_settings"),
))

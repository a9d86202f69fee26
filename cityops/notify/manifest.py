"""What notifications (通知) publish and consume on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue
from cityops.events.manifest import CaseChanged
from cityops.indicators.manifest import IndicatorBreached
from cityops.tasks.manifest import PlanActivated
from cityops.warning.manifest import WarningLevelChanged


@event_type
class NotificationQueued(DomainEvent):
    """A message reached new recipients (sent, or a step of its escalation): every worker's inbox streams push
    it to those recipients, and the dispatcher (the bus lease holder) wakes to hand it to the channels."""

    name = "notification.queued"
    version = 1
    message_id: int
    kind: str
    severity: str
    title: str
    unit_path: str
    step: int
    #: [{recipient_id, person_id, user_id}]
    recipients: list[dict]


@event_type
class NotificationChanged(DomainEvent):
    """A recipient read or acknowledged a message (inbox counts of every worker follow)."""

    name = "notification.changed"
    version = 1
    message_id: int
    recipient_id: int
    person_id: int | None = None
    user_id: int | None = None
    change: str  # read | acknowledged | delivered
    unit_path: str


MANIFEST = Manifest(
    "notify",
    publishes=(NotificationQueued, NotificationChanged),
    # Every capability speaks (notify.subscriptions, registered in cityops/wiring.py).
    consumes=(WarningLevelChanged, PlanActivated, CaseChanged, IndicatorBreached),
    # org: addresses resolve through units, posts and departments; identity: users, roles, scope; events: the
    # case outbox's notices are marked delivered once handed to the channels' queue; duty: who is on duty now
    # (duty:leader|operator@… addresses).
    depends_on=("org", "identity", "events", "duty"),
    # The escalation policies; loading them also keeps the settings the domain reads (channels, quiet hours).
    catalogues=(Catalogue("policies", "cityops.notify.service:configure"),),
)

"""What sensing (物联感知) publishes and consumes on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue
from cityops.warning.manifest import WarningLevelChanged


@event_type
class ObservationBatchStored(DomainEvent):
    """Observations were stored (resends skipped): which datastreams, how many, the newest phenomenon time."""

    name = "observation.batch_stored"
    version = 1
    datastream_ids: list[int]
    count: int
    newest_ms: int


@event_type
class AlarmChanged(DomainEvent):
    """An alarm was raised, escalated, acknowledged, assigned or cleared; ``alarm`` is the alarm as the API
    shows it (``alarms.alarm_dict``) after the change."""

    name = "alarm.changed"
    version = 1
    alarm_id: int
    key: str
    change: str
    severity: str
    status: str
    unit_path: str
    alarm: dict
    #: The device type whose rule raised it (its event class files the alarm's case); None for other sources.
    device_type: str | None = None


MANIFEST = Manifest(
    "sensing",
    publishes=(ObservationBatchStored, AlarmChanged),
    # A stored batch re-evaluates the risk points it feeds (the warning models, below sensing); a warning's level
    # raises, updates or clears the risk point's alarm; a raised or escalated alarm gets its event-center case
    # (sensing.subscriptions).
    consumes=(WarningLevelChanged, AlarmChanged, ObservationBatchStored),
    # events: the case an alarm opens, from its consumer (sensing/escalation.py); warning: the one tilt rule and
    # level ladder.
    depends_on=("org", "identity", "housing", "warning", "events"),
    catalogues=(Catalogue("device_types.toml", "cityops.sensing.catalog:device_types"),
                Catalogue("rules.toml", "cityops.sensing.catalog:rulebook")),
)

"""What indicators (指标) publish on the bus (cityops.core.bus), and what they listen to. Capabilities contribute
metrics through the contract module ``cityops.indicators.metrics``; a breach opens a case through the event
center's service. An alarm or a warning level that changed makes the live indicators recompute at once and reach
the open cockpits (``live.py``, broadcast)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue
from cityops.sensing.manifest import AlarmChanged
from cityops.warning.manifest import WarningLevelChanged


@event_type
class IndicatorBreached(DomainEvent):
    """A unit entered an indicator's red band: its owner (a department, by name) is told."""

    name = "indicator.breached"
    version = 1
    breach_id: int
    indicator_code: str
    indicator_name: str
    owner: str
    unit_code: str
    unit_path: str
    period: str
    value: float
    unit: str | None = None


MANIFEST = Manifest("indicators", publishes=(IndicatorBreached,), consumes=(AlarmChanged, WarningLevelChanged),
                    depends_on=("org", "identity", "events", "sensing", "warning", "housing", "tasks"),
                    catalogues=(Catalogue("indicators", "cityops.indicators.service:load_catalogue"),))

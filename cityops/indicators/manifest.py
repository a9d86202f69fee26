"""What indicators (指标) publish on the bus (cityops.core.bus), and what they listen to. Capabilities contribute
metrics through the contract module ``cityops.indicators.metrics``; a breach whose definition asks for it gets its
case from the consumer of its own ``indicator.breached`` (and the case closes with ``indicator.recovered``), which
calls the event center (below indicators, in ``depends_on``). An alarm or a warning level that changed makes the
live indicators recompute at once and reach the open cockpits (``live.py``, broadcast)."""

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
    #: The event class of the case the definition asks for (None: no case), and the red band's threshold it names.
    case_class: str | None = None
    red: float | None = None
    #: Who ran the computation (the case's actor).
    actor: str = "system"


@event_type
class IndicatorRecovered(DomainEvent):
    """A unit's indicator left its red band: the breach is closed, and its case (if it opened one) closes too."""

    name = "indicator.recovered"
    version = 1
    breach_id: int
    indicator_code: str
    indicator_name: str
    unit_code: str
    unit_path: str
    value: float
    unit: str | None = None
    actor: str = "system"


MANIFEST = Manifest("indicators", publishes=(IndicatorBreached, IndicatorRecovered),
                    consumes=(AlarmChanged, WarningLevelChanged, IndicatorBreached, IndicatorRecovered),
                    depends_on=("org", "identity", "events", "sensing", "warning", "housing", "tasks"),
                    catalogues=(Catalogue("indicators", "cityops.indicators.service:load_catalogue"),))

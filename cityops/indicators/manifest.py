"""What indicators (指标) publish on the bus (cityops.core.bus). Capabilities contribute metrics through the
contract module ``cityops.indicators.metrics``; a breach opens a case through the event center's service."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue


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


MANIFEST = Manifest("indicators", publishes=(IndicatorBreached,),
                    depends_on=("org", "identity", "events", "sensing", "warning", "housing", "tasks"),
                    catalogues=(Catalogue("indicators", "cityops.indicators.service:load_catalogue"),))

"""What directives (一键智达) publish on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue


@event_type
class DirectiveChanged(DomainEvent):
    """A directive was issued or passed down, a receipt was read, confirmed or reported, or the silent were
    reminded or escalated. ``receipt`` carries the changed receipt when there is one; otherwise boards reload."""

    name = "directive.changed"
    version = 1
    directive_id: int
    change: str
    unit_path: str
    log_id: int
    receipts: int = 0
    receipt: dict | None = None


# duty: the people on duty are a receipt's recipients and the escalation's addressees.
# indicators: the runways' owner departments ("departments on the geohazard runway").
# notify: the directive, and each escalation, reach people through the notification service.
MANIFEST = Manifest("directives", publishes=(DirectiveChanged,),
                    depends_on=("org", "identity", "duty", "indicators", "notify"),
                    catalogues=(Catalogue("directives.toml", "cityops.directives.catalogue:load"),))

"""What duty (值班值守) publishes on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue


@event_type
class RosterChanged(DomainEvent):
    """A roster was written (assigned, generated, swapped, removed): who is on duty may have changed."""

    name = "duty.roster_changed"
    version = 1
    roster: str
    unit_path: str
    change: str
    first_day: str | None = None
    last_day: str | None = None


# events: the duty calendar (工作日历, events/calendar.toml) decides working days and holidays.
MANIFEST = Manifest("duty", publishes=(RosterChanged,), depends_on=("org", "identity", "events"),
                    catalogues=(Catalogue("shifts.toml", "cityops.duty.catalogue:load"),))

"""What the call log publishes and consumes on the bus (cityops.core.bus): nothing — a call is logged by the
operator who made it, against a person or unit and, where it belongs, an incident or a case."""

from cityops.core.bus import Manifest

MANIFEST = Manifest(
    "calls",
    # tasks and events: the incident or case a call is linked to (scope and existence checks, calls/service.py).
    depends_on=("org", "identity", "tasks", "events"),
)

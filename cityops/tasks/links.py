"""Links from the task center to the event center's records, by reference only: an incident's case is opened and
closed by the event center's consumers of ``incident.activated`` / ``incident.closed`` (cityops.events.subscriptions),
and the reference comes back with ``case.linked`` (cityops.tasks.subscriptions). ``case_ref`` is kept as opaque text.
"""

from __future__ import annotations


def case_link(case_ref: str | None) -> str | None:
    """Where the case lives in the API (the event center's route), for the link back."""
    return f"/api/events/cases/{case_ref}" if case_ref else None

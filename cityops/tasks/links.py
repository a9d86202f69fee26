"""Links from the task center to the event center's records, by reference: an incident's case is opened (or
joined) and closed by the task center's consumers of ``incident.activated`` / ``incident.closed``
(cityops.tasks.subscriptions), which keep its reference. ``case_ref`` is kept as text.
"""

from __future__ import annotations


def case_link(case_ref: str | None) -> str | None:
    """Where the case lives in the API (the event center's route), for the link back."""
    return f"/api/events/cases/{case_ref}" if case_ref else None

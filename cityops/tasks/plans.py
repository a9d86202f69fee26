"""Emergency plans (应急预案): the hook the warning capability calls on a level change.

The plans themselves are data (``plans.toml``, see ``cityops.tasks.catalogue``); this module is the entry
point that turns a warning into a response.
"""

from __future__ import annotations

from cityops.core import audit
from cityops.tasks import response
from cityops.tasks.catalogue import catalogue, parse_level


def on_warning_level(session, *, risk_point_code: str, hazard_type: str, level, unit_code: str, geometry, evidence,
                     actor=None, place_name: str | None = None):
    """Warning subscriber: a risk point's warning level changed.

    At or above the plan's trigger level with no open response, the plan activates (``activation = "auto"``)
    or is proposed for one-click confirmation (``"propose"``): tasks are instantiated, the risk zone is
    computed from ``geometry`` (the hazard body) plus the plan's buffer, and its households are locked into
    evacuation tasks. A higher level upgrades an open response; a lower or cleared level is logged with a
    stand-down proposal (standing down stays an operator's decision). Runs in the caller's transaction and
    returns the incident, or None when the level triggers nothing. ``level``: 1–4, I–IV or a colour.
    """
    if isinstance(actor, str):
        actor = audit.Actor(actor)
    return response.on_warning(session, risk_point_code=risk_point_code, hazard_type=hazard_type, level=level,
                              unit_code=unit_code, geometry=geometry, evidence=evidence, actor=actor,
                              place_name=place_name)


def plans_summary() -> list[dict]:
    """The plan catalogue as the API shows it."""
    return [plan.model_dump() for plan in catalogue().plans]


__all__ = ["on_warning_level", "plans_summary", "parse_level"]

"""The task center's domain logic, by concern: ``incidents`` (reading incidents, their log, statistics), ``response``
(plans: open, activate, change level, stand down, close; ``on_warning``), ``zones`` (risk zones and household locking),
``evacuation`` (household states, three-level totals), ``shelters`` and ``work`` (tasks: publish, decompose, progress,
overdue).

This module only re-exports their public names for callers not yet moved to them; new code imports the module
that owns the name."""

from __future__ import annotations

from cityops.tasks.evacuation import change_state, evacuation_dict, history, list_evacuations, totals
from cityops.tasks.incidents import (ALL, HOUSEHOLD_KINDS, get_incident, incident_dict, list_incidents, log_dict,
                                     log_step, statistics, timeline)
from cityops.tasks.response import (activate, change_level, close, dismiss, figures, on_warning, open_incident,
                                    remove_drill, stand_down)
from cityops.tasks.shelters import create_shelter, list_shelters, shelter_dict
from cityops.tasks.work import (check_overdue, decompose, get_task, list_tasks, progress, publish_task,
                                report_progress, task_dict, task_tree)
from cityops.tasks.zones import current_zone, lock_households, set_zone, zone_dict, zone_threat

__all__ = ["ALL", "HOUSEHOLD_KINDS", "activate", "change_level", "change_state", "check_overdue", "close",
           "create_shelter", "current_zone", "decompose", "dismiss", "evacuation_dict", "figures", "get_incident",
           "get_task", "history", "incident_dict", "list_evacuations", "list_incidents", "list_shelters", "list_tasks",
           "lock_households", "log_dict", "log_step", "on_warning", "open_incident", "progress", "publish_task",
           "remove_drill", "report_progress", "set_zone", "shelter_dict", "stand_down", "statistics", "task_dict",
           "task_tree", "timeline", "totals", "zone_dict", "zone_threat"]

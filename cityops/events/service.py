"""The event center's domain logic, by concern: ``routing`` (locating, routing, the write section), ``creation``
(intake and the stable entry points ``create_case`` / ``create_case_from_alarm``), ``actions`` (the workflow,
``close_case``, merging), ``sla`` (time limits, escalation), ``queries`` (lists, views, duplicates, the outbox feed),
``attachments`` and ``hotline`` (12345 CSV import).

This module only re-exports their public names for callers not yet moved to them; new code imports the module
that owns the name."""

from __future__ import annotations

from cityops.events.actions import act, close_case, current_state, get_case, merge, transition_view, verify_projection
from cityops.events.attachments import check_attachment, save_attachment
from cityops.events.creation import (CaseDraft, adopt_open_case, create_case, create_case_from_alarm, draft_case,
                                     draft_view, insert_drafts)
from cityops.events.hotline import HOTLINE_COLUMNS, hotline_key, import_hotline_csv
from cityops.events.queries import (QUEUES, case_detail, case_dict, duplicate_candidates, list_cases, outbox_since,
                                    public_clause, scope_clause, with_names)
from cityops.events.routing import ALL, FixedLocator, SOURCES, Where, locate, route, use_locator, utcnow, write_section
from cityops.events.sla import sla_status, sweep

__all__ = ["ALL", "CaseDraft", "FixedLocator", "HOTLINE_COLUMNS", "QUEUES", "SOURCES", "Where", "act",
           "adopt_open_case", "case_detail", "case_dict", "check_attachment", "close_case", "create_case",
           "create_case_from_alarm", "current_state", "draft_case", "draft_view", "duplicate_candidates", "get_case",
           "hotline_key", "import_hotline_csv", "insert_drafts", "list_cases", "locate", "merge", "outbox_since",
           "public_clause", "route", "save_attachment", "scope_clause", "sla_status", "sweep", "transition_view",
           "use_locator", "utcnow", "verify_projection", "with_names", "write_section"]

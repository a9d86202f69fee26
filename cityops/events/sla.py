"""Time limits (时限): due-soon warnings and escalation of overdue cases up the unit ladder, and a case's SLA status."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.events import catalogue
from cityops.events.actions import act, announce
from cityops.events.models import Case, Outbox
from cityops.events.routing import ALL, utcnow
from cityops.events.workflow import CLOCK_RUNNING
from cityops.identity.scope import Scope
from cityops.org.levels import active_levels




def sweep(session: Session, now: datetime | None = None, actor: audit.Actor = audit.Actor("system:sla"),
          scope: Scope = ALL) -> dict:
    """Due-soon warnings and escalation of overdue cases one level up per overdue period
    (grid → village → township → district). Returns counts. Idempotent for the same ``now``."""
    now = now or utcnow()
    cal, settings = catalogue.calendar(), catalogue.settings()
    ladder = settings.escalation_levels
    counts = {"due_soon": 0, "escalated": 0}
    stmt = select(Case).where(Case.state.in_(CLOCK_RUNNING), Case.deadline_at.is_not(None),
                              scope.covers_clause(Case.unit_path)).order_by(Case.id)
    for case in session.scalars(stmt).all():
        cls = catalogue.taxonomy().resolve(case.class_code, case.kind)
        limit_s = cal.limit_seconds(cls.limit(case.urgency))
        if case.deadline_at > now:
            # Working time never exceeds wall time; 10 days covers the longest holiday run, so anything
            # further away cannot be due soon and needs no calendar walk.
            near = (case.deadline_at - now).total_seconds() <= settings.due_soon_fraction * limit_s + 10 * 86400
            if near and not case.due_soon_warned and cal.between(now, case.deadline_at) <= settings.due_soon_fraction * limit_s:
                act(session, case, "due_soon", actor, at=now,
                    data={"deadline_at": case.deadline_at.isoformat(), "remaining_s": cal.between(now, case.deadline_at)})
                counts["due_soon"] += 1
            continue
        overdue_s = cal.between(case.deadline_at, now)
        level = min(1 + int(overdue_s // limit_s), len(ladder) - 1)
        if level > (case.escalation_level or 0):
            codes = [c for c in case.unit_path.strip("/").split("/") if c]
            levels = active_levels()
            by_level = {levels.level_of(c): c for c in codes}
            target = by_level.get(ladder[level]) or codes[0]
            act(session, case, "escalate", actor, at=now, note=f"超期升级至{ladder[level]}",
                data={"level": level, "unit_code": target, "overdue_working_s": overdue_s})
            notice = Outbox(case_id=case.id, topic="notify.escalation", recipient=f"unit:{target}",
                            unit_path=case.unit_path, created_at=now,
                            payload={"number": case.number, "level": ladder[level], "unit_code": target})
            session.add(notice)
            announce(session, case, "escalate", {"unit_code": target, "escalation_level": ladder[level]}, [notice])
            counts["escalated"] += 1
    return counts


def sla_status(case: Case, now: datetime | None = None) -> str:
    """on_time / due_soon / overdue / paused / none, for lists and the workbench."""
    now = now or utcnow()
    if case.state == "backlogged":
        return "paused"
    if case.deadline_at is None:
        return "none"
    if case.closed_at is not None:
        return "closed_on_time" if case.closed_at <= case.deadline_at else "closed_late"
    if case.state == "void":
        return "none"
    if case.deadline_at <= now:
        return "overdue"
    return "due_soon" if case.due_soon_warned else "on_time"

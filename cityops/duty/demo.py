"""Demo step "duty": a roster for every center of the demo district (the district and each township) and for
each district department, over the July storm (1–14 July 2026) and the fortnight around today, filled by
rotation over the duty calendar (holidays and weekends get the 24-hour shift)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from cityops.core import audit
from cityops.demo.generator import DemoContext, register_step
from cityops.duty import service
from cityops.identity.scope import Scope
from cityops.org.models import Department, Unit

_ALL = Scope(all_units=True)
STORM_DAYS = (date(2026, 7, 1), 14)


def demo_periods(today: date) -> list[tuple[date, int]]:
    periods = [STORM_DAYS]
    start = today - timedelta(days=7)
    storm_end = STORM_DAYS[0] + timedelta(days=STORM_DAYS[1])
    if start < storm_end and start + timedelta(days=21) > STORM_DAYS[0]:
        return [(min(start, STORM_DAYS[0]), (max(start + timedelta(days=21), storm_end) - min(start, STORM_DAYS[0])).days)]
    return periods + [(start, 21)]


def step_duty(ctx: DemoContext) -> None:
    today = datetime.now(UTC).astimezone(service.calendar().tz).date()
    count = 0
    with ctx.sessions() as session:
        keys = list(session.scalars(select(Unit.code).where(Unit.level.in_(service.CENTER_LEVELS)).order_by(Unit.path)))
        keys += [f"dept:{c}" for c in session.scalars(select(Department.code).order_by(Department.code))]
        for key in keys:
            roster = service.roster_of(session, key)
            if key.startswith("dept:"):
                staff = service._default_pool(session, roster, "department_staff")
                if len(staff) < 2:
                    continue
                leaders, operators = staff[:1], staff[1:]
            else:
                leaders = operators = None
                if not service._default_pool(session, roster, "leader") or not service._default_pool(session, roster, "operator"):
                    continue
            for start, days in demo_periods(today):
                count += len(service.generate(session, audit.SYSTEM, _ALL, key, start, days, leaders=leaders, operators=operators))
        session.commit()
    ctx.summary["duty_assignments"] = count


register_step("duty", step_duty, after="users")

"""Working-time arithmetic on the duty calendar (工作日历): deadlines in working hours and working days.

Written here rather than taken from a library: business-hours packages on PyPI model weekly schedules
and fixed holiday lists but not China's adjusted working days (调休, a weekend day that becomes a working
day), split working periods and pause/resume on the same clock.

A working day is ``periods`` on a day that is (a listed 调休 workday) or (not a holiday and not a weekend
day). "N working days" = N × the working seconds of one day, so a limit can pause and resume mid-day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cityops.core.errors import InvalidInput

_MAX_DAYS = 3 * 366


@dataclass
class WorkCalendar:
    tz: ZoneInfo
    periods: list[tuple[time, time]]
    weekend: set[int]
    holidays: set[date]
    workdays: set[date]
    years: list[int]

    @property
    def day_seconds(self) -> float:
        return sum((datetime.combine(date.min, e) - datetime.combine(date.min, s)).total_seconds() for s, e in self.periods)

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.isoweekday() not in self.weekend

    def limit_seconds(self, limit) -> float:
        """Working seconds of a ``catalogue.Limit`` ("4h" or "2d")."""
        return limit.amount * (3600 if limit.unit == "h" else self.day_seconds)

    def _windows(self, start_local: datetime, max_days: int | None = None):
        """Working windows (local aware datetimes) from ``start_local`` on, in order. Unbounded (``max_days``
        None) it raises when the calendar has no working time for years; bounded it simply stops."""
        day = start_local.date()
        for _ in range(max_days or _MAX_DAYS):
            if self.is_working_day(day):
                for s, e in self.periods:
                    ws = datetime.combine(day, s, self.tz)
                    we = datetime.combine(day, e, self.tz)
                    if we <= start_local:
                        continue
                    yield max(ws, start_local), we
            day += timedelta(days=1)
        if max_days:
            return
        raise InvalidInput(f"no working time within {_MAX_DAYS} days of {start_local.isoformat()}: check the calendar")

    def add(self, start: datetime, seconds: float) -> datetime:
        """``start`` + ``seconds`` of working time, as an aware UTC datetime. Outside working time the clock
        starts at the next working period."""
        if start.tzinfo is None:
            raise InvalidInput("deadline arithmetic needs an aware datetime")
        if seconds < 0:
            raise InvalidInput("working time to add must not be negative")
        remaining = float(seconds)
        local = start.astimezone(self.tz)
        if remaining == 0:
            return start.astimezone(UTC)
        for ws, we in self._windows(local):
            available = (we - ws).total_seconds()
            if remaining <= available:
                return (ws + timedelta(seconds=remaining)).astimezone(UTC)
            remaining -= available
        raise AssertionError("unreachable")  # _windows raises first

    def add_limit(self, start: datetime, limit) -> datetime:
        return self.add(start, self.limit_seconds(limit))

    def between(self, start: datetime, end: datetime) -> float:
        """Working seconds from ``start`` to ``end`` (negative when ``end`` is earlier)."""
        if end < start:
            return -self.between(end, start)
        total = 0.0
        end_local = end.astimezone(self.tz)
        span = (end - start).days + 2
        for ws, we in self._windows(start.astimezone(self.tz), max(span, 1)):
            if ws >= end_local:
                break
            total += (min(we, end_local) - ws).total_seconds()
        return total

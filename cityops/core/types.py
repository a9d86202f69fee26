"""Column types portable across SQLite/GeoPackage and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import DateTime, Text
from sqlalchemy.types import TypeDecorator


_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def json_text(value) -> str:
    """A JSON column's stored text on SQLite (and COPY's on PostgreSQL): orjson's compact form, about six times
    the standard library's ``json.dumps`` (which was 8 % of the case writer's time). The same text as
    ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` but for two things: floats below 1e-4 are
    written positionally (``0.00001`` for ``1e-05``, the same number), and NaN and ±Infinity, which are not JSON
    (PostgreSQL's jsonb refuses them, and its case writer already wrote them through orjson), become ``null``.
    What orjson refuses (integers beyond 64 bits, keys that are not strings) or would write where the standard
    library refuses (datetimes, dataclasses) or writes otherwise (str subclasses) goes through ``json.dumps``."""
    try:
        return orjson.dumps(value, option=_PASSTHROUGH).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class JSONText(TypeDecorator):
    """JSON: ``jsonb`` on PostgreSQL, TEXT on SQLite (a GeoPackage-legal column type)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            # Imported here: the PostgreSQL dialect's module is a fixed cost of every SQLite process otherwise.
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value, dialect):
        if value is None or dialect.name == "postgresql":
            return value
        return json_text(value)

    def process_result_value(self, value, dialect):
        if value is None or dialect.name == "postgresql":
            return value
        return json.loads(value)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC timestamps on both backends (SQLite keeps ISO text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; CityOps stores aware UTC timestamps")
        return value.astimezone(UTC)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _start_of_day(local: datetime) -> datetime:
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _start_of_month(local: datetime) -> datetime:
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(first: datetime) -> datetime:
    """The first instant of the month after ``first`` (itself a month's first instant), in its zone."""
    return first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)


class LocalPeriodLabel:
    """An instant's local day or month as text (``strftime`` ``fmt``), the last period's bounds kept: a writer asks
    for nearly the same instant for every row of a group, and ``astimezone`` + ``strftime`` per row were a visible
    share of the case writer. ``LocalPeriodLabel.DAY("%Y%m%d")``, ``LocalPeriodLabel.MONTH("%Y-%m")``."""

    def __init__(self, fmt: str, start_of, next_start):
        self.fmt, self._start_of, self._next_start = fmt, start_of, next_start
        self._last: tuple | None = None  # (first instant, first instant of the next period, text, time zone)

    @classmethod
    def DAY(cls, fmt: str) -> "LocalPeriodLabel":  # noqa: N802 - reads as a unit
        return cls(fmt, _start_of_day, lambda first: first + timedelta(days=1))

    @classmethod
    def MONTH(cls, fmt: str) -> "LocalPeriodLabel":  # noqa: N802
        return cls(fmt, _start_of_month, next_month)

    def __call__(self, at: datetime, tz) -> str:
        last = self._last
        if last is not None and last[3] is tz and at.tzinfo is not None and last[0] <= at < last[1]:
            return last[2]
        local = at.astimezone(tz)
        text = local.strftime(self.fmt)
        if tz is not None:  # without a zone (the system's own), nothing is kept
            first = self._start_of(local)
            self._last = (first, self._next_start(first), text, tz)
        return text

"""ISO 8601 instants and intervals ⇄ epoch milliseconds (UTC), the storage form of sensing times."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from cityops.core.errors import InvalidInput


def parse_instant(value: str, what: str = "time") -> int:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what}: expected an ISO 8601 instant, got {value!r}")
    try:
        dt = datetime.fromisoformat(value)  # Python ≥ 3.11 reads the "Z" suffix itself
    except ValueError:
        raise InvalidInput(f"{what}: {value!r} is not an ISO 8601 instant") from None
    if dt.tzinfo is None:
        raise InvalidInput(f"{what}: {value!r} has no time zone (add Z or an offset)")
    return int(round(dt.timestamp() * 1000))


def parse_time(value: str, what: str = "time") -> tuple[int, int | None]:
    """An instant → (ms, None); an interval ``start/end`` → (start_ms, end_ms)."""
    if isinstance(value, str) and "/" in value:
        start, end = value.split("/", 1)
        a, b = parse_instant(start, what), parse_instant(end, what)
        if b < a:
            raise InvalidInput(f"{what}: interval {value!r} ends before it starts")
        return a, b
    return parse_instant(value, what), None


@lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).replace(tzinfo=None).isoformat()


def iso(ms: int | None) -> str | None:
    """``2026-07-20T01:00:00.000Z``. The second is cached: notifications and reads format tens of thousands
    of instants a second, mostly of the same few seconds."""
    if ms is None:
        return None
    second, milli = divmod(ms, 1000)
    return f"{_iso_second(second)}.{milli:03d}Z"


def iso_interval(start: int | None, end: int | None) -> str | None:
    if start is None:
        return None
    if end is None:
        return iso(start)
    return f"{iso(start)}/{iso(end)}"


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)

"""Request value types shared by every interface: integers that fit the database.

Python integers have no bound, the databases' are 64-bit: an id, an offset or a resume point of 10^26 passed
validation and overflowed in the driver (SQLite: "Python int too large", PostgreSQL: "integer out of range"),
a 500. Every integer a request carries (path, query, header, body) is one of these types or goes through
``parse_int64``, so it is refused with a 4xx naming the value before it reaches a query.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Interval

from cityops.core.errors import InvalidInput

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Any integer (an id in a path, a count or a number in a body).
Int64 = Annotated[int, Interval(ge=INT64_MIN, le=INT64_MAX)]
#: A non-negative integer: offsets, "after this id" resume points, versions.
NonNegInt64 = Annotated[int, Interval(ge=0, le=INT64_MAX)]


def parse_int64(raw: str, what: str, *, minimum: int = INT64_MIN) -> int:
    """A decimal integer from text parsed by hand (SensorThings paths and options, headers) → int, or
    ``InvalidInput`` naming ``what`` when it is not an integer in ``minimum`` … 2^63-1."""
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    # isascii: int() also takes other scripts' digits and "1_000"; neither is an id we ever issued.
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19 or not minimum <= int(text) <= INT64_MAX:
        raise InvalidInput(f"{what} {raw[:40]!r} must be an integer from {minimum} to {INT64_MAX}",
                           {"field": what, "value": raw[:40]})
    return int(text)

"""Request value types shared by every interface: integers that fit the database.

Python integers have no bound, the databases' have: an id, an offset or a resume point of 10^26 passed
validation and overflowed in the driver (SQLite: "Python int too large" beyond 64 bits; PostgreSQL: "integer
out of range" beyond 32 bits for INTEGER columns), a 500. Every integer a request carries (path, query, header,
body) is one of these types or goes through ``parse_int``, so it is refused with a 4xx naming the bound before it
reaches a query.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Interval

from cityops.core.errors import InvalidInput

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

#: A row id (the keys are INTEGER columns, 32-bit on PostgreSQL; SensorThings observations, 64-bit, are the
#: exception and parsed with their own bound) or a resume point after one.
Id = Annotated[int, Interval(ge=0, le=INT32_MAX)]
#: A number stored in an INTEGER column (floors, years, ratings, versions, levels).
Int32 = Annotated[int, Interval(ge=INT32_MIN, le=INT32_MAX)]
#: An integer used only in arithmetic or as OFFSET (64-bit on both backends): offsets, tile addresses.
Int64 = Annotated[int, Interval(ge=INT64_MIN, le=INT64_MAX)]
NonNegInt64 = Annotated[int, Interval(ge=0, le=INT64_MAX)]


def parse_int(raw: str, what: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """A decimal integer from text parsed by hand (SensorThings paths and options, headers) → int, or
    ``InvalidInput`` naming ``what`` when it is not an integer in ``minimum`` … ``maximum``."""
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    # isascii: int() also takes other scripts' digits and "1_000"; neither is an id we ever issued.
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19 or not minimum <= int(text) <= maximum:
        raise InvalidInput(f"{what} {raw[:40]!r} must be an integer from {minimum} to {maximum}",
                           {"field": what, "value": raw[:40]})
    return int(text)

"""Scope: which part of the district a principal may see and change.

A scope is a set of administrative subtrees, each named by the materialised ``path`` of its root unit
(``/500154/500154107/``). A record is *covered* when its unit path starts with one of them. Ancestors of a
scope root are *visible* (read-only: a township operator sees the district outline and name, never another
township's records).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import false, or_, true
from sqlalchemy.sql import ColumnElement

from cityops.core.errors import Forbidden


#: Levels whose units each hold at least one whole district.
DISTRICT_LEVELS = ("province", "city", "district")


@dataclass(frozen=True)
class Scope:
    all_units: bool = False
    unit_paths: tuple[str, ...] = ()
    department_codes: tuple[str, ...] = field(default_factory=tuple)
    #: One of the roots is a whole district (or more): the district's shared catalogues are this principal's.
    whole_district: bool = False

    @property
    def district_wide(self) -> bool:
        return self.all_units or self.whole_district

    def covers(self, path: str | None) -> bool:
        if self.all_units:
            return True
        return path is not None and any(path.startswith(root) for root in self.unit_paths)

    def sees(self, path: str | None) -> bool:
        """Covered, or an ancestor of a scope root."""
        return self.covers(path) or (path is not None and any(root.startswith(path) for root in self.unit_paths))

    def require_covers(self, path: str | None, what: str) -> None:
        if not self.covers(path):
            raise Forbidden(f"{what} is outside your scope")

    def covers_clause(self, column) -> ColumnElement[bool]:
        """SQL filter: ``column`` (a unit path) lies in the scope."""
        if self.all_units:
            return true()
        if not self.unit_paths:
            return false()
        return or_(*[column.startswith(root, autoescape=True) for root in self.unit_paths])

    def sees_clause(self, column) -> ColumnElement[bool]:
        if self.all_units:
            return true()
        ancestors = {root[: i + 1] for root in self.unit_paths for i, ch in enumerate(root) if ch == "/" and i > 0}
        return or_(self.covers_clause(column), column.in_(sorted(ancestors)) if ancestors else false())

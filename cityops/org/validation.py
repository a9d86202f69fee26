"""Validation of administrative units before an import: a report of every problem, not the first one.

:func:`validate_units` checks records read by :mod:`cityops.org.unitfiles` (or built by hand) against
the level catalogue, each other and the units already stored (``existing``). Error-severity issues reject
the import; warnings (gaps between siblings) do not.

Side effects on the records, for the importer that follows: a missing or spelled-out ``level`` ("村/社区",
"Village / community") is replaced by the level key (inferred from the code length when missing), and a
missing ``parent_code`` is filled in from the code prefix when exactly that unit exists in the file or in
``existing``.

Topology is judged in the stored lon/lat geometry through an affine :class:`~cityops.core.crs.LocalPlane`
(metres around the data's centre): a true projection would bend edges and invent slivers along shared
boundaries.
Sibling overlaps use an STRtree over all the children concerned; 4,500 units validate in about a second.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from cityops.core.crs import LocalPlane
from cityops.org.levels import Level, Levels, load_levels
from cityops.org.unitfiles import UnitRecord

__all__ = ["CHECKS", "ExistingUnit", "Issue", "ValidationReport", "validate_units"]

CHECKS = (
    "invalid_geometry",
    "unclosed_ring",
    "empty_geometry",
    "not_polygonal",
    "code_format",
    "missing_name",
    "unknown_level",
    "missing_parent",
    "prefix_mismatch",
    "wrong_parent_level",
    "duplicate_code",
    "already_exists",
    "outside_parent",
    "sibling_overlap",
    "sibling_gap",
)

#: Severity per check; everything not listed is an error.
WARNING_CHECKS = {"sibling_gap"}


@dataclass
class Issue:
    check: str
    message: str
    row: int | None = None
    code: str | None = None
    severity: str = "error"


@dataclass
class ValidationReport:
    issues: list[Issue]
    counts: dict[str, int]  # records per level

    @property
    def ok(self) -> bool:
        return not any(issue.severity == "error" for issue in self.issues)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity != "error"]

    def by_check(self, check: str) -> list[Issue]:
        return [i for i in self.issues if i.check == check]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "counts": dict(self.counts),
            "issues": [asdict(issue) for issue in self.issues],
        }


@dataclass
class ExistingUnit:
    code: str
    level: str
    parent_code: str | None
    geometry: BaseGeometry | None


# Common spellings of level names in files (besides the key, name_en and name_zh of the catalogue).
_LEVEL_SYNONYMS = {
    "省": "province",
    "市": "city",
    "区": "district",
    "县": "district",
    "区县": "district",
    "county": "district",
    "街道": "township",
    "镇": "township",
    "乡": "township",
    "街镇": "township",
    "street": "township",
    "town": "township",
    "社区": "village",
    "村": "village",
    "community": "village",
    "网格": "grid",
    "单元网格": "grid",
    "unit grid": "grid",
}

_REASON_AT = re.compile(r"^(?P<reason>.*?)\[(?P<x>[-+0-9.eE]+) (?P<y>[-+0-9.eE]+)\]$")


def _level_lookup(levels: Levels) -> dict[str, str]:
    lookup: dict[str, str] = {}
    for key, target in _LEVEL_SYNONYMS.items():
        if target in levels.by_key:
            lookup[key] = target
    for level in levels.ordered:
        for spelling in (level.name_en, level.name_zh, *level.name_zh.split("/"), *level.name_en.split("/")):
            lookup[spelling.strip().lower()] = level.key
        lookup[level.key.lower()] = level.key
    return lookup


@dataclass
class _Unit:
    """A unit as the geometry checks see it: from the file or from ``existing``."""

    code: str
    level: str | None
    parent_code: str | None
    geometry: BaseGeometry | None  # canonical; only valid, non-empty polygonal geometry
    record: UnitRecord | None = None  # None when the unit comes from ``existing``
    metric: BaseGeometry | None = None

    @property
    def in_file(self) -> bool:
        return self.record is not None

    @property
    def row(self) -> int | None:
        return self.record.row if self.record is not None else None


class _Collector:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(self, check: str, message: str, *, code: str | None = None, row: int | None = None) -> None:
        severity = "warning" if check in WARNING_CHECKS else "error"
        self.issues.append(Issue(check=check, message=message, row=row, code=code, severity=severity))


def validate_units(
    records: list[UnitRecord],
    *,
    existing: Mapping[str, ExistingUnit] = {},  # noqa: B006 - read only
    replace: bool = False,
    grid_code_length: int = 15,
    tolerance_m2: float = 1.0,
) -> ValidationReport:
    """Check ``records`` (canonical CRS) and return a report of every problem found."""
    levels = load_levels(grid_code_length)
    out = _Collector()
    records = list(records)

    # -- per record: code, name, duplicates, existence, geometry ------------------------------------
    first: dict[str, UnitRecord] = {}
    usable: dict[str, BaseGeometry] = {}  # code → valid polygonal geometry (first occurrence only)
    lookup = _level_lookup(levels)
    for record in records:
        record.code = (record.code or "").strip()
        code = record.code
        label = code or f"row {record.row}"
        if not code:
            out.add("code_format", f"row {record.row} has no code", row=record.row)
        if not (record.name or "").strip():
            out.add("missing_name", f"unit {label} has no name", code=code or None, row=record.row)
        if code:
            if code in first:
                out.add(
                    "duplicate_code",
                    f"code {code} appears more than once (rows {first[code].row} and {record.row})",
                    code=code,
                    row=record.row,
                )
            else:
                first[code] = record
                if code in existing and not replace:
                    out.add(
                        "already_exists",
                        f"unit {code} already exists ({existing[code].level}); import with replace to overwrite it",
                        code=code,
                        row=record.row,
                    )
        level_key = lookup.get(str(record.level).strip().lower()) if record.level else None
        optional = level_key is not None and levels.get(level_key).geometry_optional
        geom = _check_geometry(record, label, out, geometry_optional=optional)
        if geom is not None and code and first.get(code) is record:
            usable[code] = geom

    # -- levels --------------------------------------------------------------------------------------
    level_of: dict[str, str | None] = {}  # file code → resolved level key
    pending: list[UnitRecord] = []
    for record in first.values():
        if record.level is not None and str(record.level).strip():
            key = lookup.get(str(record.level).strip().lower())
            if key is None:
                out.add(
                    "unknown_level",
                    f"unit {record.code} has unknown level {record.level!r}; known levels: {', '.join(levels.by_key)}",
                    code=record.code,
                    row=record.row,
                )
            else:
                record.level = key
            level_of[record.code] = key
        else:
            pending.append(record)

    def known_level(code: str | None) -> str | None:
        if code is None:
            return None
        if code in first:
            return level_of.get(code)
        unit = existing.get(code)
        return unit.level if unit is not None else None

    for record in sorted(pending, key=lambda r: len(r.code)):  # parents (shorter codes) first
        parent_level = known_level(record.parent_code)
        inferred = levels.infer(record.code, parent_level) if record.code else None
        if inferred is None:
            if record.code:
                out.add(
                    "unknown_level",
                    f"unit {record.code} has no level and its code length {len(record.code)} matches none "
                    f"({_lengths(levels)})",
                    code=record.code,
                    row=record.row,
                )
            level_of[record.code] = None
        else:
            record.level = inferred.key
            level_of[record.code] = inferred.key

    # -- code format ---------------------------------------------------------------------------------
    for record in first.values():
        key = level_of.get(record.code)
        if key is None:
            continue
        level = levels.get(key)
        if not level.code_pattern.match(record.code):
            out.add(
                "code_format",
                f"{key} code {record.code} does not match the {key} code format: {level.code_length} characters "
                f"of [{level.alphabet}] (got {len(record.code)} characters)",
                code=record.code,
                row=record.row,
            )

    # -- parents -------------------------------------------------------------------------------------
    file_levels = {k for k in level_of.values() if k}
    existing_levels = {u.level for u in existing.values() if u.code not in first}
    for record in first.values():
        key = level_of.get(record.code)
        if key is None:
            continue
        level = levels.get(key)
        if record.parent_code is not None and not str(record.parent_code).strip():
            record.parent_code = None
        if record.parent_code is None:
            if not level.parents:
                continue
            guessed = _parent_from_prefix(record.code, level, levels, known_level)
            if guessed is not None:
                record.parent_code = guessed
            elif any(p in file_levels or p in existing_levels for p in level.parents):
                out.add(
                    "missing_parent",
                    f"{key} {record.code} has no parent code and no {' or '.join(level.parents)} "
                    f"with a matching code prefix exists",
                    code=record.code,
                    row=record.row,
                )
                continue
            else:
                continue  # a root of this import (e.g. a district)
        parent = str(record.parent_code).strip()
        record.parent_code = parent
        if parent == record.code:
            out.add("missing_parent", f"{key} {record.code} names itself as its parent", code=record.code, row=record.row)
            continue
        parent_level = known_level(parent)
        if parent not in first and parent not in existing:
            out.add(
                "missing_parent",
                f"{key} {record.code}: parent {parent} is neither in the file nor in the database",
                code=record.code,
                row=record.row,
            )
            continue
        if parent_level is not None and parent_level not in level.parents:
            allowed = ", ".join(level.parents) or "none (it is a root level)"
            out.add(
                "wrong_parent_level",
                f"{key} {record.code}: parent {parent} is a {parent_level}; a {key}'s parent must be: {allowed}",
                code=record.code,
                row=record.row,
            )
        if level.prefix_of_parent and record.code[: len(parent)] != parent:
            out.add(
                "prefix_mismatch",
                f"{key} {record.code} does not start with its parent's code {parent} "
                f"(its first {len(parent)} characters are {record.code[: len(parent)]})",
                code=record.code,
                row=record.row,
            )

    # -- geometry against parent and siblings --------------------------------------------------------
    units: dict[str, _Unit] = {}
    for code, unit in existing.items():
        if code in first:
            continue  # the file supersedes (replace) or the import is rejected anyway
        geom = unit.geometry
        ok = geom is not None and not geom.is_empty and geom.geom_type in ("Polygon", "MultiPolygon") and geom.is_valid
        units[code] = _Unit(code, unit.level, unit.parent_code, geom if ok else None)
    for code, record in first.items():
        units[code] = _Unit(code, level_of.get(code), record.parent_code, usable.get(code), record=record)
    _geometry_checks(units, levels, out, tolerance_m2=tolerance_m2)

    counts: dict[str, int] = defaultdict(int)
    for record in records:
        key = level_of.get(record.code) if first.get(record.code) is record else _resolved(record, lookup)
        counts[key or "unknown"] += 1
    ordered = {lv.key: counts[lv.key] for lv in levels.ordered if counts.get(lv.key)}
    if counts.get("unknown"):
        ordered["unknown"] = counts["unknown"]
    return ValidationReport(issues=out.issues, counts=ordered)


def _resolved(record: UnitRecord, lookup: dict[str, str]) -> str | None:
    return lookup.get(str(record.level).strip().lower()) if record.level else None


def _lengths(levels: Levels) -> str:
    by_length: dict[int, list[str]] = defaultdict(list)
    for level in levels.ordered:
        if level.locate:
            by_length[level.code_length].append(level.key)
    return "; ".join(f"{n}: {'/'.join(keys)}" for n, keys in sorted(by_length.items()))


def _parent_from_prefix(code: str, level: Level, levels: Levels, known_level) -> str | None:
    """The parent implied by the code prefix, when that unit is known with an allowed level."""
    if not level.prefix_of_parent:
        return None
    for parent_key in sorted(level.parents, key=lambda k: -levels.get(k).code_length):
        length = levels.get(parent_key).code_length
        if length >= len(code):
            continue
        prefix = code[:length]
        if known_level(prefix) == parent_key:
            return prefix
    return None


def _check_geometry(record: UnitRecord, label: str, out: _Collector, *, geometry_optional: bool = False) -> BaseGeometry | None:
    """Report geometry problems; return the geometry when it is usable for the spatial checks."""
    code = record.code or None
    problems = list(dict.fromkeys(record.problems or []))
    for problem in problems:
        check = "unclosed_ring" if problem.lower().startswith("unclosed ring") else "invalid_geometry"
        out.add(check, f"unit {label}: {problem}", code=code, row=record.row)
    geom = record.geometry
    if geom is None or geom.is_empty:
        if not problems and not geometry_optional:
            out.add("empty_geometry", f"unit {label} has no geometry", code=code, row=record.row)
        return None
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        out.add(
            "not_polygonal",
            f"unit {label} has a {geom.geom_type} geometry; units must be Polygon or MultiPolygon",
            code=code,
            row=record.row,
        )
        return None
    if problems:
        return None  # e.g. an unclosed ring GDAL or shapely closed for us: reported, not trusted
    reason = shapely.is_valid_reason(geom)
    if reason != "Valid Geometry":
        out.add("invalid_geometry", f"unit {label}: invalid geometry: {_describe_reason(reason)}", code=code, row=record.row)
        return None
    return geom


def _describe_reason(reason: str) -> str:
    match = _REASON_AT.match(reason or "")
    if not match:
        return reason
    x, y = float(match["x"]), float(match["y"])
    return f"{match['reason']} at lon {x:.7f}, lat {y:.7f}"


def _geometry_checks(units: dict[str, _Unit], levels: Levels, out: _Collector, *, tolerance_m2: float) -> None:
    children: dict[str, list[str]] = defaultdict(list)
    for unit in units.values():
        if unit.parent_code and unit.parent_code in units:
            children[unit.parent_code].append(unit.code)
    # Parents whose family this import touches: parents of file units, and file units with children.
    relevant = {u.parent_code for u in units.values() if u.in_file and u.parent_code in units}
    relevant |= {u.code for u in units.values() if u.in_file and children.get(u.code)}
    if not relevant:
        return

    # Metric geometries of every unit involved (one transformation).
    involved = set(relevant)
    for parent in relevant:
        involved.update(children[parent])
    needed = [units[c] for c in sorted(involved) if units[c].geometry is not None]
    plane = LocalPlane.around(u.geometry for u in needed) if needed else None
    for unit in needed:
        unit.metric = plane.forward(unit.geometry)

    def describe(unit: _Unit) -> str:
        return f"{unit.level or 'unit'} {unit.code}"

    # -- outside the parent (vectorised) ----------------------------------------------------------------
    pairs = [
        (units[c], units[p])
        for p in sorted(relevant)
        for c in children[p]
        if units[p].metric is not None and units[c].metric is not None and (units[c].in_file or units[p].in_file)
    ]
    if pairs:
        child_arr = np.array([c.metric for c, _ in pairs], dtype=object)
        parent_arr = np.array([p.metric for _, p in pairs], dtype=object)
        shapely.prepare(parent_arr)
        inside = shapely.contains(parent_arr, child_arr)
        todo = np.flatnonzero(~inside)
        if todo.size:
            areas = shapely.area(shapely.difference(child_arr[todo], parent_arr[todo]))
            for index, area in zip(todo, areas):
                child, parent = pairs[index]
                if area > tolerance_m2:
                    out.add(
                        "outside_parent",
                        f"{describe(child)} lies {area:.1f} m² outside its {describe(parent)}",
                        code=child.code,
                        row=child.row,
                    )

    # -- sibling groups: (parent, child level) ------------------------------------------------------------
    groups: dict[tuple[str, str | None], list[_Unit]] = defaultdict(list)
    for p in sorted(relevant):
        for c in sorted(children[p]):
            groups[(p, units[c].level)].append(units[c])

    # Overlaps: one STRtree over every sibling concerned, pairs filtered to the same group.
    members = [(key, u) for key, group in groups.items() for u in group if u.metric is not None]
    if len(members) > 1:
        geoms = np.array([u.metric for _, u in members], dtype=object)
        group_ids = {key: i for i, key in enumerate(groups)}
        gid = np.array([group_ids[key] for key, _ in members])
        in_file = np.array([u.in_file for _, u in members])
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        keep = (left < right) & (gid[left] == gid[right]) & (in_file[left] | in_file[right])
        left, right = left[keep], right[keep]
        if left.size:
            areas = shapely.area(shapely.intersection(geoms[left], geoms[right]))
            for i, j, area in zip(left, right, areas):
                if area > tolerance_m2:
                    a, b = members[i][1], members[j][1]
                    a, b = (a, b) if a.in_file else (b, a)
                    parent = units[members[i][0][0]]
                    out.add(
                        "sibling_overlap",
                        f"{describe(a)} overlaps {describe(b)} by {area:.1f} m² (both in {describe(parent)})",
                        code=a.code,
                        row=a.row,
                    )

    # Gaps: parent minus the union of its children of one territorial level.
    for (p, child_level), group in groups.items():
        parent = units[p]
        if parent.metric is None or not group:
            continue
        if child_level is not None and child_level in levels.by_key and not levels.get(child_level).locate:
            continue  # professional grids need not tile their parent
        if not (parent.in_file or any(u.in_file for u in group)):
            continue
        shapes = [u.metric for u in group if u.metric is not None]
        if not shapes:
            continue
        gap = parent.metric.difference(shapely.union_all(shapes))
        area = gap.area
        if area > tolerance_m2:
            share = 100.0 * area / parent.metric.area if parent.metric.area else 0.0
            where = ""
            if not gap.is_empty:
                point = plane.inverse(gap.representative_point())
                where = f" (e.g. around lon {point.x:.6f}, lat {point.y:.6f})"
            out.add(
                "sibling_gap",
                f"{describe(parent)}: {area:.1f} m² ({share:.2f}%) is covered by none of its "
                f"{len(group)} {child_level or 'child'} unit(s){where}",
                code=parent.code,
                row=parent.row,
            )

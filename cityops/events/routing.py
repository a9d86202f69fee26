"""Where a case goes (事件定位与分拨): a point, address, building or unit code located to its unit chain, and the
routing rules (departments' matter classes and areas, 属地兜底 fallback). Also the write section every changing
route opens (``write_section``), with a Locator snapshot taken before the write lock. No HTTP here."""

from __future__ import annotations

import math
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cityops.core.db import begin_write
from cityops.core.errors import InvalidInput, OutsideJurisdiction
from cityops.events import catalogue
from cityops.identity.scope import Scope
from cityops.org.levels import active_levels
from cityops.org.locate import Located, LocatorCache
from cityops.org.models import Department, Place, Unit


ALL = Scope(all_units=True)


SOURCES = catalogue.SOURCES


def utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def write_section(session: Session, locator: LocatorCache | None = None):
    """A route's write transaction, begun as the embedded store's writer before it reads what it changes
    (``core.db.begin_write``); the caller commits inside the block. Yields a Locator snapshot
    (``FixedLocator``) when ``locator`` is given."""
    # The read transaction ends first (its connection goes back to the pool), then the Locator snapshot is
    # taken: a LocatorCache refresh opens its own connection, and a request holding one while asking for
    # another can exhaust the pool under load.
    session.commit()
    fixed = FixedLocator(locator) if locator is not None else None
    begin_write(session)
    try:
        yield fixed
    except BaseException:
        session.rollback()
        raise


class FixedLocator:
    """A Locator snapshot taken before the write lock, so locating never needs a second connection inside it."""

    def __init__(self, cache: LocatorCache):
        self._locator = cache.get()

    def get(self):
        return self._locator

_LOCATORS: dict[str, LocatorCache] = {}


def use_locator(engine, locator: LocatorCache) -> None:
    """Register the app's LocatorCache for ``engine`` (so hooks called without one reuse it)."""
    _LOCATORS[str(engine.url)] = locator


def _locator(session: Session) -> LocatorCache:
    engine = session.get_bind()
    key = str(engine.url)
    if key not in _LOCATORS:
        _LOCATORS[key] = LocatorCache(sessionmaker(bind=engine), active_levels())
    return _LOCATORS[key]


@dataclass
class Where:
    lon: float
    lat: float
    located: Located
    how: str


def locate(session: Session, *, lon: float | None = None, lat: float | None = None, address: str | None = None,
           address_id: str | None = None, unit_code: str | None = None, locator: LocatorCache | None = None) -> Where:
    """Point, address (a named place or a building address), building code or unit code → unit chain.
    Outside the district → OutsideJurisdiction; nothing usable → InvalidInput."""
    locator = locator or _locator(session)
    how = "point"
    if lon is None or lat is None:
        if lon is not None or lat is not None:
            raise InvalidInput("give both lon and lat, or neither", {"field": "lon/lat"})
        point = None
        if address_id:
            from cityops.housing.models import Building

            b = session.scalar(select(Building).where(Building.code == address_id))
            if b is None:
                raise InvalidInput(f"unknown address_id {address_id!r}", {"field": "address_id"})
            point, how = b.footprint.representative_point(), "address_id"
        elif address:
            place = None
            for p in session.scalars(select(Place).order_by(func.length(Place.name).desc())):
                if p.name and p.name in address:
                    place = p
                    break
            if place is None:
                from cityops.housing.models import Building

                b = session.scalar(select(Building).where(Building.address == address.strip()).limit(1))
                if b is None:
                    raise InvalidInput(f"address {address!r} names no known place or building; send lon/lat",
                                       {"field": "address"})
                point, how = b.footprint.representative_point(), "address"
            else:
                point, how = place.geom, "address"
        elif unit_code:
            unit = session.scalar(select(Unit).where(Unit.code == unit_code))
            if unit is None or unit.geom is None:
                raise InvalidInput(f"unknown unit code {unit_code!r}", {"field": "unit_code"})
            point, how = unit.geom.representative_point(), "unit_code"
        else:
            raise InvalidInput("a location is required: lon/lat, address, address_id or unit_code", {"field": "location"})
        lon, lat = point.x, point.y
    lon, lat = _point(lon, lat)
    return _where(lon, lat, locator.get().locate(lon, lat), how)


def locate_points(session: Session, points: list[tuple], locator: LocatorCache | None = None) -> list[Where | Exception]:
    """``locate`` of many lon/lat points at once: one vectorised Locator pass (STRtree query and prepared
    polygons over the whole array) instead of a Shapely point and a tree query per report. Per point its
    ``Where``, or the error ``locate`` would have raised for it."""
    out: list[Where | Exception] = [None] * len(points)
    good, lons, lats = [], [], []
    for i, (lon, lat) in enumerate(points):
        try:
            lon, lat = _point(lon, lat)
        except InvalidInput as exc:
            out[i] = exc
            continue
        good.append(i)
        lons.append(lon)
        lats.append(lat)
    if good:
        found = (locator or _locator(session)).get().locate_many(lons, lats)
        for i, lon, lat, located in zip(good, lons, lats, found, strict=True):
            try:
                out[i] = _where(lon, lat, located, "point")
            except OutsideJurisdiction as exc:
                out[i] = exc
    return out


def _point(lon, lat) -> tuple[float, float]:
    try:
        lon, lat = float(lon), float(lat)
    except (TypeError, ValueError):
        raise InvalidInput("lon/lat must be numbers", {"field": "lon/lat"}) from None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput(f"lon/lat out of range: {lon}, {lat}", {"field": "lon/lat"})
    return lon, lat


def _where(lon: float, lat: float, located: Located | None, how: str) -> Where:
    if located is None:
        raise OutsideJurisdiction(f"the point {lon:.6f}, {lat:.6f} lies outside the district's jurisdiction",
                                  {"field": "lon/lat", "lon": lon, "lat": lat})
    return Where(lon, lat, located, how)

#: Per engine (not its URL rendered as text: per case that was a tenth of drafting a located report).
_DEPTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: Routes memoised per snapshot of the departments are bounded (then started afresh).
_ROUTE_MEMO_MAX = 20_000


def _snapshot(session: Session) -> tuple[list[tuple[str, str, str, list, list]], dict]:
    """(code, name, unit_path, matter_classes, covered_units) of every department, cached for 2 s, with the routes
    worked out from this snapshot so far."""
    key = session.get_bind().engine
    hit = _DEPTS.get(key)
    if hit and time.monotonic() - hit[0] < 2.0:
        return hit[1], hit[2]
    rows = [(d.code, d.name, d.unit_path, list(d.matter_classes or []), list(d.covered_units or []))
            for d in session.scalars(select(Department))]
    memo = hit[2] if hit and hit[1] == rows else {}  # the rules unchanged: the routes worked out stand
    _DEPTS[key] = (time.monotonic(), rows, memo)
    return rows, memo


def route(session: Session, cls: catalogue.CaseClass, path: str) -> dict:
    """Routing rules as data: each department's ``matter_classes`` ("kind:major" or "kind:code") and its
    area (owning unit, or ``covered_units``). The most specific class match wins, then the most local
    department; a tie goes to the dispatch queue; no match falls back to the territorial unit (属地兜底).

    The answer depends only on the class, the unit path and the rules, so it is worked out once per class and
    unit path while the departments' rules stay the same (re-read every 2 s): a group of the case writer, or a batch, repeats them,
    and scanning every department's classes for each case was the largest part of drafting a located report."""
    rows, memo = _snapshot(session)
    settings, levels = catalogue.settings(), active_levels()
    key = (cls.kind, cls.code, path, id(settings), id(levels))
    hit = memo.get(key)
    if hit is None:
        if len(memo) >= _ROUTE_MEMO_MAX:
            memo.clear()
        hit = memo[key] = _route(rows, cls, path, settings, levels)
    # A copy: a draft's route is its own (stored with the case and in its first log entry).
    return {**hit, "candidates": list(hit["candidates"])}


def _route(departments: list, cls: catalogue.CaseClass, path: str, settings, levels) -> dict:
    codes = [c for c in path.strip("/").split("/") if c]
    best: list[tuple[tuple[int, int], str, str]] = []
    for code, name, unit_path, classes, covered in departments:
        if covered:
            if not any(c in codes for c in covered):
                continue
        elif not path.startswith(unit_path):
            continue
        spec = 0
        for entry in classes:
            kind, _, value = entry.partition(":")
            if kind != cls.kind:
                continue
            if value == cls.code:
                spec = max(spec, 2)
            elif value == cls.code[:2]:
                spec = max(spec, 1)
        if spec:
            best.append(((spec, unit_path.count("/")), code, name))
    if best:
        top = max(b[0] for b in best)
        winners = sorted((c, n) for s, c, n in best if s == top)
        if len(winners) == 1:
            return {"mode": "auto" if settings.auto_dispatch else "queue", "department_code": winners[0][0],
                    "department_name": winners[0][1], "unit_code": None, "candidates": [winners[0][0]]}
        return {"mode": "queue", "department_code": None, "unit_code": None,
                "candidates": [c for c, _ in winners], "reason": "several departments answer equally"}
    target = levels.code_length(settings.fallback_level if settings.fallback_level in levels.by_key else "township")
    fallback = next((c for c in codes if len(c) == target), codes[min(1, len(codes) - 1)])
    return {"mode": "fallback", "department_code": None, "unit_code": fallback, "candidates": [],
            "reason": "属地兜底: no department answers for this class here"}

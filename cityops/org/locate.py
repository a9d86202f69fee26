"""Locate (定位): point → district/township/village/grid chain, in process, from an STRtree.

Points on a boundary shared by two units resolve to the smaller code, so the answer is deterministic.
A point inside the district but in no grid resolves to the finest unit that contains it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import shapely
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cityops.org.levels import Levels
from cityops.org.models import Unit


#: Tolerance of Locator.area, degrees (1e-7° ≈ 1 cm): floating-point noise along shared boundaries.
AREA_TOLERANCE_DEG = 1e-7


@dataclass(frozen=True)
class ChainLink:
    code: str
    name: str
    level: str


@dataclass(frozen=True)
class Located:
    chain: tuple[ChainLink, ...]  # coarse → fine, e.g. district, township, village, grid

    @property
    def unit(self) -> ChainLink:
        return self.chain[-1]

    @property
    def path(self) -> str:
        return "/" + "/".join(link.code for link in self.chain) + "/"

    def to_dict(self) -> dict:
        data = {"code": self.unit.code, "level": self.unit.level, "path": self.path,
                "chain": [link.__dict__ for link in self.chain]}
        for link in self.chain:
            data[link.level] = {"code": link.code, "name": link.name}
        return data


class Locator:
    """Immutable index over one snapshot of the unit table.

    Polygons are prepared once (GEOS prepared geometry) and tested against the tree's bounding-box
    candidates: STRtree's own predicate path would walk every vertex of an unprepared polygon per point,
    which is slow for big outlines such as the district's.
    """

    def __init__(self, units: list[tuple[str, str, str, str, object]], levels: Levels):
        """``units``: (code, name, level, path, geometry) for every unit."""
        by_code = {code: (name, level) for code, name, level, _path, _g in units}
        self._tiers: list[tuple[shapely.STRtree, np.ndarray, list[Located]]] = []
        self._geometry_by_path = {path: geom for _c, _n, _l, path, geom in units if geom is not None}
        self._areas: dict[tuple[str, ...], object] = {}
        # Finest tier first: grids, then villages, townships, districts.
        for level_key in reversed(levels.territorial_chain):
            rows = sorted((u for u in units if u[2] == level_key and u[4] is not None), key=lambda u: u[0])
            if not rows:
                continue
            located = []
            for code, _name, _level, path, _geom in rows:
                codes = [c for c in path.strip("/").split("/") if c]
                located.append(Located(tuple(ChainLink(c, *by_code[c]) for c in codes if c in by_code)))
            geoms = np.array([u[4] for u in rows], dtype=object)
            shapely.prepare(geoms)
            self._tiers.append((shapely.STRtree(geoms), geoms, located))
        self.size = sum(len(t[2]) for t in self._tiers)

    @staticmethod
    def _hits(tree: shapely.STRtree, geoms: np.ndarray, points) -> tuple[np.ndarray, np.ndarray]:
        """(point index, unit index) pairs where the unit's polygon intersects the point."""
        src, hit = tree.query(points)
        if not len(src):
            return src, hit
        keep = shapely.intersects(geoms[hit], points[src])  # prepared polygon first: fast path
        return src[keep], hit[keep]

    def locate(self, lon: float, lat: float) -> Located | None:
        point = shapely.Point(lon, lat)
        for tree, geoms, located in self._tiers:
            # Usually one to three candidates: a plain loop beats building arrays for them. Sorted, so the
            # first polygon that holds the point has the smallest code.
            for index in sorted(tree.query(point).tolist()):
                if geoms[index].intersects(point):
                    return located[index]
        return None

    def area(self, paths: tuple[str, ...]):
        """The land of the units at ``paths`` (a scope's roots) as one prepared geometry, grown by about a
        centimetre so a geometry drawn along a scope boundary counts as inside; None when none has a
        geometry. Kept per set of paths for the life of this snapshot."""
        key = tuple(sorted(paths))
        if key not in self._areas:
            parts = [self._geometry_by_path[p] for p in key if p in self._geometry_by_path]
            area = shapely.union_all(parts).buffer(AREA_TOLERANCE_DEG) if parts else None
            if area is not None:
                shapely.prepare(area)
            self._areas[key] = area
        return self._areas[key]

    def locate_many(self, lon: np.ndarray, lat: np.ndarray) -> list[Located | None]:
        points = shapely.points(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
        result: list[Located | None] = [None] * len(points)
        pending = np.arange(len(points))
        tiers = self._tiers
        if len(tiers) > 2:
            # Grids first; then the jurisdiction (coarsest tier), which settles every point outside it in one
            # pass; then the tiers between, finest first, refine the points that fell in no grid.
            tiers = [tiers[0], tiers[-1], *tiers[1:-1]]
        for position, (tree, geoms, located) in enumerate(tiers):
            if not len(pending):
                break
            src, hit = self._hits(tree, geoms, points[pending])
            # Smallest code (= smallest index) per point: sort by (point, index), keep the first.
            order = np.lexsort((hit, src))
            src, hit = src[order], hit[order]
            first = np.ones(len(src), dtype=bool)
            first[1:] = src[1:] != src[:-1]
            for s, h in zip(pending[src[first]], hit[first], strict=True):
                result[s] = located[h]
            found = np.zeros(len(pending), dtype=bool)
            found[src] = True
            jurisdiction_pass = position == 1 and len(tiers) > 2
            # After the jurisdiction pass keep the points inside it (to refine), else the ones still unplaced.
            pending = pending[found] if jurisdiction_pass else pending[~found]
        return result


class LocatorCache:
    """Keeps a Locator current: rebuilt when the unit table's fingerprint changes (checked at most every
    ``check_seconds``, so other processes' writes show up too) or when this process invalidates it."""

    def __init__(self, factory: sessionmaker[Session], levels: Levels, check_seconds: float = 2.0):
        self._factory = factory
        self._levels = levels
        self._check_seconds = check_seconds
        self._locator: Locator | None = None
        self._fingerprint = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._checked_at = 0.0
        self._fingerprint = None

    def get(self) -> Locator:
        now = time.monotonic()
        if self._locator is not None and now - self._checked_at < self._check_seconds:
            return self._locator
        with self._lock:
            with self._factory() as session:
                fingerprint = tuple(session.execute(select(func.count(Unit.id), func.max(Unit.updated_at), func.max(Unit.id))).one())
                if self._locator is None or fingerprint != self._fingerprint:
                    rows = session.execute(select(Unit.code, Unit.name, Unit.level, Unit.path, Unit.geom)).all()
                    self._locator = Locator([tuple(r) for r in rows], self._levels)
                    self._fingerprint = fingerprint
            self._checked_at = time.monotonic()
            return self._locator

"""OGC API – Features over the layer catalogue: parameter parsing, CRS handling with the authority axis
order, exact bbox and CQL2 matching, keyset paging. No HTTP here; ``routes`` builds the documents.

Feature geometry is stored in the canonical CRS (EPSG:4490, lon/lat). Part 2 CRSs are served as:

* CRS84 (default): lon, lat;
* EPSG:4326 and EPSG:4490: **lat, lon** (the EPSG axis order), both in ``crs`` output and ``bbox-crs`` input;
* EPSG:3857: easting, northing in metres;
* the district's projected CRS (``settings.metric_crs``, EPSG:4545 = CGCS2000 3-degree Gauss–Krüger CM 108°E
  by default): **northing (X), easting (Y)** in metres, the EPSG axis order of every CGCS2000 Gauss–Krüger
  CRS (taken from ``pyproj.CRS.axis_info``, not assumed).

A bbox matches the features whose geometry intersects it, tested exactly with GEOS in SQL (PostGIS
``ST_Intersects``; on SQLite a Shapely function registered on the connection) after a spatial-index
prefilter (R*Tree on SQLite, ``&&`` on PostGIS), so both backends give the same answer. A box
given in a projected CRS is a rectangle there; it is densified and converted to the canonical CRS, and
features are tested against that (curved) outline, not against its lon/lat envelope.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime

import numpy as np
import pyproj
import shapely
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.base import featurestore
from cityops.base.models import Layer
from cityops.core.crs import PROJECTED_SEGMENT_M, from_canonical_many, parse_crs, to_canonical_xy
from cityops.core.errors import CityOpsError, UnknownCRS
from cityops.core.spatial import bbox_prefilter
from cityops.ogc.filtering import Compiled, register_sqlite, spatial_predicate

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{}"
STORAGE_CRS = EPSG_URI.format(4490)


@dataclass(frozen=True)
class ServedCRS:
    uri: str
    key: str  # cityops.core.crs key
    swap: bool  # the authority's first axis points north (lat, lon or northing, easting)
    geographic: bool


def _epsg(code: int) -> ServedCRS:
    crs = pyproj.CRS.from_epsg(code)
    return ServedCRS(EPSG_URI.format(code), f"EPSG:{code}", crs.axis_info[0].direction == "north", crs.is_geographic)


#: The fixed part of the served CRSs; the deployment's projected CRS (settings.metric_crs) is added to it.
BASE_CRS = ("OGC:CRS84", "EPSG:4326", "EPSG:4490", "EPSG:3857")


@lru_cache(maxsize=8)
def served_table(metric_crs: str = "EPSG:4545") -> dict[str, ServedCRS]:
    """Served CRSs by cityops.core.crs key: CRS84, 4326, 4490, 3857 and the district's projected CRS, each
    with the axis order its authority defines (read from pyproj, not assumed)."""
    table = {"OGC:CRS84": ServedCRS(CRS84, "OGC:CRS84", False, True)}
    for code in (4326, 4490, 3857):
        table[f"EPSG:{code}"] = _epsg(code)
    metric = parse_crs(metric_crs)
    if metric.epsg is not None and metric.key not in table:
        table[metric.key] = _epsg(metric.epsg)
    return table


def crs_uris(metric_crs: str = "EPSG:4545") -> list[str]:
    return [c.uri for c in served_table(metric_crs).values()]


SERVED_CRS = served_table()
CRS_URIS = crs_uris()

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000
#: Query parameters of /items (and, except paging and bbox, of /items/{featureId}); anything else → 400.
ITEMS_PARAMS = ("limit", "offset", "cursor", "bbox", "bbox-crs", "crs", "datetime", "filter", "filter-lang",
                "filter-crs", "f")
ITEM_PARAMS = ("crs", "f")
FORMATS = ("json", "geojson")


class BadRequest(CityOpsError):
    """An invalid or unknown query parameter (HTTP 400, as OGC API – Features requires)."""

    status_code = 400
    code = "InvalidParameterValue"


def check_params(params: Mapping, allowed: tuple[str, ...], multi: list[tuple[str, str]]) -> None:
    unknown = sorted({k for k in params if k not in allowed})
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)}; this operation accepts "
                         f"{', '.join(allowed)}")
    repeated = sorted(k for k, n in Counter(k for k, _ in multi).items() if n > 1)
    if repeated:
        raise BadRequest(f"query parameter(s) given more than once: {', '.join(repeated)}")
    fmt = params.get("f")
    if fmt is not None and fmt not in FORMATS:
        raise BadRequest(f"f={fmt!r} is not supported; use f=json (GeoJSON)")


def served_crs(value: str | None, name: str = "crs", metric_crs: str = "EPSG:4545") -> ServedCRS:
    """A ``crs``/``bbox-crs``/``filter-crs`` value (an OGC URI or URN; default CRS84) → the served CRS, else 400."""
    table = served_table(metric_crs)
    if value is None:
        return table["OGC:CRS84"]
    try:
        ref = parse_crs(value)
    except UnknownCRS:
        ref = None
    if ref is None or ref.key not in table:
        raise BadRequest(f"{name}={value!r} is not supported; use one of {', '.join(crs_uris(metric_crs))}")
    return table[ref.key]


def parse_limit(value: str | None) -> int:
    """Default 10, maximum 10000 (documented in the OpenAPI document); anything outside 1..10000 → 400."""
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise BadRequest(f"limit={value!r} must be an integer from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit={value!r} must be an integer from 1 to {MAX_LIMIT} (the maximum page size)")
    return limit


_CURSOR = re.compile(r"^([ab])(\d{1,18})$")


def parse_cursor(value: str | None) -> tuple[str, int] | None:
    """Keyset cursor of the paging links: ``a<id>`` (rows after id) or ``b<id>`` (rows before id)."""
    if value is None:
        return None
    found = _CURSOR.match(value)
    if not found:
        raise BadRequest(f"cursor={value!r} is not a cursor from a next/prev link")
    return found.group(1), int(found.group(2))


def parse_offset(value: str | None) -> int:
    if value is None:
        return 0
    try:
        offset = int(value)
    except ValueError:
        raise BadRequest(f"offset={value!r} must be a non-negative integer") from None
    if offset < 0:
        raise BadRequest(f"offset={value!r} must be a non-negative integer")
    return offset


_DT = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?$", re.I)


def check_datetime(value: str | None) -> None:
    """Validate ``datetime`` (RFC 3339 instant or interval with ``..``). Layers carry no temporal property
    (collections declare an unbounded temporal extent), so a valid value selects every feature."""
    if value is None:
        return
    parts = value.split("/")
    if len(parts) > 2 or (len(parts) == 2 and parts == ["..", ".."]) or not all(parts):
        raise BadRequest(f"datetime={value!r} must be an RFC 3339 instant or an interval start/end ('..' for open)")
    for part in parts:
        if part == ".." and len(parts) == 2:
            continue
        if not _DT.match(part):
            raise BadRequest(f"datetime={value!r} must be an RFC 3339 instant or an interval start/end ('..' for open)")
        try:
            datetime.fromisoformat(part.upper().replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"datetime={value!r}: {part!r} is not a valid date-time") from None


def parse_bbox(value: str | None, bbox_crs: ServedCRS) -> shapely.Geometry | None:
    """``bbox`` (4 or 6 numbers, in ``bbox_crs`` axis order) → the area in the canonical CRS (lon/lat)."""
    if value is None:
        return None
    try:
        numbers = [float(p) for p in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (4, 6) or not all(math.isfinite(n) for n in numbers):
        raise BadRequest(f"bbox={value!r} must be 4 (or 6) comma-separated numbers: lower corner, upper corner")
    if len(numbers) == 6:  # 3-D box: x/y of the lower and upper corners
        numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
    a1, a2, b1, b2 = numbers
    if bbox_crs.swap:
        minx, miny, maxx, maxy = a2, a1, b2, b1
    else:
        minx, miny, maxx, maxy = a1, a2, b1, b2
    if minx > maxx or miny > maxy:
        raise BadRequest(f"bbox={value!r}: the lower corner must not exceed the upper corner "
                         "(boxes crossing the antimeridian are not supported)")
    if bbox_crs.geographic:
        if not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90):
            raise BadRequest(f"bbox={value!r} is outside the valid longitude/latitude range of {bbox_crs.uri}")
        return shapely.box(minx, miny, maxx, maxy)
    box = shapely.segmentize(shapely.box(minx, miny, maxx, maxy), PROJECTED_SEGMENT_M) \
        if max(maxx - minx, maxy - miny) < 2_000_000 else shapely.box(minx, miny, maxx, maxy)
    try:
        coords = shapely.get_coordinates(box)
        lon, lat = to_canonical_xy(coords[:, 0], coords[:, 1], bbox_crs.key)
    except CityOpsError as exc:
        raise BadRequest(f"bbox={value!r} cannot be converted from {bbox_crs.uri}: {exc.message}") from None
    return shapely.Polygon(np.column_stack([lon, lat]))


def to_output(geoms: np.ndarray, crs: ServedCRS) -> np.ndarray:
    """Canonical geometries → ``crs`` in the authority's axis order."""
    out = from_canonical_many(geoms, crs.key)
    if crs.swap:
        out = shapely.transform(out, lambda c: c[:, ::-1])
    return out


@dataclass
class Page:
    number_matched: int
    ids: list[int]
    fids: list[str]
    properties: list[dict]
    geometries: np.ndarray  # canonical
    more_after: bool
    more_before: bool


def matching(conn, layer: Layer, area: shapely.Geometry | None, compiled: Compiled | None):
    """(current table, a function restricting any SELECT on it to the matching rows) — the exact predicates
    evaluated by GEOS on both backends, after the spatial index has narrowed the candidates."""
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    dialect = conn.dialect.name
    register_sqlite(conn)
    conditions, envelopes = [], []
    if area is not None:
        conditions.append(spatial_predicate(dialect, "s_intersects", current.c.geom, area))
        envelopes.append(area.bounds)
    if compiled is not None:
        conditions.append(compiled.where)
        envelopes += compiled.envelopes

    def restrict(stmt):
        stmt = stmt.where(*conditions) if conditions else stmt
        for env in envelopes:
            stmt = bbox_prefilter(stmt, dialect, current.name, current.c.id, current.c.geom, env)
        return stmt

    return current, restrict


def items(session: Session, layer: Layer, *, area: shapely.Geometry | None, limit: int, offset: int = 0,
          cursor: tuple[str, int] | None = None, compiled: Compiled | None = None) -> Page:
    """One page of current features in id order and the exact number matching.

    Paging is keyset on the row id (``cursor``: after/before an id), so a deep page costs what the first
    does; ``offset`` is kept for clients that send it. One more row than asked is read to know whether a
    next (or previous) page exists."""
    conn = session.connection()
    current, restrict = matching(conn, layer, area, compiled)
    if area is not None or compiled is not None:
        matched = conn.execute(restrict(select(func.count()).select_from(current))).scalar()
    else:
        matched = conn.execute(select(func.count()).select_from(current)).scalar()
    rows_stmt = restrict(select(current.c.id, current.c.fid, current.c.properties, current.c.geom))
    more_before = offset > 0
    if cursor is not None and cursor[0] == "b":
        rows = conn.execute(rows_stmt.where(current.c.id < cursor[1]).order_by(current.c.id.desc())
                            .limit(limit + 1)).all()
        more_before, more_after = len(rows) > limit, True
        rows = rows[:limit][::-1]
    else:
        page = rows_stmt.order_by(current.c.id)
        if cursor is not None:
            page = page.where(current.c.id > cursor[1])
            more_before = True
        rows = conn.execute(page.limit(limit + 1).offset(offset)).all()
        more_after = len(rows) > limit
        rows = rows[:limit]
    return Page(matched, [r.id for r in rows], [r.fid if r.fid is not None else str(r.id) for r in rows],
                [r.properties for r in rows], np.array([r.geom for r in rows], dtype=object), more_after, more_before)


@dataclass
class Found:
    id: int
    fid: str
    properties: dict
    geom: object
    v_from: int

    @property
    def etag(self) -> str:
        """Changes whenever the feature does: each edit gives it the layer's next version."""
        return f'"{self.id}-{self.v_from}"'


def feature(session: Session, layer: Layer, feature_id: str) -> Found | None:
    """The current feature whose id (source fid, else row id) is ``feature_id``."""
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    conn = session.connection()
    cols = (current.c.id, current.c.fid, current.c.properties, current.c.geom, current.c.v_from)
    row = conn.execute(select(*cols).where(current.c.fid == feature_id).order_by(current.c.id).limit(1)).first()
    if row is None and feature_id.isdigit() and len(feature_id) < 19:
        row = conn.execute(select(*cols).where(current.c.fid.is_(None), current.c.id == int(feature_id))).first()
    if row is None:
        return None
    return Found(row.id, row.fid if row.fid is not None else str(row.id), row.properties, row.geom, row.v_from)

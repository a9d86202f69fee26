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

import json
import math
import re
import zlib
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime

import numpy as np
import pyproj
import shapely
from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from cityops.base import featurestore
from cityops.base.models import Layer
from cityops.core.crs import PROJECTED_SEGMENT_M, from_canonical_many, parse_crs, to_canonical_xy
from cityops.core.errors import CityOpsError, InvalidInput, UnknownCRS
from cityops.core.geometry import from_gpkg_many
from cityops.core.params import INT64_MIN, parse_int
from cityops.core.storage import Storage, storage_of
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
        return parse_int(value, "offset", minimum=0)
    except InvalidInput as exc:
        raise BadRequest(exc.message) from None


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
    #: Each feature's properties: JSON text straight from the database (written into the response as it is).
    properties: list[str]
    geometries: np.ndarray  # canonical Shapely geometries, or None where ``geojson`` was written in SQL
    more_after: bool
    more_before: bool
    #: GeoJSON geometry text in CRS84 (lon/lat), written by PostGIS when asked for (``geojson=True``).
    geojson: list[str | None] | None = None


@dataclass
class Source:
    """Where a collection's features are: a table (or derived table) of id, fid, properties (JSON), geom; the
    table and geometry column of its spatial index; the rows the reader may see (None: all)."""

    table: object
    index_table: str
    index_geom: str = "geom"
    visible: object = None


def source(layer, storage: Storage | str) -> Source:
    """A layer's feature table, or the source another capability declares (``ogc_source``: the buildings)."""
    if hasattr(layer, "ogc_source"):
        return Source(*layer.ogc_source(storage_of(storage)))
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    return Source(current, current.name)


def matching(conn, layer: Layer, area: shapely.Geometry | None, compiled: Compiled | None):
    """(the collection's source, a function restricting any SELECT on its table to the matching rows) — the
    exact predicates evaluated by GEOS on both backends, after the spatial index has narrowed the candidates."""
    storage = storage_of(conn)
    src = source(layer, storage)
    current = src.table
    register_sqlite(conn)
    conditions, envelopes = ([src.visible] if src.visible is not None else []), []
    if area is not None:
        conditions.append(spatial_predicate(storage, "s_intersects", current.c.geom, area))
        envelopes.append(area.bounds)
    if compiled is not None:
        conditions.append(compiled.where)
        envelopes += compiled.envelopes

    def restrict(stmt):
        stmt = stmt.where(*conditions) if conditions else stmt
        for env in envelopes:
            stmt = storage.bbox_prefilter(stmt, src.index_table, current.c.id, current.c.geom, env, src.index_geom)
        return stmt

    return src, restrict


#: Above this many R*Tree candidates a SQLite bbox query is counted in SQL instead of in one vectorised pass
#: (which holds the candidates' ids and boxes in memory).
SQLITE_VECTOR_MAX = 250_000


def _raw_json(column, storage: Storage):
    # JSON text as stored (jsonb's text form on PostgreSQL), never decoded into dicts: it goes into the
    # response as it is.
    return storage.json_text(column)


def _page_of(ids: list[int], limit: int, offset: int, cursor: tuple[str, int] | None):
    """(page ids, more after, more before) of sorted matching ``ids``, as the SQL paging does."""
    if cursor is not None and cursor[0] == "b":
        before = ids[:bisect_left(ids, cursor[1])]
        page = before[-(limit + 1):]
        more_before = len(page) > limit
        return page[-limit:] if page else page, True, more_before
    start = bisect_right(ids, cursor[1]) if cursor is not None else 0
    rest = ids[start + offset:start + offset + limit + 1]
    return rest[:limit], len(rest) > limit, cursor is not None or offset > 0


def _sqlite_bbox_ids(conn, src: Source, area: shapely.Geometry) -> list[int] | None:
    """Sorted ids of the features intersecting ``area`` (SQLite, a bbox alone): the R*Tree gives the
    candidates with their boxes; a candidate whose box lies inside a rectangular area intersects it (its
    R*Tree box is rounded outwards, so inside is certain), the others are tested exactly with GEOS in one
    vectorised call. None when there are too many candidates for one pass."""
    minx, miny, maxx, maxy = area.bounds
    # The driver's own cursor, in the session's transaction: plain tuples straight into NumPy.
    cursor = conn.connection.dbapi_connection.cursor()
    found = cursor.execute(
        f"SELECT id, minx, miny, maxx, maxy FROM rtree_{src.index_table}_{src.index_geom} "
        f"WHERE minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ? LIMIT {SQLITE_VECTOR_MAX + 1}",
        (maxx, minx, maxy, miny)).fetchall()
    if len(found) > SQLITE_VECTOR_MAX:
        return None
    if not found:
        return []
    box = np.array(found, dtype=np.float64)
    ids = box[:, 0].astype(np.int64)
    rectangle = shapely.equals(area, shapely.box(minx, miny, maxx, maxy))
    inside = (box[:, 1] >= minx) & (box[:, 2] >= miny) & (box[:, 3] <= maxx) & (box[:, 4] <= maxy) if rectangle \
        else np.zeros(len(ids), dtype=bool)
    hit = inside.copy()
    check = ids[~inside]
    if len(check):
        blobs: dict[int, bytes] = {}
        for chunk in range(0, len(check), 30_000):  # within SQLite's bound-parameter limit
            part = check[chunk:chunk + 30_000].tolist()
            blobs.update(cursor.execute(
                f"SELECT id, {src.index_geom} FROM {src.index_table} WHERE id IN ({','.join('?' * len(part))})",
                part).fetchall())
        geoms = from_gpkg_many([blobs.get(i) for i in check.tolist()])
        shapely.prepare(area)
        exact = np.zeros(len(check), dtype=bool)
        present = ~shapely.is_missing(geoms)
        exact[present] = shapely.intersects(area, geoms[present])
        hit[~inside] = exact
    return np.sort(ids[hit]).tolist()


def items(session: Session, layer: Layer, *, area: shapely.Geometry | None, limit: int, offset: int = 0,
          cursor: tuple[str, int] | None = None, compiled: Compiled | None = None, geojson: bool = False) -> Page:
    """One page of current features in id order and the exact number matching.

    Paging is keyset on the row id (``cursor``: after/before an id), so a deep page costs what the first
    does; ``offset`` is kept for clients that send it. One more row than asked is read to know whether a
    next (or previous) page exists. ``geojson``: on PostGIS, write the geometry as CRS84 GeoJSON in SQL.

    A filtered query is one statement: the matching ids are found once (a materialised CTE, so the exact
    GEOS predicate runs once per candidate) and give both the count and the page. On SQLite a bbox alone
    is matched in one vectorised pass over the R*Tree candidates instead (see ``_sqlite_bbox_ids``)."""
    conn = session.connection()
    storage = storage_of(conn)
    src, restrict = matching(conn, layer, area, compiled)
    current = src.table
    geojson = geojson and storage.spatial_sql
    # 15 decimals keep every digit of a lon/lat double (PostGIS writes the shortest exact form, as GEOS does);
    # options 0: no "crs" member (CRS84 is GeoJSON's own).
    geom_col = func.ST_AsGeoJSON(current.c.geom, 15, 0).label("g") if geojson else \
        storage.raw_geometry(current.c.geom).label("g")
    cols = (current.c.id, current.c.fid, _raw_json(current.c.properties, storage).label("p"), geom_col)
    backwards = cursor is not None and cursor[0] == "b"

    if storage.rtree_index and area is not None and compiled is None and src.visible is None:
        ids = _sqlite_bbox_ids(conn, src, area)
        if ids is not None:
            page_ids, more_after, more_before = _page_of(ids, limit, offset, cursor)
            rows = conn.execute(select(*cols).where(current.c.id.in_(page_ids)).order_by(current.c.id)).all() \
                if page_ids else []
            return _page(len(ids), rows, more_after, more_before, geojson, storage)

    if area is None and compiled is None and src.visible is None:
        matched = conn.execute(select(func.count()).select_from(current)).scalar()
        hits = None
        page = select(current.c.id)
    else:
        # MATERIALIZED: the exact predicate runs once per candidate for the count and the page together.
        hits = restrict(select(current.c.id)).cte("hits").prefix_with("MATERIALIZED")
        page = select(hits.c.id)
    key = page.selected_columns[0]
    if backwards:
        page = page.where(key < cursor[1]).order_by(key.desc()).limit(limit + 1)
    else:
        if cursor is not None:
            page = page.where(key > cursor[1])
        page = page.order_by(key).limit(limit + 1).offset(offset)
    page = page.subquery("page")
    rows_stmt = select(*cols).join_from(current, page, current.c.id == page.c.id)
    if hits is not None:
        # The count rides on the page's rows; an empty page still needs it (a second, rare query).
        rows_stmt = rows_stmt.add_columns(select(func.count()).select_from(hits).scalar_subquery().label("n"))
    rows = conn.execute(rows_stmt.order_by(current.c.id.desc() if backwards else current.c.id)).all()
    if hits is not None:
        matched = rows[0].n if rows else conn.execute(restrict(select(func.count()).select_from(current))).scalar()
    if backwards:
        more_before, more_after = len(rows) > limit, True
        rows = rows[:limit][::-1]
    else:
        more_after = len(rows) > limit
        more_before = cursor is not None or offset > 0
        rows = rows[:limit]
    return _page(matched, rows, more_after, more_before, geojson, storage)


def _page(matched: int, rows: list, more_after: bool, more_before: bool, geojson: bool, storage: Storage) -> Page:
    ids = [r.id for r in rows]
    fids = [r.fid if r.fid is not None else str(r.id) for r in rows]
    props = [r.p for r in rows]
    if geojson:
        return Page(matched, ids, fids, props, None, more_after, more_before, [r.g for r in rows])
    geoms = storage.decode_geometries([r.g for r in rows])  # in one vectorised pass
    return Page(matched, ids, fids, props, geoms, more_after, more_before)


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
    conn = session.connection()
    src = source(layer, storage_of(conn))
    current = src.table
    versioned = "v_from" in current.c  # a layer's rows carry their version; other sources are not versioned
    cols = (current.c.id, current.c.fid, current.c.properties, current.c.geom,
            current.c.v_from if versioned else literal(0).label("v_from"))
    visible = [src.visible] if src.visible is not None else []
    row = conn.execute(select(*cols).where(current.c.fid == feature_id, *visible).order_by(current.c.id).limit(1)).first()
    if row is None and feature_id.isascii() and feature_id.isdigit() and len(feature_id) < 19:
        row = conn.execute(select(*cols).where(current.c.fid.is_(None), current.c.id == int(feature_id), *visible)).first()
    if row is None:
        return None
    props = json.loads(row.properties) if isinstance(row.properties, str) else row.properties
    version = row.v_from if versioned else zlib.crc32(json.dumps(props, sort_keys=True).encode()
                                                      + shapely.to_wkb(row.geom))
    return Found(row.id, row.fid if row.fid is not None else str(row.id), props, row.geom, version)


# --------------------------------------------------------------------------------------------------
# The bbox page as bytes: the hot path of a map client (no filter, a layer's own table)
# --------------------------------------------------------------------------------------------------

@dataclass
class FeaturesPage:
    """A page whose features are complete GeoJSON Feature objects already (bytes), in id order."""

    number_matched: int
    ids: list[int]
    features: list[bytes]
    more_after: bool
    more_before: bool


#: The PostGIS statement of a bbox page by (table, direction), as driver SQL prepared on the server: building and
#: compiling it with SQLAlchemy per request cost more Python than the rest of the page.
_PG_PAGES: dict[tuple[str, bool], str] = {}

#: One feature as GeoJSON text, written by PostgreSQL in the order the general path writes it (type, id,
#: geometry, properties); 15 decimals keep every digit of a lon/lat double (PostGIS writes the shortest exact
#: form, as GEOS does); option 0: no "crs" member (CRS84 is GeoJSON's own).
_PG_FEATURE = ("""'{"type":"Feature","id":' || to_json(coalesce(t.fid, t.id::text))::text"""
               """ || ',"geometry":' || coalesce(ST_AsGeoJSON(t.geom, 15, 0), 'null')"""
               """ || ',"properties":' || t.properties::text || '}'""")


def _pg_page_sql(table: str, backwards: bool) -> str:
    sql = _PG_PAGES.get((table, backwards))
    if sql is None:
        # MATERIALIZED: the exact predicate runs once per candidate for the count and the page together.
        page = ("SELECT id FROM hits WHERE id < %(key)s ORDER BY id DESC LIMIT %(n)s" if backwards else
                "SELECT id FROM hits WHERE id > %(key)s ORDER BY id LIMIT %(n)s OFFSET %(offset)s")
        sql = _PG_PAGES[(table, backwards)] = (
            f"WITH hits AS MATERIALIZED (SELECT id FROM {table} "
            f"WHERE geom && ST_MakeEnvelope(%(minx)s, %(miny)s, %(maxx)s, %(maxy)s, 4490) "
            f"AND ST_Intersects(geom, ST_GeomFromWKB(%(area)s, 4490))), page AS ({page}) "
            f"SELECT t.id, {_PG_FEATURE}, (SELECT count(*) FROM hits) FROM {table} t JOIN page ON t.id = page.id "
            f"ORDER BY t.id")
    return sql


def bbox_page(conn, layer, *, area: shapely.Geometry, limit: int, offset: int, cursor: tuple[str, int] | None,
              out_crs: ServedCRS, rectangle: bool | None = None) -> FeaturesPage | None:
    """A bbox page of a layer's own table with every feature written as GeoJSON bytes, on the driver's cursor of
    ``conn`` (a SQLAlchemy connection; read only): the same features, count and paging as ``items`` with a bbox
    alone, without a statement built per request. None where this path does not apply (a source restricted per
    reader, PostGIS output in another CRS than CRS84, too many candidates): the caller uses ``items``.
    ``rectangle``: whether ``area`` is the rectangle of its bounds in lon/lat (a bbox given in a geographic CRS),
    when the caller knows; else it is tested."""
    if hasattr(layer, "ogc_source"):
        return None
    storage = storage_of(conn)
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    table = conn.dialect.identifier_preparer.quote(current.name)
    raw = conn.connection.dbapi_connection
    if storage.spatial_sql:
        if out_crs.key != "OGC:CRS84":
            return None
        backwards = cursor is not None and cursor[0] == "b"
        minx, miny, maxx, maxy = area.bounds
        key = cursor[1] if cursor is not None else INT64_MIN
        with raw.cursor() as cur:
            cur.execute(_pg_page_sql(table, backwards),
                        {"minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy, "area": shapely.to_wkb(area),
                         "key": key, "n": limit + 1, "offset": offset}, prepare=True)
            rows = cur.fetchall()
            if rows:
                matched = rows[0][2]
            else:  # an empty page still needs the count (a second, rare query)
                cur.execute(f"SELECT count(*) FROM {table} WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s, 4490) "
                            f"AND ST_Intersects(geom, ST_GeomFromWKB(%s, 4490))",
                            (minx, miny, maxx, maxy, shapely.to_wkb(area)))
                matched = cur.fetchone()[0]
        if backwards:
            more_before, more_after = len(rows) > limit, True
            rows = rows[-limit:] if len(rows) > limit else rows
        else:
            more_after, more_before = len(rows) > limit, cursor is not None or offset > 0
            rows = rows[:limit]
        return FeaturesPage(matched, [r[0] for r in rows], [r[1].encode() for r in rows], more_after, more_before)
    if not storage.rtree_index:
        return None
    cur = raw.cursor()
    try:
        found = _sqlite_rtree_page(cur, current.name, area, limit, offset, cursor, rectangle)
        if found is None:  # not a rectangle: every candidate's box into one vectorised pass
            ids = _sqlite_bbox_ids(conn, Source(current, current.name), area)
            if ids is None:
                return None
            found = (len(ids), *_page_of(ids, limit, offset, cursor))
        matched, page_ids, more_after, more_before = found
        if not page_ids:
            return FeaturesPage(matched, [], [], more_after, more_before)
        marks = ",".join("?" * len(page_ids))
        if out_crs.key == "OGC:CRS84":
            # The texts written with the rows (featurestore); a row without one is read and written here.
            side = featurestore.geojson_table(current.name)
            rows = cur.execute(f'SELECT t.id, g.feature, CASE WHEN g.feature IS NULL THEN t.fid END, '
                               f'CASE WHEN g.feature IS NULL THEN t.properties END, '
                               f'CASE WHEN g.feature IS NULL THEN t.geom END '
                               f'FROM {table} t LEFT JOIN "{side}" g ON g.id = t.id WHERE t.id IN ({marks}) '
                               f'ORDER BY t.id', page_ids).fetchall()
        else:
            rows = cur.execute(f"SELECT id, NULL, fid, properties, geom FROM {table} WHERE id IN ({marks}) "
                               f"ORDER BY id", page_ids).fetchall()
    finally:
        cur.close()
    features = [r[1] for r in rows]
    missing = [i for i, f in enumerate(features) if f is None]
    if missing:
        todo = [rows[i] for i in missing]
        geoms = to_output(storage.decode_geometries([r[4] for r in todo]), out_crs)
        texts = featurestore.feature_texts([r[0] for r in todo], [r[2] for r in todo], [r[3] for r in todo], geoms)
        for i, text in zip(missing, texts):
            features[i] = text
        if out_crs.key == "OGC:CRS84":  # rows an import left without text: written behind for the next reads
            featurestore.TEXTS.request(conn.engine, current.name, [r[0] for r in todo])
    return FeaturesPage(matched, [r[0] for r in rows], features, more_after, more_before)


def _sqlite_rtree_page(cur, table: str, area: shapely.Geometry, limit: int, offset: int,
                       cursor: tuple[str, int] | None,
                       rectangle: bool | None = None) -> tuple[int, list[int], bool, bool] | None:
    """(number matched, page ids, more after, more before) of a bbox on SQLite, the R*Tree doing the counting: an
    entry whose box lies inside a rectangular area intersects it (its box is rounded outwards), so those are
    counted and paged in SQLite itself, and only the entries crossing the area's edge come into Python, to be
    tested exactly with GEOS. Reading every candidate's box as Python tuples was the largest cost of the page.
    None when the area is not a rectangle (a box given in a projected CRS): ``_sqlite_bbox_ids`` then."""
    minx, miny, maxx, maxy = area.bounds
    if rectangle is None:
        rectangle = bool(shapely.equals(area, shapely.box(minx, miny, maxx, maxy)))
    if not rectangle:
        return None
    rtree = f"rtree_{table}_geom"
    overlap = "minx <= ? AND maxx >= ? AND miny <= ? AND maxy >= ?"
    inside = "minx >= ? AND maxx <= ? AND miny >= ? AND maxy <= ?"
    o_args, i_args = (maxx, minx, maxy, miny), (minx, maxx, miny, maxy)
    edge = [r[0] for r in cur.execute(f"SELECT id FROM {rtree} WHERE {overlap} AND NOT ({inside})",
                                      o_args + i_args).fetchall()]
    hits: list[int] = []
    if edge:
        blobs = dict(cur.execute(f"SELECT id, geom FROM {table} WHERE id IN ({','.join('?' * len(edge))})",
                                 edge).fetchall())
        geoms = from_gpkg_many([blobs.get(i) for i in edge])
        present = ~shapely.is_missing(geoms)
        exact = np.zeros(len(edge), dtype=bool)
        shapely.prepare(area)
        exact[present] = shapely.intersects(area, geoms[present])
        hits = sorted(np.asarray(edge, dtype=np.int64)[exact].tolist())
    matched = cur.execute(f"SELECT count(*) FROM {rtree} WHERE {inside}", i_args).fetchone()[0] + len(hits)
    # The first ids of the union after (or before) the cursor are among the first of each part.
    if cursor is not None and cursor[0] == "b":
        ids = [r[0] for r in cur.execute(f"SELECT id FROM {rtree} WHERE {inside} AND id < ? ORDER BY id DESC "
                                         f"LIMIT ?", i_args + (cursor[1], limit + 1)).fetchall()]
        ids = sorted(ids + [i for i in hits if i < cursor[1]])[-(limit + 1):]
        more_before = len(ids) > limit
        return matched, ids[-limit:] if ids else ids, True, more_before
    after = cursor[1] if cursor is not None else INT64_MIN
    ids = [r[0] for r in cur.execute(f"SELECT id FROM {rtree} WHERE {inside} AND id > ? ORDER BY id LIMIT ?",
                                     i_args + (after, offset + limit + 1)).fetchall()]
    ids = sorted(ids + [i for i in hits if i > after])[offset:offset + limit + 1]
    return matched, ids[:limit], len(ids) > limit, cursor is not None or offset > 0

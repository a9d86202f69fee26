"""Buildings' tile geometry prepared when they are written (``buildings.tile_geom``), for the dense zoom.

At the catalogue's ``prepared_zoom`` (z14, where the rules drop and simplify nothing) a building's MVT geometry
depends on the tile only through its first MoveTo: the footprint in that zoom's global pixel grid (EPSG:3857,
y down, ``extent`` units per tile) snapped to integers, repaired where snapping broke it and oriented is the same
in every tile, and MVT writes every later vertex as a delta from the one before. So the writers store, beside the
footprint, the snapped pixel bounds, the first vertex and the command stream after the first MoveTo as varints;
a tile is then assembled from bytes (``cityops.tiles.service``), and only the features crossing the tile's
buffered edge are clipped. ``ST_AsMVTGeom`` also snaps before it clips, so this is its order.

The attributes of the buildings layer (``ATTRIBUTES``) are stored encoded too, each as its Layer.values field
(``mvt.value_field``): a tile's value dictionary is then a hash of these byte strings, and the rows read per tile
are an id and this blob. ``height`` falls back to floors × the layer's storey height, kept in the header.

The blob: a 56-byte little-endian header (format, zoom, extent, bounds minx miny maxx maxy and first vertex x y
as int32, the storey height as float64, the varints' length as uint32, each attribute's field length as
uint16, 0 for none), the varints, then the attribute fields. A collapsed footprint (nothing left after snapping)
has no varints. A blob of another format, zoom, extent or storey height is ignored by the reader (the footprint
and attributes are encoded instead), and a footprint or tile attribute written without its blob leaves NULL
there (triggers clear a blob whose footprint or attributes changed, migrations 0028 and 0031): a stale blob is
never read.

Writers, all through ``fill``: the tiles' consumer of ``building.changed`` (the buildings a housing writer
created or changed; until it has run, their tiles encode the footprints themselves), the demo's bulk load, the
migrations (0028, 0031) and ``cityops tiles prepare``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import shapely
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from cityops.housing.models import Building
from cityops.tiles import mvt

FORMAT = 2
#: The buildings layer's attributes, in the layer's key order; their source columns are ``SOURCE_COLUMNS``.
ATTRIBUTES = ("code", "floors", "height", "use", "structure", "safety_grade", "year_built", "grid_code")
SOURCE_COLUMNS = ("code", "floors", "height_m", "use", "structure", "safety_grade", "year_built", "grid_code")
HEADER = np.dtype([("format", "u1"), ("zoom", "u1"), ("extent", "<u2"), ("minx", "<i4"), ("miny", "<i4"),
                   ("maxx", "<i4"), ("maxy", "<i4"), ("x0", "<i4"), ("y0", "<i4"), ("storey", "<f8"),
                   ("tail", "<u4"), ("values", "<u2", (len(ATTRIBUTES),))])
HEADER_SIZE = HEADER.itemsize  # 56
#: (zoom, extent) of ``buildings.footprint_z14`` on PostgreSQL: ST_AsMVTGeom of the footprint for the whole zoom,
#: a stored generated column (migration 0031), read by the ST_AsMVT statement of that zoom's building tiles.
PIXEL_GRID = (14, 4096)
_HALF = 20037508.342789244  # EPSG:3857 half extent (pi * 6378137)


def _settings() -> tuple[int, int, float]:
    from cityops.tiles.catalogue import load_catalogue

    cat = load_catalogue()
    storey = next((b.storey_height_m for b in cat.base_layers if b.source == "buildings"), 3.0)
    return cat.prepared_zoom, cat.extent, storey


def attribute_values(rows, storey: float) -> tuple[np.ndarray, np.ndarray]:
    """The buildings layer's attribute fields of ``rows`` (tuples of ``SOURCE_COLUMNS``): all fields concatenated
    (uint8) and each one's length, (rows, attributes), 0 where the value is NULL. A Python call per value: the
    writers encode a building once, and a tile encodes only the few buildings without a usable blob."""
    fields, lengths = [], np.zeros((len(rows), len(ATTRIBUTES)), dtype=np.int64)
    field = mvt.value_field
    for i, (code, floors, height_m, use, structure, grade, year, grid) in enumerate(rows):
        height = float(height_m) if height_m is not None else \
            (round(floors * storey, 1) if floors is not None else None)
        for k, v in enumerate((code, floors, height, use, structure, grade, year, grid)):
            if v is not None:
                f = field(v)
                fields.append(f)
                lengths[i, k] = len(f)
    return np.frombuffer(b"".join(fields), dtype=np.uint8), lengths


def pixel_geometries(geoms: np.ndarray, zoom: int, extent: int) -> np.ndarray:
    """lon/lat → the zoom's global pixel grid (floats, y down)."""
    fwd = mvt._to_mercator()
    k = extent * (1 << zoom) / (2 * _HALF)

    def transform(coords: np.ndarray) -> np.ndarray:
        x, y = fwd.transform(coords[:, 0], coords[:, 1])
        return np.column_stack(((np.asarray(x) + _HALF) * k, (_HALF - np.asarray(y)) * k))

    return shapely.transform(np.asarray(geoms, dtype=object), transform)


def encode(footprints, attributes, zoom: int | None = None, extent: int | None = None,
           storey: float | None = None) -> list[bytes | None]:
    """The prepared blob of each footprint (lon/lat polygons) and its ``attributes`` (tuples of
    ``SOURCE_COLUMNS``); None where there is no footprint."""
    if zoom is None or extent is None or storey is None:
        zoom, extent, storey = _settings()
    geoms = np.asarray(footprints, dtype=object)
    out: list[bytes | None] = [None] * len(geoms)
    present = np.flatnonzero(np.array([g is not None and not g.is_empty for g in geoms], dtype=bool))
    if not len(present):
        return out
    pixels = pixel_geometries(geoms[present], zoom, extent)
    # Each footprint relative to an integer origin of its own (the floor of its bounds), so the encoder's
    # shoelace sums stay exact in float64 far from the grid's origin; snapping commutes with the shift.
    origin = np.floor(shapely.bounds(pixels)[:, :2]).astype(np.int64)
    coords, owner = shapely.get_coordinates(pixels, return_index=True)
    local = shapely.set_coordinates(pixels.copy(), coords - origin[owner])
    local = mvt.snap(local)
    polygonal = np.isin(shapely.get_type_id(local), (3, 6)) & ~shapely.is_empty(local)
    headers = np.zeros(len(present), dtype=HEADER)
    headers["format"], headers["zoom"], headers["extent"] = FORMAT, zoom, extent
    headers["minx"], headers["miny"], headers["maxx"], headers["maxy"] = 1, 1, 0, 0  # empty: min > max
    headers["storey"] = storey
    value_data, value_len = attribute_values([attributes[i] for i in present.tolist()], storey)
    headers["values"] = np.minimum(value_len, 0xFFFF)
    too_long = (value_len > 0xFFFF).any(axis=1)  # a field beyond the header's uint16: no blob, encoded per tile
    value_end = np.cumsum(value_len.sum(axis=1)).tolist()
    tails = [b""] * len(present)
    chosen = np.flatnonzero(polygonal)
    if len(chosen):
        points, starts, counts, part_feature = mvt._parts(local[chosen], mvt.POLYGON)
        stream, offsets = mvt._feature_streams(points, starts, counts, part_feature, len(chosen), mvt.POLYGON)
        data = mvt._varints(stream)
        byte_at = np.concatenate(([0], np.cumsum(mvt._varint_sizes(stream.astype(np.uint64)))))
        live = np.diff(offsets) > 0  # every ring collapsed: nothing to write
        first_part = np.r_[True, part_feature[1:] != part_feature[:-1]] if len(part_feature) else np.zeros(0, bool)
        first_vertex = np.zeros((len(chosen), 2), dtype=np.int64)
        first_vertex[part_feature[first_part]] = points[starts[first_part]]
        at, o = chosen[live], origin[chosen[live]]
        b = shapely.bounds(local[at]).astype(np.int64)
        headers["minx"][at], headers["miny"][at] = b[:, 0] + o[:, 0], b[:, 1] + o[:, 1]
        headers["maxx"][at], headers["maxy"][at] = b[:, 2] + o[:, 0], b[:, 3] + o[:, 1]
        headers["x0"][at], headers["y0"][at] = first_vertex[live, 0] + o[:, 0], first_vertex[live, 1] + o[:, 1]
        # The first three varints are MoveTo(1) and the first vertex: the part that depends on the tile.
        begin, end = byte_at[offsets[:-1][live] + 3].tolist(), byte_at[offsets[1:][live]].tolist()
        for i, s0, s1 in zip(at.tolist(), begin, end):
            tails[i] = data[s0:s1]
    headers["tail"] = [len(t) for t in tails]
    raw, values = headers.tobytes(), value_data.tobytes()
    for k, i in enumerate(present.tolist()):
        if too_long[k]:
            continue
        out[i] = raw[k * HEADER_SIZE:(k + 1) * HEADER_SIZE] + tails[k] + values[value_end[k - 1] if k else 0:value_end[k]]
    return out


def fill(conn: Connection, *, batch: int = 20_000, only_missing: bool = True, codes: list[str] | None = None,
         on_batch: Callable[[], None] | None = None) -> int:
    """Write the prepared blob of the buildings that have none (``only_missing``), or of all of them, or of
    those with the given ``codes``, in batches by id, calling ``on_batch`` after each (to commit it, say);
    returns how many were written."""
    from cityops.core.storage import storage_of

    storage = storage_of(conn)
    zoom, extent, storey = _settings()
    written, last = 0, 0
    sources = [getattr(Building, c) for c in SOURCE_COLUMNS]
    while True:
        stmt = select(Building.id, storage.raw_geometry(Building.footprint).label("g"), *sources).where(Building.id > last)
        if only_missing:
            stmt = stmt.where(Building.tile_geom.is_(None))
        if codes is not None:
            stmt = stmt.where(Building.code.in_(codes))
        rows = conn.execute(stmt.order_by(Building.id).limit(batch)).all()
        if not rows:
            return written
        blobs = encode(storage.decode_geometries([r.g for r in rows]), [tuple(r)[2:] for r in rows], zoom, extent, storey)
        table = Building.__table__
        conn.execute(update(table).where(table.c.id == bindparam("b_id")).values(tile_geom=bindparam("b_blob")),
                     [{"b_id": r.id, "b_blob": b} for r, b in zip(rows, blobs)])
        written += len(rows)
        last = rows[-1].id
        if on_batch is not None:
            on_batch()

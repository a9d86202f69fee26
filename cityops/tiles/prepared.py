"""Buildings' tile geometry prepared when they are written (``buildings.tile_geom``), for the dense zoom.

At the catalogue's ``prepared_zoom`` (z14, where the rules drop and simplify nothing) a building's MVT geometry
depends on the tile only through its first MoveTo: the footprint in that zoom's global pixel grid (EPSG:3857,
y down, ``extent`` units per tile) snapped to integers, repaired where snapping broke it and oriented is the same
in every tile, and MVT writes every later vertex as a delta from the one before. So the writers store, beside the
footprint, the snapped pixel bounds, the first vertex and the command stream after the first MoveTo as varints;
a tile is then assembled from bytes (``cityops.tiles.service``), and only the features crossing the tile's
buffered edge are clipped. ``ST_AsMVTGeom`` also snaps before it clips, so this is its order.

The blob: a 28-byte little-endian header (format, zoom, extent, bounds minx miny maxx maxy, first vertex x y as
int32) and the varints. A collapsed footprint (nothing left after snapping) has no varints. A blob of another
format, zoom or extent is ignored by the reader (the footprint is encoded instead), and a footprint written
without its blob leaves NULL there (a trigger clears a blob the footprint has moved away from, migration 0028):
a stale blob is never read.

Writers, all through ``fill``: the tiles' consumer of ``building.changed`` (the buildings a housing writer
created or changed; until it has run, their tiles encode the footprints themselves), the demo's bulk load, the
migration that added the column and ``cityops tiles prepare``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import shapely
from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from cityops.housing.models import Building
from cityops.tiles import mvt

FORMAT = 1
HEADER = np.dtype([("format", "u1"), ("zoom", "u1"), ("extent", "<u2"), ("minx", "<i4"), ("miny", "<i4"),
                   ("maxx", "<i4"), ("maxy", "<i4"), ("x0", "<i4"), ("y0", "<i4")])
HEADER_SIZE = HEADER.itemsize  # 28
_HALF = 20037508.342789244  # EPSG:3857 half extent (pi * 6378137)


def _settings() -> tuple[int, int]:
    from cityops.tiles.catalogue import load_catalogue

    cat = load_catalogue()
    return cat.prepared_zoom, cat.extent


def pixel_geometries(geoms: np.ndarray, zoom: int, extent: int) -> np.ndarray:
    """lon/lat → the zoom's global pixel grid (floats, y down)."""
    fwd = mvt._to_mercator()
    k = extent * (1 << zoom) / (2 * _HALF)

    def transform(coords: np.ndarray) -> np.ndarray:
        x, y = fwd.transform(coords[:, 0], coords[:, 1])
        return np.column_stack(((np.asarray(x) + _HALF) * k, (_HALF - np.asarray(y)) * k))

    return shapely.transform(np.asarray(geoms, dtype=object), transform)


def encode(footprints, zoom: int | None = None, extent: int | None = None) -> list[bytes | None]:
    """The prepared blob of each footprint (lon/lat polygons); None where there is no footprint."""
    if zoom is None or extent is None:
        zoom, extent = _settings()
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
    raw = headers.tobytes()
    for k, i in enumerate(present):
        out[i] = raw[k * HEADER_SIZE:(k + 1) * HEADER_SIZE] + tails[k]
    return out


def fill(conn: Connection, *, batch: int = 20_000, only_missing: bool = True, codes: list[str] | None = None,
         on_batch: Callable[[], None] | None = None) -> int:
    """Write the prepared blob of the buildings that have none (``only_missing``), or of all of them, or of
    those with the given ``codes``, in batches by id, calling ``on_batch`` after each (to commit it, say);
    returns how many were written."""
    from cityops.core.storage import storage_of

    storage = storage_of(conn)
    zoom, extent = _settings()
    written, last = 0, 0
    while True:
        stmt = select(Building.id, storage.raw_geometry(Building.footprint).label("g")).where(Building.id > last)
        if only_missing:
            stmt = stmt.where(Building.tile_geom.is_(None))
        if codes is not None:
            stmt = stmt.where(Building.code.in_(codes))
        rows = conn.execute(stmt.order_by(Building.id).limit(batch)).all()
        if not rows:
            return written
        blobs = encode(storage.decode_geometries([r.g for r in rows]), zoom, extent)
        table = Building.__table__
        conn.execute(update(table).where(table.c.id == bindparam("b_id")).values(tile_geom=bindparam("b_blob")),
                     [{"b_id": r.id, "b_blob": b} for r, b in zip(rows, blobs)])
        written += len(rows)
        last = rows[-1].id
        if on_batch is not None:
            on_batch()

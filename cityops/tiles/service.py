"""Vector tiles (矢量瓦片): the combined base map and one tile set per catalogue layer, on WebMercatorQuad.

* ``render(session, scope, tileset, z, x, y)`` → MVT bytes with the same content on both backends: the same
  rows (scope, bbox), attributes, ids, generalisation rules and caps. On SQLite geometry is clipped,
  generalised and encoded in Python (``cityops.tiles.mvt``); on PostGIS each layer is one ``ST_AsMVTGeom``
  + ``ST_AsMVT`` query with the same rules, the layers' bytes concatenated (a tile is a sequence of
  layers). The tests decode both with GDAL and compare the two paths on PostGIS.
* Buildings at the catalogue's ``prepared_zoom`` (z14): assembled from the bytes stored with each building
  (``cityops.tiles.prepared``: geometry and attribute values; a row is an id and that blob), only footprints
  crossing the buffered tile edge clipped per tile. On PostGIS ``ST_AsMVT`` takes the stored ``footprint_z14``
  (``ST_AsMVTGeom`` over the whole zoom) moved to the tile's corner for those wholly inside the buffered tile, and
  ``ST_AsMVTGeom`` of the stored Web Mercator copy ``footprint_3857`` for the others.
* Scope: catalogue layers are visible whole when the viewer sees the layer's unit (as in /api/layers);
  units are those the viewer sees, with ``covered`` telling whether the scope covers them; buildings only
  inside the scope (as /api/buildings).
* Generalisation (``tilesets.toml``): per zoom a simplification tolerance, a minimum area/length and a cap on
  features per layer, so that no tile exceeds ``max_tile_bytes``.
* ``TileStore`` caches rendered tiles on disk (bounded, least recently used first). Keys carry the data
  stamps of the tile's sources and the viewer's scope, so a change makes old tiles unreachable; they are
  dropped as soon as the new stamp is seen.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import morecantile
import numpy as np
import pyarrow as pa
import shapely
from sqlalchemy import (Double, Integer, LargeBinary, Numeric, Text, bindparam, case, cast, func, literal, literal_column, or_, select,
                        update)
from sqlalchemy.orm import Session

from cityops.base import featurestore
from cityops.base import service as layers_service
from cityops.base.models import Layer
from cityops.core.bus import publish
from cityops.core.errors import InvalidInput, NotFound
from cityops.core.storage import Storage, storage_of
from cityops.core.types import utcnow
from cityops.housing.models import Building
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.tiles import mvt, prepared
from cityops.tiles.catalogue import BaseLayer, Catalogue, Rule, load_catalogue
from cityops.tiles.manifest import TileSourceChanged
from cityops.tiles.models import TileSource

TMS_ID = "WebMercatorQuad"
BASEMAP = "basemap"
SOURCES = ("units", "buildings")


@lru_cache(maxsize=1)
def tms() -> morecantile.TileMatrixSet:
    return morecantile.tms.get(TMS_ID)


# ------------------------------------------------------------------------------------ invalidation

def invalidate(session: Session, source: str) -> None:
    """Mark ``source`` ("units" or "buildings") changed, in the caller's transaction: every cached tile
    that shows it is stale from the commit on. Writers of units or buildings call this; layer writes need
    nothing (their version and update time are the stamp)."""
    if source not in SOURCES:
        raise ValueError(f"unknown tile source {source!r}; one of {', '.join(SOURCES)}")
    generation = session.execute(update(TileSource).where(TileSource.source == source)
                                 .values(generation=TileSource.generation + 1, changed_at=utcnow())
                                 .returning(TileSource.generation)).scalar()
    publish(session, TileSourceChanged(source=source, generation=generation or 0))


def _stamp(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def _layer_stamp(layer: Layer) -> tuple:
    """A layer's data stamp, read with the layer's catalogue row on every request (imports, rollbacks and
    edits bump its version, metadata changes its update time)."""
    return (layer.key, layer.current_version, str(layer.updated_at), layer.feature_count, layer.geometry_type)


class Stamps:
    """Data stamps of units and buildings, re-read at most every ``check_seconds`` (so other processes'
    writes show up that late) or at once after ``refresh()``."""

    def __init__(self, check_seconds: float):
        self.check_seconds = check_seconds
        self._at = 0.0
        self._value: dict | None = None
        self._refreshed = 0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        self._refreshed += 1  # a read under way when this is called may hold the old stamps: it is not kept
        self._value = None

    def get(self, session: Session) -> dict:
        now, value = time.monotonic(), self._value
        if value is not None and now - self._at < self.check_seconds:
            return value
        with self._lock:
            refreshed = self._refreshed
            generations = dict(session.execute(select(TileSource.source, TileSource.generation)).all())
            units = tuple(session.execute(select(func.count(Unit.id), func.max(Unit.updated_at), func.max(Unit.id))).one())
            buildings = tuple(session.execute(select(func.count(Building.id), func.max(Building.id))).one())
            value = {"units": _stamp(generations.get("units"), units),
                     "buildings": _stamp(generations.get("buildings"), buildings)}
            if refreshed == self._refreshed:
                self._value, self._at = value, time.monotonic()
            return value


# ------------------------------------------------------------------------------------------ cache

class TileCache:
    """Rendered tiles on disk, bounded by total bytes (least recently used evicted first).

    The index is per process: several workers sharing a directory each keep their own bound. The
    directory is emptied when the cache starts, since its index cannot be trusted across restarts."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self._index: OrderedDict[str, int] = OrderedDict()
        self._stamps: dict[str, str] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest[2:]}.mvt"

    def _forget(self, key: str) -> None:
        size = self._index.pop(key, None)
        if size is None:
            return
        self._bytes -= size
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def _check_stamp(self, tileset: str, stamp: str) -> None:
        """Drop every tile of ``tileset`` made under another stamp (its data changed)."""
        if self._stamps.get(tileset) == stamp:
            return
        if tileset in self._stamps:
            prefix = f"{tileset}|"
            for key in [k for k in self._index if k.startswith(prefix)]:
                self._forget(key)
        self._stamps[tileset] = stamp

    def get(self, tileset: str, stamp: str, key: str) -> bytes | None:
        full = f"{tileset}|{stamp}|{key}"
        with self._lock:
            self._check_stamp(tileset, stamp)
            if full not in self._index:
                self.misses += 1
                return None
            self._index.move_to_end(full)
        try:
            data = self._path(full).read_bytes()
        except FileNotFoundError:
            with self._lock:
                self._index.pop(full, None)
            return None
        self.hits += 1
        return data

    def put(self, tileset: str, stamp: str, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        full = f"{tileset}|{stamp}|{key}"
        path = self._path(full)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a tile.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        with self._lock:
            self._check_stamp(tileset, stamp)
            if self._stamps.get(tileset) != stamp:
                return
            if full in self._index:
                self._bytes -= self._index[full]
            self._index[full] = len(data)
            self._bytes += len(data)
            while self._bytes > self.max_bytes and self._index:
                oldest = next(iter(self._index))
                self._forget(oldest)
                self.evictions += 1

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._index)


# -------------------------------------------------------------------------------------- geometry

@dataclass
class TileRequest:
    z: int
    x: int
    y: int
    frame: mvt.TileFrame
    bbox: tuple[float, float, float, float]  # lon/lat, buffer included
    rule: Rule


_WEB_MERCATOR_HALF = 20037508.342789244  # EPSG:3857 half extent (pi * 6378137)


def tile_request(cat: Catalogue, z: int, x: int, y: int) -> TileRequest:
    if not cat.min_zoom <= z <= cat.max_zoom:
        raise NotFound(f"zoom {z} is outside this tile set's range {cat.min_zoom}..{cat.max_zoom}")
    n = 1 << z
    if not (0 <= x < n and 0 <= y < n):
        raise NotFound(f"tile {z}/{x}/{y} is outside the tile matrix (0..{n - 1} at zoom {z})")
    # WebMercatorQuad bounds by arithmetic (as morecantile defines them): asking morecantile costs pyproj
    # calls per tile, more than the rest of a PostGIS tile's Python side.
    size = 2 * _WEB_MERCATOR_HALF / n
    left, top = -_WEB_MERCATOR_HALF + x * size, _WEB_MERCATOR_HALF - y * size
    frame = mvt.TileFrame(left, top - size, left + size, top, cat.extent, cat.buffer)
    pad = cat.buffer / cat.extent
    lon0, lon1 = x / n * 360.0 - 180.0, (x + 1) / n * 360.0 - 180.0
    lat1 = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n))))
    lat0 = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (y + 1) / n))))
    dx, dy = (lon1 - lon0) * pad, (lat1 - lat0) * pad
    bbox = (max(lon0 - dx, -180.0), max(lat0 - dy, -85.06), min(lon1 + dx, 180.0), min(lat1 + dy, 85.06))
    return TileRequest(z, x, y, frame, bbox, cat.rule(z))


def _generalise(geoms: np.ndarray, rows: list, rule: Rule, frame: mvt.TileFrame):
    """Drop polygons/lines whose whole area/length (in tile units) is under the zoom's minimum, keep at most
    ``max_features`` (largest first, ties and points by id), then clip, simplify and snap what is kept.

    Sizes are of the whole feature, before clipping and simplification, so that the PostGIS path (which
    computes them in SQL) keeps exactly the same features."""
    tile_geoms = frame.to_tile(geoms)
    types = shapely.get_type_id(tile_geoms)
    polygonal = (types == 3) | (types == 6)
    lineal = (types == 1) | (types == 2) | (types == 5)
    size = np.zeros(len(tile_geoms))
    keep = ~shapely.is_empty(tile_geoms)
    if polygonal.any():
        size[polygonal] = shapely.area(tile_geoms[polygonal])
        keep &= ~polygonal | (size >= rule.min_area)
    if lineal.any():
        size[lineal] = shapely.length(tile_geoms[lineal])
        keep &= ~lineal | (size >= rule.min_length)
    idx = np.flatnonzero(keep)
    if len(idx) > rule.max_features:
        order = np.argsort(-size[idx], kind="stable")[: rule.max_features]
        idx = np.sort(idx[order])
    return mvt.prepare_tile(tile_geoms[idx], frame, simplify=rule.simplify), [rows[i] for i in idx]


# ---------------------------------------------------------------------------------------- sources

def _units(session: Session, scope: Scope, layer: BaseLayer, req: TileRequest, storage: Storage):
    stmt = select(Unit.id, Unit.code, Unit.name, Unit.name_en, Unit.level, Unit.path,
                  storage.raw_geometry(Unit.geom).label("g")) \
        .where(Unit.level == layer.level, Unit.geom.is_not(None), scope.sees_clause(Unit.path))
    stmt = storage.bbox_prefilter(stmt, "units", Unit.id, Unit.geom, req.bbox)
    rows = session.execute(stmt.order_by(Unit.id)).all()
    if not rows:
        return None
    geoms, kept = _generalise(storage.decode_geometries([r.g for r in rows]), rows, req.rule, req.frame)
    props = [{"code": r.code, "name": r.name, "name_en": r.name_en, "level": r.level, "covered": scope.covers(r.path)}
             for r in kept]
    return geoms, [r.id for r in kept], props


#: The Python path's buildings query by scope, compiled once to driver SQL (bounded), as the ST_AsMVT ones:
#: building and compiling the statement and SQLAlchemy's result rows were a tenth of a dense tile's time.
_PY_STATEMENTS: OrderedDict = OrderedDict()


@dataclass(frozen=True)
class _DriverStatement:
    sql: str
    params: dict  # constants of the statement; the bbox goes in by name
    order: tuple | None  # parameter names in order, for drivers with positional parameters (SQLite)


def _buildings_statement(session: Session, scope: Scope, storage: Storage, prepared_only: bool = False) -> _DriverStatement:
    """The buildings of a tile by scope and bbox: every column a tile needs, or (``prepared_only``) only the id and
    the prepared blob, all the prepared zoom reads of a building whose blob is usable (most)."""
    key = (storage.__class__, _scope_key(scope), prepared_only)  # the SQL differs by backend, scope and shape only
    stmt = _PY_STATEMENTS.get(key)
    if stmt is not None:
        _PY_STATEMENTS.move_to_end(key)
        return stmt
    blob = func.coalesce(Building.tile_geom, literal(b"", LargeBinary)).label("t")
    query = select(Building.id, blob) if prepared_only else \
        select(Building.id, *[getattr(Building, c) for c in prepared.SOURCE_COLUMNS],
               storage.raw_geometry(Building.footprint).label("g"))
    query = query.where(scope.covers_clause(Building.unit_path))
    # The bounds as named parameters (minx … maxy), given at each run.
    bounds = tuple(bindparam(n, 0.0, type_=Double) for n in ("minx", "miny", "maxx", "maxy"))
    query = storage.bbox_prefilter(query, "buildings", Building.id, Building.footprint, bounds, "footprint")
    compiled = query.order_by(Building.id).compile(dialect=session.get_bind().dialect,
                                                   compile_kwargs={"render_postcompile": True})
    order = tuple(compiled.positiontup) if compiled.positional else None
    stmt = _DriverStatement(str(compiled), dict(compiled.params), order)
    _PY_STATEMENTS[key] = stmt
    if len(_PY_STATEMENTS) > _PG_STATEMENTS_MAX:
        _PY_STATEMENTS.popitem(last=False)
    return stmt


def _crossing_statement(session: Session, storage: Storage) -> _DriverStatement:
    """The buildings with the given ids (one bound value, ``ids``): the footprints of a prepared tile that cross
    its buffered edge and their attributes, compiled once; through SQLAlchemy per tile it was a third of their cost."""
    key = (storage.__class__, "crossing")
    stmt = _PY_STATEMENTS.get(key)
    if stmt is not None:
        _PY_STATEMENTS.move_to_end(key)
        return stmt
    query = select(Building.id, *[getattr(Building, c) for c in prepared.SOURCE_COLUMNS],
                   storage.raw_geometry(Building.footprint).label("g")) \
        .where(storage.in_bound_ids(Building.id, "ids")).order_by(Building.id)
    compiled = query.compile(dialect=session.get_bind().dialect, compile_kwargs={"render_postcompile": True})
    stmt = _DriverStatement(str(compiled), dict(compiled.params), tuple(compiled.positiontup) if compiled.positional else None)
    _PY_STATEMENTS[key] = stmt
    return stmt


def _fetch(session: Session, stmt: _DriverStatement, req: TileRequest) -> list:
    minx, miny, maxx, maxy = req.bbox
    return _run(session, stmt, {**stmt.params, "minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy})


def _run(session: Session, stmt: _DriverStatement, params: dict) -> list:
    # Straight to the driver, in the session's transaction: rows as plain tuples, no result layer per row.
    cursor = session.connection().connection.dbapi_connection.cursor()
    try:
        cursor.execute(stmt.sql, tuple(params[n] for n in stmt.order) if stmt.order is not None else params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _buildings(session: Session, scope: Scope, layer: BaseLayer, req: TileRequest, storage: Storage, tile: mvt.Tile,
               cat: Catalogue) -> None:
    """The buildings layer into ``tile``: at the prepared zoom assembled from the stored bytes (``_prepared_layer``),
    else each footprint generalised and encoded."""
    rule = req.rule
    if req.z == cat.prepared_zoom and rule.simplify <= 0 and rule.min_area <= 0:
        rows = _fetch(session, _buildings_statement(session, scope, storage, prepared_only=True), req)
        if not rows:
            return
        if len(rows) <= rule.max_features:
            _prepared_layer(session, rows, layer, req, storage, tile, cat)
            return
    rows = _fetch(session, _buildings_statement(session, scope, storage), req)
    if not rows:
        return
    geoms, kept = _generalise(storage.decode_geometries([r[9] for r in rows]), rows, req.rule, req.frame)
    if kept:
        mvt.add_layer(tile, layer.id, geoms, [r[0] for r in kept], _building_arrays(list(zip(*kept)), layer),
                      extent=cat.extent)


def _prepared_layer(session: Session, rows: list, layer: BaseLayer, req: TileRequest, storage: Storage, tile: mvt.Tile,
                    cat: Catalogue) -> None:
    """The buildings layer at the prepared zoom, from each building's stored blob (prepared.py): a footprint wholly
    inside the buffered tile is its first MoveTo, relative to this tile's corner, followed by the stored varints; one
    wholly outside is left out; its attributes are the stored value fields. The few crossing the buffer's edge are
    clipped and encoded here from the footprint (``ST_AsMVTGeom``'s clip), read for them alone; any without a usable
    blob is encoded whole, attributes included."""
    extent, buffer = cat.extent, cat.buffer
    n = len(rows)
    ids, blobs = zip(*rows)
    # Every blob in one buffer: headers, tails and attribute fields are read from it by offset.
    sizes = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    starts = np.cumsum(sizes) - sizes
    usable = sizes >= prepared.HEADER_SIZE
    head = np.zeros(n, dtype=prepared.HEADER)
    if usable.any():
        # Rows of a window view over the buffer (no index array per header byte).
        windows = np.lib.stride_tricks.sliding_window_view(data, prepared.HEADER_SIZE)
        head[usable] = np.ascontiguousarray(windows[starts[usable]]).view(prepared.HEADER).reshape(-1)
    tail = head["tail"].astype(np.int64)
    value_len = head["values"].astype(np.int64)
    usable &= (head["format"] == prepared.FORMAT) & (head["zoom"] == req.z) & (head["extent"] == extent) \
        & (head["storey"] == layer.storey_height_m) & (prepared.HEADER_SIZE + tail + value_len.sum(axis=1) <= sizes)
    value_len[~usable] = 0
    ox, oy = req.x * extent, req.y * extent
    minx, maxx = head["minx"].astype(np.int64) - ox, head["maxx"].astype(np.int64) - ox
    miny, maxy = head["miny"].astype(np.int64) - oy, head["maxy"].astype(np.int64) - oy
    lo, hi = -buffer, extent + buffer
    empty = head["minx"] > head["maxx"]  # collapsed when snapped: in no tile
    inside = usable & ~empty & (minx >= lo) & (miny >= lo) & (maxx <= hi) & (maxy <= hi)
    outside = usable & (empty | (maxx < lo) | (minx > hi) | (maxy < lo) | (miny > hi))
    # The buffer as segments, each blob cut into header and tail, its attribute fields, and any rest: a field is
    # then one entry of a binary array over the buffer itself, taken from it in C for the value dictionary.
    width = len(prepared.ATTRIBUTES)
    segments = np.zeros((n, width + 2), dtype=np.int64)
    segments[:, 0] = np.where(usable, prepared.HEADER_SIZE + tail, sizes)
    segments[:, 1:-1] = value_len
    segments[:, -1] = sizes - segments[:, :-1].sum(axis=1)
    value_index = np.arange(n * (width + 2)).reshape(n, width + 2)[:, 1:-1].copy()
    # The first MoveTo of a feature inside, relative to this tile; its stored varints follow.
    geometry = np.empty((n, 3), dtype=np.int64)
    geometry[:, 0] = (1 << 3) | mvt.MOVE_TO
    geometry[:, 1] = mvt._zigzag(head["x0"].astype(np.int64) - ox)
    geometry[:, 2] = mvt._zigzag(head["y0"].astype(np.int64) - oy)
    geometry_count = np.where(inside, 3, 0)
    tail_start = starts + prepared.HEADER_SIZE
    tail_len = np.where(inside, tail, 0)
    keep = inside
    encode = np.flatnonzero(~inside & ~outside)
    if len(encode):
        # The footprints of these alone (and the attributes of any without a usable blob), by a statement compiled
        # once; their bytes go after the blobs in the one buffer.
        stmt = _crossing_statement(session, storage)
        found = {r[0]: r for r in _run(session, stmt, {**stmt.params,
                                                        "ids": storage.ids_value([ids[i] for i in encode.tolist()])})}
        encode = np.array([i for i in encode.tolist() if ids[i] in found], dtype=np.int64)  # else deleted since
    if len(encode):
        fresh = [found[ids[i]] for i in encode.tolist()]
        geoms = mvt.prepare_tile(req.frame.to_tile(storage.decode_geometries([r[9] for r in fresh])), req.frame)
        stream, offsets = mvt.encode_geometries(geoms, mvt.POLYGON)
        token_bytes = np.concatenate(([0], np.cumsum(mvt._varint_sizes(stream.astype(np.uint64)))))
        byte_at = token_bytes[offsets]
        extra = [np.frombuffer(mvt._varints(stream), dtype=np.uint8)]
        tail_start[encode] = len(data) + byte_at[:-1]
        tail_len[encode] = np.diff(byte_at)
        keep = inside.copy()
        keep[encode] = np.diff(offsets) > 0  # nothing left after the clip: left out
        # Attributes from the blob where it is usable (the geometry alone depends on the tile); encoded only for
        # a building without one, as segments after the others.
        bare = encode[~usable[encode]]
        if len(bare):
            fields, field_len = prepared.attribute_values([found[ids[i]][1:9] for i in bare.tolist()],
                                                          layer.storey_height_m)
            extra.append(fields)
            value_index[bare] = n * (width + 2) + np.arange(len(bare) * width).reshape(len(bare), width)
            value_len[bare] = field_len
            segments = np.concatenate((segments.reshape(-1), [len(extra[0])], field_len.reshape(-1)))
            value_index[bare] += 1  # after the segment of the encoded geometry
        data = np.concatenate((data, *extra))
    if not keep.any():
        return
    value_index[value_len == 0] = -1
    offsets = np.concatenate(([0], np.cumsum(segments.reshape(-1)))).astype(np.int32)
    fields = pa.Array.from_buffers(pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    mvt.add_prepared_layer(tile, layer.id, mvt.POLYGON, list(prepared.ATTRIBUTES), np.array(ids, dtype=np.int64)[keep],
                           fields, value_index[keep], geometry[keep], geometry_count[keep], data, tail_start[keep],
                           tail_len[keep], extent=extent)


def _building_arrays(columns: list, layer: BaseLayer) -> dict[str, pa.Array]:
    """The buildings layer's attributes as typed Arrow columns (no type detection per value)."""
    storey = layer.storey_height_m
    ids, code, floors, height_m, use, structure, grade, year, grid = columns[:9]
    height = [float(h) if h is not None else round(f * storey, 1) for h, f in zip(height_m, floors)]
    s, i = pa.string(), pa.int64()
    return {"code": pa.array(code, s), "floors": pa.array(floors, i), "height": pa.array(height, pa.float64()),
            "use": pa.array(use, s), "structure": pa.array(structure, s), "safety_grade": pa.array(grade, s),
            "year_built": pa.array(year, i), "grid_code": pa.array(grid, s)}


def _layer_features(session: Session, layer: Layer, req: TileRequest, storage: Storage):
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    stmt = select(current.c.id, current.c.fid, current.c.properties, storage.raw_geometry(current.c.geom).label("g")) \
        .where(current.c.geom.is_not(None))
    stmt = storage.bbox_prefilter(stmt, current.name, current.c.id, current.c.geom, req.bbox)
    if layer.geometry_type in ("POINT", "MULTIPOINT"):
        stmt = stmt.limit(req.rule.max_features)  # points are capped in id order: let the database stop early
    rows = session.execute(stmt.order_by(current.c.id)).all()
    if not rows:
        return None
    geoms, kept = _generalise(storage.decode_geometries([r.g for r in rows]), rows, req.rule, req.frame)
    props = []
    for r in kept:
        p = dict(r.properties or {})
        p.setdefault("fid", r.fid if r.fid is not None else str(r.id))
        props.append(p)
    return geoms, [r.id for r in kept], props


# ----------------------------------------------------------------------------- PostGIS: ST_AsMVT

#: ST_AsMVT statements by layer, scope and shape (bounded), compiled once to driver SQL: building and
#: compiling one costs more than running it, and psycopg prepares it on the server after a few runs.
_PG_STATEMENTS: OrderedDict = OrderedDict()
_PG_STATEMENTS_MAX = 512
_PG_PARAMS = (("minx", Double), ("miny", Double), ("maxx", Double), ("maxy", Double), ("scale", Double),
              ("scale2", Double), ("min_area", Double), ("min_length", Double), ("tol", Double),
              ("max_features", Integer), ("z", Integer), ("x", Integer), ("y", Integer), ("extent", Integer),
              ("buffer", Integer), ("name", Text))


@dataclass(frozen=True)
class _PgStatement:
    sql: str
    params: dict  # the literal binds SQLAlchemy made while compiling (constants of the statement)


def _pg_statement(session: Session, key: tuple, table, id_col, geom_col, attrs, where, *, kind: str,
                  simplify: bool, thresholds: bool, uncapped: bool = False, merc_col=None, pixel_col=None) -> _PgStatement:
    """The ST_AsMVT statement of one layer as driver SQL, with the tile and the zoom's rule as parameters.

    ``kind``: "point", "line", "polygon" (the table's geometry type) or "mixed" (decided per row). Each
    feature's size (area or length in tile units) is computed once per row; ``thresholds``: whether the
    zoom's rule has a minimum size to filter on (z14+ has none).

    ``uncapped``: the statement for a zoom with nothing to drop or simplify, as long as the tile's candidates do
    not exceed the cap: the rows go straight into ST_AsMVT (the shape of a plain ST_AsMVT query), with at most
    ``max_features + 1`` of them and their count beside the tile, so the caller knows when the cap applies and
    runs the sorted statement instead. Ordering every candidate by size only to keep them all was a sort of the
    transformed geometries on every z14+ tile. ``pixel_col``: the table's geometry already through ST_AsMVTGeom for
    the whole of this zoom (uncapped only)."""
    stmt = _PG_STATEMENTS.get(key)
    if stmt is not None:
        _PG_STATEMENTS.move_to_end(key)
        return stmt
    p = {n: bindparam(n, type_=t, required=False) for n, t in _PG_PARAMS}
    # A stored Web Mercator copy where the table has one (buildings, migration 0028): no transform per row.
    merc = merc_col if merc_col is not None else func.ST_Transform(geom_col, 3857)
    if uncapped:
        # The tile envelope as an init plan: computed once, not per row, in the server's generic plan.
        envelope = select(func.ST_TileEnvelope(p["z"], p["x"], p["y"])).scalar_subquery()
        mvt_geom = func.ST_AsMVTGeom(merc, envelope, p["extent"], p["buffer"], True)
        if pixel_col is not None:
            # ST_AsMVTGeom's own output for the whole zoom, stored (buildings.footprint_z14, migration 0031): a
            # footprint wholly inside the buffered tile is that, moved to the tile's corner (the same snapped,
            # validated and oriented vertices: the transform is an affine map and the rest works on integers),
            # and only those crossing the buffer's edge are clipped per tile.
            # In double precision: the parameters' integer types are the driver's choice (int2 overflows).
            ext, buf = cast(p["extent"], Double), cast(p["buffer"], Double)
            ox, oy = cast(p["x"], Double) * ext, cast(p["y"], Double) * ext
            inner = func.ST_MakeEnvelope(ox - buf, oy - buf, ox + ext + buf, oy + ext + buf)
            mvt_geom = case((pixel_col.op("@")(inner), func.ST_Translate(pixel_col, -ox, -oy)), else_=mvt_geom)
        rows = select(id_col.label("id"), *attrs(), mvt_geom.label("geom")).select_from(table) \
            .where(geom_col.op("&&")(func.ST_MakeEnvelope(p["minx"], p["miny"], p["maxx"], p["maxy"], 4490)), *where()) \
            .limit(p["max_features"] + 1).subquery("k")
        full = select(func.ST_AsMVT(literal_column("k"), p["name"], p["extent"], "geom", "id"), func.count()) \
            .select_from(rows)
        return _keep_statement(session, key, full)
    inner = select(id_col.label("id"), *attrs(), merc.label("g")).select_from(table) \
        .where(geom_col.op("&&")(func.ST_MakeEnvelope(p["minx"], p["miny"], p["maxx"], p["maxy"], 4490)), *where())
    if kind == "point":
        # Points are capped in id order (as the Python path) and have no size.
        kept = inner.order_by(id_col).limit(p["max_features"]).subquery("kept")
    else:
        # OFFSET 0 keeps PostgreSQL from inlining the subquery, which would repeat ST_Transform for every
        # use of "g" below.
        q = inner.offset(0).subquery("q")
        area = func.ST_Area(q.c.g) * p["scale2"]
        length = func.ST_Length(q.c.g) * p["scale"]
        if kind == "polygon":
            size = area
        elif kind == "line":
            size = length
        else:
            dim = func.ST_Dimension(q.c.g)
            size = case((dim == 2, area), (dim == 1, length), else_=0.0)
        if kind != "mixed" and not thresholds:
            # Nothing to filter: the size is only the cap's sort key, computed once by the sort.
            kept = select(q).order_by(size.desc(), q.c.id).limit(p["max_features"]).subquery("kept")
        else:
            sized = select(q, size.label("size"), (func.ST_Dimension(q.c.g) if kind == "mixed" else literal(0)).label("dim")) \
                .offset(0).subquery("sized")
            kept = select(*[c for c in sized.c if c.key not in ("size", "dim")])
            if thresholds:
                if kind == "polygon":
                    kept = kept.where(sized.c.size >= p["min_area"])
                elif kind == "line":
                    kept = kept.where(sized.c.size >= p["min_length"])
                else:
                    kept = kept.where(or_(sized.c.dim != 2, sized.c.size >= p["min_area"]),
                                      or_(sized.c.dim != 1, sized.c.size >= p["min_length"]))
            kept = kept.order_by(sized.c.size.desc(), sized.c.id).limit(p["max_features"]).subquery("kept")
    geom = func.ST_SimplifyPreserveTopology(kept.c.g, p["tol"]) if simplify else kept.c.g
    mvt_geom = func.ST_AsMVTGeom(geom, func.ST_TileEnvelope(p["z"], p["x"], p["y"]), p["extent"], p["buffer"], True)
    rows = select(*[c for c in kept.c if c.key != "g"], mvt_geom.label("geom")).subquery("k")
    # ST_AsMVT skips rows whose geometry ST_AsMVTGeom dropped (NULL); a WHERE here would compute it twice.
    full = select(func.ST_AsMVT(literal_column("k"), p["name"], p["extent"], "geom", "id")).select_from(rows)
    return _keep_statement(session, key, full)


def _keep_statement(session: Session, key: tuple, full) -> _PgStatement:
    # render_postcompile: IN lists of the scope become plain parameters, so the SQL is complete.
    compiled = full.compile(dialect=session.get_bind().dialect, compile_kwargs={"render_postcompile": True})
    named = {n for n, _ in _PG_PARAMS}
    stmt = _PgStatement(str(compiled), {k: v for k, v in compiled.params.items() if k not in named})
    _PG_STATEMENTS[key] = stmt
    if len(_PG_STATEMENTS) > _PG_STATEMENTS_MAX:
        _PG_STATEMENTS.popitem(last=False)
    return stmt


def _pg_layer(session: Session, name: str, req: TileRequest, cat: Catalogue, key: tuple, table, id_col, geom_col,
              attrs, where, *, kind: str = "mixed", merc_col=None, pixel_col=None) -> bytes:
    """One layer as ST_AsMVT: the same drops and cap as the Python path (whole-feature size in tile units),
    then ST_AsMVTGeom clips, snaps and validates what is kept."""
    rule = req.rule
    scale = cat.extent / (req.frame.maxx - req.frame.minx)  # tile units per EPSG:3857 metre at this zoom
    thresholds = rule.min_area > 0 or rule.min_length > 0
    minx, miny, maxx, maxy = req.bbox
    values = {"minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy, "scale": scale,
              "scale2": scale * scale, "min_area": rule.min_area, "min_length": rule.min_length,
              "tol": rule.simplify / scale, "max_features": rule.max_features, "z": req.z, "x": req.x, "y": req.y,
              "extent": cat.extent, "buffer": cat.buffer, "name": name}
    # Straight to the driver, in the session's transaction: no SQLAlchemy compile or result layer per tile,
    # and a statement prepared on the server.
    with session.connection().connection.dbapi_connection.cursor() as cursor:
        if kind != "point" and not thresholds and rule.simplify <= 0:
            pixel = pixel_col if pixel_col is not None and (req.z, cat.extent) == prepared.PIXEL_GRID else None
            stmt = _pg_statement(session, key + (kind, "uncapped", pixel is not None), table, id_col, geom_col, attrs,
                                 where, kind=kind, simplify=False, thresholds=False, uncapped=True, merc_col=merc_col,
                                 pixel_col=pixel)
            cursor.execute(stmt.sql, {**stmt.params, **values}, prepare=True)
            data, candidates = cursor.fetchone()
            if candidates <= rule.max_features:
                return bytes(data) if data else b""
        stmt = _pg_statement(session, key + (kind, rule.simplify > 0, thresholds), table, id_col, geom_col, attrs,
                             where, kind=kind, simplify=rule.simplify > 0, thresholds=thresholds, merc_col=merc_col)
        cursor.execute(stmt.sql, {**stmt.params, **values}, prepare=True)
        data = cursor.fetchone()[0]
    return bytes(data) if data else b""


def _pg_render(session: Session, scope: Scope, tileset: str, req: TileRequest, cat: Catalogue, buildings: bool,
               visible_layers: list[Layer] | None) -> bytes:
    out = []
    if tileset == BASEMAP:
        for layer in cat.base_layers:
            if req.z < layer.min_zoom or (layer.source == "buildings" and not buildings):
                continue
            skey = _scope_key(scope)
            if layer.source == "units":
                out.append(_pg_layer(
                    session, layer.id, req, cat, ("units", layer.id, layer.level, skey), Unit.__table__, Unit.id,
                    Unit.__table__.c.geom,
                    lambda: [Unit.code, Unit.name, Unit.name_en, Unit.level,
                             (literal(True) if scope.all_units else scope.covers_clause(Unit.path)).label("covered")],
                    lambda: [Unit.level == layer.level, Unit.__table__.c.geom.is_not(None), scope.sees_clause(Unit.path)],
                    kind="polygon"))
            else:
                storey = layer.storey_height_m
                height = func.coalesce(Building.height_m, cast(func.round(cast(Building.floors * storey, Numeric), 1), Double))
                out.append(_pg_layer(
                    session, layer.id, req, cat, ("buildings", layer.id, storey, skey), Building.__table__, Building.id,
                    Building.__table__.c.footprint,
                    lambda: [Building.code, Building.floors, height.label("height"), Building.use, Building.structure,
                             Building.safety_grade, Building.year_built, Building.grid_code],
                    lambda: [scope.covers_clause(Building.unit_path)], kind="polygon",
                    merc_col=literal_column("buildings.footprint_3857"),
                    pixel_col=literal_column("buildings.footprint_z14")))
        if req.z >= cat.key_layers_min_zoom:
            names = {b.id for b in cat.base_layers}
            for layer in visible_layers if visible_layers is not None else key_layers(session, scope, cat):
                if layer.key not in names and req.z >= cat.key_min_zoom(layer.key):
                    out.append(_pg_layer_features(session, layer, req, cat))
    else:
        out.append(_pg_layer_features(session, layers_service.get_layer(session, tileset, scope), req, cat))
    return b"".join(out)


#: Layer geometry type → the statement's kind (GEOMETRY and collections are decided per row).
_KINDS = {"POINT": "point", "MULTIPOINT": "point", "LINESTRING": "line", "MULTILINESTRING": "line",
          "POLYGON": "polygon", "MULTIPOLYGON": "polygon"}


def _pg_layer_features(session: Session, layer: Layer, req: TileRequest, cat: Catalogue) -> bytes:
    current, _ = featurestore.tables(layer.key, layer.geometry_type)

    def attrs():
        # The feature's own properties win over the default fid, as in the Python path.
        props = func.jsonb_build_object("fid", func.coalesce(current.c.fid, cast(current.c.id, Text))) \
            .op("||")(current.c.properties)
        return [props.label("properties")]

    return _pg_layer(session, layer.key, req, cat, ("layer", layer.key, layer.geometry_type), current, current.c.id,
                     current.c.geom, attrs, lambda: [current.c.geom.is_not(None)], kind=_KINDS.get(layer.geometry_type, "mixed"))


# ------------------------------------------------------------------------------------------ tilesets

def key_layers(session: Session, scope: Scope, cat: Catalogue) -> list[Layer]:
    """Catalogue layers that join the base map (their category is one of ``key_categories``)."""
    return [layer for layer in layers_service.list_layers(session, scope)
            if any(layer.category.startswith(c) for c in cat.key_categories)]


def _scope_key(scope: Scope) -> str:
    return "all" if scope.all_units else _stamp(tuple(sorted(scope.unit_paths)))


class TileService:
    """Rendering with the cache in front; one per application."""

    def __init__(self, cache_dir: Path, catalogue: Catalogue | None = None):
        self.catalogue = catalogue or load_catalogue()
        self.cache = TileCache(cache_dir, self.catalogue.cache_max_bytes)
        self.stamps = Stamps(self.catalogue.cache_check_seconds)

    def tile(self, session: Session, scope: Scope, tileset: str, z: int, x: int, y: int, *,
             buildings: bool = True) -> tuple[bytes, bool]:
        """(MVT bytes, served from cache). ``tileset`` is "basemap" or a layer key; ``buildings``: whether the
        viewer may see buildings (``housing.read``)."""
        cat = self.catalogue
        req = tile_request(cat, z, x, y)
        stamps = self.stamps.get(session)
        visible = None
        if tileset == BASEMAP:
            visible = key_layers(session, scope, cat)
            stamp = _stamp(stamps["units"], stamps["buildings"], sorted(_layer_stamp(layer) for layer in visible))
        else:
            stamp = _layer_stamp(layers_service.get_layer(session, tileset, scope))
        key = f"{_scope_key(scope)}|{int(buildings)}|{z}/{x}/{y}"
        cached = self.cache.get(tileset, stamp, key)
        if cached is not None:
            return cached, True
        data = render(session, scope, tileset, z, x, y, cat, req=req, buildings=buildings, visible_layers=visible)
        self.cache.put(tileset, stamp, key, data)
        return data, False

    def raster(self, session: Session, scope: Scope, style: str, parts: tuple[str, ...], z: int, x: int,
               y: int) -> tuple[bytes, bool]:
        """(PNG bytes, served from cache) of the static base map (``cityops.tiles.raster``): cached beside the vector
        tiles under the stamps of units and the key layers, so the same changes make it stale."""
        from cityops.tiles import raster

        cat = self.catalogue
        tile_request(cat, z, x, y)  # the address is checked before anything is read
        stamps = self.stamps.get(session)
        visible = key_layers(session, scope, cat)
        stamp = _stamp(stamps["units"], sorted(_layer_stamp(layer) for layer in visible))
        key = f"{_scope_key(scope)}|{','.join(parts)}|{z}/{x}/{y}"
        cached = self.cache.get(f"raster/{style}", stamp, key)
        if cached is not None:
            return cached, True
        data = raster.render(session, scope, style, parts, z, x, y, cat, visible)
        self.cache.put(f"raster/{style}", stamp, key, data)
        return data, False

    def changed(self) -> None:
        """This process wrote tile data: re-read the stamps at the next request."""
        self.stamps.refresh()


def render(session: Session, scope: Scope, tileset: str, z: int, x: int, y: int, cat: Catalogue | None = None,
           *, req: TileRequest | None = None, buildings: bool = True,
           visible_layers: list[Layer] | None = None, engine: str = "auto") -> bytes:
    """Render one tile without the cache (``visible_layers``: the base map's key layers, if already known).
    ``engine="python"`` forces the Python path on PostGIS too (the tests compare the two)."""
    cat = cat or load_catalogue()
    req = req or tile_request(cat, z, x, y)
    storage = storage_of(session)
    if storage.spatial_sql and engine != "python":
        return _pg_render(session, scope, tileset, req, cat, buildings, visible_layers)
    tile = mvt.new_tile()
    if tileset == BASEMAP:
        for layer in cat.base_layers:
            if z < layer.min_zoom or (layer.source == "buildings" and not buildings):
                continue
            if layer.source == "buildings":
                _buildings(session, scope, layer, req, storage, tile, cat)
                continue
            got = _units(session, scope, layer, req, storage)
            if got:
                mvt.add_layer(tile, layer.id, *got, extent=cat.extent)
        if z >= cat.key_layers_min_zoom:
            for layer in visible_layers if visible_layers is not None else key_layers(session, scope, cat):
                if layer.key in {b.id for b in cat.base_layers} or z < cat.key_min_zoom(layer.key):
                    continue  # a base layer's name wins (the layer stays reachable as its own tile set); not yet
                got = _layer_features(session, layer, req, storage)
                if got:
                    mvt.add_layer(tile, layer.key, *got, extent=cat.extent)
    else:
        layer = layers_service.get_layer(session, tileset, scope)
        got = _layer_features(session, layer, req, storage)
        if got:
            mvt.add_layer(tile, layer.key, *got, extent=cat.extent)
    return mvt.serialize(tile)


# ---------------------------------------------------------------------------------------- metadata

_FIELD_TYPES = {"string": "String", "integer": "Number", "number": "Number", "boolean": "Boolean",
                "datetime": "String", "json": "String"}
UNIT_FIELDS = {"code": "String", "name": "String", "name_en": "String", "level": "String",
               "covered": "Boolean"}
BUILDING_FIELDS = {"code": "String", "floors": "Number", "height": "Number", "use": "String", "structure": "String",
                   "safety_grade": "String", "year_built": "Number", "grid_code": "String"}


def layer_fields(layer: Layer) -> dict[str, str]:
    fields = {"fid": "String"}
    for a in layer.attribute_schema or []:
        fields[a["name"]] = _FIELD_TYPES.get(a.get("type"), "String")
    return fields


def vector_layers(session: Session, scope: Scope, tileset: str, cat: Catalogue | None = None, *,
                  buildings: bool = True) -> list[dict]:
    """TileJSON ``vector_layers`` of a tile set (also the OGC tileset's ``layers``)."""
    cat = cat or load_catalogue()
    if tileset == BASEMAP:
        out = []
        for b in cat.base_layers:
            if b.source == "buildings" and not buildings:
                continue
            fields = UNIT_FIELDS if b.source == "units" else BUILDING_FIELDS
            desc = {"units": f"行政区划/单元网格 ({b.level})", "buildings": "房屋 buildings: height in metres for 3D"}[b.source]
            out.append({"id": b.id, "fields": dict(fields), "description": desc, "minzoom": b.min_zoom,
                        "maxzoom": cat.max_zoom})
        names = {b.id for b in cat.base_layers}
        for layer in key_layers(session, scope, cat):
            if layer.key not in names:
                out.append({"id": layer.key, "fields": layer_fields(layer), "description": layer.title_zh,
                            "minzoom": cat.key_min_zoom(layer.key), "maxzoom": cat.max_zoom})
        return out
    layer = layers_service.get_layer(session, tileset, scope)
    return [{"id": layer.key, "fields": layer_fields(layer), "description": layer.title_zh,
             "minzoom": cat.min_zoom, "maxzoom": cat.max_zoom}]


def bounds_of(session: Session, scope: Scope, tileset: str) -> list[float] | None:
    if tileset == BASEMAP:
        b = session.execute(select(Unit.geom).where(Unit.level == "district", scope.sees_clause(Unit.path))).scalars().all()
        geoms = [g for g in b if g is not None]
        return list(shapely.total_bounds(np.array(geoms, dtype=object))) if geoms else None
    layer = layers_service.get_layer(session, tileset, scope)
    return [float(v) for v in layer.bounds] if layer.bounds else None


def tilejson(session: Session, scope: Scope, tileset: str, tiles_url: str, cat: Catalogue | None = None, *,
             buildings: bool = True) -> dict:
    """TileJSON 3.0.0 for a tile set; ``tiles_url`` is the absolute {z}/{x}/{y} template."""
    cat = cat or load_catalogue()
    layers = vector_layers(session, scope, tileset, cat, buildings=buildings)
    if tileset == BASEMAP:
        name, description = cat.basemap["title_zh"], cat.basemap["description_zh"]
    else:
        layer = layers_service.get_layer(session, tileset, scope)
        name, description = layer.title_zh, layer.description_zh or layer.title_en
    out = {"tilejson": "3.0.0", "name": name, "description": description, "version": "1.0.0",
           "scheme": "xyz", "tiles": [tiles_url], "minzoom": cat.min_zoom, "maxzoom": cat.max_zoom,
           "vector_layers": layers}
    bounds = bounds_of(session, scope, tileset)
    if bounds:
        out["bounds"] = [round(v, 6) for v in bounds]
        z = 9 if tileset == BASEMAP else 12
        out["center"] = [round((bounds[0] + bounds[2]) / 2, 6), round((bounds[1] + bounds[3]) / 2, 6), z]
    return out


def parse_zxy(z: str | int, x: str | int, y: str | int) -> tuple[int, int, int]:
    try:
        return int(z), int(x), int(y)
    except (TypeError, ValueError):
        raise InvalidInput(f"tile address {z}/{x}/{y} must be three integers") from None

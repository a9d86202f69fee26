"""Mapbox Vector Tile 2.1 encoding, vectorised over a whole layer.

Geometry goes from the canonical CRS (lon/lat) to tile coordinates (EPSG:3857 through pyproj, then the
tile's affine map, y down), is clipped to the tile plus a buffer, simplified, snapped to the integer grid
(which also repairs what snapping breaks) and oriented as MVT wants, all with Shapely's array functions.

Serialisation uses the protobuf schema shipped with ``mapbox-vector-tile`` (``vector_tile_pb2``). The
geometry command stream is written here, with NumPy over every ring of the layer at once: the library's
own encoder walks features one by one in Python, which is several times slower than PostGIS ``ST_AsMVT``
on a dense building tile, and tile speed is a stated target (see docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely
from mapbox_vector_tile.Mapbox import vector_tile_pb2
from pyproj import Transformer

MOVE_TO, LINE_TO, CLOSE_PATH = 1, 2, 7
POINT, LINESTRING, POLYGON = 1, 2, 3
MEDIA_TYPE = "application/vnd.mapbox-vector-tile"


@lru_cache(maxsize=1)
def _to_mercator() -> Transformer:
    # Canonical storage is CGCS2000 lon/lat; WGS84 is treated as identical (docs/architecture.md).
    return Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


@dataclass(frozen=True)
class TileFrame:
    """A tile's place in EPSG:3857 and its integer grid: ``extent`` units across, ``buffer`` beyond."""

    minx: float
    miny: float
    maxx: float
    maxy: float
    extent: int = 4096
    buffer: int = 64

    def to_tile(self, geoms: np.ndarray) -> np.ndarray:
        """lon/lat geometries → tile coordinates (floats, y down)."""
        fwd = _to_mercator()
        sx = self.extent / (self.maxx - self.minx)
        sy = self.extent / (self.maxy - self.miny)

        def transform(coords: np.ndarray) -> np.ndarray:
            x, y = fwd.transform(coords[:, 0], coords[:, 1])
            return np.column_stack(((np.asarray(x) - self.minx) * sx, (self.maxy - np.asarray(y)) * sy))

        return shapely.transform(geoms, transform)


def prepare(geoms: np.ndarray, frame: TileFrame, *, simplify: float = 0.0) -> np.ndarray:
    """lon/lat geometry → tile-space geometry ready for encoding (see prepare_tile)."""
    return prepare_tile(frame.to_tile(np.asarray(geoms, dtype=object)), frame, simplify=simplify)


def prepare_tile(geoms: np.ndarray, frame: TileFrame, *, simplify: float = 0.0) -> np.ndarray:
    """Tile-coordinate geometry → clipped, simplified, snapped, oriented; empty where nothing is left."""
    geoms = np.array(geoms, dtype=object)
    b = frame.buffer
    lo, hi = -b, frame.extent + b
    # Clip only what crosses the buffered tile edge (most features of a dense tile lie inside it).
    bounds = shapely.bounds(geoms)
    crossing = ~((bounds[:, 0] >= lo) & (bounds[:, 1] >= lo) & (bounds[:, 2] <= hi) & (bounds[:, 3] <= hi))
    if crossing.any():
        geoms[crossing] = shapely.clip_by_rect(geoms[crossing], lo, lo, hi, hi)
    if simplify > 0:
        geoms = shapely.simplify(geoms, simplify, preserve_topology=True)
    # Snap to the integer grid MVT stores, then repair only what snapping broke (as ST_AsMVTGeom does):
    # rounding is exact for the valid majority, and a full set_precision on every feature costs ~5x more.
    geoms = shapely.transform(geoms, np.rint)
    types = shapely.get_type_id(geoms)
    polygonal = (types == 3) | (types == 6)
    if polygonal.any():
        broken = polygonal & ~shapely.is_valid(geoms)
        if broken.any():
            fixed = shapely.make_valid(geoms[broken], method="structure", keep_collapsed=False)
            geoms[broken] = shapely.set_precision(fixed, 1.0)  # back on the grid after repair
        # MVT: exterior rings have positive area in tile coordinates (y down) — shapely's "counter-clockwise".
        geoms[polygonal] = shapely.orient_polygons(geoms[polygonal], exterior_cw=False)
    return geoms


def _zigzag(v: np.ndarray) -> np.ndarray:
    return (v << 1) ^ (v >> 63)


def _command(cmd: int, count: np.ndarray | int):
    return (np.asarray(count, dtype=np.int64) << 3) | cmd


def _feature_streams(points: np.ndarray, ring_start: np.ndarray, ring_len: np.ndarray, ring_feature: np.ndarray,
                     n_features: int, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """Command streams of all features, concatenated, and each feature's [start, end) offsets into it,
    from the flattened vertices of all parts.

    ``points``: int64 (n, 2) vertices, closing vertices already dropped for rings; ``ring_*``: each part's first
    vertex, vertex count and feature index. Deltas run from the previous vertex of the same feature (the
    cursor carries across parts) and from (0, 0) at a feature's first vertex."""
    deltas = np.diff(points, axis=0, prepend=np.zeros((1, 2), dtype=np.int64))
    first_of_feature = np.zeros(len(points), dtype=bool)
    if len(ring_start):
        starts = ring_start[np.r_[True, ring_feature[1:] != ring_feature[:-1]]]
        first_of_feature[starts] = True
    deltas[first_of_feature] = points[first_of_feature]
    zz = _zigzag(deltas)

    if kind == POINT:
        # One MoveTo with every point of the feature.
        per_feature = np.bincount(ring_feature, weights=ring_len, minlength=n_features).astype(np.int64)
        out_len = np.where(per_feature > 0, 1 + 2 * per_feature, 0)
        out = np.empty(int(out_len.sum()), dtype=np.int64)
        feat_off = np.r_[0, np.cumsum(out_len)[:-1]]
        present = per_feature > 0
        out[feat_off[present]] = _command(MOVE_TO, per_feature[present])
        vertex_feature = np.repeat(ring_feature, ring_len)
        vertex_rank = _rank_within(vertex_feature, len(points))
        pos = feat_off[vertex_feature] + 1 + 2 * vertex_rank
        out[pos], out[pos + 1] = zz[:, 0], zz[:, 1]
        return out, np.r_[0, np.cumsum(out_len)]

    closes = 1 if kind == POLYGON else 0
    part_out = 3 + 1 + 2 * (ring_len - 1) + closes  # MoveTo x y, LineTo(n-1) deltas…, [ClosePath]
    out = np.empty(int(part_out.sum()), dtype=np.int64)
    part_off = np.r_[0, np.cumsum(part_out)[:-1]].astype(np.int64)
    out[part_off] = _command(MOVE_TO, 1)
    out[part_off + 1], out[part_off + 2] = zz[ring_start, 0], zz[ring_start, 1]
    out[part_off + 3] = _command(LINE_TO, ring_len - 1)
    if closes:
        out[part_off + part_out - 1] = _command(CLOSE_PATH, 1)
    vertex_part = np.repeat(np.arange(len(ring_len)), ring_len)
    rank = np.arange(len(points)) - ring_start[vertex_part]
    rest = rank > 0
    pos = part_off[vertex_part[rest]] + 4 + 2 * (rank[rest] - 1)
    out[pos], out[pos + 1] = zz[rest, 0], zz[rest, 1]
    feature_len = np.bincount(ring_feature, weights=part_out, minlength=n_features).astype(np.int64)
    return out, np.r_[0, np.cumsum(feature_len)]


def _rank_within(groups: np.ndarray, n: int) -> np.ndarray:
    """0, 1, 2 … within each run of equal (sorted) group labels."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[True, groups[1:] != groups[:-1]]
    idx = np.arange(n)
    return idx - np.maximum.accumulate(np.where(starts, idx, 0))


def _parts(geoms: np.ndarray, kind: int):
    """Flattened vertices and parts (rings or lines or points) of the layer's geometries."""
    parts, part_feature = shapely.get_parts(geoms, return_index=True)
    if kind == POLYGON:
        rings, ring_parent = shapely.get_rings(parts, return_index=True)
        part_feature = part_feature[ring_parent]
        parts = rings
    coords, vertex_part = shapely.get_coordinates(parts, return_index=True)
    counts = np.bincount(vertex_part, minlength=len(parts))
    if kind == POLYGON:
        # Rings repeat their first vertex at the end; MVT closes with ClosePath instead.
        ends = np.cumsum(counts) - 1
        keep = np.ones(len(coords), dtype=bool)
        keep[ends[counts > 0]] = False
        coords = coords[keep]
        counts = np.maximum(counts - 1, 0)
    points = np.rint(coords).astype(np.int64)
    if kind != POINT and len(points):
        # Drop vertices that repeat the previous one of the same part (snapping makes them).
        vertex_part = np.repeat(np.arange(len(counts)), counts)
        same = np.r_[False, (points[1:] == points[:-1]).all(axis=1) & (vertex_part[1:] == vertex_part[:-1])]
        if same.any():
            points, vertex_part = points[~same], vertex_part[~same]
            counts = np.bincount(vertex_part, minlength=len(counts))
            if kind == POLYGON:
                # A ring's last vertex may now repeat its first.
                starts = np.r_[0, np.cumsum(counts)[:-1]]
                ends = starts + counts - 1
                multi = np.flatnonzero(counts > 1)
                loop = multi[(points[ends[multi]] == points[starts[multi]]).all(axis=1)]
                if len(loop):
                    drop = np.zeros(len(points), dtype=bool)
                    drop[ends[loop]] = True
                    points, vertex_part = points[~drop], vertex_part[~drop]
                    counts = np.bincount(vertex_part, minlength=len(counts))
    ok = counts >= (3 if kind == POLYGON else 2 if kind == LINESTRING else 1)
    if not ok.all():
        vertex_ok = np.repeat(ok, counts)
        points, counts, part_feature = points[vertex_ok], counts[ok], part_feature[ok]
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    return points, starts, counts.astype(np.int64), part_feature.astype(np.int64)


_KIND = {0: POINT, 4: POINT, 1: LINESTRING, 2: LINESTRING, 5: LINESTRING, 3: POLYGON, 6: POLYGON}
#: Shapely type id (0..7) → MVT kind; 0 for collections, which are not encoded.
_KIND_OF_TYPE = np.array([_KIND.get(i, 0) for i in range(8)])


class _Values:
    """The layer's value dictionary: one entry per distinct (type, value)."""

    def __init__(self, layer):
        self.layer = layer
        self.index: dict = {}

    def add(self, value, key) -> int:
        cls = value.__class__
        values = self.layer.values
        if cls is str:
            values.add(string_value=value)
        elif cls is float:
            values.add(double_value=value)
        elif cls is bool:
            values.add(bool_value=value)
        elif isinstance(value, int):
            if value < 0:
                values.add(sint_value=value)
            else:
                values.add(uint_value=value)
        elif isinstance(value, float):
            values.add(double_value=float(value))
        else:
            values.add(string_value=str(value))
        n = self.index[key] = len(self.index)
        return n

    def column(self, col: list) -> list[int]:
        """Value indices of a column; -1 where the feature has no (encodable) value."""
        index, add, out = self.index, self.add, []
        append = out.append
        for v in col:
            if v is None or v.__class__ in _SKIP:
                append(-1)
                continue
            key = (v.__class__, v)  # 1, 1.0 and True are distinct MVT values
            j = index.get(key)
            append(add(v, key) if j is None else j)
        return out


_SKIP = (dict, list)


def _tags(layer, keys: dict, values: _Values, props: list[dict]) -> list[list[int]]:
    """Each feature's tags [key, value, key, value …], built column by column."""
    names = list(dict.fromkeys(k for p in props for k in p))
    for k in names:
        if k not in keys:
            keys[k] = len(keys)
            layer.keys.append(k)
    if not names:
        return [[] for _ in props]
    vidx = np.array([values.column([p.get(k) for p in props]) for k in names], dtype=np.int64).T  # (F, K)
    kidx = np.broadcast_to(np.array([keys[k] for k in names], dtype=np.int64), vidx.shape)
    pairs = np.stack((kidx, vidx), axis=2).reshape(len(props), -1)
    rows = pairs.tolist()
    missing = (vidx < 0).any(axis=1)
    for f in np.flatnonzero(missing):
        keep = vidx[f] >= 0
        rows[f] = pairs[f].reshape(-1, 2)[keep].ravel().tolist()
    # Unused keys (only ever None) stay in the dictionary: harmless, and rare.
    return rows


def add_layer(tile, name: str, geoms: np.ndarray, ids: list[int] | None, properties: list[dict], *,
              extent: int = 4096) -> int:
    """Append one layer of prepared (tile-space) geometries to ``tile``; returns the feature count.

    Features whose geometry is empty are left out. Mixed geometry kinds are written kind by kind."""
    geoms = np.asarray(geoms, dtype=object)
    type_ids = shapely.get_type_id(geoms)
    nonempty = ~shapely.is_empty(geoms) & (type_ids >= 0)
    layer = tile.layers.add()
    layer.version = 2
    layer.name = name
    layer.extent = extent
    keys: dict[str, int] = {}
    values = _Values(layer)
    written = 0
    kinds = _KIND_OF_TYPE[np.clip(type_ids, 0, 7)]
    for kind in (POLYGON, LINESTRING, POINT):
        select = np.flatnonzero(nonempty & (kinds == kind))
        if not len(select):
            continue
        points, starts, counts, part_feature = _parts(geoms[select], kind)
        stream, offsets = _feature_streams(points, starts, counts, part_feature, len(select), kind)
        flat = stream.tolist()
        offsets = offsets.tolist()
        tags = _tags(layer, keys, values, [properties[i] for i in select])
        add = layer.features.add
        for j, i in enumerate(select.tolist()):
            a, b = offsets[j], offsets[j + 1]
            if a == b:
                continue  # every part collapsed
            if ids is not None and ids[i] is not None:
                add(id=int(ids[i]), type=kind, tags=tags[j], geometry=flat[a:b])
            else:
                add(type=kind, tags=tags[j], geometry=flat[a:b])
            written += 1
    return written


def new_tile():
    return vector_tile_pb2.tile()


def serialize(tile) -> bytes:
    return tile.SerializeToString()

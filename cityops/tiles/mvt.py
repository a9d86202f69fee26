"""Mapbox Vector Tile 2.1 encoding, vectorised over a whole layer.

Geometry goes from the canonical CRS (lon/lat) to tile coordinates (EPSG:3857 through pyproj, then the
tile's affine map, y down), is clipped to the tile plus a buffer, simplified, snapped to the integer grid
(which also repairs what snapping breaks) and oriented as MVT wants, all with Shapely's array functions.

The protobuf is written here, vectorised: geometry command streams with NumPy over every ring of the
layer at once, tags column by column through each column's distinct values, and every Feature message of
a layer as one array of varints. Encoders that build a message per feature (``mapbox-vector-tile``, the
generated protobuf classes) spend their time in a Python call per feature, several times PostGIS
``ST_AsMVT`` on a dense building tile, and tile speed is a stated target (see docs/benchmarks.md). No
compiled MVT encoder on PyPI takes Shapely arrays in and is kept up to date; ``mapbox-vector-tile`` still
decodes tiles in the tests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
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
    """Tile-coordinate geometry → clipped, simplified, snapped (and valid); empty where nothing is left.
    Ring orientation is the encoder's (add_layer)."""
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
    return snap(geoms)


def snap(geoms: np.ndarray) -> np.ndarray:
    """Geometry snapped to the integer grid MVT stores, repaired only where snapping broke it (as ST_AsMVTGeom
    does): rounding is exact for the valid majority, and a full set_precision on every feature costs ~5x more."""
    geoms = shapely.transform(np.array(geoms, dtype=object), np.rint)
    types = shapely.get_type_id(geoms)
    polygonal = (types == 3) | (types == 6)
    if polygonal.any():
        broken = polygonal & ~shapely.is_valid(geoms)
        if broken.any():
            fixed = shapely.make_valid(geoms[broken], method="structure", keep_collapsed=False)
            geoms[broken] = shapely.set_precision(fixed, 1.0)  # back on the grid after repair
    # Rings are oriented as MVT wants when they are encoded (_parts), from the coordinates read there.
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
        feat_off = np.cumsum(out_len) - out_len
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
    part_off = (np.cumsum(part_out) - part_out).astype(np.int64)
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


def _ragged(geoms: np.ndarray, kind: int):
    """(coords, part_offsets, part_feature, exterior) of one kind's geometries: parts are rings (polygons:
    exterior, then holes, part by part), lines or points, in feature order. (GEOS's parts, rings and
    coordinates as arrays; shapely.to_ragged_array gives the same layout but was slower here.)"""
    parts, part_feature = shapely.get_parts(geoms, return_index=True)
    exterior = None
    if kind == POLYGON:
        rings, ring_parent = shapely.get_rings(parts, return_index=True)
        part_feature = part_feature[ring_parent]
        exterior = np.r_[True, ring_parent[1:] != ring_parent[:-1]] if len(rings) else np.zeros(0, dtype=bool)
        parts = rings
    coords, vertex_part = shapely.get_coordinates(parts, return_index=True)
    counts = np.bincount(vertex_part, minlength=len(parts))
    return coords, np.r_[0, np.cumsum(counts)], part_feature, exterior


def _orient(points: np.ndarray, starts: np.ndarray, counts: np.ndarray, exterior: np.ndarray) -> np.ndarray:
    """Rings (closing vertex included) reordered so that exteriors have positive and holes negative area in
    tile coordinates (y down): what MVT 2.1 asks, and what shapely.orient_polygons(exterior_cw=False) gives.
    The coordinates are integers, so the shoelace sums are exact."""
    if not len(points):
        return points
    x, y = points[:, 0], points[:, 1]
    cross = x[:-1] * y[1:] - x[1:] * y[:-1]
    ring_of = np.repeat(np.arange(len(counts)), counts)
    same = ring_of[:-1] == ring_of[1:]  # pairs inside one ring
    area2 = np.bincount(ring_of[:-1][same], weights=cross[same], minlength=len(counts))
    flip = np.where(exterior, area2 <= 0, area2 > 0)
    if not flip.any():
        return points
    order = np.arange(len(points))
    vertex_flip = flip[ring_of]
    ends = starts + counts - 1
    order[vertex_flip] = (starts + ends)[ring_of[vertex_flip]] - order[vertex_flip]
    return points[order]


def _parts(geoms: np.ndarray, kind: int):
    """Flattened vertices and parts (rings or lines or points) of the layer's geometries; rings oriented."""
    coords, offsets, part_feature, exterior = _ragged(geoms, kind)
    counts = np.diff(offsets).astype(np.int64)
    points = np.rint(coords).astype(np.int64)
    if kind == POLYGON:
        points = _orient(points, offsets[:-1].astype(np.int64), counts, exterior)
        # Rings repeat their first vertex at the end; MVT closes with ClosePath instead.
        ends = np.cumsum(counts) - 1
        keep = np.ones(len(points), dtype=bool)
        keep[ends[counts > 0]] = False
        points = points[keep]
        counts = np.maximum(counts - 1, 0)
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
    starts = (np.cumsum(counts) - counts).astype(np.int64)
    return points, starts, counts.astype(np.int64), part_feature.astype(np.int64)


_KIND = {0: POINT, 4: POINT, 1: LINESTRING, 2: LINESTRING, 5: LINESTRING, 3: POLYGON, 6: POLYGON}
#: Shapely type id (0..7) → MVT kind; 0 for collections, which are not encoded.
_KIND_OF_TYPE = np.array([_KIND.get(i, 0) for i in range(8)])


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_bytes(key: int, data: bytes) -> bytes:
    """A length-delimited field: key, length, data."""
    return bytes((key,)) + _varint(len(data)) + data


def value_field(value) -> bytes:
    """One Layer.values field (key 4, length-prefixed Value message) of a str, bool, float or int value; other
    values are written as their text. The same bytes as the column-wise writer (``_value_fields``)."""
    cls = value.__class__
    if cls is str:
        data = value.encode()
        n = len(data)
        # Short strings (nearly all) in one step: both lengths fit a single byte.
        field = bytes((0x22, n + 2, 0x0A, n)) + data if n < 126 else _field_bytes(0x22, _field_bytes(0x0A, data))
    elif cls is bool:
        field = b"\x22\x02\x38\x01" if value else b"\x22\x02\x38\x00"
    elif cls is float or isinstance(value, float):
        field = b"\x22\x09\x19" + struct.pack("<d", float(value))
    elif isinstance(value, int):
        value = int(value)
        if 0 <= value < 128:
            field = bytes((0x22, 2, 0x28, value))
        else:
            msg = b"\x30" + _varint((value << 1) ^ (value >> 63)) if value < 0 else b"\x28" + _varint(value)
            field = _field_bytes(0x22, msg)
    else:
        field = _field_bytes(0x22, _field_bytes(0x0A, str(value).encode()))
    return field


class _Values:
    """The layer's value dictionary (Layer.values; Value message: 1 string, 3 double, 5 uint, 6 sint (zigzag),
    7 bool). Columns of one type are encoded together, as NumPy byte arrays: every distinct value of every
    such column in one np.unique per type, each written once (a Python call per distinct value was a fifth
    of a dense tile's time; every building code is distinct). Columns of mixed or nested values go value by
    value (``add``)."""

    def __init__(self):
        self.index: dict = {}
        self.fields: list[bytes] = []
        self.count = 0

    def add(self, value, key) -> int:
        field = value_field(value)
        self.fields.append(field)
        n = self.index[key] = self.count
        self.count += 1
        return n

    def columns(self, columns: list[list]) -> np.ndarray:
        """(F, K) value indices of the columns; -1 where a feature has no (encodable) value. Columns of one
        type become Arrow arrays; those of a type are dictionary-encoded together (a hash table in C), and
        the dictionary is written from Arrow's buffers."""
        n = len(columns[0]) if columns else 0
        out = np.full((n, len(columns)), -1, dtype=np.int64)
        if not n:
            return out
        typed: dict[type, list] = {}
        for j, col in enumerate(columns):
            if isinstance(col, pa.Array) and col.type in _CLASS_OF:  # typed by the caller already
                typed.setdefault(_CLASS_OF[col.type], []).append((j, col))
                continue
            types = set(map(type, col))
            types.discard(type(None))
            cls = types.pop() if len(types) == 1 else None
            if cls in _ARROW_TYPES:
                try:
                    array = pa.array(col, type=_ARROW_TYPES[cls])
                except (OverflowError, pa.ArrowException):
                    array = None  # integers beyond 64 bits: value by value
                if array is not None:
                    typed.setdefault(cls, []).append((j, array))
                    continue
            if types or cls is not None:
                out[:, j] = self._column_slow(col)
        for cls, cols in typed.items():
            encoded = pa.concat_arrays([a for _, a in cols]).dictionary_encode()
            indices = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
            codes = np.where(indices >= 0, indices + self.count, -1)
            self.count += len(encoded.dictionary)
            self.fields.append(_value_fields(cls, encoded.dictionary))
            for at, (j, _) in zip(range(0, len(codes), n), cols):
                out[:, j] = codes[at:at + n]
        return out

    def _column_slow(self, col: list) -> np.ndarray:
        index, add, out = self.index, self.add, []
        append = out.append
        for v in col:
            if v is None or v.__class__ in _SKIP:
                append(-1)
                continue
            key = (v.__class__, v)  # 1, 1.0 and True are distinct MVT values
            j = index.get(key)
            append(add(v, key) if j is None else j)
        return np.array(out, dtype=np.int64)


#: Column types encoded through Arrow.
_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
_CLASS_OF = {t: cls for cls, t in _ARROW_TYPES.items()}
_SKIP = (dict, list)


def _framed(key: int, flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``key varint(len) body`` for each body of ``flat`` (bodies concatenated, ``lengths`` long), as bytes."""
    lengths = lengths.astype(np.int64)
    size = _varint_sizes(lengths.astype(np.uint64))
    total = 1 + size + lengths
    starts = np.concatenate(([0], np.cumsum(total)[:-1])).astype(np.int64)
    out = np.empty(int(total.sum()), dtype=np.uint8)
    out[starts] = key
    _place(out, starts + 1, size, np.frombuffer(_varints(lengths), dtype=np.uint8))
    _place(out, starts + 1 + size, lengths, flat)
    return out


def _value_fields(cls: type, values: pa.Array) -> bytes:
    """Layer.values fields (key 4) of distinct values of one type (an Arrow array without nulls)."""
    k = len(values)
    if cls is str:
        offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + k + 1]
        data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if k and offsets[-1] > offsets[0] else \
            np.zeros(0, dtype=np.uint8)
        lengths = np.diff(offsets).astype(np.int64)
        if k and lengths.max() < 126:
            # Short strings (nearly all): 0x22 (n + 2) 0x0A n data, both lengths single bytes.
            start = np.arange(k, dtype=np.int64) * 4 + (offsets[:-1] - offsets[0])
            out = np.empty(4 * k + int(lengths.sum()), dtype=np.uint8)
            out[start], out[start + 1], out[start + 2], out[start + 3] = 0x22, lengths + 2, 0x0A, lengths
            _place(out, start + 4, lengths, data[offsets[0]:offsets[-1]])
            return out.tobytes()
        inner = _framed(0x0A, data[offsets[0]:offsets[-1]], lengths)
        inner_len = 1 + _varint_sizes(lengths.astype(np.uint64)) + lengths
    elif cls is float:
        inner = np.empty((k, 9), dtype=np.uint8)
        inner[:, 0] = 0x19
        inner[:, 1:] = values.to_numpy().astype("<f8").view(np.uint8).reshape(k, 8)
        inner, inner_len = inner.reshape(-1), np.full(k, 9, dtype=np.int64)
    elif cls is bool:
        inner = np.empty((k, 2), dtype=np.uint8)
        inner[:, 0], inner[:, 1] = 0x38, values.to_numpy(zero_copy_only=False).astype(np.uint8)
        inner, inner_len = inner.reshape(-1), np.full(k, 2, dtype=np.int64)
    else:  # int: uint (5) when not negative, else sint (6, zigzag)
        v = values.to_numpy().astype(np.int64)
        negative = v < 0
        u = np.where(negative, (v << 1) ^ (v >> 63), v).astype(np.uint64)
        inner_len = 1 + _varint_sizes(u)
        starts = np.concatenate(([0], np.cumsum(inner_len)[:-1])).astype(np.int64)
        inner = np.empty(int(inner_len.sum()), dtype=np.uint8)
        inner[starts] = np.where(negative, 0x30, 0x28)
        _place(inner, starts + 1, inner_len - 1, np.frombuffer(_varints(u), dtype=np.uint8))
    return _framed(0x22, inner, inner_len).tobytes()


def _columns(properties) -> dict[str, list]:
    """Properties as columns: a dict of equally long lists already, or one dict per feature."""
    if isinstance(properties, dict):
        return properties
    names = dict.fromkeys(k for p in properties for k in p)
    return {k: [p.get(k) for p in properties] for k in names}


def _tag_matrix(values: _Values, columns: dict[str, list], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(F, K) key and value indices of every feature's tags, column by column; value -1 = no tag."""
    names = list(columns)
    if not names:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.int64)
    vidx = values.columns([columns[k] for k in names]).reshape(n, len(names))
    kidx = np.broadcast_to(np.arange(len(names), dtype=np.int64), vidx.shape)
    return kidx, vidx


# --- protobuf, written with NumPy ------------------------------------------------------------------
# The Feature messages of a layer are written here as one vectorised stream: with the generated protobuf
# classes (or mapbox-vector-tile's encoder) each feature is a Python call, which was most of the time of a
# dense z14 tile. Field keys are single-byte varints, so a feature is a sequence of varints:
#   0x12 len (Layer.features)  0x08 id  0x12 len tags…  0x18 type  0x22 len geometry…
# The layer's own fields (name, keys, values, extent, version) are a few bytes each, written below.

def _unsigned(v) -> np.ndarray:
    """Integers as the unsigned 64-bit values their varints encode (a negative int64 in two's complement, no copy)."""
    v = np.asarray(v)
    return v.astype(np.int64, copy=False).view(np.uint64) if v.dtype.kind == "i" else v


def _varint_sizes(v: np.ndarray) -> np.ndarray:
    """Bytes of each integer as a varint (a negative int64 as protobuf writes it, 10 bytes): one comparison pass per
    byte of the largest."""
    v = _unsigned(v)
    sizes = np.ones(v.shape, dtype=np.int64)
    top = int(v.max()) if v.size else 0
    limit = 1 << 7
    while limit <= top:
        sizes += v >= limit
        limit <<= 7
    return sizes


def _varint_bytes(v: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The varints of non-negative integers (any shape, row-major order; ``sizes``: ``_varint_sizes``, 0 to leave
    a cell out) as one uint8 array: a (…, bytes) matrix written one byte plane at a time, then the written cells
    kept (one pass per output byte with repeat/arange was several times slower)."""
    width = int(sizes.max()) if sizes.size else 0
    out = np.empty(np.shape(v) + (width,), dtype=np.uint8)
    written = np.empty(out.shape, dtype=bool)
    rest = _unsigned(v)
    for b in range(width):
        out[..., b] = (rest & 0x7F).astype(np.uint8) | ((sizes > b + 1).view(np.uint8) << 7)
        written[..., b] = sizes > b
        rest = rest >> 7
    return out.reshape(-1).compress(written.reshape(-1))


def _varints(v: np.ndarray) -> bytes:
    """Protobuf base-128 varints of non-negative integers, in one pass."""
    v = np.asarray(v, dtype=np.uint64)
    return _varint_bytes(v, _varint_sizes(v)).tobytes()


def _segment_sums(sizes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of ``sizes`` over each [offsets[i], offsets[i+1]) segment."""
    cs = np.concatenate(([0], np.cumsum(sizes)))
    return cs[offsets[1:]] - cs[offsets[:-1]]


def _place(tokens: np.ndarray, starts: np.ndarray, counts: np.ndarray, flat: np.ndarray) -> None:
    """Write each feature's run of ``flat`` (``counts`` long, concatenated) at its ``starts`` in ``tokens``."""
    if not len(flat):
        return
    owner = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    tokens[starts[owner] + rank] = flat


def _features_bytes(kind: int, ids: np.ndarray, has_id: np.ndarray, tag_counts: np.ndarray, tags: np.ndarray,
                    geom_offsets: np.ndarray, geometry: np.ndarray, tails: np.ndarray | None = None,
                    tail_len: np.ndarray | None = None, tail_start: np.ndarray | None = None) -> bytes:
    """The Feature messages (with their Layer.features keys) of one geometry kind, as bytes.

    ``tails``/``tail_len``: bytes already encoded that end each feature's geometry (concatenated, and each
    feature's length), written after its ``geometry`` varints: the prepared part of a geometry (prepared.py).
    ``tail_start``: where each feature's tail starts in ``tails`` when they are not consecutive."""
    geom_counts = np.diff(geom_offsets)
    tag_offsets = np.concatenate(([0], np.cumsum(tag_counts)))
    tag_len = _segment_sums(_varint_sizes(tags.astype(np.uint64)), tag_offsets)
    geom_len = _segment_sums(_varint_sizes(geometry.astype(np.uint64)), geom_offsets)
    if tails is not None:
        geom_len = geom_len + tail_len
    has_tags = tag_counts > 0
    body = (np.where(has_id, 1 + _varint_sizes(ids.astype(np.uint64)), 0)
            + np.where(has_tags, 1 + _varint_sizes(tag_len.astype(np.uint64)) + tag_len, 0)
            + 2 + 1 + _varint_sizes(geom_len.astype(np.uint64)) + geom_len)
    count = 10 + tag_counts + geom_counts  # tokens per feature, before the absent id / tags keys are dropped
    base = np.concatenate(([0], np.cumsum(count)[:-1])).astype(np.int64)
    tokens = np.zeros(int(count.sum()), dtype=np.uint64)
    keep = np.ones(len(tokens), dtype=bool)
    tokens[base], tokens[base + 1] = 0x12, body
    tokens[base + 2], tokens[base + 3] = 0x08, ids
    keep[base + 2] = keep[base + 3] = has_id
    tokens[base + 4], tokens[base + 5] = 0x12, tag_len
    keep[base + 4] = keep[base + 5] = has_tags
    _place(tokens, base + 6, tag_counts, tags)
    after = base + 6 + tag_counts
    tokens[after], tokens[after + 1], tokens[after + 2], tokens[after + 3] = 0x18, kind, 0x22, geom_len
    _place(tokens, after + 4, geom_counts, geometry)
    tokens = tokens[keep]
    if tails is None:
        return _varints(tokens)
    # Each feature's varints, then its tail: two scatters into the output.
    head = np.frombuffer(_varints(tokens), dtype=np.uint8)
    kept = count - 2 * ~has_id - 2 * ~has_tags
    head_len = _segment_sums(_varint_sizes(tokens), np.concatenate(([0], np.cumsum(kept))))
    start = np.concatenate(([0], np.cumsum(head_len + tail_len)[:-1])).astype(np.int64)
    out = np.empty(len(head) + int(tail_len.sum()), dtype=np.uint8)
    _place(out, start, head_len, head)
    if tail_start is None:
        _place(out, start + head_len, tail_len, tails)
    else:
        _gather(out, start + head_len, tail_len, tails, tail_start)
    return out.tobytes()


def _gather(out: np.ndarray, starts: np.ndarray, counts: np.ndarray, src: np.ndarray, src_starts: np.ndarray) -> None:
    """Copy run i of ``src`` (``counts[i]`` long from ``src_starts[i]``) to ``starts[i]`` in ``out``."""
    total = int(counts.sum())
    if not total:
        return
    shift = np.repeat(starts - np.cumsum(counts) + counts, counts)  # out position minus rank
    rank = np.arange(total)
    out[shift + rank] = src[np.repeat(src_starts - np.cumsum(counts) + counts, counts) + rank]


def _layer_message(name: str, columns, values: list[bytes], extent: int, features: list[bytes]) -> bytes:
    # Layer: 15 version, 1 name, 3 keys, 4 values, 5 extent, 2 features.
    head = [b"\x78\x02", _field_bytes(0x0A, name.encode())]
    head += [_field_bytes(0x1A, k.encode()) for k in columns]
    head += values
    head.append(b"\x28" + _varint(extent))
    return b"".join(head) + b"".join(features)


def add_encoded_layer(tile: "Tile", name: str, kind: int, ids: np.ndarray, columns: dict,
                      geometry: np.ndarray, geom_offsets: np.ndarray, tails: np.ndarray, tail_len: np.ndarray,
                      tail_start: np.ndarray | None = None, *, extent: int = 4096) -> int:
    """Append a layer of one geometry kind whose features' geometry is already encoded: for feature i the command
    varints ``geometry[geom_offsets[i]:geom_offsets[i + 1]]`` followed by ``tail_len[i]`` bytes of ``tails``
    (varints too), from ``tail_start[i]`` (default: the tails are consecutive, in feature order). ``ids``:
    unsigned feature ids; ``columns``: equally long lists or Arrow arrays (string, int64, float64, bool)."""
    n = len(ids)
    values = _Values()
    kidx, vidx = _tag_matrix(values, columns, n)
    valid = vidx >= 0
    tags = np.stack((kidx, vidx), axis=2)[valid].reshape(-1)
    data = _features_bytes(kind, np.asarray(ids, dtype=np.int64), np.ones(n, dtype=bool), valid.sum(axis=1) * 2, tags,
                           np.asarray(geom_offsets, dtype=np.int64), np.asarray(geometry, dtype=np.int64),
                           np.asarray(tails, dtype=np.uint8), np.asarray(tail_len, dtype=np.int64),
                           None if tail_start is None else np.asarray(tail_start, dtype=np.int64))
    tile.layers.append(_layer_message(name, columns, values.fields, extent, [data]))
    return n


def add_prepared_layer(tile: "Tile", name: str, kind: int, keys: list[str], ids: np.ndarray, fields: pa.BinaryArray,
                       value_index: np.ndarray, geometry: np.ndarray, geometry_count: np.ndarray, data: np.ndarray,
                       tail_start: np.ndarray, tail_len: np.ndarray, *, extent: int = 4096) -> int:
    """Append a layer whose features' attribute values and most of their geometry are already encoded.

    Value k of feature i is ``fields[value_index[i, k]]``, a whole Layer.values field (``value_field``; -1: no
    tag): the value dictionary is then a hash of byte strings (Arrow's ``dictionary_encode``, in C) over the
    fields taken in feature order, and its entries are written as they are (equal bytes are equal typed values,
    as a field starts with the Value's type). Feature i's geometry is its first ``geometry_count[i]`` command
    integers of ``geometry`` (n, G), then ``tail_len[i]`` bytes of ``data`` (varints already) from
    ``tail_start[i]``. ``ids``: unsigned feature ids.

    Every Feature message is written in one pass over a fixed-width matrix of its integers (keys, lengths, id,
    tags, the geometry's head), each cell's varint bytes selected by a mask, and one gather of those bytes and
    the tails: a few dozen NumPy calls per layer whatever its size (a chain of per-token passes was two thirds
    of a dense z14 tile's CPU)."""
    n, nkeys = value_index.shape
    used = value_index >= 0
    encoded = fields.take(pa.array(value_index[used])).dictionary_encode()
    dictionary = encoded.dictionary
    d_off = np.frombuffer(dictionary.buffers()[1], dtype=np.int32)[dictionary.offset:dictionary.offset + len(dictionary) + 1]
    values = [np.frombuffer(dictionary.buffers()[2], dtype=np.uint8)[d_off[0]:d_off[-1]].tobytes()] if len(dictionary) else []
    # Feature: 0x12 len | 0x08 id | 0x12 len tags… | 0x18 type | 0x22 len geometry head… (tail after)
    g = geometry.shape[1]
    tag0 = 6
    geo0 = tag0 + 2 * nkeys + 4
    tokens = np.zeros((n, geo0 + g), dtype=np.int64)
    live = np.ones(tokens.shape, dtype=bool)
    tokens[:, 0], tokens[:, 2], tokens[:, 3], tokens[:, 4] = 0x12, 0x08, ids, 0x12
    pairs = tokens[:, tag0:tag0 + 2 * nkeys].reshape(n, nkeys, 2)
    pairs[:, :, 0] = np.arange(nkeys)
    pairs[used, 1] = encoded.indices.to_numpy()
    live[:, tag0:tag0 + 2 * nkeys] = np.repeat(used, 2, axis=1)
    tokens[:, geo0 - 4], tokens[:, geo0 - 3], tokens[:, geo0 - 2] = 0x18, kind, 0x22
    tokens[:, geo0:] = geometry
    live[:, geo0:] = np.arange(g) < geometry_count[:, None]
    sizes = _varint_sizes(tokens) * live
    tag_len = sizes[:, tag0:tag0 + 2 * nkeys].sum(axis=1)
    has_tags = tag_len > 0
    tokens[:, 5] = tag_len
    geom_len = sizes[:, geo0:].sum(axis=1) + tail_len
    tokens[:, geo0 - 1] = geom_len
    lengths = _varint_sizes(np.column_stack((tag_len, geom_len)))
    sizes[:, 4], sizes[:, 5], sizes[:, geo0 - 1] = has_tags, lengths[:, 0] * has_tags, lengths[:, 1]
    body = sizes[:, 2:].sum(axis=1) + tail_len
    tokens[:, 1] = body
    sizes[:, 1] = _varint_sizes(body)
    head_bytes = _varint_bytes(tokens, sizes)
    head_len = sizes.sum(axis=1)
    # Each feature's head then its tail, gathered from one source in one step.
    source = np.concatenate((head_bytes, data))
    seg_len = np.column_stack((head_len, tail_len)).reshape(-1)
    seg_src = np.column_stack((np.cumsum(head_len) - head_len, len(head_bytes) + tail_start)).reshape(-1)
    total = int(seg_len.sum())
    seg_out = np.cumsum(seg_len) - seg_len
    out = source[np.repeat(seg_src - seg_out, seg_len) + np.arange(total)]
    tile.layers.append(_layer_message(name, keys, values, extent, [out.tobytes()]))
    return n


def encode_geometries(geoms: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """Command varints (as integers) of prepared (tile-space) geometries of one kind, and each one's [start,
    end) offsets; a geometry with nothing left has none."""
    points, starts, counts, part_feature = _parts(np.asarray(geoms, dtype=object), kind)
    return _feature_streams(points, starts, counts, part_feature, len(geoms), kind)


class Tile:
    """A tile being written: each layer's bytes (a tile is a sequence of Tile.layers fields)."""

    def __init__(self):
        self.layers: list[bytes] = []


def add_layer(tile: Tile, name: str, geoms: np.ndarray, ids: list[int] | None, properties, *,
              extent: int = 4096) -> int:
    """Append one layer of prepared (tile-space) geometries to ``tile``; returns the feature count.

    ``properties``: one dict per feature, or a dict of columns (lists, or typed Arrow arrays, as long as
    ``geoms``). Features whose geometry is empty (or collapsed when snapped) are left out. Mixed kinds are
    written kind by kind."""
    geoms = np.asarray(geoms, dtype=object)
    type_ids = shapely.get_type_id(geoms)
    nonempty = ~shapely.is_empty(geoms) & (type_ids >= 0)
    if ids is not None:
        id_present = np.array([i is not None for i in ids], dtype=bool)
        id_values = np.array([i if i is not None else 0 for i in ids], dtype=np.int64)
    else:
        id_present = np.zeros(len(geoms), dtype=bool)
        id_values = np.zeros(len(geoms), dtype=np.int64)
    if (id_values < 0).any():
        raise ValueError("MVT feature ids are unsigned")
    # Geometry first, so that only the features actually written put values into the dictionary.
    kinds = _KIND_OF_TYPE[np.clip(type_ids, 0, 7)]
    groups = []
    for kind in (POLYGON, LINESTRING, POINT):
        select = np.flatnonzero(nonempty & (kinds == kind))
        if not len(select):
            continue
        points, starts, counts, part_feature = _parts(geoms[select], kind)
        stream, offsets = _feature_streams(points, starts, counts, part_feature, len(select), kind)
        lengths = np.diff(offsets)
        live = lengths > 0  # features whose every part collapsed are left out
        if live.any():
            groups.append((kind, select[live], np.concatenate(([0], np.cumsum(lengths[live]))), stream))
    written = np.concatenate([g[1] for g in groups]) if groups else np.zeros(0, dtype=np.int64)
    keep = written.tolist()
    if isinstance(properties, dict):
        columns = {k: col.take(keep) if isinstance(col, pa.Array) else [col[i] for i in keep]
                   for k, col in properties.items()}
    else:
        columns = _columns([properties[i] for i in keep])
    values = _Values()
    kidx, vidx = _tag_matrix(values, columns, len(written))
    pairs = np.stack((kidx, vidx), axis=2)  # (written, K, 2)
    valid = vidx >= 0
    out, row = [], 0
    for kind, chosen, offsets, stream in groups:
        rows = slice(row, row + len(chosen))
        row += len(chosen)
        sel_valid = valid[rows]
        tags = pairs[rows][sel_valid].reshape(-1)  # row-major: each feature's (key, value) pairs in column order
        out.append(_features_bytes(kind, id_values[chosen], id_present[chosen], sel_valid.sum(axis=1) * 2, tags,
                                   offsets, stream))
    tile.layers.append(_layer_message(name, columns, values.fields, extent, out))
    return len(written)


def new_tile() -> Tile:
    return Tile()


def serialize(tile: Tile) -> bytes:
    """The tile message: each layer as field 3 (key 0x1A), length-prefixed."""
    return b"".join(b"\x1a" + _varint(len(layer)) + layer for layer in tile.layers)

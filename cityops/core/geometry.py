"""One geometry column type for both storage backends.

* SQLite: the GeoPackage binary encoding (``GP`` header with envelope, then ISO WKB), the column
  declared with its geometry type name, registered in ``gpkg_contents``/``gpkg_geometry_columns`` and
  indexed with the GeoPackage R*Tree extension (triggers included). The embedded database file is
  therefore a valid GeoPackage that GDAL and QGIS open directly.
* PostgreSQL: a PostGIS ``geometry(<type>, 4490)`` column with a GiST index.

Written by hand because no maintained library writes GeoPackage geometry without SpatiaLite, which the
embedded default must not require.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import LargeBinary, func
from sqlalchemy.types import TypeDecorator, UserDefinedType

#: Canonical storage CRS: CGCS2000 geographic, longitude/latitude axis order (see docs/architecture.md).
CANONICAL_SRID = 4490

_GPKG_FLAGS_LE_ENVELOPE = 0b0000_0011  # little-endian, envelope [minx, maxx, miny, maxy]
_GPKG_FLAG_EMPTY = 0b0001_0000
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def to_gpkg(geom: BaseGeometry, srid: int = CANONICAL_SRID) -> bytes:
    """Encode a Shapely geometry as a GeoPackage binary blob."""
    if geom.is_empty:
        return b"GP\x00" + bytes([_GPKG_FLAGS_LE_ENVELOPE | _GPKG_FLAG_EMPTY]) + struct.pack(
            "<i4d", srid, math.nan, math.nan, math.nan, math.nan
        ) + shapely.to_wkb(geom, byte_order=1, flavor="iso")
    minx, miny, maxx, maxy = geom.bounds
    header = b"GP\x00" + bytes([_GPKG_FLAGS_LE_ENVELOPE]) + struct.pack("<i4d", srid, minx, maxx, miny, maxy)
    return header + shapely.to_wkb(geom, byte_order=1, flavor="iso")


class EncodedGeometry(bytes):
    """Geometry already in the storage encoding of a dialect (see encode_many)."""


def encode_many(geoms, dialect_name: str, srid: int = CANONICAL_SRID) -> list:
    """Encode an array of geometries for ``Geometry`` columns in one vectorised pass (bulk imports):
    GeoPackage blobs on SQLite, ISO WKB on PostGIS. None stays None."""
    geoms = np.asarray(geoms, dtype=object)
    out: list = [None] * len(geoms)
    present = np.flatnonzero(np.array([g is not None for g in geoms], dtype=bool))
    if not len(present):
        return out
    chosen = geoms[present]
    wkb = shapely.to_wkb(chosen, byte_order=1, flavor="iso")
    if dialect_name == "postgresql":
        for i, blob in zip(present, wkb):
            out[i] = EncodedGeometry(blob)
        return out
    bounds = shapely.bounds(chosen)  # minx, miny, maxx, maxy
    empty = shapely.is_empty(chosen)
    for j, (i, blob) in enumerate(zip(present, wkb)):
        if empty[j]:
            out[i] = EncodedGeometry(to_gpkg(chosen[j], srid))
            continue
        minx, miny, maxx, maxy = bounds[j]
        out[i] = EncodedGeometry(_GPKG_PREFIX + struct.pack("<i4d", srid, minx, maxx, miny, maxy) + blob)
    return out


_GPKG_PREFIX = b"GP\x00" + bytes([_GPKG_FLAGS_LE_ENVELOPE])


def _gpkg_header(blob: bytes) -> tuple[int, int, bool]:
    """Return (wkb offset, flags, little endian) of a GeoPackage blob."""
    if len(blob) < 8 or blob[:2] != b"GP":
        raise ValueError("not a GeoPackage geometry blob")
    flags = blob[3]
    envelope = (flags >> 1) & 0b111
    if envelope not in _ENVELOPE_BYTES:
        raise ValueError(f"invalid GeoPackage envelope indicator {envelope}")
    return 8 + _ENVELOPE_BYTES[envelope], flags, bool(flags & 1)


def from_gpkg(blob: bytes) -> BaseGeometry:
    offset, _, _ = _gpkg_header(blob)
    return shapely.from_wkb(blob[offset:])


def from_gpkg_many(blobs: list) -> np.ndarray:
    """GeoPackage blobs (None for missing) → Shapely array in one vectorised WKB parse: on the hot paths
    (tiles, OGC items, who is threatened) the headers are cut off without validating each one."""
    wkb = [None if b is None else b[8 + _ENVELOPE_BYTES[(b[3] >> 1) & 0b111]:] for b in blobs]
    return shapely.from_wkb(np.array(wkb, dtype=object))


def gpkg_envelope(blob: bytes) -> tuple[float, float, float, float] | None:
    """(minx, maxx, miny, maxy) from the header, falling back to the WKB when there is none."""
    if blob is None:
        return None
    offset, flags, little = _gpkg_header(blob)
    if flags & _GPKG_FLAG_EMPTY:
        return None
    if offset >= 40:
        return struct.unpack("<4d" if little else ">4d", blob[8:40])
    minx, miny, maxx, maxy = shapely.from_wkb(blob[offset:]).bounds
    return (minx, maxx, miny, maxy)


def register_sqlite_functions(dbapi_connection) -> None:
    """The SQL functions the GeoPackage R*Tree triggers call (GDAL registers the same ones)."""

    def envelope_part(index):
        def fn(blob):
            env = gpkg_envelope(blob) if blob is not None else None
            return None if env is None else env[index]

        return fn

    dbapi_connection.create_function("ST_MinX", 1, envelope_part(0), deterministic=True)
    dbapi_connection.create_function("ST_MaxX", 1, envelope_part(1), deterministic=True)
    dbapi_connection.create_function("ST_MinY", 1, envelope_part(2), deterministic=True)
    dbapi_connection.create_function("ST_MaxY", 1, envelope_part(3), deterministic=True)
    dbapi_connection.create_function(
        "ST_IsEmpty",
        1,
        lambda blob: None if blob is None else int(bool(_gpkg_header(blob)[1] & _GPKG_FLAG_EMPTY)),
        deterministic=True,
    )


class _PostGISGeometry(UserDefinedType):
    cache_ok = True

    def __init__(self, geometry_type: str, srid: int):
        self.geometry_type = geometry_type
        self.srid = srid

    def get_col_spec(self, **kw):
        return f"geometry({self.geometry_type},{self.srid})"

    def bind_expression(self, bindvalue):
        return func.ST_GeomFromWKB(bindvalue, self.srid)

    def column_expression(self, col):
        # type_=self keeps this type's result processor on the wrapped expression.
        return func.ST_AsBinary(col, type_=self)

    def result_processor(self, dialect, coltype):
        return lambda value: None if value is None else shapely.from_wkb(bytes(value))


class _GeoPackageGeometry(UserDefinedType):
    cache_ok = True

    def __init__(self, geometry_type: str):
        self.geometry_type = geometry_type

    def get_col_spec(self, **kw):
        return self.geometry_type.upper()


class Geometry(TypeDecorator):
    """Shapely geometry in the canonical CRS; see the module docstring for the storage encoding."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, geometry_type: str = "GEOMETRY", srid: int = CANONICAL_SRID):
        super().__init__()
        self.geometry_type = geometry_type.upper()
        self.srid = srid

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(_PostGISGeometry(self.geometry_type, self.srid))
        return dialect.type_descriptor(_GeoPackageGeometry(self.geometry_type))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, EncodedGeometry):
            return bytes(value)  # already encoded for this dialect by encode_many()
        if dialect.name == "postgresql":
            return shapely.to_wkb(value, flavor="iso")
        return to_gpkg(value, self.srid)

    def process_result_value(self, value, dialect):
        if value is None or isinstance(value, BaseGeometry):
            return value  # PostGIS values arrive decoded by _PostGISGeometry
        value = bytes(value)
        if dialect.name == "postgresql":
            return shapely.from_wkb(value)
        return from_gpkg(value)

"""Coordinate reference systems: parsing ``crs`` parameters and converting to the canonical CRS.

The platform stores every geometry in ONE canonical CRS, CGCS2000 geographic (EPSG:4490), with
x = longitude and y = latitude (the GeoJSON convention, although the EPSG authority order is lat, lon).
Every geometry input accepts a ``crs``; :func:`parse_crs` lists the accepted spellings.

Axis order: every input and output here is x = longitude/easting, y = latitude/northing, whatever the
authority axis order of the CRS (EPSG:4326, EPSG:4490 and the CGCS2000 Gauss–Krüger CRSs such as
EPSG:4545 are all "northing first" in the EPSG registry). All pyproj transformers are built with
``always_xy=True``.

EPSG:4326 (WGS 84) and OGC:CRS84 are treated as *identical* to EPSG:4490: both datums are aligned to
ITRF and differ by centimetres to decimetres, which is below the accuracy of city operations data, and
PROJ has no real transformation between them anyway (it only offers a "ballpark" identity).

GCJ-02 (AMap/Gaode, Tencent) and BD-09 (Baidu) are converted with the maintained library
``geocoordinates-rs`` (import name ``geocoordinates_ffi``), using its *refined* iterative inverses.
GCJ-02 is only applied inside the library's "China" bounding box (72.004–137.8347°E,
0.8293–55.8271°N, a rectangle that also covers neighbouring countries); outside it GCJ-02 is the
identity, while BD-09 still applies Baidu's ~0.7–1 km nudge on top (this follows the library, which
follows the published formulas).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from cityops.core.errors import InvalidInput, UnknownCRS

if TYPE_CHECKING:
    import pyproj

# PROJ (pyproj) and the GCJ-02/BD-09 library are imported where a conversion or a lookup needs them: a file in the
# canonical CRS (or WGS 84) is imported without either (their imports were ~0.25 s of CPU of ``import-layer``).

__all__ = [
    "CANONICAL",
    "CRSRef",
    "parse_crs",
    "to_canonical",
    "from_canonical",
    "to_canonical_xy",
    "from_canonical_xy",
    "check_lonlat",
    "gcj02_to_wgs84",
    "wgs84_to_gcj02",
    "bd09_to_wgs84",
    "wgs84_to_bd09",
    "to_metric",
    "from_metric",
    "geodesic_area_m2",
]

CANONICAL = "EPSG:4490"


@dataclass(frozen=True)
class CRSRef:
    """A parsed, supported CRS.

    ``key`` is the normalised name ("EPSG:4326", "EPSG:4490", "EPSG:4545", "GCJ02", "BD09",
    "OGC:CRS84"). ``epsg`` is ``None`` for GCJ02/BD09; for OGC:CRS84 it is 4326 (same datum, only the
    axis order differs, and axis order here is always lon, lat anyway).
    """

    key: str
    epsg: int | None
    geographic: bool

    def __str__(self) -> str:
        return self.key


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------

_CRS84 = CRSRef("OGC:CRS84", 4326, True)
_GCJ02 = CRSRef("GCJ02", None, True)
_BD09 = CRSRef("BD09", None, True)

# Matched against the trimmed, upper-cased input.
_EPSG_PATTERNS = [
    re.compile(r"^(\d+)$"),
    re.compile(r"^EPSG:(\d+)$"),
    re.compile(r"^URN:OGC:DEF:CRS:EPSG:[^:]*:(\d+)$"),
    re.compile(r"^HTTPS?://WWW\.OPENGIS\.NET/DEF/CRS/EPSG/[^/]+/(\d+)$"),
]
_CRS84_PATTERNS = [
    re.compile(r"^(OGC:)?CRS84$"),
    re.compile(r"^URN:OGC:DEF:CRS:OGC:[^:]*:CRS84$"),
    re.compile(r"^HTTPS?://WWW\.OPENGIS\.NET/DEF/CRS/OGC/[^/]+/CRS84$"),
]
_ALIASES = {
    "WGS84": "4326",
    "CGCS2000": "4490",
    "GCJ02": _GCJ02,
    "GCJ-02": _GCJ02,
    "GCJ_02": _GCJ02,
    "BD09": _BD09,
    "BD-09": _BD09,
    "BD_09": _BD09,
}
_SUPPORTED_TYPES = {"Geographic 2D CRS": True, "Projected CRS": False}  # type name -> geographic


@lru_cache(maxsize=512)
def _resolve(norm: str) -> CRSRef | str:
    """Resolve a normalised spelling to a CRSRef, or return the reason it is rejected."""
    alias = _ALIASES.get(norm)
    if isinstance(alias, CRSRef):
        return alias
    if alias is not None:
        norm = alias
    if any(p.match(norm) for p in _CRS84_PATTERNS):
        return _CRS84
    for pattern in _EPSG_PATTERNS:
        m = pattern.match(norm)
        if m:
            return _resolve_epsg(int(m.group(1)))
    return (
        "expected an EPSG code (4490, 'EPSG:4490', an OGC URN or URL), 'OGC:CRS84', "
        "'WGS84', 'CGCS2000', 'GCJ02' or 'BD09'"
    )


#: The geographic 2D CRSs the platform treats as the canonical one (see the module's docstring), known without PROJ.
_KNOWN_EPSG = {4490: CRSRef("EPSG:4490", 4490, True), 4326: CRSRef("EPSG:4326", 4326, True)}


def _resolve_epsg(code: int) -> CRSRef | str:
    if code in _KNOWN_EPSG:
        return _KNOWN_EPSG[code]
    import pyproj
    from pyproj.exceptions import CRSError

    try:
        crs = pyproj.CRS.from_authority("EPSG", str(code))
    except CRSError:
        return f"EPSG:{code} is not in the PROJ database"
    geographic = _SUPPORTED_TYPES.get(crs.type_name)
    if geographic is None:
        return (
            f"EPSG:{code} ({crs.name}) is a {crs.type_name}; only geographic 2D and projected "
            "CRSs are supported"
        )
    return CRSRef(f"EPSG:{code}", code, geographic)


def parse_crs(value: str | int | CRSRef | None, default: str = CANONICAL) -> CRSRef:
    """Parse a ``crs`` parameter.

    Accepted (case-insensitive, surrounding whitespace ignored): ``None`` (→ ``default``); an EPSG
    code as int or digit string; ``EPSG:4326``; ``urn:ogc:def:crs:EPSG::4326``;
    ``http(s)://www.opengis.net/def/crs/EPSG/0/4326``; ``OGC:CRS84``, ``CRS84``,
    ``urn:ogc:def:crs:OGC:1.3:CRS84``, ``http(s)://www.opengis.net/def/crs/OGC/1.3/CRS84``; the aliases
    ``WGS84`` (EPSG:4326) and ``CGCS2000`` (EPSG:4490); ``GCJ02``/``GCJ-02``/``GCJ_02``;
    ``BD09``/``BD-09``/``BD_09``. EPSG codes must be geographic 2D or projected CRSs known to PROJ.
    """
    if value is None:
        return parse_crs(default, default=CANONICAL)
    if isinstance(value, CRSRef):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UnknownCRS(f"unknown or unsupported CRS {value!r}: expected a string or an EPSG code")
    result = _resolve(str(value).strip().upper())
    if isinstance(result, str):
        raise UnknownCRS(f"unknown or unsupported CRS {value!r}: {result}")
    return result


# ---------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------


def _as_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    try:
        xa, ya = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"coordinates must be numbers of equal length: {exc}") from exc
    return xa, ya


def check_lonlat(lon, lat) -> None:
    """Raise InvalidInput naming the first coordinate that is non-finite or outside lon [-180, 180],
    lat [-90, 90]."""
    lon, lat = _as_xy(lon, lat)
    lon_f, lat_f = lon.ravel(), lat.ravel()
    bad = ~(np.isfinite(lon_f) & np.isfinite(lat_f) & (np.abs(lon_f) <= 180.0) & (np.abs(lat_f) <= 90.0))
    if not bad.any():
        return
    i = int(np.argmax(bad))
    lo, la = float(lon_f[i]), float(lat_f[i])
    if not math.isfinite(lo) or abs(lo) > 180.0:
        what = f"longitude {lo!r} is not a finite number in [-180, 180]"
    else:
        what = f"latitude {la!r} is not a finite number in [-90, 90]"
    raise InvalidInput(f"invalid coordinate (lon={lo!r}, lat={la!r}) at index {i}: {what}")


def _check_projected_result(x, y, lon, lat, ref: CRSRef, direction: str) -> None:
    """pyproj returns inf for points outside a projection's domain; report the input point."""
    ok = np.isfinite(lon) & np.isfinite(lat)
    if direction == "to":
        ok &= (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0)
    if ok.all():
        return
    i = int(np.argmax(~ok.ravel()))
    xi, yi = float(x.ravel()[i]), float(y.ravel()[i])
    if direction == "to":
        msg = f"coordinate (x={xi!r}, y={yi!r}) at index {i} in {ref} has no valid lon/lat"
    else:
        msg = f"coordinate (lon={xi!r}, lat={yi!r}) at index {i} cannot be projected to {ref}"
    raise InvalidInput(msg)


# ---------------------------------------------------------------------------------------------------
# GCJ-02 / BD-09
# ---------------------------------------------------------------------------------------------------
#
# geocoordinates-rs is the reference implementation. Its Python binding crosses ctypes once per point:
# measured ~27 µs per point and direction (100,000 points ≈ 2.7 s forward, ≈ 2.7 s inverse, BD-09
# twice that), too slow for bulk imports. The hand-written numpy code below exists ONLY to make large
# arrays fast: it implements the same public forward formulas (Krasovsky ellipsoid, the GCJ-02
# polynomial/sine offset, Baidu's nudge), the same "China" bounding box, and a vectorised fixed-point
# inverse iterated until the forward residual is below 1e-10 degrees (~1e-5 m). tests/test_crs.py
# checks that it agrees with geocoordinates-rs to < 1 mm. Small arrays still go through the library
# (measured break-even: ~4 points for the forward formulas, ~24 for the iterative inverses).

_LIB_MAX_POINTS_FORWARD = 4
_LIB_MAX_POINTS_INVERSE = 24

_GCJ_A = 6378245.0  # Krasovsky 1940 semi-major axis
_GCJ_EE = 0.00669342162296594323  # Krasovsky 1940 first eccentricity squared
_X_PI = math.pi * 3000.0 / 180.0
_BD_DLON, _BD_DLAT = 0.0065, 0.006
_INV_TOL_DEG = 1e-10
_INV_MAX_ITER = 50


@lru_cache(maxsize=1)
def _lib():
    import geocoordinates_ffi

    return geocoordinates_ffi


def _lib_call(fn: Callable[[float, float], object], lon: np.ndarray, lat: np.ndarray):
    out_lon = np.empty(lon.size)
    out_lat = np.empty(lat.size)
    try:
        for i, (lo, la) in enumerate(zip(lon.ravel().tolist(), lat.ravel().tolist(), strict=True)):
            p = fn(lo, la)
            out_lon[i], out_lat[i] = p.lon, p.lat
    except _lib().GeoError as exc:  # pragma: no cover - inputs are validated before
        raise InvalidInput(f"coordinate conversion failed: {exc}") from exc
    return out_lon.reshape(lon.shape), out_lat.reshape(lat.shape)


def _lib_wgs84_to_gcj02(lon, lat):
    gc = _lib()
    return _lib_call(lambda lo, la: gc.wgs84_to_gcj02(gc.Wgs84(lat=la, lon=lo)), lon, lat)


def _lib_gcj02_to_wgs84(lon, lat):
    gc = _lib()
    return _lib_call(lambda lo, la: gc.gcj02_to_wgs84_refined(gc.Gcj02(lat=la, lon=lo)), lon, lat)


def _lib_wgs84_to_bd09(lon, lat):
    gc = _lib()
    return _lib_call(lambda lo, la: gc.wgs84_to_bd09(gc.Wgs84(lat=la, lon=lo)), lon, lat)


def _lib_bd09_to_wgs84(lon, lat):
    gc = _lib()
    return _lib_call(lambda lo, la: gc.bd09_to_wgs84_refined(gc.Bd09(lat=la, lon=lo)), lon, lat)


def _np_out_of_china(lon, lat):
    return (lon < 72.004) | (lon > 137.8347) | (lat < 0.8293) | (lat > 55.8271)


def _np_wgs84_to_gcj02(lon, lat):
    x, y = lon - 105.0, lat - 35.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat = (
        -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x + common
        + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
        + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    )
    dlon = (
        300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x + common
        + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
        + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    )
    radlat = np.radians(lat)
    magic = 1.0 - _GCJ_EE * np.sin(radlat) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_GCJ_A * (1.0 - _GCJ_EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (_GCJ_A / sqrt_magic * np.cos(radlat) * np.pi)
    outside = _np_out_of_china(lon, lat)
    return np.where(outside, lon, lon + dlon), np.where(outside, lat, lat + dlat)


def _np_gcj02_to_bd09(lon, lat):
    z = np.sqrt(lon * lon + lat * lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + _BD_DLON, z * np.sin(theta) + _BD_DLAT


def _np_invert(forward, lon, lat):
    """Solve forward(w) = (lon, lat) by fixed-point iteration w <- w - (forward(w) - target).

    The offsets have derivatives of order 1e-3, so each step gains ~3 digits; converged points are
    dropped from the working set.
    """
    out_lon, out_lat = lon.copy(), lat.copy()
    idx = np.arange(lon.size)
    t_lon, t_lat = lon.ravel(), lat.ravel()
    w_lon, w_lat = out_lon.ravel(), out_lat.ravel()
    for _ in range(_INV_MAX_ITER):
        f_lon, f_lat = forward(w_lon[idx], w_lat[idx])
        e_lon, e_lat = f_lon - t_lon[idx], f_lat - t_lat[idx]
        w_lon[idx] -= e_lon
        w_lat[idx] -= e_lat
        pending = (np.abs(e_lon) >= _INV_TOL_DEG) | (np.abs(e_lat) >= _INV_TOL_DEG)
        idx = idx[pending]
        if idx.size == 0:
            break
    return w_lon.reshape(lon.shape), w_lat.reshape(lat.shape)


def _np_gcj02_to_wgs84(lon, lat):
    # Like the library: a GCJ-02 point outside the China box is returned unchanged.
    out_lon, out_lat = lon.copy(), lat.copy()
    inside = ~_np_out_of_china(lon, lat)
    if inside.any():
        out_lon[inside], out_lat[inside] = _np_invert(_np_wgs84_to_gcj02, lon[inside], lat[inside])
    return out_lon, out_lat


def _np_wgs84_to_bd09(lon, lat):
    return _np_gcj02_to_bd09(*_np_wgs84_to_gcj02(lon, lat))


def _np_bd09_to_wgs84(lon, lat):
    # Like the library: BD-09 → GCJ-02 (refined), then GCJ-02 → WGS 84 (refined).
    return _np_gcj02_to_wgs84(*_np_invert(_np_gcj02_to_bd09, lon, lat))


def _dispatch(lib_fn, np_fn, lon, lat, lib_max_points: int):
    lon, lat = _as_xy(lon, lat)
    check_lonlat(lon, lat)
    if lon.size <= lib_max_points:
        return lib_fn(lon, lat)
    return np_fn(lon, lat)


def wgs84_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 (= CGCS2000 here) → GCJ-02; identity outside the China box."""
    return _dispatch(_lib_wgs84_to_gcj02, _np_wgs84_to_gcj02, lon, lat, _LIB_MAX_POINTS_FORWARD)


def gcj02_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 → WGS 84 with the refined iterative inverse (round trip < 1e-5 m)."""
    return _dispatch(_lib_gcj02_to_wgs84, _np_gcj02_to_wgs84, lon, lat, _LIB_MAX_POINTS_INVERSE)


def wgs84_to_bd09(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 → BD-09 (GCJ-02 then Baidu's nudge; the nudge also applies outside China)."""
    return _dispatch(_lib_wgs84_to_bd09, _np_wgs84_to_bd09, lon, lat, _LIB_MAX_POINTS_FORWARD)


def bd09_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """BD-09 → WGS 84 with refined iterative inverses of both steps."""
    return _dispatch(_lib_bd09_to_wgs84, _np_bd09_to_wgs84, lon, lat, _LIB_MAX_POINTS_INVERSE)


# ---------------------------------------------------------------------------------------------------
# Conversions to and from the canonical CRS
# ---------------------------------------------------------------------------------------------------

_IDENTICAL_TO_CANONICAL = {"EPSG:4490", "EPSG:4326", "OGC:CRS84"}


@lru_cache(maxsize=128)
def _transformer(src: str, dst: str) -> "pyproj.Transformer":
    import pyproj

    # pyproj >= 3.1 Transformers are thread-safe, so a process-wide cache is fine.
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def to_canonical_xy(x, y, crs) -> tuple[np.ndarray, np.ndarray]:
    """Convert x/y arrays (lon/lat or easting/northing) in ``crs`` to canonical lon/lat."""
    ref = parse_crs(crs)
    x, y = _as_xy(x, y)
    if ref.key in _IDENTICAL_TO_CANONICAL:
        check_lonlat(x, y)
        return x.copy(), y.copy()
    if ref is _GCJ02:
        return gcj02_to_wgs84(x, y)
    if ref is _BD09:
        return bd09_to_wgs84(x, y)
    if ref.geographic:
        check_lonlat(x, y)
    lon, lat = _transformer(ref.key, CANONICAL).transform(x, y)
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    _check_projected_result(x, y, lon, lat, ref, "to")
    return lon, lat


def from_canonical_xy(lon, lat, crs) -> tuple[np.ndarray, np.ndarray]:
    """Convert canonical lon/lat arrays to x/y (lon/lat or easting/northing) in ``crs``."""
    ref = parse_crs(crs)
    lon, lat = _as_xy(lon, lat)
    check_lonlat(lon, lat)
    if ref.key in _IDENTICAL_TO_CANONICAL:
        return lon.copy(), lat.copy()
    if ref is _GCJ02:
        return wgs84_to_gcj02(lon, lat)
    if ref is _BD09:
        return wgs84_to_bd09(lon, lat)
    x, y = _transformer(CANONICAL, ref.key).transform(lon, lat)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    _check_projected_result(lon, lat, x, y, ref, "from")
    return x, y


def _transform_geom(geom: BaseGeometry, fn) -> BaseGeometry:
    if not isinstance(geom, BaseGeometry):
        raise InvalidInput(f"expected a geometry, got {type(geom).__name__}")

    def apply(coords: np.ndarray) -> np.ndarray:
        out = coords.copy()  # keeps Z (if any) unchanged
        out[:, 0], out[:, 1] = fn(coords[:, 0], coords[:, 1])
        return out

    return shapely.transform(geom, apply, include_z=None)


#: Projected input is densified to this segment length (metres) before conversion. A straight projected
#: edge maps to a curve in lon/lat (≈1.2 m off at the middle of a 10 km Gauss–Krüger edge, quadratic in
#: length); at 50 m the error is ≈0.03 mm, so edges shared by neighbours stay shared after conversion.
PROJECTED_SEGMENT_M = 50.0


def _densify(geom: BaseGeometry) -> BaseGeometry:
    """Densify valid, plausibly sized projected geometry (see PROJECTED_SEGMENT_M). Invalid geometry is left
    alone so that validation reports it as it came (GEOS densification can mask a self-intersection), and so
    is anything wider than 2,000 km (a wrong CRS, which the conversion will reject)."""
    if geom.is_empty or geom.geom_type in ("Point", "MultiPoint") or not geom.is_valid:
        return geom
    minx, miny, maxx, maxy = geom.bounds
    if max(maxx - minx, maxy - miny) > 2_000_000:
        return geom
    dense = shapely.segmentize(geom, PROJECTED_SEGMENT_M)
    if dense.geom_type != geom.geom_type and geom.geom_type.startswith("Multi"):
        dense = type(geom)([dense])
    return dense


def to_canonical(geom: BaseGeometry, crs) -> BaseGeometry:
    """Geometry in ``crs`` → canonical CRS (EPSG:4490, lon/lat). Z values are kept as they are."""
    ref = parse_crs(crs)
    if ref.key == CANONICAL:
        check_lonlat(*_coords_xy(geom))
        return geom
    if not ref.geographic and ref.epsg is not None:
        geom = _densify(geom)
    return _transform_geom(geom, lambda x, y: to_canonical_xy(x, y, ref))


def from_canonical(geom: BaseGeometry, crs) -> BaseGeometry:
    """Canonical geometry → ``crs``. Z values are kept as they are."""
    ref = parse_crs(crs)
    return _transform_geom(geom, lambda x, y: from_canonical_xy(x, y, ref))


def _coords_xy(geom: BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(geom, BaseGeometry):
        raise InvalidInput(f"expected a geometry, got {type(geom).__name__}")
    coords = shapely.get_coordinates(geom)
    return coords[:, 0], coords[:, 1]


def _metric_ref(metric_crs) -> CRSRef:
    import pyproj

    ref = parse_crs(metric_crs)
    unit = None if ref.geographic else pyproj.CRS.from_user_input(ref.key).axis_info[0].unit_name
    if unit != "metre":
        raise UnknownCRS(
            f"unknown or unsupported CRS {metric_crs!r}: a metric CRS must be projected with metre "
            f"axes (e.g. EPSG:4545)"
        )
    return ref


def to_metric(geom: BaseGeometry, metric_crs: str) -> BaseGeometry:
    """Canonical geometry → a projected metric CRS (e.g. EPSG:4545, CGCS2000 3° GK CM 108°E)."""
    return from_canonical(geom, _metric_ref(metric_crs))


def from_metric(geom: BaseGeometry, metric_crs: str) -> BaseGeometry:
    """Geometry in a projected metric CRS → canonical."""
    return to_canonical(geom, _metric_ref(metric_crs))


@lru_cache(maxsize=1)
def _geod():
    import pyproj

    return pyproj.Geod(ellps="GRS80")  # the CGCS2000 ellipsoid differs from GRS80 by < 0.1 mm in b


def geodesic_area_m2(geom: BaseGeometry) -> float:
    """Area in m² on the GRS80 ellipsoid of a canonical (lon/lat) geometry; 0 for non-areal ones.

    Every polygon is oriented first so that parts of a multi-polygon or collection never cancel.
    """
    check_lonlat(*_coords_xy(geom))
    total = 0.0
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon":
            area, _ = _geod().geometry_area_perimeter(orient(part, 1.0))
            total += abs(area)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            total += geodesic_area_m2(part)
    return total


class LocalPlane:
    """An affine map lon/lat ↔ local metres around (lon0, lat0): x = (lon − lon0)·kx, y = (lat − lat0)·ky.

    Topology (overlaps, gaps, containment) is judged in the storage CRS's own geometry, where stored edges
    are straight lines between vertices. A real projection (Gauss–Krüger) bends those edges, so vertices of
    one unit lying on a neighbour's edge drift off it and invent slivers; an affine map keeps straight lines
    straight. Areas are then metres² to within the scale's variation over the extent (≈0.1 % per 10 km of
    latitude), plenty for tolerance checks; use :func:`geodesic_area_m2` for reported areas.
    """

    def __init__(self, lon0: float, lat0: float):
        self.lon0, self.lat0 = lon0, lat0
        # Metres per degree at (lon0, lat0), from the ellipsoid.
        self.kx = _geod().inv(lon0 - 0.005, lat0, lon0 + 0.005, lat0)[2] / 0.01
        self.ky = _geod().inv(lon0, lat0 - 0.005, lon0, lat0 + 0.005)[2] / 0.01

    @classmethod
    def around(cls, geoms) -> "LocalPlane":
        bounds = shapely.total_bounds(np.asarray(list(geoms), dtype=object))
        return cls((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)

    def forward(self, geom):
        return shapely.transform(geom, lambda c: np.column_stack(((c[:, 0] - self.lon0) * self.kx, (c[:, 1] - self.lat0) * self.ky)))

    def inverse(self, geom):
        return shapely.transform(geom, lambda c: np.column_stack((c[:, 0] / self.kx + self.lon0, c[:, 1] / self.ky + self.lat0)))


def _apply_xy(geoms: np.ndarray, fn) -> np.ndarray:
    def apply(coords: np.ndarray) -> np.ndarray:
        out = coords.copy()
        if len(out):
            out[:, 0], out[:, 1] = fn(coords[:, 0], coords[:, 1])
        return out

    return shapely.transform(geoms, apply, include_z=None)


def to_canonical_many(geoms: np.ndarray, crs) -> np.ndarray:
    """An array of geometries in ``crs`` → canonical, in one conversion call (batch imports)."""
    ref = parse_crs(crs)
    geoms = np.asarray(geoms, dtype=object)
    if ref.key == CANONICAL:
        check_lonlat(*shapely.get_coordinates(geoms).T) if len(geoms) else None
        return geoms
    if not ref.geographic and ref.epsg is not None:
        geoms = np.array([_densify(g) for g in geoms], dtype=object)
    return _apply_xy(geoms, lambda x, y: to_canonical_xy(x, y, ref))


def from_canonical_many(geoms: np.ndarray, crs) -> np.ndarray:
    """An array of canonical geometries → ``crs`` (batch exports)."""
    ref = parse_crs(crs)
    geoms = np.asarray(geoms, dtype=object)
    if ref.key in _IDENTICAL_TO_CANONICAL:
        return geoms
    return _apply_xy(geoms, lambda x, y: from_canonical_xy(x, y, ref))

"""cityops.core.crs: CRS parsing, canonical conversion, GCJ-02/BD-09, metric helpers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import prcoords
import pyproj
import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box

from cityops.core import crs as C
from cityops.core.crs import (
    CANONICAL,
    CRSRef,
    bd09_to_wgs84,
    check_lonlat,
    from_canonical,
    from_canonical_xy,
    from_metric,
    gcj02_to_wgs84,
    geodesic_area_m2,
    parse_crs,
    to_canonical,
    to_canonical_xy,
    to_metric,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from cityops.core.errors import InvalidInput, UnknownCRS

GEOD = pyproj.Geod(ellps="WGS84")

# Two engines for GCJ-02/BD-09: the public functions (numpy path for large arrays) and the
# geocoordinates-rs per-point path. Both must meet every accuracy requirement.
ENGINES = {
    "public": (wgs84_to_gcj02, gcj02_to_wgs84, wgs84_to_bd09, bd09_to_wgs84),
    "library": (C._lib_wgs84_to_gcj02, C._lib_gcj02_to_wgs84, C._lib_wgs84_to_bd09, C._lib_bd09_to_wgs84),
}


def dist_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    return np.asarray(GEOD.inv(lon1, lat1, lon2, lat2)[2])


@pytest.fixture(scope="module")
def china_points():
    rng = np.random.default_rng(20240531)
    return rng.uniform(73.0, 135.0, 2000), rng.uniform(18.0, 53.0, 2000)


# --- parse_crs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (None, "EPSG:4490"),
        (4326, "EPSG:4326"),
        (4490, "EPSG:4490"),
        ("4326", "EPSG:4326"),
        (" 4545 ", "EPSG:4545"),
        ("EPSG:4326", "EPSG:4326"),
        ("epsg:4490", "EPSG:4490"),
        ("EPSG:3857", "EPSG:3857"),
        ("urn:ogc:def:crs:EPSG::4326", "EPSG:4326"),
        ("URN:OGC:DEF:CRS:EPSG::4545", "EPSG:4545"),
        ("http://www.opengis.net/def/crs/EPSG/0/4326", "EPSG:4326"),
        ("https://www.opengis.net/def/crs/EPSG/0/4490", "EPSG:4490"),
        ("OGC:CRS84", "OGC:CRS84"),
        ("CRS84", "OGC:CRS84"),
        ("crs84", "OGC:CRS84"),
        ("urn:ogc:def:crs:OGC:1.3:CRS84", "OGC:CRS84"),
        ("http://www.opengis.net/def/crs/OGC/1.3/CRS84", "OGC:CRS84"),
        ("https://www.opengis.net/def/crs/OGC/1.3/CRS84", "OGC:CRS84"),
        ("WGS84", "EPSG:4326"),
        ("wgs84", "EPSG:4326"),
        ("CGCS2000", "EPSG:4490"),
        ("GCJ02", "GCJ02"),
        ("gcj-02", "GCJ02"),
        ("GCJ_02", "GCJ02"),
        ("BD09", "BD09"),
        ("bd-09", "BD09"),
        ("BD_09", "BD09"),
    ],
)
def test_parse_crs_accepts(value, key):
    ref = parse_crs(value)
    assert ref.key == key
    assert str(ref) == key


def test_parse_crs_fields_and_defaults():
    assert parse_crs("EPSG:4490") == CRSRef("EPSG:4490", 4490, True)
    assert parse_crs("EPSG:4545") == CRSRef("EPSG:4545", 4545, False)
    assert parse_crs("GCJ02") == CRSRef("GCJ02", None, True)
    assert parse_crs("BD09") == CRSRef("BD09", None, True)
    assert parse_crs("CRS84").geographic
    assert parse_crs(None, default="EPSG:4326").key == "EPSG:4326"
    ref = parse_crs("EPSG:4545")
    assert parse_crs(ref) is ref
    assert parse_crs(" epsg:4545") is parse_crs("EPSG:4545")  # cached
    assert CANONICAL == "EPSG:4490"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("EPSG:999999", "not in the PROJ database"),
        ("EPSG:4978", "Geocentric"),
        ("EPSG:5773", "Vertical"),
        ("EPSG:9518", "Compound"),
        ("EPSG:4979", "Geographic 3D"),
        ("foo", "expected"),
        ("", "expected"),
        ("EPSG:", "expected"),
        (3.5, "expected"),
        (True, "expected"),
    ],
)
def test_parse_crs_rejects(value, why):
    with pytest.raises(UnknownCRS) as exc:
        parse_crs(value)
    assert repr(value) in exc.value.message
    assert why in exc.value.message
    assert exc.value.message.startswith("unknown or unsupported CRS")


# --- GCJ-02 / BD-09 -------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_gcj02_round_trip_under_1cm(engine, china_points):
    fwd, inv, _, _ = ENGINES[engine]
    lon, lat = china_points
    g_lon, g_lat = fwd(lon, lat)
    b_lon, b_lat = inv(g_lon, g_lat)
    assert dist_m(lon, lat, b_lon, b_lat).max() < 0.01


@pytest.mark.parametrize("engine", ENGINES)
def test_bd09_round_trip_under_1cm(engine, china_points):
    _, _, fwd, inv = ENGINES[engine]
    lon, lat = china_points
    b_lon, b_lat = fwd(lon, lat)
    w_lon, w_lat = inv(b_lon, b_lat)
    assert dist_m(lon, lat, w_lon, w_lat).max() < 0.01


@pytest.mark.parametrize("engine", ENGINES)
def test_forward_matches_prcoords(engine, china_points):
    gcj_fwd, _, bd_fwd, _ = ENGINES[engine]
    lon, lat = china_points
    ref_gcj = np.array([prcoords.wgs_gcj((la, lo)) for lo, la in zip(lon, lat)])
    ref_bd = np.array([prcoords.wgs_bd((la, lo)) for lo, la in zip(lon, lat)])
    g_lon, g_lat = gcj_fwd(lon, lat)
    b_lon, b_lat = bd_fwd(lon, lat)
    assert dist_m(g_lon, g_lat, ref_gcj[:, 1], ref_gcj[:, 0]).max() < 0.05
    assert dist_m(b_lon, b_lat, ref_bd[:, 1], ref_bd[:, 0]).max() < 0.05


def test_gcj02_offset_magnitude_matches_domain_doc():
    # domain.md §10: measured 125–672 m on 2,000 points in 100–122°E, 20–45°N.
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(100, 122, 2000), rng.uniform(20, 45, 2000)
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    d = dist_m(lon, lat, g_lon, g_lat)
    assert 100 < d.min() and d.max() < 700
    assert 400 < np.median(d) < 600


def test_numpy_path_agrees_with_geocoordinates_rs():
    # Includes points outside the China box and near its edges.
    rng = np.random.default_rng(11)
    lon, lat = rng.uniform(60, 150, 3000), rng.uniform(-10, 65, 3000)
    for name in ("wgs84_to_gcj02", "gcj02_to_wgs84", "wgs84_to_bd09", "bd09_to_wgs84"):
        n_lon, n_lat = getattr(C, "_np_" + name)(lon, lat)
        l_lon, l_lat = getattr(C, "_lib_" + name)(lon, lat)
        assert dist_m(n_lon, n_lat, l_lon, l_lat).max() < 0.001, name


def test_public_functions_pick_the_fast_path_for_large_arrays():
    rng = np.random.default_rng(3)
    lon, lat = rng.uniform(73, 135, 20000), rng.uniform(18, 53, 20000)
    import time

    t = time.perf_counter()
    bd09_to_wgs84(*wgs84_to_bd09(lon, lat))
    assert time.perf_counter() - t < 1.0  # the per-point library path needs ~1 s for this


def test_outside_china_follows_library():
    lon, lat = np.array([2.35, -74.0]), np.array([48.85, 40.7])
    for fwd, inv, bd_fwd, bd_inv in ENGINES.values():
        assert np.array_equal(np.column_stack(fwd(lon, lat)), np.column_stack([lon, lat]))
        assert np.array_equal(np.column_stack(inv(lon, lat)), np.column_stack([lon, lat]))
        # BD-09 keeps Baidu's constant nudge even where GCJ-02 is the identity.
        b_lon, b_lat = bd_fwd(lon, lat)
        assert dist_m(lon, lat, b_lon, b_lat).min() > 500
        w_lon, w_lat = bd_inv(b_lon, b_lat)
        assert dist_m(lon, lat, w_lon, w_lat).max() < 0.01


def test_scalar_and_single_point_inputs():
    g_lon, g_lat = wgs84_to_gcj02(108.4, 31.2)
    assert g_lon.shape == () and 100 < dist_m(108.4, 31.2, float(g_lon), float(g_lat)) < 700
    w_lon, w_lat = gcj02_to_wgs84(float(g_lon), float(g_lat))
    assert dist_m(108.4, 31.2, float(w_lon), float(w_lat)) < 1e-3
    b_lon, b_lat = wgs84_to_bd09([108.4], [31.2])
    assert b_lon.shape == (1,)
    w_lon, w_lat = bd09_to_wgs84(b_lon, b_lat)
    assert dist_m(108.4, 31.2, w_lon[0], w_lat[0]) < 1e-3
    lon, lat = to_canonical_xy(108.4, 31.2, "EPSG:4326")
    assert (float(lon), float(lat)) == (108.4, 31.2)


def test_gcj_and_bd_invalid_input_rejected():
    with pytest.raises(InvalidInput, match="95"):
        wgs84_to_gcj02(108.0, 95.0)
    with pytest.raises(InvalidInput, match="nan"):
        bd09_to_wgs84([108.0] * 100, [31.0] * 99 + [math.nan])


# --- canonical conversions -------------------------------------------------------------------------


@pytest.mark.parametrize("crs", ["EPSG:4545", "EPSG:3857"])
def test_projected_polygon_round_trip_under_1mm(crs):
    x0, y0 = pyproj.Transformer.from_crs(4490, crs, always_xy=True).transform(108.4, 31.2)
    poly = Polygon([(x0, y0), (x0 + 1500, y0), (x0 + 1500, y0 + 900), (x0, y0 + 900)])
    canon = to_canonical(poly, crs)
    lon, lat = shapely.get_coordinates(canon).T
    assert np.all(np.abs(lon - 108.4) < 0.1) and np.all(np.abs(lat - 31.2) < 0.1)
    back = from_canonical(canon, crs)
    assert shapely.hausdorff_distance(back, poly) < 0.001  # projected input is densified, so compare shapes
    # and the other way round: canonical → projected → canonical
    canon2 = to_canonical(from_canonical(canon, crs), crs)
    assert shapely.hausdorff_distance(canon, canon2) < 1e-8  # degrees: about a millimetre


def test_known_epsg4545_point_maps_back():
    # EPSG:4545 is CGCS2000 / 3-degree Gauss-Kruger CM 108E; its authority axis order is northing,
    # easting, but our x is always the easting.
    e, n = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4545", always_xy=True).transform(108.4, 31.2)
    assert 500_000 < e < 600_000 and 3_400_000 < n < 3_500_000
    p = to_canonical(Point(e, n), "EPSG:4545")
    assert p.x == pytest.approx(108.4, abs=1e-9) and p.y == pytest.approx(31.2, abs=1e-9)
    q = from_canonical(Point(108.4, 31.2), "EPSG:4545")
    assert q.x == pytest.approx(e, abs=1e-6) and q.y == pytest.approx(n, abs=1e-6)
    x, y = from_canonical_xy(np.array([108.4]), np.array([31.2]), 4545)
    assert x[0] == pytest.approx(e, abs=1e-6)


@pytest.mark.parametrize(
    "crs",
    ["OGC:CRS84", "EPSG:4326", "urn:ogc:def:crs:EPSG::4326", "http://www.opengis.net/def/crs/EPSG/0/4326",
     "EPSG:4490", None, "WGS84", "CGCS2000"],
)
def test_geographic_inputs_keep_lon_lat_order(crs):
    p = to_canonical(Point(108.4, 31.2), crs)
    assert (p.x, p.y) == (108.4, 31.2)
    q = from_canonical(Point(108.4, 31.2), crs)
    assert (q.x, q.y) == (108.4, 31.2)


def test_gcj02_geometry_round_trip_and_z_kept():
    poly = Polygon([(108.40, 31.20, 5.0), (108.41, 31.20, 6.0), (108.41, 31.21, 7.0), (108.40, 31.20, 5.0)])
    for crs in ("GCJ02", "BD09"):
        shown = from_canonical(poly, crs)
        assert shown.has_z
        assert list(shapely.get_coordinates(shown, include_z=True)[:, 2]) == [5.0, 6.0, 7.0, 5.0]
        back = to_canonical(shown, crs)
        a, b = shapely.get_coordinates(poly).T, shapely.get_coordinates(back).T
        assert dist_m(a[0], a[1], b[0], b[1]).max() < 0.01


def test_other_geographic_crs_goes_through_pyproj():
    # Xian 1980 (EPSG:4610) has no published shift to CGCS2000: PROJ uses a ballpark identity, but the
    # call must work and keep lon/lat order.
    p = to_canonical(Point(108.4, 31.2), "EPSG:4610")
    assert abs(p.x - 108.4) < 0.01 and abs(p.y - 31.2) < 0.01


@pytest.mark.parametrize(("lon", "lat", "text"), [(108.0, 95.0, "95.0"), (200.0, 31.0, "200.0"),
                                                   (math.nan, 31.0, "nan"), (108.0, math.inf, "inf")])
def test_check_lonlat_rejects(lon, lat, text):
    with pytest.raises(InvalidInput) as exc:
        check_lonlat(np.array([108.0, lon]), np.array([31.0, lat]))
    assert text in exc.value.message
    assert "index 1" in exc.value.message
    with pytest.raises(InvalidInput, match=text):
        to_canonical(Point(lon, lat), "EPSG:4326")


def test_check_lonlat_accepts_bounds_and_scalars():
    check_lonlat(np.array([-180.0, 180.0]), np.array([-90.0, 90.0]))
    check_lonlat(108.4, 31.2)


def test_projected_point_without_lonlat_rejected():
    # PROJ returns inf outside the Gauss–Krüger domain; the error names the input point.
    with pytest.raises(InvalidInput, match=r"x=1000000000\.0, y=1000000000\.0\) at index 1 in EPSG:4545"):
        to_canonical_xy(np.array([500000.0, 1e9]), np.array([3.4e6, 1e9]), "EPSG:4545")
    with pytest.raises(InvalidInput, match="index 1"):
        to_canonical(Polygon([(5e5, 3.4e6), (1e9, 1e9), (5e5, 3.5e6)]), "EPSG:4545")


def test_unknown_crs_in_conversion():
    with pytest.raises(UnknownCRS, match="'EPSG:4978'"):
        to_canonical(Point(1, 2), "EPSG:4978")


# --- metric helpers and area -----------------------------------------------------------------------


def test_geodesic_area_of_small_box():
    cell = box(108.40, 31.00, 108.41, 31.01)
    area = geodesic_area_m2(cell)
    lon, lat = cell.exterior.xy
    ref = abs(pyproj.Geod(ellps="GRS80").polygon_area_perimeter(lon, lat)[0])
    assert area == pytest.approx(ref, rel=0.01)
    assert area == pytest.approx(1.11e6 * 0.955, rel=0.01)  # ~1109 m × ~955 m
    metric = to_metric(cell, "EPSG:4545")
    assert metric.area == pytest.approx(area, rel=0.005)
    back = from_metric(metric, "EPSG:4545")
    assert shapely.hausdorff_distance(back, cell) < 1e-6  # densified edges follow the projected line


def test_geodesic_area_orientation_independent():
    a = box(108.40, 31.00, 108.41, 31.01)
    b = shapely.reverse(box(108.50, 31.00, 108.51, 31.01))  # clockwise
    total = geodesic_area_m2(MultiPolygon([a, b]))
    assert total == pytest.approx(geodesic_area_m2(a) + geodesic_area_m2(b), rel=1e-9)
    assert total == pytest.approx(2 * geodesic_area_m2(a), rel=0.001)
    assert geodesic_area_m2(Point(108.4, 31.0)) == 0.0


def test_to_metric_requires_projected_metre_crs():
    with pytest.raises(UnknownCRS, match="EPSG:4490"):
        to_metric(Point(108.4, 31.2), "EPSG:4490")
    with pytest.raises(UnknownCRS, match="GCJ02"):
        to_metric(Point(108.4, 31.2), "GCJ02")


def test_prcoords_is_silent_in_china(china_points):
    # guard: the reference comparisons above must not have hit prcoords' "non-Chinese coords" branch
    lon, lat = china_points
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for lo, la in zip(lon[:50], lat[:50]):
            prcoords.wgs_gcj((la, lo))

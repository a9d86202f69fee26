"""Unit files (GeoJSON, GeoPackage, zipped Shapefile, CSV-WKT) and the import validation report.

Pure-function tests: synthetic hierarchies built in EPSG:4545 metres around lon 108.4, lat 31.2 and
transformed to the canonical lon/lat; no database.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from cityops.core.crs import from_metric, to_metric
from cityops.core.errors import InvalidInput, UnknownCRS
from cityops.org.unitfiles import (
    SUPPORTED_FORMATS,
    UnitRecord,
    detect_format,
    read_units_file,
    write_units_file,
)
from cityops.org.validation import ExistingUnit, Issue, ValidationReport, validate_units

METRIC = "EPSG:4545"
# EPSG:4545 (CGCS2000 3° GK CM 108°E) coordinates of lon 108.4, lat 31.2, roughly.
X0, Y0 = 538_000.0, 3_452_000.0


def lonlat(geom):
    """A metric (EPSG:4545) geometry in canonical lon/lat, as a MultiPolygon when polygonal."""
    out = from_metric(geom, METRIC)
    return MultiPolygon([out]) if out.geom_type == "Polygon" else out


def mbox(x0, y0, x1, y1):
    """A box given in metres relative to (X0, Y0)."""
    return box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def rec(code, geom_m=None, *, level=None, parent=None, name=None, row=0, geometry=None, **attributes):
    return UnitRecord(
        code=code,
        name=f"单元{code}" if name is None else name,
        level=level,
        parent_code=parent,
        geometry=geometry if geometry is not None else (lonlat(geom_m) if geom_m is not None else None),
        attributes=attributes,
        row=row,
    )


def small_hierarchy() -> list[UnitRecord]:
    """District 500154 (4 km × 2 km) → 2 townships → 2 villages each → 2 grids each (15 units)."""
    records = [rec("500154", mbox(0, 0, 4000, 2000), level="district", name="开州区")]
    records[0].name_en = "Kaizhou"
    for t in range(2):
        tcode = f"500154{101 + t}"
        records.append(rec(tcode, mbox(2000 * t, 0, 2000 * (t + 1), 2000), level="township", parent="500154",
                           name=f"汉丰街道{t}"))
        for v in range(2):
            vcode = f"{tcode}{201 + v}"
            x = 2000 * t + 1000 * v
            records.append(rec(vcode, mbox(x, 0, x + 1000, 2000), level="village", parent=tcode,
                               name=f"社区{v}", urban_rural="111"))
            for g in range(2):
                gcode = f"{vcode}{1 + g:03d}"
                records.append(rec(gcode, mbox(x, 1000 * g, x + 1000, 1000 * (g + 1)), level="grid", parent=vcode,
                                   name=f"网格{g}", seq=g + 1, area_km2=1.0 + g / 2, tags={"a": [1, "二"]}))
    for i, r in enumerate(records, start=1):
        r.row = i
    return records


def checks(report: ValidationReport) -> set[str]:
    return {issue.check for issue in report.issues}


def only(report: ValidationReport, check: str) -> Issue:
    found = [i for i in report.issues if i.check == check]
    assert found, f"no {check} issue in {[(i.check, i.message) for i in report.issues]}"
    return found[0]


# --------------------------------------------------------------------------------------------- formats


def test_detect_format():
    assert detect_format("a.GeoJSON") == "geojson"
    assert detect_format("a.json") == "geojson"
    assert detect_format("a.gpkg") == "gpkg"
    assert detect_format("a.shp") == "shp"
    assert detect_format("a.zip") == "shp"
    assert detect_format("a.csv") == "csv"
    assert SUPPORTED_FORMATS == {"geojson", "gpkg", "shp", "csv"}
    with pytest.raises(InvalidInput) as exc:
        detect_format("units.kml")
    assert ".kml" in exc.value.message and ".gpkg" in exc.value.message


def _same(a: list[UnitRecord], b: list[UnitRecord], *, attributes: bool = True, tol: float = 1e-9):
    assert [r.code for r in a] == [r.code for r in b]
    for x, y in zip(a, b):
        assert (x.name, x.name_en, x.level, x.parent_code) == (y.name, y.name_en, y.level, y.parent_code), x.code
        if attributes:
            assert x.attributes == y.attributes, x.code
        assert y.geometry.geom_type == "MultiPolygon"
        # Same shape; a projected file gains vertices (densified before conversion), so not the same vertices.
        assert shapely.hausdorff_distance(x.geometry, y.geometry) <= tol, x.code


@pytest.mark.parametrize("fmt,suffix", [("geojson", ".geojson"), ("gpkg", ".gpkg"), ("shp", ".shp"), ("csv", ".csv")])
def test_round_trip(tmp_path: Path, fmt: str, suffix: str):
    records = small_hierarchy()
    written = write_units_file(records, tmp_path / f"units{suffix}", fmt)
    assert written.exists()
    back = read_units_file(written)
    assert [r.row for r in back] == list(range(1, len(records) + 1))
    if fmt == "csv":
        # CSV has no column types: scalar attributes come back as text, nested ones as JSON.
        for r in records:
            r.attributes = {k: (v if isinstance(v, (dict, list)) or v is None else str(v)) for k, v in r.attributes.items()}
    # Columns are the union over records; a record without a column gets None.
    keys = ["urban_rural", "seq", "area_km2", "tags"]
    for r in records:
        r.attributes = {k: r.attributes.get(k) for k in keys}
    if fmt == "shp":  # DBF field names are at most 10 bytes
        for r in records:
            r.attributes["urban_rura"] = r.attributes.pop("urban_rural")
    assert set(back[0].attributes) == set(records[0].attributes)
    _same(records, back, tol=1e-9 if fmt != "geojson" else 1e-12)
    assert back[0].name == "开州区" and back[-1].name == "网格1"
    assert back[-1].attributes["tags"] == {"a": [1, "二"]}


def test_shapefile_zip_contents_and_utf8(tmp_path: Path):
    records = small_hierarchy()
    records[0].attributes = {"城乡分类代码": "111", "a_very_long_attribute_name": 5}
    written = write_units_file(records, tmp_path / "out.shp", "shp")
    assert written.suffix == ".zip"
    with zipfile.ZipFile(written) as archive:
        names = sorted(archive.namelist())
        assert names == ["out.cpg", "out.dbf", "out.prj", "out.shp", "out.shx"]
        assert archive.read("out.cpg").decode().strip().upper() in ("UTF-8", "UTF8")
    back = read_units_file(written)
    assert back[0].name == "开州区"
    assert back[2].parent_code == "500154101"  # written as "parent" (≤ 10 chars), read back by alias
    # Field names are cut to 10 UTF-8 bytes on character boundaries (3 Chinese characters).
    assert back[0].attributes["城乡分"] == "111"
    assert back[0].attributes["a_very_lon"] == 5


def test_projected_gpkg_lands_in_lonlat(tmp_path: Path):
    records = small_hierarchy()
    written = write_units_file(records, tmp_path / "gk.gpkg", "gpkg", crs="EPSG:4545")
    import pyogrio

    info = pyogrio.read_info(written)
    assert info["crs"] == "EPSG:4545"
    assert info["total_bounds"][0] > 500_000  # metres in the file
    back = read_units_file(written)
    minx, miny, maxx, maxy = back[0].geometry.bounds
    assert 108.3 < minx < maxx < 108.5 and 31.1 < miny < maxy < 31.3
    _same(records, back, attributes=False, tol=1e-8)


def test_crs_override_and_missing_crs(tmp_path: Path):
    # A metric CSV read with crs=EPSG:4545 ends up in lon/lat.
    path = tmp_path / "metric.csv"
    path.write_text(f"代码,名称,wkt\n500154,开州区,\"{mbox(0, 0, 100, 100).wkt}\"\n", encoding="utf-8")
    (unit,) = read_units_file(path, crs="EPSG:4545")
    assert 108.3 < unit.geometry.centroid.x < 108.5 and unit.code == "500154" and unit.name == "开州区"
    # A GeoPackage without a CRS needs crs=…
    import pyogrio.raw

    nocrs = tmp_path / "nocrs.gpkg"
    with pytest.warns(UserWarning, match="crs"):
        pyogrio.raw.write(str(nocrs), np.array([shapely.to_wkb(box(108.4, 31.2, 108.41, 31.21))], dtype=object),
                          [np.array(["500154"], dtype=object), np.array(["x"], dtype=object)], ["code", "name"],
                          geometry_type="Polygon")
    with pytest.raises(InvalidInput, match="has no CRS; pass crs="):
        read_units_file(nocrs)
    (unit,) = read_units_file(nocrs, crs="EPSG:4490")
    assert unit.geometry.geom_type == "MultiPolygon"


def test_unknown_crs(tmp_path: Path):
    written = write_units_file(small_hierarchy()[:1], tmp_path / "u.geojson", "geojson")
    with pytest.raises(UnknownCRS):
        read_units_file(written, crs="EPSG:999999")
    with pytest.raises(UnknownCRS):
        read_units_file(written, crs="not-a-crs")
    with pytest.raises(InvalidInput, match="RFC 7946"):
        write_units_file(small_hierarchy()[:1], tmp_path / "x.geojson", "geojson", crs="EPSG:4545")


def test_geojson_without_crs_member(tmp_path: Path):
    written = write_units_file(small_hierarchy()[:1], tmp_path / "u.geojson", "geojson")
    data = json.loads(written.read_text(encoding="utf-8"))
    assert "crs" not in data
    ring = data["features"][0]["geometry"]["coordinates"][0][0]
    assert 108 < ring[0][0] < 109 and 31 < ring[0][1] < 32  # lon, lat


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("bad.geojson", '{"type": "FeatureCollection", "features": [', "not valid JSON"),
        ("empty.geojson", "", "empty"),
        ("empty.csv", "", "empty"),
        ("none.geojson", '{"type": "FeatureCollection", "features": []}', "no features"),
        ("list.json", "[1, 2]", "FeatureCollection"),
        ("nocode.csv", "名称,wkt\nx,POINT (1 2)\n", "missing column 'code'"),
        ("header.csv", "code,name,wkt\n", "no features"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, content: str, needle: str):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput) as exc:
        read_units_file(path)
    assert needle in exc.value.message
    assert name in exc.value.message or "column" in exc.value.message


def test_malformed_binary_files(tmp_path: Path):
    written = write_units_file(small_hierarchy(), tmp_path / "u.gpkg", "gpkg")
    truncated = tmp_path / "truncated.gpkg"
    truncated.write_bytes(written.read_bytes()[:5000])
    with pytest.raises(InvalidInput, match="truncated.gpkg"):
        read_units_file(truncated)
    notzip = tmp_path / "units.zip"
    notzip.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InvalidInput, match="units.zip"):
        read_units_file(notzip)
    with pytest.raises(InvalidInput, match=r"'\.kml'"):
        read_units_file(tmp_path / "units.kml")


def test_missing_name_column_lists_columns(tmp_path: Path):
    path = tmp_path / "u.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"unit_code": 500154, "title": "x"},
         "geometry": {"type": "Polygon", "coordinates": [[[108.4, 31.2], [108.5, 31.2], [108.5, 31.3], [108.4, 31.2]]]}}]}))
    with pytest.raises(InvalidInput) as exc:
        read_units_file(path)
    assert "'name'" in exc.value.message and "unit_code" in exc.value.message and "title" in exc.value.message


def test_aliases_numeric_codes_and_points_in_polygon_layer(tmp_path: Path):
    path = tmp_path / "u.geojson"
    square = [[[108.4, 31.2], [108.41, 31.2], [108.41, 31.21], [108.4, 31.21], [108.4, 31.2]]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"编码": 500154101, "名称": "镇", "上级代码": 500154.0, "层级": "乡镇/街道"},
         "geometry": {"type": "Polygon", "coordinates": square}},
        {"type": "Feature", "properties": {"编码": "500154102", "名称": "线", "上级代码": "500154"},
         "geometry": {"type": "LineString", "coordinates": [[108.4, 31.2], [108.5, 31.3]]}}]}, ensure_ascii=False),
        encoding="utf-8")
    first, second = read_units_file(path)
    assert (first.code, first.parent_code, first.level, first.name) == ("500154101", "500154", "乡镇/街道", "镇")
    assert first.geometry.geom_type == "MultiPolygon"
    assert second.geometry.geom_type == "LineString"  # reported by validation as not_polygonal
    report = validate_units([first, second])
    assert first.level == "township"  # the Chinese level name resolved to the key
    assert only(report, "not_polygonal").code == "500154102"

    # A line in a declared polygon layer (GeoPackage) makes the file unreadable.
    import pyogrio.raw

    gpkg = tmp_path / "mixed.gpkg"
    with pytest.warns(RuntimeWarning, match="POINT"):
        pyogrio.raw.write(
            str(gpkg),
            np.array([shapely.to_wkb(box(108.4, 31.2, 108.41, 31.21)), shapely.to_wkb(shapely.Point(108.4, 31.2))], dtype=object),
            [np.array(["500154101", "500154102"], dtype=object), np.array(["a", "b"], dtype=object)], ["code", "name"],
            geometry_type="Polygon", crs="EPSG:4490",
        )
    with pytest.raises(InvalidInput, match="feature 2"):
        read_units_file(gpkg)


def test_numeric_codes_in_shapefile_and_gb18030_csv(tmp_path: Path):
    import pyogrio.raw

    records = small_hierarchy()[:4]
    shp = tmp_path / "num.shp"
    pyogrio.raw.write(
        str(shp), np.array([shapely.to_wkb(r.geometry) for r in records], dtype=object),
        [np.array([int(r.code) for r in records], dtype=np.int64), np.array([r.name for r in records], dtype=object),
         np.array([float(r.parent_code) if r.parent_code else np.nan for r in records])],
        ["CODE", "NAME", "PARENT"], geometry_type="MultiPolygon", crs="EPSG:4490", encoding="UTF-8",
    )
    back = read_units_file(shp)
    assert [(r.code, r.parent_code, r.name) for r in back] == [(r.code, r.parent_code, r.name) for r in records]

    csv_path = tmp_path / "excel.csv"
    csv_path.write_bytes("编码;名称;上级代码;GEOM\n500154101.0;汉丰街道;500154;POLYGON ((108.4 31.2, 108.5 31.2, 108.5 31.3, 108.4 31.2))\n"
                         .encode("gb18030"))
    (unit,) = read_units_file(csv_path)
    assert (unit.code, unit.name, unit.parent_code) == ("500154101", "汉丰街道", "500154")


def test_unclosed_ring_geojson_and_csv(tmp_path: Path):
    path = tmp_path / "open.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": "500154", "name": "开州区"},
         "geometry": {"type": "Polygon", "coordinates": [[[108.4, 31.2], [108.5, 31.2], [108.5, 31.3], [108.4, 31.3]]]}}]}),
        encoding="utf-8")
    (unit,) = read_units_file(path)
    assert any(p.startswith("unclosed ring") for p in unit.problems)
    report = validate_units([unit])
    issue = only(report, "unclosed_ring")
    assert issue.code == "500154" and "500154" in issue.message and issue.row == 1
    assert not report.ok

    csv_path = tmp_path / "open.csv"
    csv_path.write_text(
        "code,name,wkt\n"
        "500154,开州区,\"POLYGON ((108.4 31.2, 108.5 31.2, 108.5 31.3, 108.4 31.3))\"\n"
        "500155,坏,\"POLYGON ((108.4 31.2, 108.5\"\n",
        encoding="utf-8",
    )
    open_unit, broken = read_units_file(csv_path)
    assert open_unit.problems == ["unclosed ring"] and broken.geometry is None
    report = validate_units([open_unit, broken])
    assert only(report, "unclosed_ring").code == "500154"
    bad = only(report, "invalid_geometry")
    assert bad.code == "500155" and "500155" in bad.message and bad.row == 2


# ------------------------------------------------------------------------------------------ validation


def test_clean_hierarchy_is_ok():
    report = validate_units(small_hierarchy())
    assert report.ok, [i.message for i in report.issues]
    assert report.issues == []
    assert report.counts == {"district": 1, "township": 2, "village": 4, "grid": 8}
    data = report.to_dict()
    assert data == {"ok": True, "errors": 0, "warnings": 0, "counts": report.counts, "issues": []}
    json.dumps(data)


def test_invalid_geometry_self_intersection():
    bowtie = Polygon([(X0, Y0), (X0 + 1000, Y0 + 1000), (X0 + 1000, Y0), (X0, Y0 + 1000), (X0, Y0)])
    report = validate_units([rec("500154", bowtie, level="district")])
    issue = only(report, "invalid_geometry")
    assert issue.code == "500154" and "500154" in issue.message and "Self-intersection" in issue.message
    assert "lon 108." in issue.message  # the location


def test_empty_and_not_polygonal():
    report = validate_units([
        rec("500154", None, level="district"),
        rec("500155", geometry=shapely.LineString([(108.4, 31.2), (108.5, 31.3)]), level="district"),
        rec("500156", geometry=shapely.MultiPolygon(), level="district"),
    ])
    empties = [i for i in report.issues if i.check == "empty_geometry"]
    assert {i.code for i in empties} == {"500154", "500156"}
    assert all(i.code in i.message for i in empties)
    issue = only(report, "not_polygonal")
    assert issue.code == "500155" and "500155" in issue.message and "LineString" in issue.message


def test_missing_name():
    issue = only(validate_units([rec("500154", mbox(0, 0, 10, 10), name="  ")]), "missing_name")
    assert issue.code == "500154" and "500154" in issue.message


def test_code_format_and_level_inference():
    records = small_hierarchy()
    for r in records:
        r.level = None  # inferred from the code length
    report = validate_units(records)
    assert report.ok, [i.message for i in report.issues]
    assert [r.level for r in records[:4]] == ["district", "township", "village", "grid"]

    grid = rec("50015410120100X", mbox(0, 0, 1000, 1000), level="grid", parent="500154101201")
    bad = rec("50015410120a", mbox(0, 0, 1000, 1000), level="village", parent="500154101")
    report = validate_units(small_hierarchy() + [grid, bad])
    issue = only(report, "code_format")
    assert issue.code == "50015410120a" and "50015410120a" in issue.message
    assert "50015410120100X" not in {i.code for i in report.issues if i.check == "code_format"}  # [0-9A-Z] allowed


def test_unknown_level():
    report = validate_units([rec("5001541", mbox(0, 0, 10, 10)), rec("500154", mbox(0, 0, 10, 10), level="county-ish")])
    issues = [i for i in report.issues if i.check == "unknown_level"]
    assert {i.code for i in issues} == {"5001541", "500154"}
    assert all(i.code in i.message for i in issues)
    assert report.counts == {"unknown": 2}


def test_missing_parent():
    records = small_hierarchy()
    records.append(rec("500154103201", mbox(0, 0, 100, 100), level="village", parent="500154103"))
    issue = only(validate_units(records), "missing_parent")
    assert issue.code == "500154103201" and "500154103201" in issue.message and "500154103" in issue.message


def test_parent_filled_from_prefix_and_existing():
    records = [r for r in small_hierarchy() if r.level == "grid"]
    for r in records:
        r.parent_code = None
    existing = {
        r.code: ExistingUnit(r.code, r.level, r.parent_code, r.geometry)
        for r in small_hierarchy() if r.level != "grid"
    }
    report = validate_units(records, existing=existing)
    assert report.ok, [i.message for i in report.issues]
    assert records[0].parent_code == "500154101201"


def test_prefix_mismatch():
    records = small_hierarchy()
    records.append(rec("500154102203", mbox(0, 0, 500, 500), level="village", parent="500154101"))
    report = validate_units(records)
    issue = only(report, "prefix_mismatch")
    assert issue.code == "500154102203" and "500154101" in issue.message


def test_wrong_parent_level():
    records = small_hierarchy()
    records.append(rec("500154101209", mbox(0, 0, 500, 500), level="village", parent="500154"))
    issue = only(validate_units(records), "wrong_parent_level")
    assert issue.code == "500154101209" and "500154" in issue.message and "district" in issue.message


def test_duplicate_code():
    records = small_hierarchy()
    records.append(rec("500154101201001", mbox(0, 0, 1000, 1000), level="grid", parent="500154101201", row=99))
    issue = only(validate_units(records), "duplicate_code")
    assert issue.code == "500154101201001" and "500154101201001" in issue.message and issue.row == 99


def test_already_exists_and_replace():
    records = small_hierarchy()
    existing = {"500154": ExistingUnit("500154", "district", None, records[0].geometry)}
    issue = only(validate_units(records, existing=existing), "already_exists")
    assert issue.code == "500154" and "500154" in issue.message
    assert validate_units(records, existing=existing, replace=True).ok


def test_outside_parent():
    records = small_hierarchy()
    grid = next(r for r in records if r.code == "500154101201001")
    grid.geometry = lonlat(mbox(-50, 0, 1000, 1000))  # 50 m × 1000 m beyond the district's west edge
    report = validate_units(records)
    issues = [i for i in report.issues if i.check == "outside_parent"]
    assert {i.code for i in issues} == {"500154101201001"}
    assert "500154101201" in issues[0].message and "m²" in issues[0].message
    area = float(issues[0].message.split(" lies ")[1].split(" m²")[0])
    assert 49_000 < area < 51_000


def test_sibling_overlap():
    records = small_hierarchy()
    grid = next(r for r in records if r.code == "500154101201001")
    grid.geometry = lonlat(mbox(0, 0, 1000, 1100))  # 100 m into its sibling 002
    issue = only(validate_units(records), "sibling_overlap")
    assert issue.code == "500154101201001" and "500154101201002" in issue.message
    area = float(issue.message.split(" by ")[1].split(" m²")[0])
    assert 99_000 < area < 101_000


def test_sibling_overlap_with_existing_sibling():
    records = small_hierarchy()
    existing = {r.code: ExistingUnit(r.code, r.level, r.parent_code, r.geometry) for r in records}
    new = rec("500154101201003", mbox(500, 800, 800, 1200), level="grid", parent="500154101201", row=1)
    report = validate_units([new], existing=existing)
    issues = [i for i in report.issues if i.check == "sibling_overlap"]
    assert [i.code for i in issues] == ["500154101201003", "500154101201003"]
    assert all("500154101201003" in i.message for i in issues)


def test_sibling_gap_is_a_warning():
    records = small_hierarchy()
    grid = next(r for r in records if r.code == "500154101201002")
    grid.geometry = lonlat(mbox(0, 1000, 1000, 1900))  # leaves 1000 m × 100 m uncovered
    report = validate_units(records)
    issue = only(report, "sibling_gap")
    assert issue.code == "500154101201" and "500154101201" in issue.message and issue.severity == "warning"
    area = float(issue.message.split(": ")[1].split(" m²")[0])
    assert 99_000 < area < 101_000
    assert report.ok  # warnings do not reject
    assert report.to_dict()["warnings"] == 1


def test_tolerance_hides_slivers():
    records = small_hierarchy()
    grid = next(r for r in records if r.code == "500154101201001")
    grid.geometry = lonlat(mbox(0, 0, 1000, 1000.0004))  # 0.4 m² into the sibling
    assert validate_units(records, tolerance_m2=1.0).ok
    assert "sibling_overlap" in checks(validate_units(records, tolerance_m2=0.1))


# ------------------------------------------------------------------------------------------ performance


def voronoi_children(parent, n: int, rng: np.random.Generator) -> list:
    """n Voronoi cells (metres) tiling ``parent``."""
    minx, miny, maxx, maxy = parent.bounds
    points: list = []
    shapely.prepare(parent)
    while len(points) < n:
        xs = rng.uniform(minx, maxx, 4 * n)
        ys = rng.uniform(miny, maxy, 4 * n)
        candidates = shapely.points(xs, ys)
        points.extend(candidates[shapely.contains(parent, candidates)][: n - len(points)])
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(points), extend_to=parent))
    out = []
    for cell in cells:
        clipped = shapely.intersection(cell, parent)
        polys = [p for p in shapely.get_parts(clipped) if p.geom_type == "Polygon" and p.area > 0]
        if polys:
            out.append(shapely.MultiPolygon(polys) if len(polys) > 1 else polys[0])
    return out


def big_hierarchy(townships=40, villages=500, grids=4000, seed=7) -> list[UnitRecord]:
    rng = np.random.default_rng(seed)
    side = (grids * 1_000_000) ** 0.5  # ~1 km² grids
    district = box(X0 - side / 2, Y0 - side / 2, X0 + side / 2, Y0 + side / 2)
    records = [UnitRecord("500154", "开州区", "district", None, lonlat(district))]
    towns = voronoi_children(district, townships, rng)
    per_town = np.full(len(towns), villages // len(towns))
    per_town[: villages - per_town.sum()] += 1
    village_geoms = []
    for t, (town, nv) in enumerate(zip(towns, per_town)):
        tcode = f"500154{101 + t:03d}"
        records.append(UnitRecord(tcode, f"镇{t}", "township", "500154", lonlat(town)))
        for v, village in enumerate(voronoi_children(town, int(nv), rng)):
            vcode = f"{tcode}{201 + v:03d}"
            records.append(UnitRecord(vcode, f"村{v}", "village", tcode, lonlat(village)))
            village_geoms.append((vcode, village))
    per_village = np.full(len(village_geoms), grids // len(village_geoms))
    per_village[: grids - per_village.sum()] += 1
    for (vcode, village), ng in zip(village_geoms, per_village):
        for g, cell in enumerate(voronoi_children(village, int(ng), rng)):
            records.append(UnitRecord(f"{vcode}{1 + g:03d}", f"网格{g}", "grid", vcode, lonlat(cell)))
    for i, r in enumerate(records, start=1):
        r.row = i
    return records


def test_validation_performance_4500_units():
    records = big_hierarchy()
    counts = {}
    for r in records:
        counts[r.level] = counts.get(r.level, 0) + 1
    assert counts["township"] == 40 and counts["village"] == 500 and 3990 <= counts["grid"] <= 4000
    start = time.perf_counter()
    report = validate_units(records)
    elapsed = time.perf_counter() - start
    print(f"validated {len(records)} units in {elapsed:.2f} s")
    assert report.ok, [i.message for i in report.issues[:5]]
    assert [i for i in report.issues if i.check != "sibling_gap"] == []
    assert elapsed < 10.0

    # The same hierarchy with one grid pushed into its neighbour is caught.
    grid = records[-1]
    moved = from_metric(shapely.affinity.translate(to_metric(grid.geometry, METRIC), 300, 0), METRIC)
    grid.geometry = moved
    start = time.perf_counter()
    report = validate_units(records)
    assert time.perf_counter() - start < 10.0
    assert {"sibling_overlap", "outside_parent"} & checks(report)

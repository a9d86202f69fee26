"""Digital base layer catalogue on both backends: formats, versions, rollback, repair, all-or-nothing,
GDAL interop, export round trips, bad input."""

from __future__ import annotations

import json
import uuid

import pyogrio
import pytest
import shapely
from shapely.geometry import Point, Polygon, mapping

from tests.conftest import table_counts

POINTS = [(108.40 + i * 0.002, 31.20 + (i % 7) * 0.001) for i in range(60)]


def feature_collection(features) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False).encode()


def point_features(points=POINTS, tag="a"):
    return [{"type": "Feature", "properties": {"name": f"{tag}{i}", "beds": i, "ok": i % 2 == 0},
             "geometry": mapping(Point(x, y))} for i, (x, y) in enumerate(points)]


def square(x, y, d=0.001):
    return Polygon([(x, y), (x + d, y), (x + d, y + d), (x, y + d)])


@pytest.fixture(scope="module")
def admin(api):
    return api.login("admin")


def new_layer(api, admin, geometry_type="POINT", category="0701", **extra) -> str:
    key = "t_" + uuid.uuid4().hex[:10]
    r = api.post("/api/layers", headers=admin, json={"key": key, "title_zh": "测试图层", "title_en": "Test layer",
                                                    "category": category, "geometry_type": geometry_type, **extra})
    assert r.status_code == 201, r.text
    return key


def upload(api, headers, key, name, content, **form):
    return api.post(f"/api/layers/{key}/import", headers=headers, files={"file": (name, content)},
                    data={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in form.items()})


def current_features(api, headers, key, **params):
    r = api.get(f"/api/layers/{key}/features", headers=headers, params={"limit": 10000, **params})
    assert r.status_code == 200, r.text
    return r.json()["features"]


def as_set(features):
    return {(f["properties"]["name"], shapely.geometry.shape(f["geometry"]).wkt) for f in features}


def test_category_tree_and_catalogue(api, admin):
    tree = api.get("/api/layer-categories", headers=admin).json()
    assert len(tree) == 12 and sum(len(m["children"]) for m in tree) >= 78
    assert api.get("/api/layer-categories", params={"language": "en"}, headers=admin).json()[0]["name"].isascii()
    key = new_layer(api, admin)
    listed = {layer["key"]: layer for layer in api.get("/api/layers", headers=admin).json()}
    assert listed[key]["category"] == "0701" and listed[key]["current_version"] == 0


@pytest.mark.parametrize("fmt", ["geojson", "geojsonseq", "gpkg", "shp", "fgb", "csv_lonlat", "csv_wkt"])
def test_import_every_format(api, admin, tmp_path, fmt):
    key = new_layer(api, admin)
    features = point_features()
    if fmt == "geojson":
        name, content = "p.geojson", feature_collection(features)
    elif fmt == "geojsonseq":
        name, content = "p.geojsonl", "\n".join(json.dumps(f, ensure_ascii=False) for f in features).encode()
    elif fmt == "csv_lonlat":
        rows = ["name,beds,ok,lon,lat"] + [f"a{i},{i},{str(i % 2 == 0).lower()},{x},{y}" for i, (x, y) in enumerate(POINTS)]
        name, content = "p.csv", "\n".join(rows).encode()
    elif fmt == "csv_wkt":
        rows = ["name,beds,ok,wkt"] + [f'a{i},{i},{str(i % 2 == 0).lower()},"POINT ({x} {y})"' for i, (x, y) in enumerate(POINTS)]
        name, content = "p.csv", "\n".join(rows).encode()
    else:
        src = tmp_path / "p.geojson"
        src.write_bytes(feature_collection(features))
        suffix = {"gpkg": ".gpkg", "shp": ".shp", "fgb": ".fgb"}[fmt]
        driver = {"gpkg": "GPKG", "shp": "ESRI Shapefile", "fgb": "FlatGeobuf"}[fmt]
        meta, _, geometry, fields = pyogrio.raw.read(src)
        pyogrio.raw.write(tmp_path / f"p{suffix}", geometry, fields, meta["fields"], driver=driver, crs="EPSG:4326",
                          geometry_type="Point", encoding="UTF-8" if fmt == "shp" else None)
        if fmt == "shp":
            import zipfile

            with zipfile.ZipFile(tmp_path / "p.zip", "w") as z:
                for part in tmp_path.glob("p.*"):
                    if part.suffix in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
                        z.write(part, part.name)
            name, content = "p.zip", (tmp_path / "p.zip").read_bytes()
        else:
            name, content = f"p{suffix}", (tmp_path / f"p{suffix}").read_bytes()
    r = upload(api, admin, key, name, content)
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 60 and r.json()["version"] == 1
    got = current_features(api, admin, key)
    assert {f["properties"]["name"] for f in got} == {f"a{i}" for i in range(60)}
    by_name = {f["properties"]["name"]: f for f in got}
    assert shapely.geometry.shape(by_name["a3"]["geometry"]).equals_exact(Point(POINTS[3]), 1e-9)
    assert int(by_name["a3"]["properties"]["beds"]) == 3
    layer = api.get(f"/api/layers/{key}", headers=admin).json()
    assert layer["feature_count"] == 60 and {f["name"] for f in layer["attribute_schema"]} >= {"name", "beds"}


def test_versions_and_exact_rollback(api, admin):
    key = new_layer(api, admin)
    a, b, c = point_features(POINTS[:20], "a"), point_features(POINTS[20:35], "b"), point_features(POINTS[35:], "c")
    assert upload(api, admin, key, "a.geojson", feature_collection(a)).json()["version"] == 1
    state1 = as_set(current_features(api, admin, key))
    assert upload(api, admin, key, "b.geojson", feature_collection(b)).json()["removed"] == 20
    state2 = as_set(current_features(api, admin, key))
    ids2 = {f["properties"]["name"]: f["id"] for f in current_features(api, admin, key)}
    r = upload(api, admin, key, "c.geojson", feature_collection(c), mode="append")
    assert r.json()["version"] == 3 and r.json()["removed"] == 0
    assert len(current_features(api, admin, key)) == 15 + 25
    r = api.post(f"/api/layers/{key}/rollback", json={"version": 1}, headers=admin)
    assert r.status_code == 200 and r.json()["version"] == 4 and r.json()["restores"] == 1
    assert as_set(current_features(api, admin, key)) == state1
    api.post(f"/api/layers/{key}/rollback", json={"version": 2}, headers=admin)
    assert as_set(current_features(api, admin, key)) == state2
    # Restored features keep their ids (ids are never reused).
    assert {f["properties"]["name"]: f["id"] for f in current_features(api, admin, key)} == ids2
    api.post(f"/api/layers/{key}/rollback", json={"version": 0}, headers=admin)
    assert current_features(api, admin, key) == []
    versions = api.get(f"/api/layers/{key}/versions", headers=admin).json()
    assert [v["action"] for v in versions] == ["rollback", "rollback", "rollback", "import_append", "import_replace", "import_replace"]
    assert versions[-1]["actor"] == "admin" and versions[-1]["added"] == 20 and versions[-1]["source_name"] == "a.geojson"
    audit = api.get("/api/audit", params={"entity_key": key}, headers=admin).json()
    assert {"layer.create", "layer.import", "layer.rollback"} <= {e["action"] for e in audit}
    bad = api.post(f"/api/layers/{key}/rollback", json={"version": 6}, headers=admin)
    assert bad.status_code == 422 and "version" in bad.json()["message"]


def test_repair_is_reported_and_ambiguous_geometry_rejects_everything(api, admin):
    key = new_layer(api, admin, geometry_type="MULTIPOLYGON", category="0201")
    spike = Polygon([(108.40, 31.20), (108.41, 31.20), (108.41, 31.21), (108.405, 31.21), (108.405, 31.215),
                     (108.405, 31.21), (108.40, 31.21)])
    good = {"type": "Feature", "properties": {"name": "good"}, "geometry": mapping(square(108.42, 31.2))}
    fixable = {"type": "Feature", "properties": {"name": "spike"}, "geometry": mapping(spike)}
    r = upload(api, admin, key, "ok.geojson", feature_collection([good, fixable]))
    assert r.status_code == 200, r.text
    assert r.json()["repaired"] == 1 and r.json()["issues"][0]["check"] == "repaired" and r.json()["issues"][0]["row"] == 2
    assert {f["geometry"]["type"] for f in current_features(api, admin, key)} == {"MultiPolygon"}
    before = table_counts(api.store)
    bowtie = {"type": "Feature", "properties": {"name": "bowtie"},
              "geometry": {"type": "Polygon", "coordinates": [[[108.4, 31.2], [108.41, 31.21], [108.41, 31.2], [108.4, 31.21], [108.4, 31.2]]]}}
    line = {"type": "Feature", "properties": {"name": "line"}, "geometry": {"type": "LineString", "coordinates": [[108.4, 31.2], [108.5, 31.3]]}}
    r = upload(api, admin, key, "bad.geojson", feature_collection([good, bowtie, line]))
    assert r.status_code == 422, r.text
    report = r.json()["details"]
    checks = {(i["row"], i["check"]) for i in report["issues"]}
    assert (2, "invalid_geometry") in checks and (3, "wrong_geometry_type") in checks
    assert "nothing was imported" in r.json()["message"]
    assert table_counts(api.store) == before
    assert api.get(f"/api/layers/{key}", headers=admin).json()["current_version"] == 1


def test_bad_files_and_parameters_change_nothing(api, admin):
    key = new_layer(api, admin)
    before = table_counts(api.store)
    cases = [
        ("x.geojson", b"{broken", {}, "x.geojson"),
        ("x.geojson", b"", {}, "empty"),
        ("x.kml", b"<kml/>", {}, ".kml"),
        ("x.gpkg", b"SQLite format 3\x00garbage", {}, "x.gpkg"),
        ("x.geojson", feature_collection(point_features()), {"crs": "EPSG:999999"}, "EPSG:999999"),
        ("x.geojson", feature_collection(point_features()), {"mode": "merge"}, "merge"),
        ("x.geojson", feature_collection([]), {}, "no features"),
        ("x.csv", b"name,lon,lat\na,108.4,95\n", {}, "95"),
    ]
    for name, content, form, needle in cases:
        r = upload(api, admin, key, name, content, **form)
        assert r.status_code == 422, (name, r.text)
        assert needle in r.json()["message"], (needle, r.json()["message"])
    for body, needle in [({"key": "Bad Key", "title_zh": "x", "category": "0701"}, "Bad Key"),
                         ({"key": "okkey", "title_zh": "x", "category": "9999"}, "9999"),
                         ({"key": "okkey", "title_zh": "x", "category": "07"}, "major"),
                         ({"key": "okkey", "title_zh": "x", "category": "0701", "geometry_type": "BLOB"}, "BLOB"),
                         ({"key": key, "title_zh": "x", "category": "0701"}, key)]:
        r = api.post("/api/layers", json=body, headers=admin)
        assert r.status_code in (409, 422) and needle in r.json()["message"], r.text
    r = api.get(f"/api/layers/{key}/export", params={"format": "kml"}, headers=admin)
    assert r.status_code == 422 and "kml" in r.json()["message"]
    r = api.get(f"/api/layers/{key}/features", params={"limit": 10**6}, headers=admin)
    assert r.status_code == 422
    assert api.get("/api/layers/nope", headers=admin).status_code == 404
    assert table_counts(api.store) == before


@pytest.mark.parametrize("fmt,suffix", [("geojson", ".geojson"), ("geojsonseq", ".geojsonl"), ("gpkg", ".gpkg"),
                                        ("shp", ".shp"), ("fgb", ".fgb"), ("csv", ".csv")])
def test_export_round_trip(api, admin, fmt, suffix):
    key = new_layer(api, admin, geometry_type="MULTIPOLYGON", category="0201")
    features = [{"type": "Feature", "properties": {"name": f"房屋{i}", "floors": i + 1}, "geometry": mapping(square(108.4 + i * 0.002, 31.2))}
                for i in range(25)]
    assert upload(api, admin, key, "h.geojson", feature_collection(features)).status_code == 200
    r = api.get(f"/api/layers/{key}/export", params={"format": fmt}, headers=admin)
    assert r.status_code == 200, r.text
    name = r.headers["content-disposition"].split("filename=")[1].strip('"')
    again = new_layer(api, admin, geometry_type="MULTIPOLYGON", category="0201")
    r2 = upload(api, admin, again, name, r.content)
    assert r2.status_code == 200, r2.text
    original = {f["properties"]["name"]: shapely.geometry.shape(f["geometry"]) for f in current_features(api, admin, key)}
    back = {f["properties"]["name"]: shapely.geometry.shape(f["geometry"]) for f in current_features(api, admin, again)}
    assert original.keys() == back.keys()
    assert all(shapely.hausdorff_distance(original[k], back[k]) < 1e-7 for k in original)


def test_features_bbox_paging_and_crs(api, admin):
    key = new_layer(api, admin)
    upload(api, admin, key, "p.geojson", feature_collection(point_features()))
    bbox = "108.40,31.199,108.45,31.21"
    inside = [f for f in current_features(api, admin, key, bbox=bbox)]
    expected = sorted(f"a{i}" for i, (x, y) in enumerate(POINTS) if x <= 108.45)
    assert sorted(f["properties"]["name"] for f in inside) == expected
    page = current_features(api, admin, key, bbox=bbox, limit=5, offset=3)
    assert [f["id"] for f in page] == [f["id"] for f in inside[3:8]]
    projected = current_features(api, admin, key, crs="EPSG:4545", limit=1)
    assert projected[0]["geometry"]["coordinates"][0] > 400_000


def test_gdal_opens_the_layer_in_the_embedded_geopackage(api, admin):
    if api.store.backend != "sqlite":
        pytest.skip("the GeoPackage file is the embedded backend's")
    key = new_layer(api, admin)
    upload(api, admin, key, "p.geojson", feature_collection(point_features()))
    path = api.store.settings.data_dir / "cityops.gpkg"
    with api.store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    info = pyogrio.read_info(path, layer=f"layer_{key}")
    assert info["features"] == 60 and info["crs"] == "EPSG:4490" and info["geometry_type"] == "Point"
    assert info["capabilities"]["fast_spatial_filter"]
    # The bulk import writes the R*Tree itself: complete, used by GDAL's bbox filter, and the trigger that
    # keeps it current for later single-row writes is back in place.
    with api.store.engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM rtree_layer_{key}_geom").scalar() == 60
        assert conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                                    (f"rtree_layer_{key}_geom_insert",)).scalar() == 1
    bbox = (108.40, 31.199, 108.45, 31.21)
    _, _, geometry, _ = pyogrio.raw.read(path, layer=f"layer_{key}", bbox=bbox, columns=[])
    via_api = current_features(api, admin, key, bbox=",".join(map(str, bbox)))
    assert len(geometry) == len(via_api) > 0


def test_scope_on_layers(api, admin):
    key = new_layer(api, admin)
    yihe = api.login("yihe")
    assert api.get(f"/api/layers/{key}", headers=yihe).status_code == 200  # district data is shared
    before = table_counts(api.store)
    assert upload(api, yihe, key, "p.geojson", feature_collection(point_features())).status_code == 403
    assert api.post(f"/api/layers/{key}/rollback", json={"version": 0}, headers=yihe).status_code == 403
    assert api.delete(f"/api/layers/{key}", headers=yihe).status_code == 403
    assert table_counts(api.store) == before


def test_an_imported_geometry_is_stored_as_the_encoder_writes_it(api, admin, tmp_path):
    """The import writes the file's own WKB where the geometry is stored as parsed (canonical CRS, valid, the layer's
    type) and encodes the others: either way the stored bytes are what the encoder gives, with the canonical SRID
    (PostGIS: binary COPY of plain WKB, the SRID from the column's type)."""
    import numpy as np

    from cityops.core.geometry import from_gpkg

    polygons = [square(108.4 + i * 0.002, 31.2) for i in range(40)]
    for name, crs, shapes in (("canonical", "EPSG:4490", polygons), ("wgs84", "EPSG:4326", polygons[:7])):
        key = new_layer(api, admin, geometry_type="MULTIPOLYGON" if name == "wgs84" else "POLYGON", category="0201")
        path = tmp_path / f"{name}.fgb"
        codes = np.array([f"b{i}" for i in range(len(shapes))], dtype=object)
        pyogrio.raw.write(path, shapely.to_wkb(shapes), [codes], ["code"],
                          driver="FlatGeobuf", geometry_type="Polygon", crs=crs)
        r = upload(api, admin, key, path.name, path.read_bytes())
        assert r.status_code == 200, r.text
        with api.store.engine.connect() as conn:
            if api.store.backend == "sqlite":
                rows = conn.exec_driver_sql(f"SELECT properties, geom, 4490 FROM layer_{key} ORDER BY id").all()
                stored = [(json.loads(p), from_gpkg(g), g[40:]) for p, g, _ in rows]
                assert all(bytes(g[:8]) == b"GP\x00\x03\x8a\x11\x00\x00" for _, g, _ in rows)  # header, SRID 4490
            else:
                rows = conn.exec_driver_sql(f"SELECT properties, ST_AsBinary(geom, 'NDR'), ST_SRID(geom) FROM layer_{key} "
                                            "ORDER BY id").all()
                assert {srid for _, _, srid in rows} == {4490}
                stored = [(p, shapely.from_wkb(bytes(g)), bytes(g)) for p, g, _ in rows]
        by_code = {p["code"]: (geom, raw) for p, geom, raw in stored}  # FlatGeobuf keeps its features in index order
        assert sorted(by_code) == sorted(codes)
        for code, shape in zip(codes, shapes):
            geom, raw = by_code[code]
            expected = shapely.multipolygons([shape]) if name == "wgs84" else shape
            assert geom.equals_exact(expected, 1e-9)
            assert raw == shapely.to_wkb(geom, byte_order=1, flavor="iso")


def test_the_files_wkb_is_reused_only_where_it_is_what_would_be_written():
    """``featurestore.reusable_wkb``: the same geometry object as parsed, plain 2D little-endian WKB; the blobs and
    the COPY rows built from it are byte for byte those of the encoder."""
    import numpy as np
    import pyarrow as pa

    from cityops.base import featurestore

    parsed = np.array([square(108.4 + i * 0.01, 31.2) for i in range(6)] + [Point(108.4, 31.2), None], dtype=object)
    raw = pa.array(list(shapely.to_wkb(parsed[:7], byte_order=1, flavor="iso")) + [None], pa.binary())
    stored = parsed.copy()
    stored[2] = square(108.0, 31.0)  # replaced (a repair, a transformation)
    reused = featurestore.reusable_wkb(stored, (parsed, raw))
    assert reused.is_valid().to_pylist() == [True, True, False, True, True, True, True, False]
    assert featurestore.gpkg_blobs(stored, wkb=reused) == featurestore.gpkg_blobs(stored)
    big_endian = pa.array(list(shapely.to_wkb(parsed[:7], byte_order=0)) + [None], pa.binary())
    with_z = pa.array(list(shapely.to_wkb(shapely.force_3d(parsed[:7]), byte_order=1)) + [None], pa.binary())
    assert featurestore.reusable_wkb(stored, (parsed, big_endian)) is None
    assert featurestore.reusable_wkb(stored, (parsed, with_z)) is None
    assert b"".join(map(bytes, featurestore.copy_rows(["a"] * 8, ["{}"] * 8, stored, 3, reused))) == \
        b"".join(map(bytes, featurestore.copy_rows(["a"] * 8, ["{}"] * 8, stored, 3)))


def test_feature_texts_escape_ids_and_rewrite_non_finite_properties():
    """``featurestore.feature_texts`` (joined by Arrow): ids that need escaping and stored properties holding NaN
    (Python's json wrote it; not JSON) come out as valid JSON, the rest as stored."""
    import numpy as np

    from cityops.base import featurestore

    texts = featurestore.feature_texts([1, 2, 3], ['a"b', None, "tab\there"], ['{"v":NaN}', "{}", '{"s":"NaN"}'],
                                       np.array([Point(1, 2), None, Point(3, 4)], dtype=object))
    assert [json.loads(t) for t in texts] == [
        {"type": "Feature", "id": 'a"b', "geometry": {"type": "Point", "coordinates": [1.0, 2.0]}, "properties": {"v": None}},
        {"type": "Feature", "id": "2", "geometry": None, "properties": {}},
        {"type": "Feature", "id": "tab\there", "geometry": {"type": "Point", "coordinates": [3.0, 4.0]},
         "properties": {"s": "NaN"}}]
    assert texts[2].endswith(b'"properties":{"s":"NaN"}}')  # stored text kept as it was


def test_rows_and_texts_prepared_ahead_follow_the_ids_the_rows_get(api, admin):
    """SQLite: an import builds each batch's insert parameters and Feature texts on its reading thread, for the ids
    the rows are predicted to get (``prepare_rows``'s ``first_id``). Where the sequence moved in between (another
    writer appended), the writing thread builds them again for the ids the rows did get."""
    import numpy as np

    from cityops.base import featurestore

    if api.store.backend != "sqlite":
        pytest.skip("the Feature texts are stored on SQLite only")
    key = new_layer(api, admin)
    current, _ = featurestore.tables(key, "POINT")
    geoms = np.array([Point(108.4, 31.2), Point(108.5, 31.3)], dtype=object)
    with api.store.engine.connect() as conn:
        with featurestore.BulkWriter(conn, current) as bulk:
            first = bulk.next_id()
            right = featurestore.prepare_rows(True, ["a", None], ['{"n":1}', "{}"], geoms, 1, first_id=first)
            bulk.insert(["a", None], ['{"n":1}', "{}"], geoms, 1, prepared=right)
            stale = featurestore.prepare_rows(True, ["b", None], ['{"n":2}', "{}"], geoms, 1, first_id=first)
            bulk.insert(["b", None], ['{"n":2}', "{}"], geoms, 1, prepared=stale)
        rows = conn.exec_driver_sql(f'SELECT t.id, t.fid, t.properties, g.feature FROM "{current.name}" t '
                                    f'JOIN "{featurestore.geojson_table(current.name)}" g USING (id) ORDER BY t.id').all()
        conn.rollback()
    assert right.rows is not None and right.text_rows.rest[0][0] == first
    assert [(r[0], r[1], r[2]) for r in rows] == [(first, "a", '{"n":1}'), (first + 1, None, "{}"),
                                                  (first + 2, "b", '{"n":2}'), (first + 3, None, "{}")]
    texts = [json.loads(r[3]) for r in rows]
    assert [t["id"] for t in texts] == ["a", str(first + 1), "b", str(first + 3)]
    assert [t["properties"] for t in texts] == [{"n": 1}, {}, {"n": 2}, {}]

"""Vector tiles on both backends: XYZ + TileJSON 3.0 and OGC API – Tiles, decoded by independent readers
(GDAL's MVT driver through pyogrio, and mapbox-vector-tile's decoder — our encoder is neither), scope,
generalisation caps and sizes, the cache and its invalidation, and bad tile addresses."""

from __future__ import annotations

import dataclasses
import json
import uuid

import mapbox_vector_tile
import morecantile
import numpy as np
import pyogrio
import pytest
import shapely
from jsonschema import Draft202012Validator
from shapely.geometry import Point, mapping

from cityops.identity.scope import Scope
from cityops.tiles import service
from cityops.tiles.catalogue import load_catalogue, parse
from cityops.tiles.service import TileCache
from tests.conftest import table_counts

TMS = morecantile.tms.get("WebMercatorQuad")
MVT = "application/vnd.mapbox-vector-tile"

# TileJSON 3.0.0's required structure, written from the specification's field table (tilejson, tiles with
# {z}/{x}/{y} absolute URLs, vector_layers with id and fields; optional keys typed).
TILEJSON_SCHEMA = {
    "type": "object",
    "required": ["tilejson", "tiles", "vector_layers"],
    "properties": {
        "tilejson": {"const": "3.0.0"},
        "tiles": {"type": "array", "minItems": 1,
                  "items": {"type": "string", "pattern": r"^https?://.*\{z\}.*\{x\}.*\{y\}"}},
        "vector_layers": {"type": "array", "items": {
            "type": "object", "required": ["id", "fields"],
            "properties": {"id": {"type": "string"}, "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                           "description": {"type": "string"}, "minzoom": {"type": "integer", "minimum": 0, "maximum": 30},
                           "maxzoom": {"type": "integer", "minimum": 0, "maximum": 30}}}},
        "bounds": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
        "center": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
        "minzoom": {"type": "integer", "minimum": 0, "maximum": 30},
        "maxzoom": {"type": "integer", "minimum": 0, "maximum": 30},
        "scheme": {"enum": ["xyz", "tms"]},
        "name": {"type": "string"}, "description": {"type": "string"}, "version": {"type": "string"},
    },
}


@pytest.fixture(scope="module")
def admin(api):
    return api.login("admin")


@pytest.fixture(scope="module")
def dense(api, admin):
    """The z14 tile holding the most demo buildings, and those buildings (code → record) as the API lists them."""
    items = api.get("/api/buildings", params={"limit": 1000, "geometry": True}, headers=admin).json()["items"]
    counts: dict = {}
    for b in items:
        c = shapely.geometry.shape(b["geometry"]).centroid
        t = TMS.tile(c.x, c.y, 14)
        counts[t] = counts.get(t, 0) + 1
    tile = max(counts, key=counts.get)
    ll = TMS.bounds(tile)
    inside = api.get("/api/buildings", params={"bbox": f"{ll.left},{ll.bottom},{ll.right},{ll.top}", "limit": 1000},
                     headers=admin).json()["items"]
    return tile, {b["code"]: b for b in inside}


def gdal_layers(tmp_path, data: bytes, tile) -> dict[str, list[dict]]:
    """Decode with GDAL's MVT driver (independent of our encoder): {layer: [{properties…, 'geometry'}]} in EPSG:3857."""
    # GDAL georeferences a single tile from a {z}/{x}/{y}.pbf path.
    path = tmp_path / uuid.uuid4().hex / str(tile.z) / str(tile.x) / f"{tile.y}.pbf"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    out = {}
    for name, _ in pyogrio.list_layers(path):
        meta, _, geoms, fields = pyogrio.raw.read(path, layer=name)
        rows = []
        for i, g in enumerate(geoms):
            row = {f: fields[j][i] for j, f in enumerate(meta["fields"])}
            row["geometry"] = shapely.from_wkb(g)
            rows.append(row)
        out[name] = rows
    return out


def to_3857(geom):
    import pyproj

    fwd = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    return shapely.transform(geom, lambda c: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))


# --- TileJSON and the tile set list ----------------------------------------------------------------------


def test_tilejson_is_valid_and_lists_layers(api, admin):
    doc = api.get("/api/tiles/basemap/tilejson.json", headers=admin).json()
    Draft202012Validator(TILEJSON_SCHEMA).validate(doc)
    ids = {layer["id"]: layer for layer in doc["vector_layers"]}
    assert {"district", "township", "village", "grid", "buildings"} <= set(ids)
    assert ids["buildings"]["fields"]["height"] == "Number" and ids["buildings"]["minzoom"] == 12
    assert doc["tiles"][0].startswith("http://testserver/api/tiles/basemap/")
    lon, lat, _ = doc["center"]
    assert 107 < lon < 109.5 and 30.5 < lat < 32  # the demo district
    sets = api.get("/api/tiles", headers=admin).json()
    assert sets[0]["id"] == "basemap" and sets[0]["tilejson"].endswith("/api/tiles/basemap/tilejson.json")


# --- Tiles, decoded independently ---------------------------------------------------------------------------


def test_dense_building_tile_decoded_by_gdal(api, admin, dense, tmp_path):
    tile, buildings = dense
    assert len(buildings) >= 5, "the demo should have a cluster of buildings"
    r = api.get(f"/api/tiles/basemap/{tile.z}/{tile.x}/{tile.y}.mvt", headers=admin)
    assert r.status_code == 200 and r.headers["content-type"] == MVT
    layers = gdal_layers(tmp_path, r.content, tile)
    assert {"district", "township", "village", "grid", "buildings"} <= set(layers)
    got = {row["code"]: row for row in layers["buildings"]}
    # Every building intersecting the tile is there (z14 keeps all), and nothing else.
    assert set(buildings) <= set(got)
    sample = next(iter(buildings))
    detail = api.get(f"/api/buildings/{sample}", params={"geometry": True}, headers=admin).json()
    row = got[sample]
    assert int(row["floors"]) == detail["floors"]
    expected_height = detail["height_m"] if detail.get("height_m") is not None else detail["floors"] * 3.0
    assert float(row["height"]) == pytest.approx(expected_height, abs=0.05)
    assert row["safety_grade"] == detail["safety_grade"]
    # Geometry: the decoded footprint sits where the stored one is, to the tile grid's resolution (~0.6 m at z14).
    footprint = to_3857(shapely.geometry.shape(detail["geometry"]))
    xy = TMS.xy_bounds(tile)
    if shapely.box(xy.left, xy.bottom, xy.right, xy.top).contains(footprint):
        assert shapely.hausdorff_distance(row["geometry"], footprint) < 2.5
        assert row["geometry"].area == pytest.approx(footprint.area, rel=0.1)


def test_mapbox_decoder_checks_winding_and_extent(api, admin, dense):
    tile, buildings = dense
    data = api.get(f"/api/tiles/basemap/{tile.z}/{tile.x}/{tile.y}.mvt", headers=admin).content
    decoded = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})
    assert decoded["buildings"]["extent"] == 4096 and decoded["buildings"]["version"] == 2
    for feature in decoded["buildings"]["features"]:
        geom = shapely.geometry.shape(feature["geometry"])
        assert geom.is_valid and geom.area > 0
        lo, hi = -64, 4096 + 64
        minx, miny, maxx, maxy = geom.bounds
        assert lo <= minx and maxx <= hi and lo <= miny and maxy <= hi
        assert feature["properties"]["height"] > 0


def test_ogc_tile_is_the_xyz_tile_with_row_and_column(api, admin, dense):
    tile, _ = dense
    xyz = api.get(f"/api/tiles/basemap/{tile.z}/{tile.x}/{tile.y}.mvt", headers=admin)
    ogc = api.get(f"/ogc/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}", headers=admin)
    assert ogc.status_code == 200 and ogc.content == xyz.content
    # An empty place of the world is an empty tile: 204, no body.
    empty = api.get("/ogc/tiles/WebMercatorQuad/14/0/0", headers=admin)
    assert empty.status_code == 204 and empty.content == b""


def test_generalised_tiles_stay_small(api, admin):
    """z10–z13 over the whole demo district: every tile under 500 kB, units and buildings as configured."""
    doc = api.get("/api/tiles/basemap/tilejson.json", headers=admin).json()
    west, south, east, north = doc["bounds"]
    sizes = {}
    for z in (10, 11, 12, 13):
        for t in TMS.tiles(west, south, east, north, [z]):
            r = api.get(f"/api/tiles/basemap/{z}/{t.x}/{t.y}.mvt", headers=admin)
            assert r.status_code in (200, 204)
            sizes[(z, t.x, t.y)] = len(r.content)
            if z < 12 and r.status_code == 200:
                assert "buildings" not in mapbox_vector_tile.decode(r.content)
    assert max(sizes.values()) < 500_000 and any(sizes.values())


def test_feature_cap_keeps_the_largest(demo_store):
    """The per-tile feature cap keeps the largest polygons (whole-feature area, as tippecanoe drops smallest)."""
    cat = load_catalogue()
    capped = dataclasses.replace(cat, rules=tuple(dataclasses.replace(r, max_features=3) for r in cat.rules))
    with demo_store.sessions() as session:
        from sqlalchemy import select

        from cityops.org.models import Unit

        geom = session.execute(select(Unit.geom).where(Unit.level == "township")).scalars().first()
        c = geom.representative_point()
        t = TMS.tile(c.x, c.y, 12)
        full = mapbox_vector_tile.decode(service.render(session, Scope(all_units=True), "basemap", 12, t.x, t.y, cat))
        small = mapbox_vector_tile.decode(service.render(session, Scope(all_units=True), "basemap", 12, t.x, t.y, capped))
        codes = [f["properties"]["code"] for f in full["grid"]["features"]]
        grids = dict(session.execute(select(Unit.code, Unit.geom).where(Unit.code.in_(codes))).all())
    assert len(codes) > 3 and len(small["grid"]["features"]) == 3
    frame = service.tile_request(cat, 12, t.x, t.y).frame
    area = {code: shapely.area(frame.to_tile(np.array([g], dtype=object)))[0] for code, g in grids.items()}
    largest = sorted(area, key=area.get, reverse=True)[:3]
    assert {f["properties"]["code"] for f in small["grid"]["features"]} == set(largest)


# --- Per-layer tiles, cache, invalidation -----------------------------------------------------------------


def _layer(api, admin, features, geometry_type="POINT") -> str:
    key = "tl_" + uuid.uuid4().hex[:10]
    r = api.post("/api/layers", headers=admin, json={"key": key, "title_zh": "瓦片测试", "category": "0302",
                                                    "geometry_type": geometry_type})
    assert r.status_code == 201, r.text
    _import(api, admin, key, features)
    return key


def _import(api, admin, key, features, replace=True):
    content = json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False).encode()
    r = api.post(f"/api/layers/{key}/import", headers=admin, files={"file": ("f.geojson", content)},
                 data={"mode": "replace"} if replace else None)
    assert r.status_code == 200, r.text


#: The z15 tile the layer tests draw in; their points lie well inside it.
LAYER_TILE = TMS.tile(108.402, 31.2005, 15)


def _points(n, name="p"):
    b = TMS.bounds(LAYER_TILE)
    w, h = (b.right - b.left) / 8, (b.top - b.bottom) / 8
    return [{"type": "Feature", "properties": {"name": f"{name}{i}", "n": i},
             "geometry": mapping(Point(b.left + (1 + i % 5) * w, b.bottom + (1 + i // 5) * h))} for i in range(n)]


def test_layer_tiles_cache_and_invalidation(api, admin, tmp_path):
    key = _layer(api, admin, _points(10))
    t = LAYER_TILE
    url = f"/api/tiles/{key}/{t.z}/{t.x}/{t.y}.mvt"
    first = api.get(url, headers=admin)
    assert first.status_code == 200 and first.headers["x-tile-cache"] == "miss"
    again = api.get(url, headers=admin)
    assert again.headers["x-tile-cache"] == "hit" and again.content == first.content
    assert api.get(url, headers={**admin, "If-None-Match": again.headers["etag"]}).status_code == 304
    rows = gdal_layers(tmp_path, first.content, t)[key]
    assert {r["name"] for r in rows} == {f"p{i}" for i in range(10)}
    assert all(isinstance(r["n"], (int, np.integer)) for r in rows)
    # The key layer (category 0302, geohazard points) joins the base map from z10.
    base = mapbox_vector_tile.decode(api.get(f"/api/tiles/basemap/{t.z}/{t.x}/{t.y}.mvt", headers=admin).content)
    assert len(base[key]["features"]) == 10

    _import(api, admin, key, _points(4, name="q"))  # a new version of the layer
    api.app.state.tiles.changed()  # this process wrote: no need to wait for the stamp check interval
    after = api.get(url, headers=admin)
    assert after.headers["x-tile-cache"] == "miss"
    assert {r["name"] for r in gdal_layers(tmp_path, after.content, t)[key]} == {f"q{i}" for i in range(4)}
    base = mapbox_vector_tile.decode(api.get(f"/api/tiles/basemap/{t.z}/{t.x}/{t.y}.mvt", headers=admin).content)
    assert len(base[key]["features"]) == 4

    # OGC API – Tiles for the collection: tilesets list, tileset metadata, the same tile.
    sets = api.get(f"/ogc/collections/{key}/tiles", headers=admin).json()
    href = sets["tilesets"][0]["links"][0]["href"]
    meta = api.get(href.replace("http://testserver", ""), headers=admin).json()
    assert meta["dataType"] == "vector" and meta["layers"][0]["id"] == key
    template = next(lk["href"] for lk in meta["links"] if lk["rel"] == "item")
    tile_url = template.replace("http://testserver", "").format(tileMatrix=t.z, tileRow=t.y, tileCol=t.x)
    assert api.get(tile_url, headers=admin).content == after.content


def test_buildings_change_invalidates_basemap(api, admin, dense):
    tile, _ = dense
    url = f"/api/tiles/basemap/{tile.z}/{tile.x}/{tile.y}.mvt"
    api.get(url, headers=admin)
    assert api.get(url, headers=admin).headers["x-tile-cache"] == "hit"
    with api.store.sessions() as session:
        service.invalidate(session, "buildings")
        session.commit()
    api.app.state.tiles.changed()
    assert api.get(url, headers=admin).headers["x-tile-cache"] == "miss"
    with pytest.raises(ValueError, match="unknown tile source"):
        with api.store.sessions() as session:
            service.invalidate(session, "roads")


def test_cache_is_bounded(tmp_path):
    cache = TileCache(tmp_path / "c", max_bytes=2500)
    for i in range(5):
        cache.put("basemap", "s1", f"k{i}", bytes([i]) * 1000)
    assert cache.size_bytes <= 2500 and len(cache) == 2 and cache.evictions == 3
    assert cache.get("basemap", "s1", "k0") is None and cache.get("basemap", "s1", "k4") == bytes([4]) * 1000
    # A new stamp (the data changed) drops the tile set's old tiles at once.
    assert cache.get("basemap", "s2", "k4") is None and len(cache) == 0
    assert not any(p.suffix == ".mvt" for p in (tmp_path / "c").rglob("*"))


# --- Scope and access --------------------------------------------------------------------------------------


def test_outsider_sees_no_foreign_buildings(api, admin, dense):
    """A principal scoped to 义和镇 gets the base map without 大德镇's buildings; an integration role without
    housing.read gets no buildings at all."""
    townships = {u["name"]: u["code"] for u in api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]}
    dade = townships["大德镇"]
    b = api.get("/api/buildings", params={"root": dade, "limit": 1}, headers=admin).json()["items"][0]
    detail = api.get(f"/api/buildings/{b['code']}", params={"geometry": True}, headers=admin).json()
    c = shapely.geometry.shape(detail["geometry"]).centroid
    t = TMS.tile(c.x, c.y, 15)
    username = "tiles_" + uuid.uuid4().hex[:6]
    r = api.post("/api/users", headers=admin, json={"username": username, "password": "tiles-pass-1", "role": "township_operator",
                                                     "scope_units": [townships["义和镇"]]})
    assert r.status_code == 201, r.text
    outsider = api.login(username, "tiles-pass-1")
    url = f"/api/tiles/basemap/{t.z}/{t.x}/{t.y}.mvt"
    mine = mapbox_vector_tile.decode(api.get(url, headers=admin).content)
    assert b["code"] in {f["properties"]["code"] for f in mine["buildings"]["features"]}
    r = api.get(url, headers=outsider)
    theirs = mapbox_vector_tile.decode(r.content) if r.status_code == 200 else {}
    assert "buildings" not in theirs or all(not f["properties"]["code"].startswith(dade) for f in theirs["buildings"]["features"])
    for level in ("village", "grid"):
        for f in theirs.get(level, {}).get("features", []):
            assert not f["properties"]["code"].startswith(dade)
    r = api.post("/api/users", headers=admin, json={"username": username + "i", "password": "tiles-pass-1", "role": "integration",
                                                     "scope_units": [dade]})
    assert r.status_code == 201, r.text
    device = api.login(username + "i", "tiles-pass-1")
    plain = mapbox_vector_tile.decode(api.get(url, headers=device).content)
    assert "buildings" not in plain and "district" in plain
    ids = {layer["id"] for layer in api.get("/api/tiles/basemap/tilejson.json", headers=device).json()["vector_layers"]}
    assert "buildings" not in ids


def test_tiles_need_credentials(api):
    for path in ("/api/tiles", "/api/tiles/basemap/tilejson.json", "/api/tiles/basemap/10/830/418.mvt",
                 "/ogc/tiles", "/ogc/tiles/WebMercatorQuad", "/ogc/tiles/WebMercatorQuad/10/418/830"):
        assert api.get(path).status_code == 401, path
    # The tile matrix set definitions are public and read by morecantile as an OGC 2D TMS document.
    tms = api.get("/ogc/tileMatrixSets/WebMercatorQuad").json()
    parsed = morecantile.TileMatrixSet.model_validate(tms)
    assert parsed.xy_bounds(morecantile.Tile(830, 418, 10)) == TMS.xy_bounds(morecantile.Tile(830, 418, 10))
    assert api.get("/ogc/tileMatrixSets").json()["tileMatrixSets"][0]["id"] == "WebMercatorQuad"
    conf = api.get("/ogc/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt" in conf


# --- Bad input ----------------------------------------------------------------------------------------------


def test_bad_tile_addresses(api, admin):
    before = table_counts(api.store)
    cases = [
        ("/api/tiles/basemap/19/0/0.mvt", 404, "zoom 19"),
        ("/api/tiles/basemap/3/8/0.mvt", 404, "outside the tile matrix"),
        ("/api/tiles/basemap/3/0/-1.mvt", 404, "outside the tile matrix"),
        ("/api/tiles/no_such_layer/3/0/0.mvt", 404, "no_such_layer"),
        ("/api/tiles/no_such_layer/tilejson.json", 404, "no_such_layer"),
        ("/api/tiles/basemap/a/0/0.mvt", 422, None),
        ("/ogc/tiles/WorldCRS84Quad", 404, "WorldCRS84Quad"),
        ("/ogc/tiles/WebMercatorQuad/x/0/0", 400, "three integers"),
        ("/ogc/tiles/WebMercatorQuad/2/4/0", 404, "outside the tile matrix"),
        ("/ogc/collections/no_such_layer/tiles", 404, "no_such_layer"),
        ("/ogc/tileMatrixSets/Nope", 404, "Nope"),
    ]
    for path, status, text in cases:
        r = api.get(path, headers=admin)
        assert r.status_code == status, (path, r.status_code, r.text)
        if text:
            assert text in r.json()["message"], (path, r.text)
    assert table_counts(api.store) == before


def test_catalogue_is_validated():
    good = {"version": 1, "extent": 4096, "buffer": 64, "min_zoom": 0, "max_zoom": 18, "max_tile_bytes": 500000,
            "cache": {"max_bytes": 1000, "check_seconds": 1},
            "generalise": [{"max_zoom": 18, "simplify": 1, "min_area": 0, "min_length": 0, "max_features": 10}],
            "basemap": {"id": "basemap", "title_zh": "底图", "title_en": "Base", "description_zh": "", "description_en": "",
                        "layers": [{"id": "buildings", "source": "buildings", "min_zoom": 12}]}}
    assert parse(good).rule(14).max_features == 10
    for change, message in (({"extent": 1000}, "power of two"), ({"version": 2}, "version"),
                            ({"generalise": [{**good["generalise"][0], "max_zoom": 10}]}, "must reach max_zoom"),
                            ({"basemap": {**good["basemap"], "layers": [{"id": "x", "source": "roads", "min_zoom": 1}]}}, "source")):
        with pytest.raises(ValueError, match=message):
            parse({**good, **change})


def test_postgis_sql_path_matches_the_python_path(api, admin, dense):
    """On PostGIS tiles are ST_AsMVT queries; the Python path (the SQLite one) must give the same layers,
    feature ids and attributes, and geometry within the simplification tolerance plus snapping."""
    if api.store.backend != "postgis":
        pytest.skip("compares the two renderers on the PostGIS backend")
    key = _layer(api, admin, _points(7) + [
        {"type": "Feature", "properties": {"name": "zone", "n": 99, "nested": {"a": 1}},
         "geometry": mapping(Point(*TMS.bounds(LAYER_TILE)[:2]).buffer(0.002))}], geometry_type="GEOMETRY")
    tile, _ = dense
    cases = [("basemap", tile.z, tile.x, tile.y), ("basemap", 10, tile.x >> 4, tile.y >> 4),
             ("basemap", 12, tile.x >> 2, tile.y >> 2), (key, LAYER_TILE.z, LAYER_TILE.x, LAYER_TILE.y),
             ("basemap", LAYER_TILE.z, LAYER_TILE.x, LAYER_TILE.y), (key, 12, LAYER_TILE.x >> 3, LAYER_TILE.y >> 3)]
    with api.store.sessions() as session:
        for tileset, z, x, y in cases:
            sql = mapbox_vector_tile.decode(service.render(session, Scope(all_units=True), tileset, z, x, y))
            py = mapbox_vector_tile.decode(service.render(session, Scope(all_units=True), tileset, z, x, y, engine="python"))
            assert list(sql) == list(py), (tileset, z)
            for name in py:
                a = {f["id"]: f for f in sql[name]["features"]}
                b = {f["id"]: f for f in py[name]["features"]}
                assert set(a) == set(b), (tileset, z, name)
                for fid in b:
                    assert a[fid]["properties"] == b[fid]["properties"], (tileset, z, name, fid)
                    ga, gb = shapely.geometry.shape(a[fid]["geometry"]), shapely.geometry.shape(b[fid]["geometry"])
                    assert ga.geom_type.replace("Multi", "") == gb.geom_type.replace("Multi", "")
                    # Each simplifier may move a vertex by up to its tolerance (the GEOS versions differ).
                    bound = load_catalogue().rule(z).simplify * 2 + 2
                    assert shapely.hausdorff_distance(ga, gb) <= bound, (tileset, z, name, fid)


def test_cli_exports_a_tile_pyramid(api, admin, tmp_path):
    """``cityops tiles export`` writes the same tiles the API serves, plus a TileJSON; bad input fails clearly."""
    from tests.test_cli import _env, cli, failed, ok

    env = _env()
    if api.store.backend == "postgis":
        env["CITYOPS_DATABASE_URL"] = api.store.settings.database_url
    data = str(api.store.settings.data_dir)
    out = tmp_path / "pyramid"
    r = ok(cli("tiles", "export", out, "--min-zoom", "10", "--max-zoom", "11", "--data-dir", data, env=env))
    assert "largest bytes" in r.stdout
    files = sorted(out.rglob("*.mvt"))
    assert files and {p.parts[-3] for p in files} == {"10", "11"}
    doc = json.loads((out / "tilejson.json").read_text(encoding="utf-8"))
    assert doc["tilejson"] == "3.0.0" and doc["minzoom"] == 10 and doc["maxzoom"] == 11
    one = files[len(files) // 2]
    z, x, y = one.parts[-3], one.parts[-2], one.stem
    assert one.read_bytes() == api.get(f"/api/tiles/basemap/{z}/{x}/{y}.mvt", headers=admin).content
    r = ok(cli("tiles", "list", "--data-dir", data, env=env))
    assert "basemap" in r.stdout
    r = failed(cli("tiles", "export", out, "--tileset", "no_such_layer", "--data-dir", data, env=env))
    assert any("no_such_layer" in line for line in r.messages)
    r = failed(cli("tiles", "export", out, "--bbox", "108,31", "--data-dir", data, env=env))
    assert any("bbox" in line for line in r.messages)


def test_every_geometry_kind_round_trips_through_gdal(api, admin, tmp_path):
    """Points, lines, polygons with holes and multipolygons of one layer, decoded by GDAL, land where the
    stored features are (to the grid of a z15 tile, about 0.3 m)."""
    b = TMS.bounds(LAYER_TILE)
    w, h = b.right - b.left, b.top - b.bottom
    at = lambda fx, fy: (b.left + fx * w, b.bottom + fy * h)  # noqa: E731
    ring = [at(0.2, 0.2), at(0.45, 0.2), at(0.45, 0.45), at(0.2, 0.45), at(0.2, 0.2)]
    hole = [at(0.3, 0.3), at(0.3, 0.35), at(0.35, 0.35), at(0.35, 0.3), at(0.3, 0.3)]
    shapes = {
        "point": shapely.Point(at(0.6, 0.6)),
        "line": shapely.LineString([at(0.55, 0.1), at(0.7, 0.3), at(0.9, 0.2)]),
        "holed": shapely.Polygon(ring, [hole]),
        "multi": shapely.MultiPolygon([shapely.box(*at(0.6, 0.7), *at(0.7, 0.8)), shapely.box(*at(0.8, 0.7), *at(0.9, 0.8))]),
        "crossing": shapely.LineString([at(0.5, 0.5), at(1.5, 0.5)]),  # leaves the tile: clipped
    }
    key = _layer(api, admin, [{"type": "Feature", "properties": {"name": k}, "geometry": mapping(g)} for k, g in shapes.items()],
                 geometry_type="GEOMETRY")
    t = LAYER_TILE
    r = api.get(f"/api/tiles/{key}/{t.z}/{t.x}/{t.y}.mvt", headers=admin)
    assert r.status_code == 200, r.text
    rows = {row["name"]: row["geometry"] for row in gdal_layers(tmp_path, r.content, t)[key]}
    assert set(rows) == set(shapes)
    xy = TMS.xy_bounds(t)
    metre = (xy.right - xy.left) / 4096
    edge = shapely.box(xy.left, xy.bottom, xy.right, xy.top)  # GDAL clips what it reads to the tile itself
    for name, geom in shapes.items():
        expected = to_3857(geom).intersection(edge) if name == "crossing" else to_3857(geom)
        got = rows[name]
        assert got.geom_type.replace("Multi", "") == expected.geom_type.replace("Multi", ""), name
        assert shapely.hausdorff_distance(got, expected) < 2 * metre, (name, got.wkt[:120])
        if name == "holed":
            polygon = got.geoms[0] if got.geom_type == "MultiPolygon" else got
            assert len(polygon.interiors) == 1
            assert got.area == pytest.approx(expected.area, rel=0.02)
        if name == "multi":
            assert len(getattr(got, "geoms", [got])) == 2


# --- Building geometry prepared at write time (cityops/tiles/prepared.py) -------------------------------------


def _only_buildings(prepared: bool):
    cat = load_catalogue()
    only = dataclasses.replace(cat, base_layers=tuple(b for b in cat.base_layers if b.source == "buildings"))
    # Moving the prepared zoom away makes the same tile encode every footprint from scratch.
    return only if prepared else dataclasses.replace(only, prepared_zoom=cat.max_zoom + 1)


def _buildings_of(session, tile, cat) -> dict:
    data = service.render(session, Scope(all_units=True), "basemap", tile.z, tile.x, tile.y, cat, visible_layers=[],
                          engine="python")
    return {f["id"]: f for f in mapbox_vector_tile.decode(data).get("buildings", {}).get("features", [])}


def test_prepared_building_tiles_equal_the_encoder(api, admin, dense):
    """z14 building tiles assembled from the stored bytes decode to what encoding the footprints gives: the same
    features and attributes, and the very same vertices for every footprint inside the buffered tile (a wrong
    first vertex, delta, ring order or header fails here); those touching the buffer's edge are clipped by each
    path in its own order (snap then clip, as ST_AsMVTGeom; clip then snap), within a tile unit."""
    from sqlalchemy import func, select

    from cityops.housing.models import Building

    tile, _ = dense
    with api.store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Building).where(Building.tile_geom.is_(None))) == 0
        compared = 0
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                t = morecantile.Tile(tile.x + dx, tile.y + dy, tile.z)
                fast, slow = _buildings_of(session, t, _only_buildings(True)), _buildings_of(session, t, _only_buildings(False))
                assert set(fast) == set(slow), t
                for fid, f in slow.items():
                    assert fast[fid]["properties"] == f["properties"], (t, fid)
                    a, b = shapely.geometry.shape(fast[fid]["geometry"]), shapely.geometry.shape(f["geometry"])
                    minx, miny, maxx, maxy = b.bounds
                    if -64 < minx and maxx < 4160 and -64 < miny and maxy < 4160:
                        assert fast[fid]["geometry"] == f["geometry"], (t, fid)
                        compared += 1
                    else:
                        assert shapely.hausdorff_distance(a, b) <= 1.5, (t, fid)
        assert compared > 100


def test_a_footprint_written_past_the_orm_is_not_read_stale(api, dense):
    """A writer that changes a footprint without its prepared bytes leaves none (the trigger clears them): the
    tile then encodes that footprint itself and shows where it is now."""
    from shapely import affinity
    from sqlalchemy import select, update

    from cityops.housing.models import Building

    tile, buildings = dense
    code = sorted(buildings)[len(buildings) // 2]
    with api.store.sessions() as session:
        bid, footprint = session.execute(select(Building.id, Building.footprint).where(Building.code == code)).one()
        moved = affinity.translate(footprint, 0.00005, 0.00003)  # ~5 m: a few tile units at z14
        session.execute(update(Building).where(Building.id == bid).values(footprint=moved))  # no ORM events
        assert session.scalar(select(Building.tile_geom).where(Building.id == bid)) is None
        fast, slow = _buildings_of(session, tile, _only_buildings(True)), _buildings_of(session, tile, _only_buildings(False))
        assert fast[bid]["geometry"] == slow[bid]["geometry"]
        session.rollback()


def test_building_change_reaches_its_tile(api, admin, dense):
    """A height and footprint changed through the API are in the building's next z14 tile once the tiles'
    consumer of ``building.changed`` has prepared the new footprint's bytes, equal to encoding the new footprint
    (before it has, the bytes are cleared with the old footprint: the test above)."""
    from shapely import affinity
    from sqlalchemy import select

    from cityops.housing.models import Building

    tile, buildings = dense
    code = sorted(buildings)[len(buildings) // 3]
    detail = api.get(f"/api/buildings/{code}", params={"geometry": True}, headers=admin).json()
    old = shapely.geometry.shape(detail["geometry"])
    with api.store.sessions() as session:
        bid = session.scalar(select(Building.id).where(Building.code == code))
        before = _buildings_of(session, tile, _only_buildings(True))[bid]
    moved = affinity.translate(old, 0.00004, -0.00002)
    # The tests' app runs each capability alone (no cross-capability consumers): the tiles' consumer of
    # building.changed runs here on a bus of its own, as a wired deployment runs it.
    from cityops.core.bus import Bus, Subscription
    from cityops.housing.manifest import BuildingChanged
    from cityops.tiles import subscriptions

    bus = Bus(api.store.engine, api.store.settings)
    bus.subscribe(Subscription("tiles.buildings_changed", (BuildingChanged,), subscriptions.buildings_changed,
                               ordered=False))
    bus.start()  # a new consumer starts at the outbox's end: before the change
    try:
        r = api.patch(f"/api/buildings/{code}", headers=admin, json={"height_m": 23.5, "geometry": mapping(moved)})
        assert r.status_code == 200, r.text
        bus.wait_idle()
        with api.store.sessions() as session:
            assert session.scalar(select(Building.tile_geom).where(Building.id == bid)) is not None
            fast = _buildings_of(session, tile, _only_buildings(True))[bid]
            slow = _buildings_of(session, tile, _only_buildings(False))[bid]
        assert fast["properties"]["height"] == 23.5 and fast["properties"]["code"] == code
        assert fast["geometry"] == slow["geometry"] != before["geometry"]
    finally:
        r = api.patch(f"/api/buildings/{code}", headers=admin,
                      json={"height_m": detail["height_m"], "geometry": detail["geometry"]})
        bus.wait_idle()
        bus.stop()
        assert r.status_code == 200, r.text


def test_demo_defers_the_building_tiles_until_asked(store):
    """``cityops demo`` serves before the buildings' tile geometry is prepared: build_demo hands the deferrable step
    back instead of running it (tiles encode the footprints meanwhile), and running it later prepares every one."""
    from sqlalchemy import func, select

    from cityops.demo.generator import DemoConfig, build_demo
    from cityops.housing.models import Building

    deferred: list = []
    build_demo(store.sessions, store.org, DemoConfig(grids=40, village_scale=0.2, townships=("义和镇",)),
               deferred=deferred)
    assert [name for name, _ in deferred] == ["building_tiles", "indicators_history"]

    def unprepared() -> tuple[int, int]:
        with store.sessions() as session:
            return (session.scalar(select(func.count()).select_from(Building).where(Building.tile_geom.is_(None))),
                    session.scalar(select(func.count()).select_from(Building)))

    missing, total = unprepared()
    assert total > 0 and missing == total
    dict(deferred)["building_tiles"]()
    assert unprepared() == (0, total)


def test_a_tile_attribute_written_past_the_orm_is_not_read_stale(api, dense):
    """The blob also holds the layer's attribute values (format 2): a writer that changes one of them without the
    blob leaves none (the trigger clears it), and the tile encodes that building, showing the new value."""
    from sqlalchemy import select, update

    from cityops.housing.models import Building

    tile, buildings = dense
    code = sorted(buildings)[len(buildings) // 4]
    with api.store.sessions() as session:
        bid = session.scalar(select(Building.id).where(Building.code == code))
        before = _buildings_of(session, tile, _only_buildings(True))[bid]
        session.execute(update(Building).where(Building.id == bid).values(use="仓储", year_built=1901))  # no ORM events
        assert session.scalar(select(Building.tile_geom).where(Building.id == bid)) is None
        fast, slow = _buildings_of(session, tile, _only_buildings(True)), _buildings_of(session, tile, _only_buildings(False))
        assert fast[bid]["properties"]["use"] == "仓储" and fast[bid]["properties"]["year_built"] == 1901
        assert fast[bid] == slow[bid] and fast[bid]["geometry"] == before["geometry"]
        session.rollback()


def test_postgis_z14_tiles_from_the_stored_pixel_footprints(api, dense, monkeypatch):
    """On PostGIS the z14 buildings' ST_AsMVT statement moves ``footprint_z14`` (ST_AsMVTGeom over the whole zoom,
    stored) to the tile's corner for the footprints wholly inside the buffered tile: the decoded tiles around the
    densest equal clipping every footprint per tile, vertex for vertex."""
    if api.store.backend != "postgis":
        pytest.skip("the stored pixel footprints are PostGIS's (SQLite reads the prepared blob)")
    from cityops.tiles import prepared

    tile, _ = dense
    cat = _only_buildings(True)

    def layer(session, t):
        data = service.render(session, Scope(all_units=True), "basemap", t.z, t.x, t.y, cat, visible_layers=[])
        return {f["id"]: f for f in mapbox_vector_tile.decode(data).get("buildings", {}).get("features", [])}

    with api.store.sessions() as session:
        tiles = [morecantile.Tile(tile.x + dx, tile.y + dy, tile.z) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
        stored = [layer(session, t) for t in tiles]
        monkeypatch.setattr(prepared, "PIXEL_GRID", (-1, -1))  # no zoom has it: every footprint clipped per tile
        clipped = [layer(session, t) for t in tiles]
    assert sum(map(len, stored)) > 100
    assert stored == clipped


def test_varints_are_the_scalar_writers_bytes():
    """The vectorised varint writer (a byte plane at a time) gives protobuf's bytes at every length boundary,
    for unsigned values and for negative int64 (ten bytes, two's complement)."""
    from cityops.tiles import mvt

    values = [0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**35 - 1, 2**49, 2**56, 2**63 - 1, 2**63,
              2**64 - 1]
    assert mvt._varints(np.array(values, dtype=np.uint64)) == b"".join(mvt._varint(v) for v in values)
    assert mvt._varint_sizes(np.array(values, dtype=np.uint64)).tolist() == [len(mvt._varint(v)) for v in values]
    assert mvt._varint_sizes(np.array([-1, -2**63, 5])).tolist() == [10, 10, 1]
    assert mvt._varints(np.array([-1]).astype(np.uint64)) == mvt._varint(2**64 - 1)
    assert mvt._varints(np.zeros(0, dtype=np.uint64)) == b""


def test_a_footprint_clipped_to_nothing_has_no_commands():
    """A footprint crossing the buffered edge that the clip leaves empty (it only touches the buffer) is encoded as
    nothing, beside others or alone: alone it raised IndexError, a 500 on z14 tile 14/13117/6694 of the demo."""
    from cityops.tiles import mvt

    frame = mvt.TileFrame(0.0, 0.0, 1.0, 1.0)
    square = shapely.box(100, 100, 200, 200)
    touching = shapely.box(4160, 10, 4200, 20)  # shares only its edge with the buffered tile
    prepared = mvt.prepare_tile(np.array([touching]), frame)
    assert shapely.is_empty(prepared).all()
    stream, offsets = mvt.encode_geometries(prepared, mvt.POLYGON)
    assert len(stream) == 0 and offsets.tolist() == [0, 0]
    stream, offsets = mvt.encode_geometries(mvt.prepare_tile(np.array([square, touching]), frame), mvt.POLYGON)
    assert offsets[1] > 0 and offsets[2] == offsets[1]

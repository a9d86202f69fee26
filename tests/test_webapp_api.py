"""What the web app reads from the API, on both backends: the demo district's own base map (relief, water, roads,
place names) in the catalogue and in the base map tiles, open cases as GeoJSON for the map, the case list as
XLSX, the building search of the map's search box and the devices' positions. Then how the app itself is served:
client-side routes, unknown API paths, the moved pages, the API reference pages from local assets."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re

import mapbox_vector_tile
import morecantile
import pytest
import shapely
from shapely.geometry import shape

from cityops.base.basemap import SCHEMAS, load_catalogue
from cityops.web.routes import DIST_DIR

BASEMAP_LAYERS = tuple(SCHEMAS)


def _features(api, key, headers, limit=10000):
    r = api.get(f"/api/layers/{key}/features", params={"limit": limit}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["features"]


def test_the_demo_derives_its_base_map_from_its_own_geography(api):
    admin = api.login("admin")
    layers = {layer["key"]: layer for layer in api.get("/api/layers", headers=admin).json()}
    spec = load_catalogue()
    for key in BASEMAP_LAYERS:
        assert key in layers, f"base map layer {key} missing"
        assert layers[key]["category"] == spec["layers"][key]["category"]
        assert layers[key]["feature_count"] > 0, key
    district = shape(api.get("/api/units/500154", params={"geometry": True}, headers=admin).json()["geometry"])
    inside = district.buffer(0.001)
    for key in ("rivers", "roads", "contours", "relief", "lakes", "peaks"):
        for f in _features(api, key, admin):
            geom = shape(f["geometry"])
            assert geom.is_valid and not geom.is_empty, (key, f["properties"])
            assert inside.contains(geom), f"{key} feature outside the district"
    rivers = _features(api, "rivers", admin)
    assert {spec["water"]["main_river"][0]} <= {f["properties"].get("name") for f in rivers}
    assert [f["properties"]["name"] for f in _features(api, "lakes", admin)] == [spec["water"]["lake_name"]]
    roads = _features(api, "roads", admin)
    assert {"national", "village"} <= {f["properties"]["class"] for f in roads}
    contours = _features(api, "contours", admin)
    interval = spec["terrain"]["contour_interval_m"]
    assert all(f["properties"]["elevation"] % interval == 0 for f in contours)
    assert any(f["properties"]["index"] for f in contours)
    assert {f["properties"]["kind"] for f in _features(api, "relief", admin)} == {"band", "shade", "light"}
    # Place names: every township and village by name, and the named place of the scenario.
    names = {(f["properties"]["kind"], f["properties"]["name"]) for f in _features(api, "place_names", admin)}
    units = api.get("/api/units", params={"level": "township", "limit": 100}, headers=admin).json()["items"]
    assert {("township", u["name"]) for u in units} <= names
    assert ("place", "老沟湾") in names
    # The roads are the ones the houses were built along: most road-side houses stand within 250 m of one.
    buildings = api.get("/api/buildings", params={"limit": 1000, "geometry": True}, headers=admin).json()["items"]
    tree = shapely.STRtree([shape(f["geometry"]) for f in roads])
    centres = [shape(b["geometry"]).centroid for b in buildings]
    near = sum(1 for c in centres if tree.query(c, predicate="dwithin", distance=250 / 111000).size)
    assert near / len(centres) > 0.35, f"only {near} of {len(centres)} buildings near a road"


def test_the_base_map_tiles_carry_relief_water_roads_and_names(api):
    admin = api.login("admin")
    seat = next(f for f in _features(api, "place_names", admin) if f["properties"]["kind"] == "township")
    lon, lat = seat["geometry"]["coordinates"]
    tile = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 8)
    r = api.get(f"/api/tiles/basemap/8/{tile.x}/{tile.y}.mvt", headers=admin)
    assert r.status_code == 200, r.status_code
    decoded = mapbox_vector_tile.decode(r.content)
    for layer in ("district", "township", "relief", "rivers", "place_names"):
        assert layer in decoded and decoded[layer]["features"], f"{layer} missing from the z8 base map tile"
    assert any(f["properties"].get("name") == seat["properties"]["name"] for f in decoded["place_names"]["features"])
    # What the base map does not draw at this zoom stays out of the tile (contours from z10, hazard points from z11).
    assert "contours" not in decoded and "hazard_points" not in decoded
    near = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, 12)
    closer = mapbox_vector_tile.decode(api.get(f"/api/tiles/basemap/12/{near.x}/{near.y}.mvt", headers=admin).content)
    assert "contours" in closer
    # Sent compressed to a client that accepts it (a slow link gets the first tiles twice as fast), as is otherwise.
    raw = api.get(f"/api/tiles/basemap/8/{tile.x}/{tile.y}.mvt", headers={**admin, "Accept-Encoding": "identity"})
    assert r.headers["content-encoding"] == "gzip" and "content-encoding" not in raw.headers
    assert raw.content == r.content and r.headers["etag"] != raw.headers["etag"]


def test_open_cases_as_geojson_for_the_map(api):
    yihe = api.login("yihe")
    r = api.get("/api/events/map/cases", headers=yihe)
    assert r.status_code == 200, r.text
    body = r.json()
    listed = api.get("/api/events/cases", params={"limit": 5000}, headers=yihe).json()["items"]
    open_located = {c["number"] for c in listed if c["state"] not in ("closed", "void") and c["lon"] is not None}
    assert body["type"] == "FeatureCollection" and not body["truncated"]
    assert {f["id"] for f in body["features"]} == open_located and open_located
    assert body["total"] >= len(open_located)
    feature = body["features"][0]
    assert feature["geometry"]["type"] == "Point" and len(feature["geometry"]["coordinates"]) == 2
    assert set(feature["properties"]) >= {"number", "class_name", "state", "state_name", "sla", "deadline_at"}
    assert api.get("/api/events/map/cases", params={"limit": 0}, headers=yihe).status_code == 422


def test_case_list_exports_as_xlsx_with_the_csv_rows(api):
    from openpyxl import load_workbook

    yihe = api.login("yihe")
    r_csv = api.get("/api/events/cases", params={"format": "csv", "limit": 50}, headers=yihe)
    r_xlsx = api.get("/api/events/cases", params={"format": "xlsx", "limit": 50}, headers=yihe)
    assert r_xlsx.status_code == 200 and r_xlsx.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    rows = list(load_workbook(io.BytesIO(r_xlsx.content), read_only=True).active.iter_rows(values_only=True))
    assert rows[0][0] == "案卷编号" and rows[0][1] == "状态"
    numbers = [row["number"] for row in csv.DictReader(io.StringIO(r_csv.content.decode("utf-8-sig")))]
    assert [row[0] for row in rows[1:]] == numbers and numbers
    assert api.get("/api/events/cases", params={"format": "pdf"}, headers=yihe).status_code == 422


def test_building_search_by_address_or_code(api):
    yihe = api.login("yihe")
    some = api.get("/api/buildings", params={"limit": 5}, headers=yihe).json()["items"]
    target = some[-1]
    part = target["address"][len("义和镇"):][:6]
    found = api.get("/api/buildings", params={"q": part, "limit": 20}, headers=yihe).json()
    assert found["total"] is None and 0 < len(found["items"]) <= 20
    assert all(part in b["address"] or b["code"].startswith(part) for b in found["items"])
    by_code = api.get("/api/buildings", params={"q": target["code"]}, headers=yihe).json()["items"]
    assert [b["code"] for b in by_code] == [target["code"]]
    assert api.get("/api/buildings", params={"q": "x"}, headers=yihe).status_code == 422  # at least two characters
    assert api.get("/api/buildings", params={"q": "没有这样的地址"}, headers=yihe).json()["items"] == []


def test_devices_carry_their_positions(api):
    district = shape(api.get("/api/units/500154", params={"geometry": True}, headers=api.login("admin")).json()["geometry"])
    items = api.get("/api/sensing/devices", params={"limit": 5000}, headers=api.login("district")).json()["items"]
    assert items
    for d in items:
        assert d["lon"] is not None and district.buffer(0.01).contains(shapely.Point(d["lon"], d["lat"])), d["name"]


# ------------------------------------------------------------------------------------ serving the app

needs_build = pytest.mark.skipif(not (DIST_DIR / "index.html").is_file(), reason="web app not built (make assets)")


@needs_build
@pytest.mark.parametrize("path", ["/", "/workbench", "/workbench/cases/20260101-abc", "/command?incident=3", "/phone",
                                  "/phone/report", "/login", "/cockpit"])
def test_client_side_routes_get_the_app(api, path):
    r = api.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<div id="app">' in r.text and r.headers["cache-control"] == "no-cache"


def test_unknown_server_paths_are_404_for_every_method(api):
    for method in ("GET", "POST", "PUT", "DELETE"):
        r = api.request(method, "/api/no-such-route")
        assert r.status_code == 404 and r.json()["error"] in ("not_found", "http_error"), (method, r.status_code)
    assert api.get("/ogc/no-such").status_code == 404
    assert api.get("/assets/no-such-file.js").status_code == 404
    assert api.get("/no-such-file.js").status_code == 404


def test_the_old_pages_move_to_the_app(api):
    for old, new in (("/static/events.html", "/workbench"), ("/static/command.html?incident=4", "/command?incident=4"),
                     ("/static/phone.html", "/phone"), ("/static/report.html", "/phone/report")):
        r = api.get(old, follow_redirects=False)
        assert r.status_code == 301 and r.headers["location"] == new


@needs_build
def test_api_reference_pages_load_only_local_assets(api):
    for page, asset in (("/api/docs", "/docs/swagger-ui-bundle.js"), ("/api/redoc", "/docs/redoc.standalone.js")):
        html = api.get(page).text
        urls = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html)
        assert asset in urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        assert "fonts.googleapis" not in html and "cdn." not in html
        r = api.get(asset, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200 and "javascript" in r.headers["content-type"] and len(r.content) > 100_000


def _raw(api, path, **headers):
    """The bytes as sent (no decoding by the client) and the response."""
    with api.stream("GET", path, headers=headers) as r:
        return b"".join(r.iter_raw()), r


@needs_build
def test_built_assets_are_cached_for_good_and_sent_pre_compressed(api):
    index = api.get("/").text
    script = re.search(r"m\.src='(/assets/[^']+\.js)'", index).group(1)  # the entry, started by the page's first lines
    on_disk = DIST_DIR / script.lstrip("/")
    variants = {}
    for accept, encoding, suffix in (("br, gzip", "br", ".br"), ("gzip, br;q=0", "gzip", ".gz"), ("identity", None, "")):
        body, r = _raw(api, script, **{"Accept-Encoding": accept})
        assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers.get("content-encoding") == encoding and "javascript" in r.headers["content-type"]
        assert r.headers["vary"] == "Accept-Encoding"
        # The copy made at build time, byte for byte: nothing is compressed per request.
        assert body == on_disk.with_name(on_disk.name + suffix).read_bytes()
        variants[encoding] = r.headers["etag"]
        again = api.get(script, headers={"Accept-Encoding": accept, "If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and not again.content
    assert len(set(variants.values())) == 3, variants  # each representation its own ETag
    assert len(_raw(api, script, **{"Accept-Encoding": "br"})[0]) < len(_raw(api, script, **{"Accept-Encoding": "gzip"})[0])
    page, r = _raw(api, "/phone", **{"Accept-Encoding": "gzip"})
    assert r.headers["cache-control"] == "no-cache" and r.headers["content-type"].startswith("text/html")
    sw = api.get("/sw.js")
    assert sw.status_code == 200 and sw.headers["cache-control"] == "no-cache"
    manifest = api.get("/manifest.webmanifest").json()
    assert manifest["start_url"] == "/phone" and manifest["display"] == "standalone"
    assert all(api.get(icon["src"]).status_code == 200 for icon in manifest["icons"])


@needs_build
def test_the_page_preloads_what_its_first_paint_needs(api):
    """index.html starts the page's own chunks (and the map's worker) beside the entry script."""
    index = api.get("/").text
    # Before any stylesheet: a script after one waits until it has loaded.
    assert index.index("var t=") < index.index('rel="stylesheet"')
    table = json.loads(re.search(r"var t=(\[.*?\]\]\]),p=location", index).group(1))
    pages = dict(table)
    assert any(f.startswith("assets/OpsMap-") for f in pages["/"]) and any(f.endswith(".mjs") for f in pages["/"])
    assert any(f.startswith("assets/Phone-") for f in pages["/phone"])
    # The phone's first paint needs no map library nor chart library.
    assert not any(f.endswith(".mjs") or "charts-impl" in f for f in pages["/phone"]), pages["/phone"]
    for files in pages.values():
        assert all(api.get("/" + f).status_code == 200 for f in files)


@needs_build
def test_the_phone_page_needs_no_other_file_before_its_households(api):
    """/phone is the phone command room's own page, its script and styles inside: on a poor connection nothing but
    the page and its households' answer (asked for by its first lines) comes before the list; none of the desk's
    component library, the map or the charts is in it."""
    for path in ("/phone", "/phone/report", "/phone/tasks/"):
        page, r = _raw(api, path, **{"Accept-Encoding": "br"})
        assert r.status_code == 200 and r.headers["content-encoding"] == "br" and r.headers["cache-control"] == "no-cache"
        assert len(page) < 100_000, f"{path}: {len(page)} bytes of brotli"
        html = api.get(path).text
        assert not re.findall(r'<(?:script|link)[^>]+(?:src|href)="/assets/', html), path
        assert '<script type="module">' in html and '<div id="app">' in html
        # The households' request starts before the app's script, right after the charset.
        assert html.index("/api/evacuations/mine") < html.index('<script type="module">')
        assert "import(" not in html, f"{path}: a chunk loaded later would run a second copy of the app"
        for foreign in ("maplibregl.Map", "echarts.init", "ElDrawer", "ElMessageBox"):
            assert foreign not in html, (path, foreign)
    # The app's other pages keep the app's page (its entry script started by the page's first lines).
    assert re.search(r"m\.src='/assets/index-[\w-]+\.js'", api.get("/workbench").text)


def test_api_answers_are_compressed_for_slow_links(api):
    admin = api.login("district")
    body, r = _raw(api, "/api/risk-points?limit=1000", **{"Accept-Encoding": "gzip", **admin})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip" and "Accept-Encoding" in r.headers["vary"]
    data = json.loads(gzip.decompress(body))
    assert data["items"] and len(body) * 3 < len(gzip.decompress(body))
    body, r = _raw(api, "/api/risk-points?limit=1000", **{"Accept-Encoding": "identity", **admin})
    assert "content-encoding" not in r.headers and json.loads(body) == data
    # As it is to a client without gzip, with the Vary a shared cache needs to keep the two apart.
    assert "Accept-Encoding" in r.headers["vary"]
    small = api.get("/api/auth/me", headers={"Accept-Encoding": "identity", **admin})
    assert small.status_code == 200 and "content-encoding" not in small.headers and small.json()["username"]


def test_a_unit_gives_its_bounding_box(api):
    admin = api.login("admin")
    unit = api.get("/api/units/500154", params={"geometry": True}, headers=admin).json()
    assert unit["bbox"] == pytest.approx(list(shape(unit["geometry"]).bounds), abs=1e-6)
    assert "geometry" not in api.get("/api/units/500154", headers=admin).json()


def _overview(api, headers, **params):
    return api.get("/api/map/overview", params={"width": 1440, "height": 848, **params},
                   headers={**headers, "Accept-Encoding": "gzip"})


def test_the_map_first_view_is_drawn_by_the_server_from_current_data(api):
    """GET /api/map/overview: the operations map's first view as one small SVG — relief, water, roads, the units,
    place names in Chinese, and the live things (risk points by level, cases, shelters) of the moment."""
    district = api.login("district")
    r = _overview(api, district)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/svg+xml") and r.headers["cache-control"] == "no-store"
    assert r.headers["content-encoding"] == "gzip"
    svg = r.text
    root = re.match(r'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1440 848"[^>]*data-live="(\d+)"', svg)
    assert root and int(root.group(1)) > 0, svg[:300]
    for part in ('class="relief"', 'class="water"', 'class="road"', 'class="township"', 'class="district"',
                 'class="live risk-points"', 'class="live shelters"'):
        assert part in svg, part
    townships = api.get("/api/units", params={"level": "township"}, headers=district).json()["items"]
    labels = re.findall(r"<text[^>]*>([^<]+)</text>", svg)
    assert {u["name"] for u in townships} <= set(labels), labels
    # Every risk point the user sees is drawn, one circle each, in the group of its level.
    points = api.get("/api/risk-points", params={"limit": 1000}, headers=district).json()["items"]
    drawn = sum(len(re.findall("<circle", g)) for g in re.findall(r'<g class="live risk-points"[^>]*>(.*?)</g>', svg))
    assert drawn == len([p for p in points if p["lon"] is not None])
    # The same view again: the base part comes from the cache, the live part is read again, the answer the same.
    assert _overview(api, district).text == svg
    # English names for an English user.
    assert "Yihe" in " ".join(re.findall(r"<text[^>]*>([^<]+)</text>", _overview(api, district, lang="en").text))


def test_the_map_first_view_fits_the_box_as_the_map_does(api):
    """With a box (the map's last view) the drawing is that box fitted into the window with the padding, centred,
    as MapLibre's fitBounds: the drawing and the map that replaces it line up."""
    district = api.login("district")
    box = (108.20, 30.95, 108.40, 31.05)
    r = _overview(api, district, bbox=",".join(map(str, box)), padding=30)
    assert r.status_code == 200, r.text
    w, s, e, n = map(float, re.search(r'data-bounds="([^"]+)"', r.text).group(1).split(","))
    assert w < box[0] and e > box[2] and s < box[1] and n > box[3]
    assert (w + e) / 2 == pytest.approx((box[0] + box[2]) / 2, abs=1e-4)
    zoom = float(re.search(r'data-zoom="([^"]+)"', r.text).group(1))
    # The box in Web Mercator (the world = 512 pixels at zoom 0) fitted into 1440 × 848 less 30 pixels each side.
    def y(lat):
        return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) / (2 * math.pi)
    scale = min(1380 / ((box[2] - box[0]) / 360), 788 / (y(box[3]) - y(box[1])))
    assert zoom == pytest.approx(math.log2(scale / 512), abs=1e-3)


@pytest.mark.parametrize("params", [
    {"width": 0}, {"width": 99999}, {"height": -5}, {"width": "wide"}, {"bbox": "a,b,c,d"}, {"bbox": "108.4,31,108.2,31.1"},
    {"bbox": "108,31,109"}, {"bbox": "nan,31,109,32"}, {"bbox": "108,-89,109,32"}, {"padding": 900}, {"padding": -1},
    {"padding": 424}, {"lang": "fr"},
])
def test_the_map_first_view_refuses_bad_parameters(api, params):
    r = _overview(api, api.login("district"), **params)
    assert r.status_code == 422, (params, r.status_code, r.text)
    assert r.json()["error"], r.text


def test_the_map_first_view_needs_its_size_and_a_login(api):
    assert api.get("/api/map/overview", params={"width": 800, "height": 600}).status_code == 401
    assert api.get("/api/map/overview", params={"width": 800}, headers=api.login("district")).status_code == 422


@needs_build
def test_the_map_page_asks_for_its_first_view_before_its_scripts(api):
    """index.html asks for the server's drawing of the map's first view before anything else and starts the
    page's scripts once its answer has begun (so the two do not share a slow link)."""
    index = api.get("/").text
    assert index.index("/api/map/overview?") < index.index("function go(){") < index.index('rel="stylesheet"')
    assert "window.cityopsGate.then(go)" in index
    assert not re.search(r'<script[^>]+src="/assets/', index), "the entry script must not start before the drawing"

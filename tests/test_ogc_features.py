"""OGC API – Features Part 1 (Core) and Part 2 (CRS) at /ogc on both backends, then two independent clients
against a live server: GDAL's OAPIF driver (through pyogrio) and OWSLib."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyogrio
import pyproj
import pytest
import shapely
from shapely.geometry import Point, Polygon, mapping
from sqlalchemy import select, text

from cityops.core.audit import AuditEntry
from cityops.demo.generator import DEMO_PASSWORD

from tests.conftest import free_port, wait_for_port

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}"
#: 25 points on a 5 × 5 grid, 0.01° apart, in the demo district (lon, lat).
POINTS = [(108.40 + (i % 5) * 0.01, 31.20 + (i // 5) * 0.01) for i in range(25)]
#: The CRS84 box used by the bbox tests and the points it selects.
BOX = (108.405, 31.205, 108.425, 31.225)


@pytest.fixture(scope="module")
def admin(api):
    return api.login("admin")


def make_layer(api, admin, features, geometry_type="POINT", key=None, **extra) -> str:
    key = key or "ogc_" + uuid.uuid4().hex[:10]
    r = api.post("/api/layers", headers=admin, json={"key": key, "title_zh": "测试图层", "title_en": "OGC test layer",
                                                    "description_zh": "OGC 测试", "category": "0701",
                                                    "geometry_type": geometry_type, **extra})
    assert r.status_code == 201, r.text
    content = json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False).encode()
    r = api.post(f"/api/layers/{key}/import", headers=admin, files={"file": ("f.geojson", content)})
    assert r.status_code == 200, r.text
    return key


def point_features(points=POINTS):
    return [{"type": "Feature", "properties": {"name": f"p{i}", "n": i}, "geometry": mapping(Point(x, y))}
            for i, (x, y) in enumerate(points)]


@pytest.fixture(scope="module")
def points_layer(api, admin):
    return make_layer(api, admin, point_features())


def names(body) -> set[str]:
    return {f["properties"]["name"] for f in body["features"]}


def expected_in(box) -> set[str]:
    area = shapely.box(*box)
    return {f"p{i}" for i, (x, y) in enumerate(POINTS) if area.intersects(Point(x, y))}


def link(body, rel) -> str | None:
    hrefs = [lk["href"] for lk in body["links"] if lk["rel"] == rel]
    assert len(hrefs) <= 1
    return hrefs[0] if hrefs else None


def path_of(href: str) -> str:
    parts = urlsplit(href)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# --- Part 1: discovery ------------------------------------------------------------------------------


def test_landing_conformance_and_api_are_public(api):
    landing = api.get("/ogc")
    assert landing.status_code == 200 and landing.headers["content-type"].startswith("application/json")
    rels = {lk["rel"]: lk for lk in landing.json()["links"]}
    assert {"self", "service-desc", "conformance", "data"} <= set(rels)
    assert rels["data"]["href"].endswith("/ogc/collections")
    assert rels["service-desc"]["type"] == "application/vnd.oai.openapi+json;version=3.0"

    conf = api.get(path_of(rels["conformance"]["href"])).json()["conformsTo"]
    spec = "http://www.opengis.net/spec/"
    for cls in ("ogcapi-features-1/1.0/conf/core", "ogcapi-features-1/1.0/conf/geojson",
                "ogcapi-features-1/1.0/conf/oas30", "ogcapi-features-2/1.0/conf/crs"):
        assert spec + cls in conf
    assert spec + "ogcapi-features-1/1.0/conf/html" not in conf  # no HTML encoding: not declared
    # The vector tile sets (OGC API – Tiles) are found from the landing page, as GDAL's OGCAPI driver does.
    assert spec + "ogcapi-tiles-1/1.0/conf/core" in conf
    tilesets = rels["http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"]["href"]
    assert api.get(path_of(tilesets), headers=api.login("admin")).status_code == 200
    schemes = rels["http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"]["href"]
    assert api.get(path_of(schemes), headers=api.login("admin")).json()["tileMatrixSets"][0]["id"] == "WebMercatorQuad"

    doc = api.get(path_of(rels["service-desc"]["href"])).json()
    assert doc["openapi"].startswith("3.0")
    params = {p["name"]: p for p in doc["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]}
    assert {"limit", "bbox", "bbox-crs", "crs", "offset", "datetime"} <= set(params)
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10}


def basic(username: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def test_collections_need_credentials(api, points_layer):
    for path in (f"/ogc/collections/{points_layer}", f"/ogc/collections/{points_layer}/items",
                 f"/ogc/collections/{points_layer}/queryables"):
        r = api.get(path)
        assert r.status_code == 401, path
        # QGIS and browsers ask their user for a password when Basic is offered.
        assert "Basic" in r.headers["www-authenticate"], path
    listed = api.get("/ogc/collections")
    assert listed.status_code == 200 and points_layer not in {c["id"] for c in listed.json()["collections"]}
    key = api.post("/api/users/admin/api-keys", headers=api.login("admin"), json={"name": "ogc-" + uuid.uuid4().hex[:6]})
    assert key.status_code == 201, key.text
    raw_key = key.json()["api_key"]
    assert api.get("/ogc/collections", headers={"X-API-Key": raw_key}).status_code == 200


def test_http_basic_on_ogc_and_tiles(api, points_layer):
    """HTTP Basic (what QGIS 3.22 can send): a password, or an API key as the password (username ``apikey`` or
    the key's own user); every check goes through the brute-force limits, and failures are audited."""
    url = f"/ogc/collections/{points_layer}/items"
    assert api.get(url, headers=basic("admin", DEMO_PASSWORD)).json()["numberMatched"] == 25
    raw_key = api.post("/api/users/admin/api-keys", headers=api.login("admin"),
                       json={"name": "basic-" + uuid.uuid4().hex[:6]}).json()["api_key"]
    for user in ("apikey", "admin"):
        assert api.get(url, headers=basic(user, raw_key)).status_code == 200, user
    assert api.get(url, headers=basic("leader", raw_key)).status_code == 401  # another user's name with the key
    assert api.get(url, headers={"Authorization": "Basic ???"}).status_code == 401
    assert api.get(f"/api/tiles/{points_layer}/tilejson.json", headers=basic("admin", DEMO_PASSWORD)).status_code == 200
    assert api.get(f"/ogc/collections/{points_layer}/tiles", headers=basic("apikey", raw_key)).status_code == 200
    # The /api interface keeps to tokens.
    assert api.get("/api/layers", headers=basic("admin", DEMO_PASSWORD)).status_code == 401

    victim = "ogcbasic" + uuid.uuid4().hex[:6]
    limit = api.store.settings.login_max_failures_per_account
    for _ in range(limit):  # the limit-th failure locks the account
        assert api.get(url, headers=basic(victim, "wrong-password")).status_code == 401
    # Locked now: even a right password would be refused before it is checked, on every interface.
    assert api.get(url, headers=basic(victim, "wrong-password")).status_code == 429
    r = api.post("/api/auth/login", json={"username": victim, "password": "wrong-password"})
    assert r.status_code == 429
    with api.store.sessions() as session:
        failures = session.scalars(select(AuditEntry.after).where(AuditEntry.action == "auth.login_failed",
                                                                AuditEntry.entity_key == victim)).all()
    assert len(failures) == limit + 2 and [f["channel"] for f in failures].count("ogc") == limit + 1
    for kind, lock in (("account", victim), ("address", "testclient")):
        api.delete(f"/api/auth/lockouts/{kind}/{lock}", headers=api.login("admin"))
    assert api.get(url, headers=basic(victim, "wrong-password")).status_code == 401


def test_public_read_layer_needs_no_login(api, admin):
    key = make_layer(api, admin, point_features(POINTS[:5]), public_read=True)
    private = make_layer(api, admin, point_features(POINTS[:3]))
    listed = {c["id"] for c in api.get("/ogc/collections").json()["collections"]}
    assert key in listed and private not in listed
    assert api.get(f"/ogc/collections/{key}/items").json()["numberMatched"] == 5
    r = api.get(f"/ogc/collections/{key}/items", params={"filter": "n >= 3"})
    assert r.status_code == 200 and r.json()["numberMatched"] == 2
    assert api.get(f"/ogc/collections/{key}/queryables").status_code == 200
    api_doc = api.get("/ogc/api").json()["paths"]
    assert f"/collections/{key}/items" in api_doc and f"/collections/{private}/items" not in api_doc
    assert api.get(f"/api/tiles/{key}/tilejson.json").status_code == 200
    assert api.get(f"/api/tiles/{private}/tilejson.json").status_code == 401
    assert api.get(f"/ogc/collections/{key}/tiles/WebMercatorQuad").status_code == 200
    assert api.get("/api/tiles/basemap/tilejson.json").status_code == 401
    # Reading is open; editing is not.
    feat = {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [108.4, 31.2]}}
    assert api.post(f"/ogc/collections/{key}/items", json=feat).status_code == 401
    assert api.options(f"/ogc/collections/{key}/items").headers["allow"] == "GET, HEAD, OPTIONS"
    # Wrong credentials are refused, not taken as anonymous.
    assert api.get(f"/ogc/collections/{key}/items", headers={"Authorization": "Bearer nope"}).status_code == 401
    # The flag is the catalogue's: cleared, the layer needs a login again.
    assert api.patch(f"/api/layers/{key}", headers=admin, json={"public_read": False}).status_code == 200
    assert api.get(f"/ogc/collections/{key}/items").status_code == 401
    assert api.get(f"/api/layers/{key}", headers=admin).json()["public_read"] is False


def test_collections_and_collection_metadata(api, admin, points_layer):
    listed = api.get("/ogc/collections", headers=admin).json()
    assert link(listed, "self")
    entry = {c["id"]: c for c in listed["collections"]}[points_layer]
    assert entry["itemType"] == "feature"

    r = api.get(f"/ogc/collections/{points_layer}", headers=admin)
    assert r.status_code == 200
    col = r.json()
    assert col == entry
    assert col["title"] == "测试图层" and col["description"] == "OGC 测试"
    [bbox] = col["extent"]["spatial"]["bbox"]
    # CRS84 (lon, lat); on SQLite the layer bounds come from the R*Tree (float32, rounded outwards).
    assert bbox == pytest.approx([108.40, 31.20, 108.44, 31.24], abs=1e-4)
    assert shapely.box(*bbox).covers(shapely.box(108.40, 31.20, 108.44, 31.24))
    assert col["extent"]["spatial"].get("crs", CRS84) == CRS84
    assert CRS84 in col["crs"] and {EPSG.format(c) for c in (4326, 4490, 3857, 4545)} <= set(col["crs"])
    assert col["storageCrs"] == EPSG.format(4490)
    items = link(col, "items")
    assert items.endswith(f"/ogc/collections/{points_layer}/items")
    assert [lk["type"] for lk in col["links"] if lk["rel"] == "items"] == ["application/geo+json"]


# --- Part 1: items ----------------------------------------------------------------------------------


def test_items_default_page_and_document(api, admin, points_layer):
    r = api.get(f"/ogc/collections/{points_layer}/items", headers=admin)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    assert r.headers["content-crs"] == f"<{CRS84}>"
    body = r.json()
    assert body["type"] == "FeatureCollection"
    assert body["numberReturned"] == len(body["features"]) == 10  # default limit
    assert body["numberMatched"] == 25
    assert body["timeStamp"].endswith("Z")
    f = body["features"][0]
    assert f["type"] == "Feature" and f["id"] is not None and f["geometry"]["type"] == "Point"
    lon, lat = f["geometry"]["coordinates"]
    assert 108 < lon < 109 and 31 < lat < 32  # CRS84 is lon, lat
    assert parse_qs(urlsplit(link(body, "self")).query)["limit"] == ["10"]
    assert link(body, "prev") is None and link(body, "next")


def test_items_pages_are_counted_under_their_route_template(api, admin, points_layer):
    """The items route is matched ahead of the routers; the request metrics still name it by its template (one series
    for every collection), not as an unmatched request."""
    assert api.get(f"/ogc/collections/{points_layer}/items", headers=admin).status_code == 200
    metrics = api.get("/metrics").text
    assert re.search(r'cityops_http_requests_total\{method="GET",route="/ogc/collections/\{collection_id\}/items",'
                     r'status="200"\} [1-9]', metrics)
    assert points_layer not in metrics


def test_paging_links_cover_every_feature_once(api, admin, points_layer):
    url = f"/ogc/collections/{points_layer}/items?limit=7&bbox={','.join(map(str, (108.3, 31.1, 108.5, 31.3)))}"
    ids, seen_names, pages = [], set(), 0
    while url:
        body = api.get(url, headers=admin).json()
        pages += 1
        assert body["numberMatched"] == 25
        assert body["numberReturned"] == len(body["features"]) <= 7
        ids += [f["id"] for f in body["features"]]
        seen_names |= names(body)
        if pages == 2:
            prev = api.get(path_of(link(body, "prev")), headers=admin).json()
            assert [f["id"] for f in prev["features"]] == ids[:7]
        nxt = link(body, "next")
        if nxt:
            q = parse_qs(urlsplit(nxt).query)
            assert q["limit"] == ["7"] and "bbox" in q  # the next link keeps the query
        url = path_of(nxt) if nxt else None
    assert pages == 4 and len(ids) == len(set(ids)) == 25
    assert seen_names == {f"p{i}" for i in range(25)}
    all_ids = {f["id"] for f in api.get(f"/ogc/collections/{points_layer}/items?limit=100", headers=admin).json()["features"]}
    assert set(ids) == all_ids


def test_limit_rules(api, admin, points_layer):
    url = f"/ogc/collections/{points_layer}/items"
    top = api.get(url, params={"limit": 10000}, headers=admin)
    assert top.status_code == 200 and top.json()["numberReturned"] == 25
    for bad in ("0", "-1", "abc", "1.5", "10001", "50000"):  # the documented maximum is 10000
        r = api.get(url, params={"limit": bad}, headers=admin)
        assert r.status_code == 400, bad
        assert "limit" in r.json()["description"]
    assert api.get(url, params={"offset": "-3"}, headers=admin).status_code == 400
    beyond = api.get(url, params={"offset": 100}, headers=admin).json()
    assert beyond["numberReturned"] == 0 and beyond["numberMatched"] == 25 and link(beyond, "next") is None


def test_bbox_filter_and_bbox_crs(api, admin, points_layer):
    url = f"/ogc/collections/{points_layer}/items"
    expected = expected_in(BOX)
    assert 0 < len(expected) < 25
    r = api.get(url, params={"bbox": ",".join(map(str, BOX)), "limit": 100}, headers=admin).json()
    assert names(r) == expected and r["numberMatched"] == len(expected)

    minx, miny, maxx, maxy = BOX
    for code in (4326, 4490):  # latitude first
        lat_lon = f"{miny},{minx},{maxy},{maxx}"
        r = api.get(url, params={"bbox": lat_lon, "bbox-crs": EPSG.format(code), "limit": 100}, headers=admin).json()
        assert names(r) == expected, code
    merc = pyproj.Transformer.from_crs("OGC:CRS84", "EPSG:3857", always_xy=True)
    (x0, x1), (y0, y1) = merc.transform([minx, maxx], [miny, maxy])
    r = api.get(url, params={"bbox": f"{x0},{y0},{x1},{y1}", "bbox-crs": EPSG.format(3857), "limit": 100}, headers=admin).json()
    assert names(r) == expected
    # The same numbers read as CRS84 (lat, lon taken as lon, lat) select nothing here.
    wrong = api.get(url, params={"bbox": f"{miny},{minx},{maxy},{maxx}", "limit": 100}, headers=admin)
    assert wrong.status_code in (200, 400) and (wrong.status_code == 400 or wrong.json()["numberMatched"] == 0)
    six = api.get(url, params={"bbox": f"{minx},{miny},-10,{maxx},{maxy},100", "limit": 100}, headers=admin).json()
    assert names(six) == expected


def test_bbox_is_exact_not_the_envelope(api, admin):
    triangle = Polygon([(108.40, 31.20), (108.42, 31.20), (108.40, 31.22)])
    key = make_layer(api, admin, [{"type": "Feature", "properties": {"name": "tri"}, "geometry": mapping(triangle)}],
                     geometry_type="POLYGON")
    url = f"/ogc/collections/{key}/items"
    corner = api.get(url, params={"bbox": "108.415,31.215,108.43,31.23"}, headers=admin).json()  # in the envelope only
    assert corner["numberMatched"] == 0 and corner["features"] == []
    inside = api.get(url, params={"bbox": "108.401,31.201,108.402,31.202"}, headers=admin).json()
    assert inside["numberMatched"] == 1 and names(inside) == {"tri"}


def _features_bytes(text: str) -> str:
    """The raw features array of an items answer, as the server wrote it."""
    return text[text.index('"features":[') + len('"features":['):text.index('],"numberMatched"')]


def _thirty_triangles() -> list[dict]:
    """Features with and without ids, properties with CJK text, a quote and nulls: what the texts must carry."""
    feats = [{"type": "Feature", "id": f"F-{i}" if i % 3 else None,
              "properties": {"name": f"名{i}", "n": i, "x": i / 7, "tag": None if i % 2 else "a\"b"},
              "geometry": mapping(Polygon([(108.40 + i * 0.001, 31.20), (108.4005 + i * 0.001, 31.20),
                                           (108.40 + i * 0.001, 31.2005 + i * 1e-5)]))} for i in range(30)]
    for f in feats:
        if f["id"] is None:
            del f["id"]
    return feats


def test_feature_texts_are_written_behind_an_import(api, admin):
    """SQLite: a file import stores no Feature texts (the rows alone, as ogr2ogr writes a layer); the first bbox
    page writes its features per request and has the filler write the layer's texts behind. The pages read before
    and after hold the same bytes, and every text stored is the one a request writes from its row."""
    from cityops.base import featurestore

    if api.store.backend != "sqlite":
        pytest.skip("the Feature texts are stored on SQLite only")
    key = make_layer(api, admin, _thirty_triangles(), geometry_type="POLYGON")
    current, _ = featurestore.tables(key, "POLYGON")
    side = featurestore.geojson_table(current.name)

    def stored() -> list:
        with api.store.engine.connect() as conn:
            return conn.exec_driver_sql(f'SELECT id, feature FROM "{side}" ORDER BY id').all()

    assert stored() == [], "the import writes no texts"
    params = {"bbox": "108.3,31.1,108.5,31.3", "limit": 50}
    before = api.get(f"/ogc/collections/{key}/items", params=params, headers=admin)
    assert before.status_code == 200 and before.json()["numberReturned"] == 30
    assert featurestore.TEXTS.wait(30)
    texts = stored()
    assert len(texts) == 30
    after = api.get(f"/ogc/collections/{key}/items", params=params, headers=admin)
    assert _features_bytes(after.text) == _features_bytes(before.text)
    assert _features_bytes(after.text) == ",".join(t[1].decode() for t in texts)


def test_feature_texts_written_behind_are_those_of_the_rows_as_committed(api, admin):
    """The filler takes the write lock before it reads a chunk's rows: a row changed by a transaction that holds
    the lock when the filler starts gets the text of its committed state, never that of the state before."""
    import time

    from cityops.base import featurestore
    from cityops.core.storage import storage_of

    if api.store.backend != "sqlite":
        pytest.skip("the Feature texts are stored on SQLite only")
    key = make_layer(api, admin, [{"type": "Feature", "properties": {"n": i}, "geometry": mapping(Point(*POINTS[i]))}
                                  for i in range(5)])
    current, _ = featurestore.tables(key, "POINT")
    side = featurestore.geojson_table(current.name)
    engine = api.store.engine
    with engine.connect() as conn:
        conn.exec_driver_sql(f'UPDATE "{current.name}" SET properties = ? WHERE id = (SELECT min(id) FROM '
                             f'"{current.name}")', ('{"n":"changed"}',))
        featurestore.TEXTS.request(engine, current.name, [10 ** 9])
        time.sleep(0.5)  # the filler has started, and waits for this transaction's lock
        conn.commit()
    assert featurestore.TEXTS.wait(30)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f'SELECT t.id, t.fid, t.properties, t.geom, g.feature FROM "{current.name}" t '
                                    f'JOIN "{side}" g USING (id) ORDER BY t.id').all()
        geoms = storage_of(conn).decode_geometries([r[3] for r in rows])
    assert len(rows) == 5 and b'"properties":{"n":"changed"}' in rows[0][4]
    assert [r[4] for r in rows] == featurestore.feature_texts([r[0] for r in rows], [r[1] for r in rows],
                                                              [r[2] for r in rows], geoms)


def test_feature_texts_written_behind_a_layer_made_again(api, admin):
    """A layer deleted and created again under the same key begins its row ids anew, below what the filler of
    this process had filled: its texts are written behind all the same, and are the new rows'."""
    from cityops.base import featurestore

    if api.store.backend != "sqlite":
        pytest.skip("the Feature texts are stored on SQLite only")
    params = {"bbox": "108.3,31.1,108.5,31.3", "limit": 50}
    key = make_layer(api, admin, point_features())
    assert api.get(f"/ogc/collections/{key}/items", params=params, headers=admin).status_code == 200
    assert featurestore.TEXTS.wait(30)
    assert api.delete(f"/api/layers/{key}", headers=admin).status_code == 204
    make_layer(api, admin, [{"type": "Feature", "properties": {"again": i}, "geometry": mapping(Point(*POINTS[i]))}
                            for i in range(3)], key=key)
    featurestore.TEXTS.recheck_s = 0.0  # a new table is looked at again without waiting
    try:
        page = api.get(f"/ogc/collections/{key}/items", params=params, headers=admin)
        assert featurestore.TEXTS.wait(30)
    finally:
        featurestore.TEXTS.recheck_s = 30.0
    current, _ = featurestore.tables(key, "POINT")
    with api.store.engine.connect() as conn:
        texts = [r[0] for r in conn.exec_driver_sql(
            f'SELECT feature FROM "{featurestore.geojson_table(current.name)}" ORDER BY id')]
    assert len(texts) == 3 and all(b'"again"' in t for t in texts)
    assert _features_bytes(page.text) == ",".join(t.decode() for t in texts)


def test_bbox_page_is_written_as_the_general_path_writes_it(api, admin):
    """A bbox page (the map's hot path) is written from the features' ready GeoJSON; the same page asked with a
    filter that changes nothing goes the general way. Both answers hold the same bytes for every feature, the
    same count and the same paging, in every served CRS."""
    key = make_layer(api, admin, _thirty_triangles(), geometry_type="POLYGON")
    url = f"/ogc/collections/{key}/items"
    box = "108.3,31.1,108.5,31.3"
    everything = "S_INTERSECTS(geometry, BBOX(108.0, 31.0, 109.0, 32.0))"
    cases = ({}, {"crs": EPSG.format(4326)}, {"crs": EPSG.format(3857)}, {"offset": "4"},
             {"bbox-crs": EPSG.format(4490), "bbox": "31.1,108.3,31.3,108.5"})
    # First in a session (no bus: the layer row is read), then as a running server does it (the bus runs: the
    # layer comes from the worker's catalogue and the page is read on a bare connection).
    for wired in (False, True):
        if wired:
            api.app.state.ctx.bus.ensure_started()  # stopped with the module's client
        for extra in cases:
            params = {"bbox": box, "limit": 7, **extra}
            lean = api.get(url, params=params, headers=admin)
            general = api.get(url, params={**params, "filter": everything}, headers=admin)
            assert lean.status_code == general.status_code == 200, (lean.text, general.text)
            assert _features_bytes(lean.text) == _features_bytes(general.text), extra
            a, b = lean.json(), general.json()
            assert a["numberMatched"] == b["numberMatched"] == 30 and a["numberReturned"] == b["numberReturned"] == 7
            assert [lk["rel"] for lk in a["links"]] == [lk["rel"] for lk in b["links"]]
            assert lean.headers["content-crs"] == general.headers["content-crs"]
            # Every next and prev link leads to the same page on both paths.
            for rel in ("next", "prev"):
                if link(a, rel):
                    there = api.get(path_of(link(a, rel)), headers=admin)
                    back = api.get(path_of(link(b, rel)), headers=admin)
                    assert _features_bytes(there.text) == _features_bytes(back.text), (extra, rel)
    assert api.app.state.layer_catalogue.all(), "the bbox pages read the layer from the catalogue"
    assert api.get(f"/ogc/collections/{key}x/items", params={"bbox": box}, headers=admin).status_code == 404
    # HEAD answers as GET does (the Allow list has always named it).
    assert api.head(url, params={"bbox": box}, headers=admin).status_code == 200
    # Bad values on the bbox page are still 400s naming the parameter.
    for bad, name in (({"limit": "abc"}, "limit"), ({"crs": "EPSG:1"}, "crs"), ({"bbox-crs": "x"}, "bbox-crs"),
                      ({"cursor": "z1"}, "cursor"), ({"f": "xml"}, "f="), ({"datetime": "soon"}, "datetime"),
                      ({"offset": "2", "cursor": "a1"}, "cursor")):
        r = api.get(url, params={"bbox": box, **bad}, headers=admin)
        assert r.status_code == 400 and name in r.json()["description"], (bad, r.text)


@pytest.mark.parametrize("bbox", ["1,2,3", "a,b,c,d", "1,2,3,4,5", "108.5,31.2,108.4,31.3", "", "1,2,3,nan"])
def test_bad_bbox_is_400(api, admin, points_layer, bbox):
    r = api.get(f"/ogc/collections/{points_layer}/items", params={"bbox": bbox}, headers=admin)
    assert r.status_code == 400 and "bbox" in r.json()["description"]


def test_unknown_parameter_is_400_and_named(api, admin, points_layer):
    r = api.get(f"/ogc/collections/{points_layer}/items", params={"limit": 5, "foo": "1", "sortby": "n"}, headers=admin)
    assert r.status_code == 400
    body = r.json()
    assert "foo" in body["description"] and "sortby" in body["description"] and body["code"]
    r = api.get(f"/ogc/collections/{points_layer}/items/1", params={"bbox": "1,2,3,4"}, headers=admin)
    assert r.status_code == 400 and "bbox" in r.json()["description"]
    assert api.get("/ogc/collections", params={"foo": 1}, headers=admin).status_code == 400
    assert api.get(f"/ogc/collections/{points_layer}/items", params={"datetime": "2024-01-01T00:00:00Z/.."},
                   headers=admin).status_code == 200
    assert api.get(f"/ogc/collections/{points_layer}/items", params={"datetime": "yesterday"}, headers=admin).status_code == 400


def test_feature_by_id_and_404s(api, admin, points_layer):
    url = f"/ogc/collections/{points_layer}/items"
    first = api.get(url, params={"limit": 1}, headers=admin).json()["features"][0]
    r = api.get(f"{url}/{first['id']}", headers=admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    assert r.headers["content-crs"] == f"<{CRS84}>"
    feature = r.json()
    assert feature["id"] == first["id"] and feature["properties"] == first["properties"]
    assert feature["geometry"] == first["geometry"]
    assert {"self", "collection"} <= {lk["rel"] for lk in feature["links"]}
    r = api.get(f"{url}/{first['id']}", params={"crs": EPSG.format(4326)}, headers=admin)
    assert r.json()["geometry"]["coordinates"] == pytest.approx(first["geometry"]["coordinates"][::-1])
    assert r.headers["content-crs"] == f"<{EPSG.format(4326)}>"

    for path in (f"{url}/999999", f"{url}/no-such-feature", "/ogc/collections/dUmmYColLection",
                 "/ogc/collections/dUmmYColLection/items", "/ogc/collections/dUmmYColLection/items/1"):
        r = api.get(path, headers=admin)
        assert r.status_code == 404, path
        assert r.json()["description"]


def test_output_crs_and_axis_order(api, admin, points_layer):
    url = f"/ogc/collections/{points_layer}/items"
    base = {f["id"]: f["geometry"]["coordinates"] for f in api.get(url, params={"limit": 100}, headers=admin).json()["features"]}
    for code in (4326, 4490):
        r = api.get(url, params={"limit": 100, "crs": EPSG.format(code)}, headers=admin)
        assert r.status_code == 200 and r.headers["content-crs"] == f"<{EPSG.format(code)}>"
        for f in r.json()["features"]:
            lat, lon = f["geometry"]["coordinates"]  # EPSG order: latitude first
            assert [lon, lat] == pytest.approx(base[f["id"]]) and 31 < lat < 32
    r = api.get(url, params={"limit": 100, "crs": CRS84}, headers=admin)
    assert r.headers["content-crs"] == f"<{CRS84}>"
    to_gk = pyproj.Transformer.from_crs("EPSG:4490", "EPSG:4545", always_xy=True)
    r = api.get(url, params={"limit": 100, "crs": EPSG.format(4545)}, headers=admin)
    assert r.status_code == 200 and r.headers["content-crs"] == f"<{EPSG.format(4545)}>"
    for f in r.json()["features"]:
        northing, easting = f["geometry"]["coordinates"]  # EPSG:4545 axes: X north, Y east (metres)
        e, n = to_gk.transform(*base[f["id"]])
        assert (easting, northing) == pytest.approx((e, n), abs=0.01)
        assert 3_400_000 < northing < 3_500_000 and 400_000 < easting < 600_000
    r = api.get(url, params={"limit": 100, "crs": EPSG.format(3857)}, headers=admin)
    x, y = r.json()["features"][0]["geometry"]["coordinates"]
    assert 12_000_000 < x < 12_100_000 and 3_600_000 < y < 3_700_000


@pytest.mark.parametrize("crs", ["http://www.opengis.net/def/crs/EPSG/0/2000", "EPSG/0/99999", "nonsense",
                                 "http://www.opengis.net/def/crs/EPSG/0/4547", "GCJ02"])
def test_unsupported_crs_is_400(api, admin, points_layer, crs):
    for name in ("crs", "bbox-crs"):
        params = {name: crs} if name == "crs" else {"bbox": "1,2,3,4", name: crs}
        r = api.get(f"/ogc/collections/{points_layer}/items", params=params, headers=admin)
        assert r.status_code == 400, (name, crs)
        assert name in r.json()["description"]


def test_layer_outside_scope_is_an_unknown_collection(api, admin):
    townships = {u["name"]: u["code"] for u in api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]}
    key = make_layer(api, admin, point_features(POINTS[:3]), unit_code=townships["大德镇"])
    username = "ogc_" + uuid.uuid4().hex[:8]
    r = api.post("/api/users", headers=admin, json={"username": username, "password": "ogc-user-pass",
                                                     "role": "township_operator",
                                                     "scope_units": [townships["义和镇"]]})
    assert r.status_code == 201, r.text
    outsider = api.login(username, "ogc-user-pass")
    assert key not in {c["id"] for c in api.get("/ogc/collections", headers=outsider).json()["collections"]}
    for path in (f"/ogc/collections/{key}", f"/ogc/collections/{key}/items"):
        assert api.get(path, headers=outsider).status_code == 404
        assert api.get(path, headers=admin).status_code == 200


def _building_counts(api, where: str = "1 = 1", **params) -> int:
    with api.store.sessions() as session:
        return session.execute(text(f"SELECT count(*) FROM buildings WHERE {where}"), params).scalar()


def test_buildings_registry_is_a_collection(api, admin):
    """The buildings registry in /ogc: its registry columns as queryables, no personal data, filters and bboxes
    answered exactly, the reader's scope kept, read-only."""
    listed = {c["id"]: c for c in api.get("/ogc/collections", headers=admin).json()["collections"]}
    assert listed["buildings"]["title"] == "房屋" and link(listed["buildings"], "items")
    q = api.get("/ogc/collections/buildings/queryables", headers=admin).json()
    assert q["properties"]["floors"]["type"] == "integer" and q["properties"]["safety_grade"]["type"] == "string"
    assert q["properties"]["geometry"]["format"] == "geometry-multipolygon"
    assert not {"households", "residents", "vulnerable", "head_name", "phone"} & set(q["properties"])

    url = "/ogc/collections/buildings/items"
    page = api.get(url, params={"limit": 5}, headers=admin).json()
    assert page["numberMatched"] == _building_counts(api) and len(page["features"]) == 5
    first = page["features"][0]
    assert first["geometry"]["type"] == "MultiPolygon" and set(first["properties"]) <= set(q["properties"])
    assert first["id"] == first["properties"]["code"]
    one = api.get(f"{url}/{first['id']}", headers=admin)
    assert one.status_code == 200 and one.json()["properties"] == first["properties"] and one.headers["etag"]

    flt = "floors >= 3 AND structure = '砖混'"
    got = api.get(url, params={"filter": flt, "limit": 1}, headers=admin).json()
    assert got["numberMatched"] == _building_counts(api, "floors >= 3 AND structure = '砖混'") > 0
    assert api.get(url, params={"filter": "floors = 'three'"}, headers=admin).status_code == 400
    x, y = shapely.geometry.shape(first["geometry"]).representative_point().coords[0]
    boxed = api.get(url, params={"bbox": f"{x - 1e-6},{y - 1e-6},{x + 1e-6},{y + 1e-6}", "limit": 100}, headers=admin).json()
    assert first["id"] in {f["id"] for f in boxed["features"]}
    point = api.get(url, params={"filter": f"S_INTERSECTS(geometry, POINT({x!r} {y!r}))"}, headers=admin).json()
    assert first["id"] in {f["id"] for f in point["features"]}

    # Scope: the township operator reads its township's buildings only.
    yihe = api.login("yihe")
    mine = api.get(url, params={"limit": 1}, headers=yihe).json()["numberMatched"]
    with api.store.sessions() as session:
        path = session.execute(text("SELECT path FROM units WHERE name = '义和镇'")).scalar()
    assert mine == _building_counts(api, "unit_path LIKE :p", p=path + "%") < page["numberMatched"]
    outside = api.get(url, params={"filter": f"code <> 'x'", "limit": 10000}, headers=yihe).json()
    assert outside["numberMatched"] == mine
    # Read-only, and not for anonymous readers.
    feat = {"type": "Feature", "properties": {}, "geometry": first["geometry"]}
    r = api.post(url, headers=admin, json=feat)
    assert r.status_code == 405 and "POST" not in r.headers["allow"]
    assert api.get(url).status_code == 401
    assert api.post("/api/layers", headers=admin, json={"key": "buildings", "title_zh": "x", "category": "0701"}).status_code == 409


# --- Independent clients against a live server --------------------------------------------------------
# SQLite only, to save time: the live server opens the demo store's GeoPackage file, the same one the
# TestClient writes to (the PostGIS backend is covered by every test above through the same routes).
# The server runs in a subprocess, not a thread: pyogrio keeps the GIL while GDAL fetches, so a uvicorn
# thread in this process could never answer GDAL (the request deadlocks).

SERVE = """
import sys, uvicorn
from cityops.app import create_app
from cityops.core.settings import Settings
data_dir, secret, port = sys.argv[1:4]
app = create_app(Settings(data_dir=data_dir, secret_key=secret, log_json=False), run_migrations=False)
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", lifespan="off")
"""



@pytest.fixture(scope="module")
def live(api):
    if api.store.backend != "sqlite":
        pytest.skip("live-server client tests run on the SQLite backend only")
    settings = api.store.settings
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(settings.data_dir), settings.secret_key, str(port)],
                            cwd=Path(__file__).resolve().parents[1])
    try:
        wait_for_port(proc, port)
        yield f"http://127.0.0.1:{port}/ogc"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def gdal_auth(admin):
    """GDAL sends the token as ``Authorization: Bearer``. Not through GDAL_HTTP_HEADERS: the OAPIF driver passes
    its own HEADERS option (Accept) on every request, which takes precedence, so the header never arrives
    (checked with GDAL 3.12.4); GDAL_HTTP_AUTH=BEARER (GDAL >= 3.9) adds it to every request instead."""
    token = admin["Authorization"].removeprefix("Bearer ")
    pyogrio.set_gdal_config_options({"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": token})
    yield
    pyogrio.set_gdal_config_options({"GDAL_HTTP_AUTH": None, "GDAL_HTTP_BEARER": None})


def _by_name(meta, geometry, fields) -> dict[str, tuple[float, float]]:
    names_ = fields[[f for f in meta["fields"]].index("name")]
    return {str(n): shapely.from_wkb(g).coords[0] for n, g in zip(names_, geometry)}


def test_gdal_oapif_driver(api, admin, live, points_layer, gdal_auth):
    source = f"OAPIF:{live}"
    layers = {name for name, _ in pyogrio.list_layers(source)}
    assert points_layer in layers

    meta, _, geometry, fields = pyogrio.raw.read(source, layer=points_layer)
    got = _by_name(meta, geometry, fields)
    assert set(got) == {f"p{i}" for i in range(25)}
    for i, (x, y) in enumerate(POINTS):  # whatever CRS GDAL asked for, its lon/lat must be ours
        assert got[f"p{i}"] == pytest.approx((x, y), abs=1e-7)
    info = pyogrio.read_info(source, layer=points_layer, force_feature_count=True)
    # GDAL picks the storageCrs (EPSG:4490) and then asks for crs=…/4490 and bbox-crs=…/4490 with lat, lon
    # bboxes: the coordinates and the bbox selection below only come out right if both axis swaps are right.
    assert info["crs"] == "EPSG:4490" and info["features"] == 25

    expected = expected_in(BOX)
    meta, _, geometry, fields = pyogrio.raw.read(source, layer=points_layer, bbox=BOX)
    assert set(_by_name(meta, geometry, fields)) == expected
    api_names = names(api.get(f"/ogc/collections/{points_layer}/items", params={"bbox": ",".join(map(str, BOX)), "limit": 100},
                              headers=admin).json())
    assert api_names == expected


def test_owslib_features(request, api, admin, live, points_layer):
    from owslib import ogcapi
    from owslib.ogcapi.features import Features

    # OWSLib merges ``headers`` into its module-wide REQUEST_HEADERS dict: take the token out again afterwards.
    request.addfinalizer(lambda: ogcapi.REQUEST_HEADERS.pop("Authorization", None))
    client = Features(live, headers=dict(admin))
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in client.conformance()["conformsTo"]
    ids = {c["id"] for c in client.collections()["collections"]}
    assert points_layer in ids and points_layer in client.feature_collections()
    assert client.collection(points_layer)["itemType"] == "feature"

    page = client.collection_items(points_layer, limit=5)
    assert page["numberReturned"] == 5 and page["numberMatched"] == 25
    boxed = client.collection_items(points_layer, limit=100, bbox=list(BOX))
    assert names(boxed) == expected_in(BOX)
    lat_lon = [BOX[1], BOX[0], BOX[3], BOX[2]]
    boxed_4326 = client.collection_items(points_layer, limit=100, bbox=lat_lon, **{"bbox-crs": EPSG.format(4326)})
    assert names(boxed_4326) == expected_in(BOX)
    one = client.collection_item(points_layer, page["features"][0]["id"])
    assert one["properties"] == page["features"][0]["properties"]


def test_gdal_reads_the_buildings_collection(api, admin, live, gdal_auth):
    source = f"OAPIF:{live}"
    assert "buildings" in {name for name, _ in pyogrio.list_layers(source)}
    info = pyogrio.read_info(source, layer="buildings", force_feature_count=True)
    assert info["features"] == _building_counts(api) and info["geometry_type"] in ("MultiPolygon", "Unknown")
    assert {"code", "floors", "structure", "safety_grade"} <= set(info["fields"])
    meta, _, geometry, fields = pyogrio.raw.read(source, layer="buildings", where="floors >= 4 AND use = '住宅'")
    codes = {str(c) for c in fields[list(meta["fields"]).index("code")]}
    with api.store.sessions() as session:
        expected = set(session.execute(text("SELECT code FROM buildings WHERE floors >= 4 AND use = '住宅'")).scalars())
    assert codes == expected and expected

"""OGC API – Features Part 3 (CQL2 filtering, queryables), keyset paging and Part 4 (create, replace, update,
delete) at /ogc on both backends; then GDAL (pyogrio) and OWSLib against a live server, checking in the
server's access log that the filters GDAL and OWSLib send really reach the server."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyogrio
import pytest
import shapely
from shapely.geometry import Point, mapping, shape
from sqlalchemy import select, text

from tests.conftest import free_port, table_counts, wait_for_port
from tests.test_ogc_features import SERVE, link, make_layer, path_of

EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}"
SPEC = "http://www.opengis.net/spec/"

#: 30 points on a 6 × 5 grid with attributes of every type; some values are missing or of the wrong type.
GRID = [(108.40 + (i % 6) * 0.01, 31.20 + (i // 6) * 0.01) for i in range(30)]


def attrs(i: int) -> dict:
    props = {"name": f"站点{i}" if i % 3 else f"Site{i}", "n": i, "kind": "ab"[i % 2], "flag": i % 4 == 0,
             "when": f"2024-0{1 + i % 6}-15T08:00:00+00:00", "depth": i * 1.5}
    if i in (11, 12):
        props["depth"] = None
    return props


@pytest.fixture(scope="module")
def admin(api):
    return api.login("admin")


@pytest.fixture(scope="module")
def grid_layer(api, admin):
    feats = [{"type": "Feature", "properties": attrs(i), "geometry": mapping(Point(x, y))} for i, (x, y) in enumerate(GRID)]
    return make_layer(api, admin, feats)


def run(api, admin, key, flt, lang=None, **extra) -> dict:
    params = {"filter": flt, "limit": 1000, **extra}
    if lang:
        params["filter-lang"] = lang
    r = api.get(f"/ogc/collections/{key}/items", params=params, headers=admin)
    assert r.status_code == 200, (flt, r.text)
    body = r.json()
    assert body["numberMatched"] == body["numberReturned"] == len(body["features"])
    return body


def ns(body) -> set[int]:
    return {int(f["properties"]["name"].removeprefix("站点").removeprefix("Site")) for f in body["features"]}


def where(pred) -> set[int]:
    return {i for i in range(30) if pred(attrs(i), Point(*GRID[i]))}


# --- Part 3 discovery ------------------------------------------------------------------------------


def test_conformance_declares_what_qgis_needs(api):
    conf = set(api.get("/ogc/conformance").json()["conformsTo"])
    for cls in ("ogcapi-features-3/1.0/conf/filter", "ogcapi-features-3/1.0/conf/features-filter",
                "ogcapi-features-3/1.0/conf/queryables", "cql2/1.0/conf/cql2-text", "cql2/1.0/conf/cql2-json",
                "cql2/1.0/conf/basic-cql2", "cql2/1.0/conf/basic-spatial-functions",
                "ogcapi-features-4/1.0/conf/create-replace-delete", "ogcapi-features-4/1.0/conf/update"):
        assert SPEC + cls in conf, cls
    params = {p["name"] for p in api.get("/ogc/api").json()["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]}
    assert {"filter", "filter-lang", "filter-crs", "cursor"} <= params


def test_queryables_schema(api, admin, grid_layer):
    col = api.get(f"/ogc/collections/{grid_layer}", headers=admin).json()
    [href] = [lk["href"] for lk in col["links"] if lk["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/queryables"]
    r = api.get(path_of(href), headers=admin)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/schema+json")
    schema = r.json()
    assert schema["type"] == "object" and schema["$id"].endswith(f"/collections/{grid_layer}/queryables")
    props = schema["properties"]
    assert props["n"]["type"] == "integer" and props["name"]["type"] == "string" and props["flag"]["type"] == "boolean"
    assert props["depth"]["type"] == "number" and props["geometry"]["format"] == "geometry-point"
    assert api.get(path_of(href), headers=admin, params={"x": 1}).status_code == 400
    assert api.get(f"/ogc/collections/{grid_layer}/queryables").status_code == 401


# --- Part 3 filters: the same answers on both backends -------------------------------------------------

CASES = [
    ("n > 20 AND kind = 'a'", lambda p, g: isinstance(p["n"], int) and p["n"] > 20 and p["kind"] == "a"),
    ("n <> 3", lambda p, g: isinstance(p["n"], int) and p["n"] != 3),
    ("n < 2 OR n >= 28", lambda p, g: isinstance(p["n"], int) and (p["n"] < 2 or p["n"] >= 28)),
    ("NOT (kind = 'a')", lambda p, g: p["kind"] != "a"),
    ("depth IS NULL", lambda p, g: p["depth"] is None),
    ("depth IS NOT NULL AND depth <= 6", lambda p, g: p["depth"] is not None and p["depth"] <= 6),
    ("name LIKE 'Site%'", lambda p, g: p["name"].startswith("Site")),
    ("name LIKE 'site%'", lambda p, g: False),  # LIKE is case sensitive on both backends
    ("CASEI(name) LIKE CASEI('site1%')", lambda p, g: p["name"].lower().startswith("site1")),
    ("CASEI(name) = CASEI('SITE3')", lambda p, g: p["name"] == "Site3"),
    ("name LIKE '站点_'", lambda p, g: p["name"].startswith("站点") and len(p["name"]) == 3),
    ("n IN (1, 2, 7, 29)", lambda p, g: p["n"] in (1, 2, 7, 29)),
    ("n NOT IN (1, 2)", lambda p, g: isinstance(p["n"], int) and p["n"] not in (1, 2)),
    ("n BETWEEN 5 AND 9", lambda p, g: isinstance(p["n"], int) and 5 <= p["n"] <= 9),
    ("flag = true", lambda p, g: p["flag"]),
    ("name > '站点2'", lambda p, g: p["name"] > "站点2"),  # code point order on both backends
    ("when > TIMESTAMP('2024-04-01T00:00:00Z')", lambda p, g: p["when"] > "2024-04-01T00:00:00+00:00"),
    ("T_BEFORE(when, TIMESTAMP('2024-02-15T08:00:00Z'))", lambda p, g: p["when"] < "2024-02-15T08:00:00+00:00"),
    ("T_DURING(when, INTERVAL('2024-02-01T00:00:00Z', '2024-03-31T00:00:00Z'))",
     lambda p, g: "2024-02-01" < p["when"] < "2024-03-31"),
    ("T_INTERSECTS(when, INTERVAL('2024-05-01T00:00:00Z', '..'))", lambda p, g: p["when"] >= "2024-05-01"),
    ("S_INTERSECTS(geometry, BBOX(108.415, 31.205, 108.435, 31.225))",
     lambda p, g: shapely.box(108.415, 31.205, 108.435, 31.225).intersects(g)),
    ("S_WITHIN(geom, POLYGON((108.395 31.195, 108.425 31.195, 108.395 31.235, 108.395 31.195)))",
     lambda p, g: g.within(shapely.Polygon([(108.395, 31.195), (108.425, 31.195), (108.395, 31.235)]))),
    ("S_DISJOINT(geometry, BBOX(108.415, 31.205, 108.435, 31.225)) AND kind = 'b'",
     lambda p, g: shapely.box(108.415, 31.205, 108.435, 31.225).disjoint(g) and p["kind"] == "b"),
    ("S_INTERSECTS(geometry, POINT(108.42 31.21)) OR n = 0", lambda p, g: g.equals(Point(108.42, 31.21)) or p["n"] == 0),
]


@pytest.mark.parametrize("flt,pred", CASES, ids=[c[0][:40] for c in CASES])
def test_cql2_text_filters(api, admin, grid_layer, flt, pred):
    expected = where(pred)
    assert ns(run(api, admin, grid_layer, flt)) == expected


def test_cql2_json_matches_text(api, admin, grid_layer):
    j = {"op": "and", "args": [{"op": ">", "args": [{"property": "n"}, 10]},
                               {"op": "s_intersects", "args": [{"property": "geometry"},
                                                               {"bbox": [108.40, 31.20, 108.43, 31.25]}]}]}
    got = run(api, admin, grid_layer, json.dumps(j), "cql2-json")
    same = run(api, admin, grid_layer, "n > 10 AND S_INTERSECTS(geometry, BBOX(108.40, 31.20, 108.43, 31.25))")
    assert ns(got) == ns(same) == where(lambda p, g: isinstance(p["n"], int) and p["n"] > 10 and g.x <= 108.43 + 1e-9)


def test_filter_crs_axis_order(api, admin, grid_layer):
    box = (108.415, 31.205, 108.435, 31.225)
    expected = where(lambda p, g: shapely.box(*box).intersects(g))
    lat_first = f"S_INTERSECTS(geometry, BBOX({box[1]}, {box[0]}, {box[3]}, {box[2]}))"
    assert ns(run(api, admin, grid_layer, lat_first, **{"filter-crs": EPSG.format(4326)})) == expected
    # The same numbers without filter-crs are read as lon/lat: 108 is no latitude.
    r = api.get(f"/ogc/collections/{grid_layer}/items", headers=admin, params={"filter": lat_first})
    assert r.status_code == 400 and "filter-crs" in r.json()["description"]
    r = api.get(f"/ogc/collections/{grid_layer}/items", headers=admin,
                params={"filter": lat_first, "filter-crs": "EPSG:2000"})
    assert r.status_code == 400 and "filter-crs" in r.json()["description"]


def test_filter_with_bbox_and_paging(api, admin, grid_layer):
    url = f"/ogc/collections/{grid_layer}/items"
    expected = where(lambda p, g: p["kind"] == "b" and shapely.box(108.40, 31.20, 108.45, 31.23).intersects(g))
    nxt, seen, pages = path_of(url) + "?" + "&".join(
        [f"filter={'kind%20%3D%20%27b%27'}", "bbox=108.40,31.20,108.45,31.23", "limit=4"]), [], 0
    while nxt:
        body = api.get(nxt, headers=admin).json()
        pages += 1
        assert body["numberMatched"] == len(expected)
        seen += [f["id"] for f in body["features"]]
        nxt_href = link(body, "next")
        if nxt_href:
            q = parse_qs(urlsplit(nxt_href).query)
            assert "offset" not in q and q["cursor"][0].startswith("a") and q["filter"] == ["kind = 'b'"]
        if pages == 2:
            prev = api.get(path_of(link(body, "prev")), headers=admin).json()
            assert [f["id"] for f in prev["features"]] == seen[:4]
        nxt = path_of(nxt_href) if nxt_href else None
    assert len(seen) == len(set(seen)) == len(expected) and pages == -(-len(expected) // 4)


@pytest.mark.parametrize("flt,lang,needle", [
    ("n > ", None, "column 5"),
    ("name = 'a", None, "column"),
    ("(n = 1", None, "column 7"),
    ("nosuch = 1", None, "nosuch"),
    ("S_INTERSECTS(n, POINT(1 2))", None, "geometry"),
    ("S_INTERSECTS(geometry, POLYGON((0 0, 1 1, 0 1, 1 0, 0 0)))", None, "not valid"),
    ("{\"op\": \"=\", \"args\": [", "cql2-json", "column"),
    ("{\"op\": \"nosuchop\", \"args\": []}", "cql2-json", "nosuchop"),
    ("n = 1", "ecql", "filter-lang"),
    # A literal of another type than the queryable's matched nothing; now it says why.
    ("n = '3'", None, "'n' is a integer queryable"),
    ("name = 3", None, "'name' is a string queryable"),
    ("n IN ('1', '2')", None, "string literal"),
    ("depth > 'deep'", None, "'depth' is a number queryable"),
    ("n LIKE '1%'", None, "string literal"),
])
def test_bad_filters_are_400_with_position(api, admin, grid_layer, flt, lang, needle):
    params = {"filter": flt}
    if lang:
        params["filter-lang"] = lang
    r = api.get(f"/ogc/collections/{grid_layer}/items", params=params, headers=admin)
    assert r.status_code == 400, r.text
    assert needle in r.json()["description"]
    if "column" in needle:
        assert r.json()["details"]["column"] >= 1


def test_pre_standard_filter_lang_names(api, admin, grid_layer):
    """GDAL's OAPIF driver asks with filter-lang=cql-text (the name before CQL2)."""
    for flt in ("n > 20 AND kind = 'a'", "name LIKE 'Site%'"):
        assert ns(run(api, admin, grid_layer, flt, "cql-text")) == ns(run(api, admin, grid_layer, flt, "cql2-text"))
    as_json = json.dumps({"op": ">", "args": [{"property": "n"}, 25]})
    assert ns(run(api, admin, grid_layer, as_json, "cql-json")) == where(lambda p, g: p["n"] > 25)


def test_s_intersects_a_point_at_a_returned_features_coordinates(api, admin):
    """A point literal written with the coordinates a feature came back with matches that feature (every digit of
    the stored double goes out, on both backends, in every served CRS)."""
    points = [(108.41234567891234, 31.212345678912345), (108.40000000000001, 31.2), (108.43333333333333, 31.266666666666666),
              (108.1 + 0.2, 31.1 + 0.2)]
    key = make_layer(api, admin, [{"type": "Feature", "properties": {"name": f"x{i}"}, "geometry": mapping(Point(p))}
                                  for i, p in enumerate(points)])
    for crs, swap in ((None, False), (EPSG.format(4490), True), (EPSG.format(4326), True)):
        extra = {"crs": crs} if crs else {}
        body = api.get(f"/ogc/collections/{key}/items", params={"limit": 10, **extra}, headers=admin).json()
        assert len(body["features"]) == len(points)
        for f in body["features"]:
            a, b = f["geometry"]["coordinates"]
            params = {"filter-crs": crs} if crs else {}
            got = run(api, admin, key, f"S_INTERSECTS(geometry, POINT({a!r} {b!r}))", **params)
            assert [g["properties"]["name"] for g in got["features"]] == [f["properties"]["name"]], (crs, a, b)


def test_temporal_conformance_only_with_a_temporal_queryable(store):
    """Temporal functions are declared while some collection has a date or date-time queryable, and only then."""
    from cityops.base.models import Layer
    from cityops.org.models import Unit
    from tests.conftest import make_client

    temporal = SPEC + "cql2/1.0/conf/temporal-functions"
    client = make_client(store)
    try:
        def declared() -> set[str]:
            return set(client.get("/ogc/conformance").json()["conformsTo"])

        assert temporal not in declared() and SPEC + "cql2/1.0/conf/basic-cql2" in declared()
        with store.sessions() as session:
            session.add(Unit(code="500154", name="开州区", level="district", path="/500154/"))
            session.flush()
            session.add(Layer(key="plain", title_zh="无时间", title_en="plain", category="0701", geometry_type="POINT",
                              attribute_schema=[{"name": "n", "type": "integer"}], unit_code="500154",
                              unit_path="/500154/"))
            session.commit()
        assert temporal not in declared()
        with store.sessions() as session:
            session.scalar(select(Layer).where(Layer.key == "plain")).attribute_schema = \
                [{"name": "n", "type": "integer"}, {"name": "seen", "type": "datetime"}]
            session.commit()
        assert temporal in declared()
    finally:
        client.close()


def test_filter_lang_alone_and_unknown_params(api, admin, grid_layer):
    url = f"/ogc/collections/{grid_layer}/items"
    assert api.get(url, params={"filter-lang": "cql2-text"}, headers=admin).status_code == 400
    r = api.get(url, params={"filter": "n = 1", "sortby": "n"}, headers=admin)
    assert r.status_code == 400 and "sortby" in r.json()["description"]
    assert api.get(url, params={"cursor": "x1"}, headers=admin).status_code == 400
    assert api.get(url, params={"cursor": "a1", "offset": 3}, headers=admin).status_code == 400


def test_queryables_as_query_parameters(api, admin, grid_layer):
    url = f"/ogc/collections/{grid_layer}/items"
    body = api.get(url, params={"kind": "a", "flag": "true", "limit": 100}, headers=admin).json()
    assert ns(body) == where(lambda p, g: p["kind"] == "a" and p["flag"])
    both = api.get(url, params={"n": "4", "filter": "kind = 'a'"}, headers=admin).json()
    assert ns(both) == {4}
    for bad in ({"n": "four"}, {"flag": "yes"}):
        r = api.get(url, params=bad, headers=admin)
        assert r.status_code == 400 and next(iter(bad)) in r.json()["description"]
    # declared per collection in the OpenAPI document, for callers who may see the collection only
    doc = api.get("/ogc/api", headers=admin).json()
    declared = {p["name"] for p in doc["paths"][f"/collections/{grid_layer}/items"]["get"]["parameters"]}
    assert {"kind", "n", "flag", "limit", "filter"} <= declared
    assert f"/collections/{grid_layer}/items" not in api.get("/ogc/api").json()["paths"]
    conf = api.get("/ogc/conformance").json()["conformsTo"]
    assert SPEC + "ogcapi-features-3/1.0/conf/queryables-query-parameters" in conf


def test_projected_crs_comes_from_settings(api, admin, grid_layer):
    metric = api.app.state.ctx.settings.metric_crs.split(":")[1]
    col = api.get(f"/ogc/collections/{grid_layer}", headers=admin).json()
    assert EPSG.format(metric) in col["crs"]
    from cityops.ogc import service

    table = service.served_table("EPSG:4547")  # CGCS2000 GK CM 114°E: advertised only where configured
    assert "EPSG:4547" in table and table["EPSG:4547"].swap  # northing first, from pyproj's axis info


# --- Part 4: create, replace, update, delete -------------------------------------------------------


@pytest.fixture
def editable(api, admin):
    return make_layer(api, admin, [{"type": "Feature", "properties": {"name": "一", "n": 1},
                                    "geometry": mapping(Point(108.41, 31.21))}], editable=True)


def versions(api, admin, key):
    return api.get(f"/api/layers/{key}/versions", headers=admin).json()


def feature_rows(api, key) -> int:
    with api.store.engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM layer_{key}")).scalar()


def audit_actions(api, key) -> list[str]:
    with api.store.engine.connect() as conn:
        return list(conn.execute(text("SELECT action FROM audit_log WHERE entity_key LIKE :k ORDER BY id"),
                                 {"k": f"{key}/%"}).scalars())


def test_create_replace_update_delete(api, admin, editable):
    items = f"/ogc/collections/{editable}/items"
    r = api.post(items, headers={**admin, "Content-Type": "application/geo+json"},
                 json={"type": "Feature", "properties": {"name": "二", "n": 2, "note": "新"},
                       "geometry": {"type": "Point", "coordinates": [108.42, 31.22]}})
    assert r.status_code == 201, r.text
    loc = r.headers["location"]
    assert f"/ogc/collections/{editable}/items/" in loc
    got = api.get(path_of(loc), headers=admin)
    assert got.status_code == 200 and got.json()["properties"] == {"name": "二", "n": 2, "note": "新"}
    etag = got.headers["etag"]
    assert etag == r.headers["etag"]
    # the new attribute joins the schema, so it is a queryable too
    assert "note" in api.get(f"/ogc/collections/{editable}/queryables", headers=admin).json()["properties"]

    # PUT in EPSG:4326 (lat, lon) via Content-Crs
    r = api.put(path_of(loc), headers={**admin, "Content-Crs": f"<{EPSG.format(4326)}>", "If-Match": etag},
                json={"type": "Feature", "properties": {"name": "二改", "n": 22},
                      "geometry": {"type": "Point", "coordinates": [31.23, 108.43]}})
    assert r.status_code == 204, r.text
    body = api.get(path_of(loc), headers=admin).json()
    assert body["properties"] == {"name": "二改", "n": 22}
    assert body["geometry"]["coordinates"] == pytest.approx([108.43, 31.23])
    # a stale ETag is refused and changes nothing
    stale = api.patch(path_of(loc), headers={**admin, "If-Match": etag}, json={"properties": {"n": 99}})
    assert stale.status_code == 412
    # JSON merge patch: change one, remove one, keep the geometry
    r = api.patch(path_of(loc), headers={**admin, "Content-Type": "application/merge-patch+json"},
                  json={"properties": {"n": 23, "name": None}})
    assert r.status_code == 204, r.text
    body = api.get(path_of(loc), headers=admin).json()
    assert body["properties"] == {"n": 23} and body["geometry"]["coordinates"] == pytest.approx([108.43, 31.23])
    assert api.get(f"/ogc/collections/{editable}/items", params={"filter": "n = 23"}, headers=admin).json()["numberMatched"] == 1

    r = api.delete(path_of(loc), headers=admin)
    assert r.status_code == 204
    assert api.get(path_of(loc), headers=admin).status_code == 404
    assert api.delete(path_of(loc), headers=admin).status_code == 404

    hist = versions(api, admin, editable)
    assert [v["action"] for v in hist[:4]] == ["edit"] * 4 and hist[0]["version"] == hist[4]["version"] + 4
    assert hist[0]["feature_count"] == 1 and hist[0]["actor"] == "admin"
    assert audit_actions(api, editable) == ["ogc.feature.create", "ogc.feature.replace", "ogc.feature.update",
                                            "ogc.feature.delete"]
    # Edits are layer versions: rolling back to the import version restores the original single feature.
    r = api.post(f"/api/layers/{editable}/rollback", headers=admin, json={"version": hist[4]["version"]})
    assert r.status_code == 200, r.text
    after = api.get(f"/ogc/collections/{editable}/items", headers=admin).json()
    assert [f["properties"]["name"] for f in after["features"]] == ["一"]
    r = api.post(f"/api/layers/{editable}/rollback", headers=admin, json={"version": hist[1]["version"]})
    assert r.status_code == 200
    restored = api.get(f"/ogc/collections/{editable}/items", params={"filter": "n = 23"}, headers=admin).json()
    assert restored["numberMatched"] == 1


def _unchanged(api, admin, key, request_fn):
    counts, rows, ver = table_counts(api.store), feature_rows(api, key), versions(api, admin, key)[0]["version"]
    r = request_fn()
    assert table_counts(api.store) == counts and feature_rows(api, key) == rows
    assert versions(api, admin, key)[0]["version"] == ver
    return r


@pytest.mark.parametrize("body,needle", [
    ({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[108.4, 31.2], [108.5, 31.2], [108.5, 31.3], [108.4, 31.2]]]}}, "Polygon"),
    ({"type": "Feature", "properties": {}, "geometry": {"type": "MultiPoint", "coordinates": [[108.4, 31.2], [108.5, 31.2]]}}, "MultiPoint"),
    ({"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [1]}}, "geometry"),
    ({"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [500, 31]}}, "range"),
    ({"type": "Feature", "properties": {"n": "x"}, "geometry": {"type": "Point", "coordinates": [108.4, 31.2]}}, "n must be integer"),
    ({"type": "FeatureCollection", "features": []}, "FeatureCollection"),
    ({"type": "Feature", "properties": [1], "geometry": None}, "properties"),
    ({"type": "Feature", "properties": {"n": 1}}, "no 'geometry' member"),
    ([1, 2], "Feature"),
])
def test_bad_bodies_are_400_and_change_nothing(api, admin, editable, body, needle):
    r = _unchanged(api, admin, editable, lambda: api.post(f"/ogc/collections/{editable}/items", headers=admin, json=body))
    assert r.status_code == 400, r.text
    assert needle in r.json()["description"]


def test_bad_content_crs_and_json(api, admin, editable):
    url = f"/ogc/collections/{editable}/items"
    feat = {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [108.4, 31.2]}}
    r = _unchanged(api, admin, editable, lambda: api.post(url, headers={**admin, "Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/2000>"}, json=feat))
    assert r.status_code == 400 and "Content-Crs" in r.json()["description"]
    # lon/lat numbers sent as EPSG:3857 metres land near (0, 0), outside any plausible place → refused? They are
    # valid metres; what must not happen is a silent swap. Sent as 4490 (lat first) they are out of range.
    r = _unchanged(api, admin, editable, lambda: api.post(url, headers={**admin, "Content-Crs": f"<{EPSG.format(4490)}>"},
                                                          json={**feat, "geometry": {"type": "Point", "coordinates": [108.4, 31.2]}}))
    assert r.status_code == 400 and "latitude comes first" in r.json()["description"]
    r = _unchanged(api, admin, editable, lambda: api.post(url, headers={**admin, "Content-Type": "application/geo+json"}, content=b"{not json"))
    assert r.status_code == 400 and "JSON" in r.json()["description"]
    r = _unchanged(api, admin, editable, lambda: api.post(url, headers={**admin, "Content-Type": "text/plain"}, content=b"{}"))
    assert r.status_code == 400


def test_oversized_bodies_are_refused(api, admin, editable):
    from cityops.ogc.edit import MAX_VERTICES
    from cityops.ogc.routes import MAX_FEATURE_BYTES

    url = f"/ogc/collections/{editable}/items"
    pad = {"type": "Feature", "properties": {"note": "x" * (MAX_FEATURE_BYTES + 10)},
           "geometry": {"type": "Point", "coordinates": [108.4, 31.2]}}
    r = _unchanged(api, admin, editable, lambda: api.post(url, headers=admin, json=pad))
    assert r.status_code == 413 and str(MAX_FEATURE_BYTES) in r.json()["description"]
    ring = [[108.4 + 0.01 * math.cos(t), 31.2 + 0.01 * math.sin(t)] for t in
            (2 * math.pi * i / (MAX_VERTICES + 10) for i in range(MAX_VERTICES + 10))]
    many = {"type": "Feature", "properties": {}, "geometry": {"type": "MultiPoint", "coordinates": ring}}
    r = _unchanged(api, admin, editable, lambda: api.post(url, headers=admin, json=many))
    assert r.status_code == 400 and "vertices" in r.json()["description"]


def test_read_only_layer_is_405_with_allow(api, admin, grid_layer):
    url = f"/ogc/collections/{grid_layer}/items"
    feat = {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [108.4, 31.2]}}
    r = _unchanged(api, admin, grid_layer, lambda: api.post(url, headers=admin, json=feat))
    assert r.status_code == 405 and "POST" not in r.headers["allow"] and "GET" in r.headers["allow"]
    first = api.get(url, params={"limit": 1}, headers=admin).json()["features"][0]["id"]
    for call in (lambda: api.put(f"{url}/{first}", headers=admin, json=feat),
                 lambda: api.patch(f"{url}/{first}", headers=admin, json={"properties": {"n": 1}}),
                 lambda: api.delete(f"{url}/{first}", headers=admin)):
        r = _unchanged(api, admin, grid_layer, call)
        assert r.status_code == 405 and "DELETE" not in r.headers["allow"]
    opts = api.options(url, headers=admin)
    assert opts.status_code == 204 and "POST" not in opts.headers["allow"]


def test_options_reflect_permissions(api, admin, editable):
    url = f"/ogc/collections/{editable}/items"
    assert set(api.options(url, headers=admin).headers["allow"].split(", ")) >= {"GET", "POST"}
    item = set(api.options(f"{url}/unknown_id", headers=admin).headers["allow"].split(", "))
    assert {"PUT", "PATCH", "DELETE"} <= item
    leader = api.login("leader")  # reads layers, may not edit
    assert "POST" not in api.options(url, headers=leader).headers["allow"]
    assert "PUT" not in api.options(f"{url}/unknown_id", headers=leader).headers["allow"]
    feat = {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [108.4, 31.2]}}
    r = _unchanged(api, admin, editable, lambda: api.post(url, headers=leader, json=feat))
    assert r.status_code == 403
    assert api.post(url, json=feat).status_code == 401
    assert api.options(url).status_code == 401


# --- scope: layer unit and feature location ---------------------------------------------------------


@pytest.fixture(scope="module")
def townships(api, admin):
    units = api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]
    out = {}
    for u in units:
        if u["name"] in ("义和镇", "大德镇"):
            geom = shape(api.get(f"/api/units/{u['code']}", params={"geometry": True}, headers=admin).json()["geometry"])
            out[u["name"]] = (u["code"], geom.representative_point())
    return out


@pytest.fixture(scope="module")
def yihe_editor(api, admin, townships):
    username = "ogce_" + uuid.uuid4().hex[:8]
    r = api.post("/api/users", headers=admin, json={"username": username, "password": "ogc-edit-pass",
                                                     "role": "township_operator", "scope_units": [townships["义和镇"][0]]})
    assert r.status_code == 201, r.text
    return api.login(username, "ogc-edit-pass")


def test_edit_scope_by_layer_unit_and_feature_location(api, admin, townships, yihe_editor):
    yihe_pt, dade_pt = townships["义和镇"][1], townships["大德镇"][1]
    district = make_layer(api, admin, [
        {"type": "Feature", "properties": {"name": "义和"}, "geometry": mapping(yihe_pt)},
        {"type": "Feature", "properties": {"name": "大德"}, "geometry": mapping(dade_pt)}], editable=True)
    dade_layer = make_layer(api, admin, [{"type": "Feature", "properties": {"name": "大德"}, "geometry": mapping(dade_pt)}],
                            editable=True, unit_code=townships["大德镇"][0])
    url = f"/ogc/collections/{district}/items"
    feats = {f["properties"]["name"]: f["id"] for f in api.get(url, headers=admin).json()["features"]}
    # A district layer: features located in 义和镇 may be edited by its operator, those in 大德镇 may not.
    r = api.patch(f"{url}/{feats['义和']}", headers=yihe_editor, json={"properties": {"n": 1}})
    assert r.status_code == 204, r.text
    for call in (lambda: api.patch(f"{url}/{feats['大德']}", headers=yihe_editor, json={"properties": {"n": 1}}),
                 lambda: api.delete(f"{url}/{feats['大德']}", headers=yihe_editor),
                 lambda: api.post(url, headers=yihe_editor, json={"type": "Feature", "properties": {},
                                                                 "geometry": mapping(dade_pt)}),
                 # moving a 义和镇 feature into 大德镇 is an edit in 大德镇 too
                 lambda: api.patch(f"{url}/{feats['义和']}", headers=yihe_editor, json={"geometry": mapping(dade_pt)})):
        r = _unchanged(api, admin, district, call)
        assert r.status_code == 403, r.text
    # A 大德镇 layer is an unknown collection to the 义和镇 operator, for every method.
    durl = f"/ogc/collections/{dade_layer}/items"
    fid = api.get(durl, headers=admin).json()["features"][0]["id"]
    for call in (lambda: api.get(durl, headers=yihe_editor), lambda: api.options(durl, headers=yihe_editor),
                 lambda: api.post(durl, headers=yihe_editor, json={"type": "Feature", "properties": {}, "geometry": mapping(dade_pt)}),
                 lambda: api.put(f"{durl}/{fid}", headers=yihe_editor, json={"type": "Feature", "properties": {}, "geometry": mapping(dade_pt)}),
                 lambda: api.delete(f"{durl}/{fid}", headers=yihe_editor),
                 lambda: api.get(f"/ogc/collections/{dade_layer}/queryables", headers=yihe_editor)):
        r = _unchanged(api, admin, dade_layer, call)
        assert r.status_code == 404, r.text


# --- independent clients against a live server (SQLite; see test_ogc_features) ----------------------


@pytest.fixture(scope="module")
def live_logged(api, tmp_path_factory):
    if api.store.backend != "sqlite":
        pytest.skip("live-server client tests run on the SQLite backend only")
    settings = api.store.settings
    port = free_port()
    log = tmp_path_factory.mktemp("ogc-live") / "access.log"
    serve = SERVE.replace('log_level="warning"', 'log_level="info", access_log=True')
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", serve, str(settings.data_dir), settings.secret_key, str(port)],
                                cwd=Path(__file__).resolve().parents[1], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(proc, port)
        yield f"http://127.0.0.1:{port}/ogc", log
    finally:
        proc.terminate()
        proc.wait(10)


def _requests(log: Path) -> list[str]:
    from urllib.parse import unquote_plus

    return [unquote_plus(line) for line in log.read_text(errors="replace").splitlines() if '"GET /ogc' in line]


def test_gdal_pushes_filters_to_the_server(admin, live_logged, grid_layer):
    """GDAL's OAPIF driver sends the spatial filter as bbox and ``where`` as a CQL text filter (it finds cql-text
    among the filter-lang values of the OpenAPI document). The access log shows what reached the server; the
    answers must be exact either way."""
    base, log = live_logged
    token = admin["Authorization"].removeprefix("Bearer ")
    pyogrio.set_gdal_config_options({"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": token})
    try:
        source = f"OAPIF:{base}"
        meta, _, geometry, fields = pyogrio.raw.read(source, layer=grid_layer, where="n > 20 AND kind = 'a'")
        names = {str(v) for v in fields[meta["fields"].tolist().index("name")]}
        assert names == {attrs(i)["name"] for i in where(lambda p, g: p["n"] > 20 and p["kind"] == "a")}
        items = f"/collections/{grid_layer}/items"
        assert any(items in r and "kind = 'a'" in r and "filter-lang=cql-text" in r for r in _requests(log)), _requests(log)
        box = (108.415, 31.205, 108.435, 31.225)
        meta, _, geometry, fields = pyogrio.raw.read(source, layer=grid_layer, bbox=box, where="kind = 'b'")
        got = {str(v) for v in fields[meta["fields"].tolist().index("name")]}
        assert got == {attrs(i)["name"] for i in where(lambda p, g: p["kind"] == "b" and shapely.box(*box).intersects(g))}
        assert any(items in r and "bbox=" in r and "kind = 'b'" in r for r in _requests(log)), _requests(log)
    finally:
        pyogrio.set_gdal_config_options({"GDAL_HTTP_AUTH": None, "GDAL_HTTP_BEARER": None})


def test_owslib_filter_bbox_crs(request, admin, live_logged, grid_layer):
    from owslib import ogcapi
    from owslib.ogcapi.features import Features

    base, log = live_logged
    request.addfinalizer(lambda: ogcapi.REQUEST_HEADERS.pop("Authorization", None))
    client = Features(base, headers=dict(admin))
    got = client.collection_items(grid_layer, limit=100, filter="kind = 'a' AND n >= 10")
    assert ns(got) == where(lambda p, g: p["kind"] == "a" and isinstance(p["n"], int) and p["n"] >= 10)
    box = [108.415, 31.205, 108.435, 31.225]
    got = client.collection_items(grid_layer, limit=100, bbox=box, filter="flag = false",
                                  crs=EPSG.format(4326))
    assert ns(got) == where(lambda p, g: not p["flag"] and shapely.box(*box).intersects(g))
    lat, lon = got["features"][0]["geometry"]["coordinates"]
    assert 31 < lat < 32 and 108 < lon < 109
    q = client.queryables(grid_layer) if hasattr(client, "queryables") else None
    if q is not None:
        assert "n" in q["properties"]
    assert any("filter=flag = false" in r for r in _requests(log))


def test_gdal_sends_its_cql_text_and_gets_exact_answers(admin, live_logged, grid_layer):
    """GDAL finds cql-text among the filter-lang values of the API definition and then sends the whole ``where``
    as a CQL filter (filter-lang=cql-text, its pre-standard name): comparisons, ranges and LIKE are answered by
    the server, exactly as GDAL itself would evaluate them."""
    base, log = live_logged
    token = admin["Authorization"].removeprefix("Bearer ")
    pyogrio.set_gdal_config_options({"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": token})
    try:
        source = f"OAPIF:{base}"
        cases = [("n > 20", lambda p: p["n"] > 20),
                 ("n >= 5 AND n < 9 OR kind = 'b' AND depth > 40", lambda p: 5 <= p["n"] < 9 or (p["kind"] == "b" and (p["depth"] or 0) > 40)),
                 ("name LIKE 'Site%'", lambda p: p["name"].startswith("Site"))]
        for flt, pred in cases:
            before = len(_requests(log))
            meta, _, _, fields = pyogrio.raw.read(source, layer=grid_layer, where=flt)
            names = {str(v) for v in fields[meta["fields"].tolist().index("name")]}
            assert names == {attrs(i)["name"] for i in where(lambda p, g: pred(p))}, flt
            sent = [r for r in _requests(log)[before:] if f"/collections/{grid_layer}/items" in r]
            assert any("filter-lang=cql-text" in r for r in sent), sent
            assert all(" 200" in r for r in sent), sent
    finally:
        pyogrio.set_gdal_config_options({"GDAL_HTTP_AUTH": None, "GDAL_HTTP_BEARER": None})


def test_bbox_pages_follow_edits_of_imported_features(api, admin, editable):
    """A bbox page joins the Feature texts written with the imported rows (SQLite); an edit, a delete and a
    rollback must never leave an old text behind."""
    items = f"/ogc/collections/{editable}/items"
    box = {"bbox": "108.3,31.1,108.5,31.3", "limit": 10}

    def page() -> list[tuple]:
        body = api.get(items, params=box, headers=admin).json()
        return [(f["properties"], f["geometry"]["coordinates"]) for f in body["features"]]

    assert page() == [({"name": "一", "n": 1}, [108.41, 31.21])]
    first = api.get(items, headers=admin).json()["features"][0]
    here = f"{items}/{first['id']}"
    r = api.put(here, headers={**admin, "Content-Type": "application/geo+json"},
                json={"type": "Feature", "properties": {"name": "一改", "n": 11},
                      "geometry": {"type": "Point", "coordinates": [108.42, 31.22]}})
    assert r.status_code == 204, r.text
    assert page() == [({"name": "一改", "n": 11}, [108.42, 31.22])]
    r = api.patch(here, headers={**admin, "Content-Type": "application/merge-patch+json"}, json={"properties": {"n": 12}})
    assert r.status_code == 204, r.text
    assert page() == [({"name": "一改", "n": 12}, [108.42, 31.22])]
    imported = versions(api, admin, editable)[-1]["version"]
    assert api.delete(here, headers=admin).status_code == 204
    assert page() == []
    assert api.post(f"/api/layers/{editable}/rollback", headers=admin, json={"version": imported}).status_code == 200
    assert page() == [({"name": "一", "n": 1}, [108.41, 31.21])]

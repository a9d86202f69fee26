"""Scope of OGC API – Features Part 4 edits (run from tests/test_api_scope.py): on a layer outside its scope the
义和镇 outsider edits only features that lie *wholly* in 义和镇 — every point of a MultiPoint, all of a polygon."""

from __future__ import annotations

import json

import shapely
from shapely.geometry import mapping, shape
from shapely.ops import nearest_points

from tests.conftest import table_counts


def scope_cases(api, world) -> dict:
    return {}  # /ogc is not under /api: its scope is tested below and in tests/test_ogc_filter_edit.py


def _layer(api, admin, key: str, geometry_type: str, geometry) -> str:
    r = api.post("/api/layers", headers=admin, json={"key": key, "title_zh": "区级可编辑图层", "category": "0701",
                                                      "geometry_type": geometry_type, "editable": True, "unit_code": "500154"})
    assert r.status_code == 201, r.text
    content = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "义和"}, "geometry": mapping(geometry)}]}).encode()
    r = api.post(f"/api/layers/{key}/import", headers=admin, files={"file": ("f.geojson", content)})
    assert r.status_code == 200, r.text
    return f"/ogc/collections/{key}/items"


def test_ogc_edit_needs_the_whole_geometry_in_scope(api, world):
    admin, outsider = api.login("admin"), world["headers"]
    units = {}
    for name, code in (("yihe", world["yihe"]), ("dade", world["dade"])):
        grid = api.get("/api/units", params={"root": code, "level": "grid", "limit": 1}, headers=admin).json()["items"][0]
        units[name] = shape(api.get(f"/api/units/{grid['code']}", params={"geometry": True}, headers=admin).json()["geometry"])
    yihe_town = shape(api.get(f"/api/units/{world['yihe']}", params={"geometry": True}, headers=admin).json()["geometry"])
    inside, outside = units["yihe"].representative_point(), units["dade"].representative_point()
    near = shapely.Point(inside.x + 1e-5, inside.y)
    assert units["yihe"].contains(near)
    # A polygon across 义和镇's boundary (on the side of 大德镇), mostly inside: its representative point (what
    # the edit used to check) is in 义和镇, a bulge of it is not.
    edge = nearest_points(yihe_town.boundary, outside)[0]
    straddling = shapely.union_all([yihe_town.intersection(edge.buffer(0.02)), edge.buffer(0.002)])
    assert straddling.geom_type == "Polygon" and straddling.is_valid
    assert yihe_town.contains(straddling.representative_point()) and not yihe_town.covers(straddling)

    points_url = _layer(api, admin, "district_multipoints", "MULTIPOINT", shapely.MultiPoint([inside, near]))
    polygons_url = _layer(api, admin, "district_polygons", "POLYGON", units["yihe"])
    mine = {url: api.get(url, headers=admin).json()["features"][0]["id"] for url in (points_url, polygons_url)}
    refused = [
        # MultiPoint: the first point in 义和镇, the second in 大德镇.
        ("post", points_url, {"type": "Feature", "properties": {}, "geometry": mapping(shapely.MultiPoint([inside, outside]))}),
        ("put", f"{points_url}/{mine[points_url]}",
         {"type": "Feature", "properties": {}, "geometry": mapping(shapely.MultiPoint([inside, outside]))}),
        ("patch", f"{points_url}/{mine[points_url]}", {"geometry": mapping(shapely.MultiPoint([near, outside]))}),
        # A polygon partly in another township.
        ("post", polygons_url, {"type": "Feature", "properties": {}, "geometry": mapping(straddling)}),
        ("patch", f"{polygons_url}/{mine[polygons_url]}", {"geometry": mapping(straddling)}),
    ]
    before = table_counts(api.store)
    for method, url, body in refused:
        r = getattr(api, method)(url, json=body, headers=outsider)
        assert r.status_code == 403, f"{method.upper()} {url}: {r.status_code} {r.text}"
        assert "大德镇" not in r.text
    assert table_counts(api.store) == before, "a refused edit changed the database"
    # Wholly inside 义和镇: accepted, including a polygon along the grid's own boundary.
    r = api.post(points_url, json={"type": "Feature", "properties": {}, "geometry": mapping(shapely.MultiPoint([inside, near]))},
                 headers=outsider)
    assert r.status_code == 201, r.text
    r = api.patch(f"{polygons_url}/{mine[polygons_url]}", json={"properties": {"checked": True}}, headers=outsider)
    assert r.status_code == 204, r.text

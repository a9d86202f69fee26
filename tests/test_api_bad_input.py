"""Bad input on every entry point: a clear error naming what is wrong, a 4xx code, and nothing changed.
Imports are all-or-nothing. Runs on both backends."""

from __future__ import annotations

import json

import pytest
import shapely
from shapely.geometry import Polygon, mapping, shape

from tests.conftest import table_counts


@pytest.fixture(scope="module")
def admin(api):
    return api.login("admin")


@pytest.fixture(scope="module")
def grid(api, admin):
    item = api.get("/api/units", params={"level": "grid", "limit": 1, "offset": 5}, headers=admin).json()["items"][0]
    return api.get(f"/api/units/{item['code']}", params={"geometry": True}, headers=admin).json()


def feature_collection(*features) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": list(features)}, ensure_ascii=False).encode()


def feature(code, name, parent, geometry) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": {"code": code, "name": name, "parent_code": parent}}


def bowtie_near(geom) -> dict:
    x, y = shape(geom).representative_point().coords[0]
    d = 0.001
    return mapping(Polygon([(x, y), (x + d, y + d), (x + d, y), (x, y + d), (x, y)]))


def assert_rejected(api, response, status: int, *needles: str):
    assert response.status_code == status, response.text
    body = response.json()
    text = json.dumps(body, ensure_ascii=False)
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text[:400]}"
    assert body["message"], "errors must say what is wrong"


def import_file(api, headers, name: str, content: bytes, **form):
    return api.post("/api/units/import", headers=headers, files={"file": (name, content)},
                    data={k: str(v).lower() if isinstance(v, bool) else v for k, v in form.items()})


def test_import_rejections_change_nothing(api, admin, grid):
    before = table_counts(api.store)
    renamed = feature(grid["code"], "改名网格", grid["parent_code"], grid["geometry"])
    cases = [
        (("units.geojson", b"{not json"), {}, 422, ["units.geojson"]),
        (("units.geojson", b""), {}, 422, []),
        (("units.txt", b"code,name\n1,2\n"), {}, 422, [".txt"]),
        (("units.geojson", feature_collection(renamed)), {}, 422, ["already_exists", grid["code"]]),
        (("units.geojson", feature_collection(renamed, renamed)), {"replace": True}, 422, ["duplicate_code"]),
        (("units.geojson", feature_collection(feature(grid["parent_code"] + "098", "坏网格", grid["parent_code"],
                                                      bowtie_near(grid["geometry"])))), {}, 422,
         ["invalid_geometry", "Self-intersection"]),
        (("units.geojson", feature_collection(renamed)), {"crs": "EPSG:999999", "replace": True}, 422, ["EPSG:999999"]),
        # All-or-nothing: a valid replacement next to a bad record is not applied either.
        (("units.geojson", feature_collection(renamed, feature("50015400100X", "坏代码", grid["parent_code"], grid["geometry"])
                                              )), {"replace": True}, 422, ["50015400100X"]),
    ]
    for (name, content), form, status, needles in cases:
        r = import_file(api, admin, name, content, **form)
        assert_rejected(api, r, status, *needles)
    assert table_counts(api.store) == before
    assert api.get(f"/api/units/{grid['code']}", headers=admin).json()["name"] == grid["name"]


def test_unclosed_ring_and_outside_parent_are_reported(api, admin, grid):
    before = table_counts(api.store)
    ring = shape(grid["geometry"]).geoms[0].exterior.coords[:-1]
    unclosed = {"type": "Polygon", "coordinates": [[list(c) for c in ring]]}
    r = import_file(api, admin, "open.geojson", feature_collection(feature(grid["code"], "x", grid["parent_code"], unclosed)),
                    replace=True)
    assert_rejected(api, r, 422, "unclosed_ring")
    moved = mapping(shapely.affinity.translate(shape(grid["geometry"]), 0.2, 0))
    r = import_file(api, admin, "far.geojson", feature_collection(feature(grid["code"], "x", grid["parent_code"], moved)),
                    replace=True)
    assert_rejected(api, r, 422, "outside_parent", grid["parent_code"])
    assert r.json()["details"]["errors"] >= 1 and r.json()["details"]["issues"]
    assert table_counts(api.store) == before


def test_dry_run_and_replace_import(api, admin, grid):
    renamed = feature(grid["code"], "改名网格", grid["parent_code"], grid["geometry"])
    before = table_counts(api.store)
    r = import_file(api, admin, "u.geojson", feature_collection(renamed), replace=True, dry_run=True)
    assert r.status_code == 200 and r.json()["dry_run"] and r.json()["report"]["ok"]
    assert table_counts(api.store) == before
    r = import_file(api, admin, "u.geojson", feature_collection(renamed), replace=True)
    assert r.status_code == 200, r.text
    assert api.get(f"/api/units/{grid['code']}", headers=admin).json()["name"] == "改名网格"
    entry = api.get("/api/audit", params={"entity_key": grid["code"]}, headers=admin).json()[0]
    assert entry["action"] == "unit.replace" and entry["before"]["name"] == grid["name"] and entry["after"]["name"] == "改名网格"
    # put it back for the other tests
    back = feature(grid["code"], grid["name"], grid["parent_code"], grid["geometry"])
    assert import_file(api, admin, "u.geojson", feature_collection(back), replace=True).status_code == 200


def test_unit_writes_reject_bad_input(api, admin, grid):
    before = table_counts(api.store)
    parent = grid["parent_code"]
    new = {"code": parent + "097", "name": "新网格", "parent_code": parent, "geometry": grid["geometry"]}
    cases = [
        ("post", "/api/units", {**new, "geometry": bowtie_near(grid["geometry"])}, 422, ["Self-intersection"]),
        ("post", "/api/units", {**new, "geometry": {"type": "Polygon", "coordinates": "nope"}}, 422, ["GeoJSON"]),
        ("post", "/api/units", {**new, "crs": "EPSG:4978"}, 422, ["EPSG:4978"]),
        ("post", "/api/units", {**new, "crs": "NOT-A-CRS"}, 422, ["NOT-A-CRS"]),
        ("post", "/api/units", {**new, "code": "999999001001097"}, 422, ["prefix"]),
        ("post", "/api/units", {**new, "level": "galaxy"}, 422, ["galaxy"]),
        ("post", "/api/units", {**new}, 422, ["sibling_overlap"]),  # the same polygon as an existing grid
        ("post", "/api/units", {**new, "code": grid["code"]}, 422, ["already_exists"]),
        ("patch", f"/api/units/{grid['code']}", {"geometry": bowtie_near(grid["geometry"])}, 422, ["Self-intersection"]),
        ("patch", f"/api/units/{grid['code']}", {"name": "   "}, 422, ["name"]),
        ("delete", f"/api/units/{parent}", None, 409, ["child"]),
        ("get", "/api/units/does-not-exist", None, 404, ["does-not-exist"]),
        ("get", "/api/units?bbox=1,2,3", None, 422, ["bbox"]),
        ("get", "/api/units?limit=100000", None, 422, ["limit"]),
        ("get", "/api/units/export?format=kml", None, 422, ["kml"]),
        ("get", "/api/units/export?crs=EPSG:999999", None, 422, ["EPSG:999999"]),
        ("post", "/api/locate/batch", {"points": [[1, 2, 3]]}, 422, ["points"]),
        ("post", "/api/locate/batch", {"points": [[108.4, 95.0]]}, 422, ["95"]),
        ("get", "/api/locate?lon=abc&lat=1", None, 422, ["lon"]),
        ("post", "/api/people", {"name": "张三", "post": "astronaut", "unit_code": grid["code"]}, 422, ["astronaut"]),
        ("post", "/api/people", {"name": "张三", "post": "grid_worker", "unit_code": "000000"}, 422, ["000000"]),
        ("post", "/api/people", {"name": "张三", "post": "grid_worker", "unit_code": grid["code"], "phone": "call me"}, 422, ["phone"]),
        ("post", "/api/people", {"name": "张三", "post": "grid_worker", "unit_code": grid["code"], "units": ["nope"]}, 422, ["nope"]),
        ("post", "/api/departments", {"code": "cgj", "name": "重复", "unit_code": "500154"}, 409, ["cgj"]),
        ("post", "/api/departments", {"code": "new1", "name": "新部门", "unit_code": "500154", "matter_classes": ["xyz"]}, 422, ["xyz"]),
        ("post", "/api/departments", {"code": "bad code!", "name": "x", "unit_code": "500154"}, 422, ["code"]),
        ("post", "/api/users", {"username": "u1", "password": "longenough", "role": "grid_worker", "scope_units": ["42"]}, 422, ["42"]),
        ("post", "/api/users", {"username": "u1", "password": "longenough", "role": "wizard", "scope_units": ["500154"]}, 422, ["wizard"]),
        ("post", "/api/users", {"username": "u1", "password": "short", "role": "grid_worker", "scope_units": ["500154"]}, 422, ["password"]),
    ]
    for method, url, body, status, needles in cases:
        r = api.request(method.upper(), url, headers=admin, json=body)
        try:
            assert_rejected(api, r, status, *needles)
        except AssertionError as exc:
            raise AssertionError(f"{method.upper()} {url}: {exc}") from None
    assert table_counts(api.store) == before


def test_valid_unit_create_and_delete_round_trip(api, admin, grid):
    """The happy path of the same entry points, so the rejections above are not vacuous."""
    village = api.get(f"/api/units/{grid['parent_code']}", params={"geometry": True}, headers=admin).json()
    children = api.get("/api/units", params={"parent": village["code"], "limit": 1000}, headers=admin).json()["items"]
    target = children[-1]["code"]
    target_geom = api.get(f"/api/units/{target}", params={"geometry": True}, headers=admin).json()["geometry"]
    # Split the last grid in two: shrink it to its west half and add the east half as a new grid.
    poly = shape(target_geom)
    minx, miny, maxx, maxy = poly.bounds
    mid = (minx + maxx) / 2
    west, east = poly.intersection(shapely.box(minx - 1, miny - 1, mid, maxy + 1)), poly.intersection(shapely.box(mid, miny - 1, maxx + 1, maxy + 1))
    r = api.patch(f"/api/units/{target}", json={"geometry": mapping(west)}, headers=admin)
    assert r.status_code == 200, r.text
    new_code = village["code"] + "090"
    r = api.post("/api/units", json={"code": new_code, "name": "东半网格", "parent_code": village["code"],
                                     "geometry": mapping(east)}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["level"] == "grid" and r.json()["path"].endswith(f"/{new_code}/")
    x, y = east.representative_point().coords[0]
    assert api.get("/api/locate", params={"lon": x, "lat": y}, headers=admin).json()["grid"]["code"] == new_code
    assert api.delete(f"/api/units/{new_code}", headers=admin).status_code == 204
    assert api.patch(f"/api/units/{target}", json={"geometry": target_geom}, headers=admin).status_code == 200
    x, y = east.representative_point().coords[0]
    assert api.get("/api/locate", params={"lon": x, "lat": y}, headers=admin).json()["grid"]["code"] == target

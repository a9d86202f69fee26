"""Scope on every endpoint: a principal scoped to 义和镇 never sees or changes 大德镇's records.

The table below must name every /api route (a test checks it), so a new route cannot ship untested.
Each capability adds its own rows in a ``tests/scope_<capability>.py`` module exposing
``scope_cases(api, world) -> {(method, path): [case, …]}``; it may create foreign (大德镇) records as
admin there, before the "nothing changed" count is taken. A scope module may also define ``test_*``
functions (privilege rules of its capability): they run from this module, on its demo store and ``world``,
after the tests above.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
from pathlib import Path

import pytest
from shapely.geometry import mapping, shape

from tests.conftest import table_counts

PUBLIC = {("POST", "/api/auth/login"), ("GET", "/api/health"), ("GET", "/api/ready"), ("GET", "/api/i18n/{language}")}
SELF_ONLY = {("GET", "/api/auth/me"), ("POST", "/api/auth/logout"), ("GET", "/api/roles")}


def api_routes(app) -> set[tuple[str, str]]:
    """Every documented /api operation, from the app's own OpenAPI document."""
    routes = {(method.upper(), path) for path, item in app.openapi()["paths"].items() if path.startswith("/api")
              for method in item}
    assert len(routes) > 20, "the OpenAPI document lists too few operations"
    return routes


def test_every_api_route_requires_credentials(api):
    for method, path in api_routes(api.app):
        if (method, path) in PUBLIC:
            continue
        url = path.replace("{code}", "500154").replace("{person_id}", "1").replace("{username}", "admin")
        r = api.request(method, url)
        assert r.status_code == 401, f"{method} {path} answered {r.status_code} without credentials"
        assert r.json()["error"] == "unauthenticated"


@pytest.fixture(scope="module")
def world(api):
    """Codes of both townships and an outsider with every write permission but only 义和镇 in scope."""
    admin = api.login("admin")
    townships = {u["name"]: u for u in api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]}
    yihe, dade = townships["义和镇"]["code"], townships["大德镇"]["code"]
    dade_grid = api.get("/api/units", params={"root": dade, "level": "grid", "limit": 1}, headers=admin).json()["items"][0]
    dade_grid = api.get(f"/api/units/{dade_grid['code']}", params={"geometry": True}, headers=admin).json()
    dade_village = dade_grid["parent_code"]
    # The township's and its villages' names (grid names contain their village's), and the codes of its
    # villages and grids: no refusal may name them, nor a code the caller did not send itself.
    dade_units = [u for level in ("village", "grid") for u in
                  api.get("/api/units", params={"root": dade, "level": level, "limit": 1000}, headers=admin).json()["items"]]
    dade_names = ["大德镇", *(u["name"] for u in dade_units if u["level"] == "village")]
    dade_codes = [u["code"] for u in dade_units]
    dade_person = api.get("/api/people", params={"unit": dade, "limit": 1}, headers=admin).json()["items"][0]
    yihe_person = api.get("/api/people", params={"unit": yihe, "limit": 1}, headers=admin).json()["items"][0]
    r = api.post("/api/departments", headers=admin, json={"code": "dade_ajb", "name": "大德镇安监办", "unit_code": dade})
    assert r.status_code == 201, r.text
    for key, unit in (("dade_layer", dade), ("district_layer", "500154")):
        r = api.post("/api/layers", headers=admin, json={"key": key, "title_zh": "大德镇图层" if unit == dade else "区图层", "category": "0701",
                                                         "geometry_type": "POINT", "unit_code": unit})
        assert r.status_code == 201, r.text
    r = api.post("/api/users", headers=admin, json={"username": "yihe_ops", "password": "yihe-ops-pass", "role": "district_operator",
                                                     "scope_units": [yihe]})
    assert r.status_code == 201, r.text
    dade_buildings = api.get("/api/buildings", params={"root": dade, "limit": 50}, headers=admin).json()["items"]
    dade_building = dade_buildings[0]["code"]
    dade_household = next(h["code"] for b in dade_buildings
                          for h in api.get(f"/api/buildings/{b['code']}", headers=admin).json()["households"])
    return {"yihe": yihe, "dade": dade, "dade_grid": dade_grid, "dade_village": dade_village, "dade_names": dade_names,
            "dade_codes": dade_codes,
            "dade_person": dade_person["id"], "yihe_person": yihe_person["id"], "headers": api.login("yihe_ops", "yihe-ops-pass"),
            "dade_building": dade_building, "dade_household": dade_household}


def _geojson_file(grid: dict) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": grid["geometry"],
                      "properties": {"code": grid["code"], "name": "改名", "parent_code": grid["parent_code"]}}]}).encode()


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def _refused(r):
    """Refused without revealing anything: 403/404, or 422 for a reference the caller cannot see."""
    assert r.status_code in (403, 404, 422), f"expected 403/404/422, got {r.status_code}: {r.text}"
    assert "大德镇" not in r.text, f"the refusal names a foreign place: {r.text}"


def _in_scope(yihe: str):
    def check(r):
        assert r.status_code == 200, r.text
        body = r.json()
        items = body["items"] if isinstance(body, dict) and "items" in body else body
        items = items["features"] if isinstance(items, dict) and "features" in items else items
        for item in items:
            props = item.get("properties", item)
            text = json.dumps(props, ensure_ascii=False)
            path = props.get("path") or props.get("unit_path") or ""
            code = props.get("code") or props.get("unit_code") or props.get("entity_key") or ""
            assert "大德镇" not in text, f"foreign record leaked: {text[:200]}"
            if path:
                assert yihe in path or path.count("/") <= 3, f"foreign path leaked: {path}"
            # A camera's GB/T 28181 code starts with the county, not the unit (its unit_path is checked above).
            if isinstance(code, str) and code.isdigit() and len(code) >= 9 and props.get("entity") != "camera":
                assert code.startswith(yihe), f"foreign code leaked: {code}"
    return check


def cases(w):
    grid, dade, yihe = w["dade_grid"], w["dade"], w["yihe"]
    inside = _in_scope(yihe)
    point = shape(grid["geometry"]).representative_point()
    new_grid = {"code": w["dade_village"] + "099", "name": "新网格", "parent_code": w["dade_village"],
                "geometry": mapping(shape(grid["geometry"]))}
    return {
        ("GET", "/api/units"): [dict(params={"parent": dade}, check=inside), dict(params={"root": dade}, check=_denied),
                                dict(params={"level": "grid"}, check=inside)],
        ("POST", "/api/units"): [dict(json=new_grid, check=_denied)],
        ("GET", "/api/units/export"): [dict(params={"root": dade}, check=_denied),
                                       dict(params={"format": "geojson"}, check=lambda r: inside_export(r, yihe))],
        ("POST", "/api/units/import"): [dict(files={"file": ("dade.geojson", _geojson_file(grid))}, data={"replace": "true"}, check=_denied)],
        ("GET", "/api/units/{code}"): [dict(path={"code": grid["code"]}, check=_denied), dict(path={"code": dade}, check=_denied)],
        ("PATCH", "/api/units/{code}"): [dict(path={"code": grid["code"]}, json={"name": "x"}, check=_denied)],
        ("DELETE", "/api/units/{code}"): [dict(path={"code": grid["code"]}, check=_denied)],
        ("GET", "/api/map/units"): [dict(params={"level": "village"}, check=inside), dict(params={"level": "grid"}, check=inside)],
        ("GET", "/api/locate"): [dict(params={"lon": point.x, "lat": point.y}, check=_denied)],
        ("POST", "/api/locate/batch"): [dict(json={"points": [[point.x, point.y]]},
                                             check=lambda r: r.json()["results"] == [{"status": "outside_scope"}])],
        ("GET", "/api/departments"): [dict(check=inside)],
        ("POST", "/api/departments"): [dict(json={"code": "x1", "name": "x", "unit_code": dade}, check=_denied)],
        ("GET", "/api/departments/{code}"): [dict(path={"code": "dade_ajb"}, check=_denied)],
        ("PATCH", "/api/departments/{code}"): [dict(path={"code": "dade_ajb"}, json={"name": "y"}, check=_denied),
                                               dict(path={"code": "zjw"}, json={"name": "y"}, check=_denied)],
        ("DELETE", "/api/departments/{code}"): [dict(path={"code": "dade_ajb"}, check=_denied)],
        ("GET", "/api/people"): [dict(check=inside), dict(params={"unit": dade}, check=_denied)],
        ("POST", "/api/people"): [dict(json={"name": "某人", "post": "grid_worker", "unit_code": grid["code"]}, check=_denied),
                                  # Own unit, but another township's department (unseen: "unknown") or the district's.
                                  *[dict(json={"name": "某人", "post": "department_staff", "unit_code": yihe, "departments": [d]},
                                         check=_refused) for d in ("dade_ajb", "zjw")]],
        ("GET", "/api/people/{person_id}"): [dict(path={"person_id": w["dade_person"]}, check=_denied)],
        ("PATCH", "/api/people/{person_id}"): [dict(path={"person_id": w["dade_person"]}, json={"phone": "110"}, check=_denied),
                                               *[dict(path={"person_id": w["yihe_person"]}, json={"departments": [d]}, check=_refused)
                                                 for d in ("dade_ajb", "zjw")]],
        ("DELETE", "/api/people/{person_id}"): [dict(path={"person_id": w["dade_person"]}, check=_denied)],
        ("GET", "/api/places"): [dict(check=inside)],
        ("GET", "/api/audit"): [dict(check=inside)],
        ("GET", "/api/users"): [dict(check=lambda r: {u["username"] for u in r.json()} <= {"yihe", "taikang", "gridworker", "yihe_ops"})],
        ("POST", "/api/users"): [dict(json={"username": "spy", "password": "spy-password", "role": "grid_worker",
                                            "scope_units": [grid["code"]]}, check=_denied),
                                 dict(json={"username": "boss", "password": "boss-password", "role": "administrator"}, check=_denied)],
        ("PATCH", "/api/users/{username}"): [dict(path={"username": "district"}, json={"active": False}, check=_denied)],
        ("POST", "/api/users/{username}/api-keys"): [dict(path={"username": "district"}, json={"name": "k"}, check=_denied)],
        ("GET", "/api/layer-categories"): [dict(check=lambda r: r.status_code == 200 and len(r.json()) == 12)],
        ("GET", "/api/layers"): [dict(check=inside)],
        ("POST", "/api/layers"): [dict(json={"key": "spy_layer", "title_zh": "x", "category": "0701", "unit_code": dade},
                                       check=_denied)],
        ("GET", "/api/layers/{key}"): [dict(path={"key": "dade_layer"}, check=_denied)],
        ("PATCH", "/api/layers/{key}"): [dict(path={"key": "dade_layer"}, json={"title_zh": "y"}, check=_denied),
                                         dict(path={"key": "district_layer"}, json={"title_zh": "y"}, check=_denied)],
        ("DELETE", "/api/layers/{key}"): [dict(path={"key": "district_layer"}, check=_denied)],
        ("POST", "/api/layers/{key}/import"): [dict(path={"key": "district_layer"}, files={"file": ("p.geojson", _points())},
                                                    check=_denied)],
        ("GET", "/api/layers/{key}/versions"): [dict(path={"key": "dade_layer"}, check=_denied)],
        ("POST", "/api/layers/{key}/rollback"): [dict(path={"key": "district_layer"}, json={"version": 0}, check=_denied)],
        ("GET", "/api/layers/{key}/features"): [dict(path={"key": "dade_layer"}, check=_denied)],
        ("GET", "/api/layers/{key}/export"): [dict(path={"key": "dade_layer"}, check=_denied)],
        ("GET", "/api/buildings"): [dict(check=inside), dict(params={"root": dade}, check=_denied),
                                    dict(params={"bbox": ",".join(map(str, shape(grid["geometry"]).bounds))}, check=inside),
                                    dict(params={"q": "大德镇"}, check=inside), dict(params={"q": dade}, check=inside)],
        ("GET", "/api/buildings/{code}"): [dict(path={"code": w["dade_building"]}, check=_denied)],
        ("GET", "/api/households/{code}"): [dict(path={"code": w["dade_household"]}, check=_denied)],
        ("POST", "/api/threatened"): [dict(json={"geometry": grid["geometry"]}, check=_threat_outside(dade))],
    }


def _threat_outside(dade: str):
    def check(r):
        assert r.status_code == 200, r.text
        body = r.json()
        text = json.dumps(body, ensure_ascii=False)
        assert "大德镇" not in text and dade not in text, f"foreign record leaked: {text[:200]}"
        assert body["totals"]["buildings"] == 0 and not body["by_grid"] and not body["households"]
    return check


def _points() -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"n": 1}, "geometry": {"type": "Point", "coordinates": [108.4, 31.2]}}]}).encode()


def inside_export(r, yihe):
    assert r.status_code == 200, r.text
    codes = [f["properties"]["code"] for f in r.json()["features"]]
    assert codes and all(c.startswith(yihe) for c in codes)


@pytest.fixture(scope="module")
def table(api, world):
    """The whole scope table: the rows above plus every capability's ``tests/scope_*.py`` module."""
    rows = cases(world)
    for module_path in sorted(Path(__file__).parent.glob("scope_*.py")):
        module = importlib.import_module(f"tests.{module_path.stem}")
        extra = module.scope_cases(api, world)
        clash = set(extra) & set(rows)
        assert not clash, f"{module_path.name} repeats rows: {clash}"
        rows.update(extra)
    return rows


def test_scope_table_names_every_route(api, table):
    routes = api_routes(api.app) - PUBLIC - SELF_ONLY
    assert routes == set(table), f"untested routes: {routes - set(table)}"


def test_outsider_never_sees_or_changes_foreign_records(api, world, table):
    before = table_counts(api.store)
    for (method, path), variants in table.items():
        for case in variants:
            url = path.format(**case.get("path", {})) if case.get("path") else path
            r = api.request(method, url, headers=world["headers"], params=case.get("params"), json=case.get("json"),
                            files=case.get("files"), data=case.get("data"))
            try:
                case["check"](r)
                if r.status_code >= 400:
                    _names_nothing_foreign(r, world, url, case)
            except AssertionError as exc:
                raise AssertionError(f"{method} {url}: {exc}") from None
    assert table_counts(api.store) == before, "a denied request changed the database"


def _names_nothing_foreign(r, world, url: str, case: dict) -> None:
    named = [n for n in world["dade_names"] if n in r.text]
    assert not named, f"the refusal names places outside the caller's scope {named}: {r.text[:300]}"
    sent = url + json.dumps([case.get("params"), case.get("json"), case.get("data")], ensure_ascii=False)
    sent += "".join(f[1].decode("utf-8", "ignore") for f in (case.get("files") or {}).values())
    codes = [c for c in world["dade_codes"] if c in r.text and c not in sent]
    assert not codes, f"the refusal names unit codes outside the caller's scope {codes}: {r.text[:300]}"


@pytest.mark.parametrize("username", ["gridworker", "taikang", "leader"])
def test_read_only_roles_cannot_write(api, world, username):
    headers = api.login(username)
    me = api.get("/api/auth/me", headers=headers).json()
    own = me["scope_units"][0]
    before = table_counts(api.store)
    assert api.patch(f"/api/units/{own}", json={"name": "x"}, headers=headers).status_code == 403
    assert api.post("/api/people", json={"name": "a", "post": "grid_worker", "unit_code": own}, headers=headers).status_code == 403
    assert api.post("/api/users", json={"username": "z", "password": "zzzzzzzz", "role": "grid_worker", "scope_units": [own]},
                    headers=headers).status_code == 403
    assert table_counts(api.store) == before


def test_township_operator_works_inside_own_scope(api, world):
    headers = api.login("yihe")
    grids = api.get("/api/units", params={"level": "grid", "limit": 5}, headers=headers).json()["items"]
    assert grids and all(g["code"].startswith(world["yihe"]) for g in grids)
    r = api.patch(f"/api/units/{grids[0]['code']}", json={"name_en": "Grid one"}, headers=headers)
    assert r.status_code == 200 and r.json()["name_en"] == "Grid one"
    entries = api.get("/api/audit", params={"entity_key": grids[0]["code"]}, headers=headers).json()
    assert entries[0]["action"] == "unit.update" and entries[0]["actor"] == "yihe"
    assert entries[0]["before"]["name_en"] is None and entries[0]["after"]["name_en"] == "Grid one"
    # The district outline (an ancestor) is visible; another township is not.
    assert api.get("/api/units/500154", headers=headers).status_code == 200
    assert api.get(f"/api/units/{world['dade']}", headers=headers).status_code == 404


FORMULAS = ("=HYPERLINK(\"http://example.com\",\"x\")", "+86 023", "-5级", "@SUM(A1)")


def _csv_cells(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [cell for row in csv.reader(io.StringIO(r.content.decode("utf-8-sig"), newline="")) for cell in row]


def _inert(cells: list[str], value: str) -> None:
    assert "'" + value in cells, f"{value!r} was not written as text: {[c for c in cells if value in c]}"
    assert value not in cells, f"{value!r} was written as a formula"


def test_csv_exports_write_formulas_as_text(api, world):
    """Every CSV export (cases, evaluation, datastream, layer, units, buildings) writes user text that a
    spreadsheet would run as a formula with a leading apostrophe, and numbers as they are."""
    from openpyxl import load_workbook

    from tests.sensing_helpers import make_device

    admin, yihe = api.login("admin"), world["yihe"]
    grid = api.get("/api/units", params={"root": yihe, "level": "grid", "limit": 1}, headers=admin).json()["items"][0]
    grid = api.get(f"/api/units/{grid['code']}", params={"geometry": True}, headers=admin).json()
    point = shape(grid["geometry"]).representative_point()
    title, address, reporter_name, layer_text = FORMULAS[0], FORMULAS[1], "=reporter", FORMULAS[3]
    # A case reported by a user whose name is a formula.
    r = api.post("/api/users", headers=admin, json={"username": reporter_name, "password": "reporter-pass", "role": "grid_worker",
                                                     "scope_units": [grid["code"]]})
    assert r.status_code == 201, r.text
    r = api.post("/api/events/cases", headers=api.login(reporter_name, "reporter-pass"),
                 json={"class_code": "06010", "lon": point.x, "lat": point.y, "title": title, "address": address})
    assert r.status_code == 201, r.text
    cells = _csv_cells(api.get("/api/events/cases", params={"format": "csv", "q": r.json()["number"]}, headers=admin))
    _inert(cells, title)
    _inert(cells, address)
    period = {"start": "2020-01-01T00:00:00+08:00", "end": "2030-01-01T00:00:00+08:00", "group": "reporter"}
    _inert(_csv_cells(api.get("/api/events/evaluation", params={**period, "format": "csv"}, headers=admin)), reporter_name)
    r = api.get("/api/events/evaluation", params={**period, "format": "xlsx"}, headers=admin)
    sheet = load_workbook(io.BytesIO(r.content)).active
    [cell] = [c for row in sheet.iter_rows() for c in row if c.value == reporter_name]
    assert cell.data_type == "s", "the XLSX export stored the text as a formula"
    # A datastream named with a leading minus; its negative results stay numbers.
    dev = make_device(api, yihe, "tilt_meter", "tilt", "%", name="-5级倾斜")
    r = api.post("/api/sensing/observations", headers=admin,
                 json={"observations": [{"datastream_id": dev["datastream"], "phenomenonTime": "2026-07-08T08:00:00+08:00", "result": -3.5}]})
    assert r.status_code == 201, r.text
    cells = _csv_cells(api.get(f"/api/sensing/datastreams/{dev['datastream']}/export",
                               params={"start": "2026-07-08T00:00:00+08:00", "end": "2026-07-09T00:00:00+08:00"}, headers=admin))
    _inert(cells, "-5级倾斜 tilt")
    assert "-3.5" in cells
    # A layer attribute (written by GDAL through the same guard).
    r = api.post("/api/layers", headers=admin, json={"key": "csv_formulas", "title_zh": "公式", "category": "0701",
                                                      "geometry_type": "POINT", "unit_code": yihe})
    assert r.status_code == 201, r.text
    features = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": mapping(point),
                                                           "properties": {"note": layer_text, "depth": -2}}]}
    r = api.post("/api/layers/csv_formulas/import", headers=admin,
                 files={"file": ("f.geojson", json.dumps(features).encode())})
    assert r.status_code == 200, r.text
    cells = _csv_cells(api.get("/api/layers/csv_formulas/export", params={"format": "csv"}, headers=admin))
    _inert(cells, layer_text)
    assert "-2" in cells
    # A unit's and a building's name.
    old_name = grid["name"]
    assert api.patch(f"/api/units/{grid['code']}", json={"name": FORMULAS[2]}, headers=admin).status_code == 200
    try:
        _inert(_csv_cells(api.get("/api/units/export", params={"format": "csv", "root": grid["code"]}, headers=admin)), FORMULAS[2])
    finally:
        assert api.patch(f"/api/units/{grid['code']}", json={"name": old_name}, headers=admin).status_code == 200
    building = api.get("/api/buildings", params={"root": yihe, "limit": 1}, headers=admin).json()["items"][0]
    assert api.patch(f"/api/buildings/{building['code']}", json={"name": FORMULAS[1]}, headers=admin).status_code == 200
    _inert(_csv_cells(api.get("/api/buildings/export", params={"format": "csv", "root": building["grid_code"]}, headers=admin)),
           FORMULAS[1])


# The privilege tests of the scope modules run here, on this module's store and world (see the docstring).
for _module_path in sorted(Path(__file__).parent.glob("scope_*.py")):
    _module = importlib.import_module(f"tests.{_module_path.stem}")
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and callable(_test):
            assert _name not in globals(), f"{_module_path.name}: {_name} repeats a test name"
            globals()[_name] = _test

"""Housing registry writes (房屋 · 住户 · 人口) and exports with masking, on both backends, through the API."""

from __future__ import annotations

import csv
import io
import json

import pyogrio
import pyogrio.raw
import pytest
import shapely
from shapely.geometry import mapping, shape

from tests.conftest import table_counts


def id_number(region: str, birth: str, seq: str) -> str:
    """A GB 11643 id number with its ISO 7064 MOD 11-2 check character, computed here independently."""
    body = region + birth + seq
    weights = [2 ** (17 - i) % 11 for i in range(17)]
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights)) % 11]


@pytest.fixture(scope="module")
def places(api):
    admin = api.login("admin")
    townships = {u["name"]: u for u in api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]}
    yihe, dade = townships["义和镇"]["code"], townships["大德镇"]["code"]
    out = {"yihe": yihe, "dade": dade}
    for name, code in (("yihe", yihe), ("dade", dade)):
        grids = api.get("/api/units", params={"root": code, "level": "grid", "limit": 2}, headers=admin).json()["items"]
        out[f"{name}_grids"] = [api.get(f"/api/units/{g['code']}", params={"geometry": True}, headers=admin).json() for g in grids]
    return out


def _read(path):
    """Columns and geometries of a file, read by GDAL (pyogrio's raw reader)."""
    meta, _, geometry, fields = pyogrio.raw.read(path)
    return dict(zip(meta["fields"], fields)), shapely.from_wkb(geometry)


def _square(grid: dict, side_deg: float = 0.0001, shift: float = 0.0) -> dict:
    p = shape(grid["geometry"]).representative_point()
    return mapping(shapely.box(p.x + shift, p.y, p.x + shift + side_deg, p.y + side_deg * 0.8))


def test_create_and_update_building_audited(api, places):
    headers = api.login("yihe")
    grid = places["yihe_grids"][0]
    r = api.post("/api/buildings", headers=headers, json={
        "geometry": _square(grid), "floors": 3, "structure": "框架", "use": "商业", "year_built": 2015,
        "safety_grade": "B", "name": "太康村便民超市", "address": "义和镇测试路1号"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["grid_code"] == grid["code"] and body["code"].startswith(grid["code"]) and len(body["code"]) == len(grid["code"]) + 4
    assert body["height_m"] == 9.4 and body["unit_path"].endswith(f"/{grid['code']}/")
    code = body["code"]
    detail = api.get(f"/api/buildings/{code}", headers=headers).json()
    assert detail["geometry"]["type"] == "MultiPolygon" and detail["households"] == []

    r = api.patch(f"/api/buildings/{code}", headers=headers, json={"safety_grade": "D", "floors": 4})
    assert r.status_code == 200, r.text
    assert r.json()["safety_grade"] == "D" and r.json()["floors"] == 4
    entries = api.get("/api/audit", params={"entity_key": code}, headers=headers).json()
    assert [e["action"] for e in entries][:2] == ["building.update", "building.create"]
    assert entries[0]["actor"] == "yihe" and entries[0]["before"]["safety_grade"] == "B" and entries[0]["after"]["safety_grade"] == "D"
    # The new building is found by "who is threatened".
    zone = mapping(shape(_square(grid)).buffer(0.0002))
    threat = api.post("/api/threatened", json={"geometry": zone}, headers=headers).json()
    assert code in {b["code"] for b in threat["buildings"]}


def test_moving_a_building_moves_its_people(api, places):
    admin = api.login("admin")
    first, second = places["yihe_grids"]
    code = api.post("/api/buildings", headers=admin, json={"geometry": _square(first, shift=0.0003)}).json()["code"]
    hh = api.post("/api/households", headers=admin, json={"building_code": code, "head_name": "王大山", "phone": "13800138000"})
    assert hh.status_code == 201, hh.text
    r = api.post(f"/api/households/{hh.json()['code']}/residents", headers=admin, json={"name": "王小山", "birth_year": 2018})
    assert r.status_code == 201, r.text
    assert r.json()["child"] is True and r.json()["elderly"] is False
    moved = api.patch(f"/api/buildings/{code}", headers=admin, json={"geometry": _square(second)})
    assert moved.status_code == 200, moved.text
    assert moved.json()["grid_code"] == second["code"]
    household = api.get(f"/api/households/{hh.json()['code']}", headers=admin).json()
    assert household["grid_code"] == second["code"] and household["unit_path"] == moved.json()["unit_path"]
    assert all(res["unit_path"] == moved.json()["unit_path"] for res in household["residents"])


def test_households_and_residents(api, places):
    headers = api.login("yihe")
    grid = places["yihe_grids"][1]
    code = api.post("/api/buildings", headers=headers, json={"geometry": _square(grid, shift=0.0006)}).json()["code"]
    r = api.post("/api/households", headers=headers, json={"building_code": code, "head_name": "陈建国", "phone": "13912345678",
                                                           "room": "1单元"})
    assert r.status_code == 201, r.text
    household = r.json()
    assert household["code"] == code + "01" and household["members"] == 0 and household["head_name"] == "陈建国"
    second = api.post("/api/households", headers=headers, json={"building_code": code, "head_name": "陈建军"}).json()
    assert second["code"] == code + "02"
    ident = id_number("500154", "19480312", "021")
    r = api.post(f"/api/households/{household['code']}/residents", headers=headers,
                 json={"name": "陈老汉", "id_number": ident, "sex": "男", "relation": "户主", "bedridden": True})
    assert r.status_code == 201, r.text
    resident = r.json()
    assert resident["birth_year"] == 1948 and resident["elderly"] is True and resident["bedridden"] is True
    assert resident["id_number"] == ident  # the township operator holds personal.read
    after = api.get(f"/api/households/{household['code']}", headers=headers).json()
    assert after["members"] == 1 and after["residents"][0]["name"] == "陈老汉"
    r = api.patch(f"/api/residents/{resident['id']}", headers=headers, json={"disabled": True, "phone": "13700001111"})
    assert r.status_code == 200 and r.json()["disabled"] is True
    r = api.patch(f"/api/households/{household['code']}", headers=headers, json={"phone": "023-52201234"})
    assert r.status_code == 200 and r.json()["phone"] == "023-52201234"
    # The leader (no personal.read) sees the new people masked; the audit log never holds them in clear.
    masked = api.get(f"/api/households/{household['code']}", headers=api.login("leader")).json()
    assert masked["masked"] and masked["head_name"] == "陈**" and masked["residents"][0]["id_number"] == "****"
    log = json.dumps(api.get("/api/audit", params={"entity_key": str(resident["id"])}, headers=api.login("admin")).json(),
                     ensure_ascii=False)
    assert "resident.update" in log and ident not in log and "13700001111" not in log and "陈老汉" not in log
    # The same id number cannot be registered twice.
    r = api.post(f"/api/households/{second['code']}/residents", headers=headers, json={"name": "冒名", "id_number": ident})
    assert r.status_code == 409, r.text


BAD_BUILDINGS = [
    ({"floors": 0}, "floors"),
    ({"floors": 500}, "floors"),
    ({"height_m": -3}, "height_m"),
    ({"structure": "茅草"}, "structure"),
    ({"use": "宫殿"}, "use"),
    ({"year_built": 3020}, "year_built"),
    ({"safety_grade": "E"}, "safety_grade"),
    ({"attributes": [1, 2]}, "attributes"),
    ({"colour": "red"}, "colour"),
    ({"grid_code": "500154999999999"}, "grid"),
]


def test_bad_input_is_rejected_and_changes_nothing(api, places):
    headers = api.login("admin")
    grid = places["yihe_grids"][0]
    before = table_counts(api.store)
    for extra, word in BAD_BUILDINGS:
        r = api.post("/api/buildings", headers=headers, json={"geometry": _square(grid, shift=0.001), **extra})
        assert r.status_code == 422, (extra, r.status_code, r.text)
        assert word in r.text, (extra, r.text)
    p = shape(grid["geometry"]).representative_point()
    x, y = p.x, p.y
    bowtie = {"type": "Polygon", "coordinates": [[[x, y], [x + 0.0001, y + 0.0001], [x + 0.0001, y], [x, y + 0.0001], [x, y]]]}
    for geometry, crs in ((bowtie, None), ({"type": "Point", "coordinates": [x, y]}, None),
                          (mapping(shapely.box(0, 0, 0.0001, 0.0001)), None),   # in no grid of the district
                          (mapping(shapely.box(x, y, x + 0.5, y + 0.5)), None),  # 2,000 km²: not a building
                          (_square(grid), "EPSG:999999"), ({"type": "Polygon", "coordinates": "x"}, None)):
        r = api.post("/api/buildings", headers=headers, json={"geometry": geometry, **({"crs": crs} if crs else {})})
        assert r.status_code == 422, (geometry, r.status_code, r.text)
        assert r.json()["error"] in ("invalid_geometry", "invalid_input", "unknown_crs")
    some = api.get("/api/buildings", params={"root": places["yihe"], "limit": 1}, headers=headers).json()["items"][0]
    assert api.post("/api/buildings", headers=headers, json={"geometry": _square(grid, shift=0.001),
                                                             "code": some["code"]}).status_code == 409
    for patch in ({"floors": None}, {"structure": "茅草"}, {"use": None}, {"nonsense": 1}):
        r = api.patch(f"/api/buildings/{some['code']}", headers=headers, json=patch)
        assert r.status_code == 422, (patch, r.text)
    assert api.patch("/api/buildings/nope", headers=headers, json={"floors": 2}).status_code == 404
    household = api.get(f"/api/buildings/{some['code']}", headers=headers).json()["households"]
    assert household, "the demo building should have households"
    hcode = household[0]["code"]
    for payload in ({"building_code": some["code"]}, {"building_code": some["code"], "head_name": "张三", "phone": "12345"},
                    {"building_code": "nope", "head_name": "张三"}, {"building_code": some["code"], "head_name": "张三", "members": -1}):
        r = api.post("/api/households", headers=headers, json=payload)
        assert r.status_code in (404, 422), (payload, r.text)
    for payload in ({"name": "张三", "id_number": "500154194803120210"},   # wrong check digit
                    {"name": "张三", "id_number": id_number("500154", "19480312", "021"), "birth_year": 1950},
                    {"name": "张三", "birth_year": 1700}, {"name": "张三", "sex": "未知"}, {"name": ""},
                    {"name": "张三", "elderly": "yes"}):
        r = api.post(f"/api/households/{hcode}/residents", headers=headers, json=payload)
        assert r.status_code == 422, (payload, r.text)
    resident = api.get(f"/api/households/{hcode}", headers=headers).json()["residents"][0]
    for patch in ({"name": None}, {"bedridden": None}, {"id_number": "123"}):
        assert api.patch(f"/api/residents/{resident['id']}", headers=headers, json=patch).status_code == 422, patch
    assert api.patch("/api/residents/999999999", headers=headers, json={"disabled": True}).status_code == 404
    assert table_counts(api.store) == before


def test_read_only_roles_cannot_write(api, places):
    grid = places["yihe_grids"][0]
    logins = {user: api.login(user) for user in ("leader", "taikang", "zhujian")}  # logging in is audited
    before = table_counts(api.store)
    for user in ("leader", "taikang", "zhujian"):
        r = api.post("/api/buildings", headers=logins[user], json={"geometry": _square(grid, shift=0.002)})
        assert r.status_code == 403, (user, r.text)
    assert table_counts(api.store) == before


def test_export_buildings_read_by_gdal(api, places, tmp_path):
    admin = api.login("admin")
    total = api.get("/api/buildings", params={"root": places["yihe"], "limit": 1}, headers=admin).json()["total"]
    for fmt, suffix in (("gpkg", ".gpkg"), ("geojson", ".geojson"), ("csv", ".csv"), ("fgb", ".fgb")):
        r = api.get("/api/buildings/export", params={"format": fmt, "root": places["yihe"]}, headers=admin)
        assert r.status_code == 200, r.text
        path = tmp_path / f"b{suffix}"
        path.write_bytes(r.content)
        if fmt != "csv":
            columns, geoms = _read(path)
            assert len(geoms) == total and {c[:9] for c in columns["grid_code"]} == {places["yihe"]}
            assert set(shapely.get_type_id(geoms)) == {6}  # MultiPolygon
        else:
            rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"))))
            assert len(rows) == total and rows[0]["WKT"].startswith("MULTIPOLYGON")
    grid = places["yihe_grids"][0]
    box = shape(grid["geometry"]).bounds
    r = api.get("/api/buildings/export", params={"format": "geojson", "bbox": ",".join(map(str, box))}, headers=admin)
    listed = api.get("/api/buildings", params={"bbox": ",".join(map(str, box)), "limit": 1}, headers=admin).json()["total"]
    assert len(r.json()["features"]) == listed > 0
    assert api.get("/api/buildings/export", params={"format": "docx"}, headers=admin).status_code == 422
    assert api.get("/api/buildings/export", params={"root": "nope"}, headers=admin).status_code == 404


def test_export_households_masks_personal_data(api, places, tmp_path):
    clear = api.get("/api/households/export", params={"format": "csv", "root": places["yihe"]}, headers=api.login("yihe"))
    masked = api.get("/api/households/export", params={"format": "csv", "root": places["yihe"]}, headers=api.login("leader"))
    assert clear.status_code == masked.status_code == 200
    clear_rows = list(csv.DictReader(io.StringIO(clear.content.decode("utf-8"))))
    masked_rows = list(csv.DictReader(io.StringIO(masked.content.decode("utf-8"))))
    assert len(clear_rows) == len(masked_rows) > 10
    text = masked.content.decode("utf-8")
    for row in clear_rows:
        assert row["phone"] not in text if row["phone"] else True
        assert row["masked"] in ("0", "false", "False")
    for row in masked_rows:
        assert row["head_name"].endswith("**") and row["masked"] in ("1", "true", "True")
    # GeoPackage, read back by GDAL: one point per household, at its building.
    r = api.get("/api/households/export", params={"format": "gpkg", "root": places["yihe"]}, headers=api.login("leader"))
    path = tmp_path / "h.gpkg"
    path.write_bytes(r.content)
    columns, geoms = _read(path)
    assert len(geoms) == len(masked_rows) and set(shapely.get_type_id(geoms)) == {0}  # Point
    assert all(n.endswith("**") for n in columns["head_name"]) and min(columns["vulnerable"]) >= 0

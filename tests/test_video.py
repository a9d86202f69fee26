"""Cameras (视频监控) and the call log, on both backends: GB/T 28181 codes checked part by part, the demo's cameras
watching its risk points and roads, the cameras that see a point / incident / case (in view first, then by
distance), the HLS files this server plays, click-to-call entries, bad input and township scope."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import Point, shape

from cityops.core.errors import InvalidInput
from cityops.video import gb28181
from tests.conftest import table_counts

CODE = "50015401081326000001"  # 500154 (开州区) 01 · 08 城市管理 · 132 IPC · network 6 (政务网) serial 000001


# ------------------------------------------------------------------------------------------- the code

def test_code_parts_are_named():
    dc = gb28181.parse(CODE)
    assert (dc.center, dc.industry, dc.type_code, dc.serial, dc.county) == ("50015401", "08", "132", "6000001", "500154")
    parts = dc.describe()
    assert parts["type_name_zh"] == "网络摄像机(IPC)" and parts["industry_name_zh"] == "城市管理接入"
    assert parts["network_name_zh"] == "政务网"
    assert gb28181.parse("50015401041316000002").type_code == "131"


@pytest.mark.parametrize(("code", "part", "needle"), [
    ("5001540108132600001", "length", "exactly 20 digits"),
    ("500154010813260000011", "length", "exactly 20 digits"),
    ("5001540108132600000A", "length", "exactly 20 digits"),
    ("99015401081326000001", "center_code", "center code 99015401"),
    ("50005401081326000001", "center_code", "without its city"),
    ("50015401089996000001", "type_code", "type code 999"),
    ("50015401081186000001", "type_code", "NVR"),
])
def test_malformed_codes_name_the_part(code, part, needle):
    with pytest.raises(InvalidInput) as info:
        gb28181.parse(code)
    assert needle in info.value.message and info.value.details == {"part": part}


def test_catalogue_is_checked():
    cat = gb28181.catalogue()
    assert set(cat.camera_types) == {"131", "132"}
    bad = cat.model_copy(update={"camera_types": ["999"]})
    with pytest.raises(ValueError, match="camera type '999'"):
        bad.check()


# ------------------------------------------------------------------------------------------- the API

@pytest.fixture(scope="module")
def admin(api):
    return api.login("admin")


@pytest.fixture(scope="module")
def townships(api, admin):
    return {u["name"]: u for u in api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]}


def _grid(api, admin, township: str) -> dict:
    item = api.get("/api/units", params={"root": township, "level": "grid", "limit": 1}, headers=admin).json()["items"][0]
    return api.get(f"/api/units/{item['code']}", params={"geometry": True}, headers=admin).json()


def test_demo_cameras_watch_the_risk_points(api, admin):
    cams = api.get("/api/video/cameras", params={"limit": 1000}, headers=admin).json()
    assert cams["total"] >= 20
    assert all(len(c["code"]) == 20 and c["code"][10:13] == "132" and c["code"].startswith("500154") for c in cams["items"])
    by_point = {c["attributes"]["risk_point_code"]: c for c in cams["items"] if "risk_point_code" in c["attributes"]}
    assert any("road" in c["attributes"] for c in cams["items"]), "cameras at the road junctions"
    points = api.get("/api/risk-points", params={"limit": 8}, headers=admin).json()["items"]
    assert points
    for rp in points:
        r = api.get("/api/video/nearest", params={"lon": rp["lon"], "lat": rp["lat"], "radius_m": 1500, "limit": 10},
                    headers=admin)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        own = next(i for i in items if i["code"] == by_point[rp["code"]]["code"])
        assert own["in_view"] and 85 <= own["distance_m"] <= 95 and own["off_axis_deg"] < 1.0, own
        # Ranked: every camera that sees the point before any that does not, each group by distance.
        keys = [(not i["in_view"], i["status"] != "online", i["distance_m"]) for i in items]
        assert keys == sorted(keys)
        assert all(i["distance_m"] <= 1500 for i in items)


def test_field_of_view_and_ranking(api, admin, townships):
    """A camera that looks away is ranked after a farther one that looks at the point."""
    yihe = townships["义和镇"]["code"]
    grid = _grid(api, admin, yihe)
    centre = shape(grid["geometry"]).representative_point()
    base = {"unit_code": grid["code"], "fov_deg": 60, "range_m": 300, "status": "online"}
    from cityops.core.crs import LocalPlane

    plane = LocalPlane(centre.x, centre.y)
    near = plane.inverse(Point(0, -20))      # 20 m south, looking south (away)
    far = plane.inverse(Point(0, -60))       # 60 m south, looking north (at it)
    codes = ["50015401081326900001", "50015401081326900002"]
    for code, where, direction in ((codes[0], near, 180.0), (codes[1], far, 0.0)):
        r = api.post("/api/video/cameras", headers=admin,
                     json={**base, "code": code, "name": f"测试{code[-1]}", "direction_deg": direction,
                           "geometry": {"type": "Point", "coordinates": [where.x, where.y]}})
        assert r.status_code == 201, r.text
        assert r.json()["code_parts"]["center_code"] == "50015401"
    items = api.get("/api/video/nearest", params={"lon": centre.x, "lat": centre.y, "radius_m": 100, "limit": 50},
                    headers=admin).json()["items"]
    mine = [i for i in items if i["code"] in codes]
    assert [i["code"] for i in mine] == [codes[1], codes[0]]
    assert mine[0]["in_view"] and not mine[1]["in_view"]
    assert abs(mine[0]["distance_m"] - 60) < 0.5 and abs(mine[1]["distance_m"] - 20) < 0.5
    assert mine[1]["off_axis_deg"] == pytest.approx(180, abs=0.5)
    # Turned round, the near one sees it and comes first.
    r = api.patch(f"/api/video/cameras/{codes[0]}", headers=admin, json={"direction_deg": 10.0})
    assert r.status_code == 200, r.text
    items = api.get("/api/video/nearest", params={"lon": centre.x, "lat": centre.y, "radius_m": 100, "limit": 50},
                    headers=admin).json()["items"]
    assert [i["code"] for i in items if i["code"] in codes] == codes
    # The map shows each camera and its cone; the cone holds the point it sees.
    fc = api.get("/api/video/map", headers=admin).json()
    cone = next(f for f in fc["features"] if f["properties"]["code"] == codes[1] and f["properties"]["part"] == "cone")
    assert shape(cone["geometry"]).contains(centre)


def test_bad_camera_input_is_refused_and_changes_nothing(api, admin, townships):
    grid = _grid(api, admin, townships["义和镇"]["code"])
    p = shape(grid["geometry"]).representative_point()
    good = {"code": "50015401081326900009", "name": "坏输入", "unit_code": grid["code"], "direction_deg": 90,
            "geometry": {"type": "Point", "coordinates": [p.x, p.y]}}
    before = table_counts(api.store)
    for change, needle in (({"code": "5001540108132690000"}, "exactly 20 digits"),
                           ({"code": "99015401081326900009"}, "center code 99015401"),
                           ({"code": "11010501081326900009"}, "is not the county of unit"),
                           ({"code": "50015401081186900009"}, "not a camera"),
                           ({"code": "50015401089996900009"}, "type code 999"),
                           ({"direction_deg": 360}, "direction_deg"),
                           ({"direction_deg": -1}, "direction_deg"),
                           ({"fov_deg": 0}, "fov_deg"),
                           ({"range_m": 60000}, "range_m"),
                           ({"hls_url": "javascript:alert(1)"}, "hls_url"),
                           ({"hls_url": "http://media.local/live/x.mp4"}, "hls_url"),
                           ({"rtsp_url": "http://x/y"}, "rtsp_url"),
                           ({"status": "broken"}, "status"),
                           ({"geometry": {"type": "LineString", "coordinates": [[p.x, p.y], [p.x + 0.001, p.y]]}}, "Point"),
                           ({"geometry": {"type": "Point", "coordinates": [p.x + 1.0, p.y]}}, "outside unit"),
                           ({"unit_code": "500154999999"}, "not found"),
                           ({"code": "50015401081326000001"}, "already exists")):
        r = api.post("/api/video/cameras", headers=admin, json={**good, **change})
        assert 400 <= r.status_code < 500, (change, r.text)
        assert needle in r.text, (change, r.text)
    for params, needle in (({"lon": 500, "lat": 30}, "longitude"), ({"lon": 108, "lat": 31, "radius_m": 0}, "radius_m"),
                           ({"lon": 108, "lat": 31, "radius_m": 1e6}, "radius_m"), ({"lon": "x", "lat": 31}, "lon")):
        r = api.get("/api/video/nearest", headers=admin, params=params)
        assert r.status_code == 422 and needle in r.text, r.text
    assert api.get("/api/video/map", params={"bbox": "1,2,3"}, headers=admin).status_code == 422
    assert api.patch("/api/video/cameras/50015401081326000001", headers=admin, json={"fov_deg": 400}).status_code == 422
    assert api.get("/api/video/nearest/incident/99999", headers=admin).status_code == 404
    assert api.get("/api/video/nearest/case/NOPE-1", headers=admin).status_code == 404
    assert table_counts(api.store) == before


def test_nearest_incident_and_case(api, admin):
    incidents = api.get("/api/incidents", headers=admin).json()
    incidents = incidents["items"] if isinstance(incidents, dict) else incidents
    located = [i for i in incidents if i.get("risk_point_code")]
    if located:
        r = api.get(f"/api/video/nearest/incident/{located[0]['id']}", headers=admin)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["target"]["kind"] == "incident" and body["items"]
        assert body["items"][0]["in_view"]
    case = api.get("/api/events/cases", params={"limit": 1}, headers=admin).json()["items"][0]
    r = api.get(f"/api/video/nearest/case/{case['number']}", params={"radius_m": 5000}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["target"]["number"] == case["number"]
    assert all(i["distance_m"] <= 5000 for i in r.json()["items"])


def test_township_sees_only_its_own_cameras(api, admin, townships):
    yihe, dade = townships["义和镇"]["code"], townships["大德镇"]["code"]
    headers = api.login("yihe")
    items = api.get("/api/video/cameras", params={"limit": 1000}, headers=headers).json()["items"]
    assert items and all(f"/{yihe}/" in c["unit_path"] for c in items)
    dade_cam = api.get("/api/video/cameras", params={"root": dade, "limit": 1}, headers=admin).json()["items"][0]
    assert api.get(f"/api/video/cameras/{dade_cam['code']}", headers=headers).status_code == 404
    near = api.get("/api/video/nearest", params={"lon": dade_cam["lon"], "lat": dade_cam["lat"], "radius_m": 3000},
                   headers=headers).json()["items"]
    assert all(f"/{yihe}/" in c["unit_path"] for c in near)
    fc = api.get("/api/video/map", headers=headers).json()
    assert fc["features"] and all(f["properties"]["unit_code"].startswith(yihe) for f in fc["features"])
    assert api.get(f"/api/video/cameras/{dade_cam['code']}/stream/index.m3u8", headers=headers).status_code == 404
    grid = _grid(api, admin, dade)
    p = shape(grid["geometry"]).representative_point()
    before = table_counts(api.store)
    r = api.post("/api/video/cameras", headers=headers, json={"code": "50015401081326900077", "name": "越界", "unit_code": grid["code"],
                                                              "direction_deg": 0, "geometry": {"type": "Point", "coordinates": [p.x, p.y]}})
    assert r.status_code == 404, r.text
    assert api.patch(f"/api/video/cameras/{dade_cam['code']}", headers=headers, json={"status": "fault"}).status_code == 404
    assert table_counts(api.store) == before
    # A grid worker reads cameras but cannot register one.
    assert api.post("/api/video/cameras", headers=api.login("gridworker"), json={}).status_code in (403, 422)


def test_stream_files_are_served_for_cameras_in_scope(api, admin):
    cam = api.get("/api/video/cameras", params={"limit": 1}, headers=admin).json()["items"][0]
    assert cam["play_url"] == f"/api/video/cameras/{cam['code']}/stream/index.m3u8"
    folder = api.store.settings.data_dir / "video" / cam["code"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n#EXT-X-ENDLIST\n")
    (folder / "seg0.ts").write_bytes(b"\x47" + bytes(187))
    r = api.get(cam["play_url"], headers=admin)
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert r.headers["cache-control"] == "no-cache" and "seg0.ts" in r.text
    r = api.get(f"/api/video/cameras/{cam['code']}/stream/seg0.ts", headers=admin)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp2t" and r.content[0] == 0x47
    for name in ("seg1.ts", "secret.key", "..%2Fsecret.key", ".hidden.ts"):
        assert api.get(f"/api/video/cameras/{cam['code']}/stream/{name}", headers=admin).status_code == 404
    assert api.get(cam["play_url"]).status_code == 401


# ------------------------------------------------------------------------------------------- calls

def test_call_log(api, admin, townships):
    yihe, dade = townships["义和镇"]["code"], townships["大德镇"]["code"]
    headers = api.login("yihe")
    mine = api.get("/api/people", params={"unit": yihe, "limit": 1}, headers=admin).json()["items"][0]
    district = next(p for p in api.get("/api/people", params={"limit": 200}, headers=admin).json()["items"]
                    if p["unit_code"] == "500154")
    foreign = api.get("/api/people", params={"unit": dade, "limit": 1}, headers=admin).json()["items"][0]
    case = api.get("/api/events/cases", params={"root": yihe, "limit": 1}, headers=headers).json()["items"][0]
    r = api.post("/api/calls", headers=headers, json={"person_id": mine["id"], "outcome": "answered", "duration_s": 75,
                                                      "note": "已通知转移", "case": case["number"],
                                                      "called_at": "2026-07-08T21:05:00+08:00", "request_key": "call-test-0001"})
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["callee_name"] == mine["name"] and entry["number"] == mine["phone"] and entry["tel"].startswith("tel:")
    assert entry["case_id"] == case["id"] and entry["operator"] == "yihe"
    again = api.post("/api/calls", headers=headers, json={"person_id": mine["id"], "outcome": "answered",
                                                          "request_key": "call-test-0001"})
    assert again.status_code == 200 and again.json()["id"] == entry["id"], "a retry answers the stored entry"
    # Calling up the line (the district) is allowed and the operator keeps reading their own entry.
    r = api.post("/api/calls", headers=headers, json={"person_id": district["id"], "outcome": "no_answer"})
    assert r.status_code == 201, r.text
    up = r.json()["id"]
    listed = api.get("/api/calls", headers=headers, params={"limit": 500}).json()
    assert {entry["id"], up} <= {c["id"] for c in listed["items"]}
    assert [c["id"] for c in api.get("/api/calls", headers=headers, params={"case": case["number"]}).json()["items"]] == [entry["id"]]
    assert api.get("/api/calls", headers=headers, params={"person_id": mine["id"]}).json()["total"] == 1
    # Another township's operator reads neither.
    other = api.post("/api/users", headers=admin, json={"username": "dade_calls", "password": "dade-calls-pass",
                                                        "role": "township_operator", "scope_units": [dade]})
    assert other.status_code == 201, other.text
    dade_h = api.login("dade_calls", "dade-calls-pass")
    assert entry["id"] not in {c["id"] for c in api.get("/api/calls", headers=dade_h, params={"limit": 500}).json()["items"]}
    # The district sees both.
    assert {entry["id"], up} <= {c["id"] for c in api.get("/api/calls", headers=admin, params={"limit": 500}).json()["items"]}
    # Bad input and scope: clear 4xx, nothing stored.
    before = table_counts(api.store)
    for body, status, needle in (({"person_id": foreign["id"], "outcome": "answered"}, 404, "not found"),
                                 ({"unit_code": dade, "number": "023-52221111", "outcome": "answered"}, 404, "not found"),
                                 ({"person_id": mine["id"], "outcome": "maybe"}, 422, "outcome"),
                                 ({"outcome": "answered"}, 422, "exactly one callee"),
                                 ({"person_id": mine["id"], "unit_code": yihe, "outcome": "answered"}, 422, "exactly one callee"),
                                 ({"person_id": mine["id"], "outcome": "busy", "number": "call me"}, 422, "number"),
                                 ({"unit_code": yihe, "outcome": "busy"}, 422, "no phone number"),
                                 ({"person_id": mine["id"], "outcome": "busy", "called_at": "2099-01-01T00:00:00+08:00"}, 422, "future"),
                                 ({"person_id": mine["id"], "outcome": "busy", "called_at": "2026-07-08T21:05:00"}, 422, "UTC offset"),
                                 ({"person_id": mine["id"], "outcome": "busy", "incident_id": 99999}, 404, "incident"),
                                 ({"person_id": mine["id"], "outcome": "busy", "case": "NOPE-1"}, 404, "case"),
                                 ({"person_id": mine["id"], "outcome": "busy", "duration_s": -1}, 422, "duration_s")):
        r = api.post("/api/calls", headers=headers, json=body)
        assert r.status_code == status and needle in r.text, (body, r.text)
    r = api.post("/api/calls", headers=dade_h, json={"person_id": foreign["id"], "outcome": "answered", "request_key": "call-test-0001"})
    assert r.status_code == 409, r.text
    assert table_counts(api.store) == before
    # A grid worker reads cameras but keeps no call log.
    assert api.get("/api/calls", headers=api.login("gridworker")).status_code == 403
    assert json.loads(api.get("/api/calls", headers=admin, params={"unit": yihe}).text)["total"] >= 1

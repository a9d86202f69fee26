"""The signature scenario, end to end on both backends: the 老沟湾 warning activates the geohazard plan, the
zone is computed and then redrawn, the threatened households are locked into evacuation tasks for the right
grid workers, simulated workers confirm every household, the three levels' totals agree at every step, the
response is stood down and the incident closes with its figures. Plus the live stream and the report."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import Point, mapping, shape

from cityops.core import audit
from cityops.core.spatial import buffer_m
from cityops.tasks.catalogue import catalogue
from cityops.tasks.plans import on_warning_level
from tests.conftest import table_counts

METRIC = "EPSG:4545"


def _totals_agree(api, incident_id: int, users: dict) -> dict:
    """District, township and village operators each see totals at their scope; they must agree."""
    district = api.get(f"/api/incidents/{incident_id}/totals", headers=users["district"]).json()
    d = district["district"]
    for key in ("households", "people", "safe_households", "remaining_households"):
        assert d[key] == sum(t[key] for t in district["townships"]) == sum(v[key] for v in district["villages"]) \
            == sum(g[key] for g in district["grids"]), key
    assert sum(d["by_state"].values()) == d["households"]
    township = api.get(f"/api/incidents/{incident_id}/totals", headers=users["yihe"]).json()
    yihe_row = next(t for t in district["townships"] if t["code"] == users["yihe_code"])
    village = api.get(f"/api/incidents/{incident_id}/totals", headers=users["taikang"]).json()
    taikang_row = next((v for v in district["villages"] if v["code"] == users["taikang_code"]), None)
    for key in ("households", "people", "safe_households", "remaining_households", "by_state"):
        assert township["district"][key] == yihe_row[key] == d[key], key  # the zone lies wholly in 义和镇
        if taikang_row is not None:
            assert village["district"][key] == taikang_row[key], key
    return d


@pytest.fixture(scope="module")
def scene(api):
    admin = api.login("admin")
    place = api.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
    grid = api.get(f"/api/units/{place['unit_code']}", headers=admin).json()
    taikang = grid["parent_code"]
    yihe = api.get(f"/api/units/{taikang}", headers=admin).json()["parent_code"]
    users = {"district": api.login("district"), "yihe": api.login("yihe"), "taikang": api.login("taikang"),
             "yihe_code": yihe, "taikang_code": taikang}
    return {"place": place, "grid": grid, "users": users, "point": Point(place["lon"], place["lat"])}


def test_signature_scenario(api, scene):
    store = api.store
    users, point = scene["users"], scene["point"]
    admin = api.login("admin")
    hazard = buffer_m(point, 30, METRIC)  # the slope body: a 30 m disc at 老沟湾

    # 1. The warning engine raises 老沟湾 to orange (II): the geohazard plan (auto) activates.
    with store.sessions() as session:
        incident = on_warning_level(session, risk_point_code="RP-LGW-001", hazard_type="landslide", level="orange",
                                    unit_code=scene["place"]["unit_code"], geometry=hazard,
                                    evidence={"rain_24h_mm": 182, "gnss_mm_per_day": 14.5}, actor=audit.Actor("warning"))
        session.commit()
        incident_id = incident.id
    inc = api.get(f"/api/incidents/{incident_id}", headers=users["district"]).json()
    assert inc["status"] == "active" and inc["activation"] == "auto" and inc["response_level"] == 2
    assert inc["plan_key"] == "geohazard" and not inc["drill"]
    tasks = api.get("/api/tasks", params={"incident_id": incident_id}, headers=users["district"]).json()
    assert {t["action_key"] for t in tasks} == {a.key for a in catalogue().plan("geohazard").levels[2].actions}

    # 2. The zone is computed (hazard body + 200 m) and its households are locked, no more, no fewer.
    zone = inc["zone"]
    assert zone["version"] == 1 and zone["source"] == "computed"
    threat = api.post("/api/threatened", json={"geometry": zone["geometry"], "limit": 0}, headers=admin).json()
    assert threat["totals"]["households"] > 20
    d = _totals_agree(api, incident_id, users)
    assert d["households"] == threat["totals"]["households"] and d["people"] == threat["totals"]["residents"]
    assert d["by_state"]["to_move"] == d["households"] and not d["all_at_home_moved"]
    assert inc["event_grade"] == catalogue().grading.grade(threat["totals"]["residents"])

    # 3. The township redraws the zone (version 2): larger at the slope, plus a second patch in another village
    # (a crack found on a house there); new households locked, none lost.
    buildings = api.get("/api/buildings", params={"root": users["yihe_code"], "limit": 500, "geometry": True}, headers=admin).json()["items"]
    far = next(b for b in buildings if not b["grid_code"].startswith(users["taikang_code"]))
    drawn = mapping(buffer_m(point, 260, METRIC).union(buffer_m(shape(far["geometry"]).centroid, 40, METRIC)))
    r = api.post(f"/api/incidents/{incident_id}/zones", json={"geometry": drawn, "note": "现场踏勘后扩大"}, headers=users["yihe"])
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2 and r.json()["source"] == "drawn"
    threat2 = api.post("/api/threatened", json={"geometry": drawn, "limit": 0}, headers=admin).json()
    d = _totals_agree(api, incident_id, users)
    assert d["households"] == threat2["totals"]["households"] > threat["totals"]["households"]

    # 4. The tasks reach the right grid workers: each household's assignee is its grid's worker.
    items = api.get(f"/api/incidents/{incident_id}/evacuations", headers=users["district"]).json()["items"]
    assert len(items) == d["households"]
    assert len({i["village_code"] for i in items}) == 2
    grids = sorted({i["grid_code"] for i in items})
    workers = {}
    for g in grids:
        people = api.get("/api/people", params={"unit": g, "post": "grid_worker"}, headers=admin).json()["items"]
        worker = next(p for p in people if p["unit_code"] == g)
        assert all(i["assignee_person_id"] == worker["id"] and i["assignee_post"] == "grid_worker"
                   for i in items if i["grid_code"] == g)
        username = f"gw{g[-6:]}"
        r = api.post("/api/users", headers=admin, json={"username": username, "password": "grid-worker-pw", "role": "grid_worker",
                                                          "scope_units": [g]})
        assert r.status_code == 201, r.text
        workers[g] = api.login(username, "grid-worker-pw")

    shelter = next(s for s in api.get("/api/shelters", headers=users["taikang"]).json() if s["unit_code"] == users["taikang_code"])

    # 5. Each worker works through their own households, nearest first, and sees nobody else's.
    other = {g: next(i for i in items if i["grid_code"] != g) for g in grids} if len(grids) > 1 else {}
    first_refused = first_not_home = None
    checked_in = 0
    for n, g in enumerate(grids):
        mine = api.get(f"/api/incidents/{incident_id}/evacuations",
                       params={"state": "to_move", "lon": scene["place"]["lon"], "lat": scene["place"]["lat"]},
                       headers=workers[g]).json()["items"]
        assert mine and {i["grid_code"] for i in mine} == {g}
        assert [i["distance_m"] for i in mine] == sorted(i["distance_m"] for i in mine)
        if g in other:  # someone else's household: not found, and nothing changed
            before = table_counts(store)
            r = api.post(f"/api/evacuations/{other[g]['id']}/state", json={"state": "moved"}, headers=workers[g])
            assert r.status_code == 404, r.text
            assert table_counts(store) == before
        for k, item in enumerate(mine):
            body = {"state": "moved", "lon": item["lon"] + 0.0001, "lat": item["lat"], "request_key": f"c-{item['id']}"}
            if first_refused is None:
                body = {"state": "refused", "lon": item["lon"], "lat": item["lat"], "note": "老人不愿离开"}
                first_refused = item
            elif first_not_home is None:
                body = {"state": "not_home", "lon": item["lon"], "lat": item["lat"]}
                first_not_home = item
            elif k % 3 == 0 and checked_in + item["members"] <= shelter["capacity"]:
                body = {"state": "in_shelter", "shelter_id": shelter["id"], "lon": item["lon"], "lat": item["lat"]}
                checked_in += item["members"]
            r = api.post(f"/api/evacuations/{item['id']}/state", json=body, headers=workers[g])
            assert r.status_code == 200, r.text
            assert r.json()["state"] == body["state"]
            if "request_key" in body:  # a retry of the same report changes nothing
                again = api.post(f"/api/evacuations/{item['id']}/state", json=body, headers=workers[g])
                assert again.status_code == 200 and again.json()["version"] == r.json()["version"]
        d = _totals_agree(api, incident_id, users)
        assert not d["all_at_home_moved"]  # the refusing household is still there
    assert api.get("/api/shelters", headers=users["taikang"]).json()[-1]["occupancy"] >= checked_in

    # An illegal change is refused with a clear error and changes nothing.
    moved = next(i for i in api.get(f"/api/incidents/{incident_id}/evacuations", params={"state": "moved"},
                                     headers=users["district"]).json()["items"])
    before = table_counts(store)
    r = api.post(f"/api/evacuations/{moved['id']}/state", json={"state": "to_move"}, headers=users["yihe"])
    assert r.status_code == 409 and "illegal change" in r.json()["message"] and "to_move" in r.json()["message"]
    r = api.post(f"/api/evacuations/{moved['id']}/state", json={"state": "returned"}, headers=users["yihe"])
    assert r.status_code == 409 and "stood down" in r.json()["message"]
    r = api.post(f"/api/evacuations/{moved['id']}/state", json={"state": "flying"}, headers=users["yihe"])
    assert r.status_code == 422 and "flying" in r.json()["message"]
    assert table_counts(store) == before

    # The village cadre persuades the refusing household; the absent one is reached by phone at relatives'.
    g = first_refused["grid_code"]
    assert api.post(f"/api/evacuations/{first_refused['id']}/state", json={"state": "moved"}, headers=users["taikang"] if
                    first_refused["village_code"] == users["taikang_code"] else users["yihe"]).status_code == 200
    d = _totals_agree(api, incident_id, users)
    assert d["by_state"]["not_home"] == 1 and d["all_at_home_moved"]
    assert api.post(f"/api/evacuations/{first_not_home['id']}/state", json={"state": "with_relatives"},
                    headers=workers[first_not_home["grid_code"]]).status_code == 200
    d = _totals_agree(api, incident_id, users)
    # Every household at home moved: nobody left to move, nobody refusing.
    assert d["all_at_home_moved"] and d["remaining_households"] == 0 and d["safe_households"] == d["households"]
    history = api.get(f"/api/evacuations/{first_refused['id']}/history", headers=users["yihe"]).json()
    assert [h["to"] for h in history] == ["refused", "moved"] and history[0]["lon"] is not None

    # 6. The warning rises to red: the response is upgraded to I and the level-I actions are added.
    with store.sessions() as session:
        on_warning_level(session, risk_point_code="RP-LGW-001", hazard_type="landslide", level="red",
                         unit_code=scene["place"]["unit_code"], geometry=hazard, evidence={"gnss_mm_per_day": 40})
        session.commit()
    inc = api.get(f"/api/incidents/{incident_id}", headers=users["yihe"]).json()
    assert inc["response_level"] == 1
    keys = {t["action_key"] for t in api.get("/api/tasks", params={"incident_id": incident_id}, headers=users["district"]).json()}
    assert "command" in keys

    # 7. The live stream carries every step, at each user's scope.
    r = api.get(f"/api/incidents/{incident_id}/stream", params={"seconds": 0}, headers=users["district"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "incident.opened" and "zone.version" in kinds and "evacuation.locked" in kinds
    assert sum(1 for k in kinds if k == "evacuation.state") >= d["households"]
    resumed = api.get(f"/api/incidents/{incident_id}/stream", params={"seconds": 0},
                      headers={**users["district"], "Last-Event-ID": str(events[-3]["id"])})
    assert [json.loads(x[6:])["id"] for x in resumed.text.splitlines() if x.startswith("data: ")] == [e["id"] for e in events[-2:]]
    worker_view = api.get(f"/api/incidents/{incident_id}/stream", params={"seconds": 0}, headers=workers[grids[0]])
    seen = [json.loads(x[6:]) for x in worker_view.text.splitlines() if x.startswith("data: ")]
    assert all(e["data"].get("grid_code", grids[0]) == grids[0] for e in seen if e["kind"] == "evacuation.state")

    # 8. Stand down, households return home, the incident closes with its figures.
    assert api.post(f"/api/incidents/{incident_id}/close", json={"note": "x"}, headers=users["yihe"]).status_code == 409
    r = api.post(f"/api/incidents/{incident_id}/stand-down", json={"reason": "降雨停止,位移趋稳"}, headers=users["yihe"])
    assert r.status_code == 200 and r.json()["status"] == "standing_down"
    r = api.post(f"/api/evacuations/{moved['id']}/state", json={"state": "returned"}, headers=users["yihe"])
    assert r.status_code == 200, r.text
    r = api.post(f"/api/incidents/{incident_id}/close", json={"note": "险情解除,转移群众全部安全"}, headers=users["yihe"])
    assert r.status_code == 200, r.text
    closed = r.json()
    assert closed["status"] == "closed"
    assert f"受威胁 {d['households']} 户 {d['people']} 人" in closed["closing_note"]
    report = api.get(f"/api/incidents/{incident_id}/report", headers=users["district"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "决策时间线" in report.text and str(d["households"]) in report.text and "险情解除" in report.text
    timeline = api.get(f"/api/incidents/{incident_id}/timeline", headers=users["district"]).json()
    assert [e["kind"] for e in timeline][-1] == "incident.closed"
    assert all(e["kind"] != "evacuation.state" for e in timeline)
    entries = api.get("/api/audit", params={"action": "evacuation.state"}, headers=admin).json()
    assert entries and entries[0]["entity"] == "evacuation"

"""Task center on both backends: tasks decomposed level by level with progress rolled up, reminders and
escalation; plans as data (proposed activation, upgrade, dismissal); drills kept out of real statistics and
removed cleanly; shelters' capacity; bad input refused with a clear error and nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from shapely.geometry import Point, mapping, shape

from cityops.core import audit
from cityops.core.spatial import buffer_m
from cityops.tasks import catalogue as cat_module
from cityops.tasks import incidents, work
from cityops.tasks.catalogue import catalogue, load_catalogue, parse_level
from cityops.tasks.plans import on_warning_level
from tests.conftest import table_counts

METRIC = "EPSG:4545"


@pytest.fixture(scope="module")
def where(api):
    admin = api.login("admin")
    place = api.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
    grid = api.get(f"/api/units/{place['unit_code']}", headers=admin).json()
    village = grid["parent_code"]
    township = api.get(f"/api/units/{village}", headers=admin).json()["parent_code"]
    villages = api.get("/api/units", params={"parent": township, "limit": 3}, headers=admin).json()["items"]
    return {"place": place, "grid": grid["code"], "village": village, "township": township,
            "villages": [v["code"] for v in villages], "point": Point(place["lon"], place["lat"])}


def _no_change(api, fn):
    before = table_counts(api.store)
    result = fn()
    assert table_counts(api.store) == before, "a refused request changed the database"
    return result


# ------------------------------------------------------------------------------------------------ tasks

def test_task_published_decomposed_and_rolled_up(api, where):
    district, yihe = api.login("district"), api.login("yihe")
    deadline = datetime.now(UTC) + timedelta(days=2)
    r = api.post("/api/tasks", headers=district, json={
        "title": "汛前地质灾害隐患排查", "goal": "全部隐患点排查一遍并上报", "deadline": deadline.isoformat(),
        "unit_code": "500154", "target_units": [where["township"]],
        "attachments": [{"name": "排查表.xlsx", "url": "/files/checklist.xlsx"}]})
    assert r.status_code == 201, r.text
    root = r.json()
    assert root["level"] == "district" and root["attachments"][0]["name"] == "排查表.xlsx"
    assert [c["unit_code"] for c in root["children"]] == [where["township"]]
    assert root["progress"] == {"total": 1, "done": 0, "percent": 0.0, "overdue": 0, "unit": "tasks"}
    township_task = root["children"][0]["id"]

    # The township splits its part among villages; the village gives its part to a grid worker.
    r = api.post(f"/api/tasks/{township_task}/subtasks", headers=yihe,
                 json={"items": [{"unit_code": v} for v in where["villages"][:2]] + [{"unit_code": where["village"]}]})
    assert r.status_code == 201, r.text
    village_tasks = {c["unit_code"]: c["id"] for c in r.json()["children"]}
    assert len(village_tasks) == len({*where["villages"][:2], where["village"]})
    worker = api.get("/api/people", params={"unit": where["grid"], "post": "grid_worker"}, headers=district).json()["items"][0]
    taikang = api.login("taikang")
    r = api.post(f"/api/tasks/{village_tasks[where['village']]}/subtasks", headers=taikang,
                 json={"items": [{"unit_code": where["grid"], "assignee_person_id": worker["id"], "title": "排查老沟湾"}]})
    assert r.status_code == 201, r.text
    grid_task = r.json()["children"][0]
    assert grid_task["assignee_name"] == worker["name"] and grid_task["level"] == "grid"

    # The township sees its subtree; the village cadre sees its own branch and the chain above it only.
    seen = api.get(f"/api/tasks/{root['id']}", headers=taikang).json()
    assert [c["unit_code"] for c in seen["children"]] == [where["township"]]
    assert [c["unit_code"] for c in seen["children"][0]["children"]] == [where["village"]]

    # Progress reported upward: the leaves complete, their parents follow.
    n = len(village_tasks)
    r = api.post(f"/api/tasks/{grid_task['id']}/progress", headers=taikang, json={"status": "done", "note": "无新增裂缝"})
    assert r.status_code == 200, r.text
    tree = api.get(f"/api/tasks/{root['id']}", headers=district).json()
    assert tree["progress"]["total"] == n and tree["progress"]["done"] == 1
    assert tree["progress"]["percent"] == round(100 / n, 1)
    # A parent with open sub-tasks cannot be closed by hand.
    r = _no_change(api, lambda: api.post(f"/api/tasks/{township_task}/progress", headers=yihe, json={"status": "done"}))
    assert r.status_code == 409 and "open sub-task" in r.json()["message"]
    for unit, tid in village_tasks.items():
        if unit != where["village"]:
            assert api.post(f"/api/tasks/{tid}/progress", headers=yihe, json={"status": "done"}).status_code == 200
    tree = api.get(f"/api/tasks/{root['id']}", headers=district).json()
    assert tree["status"] == "done" and tree["progress"]["percent"] == 100.0


def test_task_from_case_links_back_and_overdue_is_reminded_then_escalated(api, where):
    yihe = api.login("yihe")
    r = api.post("/api/tasks", headers=yihe, json={"title": "处置案件:道路塌陷", "unit_code": where["township"],
                                                    "deadline": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
                                                    "target_units": [where["village"]], "source_kind": "case", "source_ref": "C-2026-0001"})
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["source_link"] == "/api/events/cases/C-2026-0001"
    found = api.get("/api/tasks", params={"source_ref": "C-2026-0001"}, headers=yihe).json()
    assert {t["id"] for t in found} == {task["id"], task["children"][0]["id"]}
    with api.store.sessions() as session:
        actor = audit.Actor("timer")
        scope = incidents.ALL
        soon = datetime.now(UTC) + timedelta(minutes=10)
        first = work.check_overdue(session, actor, scope, now=soon)
        assert task["id"] in first["reminded"] and not any(e["task_id"] == task["id"] for e in first["escalated"])
        later = work.check_overdue(session, actor, scope, now=soon + timedelta(hours=1))
        assert task["id"] not in later["reminded"]  # reminded once
        escalated = {e["task_id"]: e["to_unit"] for e in later["escalated"]}
        assert escalated[task["id"]] == "500154" and escalated[task["children"][0]["id"]] == where["township"]
        again = work.check_overdue(session, actor, scope, now=soon + timedelta(hours=2))
        assert task["id"] not in {e["task_id"] for e in again["escalated"]}
        session.commit()
    t = api.get(f"/api/tasks/{task['id']}", headers=yihe).json()
    assert t["reminded_at"] and t["escalated_at"]


def test_bad_task_input_is_refused(api, where):
    yihe = api.login("yihe")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    cases = [
        ({"title": "x", "unit_code": "999999999"}, 422, "unknown unit code"),
        ({"title": "x", "unit_code": where["township"], "deadline": past}, 422, "past"),
        ({"title": "x", "unit_code": where["township"], "deadline": "2026-07-23T18:00:00"}, 422, "time zone"),
        ({"title": "x", "unit_code": where["township"], "source_kind": "case"}, 422, "source_ref"),
        ({"title": "x", "unit_code": where["township"], "attachments": [{"name": "a", "url": "javascript:alert(1)"}]}, 422, "url"),
        ({"title": "x", "unit_code": where["township"], "assignee_person_id": 10**9}, 422, "person"),
        ({"title": "", "unit_code": where["township"]}, 422, "title"),
        ({"title": "x" * 201, "unit_code": where["township"]}, 422, "title"),
    ]
    for body, status, words in cases:
        r = _no_change(api, lambda body=body: api.post("/api/tasks", headers=yihe, json=body))
        assert r.status_code == status and words in r.text, (body, r.text)
    r = api.post("/api/tasks", headers=yihe, json={"title": "t", "unit_code": where["village"]})
    tid = r.json()["id"]
    # Sub-tasks go down, never sideways or up, and never beyond the parent's deadline.
    r = _no_change(api, lambda: api.post(f"/api/tasks/{tid}/subtasks", headers=yihe, json={"items": [{"unit_code": where["township"]}]}))
    assert r.status_code == 422 and "below" in r.json()["message"]
    r = _no_change(api, lambda: api.post(f"/api/tasks/{tid}/progress", headers=yihe, json={"status": "finished"}))
    assert r.status_code == 422
    assert api.post(f"/api/tasks/{tid}/progress", headers=yihe, json={"status": "done"}).status_code == 200
    r = _no_change(api, lambda: api.post(f"/api/tasks/{tid}/progress", headers=yihe, json={"status": "cancelled"}))
    assert r.status_code == 409


# ------------------------------------------------------------------------------------ plans and levels

def test_plan_catalogue_is_validated_and_levels_parse(tmp_path):
    cat = catalogue()
    assert {p.key for p in cat.plans} >= {"geohazard", "flood", "dangerous_house"}
    # domain.md §7 checks: 120 → III, 1 200 → I, 99 → IV, 500 → II (boundaries inclusive).
    assert [cat.grading.grade(n) for n in (120, 1200, 99, 500, 1000, 100)] == [3, 1, 4, 2, 1, 3]
    assert [parse_level(x) for x in ("red", "橙", "III", 4, "2", None, "none")] == [1, 2, 3, 4, 2, None, None]
    for bad in (5, 0.5, "purple", True):
        with pytest.raises(Exception, match="level"):
            parse_level(bad)
    broken = tmp_path / "plans.toml"
    text = Path(cat_module.CATALOGUE).read_text(encoding="utf-8").replace('next = ["in_shelter", "returned"]', 'next = ["teleported"]')
    broken.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="teleported"):
        load_catalogue(broken)
    broken.write_text(text.replace('next = ["teleported"]', 'next = ["in_shelter", "returned"]').replace("[plans.levels.4]", "[plans.levels.9]"),
                      encoding="utf-8")
    with pytest.raises(ValueError, match="1, 2, 3 and 4"):
        load_catalogue(broken)


def test_proposed_plan_waits_for_one_click_and_can_be_dismissed(api, where):
    yihe = api.login("yihe")
    body = mapping(buffer_m(where["point"], 40, METRIC))
    with api.store.sessions() as session:
        # Below the trigger level nothing happens.
        assert on_warning_level(session, risk_point_code="WL-001", hazard_type="waterlogging", level="yellow",
                                unit_code=where["grid"], geometry=shape(body), evidence={}) is None
        incident = on_warning_level(session, risk_point_code="WL-001", hazard_type="waterlogging", level="orange",
                                    unit_code=where["grid"], geometry=shape(body), evidence={"depth_cm": 45})
        session.commit()
        iid = incident.id
    inc = api.get(f"/api/incidents/{iid}", headers=yihe).json()
    assert inc["status"] == "proposed" and inc["plan_key"] == "flood" and inc["zone"] is not None
    assert inc["totals"]["district"]["households"] == 0  # nothing locked before confirmation
    assert api.get("/api/tasks", params={"incident_id": iid}, headers=yihe).json() == []
    r = api.post(f"/api/incidents/{iid}/activate", headers=yihe)
    assert r.status_code == 200 and r.json()["status"] == "active"
    inc = api.get(f"/api/incidents/{iid}", headers=yihe).json()
    assert inc["totals"]["district"]["households"] > 0
    assert {t["action_key"] for t in api.get("/api/tasks", params={"incident_id": iid}, headers=yihe).json()} == {"evacuate", "shelter"}
    r = _no_change(api, lambda: api.post(f"/api/incidents/{iid}/activate", headers=yihe))
    assert r.status_code == 409
    # The warning clears: logged with a stand-down proposal, the response stays until an operator decides.
    with api.store.sessions() as session:
        on_warning_level(session, risk_point_code="WL-001", hazard_type="waterlogging", level=None, unit_code=where["grid"],
                         geometry=None, evidence={})
        session.commit()
    timeline = api.get(f"/api/incidents/{iid}/timeline", headers=yihe).json()
    assert timeline[-1]["kind"] == "warning.lowered" and "解除" in timeline[-1]["message"]
    assert api.post(f"/api/incidents/{iid}/stand-down", headers=yihe, json={"reason": "积水退去"}).status_code == 200
    assert api.post(f"/api/incidents/{iid}/close", headers=yihe, json={"note": "结束"}).json()["status"] == "closed"
    # Another proposal, dismissed.
    r = api.post("/api/incidents", headers=yihe, json={"hazard_type": "dangerous_house", "level": "II", "unit_code": where["grid"],
                                                        "geometry": mapping(where["point"]), "propose": True})
    assert r.status_code == 201 and r.json()["status"] == "proposed"
    r = api.post(f"/api/incidents/{r.json()['id']}/dismiss", headers=yihe, json={"reason": "现场核实无险情"})
    assert r.json()["status"] == "dismissed"


def test_bad_incident_and_zone_input(api, where):
    yihe = api.login("yihe")
    grid = where["grid"]
    bowtie = {"type": "Polygon", "coordinates": [[[108.0, 31.0], [108.01, 31.01], [108.01, 31.0], [108.0, 31.01], [108.0, 31.0]]]}
    refused = [
        ({"hazard_type": "meteor", "level": 2, "unit_code": grid}, 422, "no emergency plan"),
        ({"hazard_type": "landslide", "level": 7, "unit_code": grid}, 422, "out of range"),
        ({"hazard_type": "landslide", "level": "purple", "unit_code": grid}, 422, "purple"),
        ({"hazard_type": "landslide", "level": 2, "unit_code": "500154999999999"}, 422, "unknown unit"),
        ({"hazard_type": "landslide", "level": 2, "unit_code": grid, "geometry": bowtie}, 422, "invalid"),
        ({"hazard_type": "landslide", "level": 2, "unit_code": grid, "geometry": {"type": "Point", "coordinates": [0, 0]}}, 422, "outside"),
        ({"hazard_type": "landslide", "level": 2, "unit_code": grid, "geometry": {"type": "Polygon"}}, 422, "malformed"),
    ]
    for body, status, words in refused:
        r = _no_change(api, lambda body=body: api.post("/api/incidents", headers=yihe, json=body))
        assert r.status_code == status and words in r.json()["message"], (body, r.text)
    r = api.post("/api/incidents", headers=yihe, json={"hazard_type": "landslide", "level": 3, "unit_code": grid, "drill": True})
    iid = r.json()["id"]
    zone = mapping(buffer_m(where["point"], 50, METRIC))
    zone_refused = [
        ({"geometry": bowtie}, 422, "invalid"),
        ({"geometry": {"type": "LineString", "coordinates": [[108.4, 31.1], [108.5, 31.2]]}}, 422, "Polygon"),
        ({"geometry": zone, "buffer_m": 100}, 422, "exactly one"),
        ({"buffer_m": 100}, 422, "no hazard body"),
        ({"buffer_m": 10**6}, 422, "buffer_m"),
        ({"features": {"type": "FeatureCollection", "features": []}}, 422, "non-empty"),
        ({"features": {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": bowtie}]}}, 422, "feature 0"),
        ({"features": {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": zone}] * 1001}}, 422, "at most"),
    ]
    for body, status, words in zone_refused:
        r = _no_change(api, lambda body=body: api.post(f"/api/incidents/{iid}/zones", headers=yihe, json=body))
        assert r.status_code == status and words in r.json()["message"], (body, r.text)
    r = api.post(f"/api/incidents/{iid}/zones", headers=yihe,
                 json={"features": {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": zone, "properties": {}}]}})
    assert r.status_code == 201 and r.json()["source"] == "imported"
    # An oversized body is refused before it is read.
    r = _no_change(api, lambda: api.post(f"/api/incidents/{iid}/zones", headers={**yihe, "content-type": "application/json"},
                                         content=b"{" + b" " * (api.store.settings.max_upload_bytes + 100_000) + b"}"))
    assert r.status_code == 413
    assert api.delete(f"/api/incidents/{iid}", headers=yihe).status_code == 200


# ------------------------------------------------------------------------------------ drills, shelters

def _lasting_counts(store) -> dict[str, int]:
    """Row counts of what a removed drill must leave as it found, i.e. all but the records of what happened: the
    audit log, the bus's outbox (the drill's events were published) and the notifications its people were sent
    (marked 【演练】; what was said to people stays said)."""
    return {k: v for k, v in table_counts(store).items()
            if k not in ("audit_log", "bus_outbox") and not k.startswith("notify_")}


def test_drill_is_marked_kept_out_of_statistics_and_removed_cleanly(api, where):
    yihe = api.login("yihe")
    real_before = api.get("/api/incidents/stats", headers=yihe).json()
    counts_before = _lasting_counts(api.store)
    shelter = next(s for s in api.get("/api/shelters", headers=yihe).json() if s["unit_code"] == where["village"])
    r = api.post("/api/incidents", headers=yihe, json={"hazard_type": "landslide", "level": "orange", "unit_code": where["grid"],
                                                        "geometry": mapping(buffer_m(where["point"], 20, METRIC)), "drill": True,
                                                        "title": "老沟湾滑坡演练"})
    assert r.status_code == 201 and r.json()["drill"]
    iid = r.json()["id"]
    items = api.get(f"/api/incidents/{iid}/evacuations", headers=yihe).json()["items"]
    assert items and all(i["drill"] for i in items)
    r = api.post(f"/api/evacuations/{items[0]['id']}/state", headers=yihe, json={"state": "in_shelter", "shelter_id": shelter["id"]})
    assert r.status_code == 200, r.text
    for item in items[1:]:
        assert api.post(f"/api/evacuations/{item['id']}/state", headers=yihe, json={"state": "moved"}).status_code == 200
    assert api.get("/api/incidents/stats", headers=yihe).json() == real_before  # drills stay out
    with_drills = api.get("/api/incidents/stats", params={"include_drills": True}, headers=yihe).json()
    assert with_drills["safe_households"] >= real_before["safe_households"] + len(items)
    assert api.get("/api/incidents", params={"drill": True}, headers=yihe).json()[0]["id"] == iid
    report = api.get(f"/api/incidents/{iid}/report", headers=yihe).text
    assert "演练 DRILL" in report
    # Removed cleanly: every table as before (the audit log keeps the record of it), shelter places back.
    r = api.delete(f"/api/incidents/{iid}", headers=yihe)
    assert r.status_code == 200 and r.json()["removed"]["task_evacuations"] == len(items)
    assert _lasting_counts(api.store) == counts_before
    after = next(s for s in api.get("/api/shelters", headers=yihe).json() if s["id"] == shelter["id"])
    assert after["occupancy"] == shelter["occupancy"]
    assert api.get(f"/api/incidents/{iid}", headers=yihe).status_code == 404
    entries = api.get("/api/audit", params={"action": "incident.remove_drill"}, headers=api.login("admin")).json()
    assert entries[0]["entity_key"] == str(iid)
    # A real incident is never removed.
    real = api.post("/api/incidents", headers=yihe, json={"hazard_type": "landslide", "level": 4, "unit_code": where["grid"]}).json()
    r = _no_change(api, lambda: api.delete(f"/api/incidents/{real['id']}", headers=yihe))
    assert r.status_code == 409 and "real" in r.json()["message"]


def test_households_to_move_are_named_as_people_know_them(api, where):
    """The phone and the workbench show a household by its head and address, never its code; personal data is
    masked for a role without personal.read, as the housing registry masks it."""
    yihe, leader = api.login("yihe"), api.login("leader")
    r = api.post("/api/incidents", headers=yihe, json={"hazard_type": "landslide", "level": "orange", "unit_code": where["grid"],
                                                        "geometry": mapping(buffer_m(where["point"], 20, METRIC)), "drill": True})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    try:
        clear = api.get(f"/api/incidents/{iid}/evacuations", headers=yihe).json()["items"]
        assert clear
        for item in clear:
            household = api.get(f"/api/households/{item['household_code']}", headers=yihe).json()
            assert item["head_name"] == household["head_name"] and item["address"] == household["address"]
            assert item["phone"] == household["phone"]
        masked = api.get(f"/api/incidents/{iid}/evacuations", headers=leader).json()["items"]
        by_id = {i["id"]: i for i in clear}
        for item in masked:
            assert item["head_name"] == by_id[item["id"]]["head_name"][0] + "**"
            assert item["address"] == by_id[item["id"]]["address"]
            assert item["phone"] != by_id[item["id"]]["phone"]
    finally:
        assert api.delete(f"/api/incidents/{iid}", headers=yihe).status_code == 200


def test_the_phone_gets_its_households_in_one_answer(api, where):
    """The phone command room's first screen is one request on a poor connection: the active incidents with how
    many households of each are the worker's, the chosen incident's households nearest first and its totals — the
    same as the separate lists say."""
    yihe = api.login("yihe")
    r = api.post("/api/incidents", headers=yihe, json={"hazard_type": "landslide", "level": "orange", "unit_code": where["grid"],
                                                        "geometry": mapping(buffer_m(where["point"], 20, METRIC)), "drill": True})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    near = {"lon": where["place"]["lon"], "lat": where["place"]["lat"]}
    try:
        params = {"state": "to_move,refused,not_home", **near}
        mine = api.get("/api/evacuations/mine", headers=yihe, params=params).json()
        listed = {i["id"]: i for i in api.get("/api/incidents", headers=yihe, params={"status": "active"}).json()}
        assert {i["id"] for i in mine["incidents"]} == set(listed)
        ours = next(i for i in mine["incidents"] if i["id"] == iid)
        assert ours["title"] == listed[iid]["title"]
        assert ours["mine"] == api.get(f"/api/incidents/{iid}/evacuations", headers=yihe, params={"limit": 1}).json()["total"] > 0
        # Asked for: that incident; not asked: the first (newest) with households of the worker's — here the new one.
        for chosen in (api.get("/api/evacuations/mine", headers=yihe, params={**params, "incident_id": iid}).json(), mine):
            assert chosen["incident_id"] == iid
            assert chosen["evacuations"] == api.get(f"/api/incidents/{iid}/evacuations", headers=yihe, params=params).json()
            assert chosen["totals"]["district"] == api.get(f"/api/incidents/{iid}/totals", headers=yihe).json()["district"]
        distances = [i["distance_m"] for i in mine["evacuations"]["items"]]
        assert distances == sorted(distances)
        r = api.get("/api/evacuations/mine", headers=yihe, params={"state": "flying"})
        assert r.status_code == 422 and "flying" in r.json()["message"]
        assert api.get("/api/evacuations/mine", headers=yihe, params={"lon": 106.5}).status_code == 422
    finally:
        assert api.delete(f"/api/incidents/{iid}", headers=yihe).status_code == 200


def test_shelter_capacity_is_never_exceeded(api, where):
    yihe = api.login("yihe")
    p = where["point"]
    r = api.post("/api/shelters", headers=yihe, json={"code": "SH-TINY", "name": "老沟湾临时帐篷", "capacity": 3, "lon": p.x, "lat": p.y,
                                                       "unit_code": where["grid"]})
    assert r.status_code == 201, r.text
    tiny = r.json()
    bad = [({"code": "SH-TINY", "name": "x", "capacity": 3, "lon": p.x, "lat": p.y, "unit_code": where["grid"]}, 409),
           ({"code": "SH-X", "name": "x", "capacity": 0, "lon": p.x, "lat": p.y, "unit_code": where["grid"]}, 422),
           ({"code": "SH-X", "name": "x", "capacity": 3, "lon": 200, "lat": p.y, "unit_code": where["grid"]}, 422),
           ({"code": "SH-X", "name": "x", "capacity": 3, "lon": 100.0, "lat": 25.0, "unit_code": where["grid"]}, 422)]
    for body, status in bad:
        r = _no_change(api, lambda body=body: api.post("/api/shelters", headers=yihe, json=body))
        assert r.status_code == status, r.text
    r = api.post("/api/incidents", headers=yihe, json={"hazard_type": "landslide", "level": 2, "unit_code": where["grid"], "drill": True,
                                                        "geometry": mapping(buffer_m(p, 60, METRIC))})
    iid = r.json()["id"]
    items = api.get(f"/api/incidents/{iid}/evacuations", headers=yihe).json()["items"]
    placed = 0
    for item in items:
        r = api.post(f"/api/evacuations/{item['id']}/state", headers=yihe, json={"state": "in_shelter", "shelter_id": tiny["id"]})
        if placed + item["members"] <= 3:
            assert r.status_code == 200, r.text
            placed += item["members"]
        else:
            assert r.status_code == 409 and "full" in r.json()["message"]
            assert api.get(f"/api/evacuations/{item['id']}/history", headers=yihe).json() == []
    occupancy = next(s for s in api.get("/api/shelters", headers=yihe).json() if s["id"] == tiny["id"])["occupancy"]
    assert occupancy == placed <= 3
    near = api.get("/api/shelters", params={"lon": p.x, "lat": p.y}, headers=yihe).json()
    assert near[0]["id"] == tiny["id"] and near[0]["distance_m"] < 1
    # Stale version and missing shelter are refused; nothing changes.
    item = items[-1]
    current = api.get(f"/api/incidents/{iid}/evacuations", headers=yihe).json()["items"][-1]
    r = _no_change(api, lambda: api.post(f"/api/evacuations/{item['id']}/state", headers=yihe,
                                         json={"state": "moved", "expected_version": current["version"] + 5}))
    assert r.status_code == 409 and "meanwhile" in r.json()["message"]
    r = _no_change(api, lambda: api.post(f"/api/evacuations/{item['id']}/state", headers=yihe, json={"state": "in_shelter"}))
    assert r.status_code == 422 and "shelter_id" in r.json()["message"]
    r = _no_change(api, lambda: api.post(f"/api/evacuations/{item['id']}/state", headers=yihe,
                                         json={"state": "moved", "lon": 108.0}))
    assert r.status_code == 422 and "lat" in r.json()["message"]
    assert api.delete(f"/api/incidents/{iid}", headers=yihe).status_code == 200
    assert next(s for s in api.get("/api/shelters", headers=yihe).json() if s["id"] == tiny["id"])["occupancy"] == 0


def test_read_only_roles_cannot_command(api, where):
    leader, gridworker = api.login("leader"), api.login("gridworker")
    for headers in (leader, gridworker):
        r = _no_change(api, lambda headers=headers: api.post("/api/incidents", headers=headers,
                                                             json={"hazard_type": "landslide", "level": 2, "unit_code": where["grid"]}))
        assert r.status_code == 403
    r = _no_change(api, lambda: api.post("/api/tasks", headers=gridworker, json={"title": "x", "unit_code": where["grid"]}))
    assert r.status_code == 403
    assert api.get("/api/incidents", headers=leader).status_code == 200


def test_cli_plans_warning_and_overdue(tmp_path):
    """The CLI delivers a warning (as a drill) into the embedded store and runs the overdue timer."""
    from sqlalchemy import select
    from typer.testing import CliRunner

    from cityops.cli import app
    from cityops.demo.generator import build_demo
    from cityops.org.models import Place
    from tests.conftest import SMALL_DEMO, make_store

    store, close = make_store("sqlite", tmp_path / "cli")
    try:
        build_demo(store.sessions, store.org, SMALL_DEMO)
        with store.sessions() as session:
            place = session.scalar(select(Place).where(Place.name == "老沟湾"))
            lon, lat, unit = place.geom.x, place.geom.y, place.unit_code
        runner = CliRunner()
        env = {"CITYOPS_SECRET_KEY": "test-secret", "CITYOPS_LOG_JSON": "false"}
        r = runner.invoke(app, ["tasks", "plans"], env=env)
        assert r.exit_code == 0 and "geohazard" in r.output
        args = ["tasks", "warning", "--risk-point", "RP-1", "--hazard", "landslide", "--unit", unit, "--lon", str(lon), "--lat", str(lat),
                "--drill", "--data-dir", str(tmp_path / "cli")]
        r = runner.invoke(app, [*args, "--level", "yellow"], env=env)
        assert r.exit_code == 0 and "no response" in r.output, r.output
        r = runner.invoke(app, [*args, "--level", "orange"], env=env)
        assert r.exit_code == 0 and "active" in r.output and "households" in r.output, r.output
        r = runner.invoke(app, [*args, "--level", "purple"], env=env)
        assert r.exit_code == 1 and "purple" in r.output
        r = runner.invoke(app, ["tasks", "check-overdue", "--data-dir", str(tmp_path / "cli")], env=env)
        assert r.exit_code == 0 and "reminded 0" in r.output, r.output
    finally:
        close()


def test_concurrent_workers_keep_totals_exact_and_shelters_within_capacity(api, where):
    """Workers in parallel threads: every household reported once, the shelter never over-full, totals exact."""
    from concurrent.futures import ThreadPoolExecutor

    yihe = api.login("yihe")
    p = where["point"]
    shelter = api.post("/api/shelters", headers=yihe, json={"code": "SH-RACE", "name": "并发测试安置点", "capacity": 40, "lon": p.x,
                                                             "lat": p.y, "unit_code": where["grid"]}).json()
    r = api.post("/api/incidents", headers=yihe, json={"hazard_type": "landslide", "level": 2, "unit_code": where["grid"], "drill": True,
                                                        "geometry": mapping(buffer_m(p, 80, METRIC))})
    iid = r.json()["id"]
    items = api.get(f"/api/incidents/{iid}/evacuations", headers=yihe).json()["items"]
    assert len(items) >= 20

    def report(item):
        # Half try the shelter (it cannot take them all), the rest are moved; each report is sent twice.
        body = {"state": "in_shelter", "shelter_id": shelter["id"]} if item["id"] % 2 else {"state": "moved"}
        body["request_key"] = f"race-{item['id']}"
        first = api.post(f"/api/evacuations/{item['id']}/state", headers=yihe, json=body)
        again = api.post(f"/api/evacuations/{item['id']}/state", headers=yihe, json=body)
        return item, first.status_code, again.status_code

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(report, items))
    assert all(code in (200, 409) for _, code, _ in results), results
    sheltered = [i for i, code, _ in results if code == 200 and i["id"] % 2]
    moved = [i for i, code, _ in results if code == 200 and not i["id"] % 2]
    occupancy = next(s for s in api.get("/api/shelters", headers=yihe).json() if s["id"] == shelter["id"])["occupancy"]
    assert occupancy == sum(i["members"] for i in sheltered) <= 40
    d = api.get(f"/api/incidents/{iid}/totals", headers=yihe).json()["district"]
    assert d["by_state"]["in_shelter"] == len(sheltered) and d["by_state"]["moved"] == len(moved)
    assert d["safe_households"] + d["remaining_households"] == d["households"] == len(items)
    events = sum(len(api.get(f"/api/evacuations/{i['id']}/history", headers=yihe).json()) for i in items)
    assert events == len(sheltered) + len(moved)  # retries recorded nothing twice
    assert api.delete(f"/api/incidents/{iid}", headers=yihe).status_code == 200


def test_open_streams_do_not_hold_database_connections(api, where):
    """Each live stream polls with its own short session: streams never pin the request's connection."""
    import threading
    import time

    yihe = api.login("yihe")
    iid = api.post("/api/incidents", headers=yihe, json={"hazard_type": "landslide", "level": 4, "unit_code": where["grid"],
                                                          "drill": True}).json()["id"]
    pool = api.app.state.ctx.engine.pool
    results = []

    def listen():
        results.append(api.get(f"/api/incidents/{iid}/stream", params={"seconds": 4}, headers=yihe).status_code)

    threads = [threading.Thread(target=listen) for _ in range(20)]  # were each to hold a connection, 20 would be checked out
    for t in threads:
        t.start()
    time.sleep(2)  # the streams are open and polling
    held = [pool.checkedout() for _ in range(20) if not time.sleep(0.02)]
    started = time.perf_counter()
    assert api.get("/api/incidents/stats", headers=yihe).status_code == 200
    assert time.perf_counter() - started < 2
    for t in threads:
        t.join(30)
    assert results == [200] * 20
    assert min(held) < 5, f"open streams hold connections: {held}"
    assert api.delete(f"/api/incidents/{iid}", headers=yihe).status_code == 200

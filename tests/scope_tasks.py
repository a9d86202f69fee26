"""Scope rows of the task center for tests/test_api_scope.py: the outsider (义和镇) never sees or changes 大德镇's
incidents, zones, household tasks, shelters or tasks, and cannot draw a zone reaching into 大德镇."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from shapely.geometry import mapping, shape
from sqlalchemy import update

from cityops.core.spatial import buffer_m
from cityops.tasks.models import Task


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def _outside_jurisdiction(r):
    assert r.status_code == 403 and "outside your jurisdiction" in r.json()["message"], r.text


def _clean(dade: str):
    def check(r):
        assert r.status_code == 200, r.text
        text = json.dumps(r.json(), ensure_ascii=False)
        assert "大德镇" not in text and dade not in text, f"foreign record leaked: {text[:300]}"
    return check


def _not_chosen(incident: int, clean):
    def check(r):
        clean(r)
        assert r.json()["incident_id"] != incident, "the phone's answer chose a foreign incident"
    return check


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    dade, yihe = world["dade"], world["yihe"]
    building = api.get(f"/api/buildings/{world['dade_building']}", headers=admin).json()
    body = mapping(buffer_m(shape(building["geometry"]).centroid, 20, "EPSG:4545"))
    r = api.post("/api/incidents", headers=admin, json={"hazard_type": "landslide", "level": 2, "unit_code": building["grid_code"],
                                                         "geometry": body, "risk_point_code": "RP-DADE-1"})
    assert r.status_code == 201, r.text
    incident = r.json()["id"]
    evacuation = api.get(f"/api/incidents/{incident}/evacuations", headers=admin).json()["items"][0]["id"]
    # A 义和镇 incident the outsider commands, to try a zone reaching into 大德镇.
    yihe_grid = api.get("/api/units", params={"root": yihe, "level": "grid", "limit": 1}, headers=admin).json()["items"][0]["code"]
    yihe_geom = shape(api.get(f"/api/units/{yihe_grid}", params={"geometry": True}, headers=admin).json()["geometry"])
    straddling = mapping(yihe_geom.union(shape(world["dade_grid"]["geometry"])))
    r = api.post("/api/incidents", headers=admin, json={"hazard_type": "landslide", "level": 3, "unit_code": yihe_grid})
    assert r.status_code == 201, r.text
    yihe_incident = r.json()["id"]
    r = api.post("/api/shelters", headers=admin, json={"code": "SH-DADE-X", "name": "大德镇临时安置点", "capacity": 50,
                                                        "lon": body["coordinates"][0][0][0], "lat": body["coordinates"][0][0][1],
                                                        "unit_code": dade})
    assert r.status_code == 201, r.text
    deadline = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    r = api.post("/api/tasks", headers=admin, json={"title": "大德镇汛前排查", "deadline": deadline, "unit_code": dade,
                                                     "target_units": [world["dade_village"]]})
    assert r.status_code == 201, r.text
    task = r.json()["id"]
    # Make the foreign task overdue, so a check-overdue that reached it would change it.
    with api.store.sessions() as session:
        session.execute(update(Task).where(Task.source_ref.is_(None), Task.unit_path.contains(dade))
                        .values(deadline=datetime.now(UTC) - timedelta(hours=2)))
        session.commit()

    clean = _clean(dade)
    i = {"incident_id": incident}
    return {
        ("GET", "/api/plans"): [dict(check=lambda r: r.status_code == 200 and {p["key"] for p in r.json()} >= {"geohazard"})],
        ("GET", "/api/incidents"): [dict(check=clean), dict(params={"drill": "false"}, check=clean)],
        ("POST", "/api/incidents"): [dict(json={"hazard_type": "landslide", "level": 1, "unit_code": dade}, check=_denied),
                                     dict(json={"hazard_type": "landslide", "level": 1, "unit_code": building["grid_code"],
                                                "drill": True}, check=_denied)],
        ("POST", "/api/incidents/warning"): [dict(json={"risk_point_code": "RP-DADE-1", "hazard_type": "landslide", "level": "red",
                                                        "unit_code": building["grid_code"]}, check=_denied)],
        ("GET", "/api/incidents/stats"): [dict(check=lambda r: r.status_code == 200 and r.json()["households"] == 0
                                               and r.json()["incidents"].get("active", 0) <= 1)],
        ("GET", "/api/incidents/{incident_id}"): [dict(path=i, check=_denied)],
        ("POST", "/api/incidents/{incident_id}/activate"): [dict(path=i, check=_denied)],
        ("POST", "/api/incidents/{incident_id}/dismiss"): [dict(path=i, json={"reason": "x"}, check=_denied)],
        ("POST", "/api/incidents/{incident_id}/level"): [dict(path=i, json={"level": 1}, check=_denied)],
        ("POST", "/api/incidents/{incident_id}/stand-down"): [dict(path=i, json={"reason": "x"}, check=_denied)],
        ("POST", "/api/incidents/{incident_id}/close"): [dict(path=i, json={"note": "x"}, check=_denied)],
        ("DELETE", "/api/incidents/{incident_id}"): [dict(path=i, check=_denied)],
        ("POST", "/api/incidents/{incident_id}/zones"): [
            dict(path=i, json={"geometry": world["dade_grid"]["geometry"]}, check=_denied),
            # Its own incident, but a zone reaching into 大德镇: outside its jurisdiction.
            dict(path={"incident_id": yihe_incident}, json={"geometry": world["dade_grid"]["geometry"]}, check=_denied),
            dict(path={"incident_id": yihe_incident}, json={"geometry": straddling}, check=_outside_jurisdiction)],
        ("GET", "/api/incidents/{incident_id}/zones"): [dict(path=i, check=_denied)],
        ("GET", "/api/incidents/{incident_id}/threatened"): [dict(path=i, check=_denied)],
        ("GET", "/api/incidents/{incident_id}/evacuations"): [dict(path=i, check=_denied)],
        ("GET", "/api/incidents/{incident_id}/totals"): [dict(path=i, check=_denied)],
        ("GET", "/api/incidents/{incident_id}/timeline"): [dict(path=i, check=_denied)],
        ("GET", "/api/incidents/{incident_id}/stream"): [dict(path=i, params={"seconds": 0}, check=_denied)],
        ("GET", "/api/incidents/{incident_id}/report"): [dict(path=i, check=_denied)],
        ("POST", "/api/evacuations/{evacuation_id}/state"): [dict(path={"evacuation_id": evacuation}, json={"state": "moved"},
                                                                  check=_denied)],
        # The phone's first answer: asked for 大德镇's incident, the outsider gets its own choice, never the foreign one.
        ("GET", "/api/evacuations/mine"): [dict(check=clean),
                                           dict(params={"incident_id": incident}, check=_not_chosen(incident, clean))],
        ("GET", "/api/evacuations/{evacuation_id}/history"): [dict(path={"evacuation_id": evacuation}, check=_denied)],
        ("GET", "/api/shelters"): [dict(check=clean)],
        ("POST", "/api/shelters"): [dict(json={"code": "SPY", "name": "x", "capacity": 5, "lon": body["coordinates"][0][0][0],
                                               "lat": body["coordinates"][0][0][1], "unit_code": dade}, check=_denied)],
        ("GET", "/api/tasks"): [dict(check=clean), dict(params={"overdue": "true"}, check=clean)],
        ("POST", "/api/tasks"): [dict(json={"title": "x", "unit_code": dade}, check=_denied),
                                 dict(json={"title": "x", "unit_code": yihe, "target_units": [world["dade_village"]]}, check=_denied)],
        ("POST", "/api/tasks/check-overdue"): [dict(check=lambda r: r.status_code == 200 and r.json()["reminded"] == []
                                                    and r.json()["escalated"] == [])],
        ("GET", "/api/tasks/{task_id}"): [dict(path={"task_id": task}, check=_denied)],
        ("POST", "/api/tasks/{task_id}/subtasks"): [dict(path={"task_id": task}, json={"items": [{"unit_code": world["dade_village"]}]},
                                                         check=_denied)],
        ("POST", "/api/tasks/{task_id}/progress"): [dict(path={"task_id": task}, json={"status": "done"}, check=_denied)],
    }

"""Scope rows of the video and call-log capabilities for tests/test_api_scope.py: 大德镇's cameras and calls are
invisible and untouchable for the 义和镇 outsider."""

from __future__ import annotations


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def _inside(dade: str):
    def check(r):
        assert r.status_code == 200, r.text
        assert f"/{dade}/" not in r.text and f'"unit_code":"{dade}' not in r.text.replace(" ", ""), r.text[:300]
    return check


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    dade = world["dade"]
    cam = api.get("/api/video/cameras", params={"root": dade, "limit": 1}, headers=admin).json()["items"][0]
    r = api.post("/api/calls", headers=admin, json={"person_id": world["dade_person"], "outcome": "answered", "note": "大德镇"})
    assert r.status_code == 201, r.text
    inside = _inside(dade)
    code = {"code": cam["code"]}
    case = api.get("/api/events/cases", params={"root": dade, "limit": 1}, headers=admin).json()["items"][0]
    return {
        ("GET", "/api/video/cameras"): [dict(check=inside), dict(params={"root": dade}, check=_denied)],
        ("POST", "/api/video/cameras"): [dict(json={"code": "50015401081326900088", "name": "x", "unit_code": world["dade_grid"]["code"],
                                                   "direction_deg": 0, "geometry": {"type": "Point", "coordinates": [cam["lon"], cam["lat"]]}},
                                              check=_denied)],
        ("GET", "/api/video/cameras/{code}"): [dict(path=code, check=_denied)],
        ("PATCH", "/api/video/cameras/{code}"): [dict(path=code, json={"status": "fault"}, check=_denied)],
        ("GET", "/api/video/cameras/{code}/stream/{name}"): [dict(path={**code, "name": "index.m3u8"}, check=_denied)],
        ("GET", "/api/video/map"): [dict(check=inside)],
        ("GET", "/api/video/nearest"): [dict(params={"lon": cam["lon"], "lat": cam["lat"], "radius_m": 5000}, check=inside)],
        ("GET", "/api/video/nearest/incident/{incident_id}"): [dict(path={"incident_id": 99999}, check=_denied)],
        ("GET", "/api/video/nearest/case/{number}"): [dict(path={"number": case["number"]}, check=_denied)],
        ("POST", "/api/calls"): [dict(json={"person_id": world["dade_person"], "outcome": "answered"}, check=_denied)],
        ("GET", "/api/calls"): [dict(check=lambda r: r.status_code == 200 and "大德镇" not in r.text),
                                dict(params={"unit": dade}, check=_denied)],
    }

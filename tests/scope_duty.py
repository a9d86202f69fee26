"""Scope rows of the duty routes (rosters, assignments, who is on duty, handovers) for tests/test_api_scope.py."""

from __future__ import annotations


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    dade = world["dade"]
    r = api.get("/api/duty/roster", params={"roster": dade, "start": "2026-07-08", "end": "2026-07-08"}, headers=admin)
    assert r.status_code == 200, r.text
    dade_assignment = r.json()["days"][0]["assignments"][0]
    people = api.get("/api/people", params={"unit": dade, "limit": 100}, headers=admin).json()["items"]
    dade_pair = [p["id"] for p in people if p["unit_code"] == dade][:2]
    r = api.post("/api/duty/handovers", headers=admin, json={"roster": dade, "handed_by": dade_pair[0], "taken_by": dade_pair[1],
                                                            "summary": "大德镇交班", "items": [{"text": "大德镇事项"}]})
    assert r.status_code == 201, r.text

    def own_rosters(r):
        assert r.status_code == 200, r.text
        assert dade not in {x["key"] for x in r.json()}

    return {
        ("GET", "/api/duty/rosters"): [dict(check=own_rosters)],
        ("GET", "/api/duty/roster"): [dict(params={"roster": dade}, check=_denied)],
        ("GET", "/api/duty/roster.xlsx"): [dict(params={"roster": dade}, check=_denied)],
        ("POST", "/api/duty/assignments"): [dict(json={"roster": dade, "items": [
            {"person_id": world["yihe_person"], "role": "operator", "shift": "day", "day": "2028-01-03"}]}, check=_denied)],
        ("POST", "/api/duty/generate"): [dict(json={"roster": dade, "start": "2028-01-03", "days": 2}, check=_denied)],
        ("DELETE", "/api/duty/assignments/{assignment_id}"): [dict(path={"assignment_id": dade_assignment["id"]}, check=_denied)],
        ("POST", "/api/duty/assignments/{assignment_id}/swap"): [
            dict(path={"assignment_id": dade_assignment["id"]}, json={"person_id": world["yihe_person"]}, check=_denied)],
        ("GET", "/api/duty/now"): [dict(params={"unit": dade}, check=_denied),
                                   dict(params={"unit": world["dade_village"]}, check=_denied)],
        ("GET", "/api/duty/handovers"): [dict(params={"roster": dade}, check=_denied)],
        ("POST", "/api/duty/handovers"): [dict(json={"roster": dade, "handed_by": dade_pair[0], "taken_by": dade_pair[1]},
                                               check=_denied)],
    }

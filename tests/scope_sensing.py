"""Scope rows of the sensing capability for tests/test_api_scope.py: 大德镇's devices, series and alarms are
invisible and untouchable for the 义和镇 outsider."""

from __future__ import annotations

from tests.sensing_helpers import make_device


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def _no_dade(dade: str):
    def check(r):
        assert r.status_code == 200, r.text
        text = r.text
        assert "大德" not in text and f"/{dade}/" not in text, f"foreign record leaked: {text[:300]}"
    return check


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    dade = world["dade"]
    dev = make_device(api, dade, "water_level", "depth", "cm", name="大德积水点")
    ds = dev["datastream"]
    r = api.post("/api/sensing/observations", headers=admin,
                 json={"observations": [{"datastream_id": ds, "phenomenonTime": "2026-07-08T08:00:00+08:00", "result": 60.0}]})
    assert r.status_code == 201, r.text
    alarm = next(a for a in api.get("/api/sensing/alarms", params={"limit": 1000}, headers=admin).json()["items"]
                 if a["datastream_id"] == ds)
    inside = _no_dade(dade)
    aid = {"alarm_id": alarm["id"]}
    return {
        ("POST", "/api/sensing/observations"): [dict(json={"observations": [{"datastream_id": ds, "phenomenonTime": "2026-07-08T09:00:00Z",
                                                                              "result": 1.0}]}, check=_denied)],
        ("GET", "/api/sensing/device-types"): [dict(check=lambda r: r.status_code == 200 and len(r.json()) == 7)],
        ("GET", "/api/sensing/rules"): [dict(check=lambda r: r.status_code == 200 and r.json()["rules"])],
        ("GET", "/api/sensing/devices"): [dict(check=inside), dict(params={"device_type": "water_level"}, check=inside)],
        ("GET", "/api/sensing/datastreams/{ds_id}/series"): [dict(path={"ds_id": ds}, check=_denied)],
        ("GET", "/api/sensing/datastreams/{ds_id}/export"): [dict(path={"ds_id": ds}, check=_denied)],
        ("GET", "/api/sensing/alarms"): [dict(check=inside), dict(params={"status": "active"}, check=inside)],
        ("GET", "/api/sensing/alarms/stream"): [dict(params={"timeout": 0.3}, check=inside)],
        ("GET", "/api/sensing/alarms/{alarm_id}"): [dict(path=aid, check=_denied)],
        ("POST", "/api/sensing/alarms/{alarm_id}/acknowledge"): [dict(path=aid, check=_denied)],
        ("POST", "/api/sensing/alarms/{alarm_id}/clear"): [dict(path=aid, json={"reason": "x"}, check=_denied)],
        ("POST", "/api/sensing/alarms/{alarm_id}/assign"): [dict(path=aid, json={"assignee": "yihe_ops"}, check=_denied)],
        ("POST", "/api/sensing/alarms/{alarm_id}/comments"): [dict(path=aid, json={"text": "x"}, check=_denied)],
    }

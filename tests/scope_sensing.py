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


def test_sta_catalogue_changes_only_by_a_district_wide_principal(api, world):
    """Sensors and ObservedProperties are the district's shared catalogue: a township operator, a district
    operator scoped to one township and a device key get 403 for every change; a district-wide operator may."""
    from tests.conftest import table_counts
    from tests.sensing_helpers import OM, STA, UNITS

    admin = api.login("admin")
    r = api.post("/api/users", headers=admin, json={"username": "rain_gateway", "role": "integration", "scope_units": ["500154"]})
    assert r.status_code == 201, r.text
    key = api.post("/api/users/rain_gateway/api-keys", headers=admin, json={"name": "雨量网关"}).json()["api_key"]
    sensor = api.post(f"{STA}/Sensors", headers=admin, json={"name": "翻斗式雨量计", "description": "tipping bucket",
                                                              "encodingType": "text/plain", "metadata": "datasheet"}).json()["@iot.id"]
    prop = api.post(f"{STA}/ObservedProperties", headers=admin, json={"name": "降雨量", "definition": "http://example.org/def/rain",
                                                                      "description": "rainfall"}).json()["@iot.id"]
    new_sensor = {"name": "自建传感器", "description": "x", "encodingType": "text/plain", "metadata": "x"}
    new_prop = {"name": "自建属性", "definition": "http://example.org/def/x", "description": "x"}
    for name, headers in (("yihe", api.login("yihe")), ("yihe_ops", world["headers"]), ("device key", {"X-API-Key": key})):
        thing = api.post(f"{STA}/Things", headers=admin, json={"name": f"{name} 雨量站", "description": "d",
                                                                "properties": {"unit_code": world["yihe"]}}).json()["@iot.id"]
        stream = {"name": "雨量", "description": "d", "unitOfMeasurement": UNITS["mm"], "observationType": OM, "Thing": {"@iot.id": thing}}
        before = table_counts(api.store)
        for method, path, body in (("post", "Sensors", new_sensor), ("post", "ObservedProperties", new_prop),
                                   ("post", "Datastreams", {**stream, "Sensor": new_sensor, "ObservedProperty": {"@iot.id": prop}}),
                                   ("post", "Datastreams", {**stream, "Sensor": {"@iot.id": sensor}, "ObservedProperty": new_prop}),
                                   ("patch", f"Sensors({sensor})", {"description": "改"}),
                                   ("put", f"ObservedProperties({prop})", {**new_prop}),
                                   ("delete", f"ObservedProperties({prop})", None)):
            r = getattr(api, method)(f"{STA}/{path}", headers=headers, **({"json": body} if body is not None else {}))
            assert r.status_code == 403, f"{name}: {method.upper()} {path}: {r.status_code} {r.text}"
        assert table_counts(api.store) == before, f"{name}: a refused catalogue change changed the database"
        # Their own devices link the shared entries by id.
        r = api.post(f"{STA}/Datastreams", headers=headers,
                     json={**stream, "Sensor": {"@iot.id": sensor}, "ObservedProperty": {"@iot.id": prop}})
        assert r.status_code == 201, f"{name}: {r.text}"
    district = api.login("district")
    assert api.patch(f"{STA}/Sensors({sensor})", headers=district, json={"description": "区级维护"}).status_code == 200
    assert api.post(f"{STA}/ObservedProperties", headers=district, json=new_prop).status_code == 201

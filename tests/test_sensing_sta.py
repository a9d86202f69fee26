"""OGC SensorThings API 1.1 at /sta/v1.1 on both backends: the conformance checklist of standards.md §6.5
(read, create/update/delete, deep insert, query options, dataArray), scope and bad input."""

from __future__ import annotations

import pytest

from tests.conftest import table_counts
from tests.sensing_helpers import OM, STA, UNITS, make_device, township


@pytest.fixture(scope="module")
def dev(api):
    yihe = township(api, "义和镇")
    return {"yihe": yihe, **make_device(api, yihe, "rain_gauge", "rainfall", "mm", name="太康雨量站")}


def test_service_root_lists_sets_and_every_url_answers(api, dev):
    admin = api.login("admin")
    root = api.get(STA, headers=admin).json()
    names = [v["name"] for v in root["value"]]
    assert names == ["Things", "Locations", "HistoricalLocations", "Sensors", "ObservedProperties", "Datastreams",
                     "Observations", "FeaturesOfInterest"]
    assert any(c.endswith("create-update-delete") for c in root["serverSettings"]["conformance"])
    for item in root["value"]:
        path = item["url"].split("/sta/v1.1", 1)[1]
        r = api.get(STA + path, headers=admin)
        assert r.status_code == 200 and isinstance(r.json()["value"], list), item


def test_deep_insert_links_location_history_and_navigation(api, dev):
    admin = api.login("admin")
    thing = api.get(f"{STA}/Things({dev['thing']})", headers=admin).json()
    for nav in ("Locations", "HistoricalLocations", "Datastreams"):
        assert thing[f"{nav}@iot.navigationLink"].endswith(f"/Things({dev['thing']})/{nav}")
    hl = api.get(f"{STA}/Things({dev['thing']})/HistoricalLocations", headers=admin).json()["value"]
    assert len(hl) == 1 and hl[0]["time"].endswith("Z")
    # Navigation to depth 4 and back up.
    ds = dev["datastream"]
    r = api.get(f"{STA}/Things({dev['thing']})/Datastreams({ds})/Sensor/Datastreams", headers=admin)
    assert r.status_code == 200 and ds in [d["@iot.id"] for d in r.json()["value"]]
    assert api.get(f"{STA}/Datastreams({ds})/Thing", headers=admin).json()["@iot.id"] == dev["thing"]
    assert api.get(f"{STA}/Things({dev['thing']})/name", headers=admin).json() == {"name": "太康雨量站"}
    assert api.get(f"{STA}/Things({dev['thing']})/name/$value", headers=admin).text == "太康雨量站"
    refs = api.get(f"{STA}/Things({dev['thing']})/Datastreams/$ref", headers=admin).json()["value"]
    assert refs == [{"@iot.selfLink": f"http://testserver{STA}/Datastreams({ds})"}]
    assert api.get(f"{STA}/Things(999999)", headers=admin).status_code == 404


def test_observations_auto_foi_idempotent_and_datastream_times(api, dev):
    admin = api.login("admin")
    ds = dev["datastream"]
    url = f"{STA}/Datastreams({ds})/Observations"
    first = api.post(url, json={"phenomenonTime": "2026-07-10T02:00:00Z", "result": 12.5}, headers=admin)
    assert first.status_code == 201, first.text
    assert first.headers["Location"] == first.json()["@iot.selfLink"]
    foi = api.get(f"{STA}/Observations({first.json()['@iot.id']})/FeatureOfInterest", headers=admin).json()
    assert foi["feature"] == {"type": "Point", "coordinates": [108.39, 31.18]}
    # Out of order, then a resend of the first: stored once.
    assert api.post(url, json={"phenomenonTime": "2026-07-10T01:00:00+08:00", "result": 3.0}, headers=admin).status_code == 201
    again = api.post(f"{STA}/Observations", json={"phenomenonTime": "2026-07-10T10:00:00+08:00", "result": 12.5,
                                                   "Datastream": {"@iot.id": ds}}, headers=admin)
    assert again.json()["@iot.id"] == first.json()["@iot.id"]
    obs = api.get(url, params={"$orderby": "phenomenonTime asc", "$count": "true"}, headers=admin).json()
    assert obs["@iot.count"] == 2
    assert [o["phenomenonTime"] for o in obs["value"]] == ["2026-07-09T17:00:00.000Z", "2026-07-10T02:00:00.000Z"]
    d = api.get(f"{STA}/Datastreams({ds})", headers=admin).json()
    assert d["phenomenonTime"] == "2026-07-09T17:00:00.000Z/2026-07-10T02:00:00.000Z"


def test_query_options(api, dev):
    admin = api.login("admin")
    ds = dev["datastream"]
    body = [{"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "result"],
             "dataArray": [[f"2026-07-11T{h:02d}:00:00Z", float(h)] for h in range(24)]}]
    r = api.post(f"{STA}/CreateObservations", json=body, headers=admin)
    assert r.status_code == 201 and len(r.json()) == 24 and all("Observations(" in link for link in r.json())
    base = f"{STA}/Datastreams({ds})/Observations"
    page = api.get(base, params={"$top": 5, "$orderby": "phenomenonTime desc", "$filter": "phenomenonTime ge 2026-07-11T00:00:00Z"},
                   headers=admin).json()
    assert [o["result"] for o in page["value"]] == [23.0, 22.0, 21.0, 20.0, 19.0]
    nxt = page["@iot.nextLink"].split("testserver", 1)[1]
    assert [o["result"] for o in api.get(nxt, headers=admin).json()["value"]] == [18.0, 17.0, 16.0, 15.0, 14.0]
    f = api.get(base, params={"$filter": "result gt 5 and result le 7 or result eq 20", "$select": "result,id"},
                headers=admin).json()["value"]
    assert sorted(o["result"] for o in f) == [6.0, 7.0, 20.0] and set(f[0]) == {"@iot.id", "result"}
    assert len(api.get(base, params={"$filter": "hour(phenomenonTime) eq 3 and year(phenomenonTime) eq 2026"},
                       headers=admin).json()["value"]) == 1
    assert api.get(base, params={"$filter": "not (result lt 23)", "$count": "true", "$top": 0}, headers=admin).json()["@iot.count"] == 1
    things = api.get(f"{STA}/Things", params={"$filter": "properties/device_type eq 'rain_gauge'",
                                               "$expand": "Datastreams($select=name;$expand=ObservedProperty,"
                                                          "Observations($top=2;$orderby=result desc))"},
                     headers=admin).json()["value"]
    mine = next(t for t in things if t["@iot.id"] == dev["thing"])
    assert mine["Datastreams"][0]["ObservedProperty"]["name"] == "rainfall"
    assert [o["result"] for o in mine["Datastreams"][0]["Observations"]] == [23.0, 22.0]
    for bad in ({"$filter": "nosuch eq 1"}, {"$orderby": "nosuch"}, {"$top": "-1"}, {"$expand": "Nothing"}, {"$filter": "result eq"}):
        r = api.get(base, params=bad, headers=admin)
        assert r.status_code in (400, 422), (bad, r.text)


def test_patch_put_delete_cascade(api, dev):
    admin = api.login("admin")
    extra = make_device(api, dev["yihe"], "water_level", "depth", "cm", name="临时水位计")
    t = f"{STA}/Things({extra['thing']})"
    assert api.patch(t, json={"description": "移到下穿道"}, headers=admin).status_code == 200
    assert api.get(t, headers=admin).json()["description"] == "移到下穿道"
    r = api.put(t, json={"name": "水位计2", "description": "替换"}, headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "水位计2"
    assert api.put(t, json={"name": "缺少描述"}, headers=admin).status_code == 400
    api.post(f"{STA}/Datastreams({extra['datastream']})/Observations", json={"phenomenonTime": "2026-07-12T00:00:00Z",
                                                                             "result": 3.0}, headers=admin)
    assert api.delete(t, headers=admin).status_code == 200
    assert api.get(t, headers=admin).status_code == 404
    assert api.get(f"{STA}/Datastreams({extra['datastream']})", headers=admin).status_code == 404


def test_bad_input_is_refused_and_changes_nothing(api, dev):
    admin = api.login("admin")
    before = table_counts(api.store)
    ds = dev["datastream"]
    cases = [
        (f"{STA}/Things", {"description": "no name"}, 400),
        (f"{STA}/Things", {"name": "x", "description": "y", "properties": {"unit_code": "999999", "device_type": "rain_gauge"}}, 422),
        (f"{STA}/Things", {"name": "x", "description": "y", "properties": {"device_type": "toaster"}}, 422),
        (f"{STA}/Datastreams({ds})/Observations", {"phenomenonTime": "2026-07-10T00:00:00Z", "result": 900.0}, 422),
        (f"{STA}/Datastreams({ds})/Observations", {"phenomenonTime": "2026-07-10T00:00:00Z", "result": "lots"}, 422),
        (f"{STA}/Datastreams({ds})/Observations", {"phenomenonTime": "yesterday", "result": 1.0}, 422),
        (f"{STA}/Datastreams({ds})/Observations", {"phenomenonTime": "2099-01-01T00:00:00Z", "result": 1.0}, 422),
        (f"{STA}/Datastreams({ds})/Observations", {"phenomenonTime": "2026-07-10T00:00:00Z", "result": 1.0,
                                                   "parameters": {"unit": "cm"}}, 422),
        (f"{STA}/Observations", {"phenomenonTime": "2026-07-10T00:00:00Z", "result": 1.0, "Datastream": {"@iot.id": 999999}}, 404),
        (f"{STA}/Locations", {"name": "x", "description": "y", "encodingType": "application/geo+json",
                              "location": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}}, 422),
    ]
    for url, body, status in cases:
        r = api.post(url, json=body, headers=admin)
        assert r.status_code == status, (url, body, r.text)
        assert r.json()["message"], r.text
    r = api.post(f"{STA}/Things", content=b"{not json", headers={**admin, "content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    assert table_counts(api.store) == before


def test_scope_on_sensorthings(api, dev):
    """A 大德镇 device is invisible and untouchable for a principal scoped to 义和镇; reads are filtered."""
    admin = api.login("admin")
    dade = township(api, "大德镇")
    foreign = make_device(api, dade, "rain_gauge", "rainfall", "mm", name="大德雨量站")
    yihe_user = api.login("yihe")
    grid = api.login("gridworker")
    before = table_counts(api.store)
    assert api.get(f"{STA}/Things({foreign['thing']})", headers=yihe_user).status_code == 404
    assert api.get(f"{STA}/Datastreams({foreign['datastream']})/Observations", headers=yihe_user).status_code == 404
    names = [t["name"] for t in api.get(f"{STA}/Things", params={"$top": 1000}, headers=yihe_user).json()["value"]]
    assert "太康雨量站" in names and "大德雨量站" not in names
    obs = api.get(f"{STA}/Observations", params={"$top": 10000}, headers=yihe_user).json()["value"]
    assert all(f"Datastreams({foreign['datastream']})" not in o["Datastream@iot.navigationLink"] for o in obs)
    assert api.post(f"{STA}/Datastreams({foreign['datastream']})/Observations", json={"result": 1.0}, headers=yihe_user).status_code == 404
    assert api.post(f"{STA}/Things", json={"name": "x", "description": "y", "properties": {"unit_code": dade}},
                    headers=yihe_user).status_code == 403
    assert api.patch(f"{STA}/Things({foreign['thing']})", json={"name": "x"}, headers=yihe_user).status_code == 404
    assert api.delete(f"{STA}/Things({foreign['thing']})", headers=yihe_user).status_code == 404
    assert api.get(STA, headers={}).status_code == 401
    assert api.get(f"{STA}/Things", headers={}).status_code == 401
    # A read-only role reads but cannot write.
    assert api.get(f"{STA}/Things", headers=grid).status_code == 200
    assert api.post(f"{STA}/Things", json={"name": "x", "description": "y"}, headers=grid).status_code == 403
    assert table_counts(api.store) == before
    # Every change of a device is audited, with the device's unit path (so audit reads are scoped too).
    entries = api.get("/api/audit", params={"entity_key": str(foreign["thing"])}, headers=admin).json()
    assert any(e["action"] == "sta.create" and e["entity"] == "Thing" for e in entries)

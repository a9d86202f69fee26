"""An independent SensorThings client — frost-sta-client (Fraunhofer IOSB) — against a live CityOps server on
both backends: CRUD, deep insert, fluent queries, nextLink paging and DataArrayDocument bulk creation."""

from __future__ import annotations

import geojson
import pytest

from cityops.demo.generator import DEMO_PASSWORD
from tests.sensing_helpers import UNITS, township
from tests.test_sensing_ingest import _serve

fsc = pytest.importorskip("frost_sta_client")


@pytest.fixture(scope="module")
def service(api):
    proc, port = _serve(api.store.settings)
    try:
        yield fsc.SensorThingsService(f"http://127.0.0.1:{port}/sta/v1.1",
                                      auth_handler=fsc.AuthHandler(username="admin", password=DEMO_PASSWORD))
    finally:
        proc.terminate()
        proc.wait(10)


def test_frost_client_crud_queries_paging_and_data_array(api, service):
    yihe = township(api, "义和镇")
    thing = fsc.Thing(name="老沟湾裂缝计 F1", description="crack meter on house 12",
                      properties={"unit_code": yihe, "device_type": "crack_meter", "risk_point_code": "RP-FROST"})
    thing.locations = [fsc.Location(name="12号房", description="房屋东墙", encoding_type="application/geo+json",
                                    location=geojson.Point((108.41, 31.21)))]
    service.create(thing)
    assert isinstance(thing.id, int)
    sensor = fsc.Sensor(name="VW crack meter", description="vibrating wire", encoding_type="text/plain", metadata="datasheet")
    prop = fsc.ObservedProperty(name="crack_width", definition="http://example.org/crack_width", description="裂缝宽度")
    uom = fsc.UnitOfMeasurement(name=UNITS["mm"]["name"], symbol="mm", definition=UNITS["mm"]["definition"])
    ds = fsc.Datastream(name="F1 宽度", description="crack width", unit_of_measurement=uom,
                        observation_type="http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                        properties={"stream": "crack_width"}, thing=thing, sensor=sensor, observed_property=prop)
    service.create(ds)
    # Single observation, then a DataArrayDocument of 1,000.
    obs = fsc.Observation(phenomenon_time="2026-07-01T00:00:00Z", result=0.31, datastream=ds)
    service.create(obs)
    doc = fsc.DataArrayDocument()
    dav = fsc.DataArrayValue()
    dav.datastream = ds
    dav.components = {fsc.DataArrayValue.Property.PHENOMENON_TIME, fsc.DataArrayValue.Property.RESULT}
    for i in range(1, 1001):
        dav.add_observation(fsc.Observation(phenomenon_time=f"2026-07-01T00:00:00Z".replace("00:00:00", f"{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"),
                                            result=0.3 + i / 10000, datastream=ds))
    doc.add_data_array_value(dav)
    created = service.observations().create(doc)
    assert len(created) == 1000 and all(o.self_link and "Observations(" in o.self_link for o in created)
    # Fluent queries with server-driven paging through @iot.nextLink.
    query = ds.get_observations().query().top(100).orderby("phenomenonTime", "desc").filter("result gt 0.35")
    values = [o.result for o in query.list()]
    assert len(values) == 500 and values == sorted(values, reverse=True)
    found = service.things().query().filter("properties/risk_point_code eq 'RP-FROST'").expand("Datastreams").list()
    entities = list(found)
    assert [t.name for t in entities] == ["老沟湾裂缝计 F1"]
    again = service.things().find(thing.id)
    assert again.description == "crack meter on house 12"
    # Update and delete.
    again.description = "moved to the west wall"
    service.update(again)
    assert service.things().find(thing.id).description == "moved to the west wall"
    service.delete(again)
    with pytest.raises(Exception):
        service.things().find(thing.id)


def test_frost_client_filters_across_relations_time_and_space_and_patches(api, service):
    """What frost-sta-client's own builders send: $filter across relations (its Datastream/@iot.id form too),
    date()/time(), the geospatial functions of OData and SensorThings (st_*), substringof; ``patch()`` with a
    JSON Patch; the service root with a trailing slash; a Location outside longitude/latitude refused (422)."""
    yihe = township(api, "义和镇")
    here = (108.412345, 31.212345)
    thing = fsc.Thing(name="滑坡监测 裂缝计 R1", description="crack meter",
                      properties={"unit_code": yihe, "device_type": "crack_meter"})
    thing.locations = [fsc.Location(name="R1 位置", description="坡顶", encoding_type="application/geo+json",
                                    location=geojson.Point(here))]
    service.create(thing)
    sensor = fsc.Sensor(name="R1 sensor", description="vibrating wire", encoding_type="text/plain", metadata="-")
    prop = fsc.ObservedProperty(name="crack_width_r1", definition="http://example.org/crack_width", description="裂缝宽度")
    uom = fsc.UnitOfMeasurement(name=UNITS["mm"]["name"], symbol="mm", definition=UNITS["mm"]["definition"])
    ds = fsc.Datastream(name="R1 宽度", description="crack width", unit_of_measurement=uom,
                        observation_type="http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                        properties={"stream": "crack_width"}, thing=thing, sensor=sensor, observed_property=prop)
    service.create(ds)
    times = ["2026-07-02T03:00:00Z", "2026-07-02T09:30:00Z", "2026-07-02T18:00:00Z", "2026-07-03T01:00:00Z",
             "2026-07-03T12:00:00Z"]
    for i, t in enumerate(times):
        service.create(fsc.Observation(phenomenon_time=t, result=float(i), datastream=ds))

    def results(flt) -> list[float]:
        return sorted(o.result for o in service.observations().query().filter(flt).list())

    # Across relations: the id of the Datastream as frost writes it, as OData writes it, and a related name.
    everything = [float(i) for i in range(len(times))]
    assert results(f"Datastream/@iot.id eq {ds.id}") == everything
    assert results(f"Datastream/id eq {ds.id}") == everything
    assert results(f"Datastream/Thing/name eq '{thing.name}' and result ge 3") == [3.0, 4.0]
    assert [d.name for d in service.datastreams().query().filter(f"Thing/name eq '{thing.name}'").list()] == ["R1 宽度"]
    # date() and time() of the phenomenon time (UTC).
    assert results(f"Datastream/id eq {ds.id} and date(phenomenonTime) eq 2026-07-02") == [0.0, 1.0, 2.0]
    assert results(f"Datastream/id eq {ds.id} and time(phenomenonTime) lt 10:00:00") == [0.0, 1.0, 3.0]
    assert results(f"Datastream/id eq {ds.id} and time(phenomenonTime) eq 12:00:00") == [4.0]

    # Geospatial functions on Locations (a point has no length).
    def locations(flt) -> set[int]:
        return {loc.id for loc in service.locations().query().filter(flt).list()}

    [ours] = locations("name eq 'R1 位置'")
    assert ours not in locations("geo.length(location) gt 0")
    x, y = here
    point = f"geography'POINT({x} {y})'"
    box = f"geography'POLYGON(({x - 1e-4} {y - 1e-4}, {x + 1e-4} {y - 1e-4}, {x + 1e-4} {y + 1e-4}, {x - 1e-4} {y + 1e-4}, {x - 1e-4} {y - 1e-4}))'"
    far = "geography'POLYGON((100 20, 100.1 20, 100.1 20.1, 100 20))'"
    for flt in (f"geo.intersects(location, {point})", f"st_intersects(location, {point})", f"st_within(location, {box})",
                f"st_equals(location, {point})", f"geo.distance(location, {point}) lt 0.00001",
                f"st_relate(location, {box}, 'T*F**F***')"):
        assert ours in locations(flt), flt
    for flt in (f"st_within(location, {far})", f"st_disjoint(location, {point})", f"geo.distance(location, {point}) gt 1"):
        assert ours not in locations(flt), flt
    assert [t.name for t in service.things().query().filter("substringof('裂缝计 R1', name)").list()] == [thing.name]

    # patch(): a JSON Patch.
    service.things().patch(thing, [{"op": "replace", "path": "/description", "value": "moved uphill"},
                                   {"op": "add", "path": "/properties/note", "value": "雨后复测"}])
    again = service.things().find(thing.id)
    assert again.description == "moved uphill" and again.properties["note"] == "雨后复测"
    assert again.properties["unit_code"] == yihe

    import httpx

    auth = ("admin", DEMO_PASSWORD)
    with httpx.Client(base_url=str(service.url).rsplit("/sta/", 1)[0], auth=auth, timeout=30) as http:
        r = http.get("/sta/v1.1/")
        assert r.status_code == 200 and {v["name"] for v in r.json()["value"]} >= {"Things", "Observations"}
        bad = http.patch(f"/sta/v1.1/Things({thing.id})", json=[{"op": "replace", "path": "/nosuch/x", "value": 1}],
                         headers={"Content-Type": "application/json-patch+json"})
        assert bad.status_code == 400, bad.text
        bad = http.patch(f"/sta/v1.1/Things({thing.id})", json=[{"op": "replace", "path": "/@iot.id", "value": 1}],
                         headers={"Content-Type": "application/json-patch+json"})
        assert bad.status_code == 400, bad.text
        for flt in ("geo.length(name) gt 1", "Datastreams/name eq 'x'", "st_within(location)", "date(name) eq 2026-07-01",
                    "geo.intersects(location, geography'POINT(1')"):
            assert http.get("/sta/v1.1/Locations", params={"$filter": flt}).status_code == 400, flt
        nowhere = {"name": "nowhere", "description": "-", "encodingType": "application/geo+json",
                   "location": {"type": "Point", "coordinates": [999, 999]}}
        before = http.get("/sta/v1.1/Locations", params={"$count": "true", "$top": "1"}).json()["@iot.count"]
        r = http.post(f"/sta/v1.1/Things({thing.id})/Locations", json=nowhere)
        assert r.status_code == 422 and "latitude" in r.text, r.text  # as any invalid geometry
        assert http.get("/sta/v1.1/Locations", params={"$count": "true", "$top": "1"}).json()["@iot.count"] == before
    with pytest.raises(Exception):
        service.create(fsc.Location(name="nowhere", description="-", encoding_type="application/geo+json",
                                    location=geojson.Point((999, 999))))


def test_mqtt_self_links_use_the_public_url(api):
    """Messages leave the request that caused them: their @iot.selfLink names Settings ``public_url``
    (CITYOPS_PUBLIC_URL), the address the clients reach, not a default."""
    import json
    import queue
    import uuid

    from fastapi.testclient import TestClient

    from cityops.app import create_app
    from cityops.sensing.service import start_mqtt
    from tests.test_sensing_ingest import MQTT_HOST, MQTT_PORT, _broker, _client

    _broker()
    public = "https://cityops.example.gov.cn/kaizhou"
    app = create_app(api.store.settings.model_copy(update={
        "public_url": public, "mqtt_client_id": f"cityops-public-url-{uuid.uuid4().hex[:8]}"}), run_migrations=False)
    bridge = start_mqtt(app.state, f"mqtt://{MQTT_HOST}:{MQTT_PORT}")
    got: queue.Queue = queue.Queue()
    listener = _client("public-url")
    listener.on_message = lambda c, u, m: got.put(json.loads(m.payload))
    listener.subscribe("v1.1/Things", qos=1)
    try:
        assert bridge.base_url == public + "/sta/v1.1"
        with TestClient(app) as client:
            r = client.post("/sta/v1.1/Things", headers=api.login("admin"),
                            json={"name": "public-url", "description": "-",
                                  "properties": {"unit_code": township(api, "义和镇")}})
            assert r.status_code == 201, r.text
        message = got.get(timeout=20)
        while message.get("@iot.id") != r.json()["@iot.id"]:
            message = got.get(timeout=20)
        assert message["@iot.selfLink"] == f"{public}/sta/v1.1/Things({message['@iot.id']})"
    finally:
        listener.loop_stop()
        listener.disconnect()
        bridge.stop(end_session=True)

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

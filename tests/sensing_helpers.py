"""Shared helpers of the sensing tests: a device made by SensorThings deep insert."""

from __future__ import annotations

STA = "/sta/v1.1"
OM = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
UNITS = {"mm": {"name": "millimetre", "symbol": "mm", "definition": "http://unitsofmeasure.org/ucum.html#para-30"},
         "%": {"name": "percent", "symbol": "%", "definition": "http://unitsofmeasure.org/ucum.html#para-29"},
         "cm": {"name": "centimetre", "symbol": "cm", "definition": "http://unitsofmeasure.org/ucum.html#para-30"},
         "dB(A)": {"name": "decibel A-weighted", "symbol": "dB(A)", "definition": "http://unitsofmeasure.org/ucum.html#para-45"},
         "ug/m3": {"name": "microgram per cubic metre", "symbol": "ug/m3", "definition": "http://unitsofmeasure.org/ucum.html#para-30"}}


def township(api, name: str) -> str:
    admin = api.login("admin")
    units = api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]
    return next(u["code"] for u in units if u["name"] == name)


def make_device(api, unit_code: str, device_type: str, stream: str, symbol: str, *, name: str = "设备",
                risk_point: str | None = None, building: str | None = None, lonlat=(108.39, 31.18), headers=None,
                extra_streams=()) -> dict:
    """A Thing with a Location and one Datastream (new Sensor + ObservedProperty): returns ids."""
    headers = headers or api.login("admin")
    props = {"unit_code": unit_code, "device_type": device_type}
    if risk_point:
        props["risk_point_code"] = risk_point
    if building:
        props["building_code"] = building
    streams = [(stream, symbol), *extra_streams]
    body = {"name": name, "description": f"{device_type} test device", "properties": props,
            "Locations": [{"name": f"{name} 位置", "description": "安装位置", "encodingType": "application/geo+json",
                           "location": {"type": "Point", "coordinates": list(lonlat)}}],
            "Datastreams": [{"name": f"{name} {s}", "description": s, "unitOfMeasurement": UNITS[sym], "observationType": OM,
                             "properties": {"stream": s},
                             "Sensor": {"name": f"{device_type} sensor", "description": "sensor", "encodingType": "text/plain",
                                        "metadata": "vendor sheet"},
                             "ObservedProperty": {"name": s, "definition": f"http://example.org/def/{s}", "description": s}}
                            for s, sym in streams]}
    r = api.post(f"{STA}/Things", json=body, headers=headers)
    assert r.status_code == 201, r.text
    thing = r.json()
    ds = api.get(f"{STA}/Things({thing['@iot.id']})/Datastreams", params={"$orderby": "id"}, headers=headers).json()["value"]
    return {"thing": thing["@iot.id"], "datastreams": [d["@iot.id"] for d in ds], "datastream": ds[0]["@iot.id"]}

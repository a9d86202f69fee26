"""Hostile input on every interface (/api, /ogc, /sta/v1.1, /open311/v2): deep nesting, numbers beyond 64 bits,
NaN, chunked bodies above the limit, long filters. Each gets a 4xx that names what is wrong, changes nothing,
and leaves the server answering. Runs on both backends."""

from __future__ import annotations

import json

import pytest

from tests.conftest import table_counts
from tests.sensing_helpers import STA

INT64_MAX = 2**63 - 1
HUGE = "100000000000000000000000000"  # 10^26


@pytest.fixture(scope="module")
def admin(api):
    return api.login("admin")


def _request_schemas(doc: dict):
    """Every schema a request carries in an OpenAPI document: parameters and request bodies, refs followed."""
    components = doc.get("components", {}).get("schemas", {})

    def resolve(node, seen):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in seen:
                    yield from resolve(components[name], seen | {name})
                return
            yield node
            for value in node.values():
                yield from resolve(value, seen)
        elif isinstance(node, list):
            for value in node:
                yield from resolve(value, seen)

    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if not isinstance(op, dict):
                continue
            for param in op.get("parameters", []):
                for schema in resolve(param.get("schema", {}), frozenset()):
                    yield f"{method.upper()} {path} {param['name']}", schema
            for media in (op.get("requestBody") or {}).get("content", {}).values():
                for schema in resolve(media.get("schema", {}), frozenset()):
                    yield f"{method.upper()} {path} body", schema


def test_every_integer_a_request_carries_is_bounded_to_64_bits(api, admin):
    """The cause of the 10^26 500s: integers without a bound reached the database. Every integer parameter and
    body field of the OpenAPI documents (platform and OGC) now declares one, and a new route must too."""
    unbounded = []
    for doc in (api.get("/api/openapi.json").json(), api.get("/ogc/api", headers=admin).json()):
        for where, schema in _request_schemas(doc):
            # float(): FastAPI writes body bounds as JSON floats, where 2^63-1 rounds to 2^63.
            if schema.get("type") == "integer" and not (
                    float(-(2**63)) <= schema.get("minimum", -(2**64)) and schema.get("maximum", 2**64) <= float(INT64_MAX)):
                unbounded.append(where)
    assert not unbounded, f"integers without a 64-bit bound: {sorted(set(unbounded))}"


@pytest.mark.parametrize("url", [
    f"/api/units?offset={HUGE}",
    f"/api/people/{HUGE}",
    f"/api/events/cases?offset={HUGE}",
    f"/api/events/stream?after={HUGE}&timeout=0",
    f"/api/incidents/{HUGE}",
    f"/api/incidents/1/timeline?after={HUGE}",
    f"/api/sensing/alarms/{HUGE}",
    f"/api/sensing/datastreams/{HUGE}/series",
    f"/api/tasks?incident_id={HUGE}",
    f"/api/tiles/basemap/{HUGE}/0/0.mvt",
    f"/ogc/collections/hazard_points/items?offset={HUGE}",
    f"{STA}/Things({HUGE})",
    f"{STA}/Things(1e23)",
    f"{STA}/Things?$skip={HUGE}",
    f"{STA}/Things?$top={HUGE}",
    f"{STA}/Things?$filter=id eq {HUGE}",
    f"{STA}/Datastreams?$expand=Observations($skip={HUGE})",
])
def test_integers_beyond_64_bits_are_refused(api, admin, url):
    r = api.get(url, headers=admin)
    assert 400 <= r.status_code < 500 and r.status_code != 404, (url, r.status_code, r.text[:300])
    message = r.json()["message"]
    assert str(INT64_MAX) in message or "64-bit" in message, message  # names the bound it broke


def test_integers_beyond_64_bits_in_bodies_change_nothing(api, admin):
    before = table_counts(api.store)
    ds = api.get(f"{STA}/Datastreams", params={"$top": 1}, headers=admin).json()["value"]
    cases = [
        ("POST", f"{STA}/Observations", {"result": 1, "phenomenonTime": "2024-07-01T00:00:00Z",
                                          "Datastream": {"@iot.id": int(HUGE)}}),
        ("POST", f"{STA}/Observations", {"result": 1, "phenomenonTime": "2024-07-01T00:00:00Z",
                                          "Datastream": {"@iot.id": 1e23}}),
        ("POST", f"{STA}/CreateObservations", [{"Datastream": {"@iot.id": int(HUGE)}, "components": ["result"],
                                                 "dataArray": [[1]]}]),
        ("POST", "/api/layers/hazard_points/rollback", {"version": int(HUGE)}),
        ("POST", "/api/tasks", {"title": "t", "unit_code": "500154101", "assignee_person_id": int(HUGE)}),
    ]
    assert ds, "the demo has datastreams"
    for method, url, body in cases:
        r = api.request(method, url, headers=admin, json=body)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:300])
    assert table_counts(api.store) == before


@pytest.mark.parametrize("url", [
    "/api/units?bbox=nan,nan,nan,nan",
    "/api/units?bbox=-inf,0,inf,1",
    "/api/map/units?level=township&bbox=nan,nan,nan,nan",
    "/api/buildings?bbox=nan,nan,nan,nan",
    "/api/layers/hazard_points/features?bbox=nan,nan,nan,nan",
    "/ogc/collections/hazard_points/items?bbox=nan,nan,nan,nan",
])
def test_nan_and_infinite_boxes_are_refused(api, admin, url):
    r = api.get(url, headers=admin)
    assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:300])
    assert "bbox" in r.json()["message"] or "bbox" in json.dumps(r.json())

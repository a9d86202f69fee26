"""Concurrent writers on every kind of write route, on both backends, against a real server process: 50 requests
at once on one route all answer 2xx (never 500 "database is locked" on the embedded store), and each write is
stored. Also: logins while the July storm writes observations from another process, and SensorThings
CreateObservations while the MQTT bridge ingests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import free_port, wait_for_port
from tests.sensing_helpers import STA, make_device

N = 50
SERVE = """
import sys, uvicorn
from cityops.app import create_app
app = create_app(run_migrations=False)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A Mosquitto of this module's own (the shared broker's topics belong to everyone)."""
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(proc, port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def live(api, broker):
    """The module's store served by ``uvicorn`` in its own process, with the MQTT bridge on the module's broker."""
    settings = api.store.settings
    env = {**os.environ, "CITYOPS_DATA_DIR": str(settings.data_dir), "CITYOPS_DATABASE_URL": settings.database_url,
           "CITYOPS_SECRET_KEY": settings.secret_key, "CITYOPS_LOG_JSON": "false", "CITYOPS_WIRING": "false",
           "CITYOPS_MQTT_URL": f"mqtt://127.0.0.1:{broker}", "CITYOPS_MQTT_CLIENT_ID": f"cityops-concurrent-{uuid.uuid4().hex[:8]}"}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(port)], env=env, cwd=Path(__file__).resolve().parents[1])
    try:
        wait_for_port(proc, port, 60)
        proc.url = f"http://127.0.0.1:{port}"
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def burst(live, requests: list[tuple]) -> list[httpx.Response]:
    """Send ``requests`` ((method, path, kwargs) each) all at once; their responses, in order."""

    async def run():
        limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
        async with httpx.AsyncClient(base_url=live.url, timeout=180, limits=limits) as client:
            return await asyncio.gather(*(client.request(method, path, **kw) for method, path, kw in requests))

    return asyncio.run(run())


def assert_all(responses: list[httpx.Response], status: int) -> None:
    counts = Counter(r.status_code for r in responses)
    failures = [r.text[:200] for r in responses if r.status_code != status][:3]
    assert counts == {status: len(responses)}, f"answers by status {dict(counts)}; e.g. {failures}"


def _token(live, username: str) -> dict:
    r = httpx.post(f"{live.url}/api/auth/login", json={"username": username, "password": "cityops-demo"}, timeout=60)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
def world(api, live):
    admin = _token(live, "admin")
    yihe = next(u for u in httpx.get(f"{live.url}/api/units", params={"level": "township"}, headers=admin).json()["items"]
                if u["name"] == "义和镇")
    household = _count(api, "SELECT h.code FROM households h JOIN buildings b ON b.id = h.building_id "
                            "WHERE b.unit_path LIKE :p ORDER BY h.code LIMIT 1", p=f"%/{yihe['code']}/%")
    person = httpx.get(f"{live.url}/api/people", params={"unit": yihe["code"], "limit": 1}, headers=admin).json()["items"][0]
    return {"admin": admin, "yihe": yihe["code"], "household": household, "person": person["id"]}


def _count(api, sql: str, **params) -> int:
    with api.store.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def test_simultaneous_logins(live, world):
    responses = burst(live, [("POST", "/api/auth/login", {"json": {"username": "admin", "password": "cityops-demo"}})] * N)
    assert_all(responses, 200)
    assert len({r.json()["access_token"] for r in responses}) == N


def test_simultaneous_household_changes(api, live, world):
    code = world["household"]
    responses = burst(live, [("PATCH", f"/api/households/{code}", {"json": {"room": f"{i}室"}, "headers": world["admin"]})
                             for i in range(N)])
    assert_all(responses, 200)
    assert _count(api, "SELECT room FROM households WHERE code = :c", c=code) in {f"{i}室" for i in range(N)}


def test_simultaneous_new_residents(api, live, world):
    code = world["household"]
    before = _count(api, "SELECT count(*) FROM residents r JOIN households h ON h.id = r.household_id WHERE h.code = :c", c=code)
    responses = burst(live, [("POST", f"/api/households/{code}/residents",
                              {"json": {"name": f"并发{i}", "birth_year": 1990}, "headers": world["admin"]}) for i in range(N)])
    assert_all(responses, 201)
    after = _count(api, "SELECT count(*) FROM residents r JOIN households h ON h.id = r.household_id WHERE h.code = :c", c=code)
    assert after == before + N


def test_simultaneous_person_changes(api, live, world):
    responses = burst(live, [("PATCH", f"/api/people/{world['person']}", {"json": {"phone": f"1380000{i:04d}"}, "headers": world["admin"]})
                             for i in range(N)])
    assert_all(responses, 200)


def test_simultaneous_risk_point_evaluations(live, world):
    responses = burst(live, [("POST", "/api/risk-points/RP-LGW-001/evaluate", {"json": {}, "headers": world["admin"]})] * N)
    assert_all(responses, 200)
    assert len({r.json()["level"] for r in responses}) == 1


def test_simultaneous_new_tasks(api, live, world):
    ref = uuid.uuid4().hex
    responses = burst(live, [("POST", "/api/tasks", {"json": {"title": f"并发任务{ref}-{i}", "unit_code": world["yihe"]},
                                                     "headers": world["admin"]}) for i in range(N)])
    assert_all(responses, 201)
    assert _count(api, "SELECT count(*) FROM tasks WHERE title LIKE :r", r=f"并发任务{ref}-%") == N


def test_simultaneous_observation_ingest_and_create_observations_during_mqtt_ingest(api, live, broker, world):
    """Bulk ingest over HTTP and SensorThings CreateObservations, 50 each at once, while a device publishes over MQTT."""
    import paho.mqtt.client as mqtt

    ds = make_device(api, world["yihe"], "water_level", "depth", "cm", name="并发积水点", headers=api.login("admin"))["datastream"]
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"concurrent-{uuid.uuid4().hex[:8]}")
    publisher.connect("127.0.0.1", broker)
    publisher.loop_start()
    stop = threading.Event()

    def publish():
        minute = 0
        while not stop.is_set():
            publisher.publish(f"v1.1/Datastreams({ds})/Observations", qos=1,
                              payload=f'{{"phenomenonTime": "2026-07-03T{minute // 60:02d}:{minute % 60:02d}:00Z", "result": 1.0}}')
            minute += 1
            time.sleep(0.02)
        return minute

    mqtt_thread = threading.Thread(target=publish, daemon=True)
    mqtt_thread.start()
    try:
        bulk = [("POST", "/api/sensing/observations", {"headers": world["admin"], "json": {"observations": [
            {"datastream_id": ds, "phenomenonTime": f"2026-07-01T{i // 60:02d}:{i % 60:02d}:{s:02d}Z", "result": float(s)}
            for s in range(10)]}}) for i in range(N)]
        create = [("POST", f"{STA}/CreateObservations", {"headers": world["admin"], "json": [
            {"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "result"],
             "dataArray": [[f"2026-07-02T{i // 60:02d}:{i % 60:02d}:{s:02d}Z", float(s)] for s in range(10)]}]}) for i in range(N)]
        responses = burst(live, bulk + create)
    finally:
        stop.set()
        mqtt_thread.join(10)
        publisher.loop_stop()
        publisher.disconnect()
    assert_all(responses[:N], 201)
    assert_all(responses[N:], 201)
    stored = "SELECT count(*) FROM sta_observations WHERE datastream_id = :d AND t_ms < :t"
    assert _count(api, stored, d=ds, t=_ms("2026-07-03T00:00:00Z")) == 2 * N * 10
    deadline = time.monotonic() + 60
    while _count(api, "SELECT count(*) FROM sta_observations WHERE datastream_id = :d AND t_ms >= :t",
                 d=ds, t=_ms("2026-07-03T00:00:00Z")) == 0:
        assert time.monotonic() < deadline, "nothing published over MQTT was stored"
        time.sleep(0.5)


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_logins_while_the_storm_writes(api, live):
    """The demo's July storm writes every sensor's observations (rules, alarms, warnings) from another process
    while people log in: every login answers 200."""
    from cityops.sensing.simulate import simulate_storm

    storm = threading.Thread(target=simulate_storm, args=(api.store.sessions,), kwargs={"hours": 6, "speed": 2880},
                             name="storm-concurrent", daemon=True)
    storm.start()
    statuses: Counter = Counter()
    while storm.is_alive():
        responses = burst(live, [("POST", "/api/auth/login", {"json": {"username": "admin", "password": "cityops-demo"}})] * 5)
        statuses.update(r.status_code for r in responses)
    storm.join()
    assert statuses and set(statuses) == {200}, dict(statuses)



def test_the_same_evacuation_change_from_50_clients_at_once(api, live, world):
    """A phone retrying one report over a bad link: the same change with the same request_key, 50 times at once,
    gets the same answer every time and is recorded once."""
    admin = world["admin"]
    place = httpx.get(f"{live.url}/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
    from shapely.geometry import Point, mapping

    zone = mapping(Point(place["lon"], place["lat"]).buffer(0.001))
    r = httpx.post(f"{live.url}/api/incidents", headers=admin, timeout=120, json={
        "hazard_type": "landslide", "level": 2, "unit_code": place["unit_code"], "drill": True, "geometry": zone})
    assert r.status_code == 201, r.text
    items = httpx.get(f"{live.url}/api/incidents/{r.json()['id']}/evacuations", headers=admin, timeout=60).json()["items"]
    assert items
    ev = items[0]["id"]
    key = f"retry-{uuid.uuid4().hex}"
    responses = burst(live, [("POST", f"/api/evacuations/{ev}/state", {"json": {"state": "moved", "request_key": key},
                                                                       "headers": admin})] * N)
    assert_all(responses, 200)
    assert {(r.json()["state"], r.json()["version"]) for r in responses} == {("moved", 2)}
    assert _count(api, "SELECT count(*) FROM task_evacuation_events WHERE request_key = :k", k=key) == 1


def test_a_big_write_does_not_hold_up_other_requests(api, live, world):
    """A SensorThings CreateObservations of 5,000 observations (one savepoint each) takes seconds of database work;
    meanwhile the server answers a health check (the work runs in a worker thread, not on the event loop)."""
    ds = make_device(api, world["yihe"], "water_level", "depth", "cm", name="大批量积水点", headers=api.login("admin"))["datastream"]
    body = [{"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "result"],
             "dataArray": [[f"2026-06-{1 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z", 1.0] for i in range(5_000)]}]
    done: dict = {}

    def big():
        try:
            done["status"] = httpx.post(f"{live.url}{STA}/CreateObservations", json=body, headers=world["admin"], timeout=900).status_code
        except httpx.HTTPError as exc:
            done["status"] = repr(exc)
        done["big"] = time.monotonic()

    thread = threading.Thread(target=big)
    thread.start()
    time.sleep(1.0)  # the body is sent and the work under way
    if "big" in done:
        pytest.skip("the big request finished too soon to tell anything")
    start = time.monotonic()
    assert httpx.get(f"{live.url}/api/health", timeout=900).status_code == 200
    done["health"] = time.monotonic()
    thread.join(900)
    assert done["status"] == 201
    assert done["health"] < done["big"], (f"the health check waited {done['health'] - start:.1f} s, until the big request "
                                          "was answered")

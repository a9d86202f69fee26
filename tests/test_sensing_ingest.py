"""Ingest over HTTP and MQTT on both backends: idempotent, out of order, validated all-or-nothing,
acknowledged after commit, bounded with back-pressure; rollups, series, CSV; a real kill loses nothing
acknowledged; MQTT against the real Mosquitto broker."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cityops.sensing.ingest import Backpressure, Ingestor
from cityops.sensing.models import Observation, Rollup
from tests.conftest import free_port, table_counts, wait_for_port
from tests.sensing_helpers import STA, make_device, township

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


@pytest.fixture(scope="module")
def gauge(api):
    yihe = township(api, "义和镇")
    return {"yihe": yihe, **make_device(api, yihe, "rain_gauge", "rainfall", "mm", name="义和雨量站A")}


def _count(api, ds: int) -> int:
    with api.store.sessions() as s:
        return s.scalar(select(func.count()).select_from(Observation).where(Observation.datastream_id == ds))


def _obs(ds, hour, minute, value, day=15):
    return {"datastream_id": ds, "phenomenonTime": f"2026-07-{day:02d}T{hour:02d}:{minute:02d}:00+08:00", "result": value}


def test_bulk_ingest_is_idempotent_out_of_order_and_rolls_up(api, gauge):
    admin = api.login("admin")
    ds = gauge["datastream"]
    # 3 hours of 5-minute readings, sent newest first (out of order).
    batch = [_obs(ds, h, m, float(m % 7)) for h in (9, 10, 11) for m in range(0, 60, 5)][::-1]
    r = api.post("/api/sensing/observations", json={"observations": batch}, headers=admin)
    assert r.status_code == 201 and r.json()["accepted"] == 36, r.text
    assert _count(api, ds) == 36
    # A resend of half of them plus two new ones: only the new ones are stored.
    again = batch[:18] + [_obs(ds, 12, 0, 2.0), _obs(ds, 8, 55, 1.0)]
    assert api.post("/api/sensing/observations", json={"observations": again}, headers=admin).status_code == 201
    assert _count(api, ds) == 38
    with api.store.sessions() as s:
        hours = {b: (lo, hi, total, n) for b, lo, hi, total, n in s.execute(
            select(Rollup.bucket_ms, Rollup.vmin, Rollup.vmax, Rollup.vsum, Rollup.vcount)
            .where(Rollup.datastream_id == ds, Rollup.tier == "1h").order_by(Rollup.bucket_ms))}
        day = s.execute(select(Rollup.vsum, Rollup.vcount).where(Rollup.datastream_id == ds, Rollup.tier == "1d")).all()
        minutes = s.scalar(select(func.count()).select_from(Rollup).where(Rollup.datastream_id == ds, Rollup.tier == "1m"))
    expected_hour = sum(float(m % 7) for m in range(0, 60, 5))
    sums = [v[2] for v in hours.values()]
    assert sums == [1.0, expected_hour, expected_hour, expected_hour, 2.0]
    assert [v[3] for v in hours.values()] == [1, 12, 12, 12, 1]
    assert day == [(3 * expected_hour + 3.0, 38)] and minutes == 38
    # The datastream follows what was stored, whatever the order: its phenomenonTime spans the earliest to the
    # latest reading (08:55–12:00 local), and its latest value is the 12:00 one, not the last one sent (08:55).
    d = api.get(f"{STA}/Datastreams({ds})", headers=admin).json()
    assert d["phenomenonTime"] == "2026-07-15T00:55:00.000Z/2026-07-15T04:00:00.000Z"
    streams = [s for t in api.get("/api/sensing/devices", headers=admin, params={"limit": 1000}).json()["items"]
               for s in t["datastreams"] if s["id"] == ds]
    assert streams[0]["last_value"] == 2.0 and streams[0]["last_time"] == "2026-07-15T04:00:00.000Z"
    # Range query: raw over 3 h, hourly rollups over a day, and downsampled to a few points with peaks kept.
    raw = api.get(f"/api/sensing/datastreams/{ds}/series", headers=admin,
                  params={"start": "2026-07-15T09:00:00+08:00", "end": "2026-07-15T12:00:00+08:00"}).json()
    assert raw["tier"] == "raw" and len(raw["points"]) == 36
    hourly = api.get(f"/api/sensing/datastreams/{ds}/series", headers=admin,
                     params={"start": "2026-07-15T00:00:00+08:00", "end": "2026-07-16T00:00:00+08:00", "tier": "1h"}).json()
    assert [p["sum"] for p in hourly["points"]] == sums and hourly["points"][1]["mean"] == pytest.approx(expected_hour / 12)
    small = api.get(f"/api/sensing/datastreams/{ds}/series", headers=admin,
                    params={"start": "2026-07-15T09:00:00+08:00", "end": "2026-07-15T12:00:00+08:00", "max_points": 10}).json()
    assert len(small["points"]) <= 10 and max(p["max"] for p in small["points"]) == 6.0
    # CSV export of the period.
    r = api.get(f"/api/sensing/datastreams/{ds}/export", headers=admin,
                params={"start": "2026-07-15T00:00:00+08:00", "end": "2026-07-16T00:00:00+08:00"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 38 and rows[0]["phenomenon_time"] == "2026-07-15T00:55:00.000Z" and rows[0]["unit"] == "mm"


def test_a_key_twice_in_one_bulk_is_stored_once_and_counted_once(api, gauge):
    """The same (datastream, time) twice in one body: the first is stored, the rollups count it once (on PostgreSQL
    the plain insert fails on the unique key and the batch goes through the statement that skips conflicts)."""
    admin = api.login("admin")
    ds = gauge["datastream"]
    body = [_obs(ds, 14, 0, 3.0, day=16), _obs(ds, 14, 1, 1.0, day=16), _obs(ds, 14, 0, 9.0, day=16)]
    r = api.post("/api/sensing/observations", json={"observations": body}, headers=admin)
    assert r.status_code == 201, r.text
    t0 = 1784181600000  # 2026-07-16T14:00:00+08:00
    with api.store.sessions() as s:
        stored = s.execute(select(Observation.t_ms, Observation.result_num).where(
            Observation.datastream_id == ds, Observation.t_ms.in_([t0, t0 + 60_000])).order_by(Observation.t_ms)).all()
        minute = s.execute(select(Rollup.vsum, Rollup.vcount).where(
            Rollup.datastream_id == ds, Rollup.tier == "1m", Rollup.bucket_ms.in_([t0, t0 + 60_000]))
            .order_by(Rollup.bucket_ms)).all()
    assert [tuple(x) for x in stored] == [(t0, 3.0), (t0 + 60_000, 1.0)]
    assert [tuple(x) for x in minute] == [(3.0, 1), (1.0, 1)]


def test_bad_bulk_is_rejected_whole_and_changes_nothing(api, gauge):
    admin = api.login("admin")
    ds = gauge["datastream"]
    good = [_obs(ds, 13, m, 1.0) for m in range(3)]
    before = table_counts(api.store)
    cases = [
        ([*good, {"datastream_id": 999999, "phenomenonTime": "2026-07-15T13:00:00Z", "result": 1.0}], 404, "unknown datastream"),
        ([*good, {**_obs(ds, 13, 30, 1.0), "unit": "cm"}], 422, "'mm'"),
        ([*good, _obs(ds, 13, 31, 1e6)], 422, "possible range"),
        ([*good, _obs(ds, 13, 32, "heavy")], 422, "numeric"),
        ([*good, {**_obs(ds, 13, 33, 1.0), "phenomenonTime": "2031-01-01T00:00:00Z"}], 422, "implausible"),
        ([*good, {**_obs(ds, 13, 34, 1.0), "phenomenonTime": "2026-07-15 13:00"}], 422, "time zone"),
        ([*good, {"phenomenonTime": "2026-07-15T13:00:00Z", "result": 1.0}], 422, "datastream_id"),
    ]
    for observations, status, words in cases:
        r = api.post("/api/sensing/observations", json={"observations": observations}, headers=admin)
        assert r.status_code == status, r.text
        assert words in r.json()["message"] and "observation 3" in r.json()["message"], r.text
    r = api.post("/api/sensing/observations", content=b'{"observations": [', headers={**admin, "content-type": "application/json"})
    assert r.status_code == 422
    assert api.post("/api/sensing/observations", json={"observations": []}, headers=admin).status_code == 422
    # A device key scoped to 义和镇 cannot write to a 大德镇 datastream.
    foreign = make_device(api, township(api, "大德镇"), "rain_gauge", "rainfall", "mm", name="大德雨量站B")
    yihe = api.login("yihe")
    before = table_counts(api.store)
    r = api.post("/api/sensing/observations", json={"observations": [_obs(foreign["datastream"], 13, 0, 1.0)]}, headers=yihe)
    assert r.status_code == 403  # township operators may not ingest at all
    assert table_counts(api.store) == before


def test_a_large_bulk_with_one_bad_observation_is_refused_whole_naming_it(api, gauge):
    """A bulk of the common shape is checked a column at a time; one bad observation deep inside still refuses
    the whole body, and the answer names its index and its field (in the message and in ``details``)."""
    admin = api.login("admin")
    ds = gauge["datastream"]
    good = [{"datastream_id": ds, "phenomenonTime": f"2026-07-16T{h:02d}:{m:02d}:{s:02d}Z", "result": float(m % 7)}
            for h in range(3) for m in range(60) for s in (0, 30)]  # 360 observations
    before = table_counts(api.store)
    cases = [
        (250, {"result": 1e6}, 422, "result", "possible range"),
        (251, {"result": "heavy"}, 422, "result", "numeric"),
        (252, {"result": None}, 422, "result", "numeric"),
        (253, {"phenomenonTime": "2026-07-16T01:00:00"}, 422, "phenomenonTime", "time zone"),
        (254, {"phenomenonTime": "2031-01-01T00:00:00Z"}, 422, "phenomenonTime", "implausible"),
        (255, {"datastream_id": 999999}, 404, "datastream_id", "unknown datastream"),
        (256, {"datastream_id": True}, 422, "datastream_id", "datastream_id"),
    ]
    for index, change, status, field, words in cases:
        observations = [dict(o) for o in good]
        observations[index].update(change)
        r = api.post("/api/sensing/observations", json={"observations": observations}, headers=admin)
        assert r.status_code == status, r.text
        answer = r.json()
        assert f"observation {index}" in answer["message"] and words in answer["message"], r.text
        assert answer["details"] == {"field": field, "observation": index}, r.text
    assert table_counts(api.store) == before
    # The same bulk without the bad one is stored whole (the column path), every observation once.
    r = api.post("/api/sensing/observations", json={"observations": good}, headers=admin)
    assert r.status_code == 201 and r.json()["accepted"] == len(good)
    with api.store.sessions() as s:
        stored = s.scalar(select(func.count()).select_from(Observation).where(
            Observation.datastream_id == ds, Observation.t_ms >= 1784160000000, Observation.t_ms < 1784170800000))
    assert stored == len(good)


def test_backpressure_answers_503_with_retry_after_and_metrics_show_it(api, gauge):
    admin = api.login("admin")
    app_state = api.app.state
    real = app_state.sensing_ingestor
    stalled = Ingestor(api.store.sessions, capacity=10)  # never started: nothing drains
    stalled.submit(*stalled.validate([_obs(gauge["datastream"], 14, m, 1.0) for m in range(8)]))
    app_state.sensing_ingestor = stalled
    try:
        before = _count(api, gauge["datastream"])
        r = api.post("/api/sensing/observations", json={"observations": [_obs(gauge["datastream"], 15, m, 1.0) for m in range(5)]},
                     headers=admin)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["details"] == {"pending": 8, "capacity": 10}
        assert _count(api, gauge["datastream"]) == before
        with pytest.raises(Backpressure):
            stalled.submit(*stalled.validate([_obs(gauge["datastream"], 16, 0, 1.0)] * 3))
    finally:
        app_state.sensing_ingestor = real
    metrics = api.get("/metrics").text
    assert "cityops_sensing_ingest_pending" in metrics and "cityops_sensing_ingest_lag_seconds" in metrics


# --- A real kill -----------------------------------------------------------------------------------------

SERVE = """
import sys, uvicorn
from cityops.app import create_app
from cityops.core.settings import Settings
data_dir, url, secret, port = sys.argv[1:5]
app = create_app(Settings(data_dir=data_dir, database_url=url, secret_key=secret, log_json=False), run_migrations=False)
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", lifespan="off")
"""



def _serve(settings) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(settings.data_dir), settings.database_url, settings.secret_key, str(port)],
                            cwd=Path(__file__).resolve().parents[1])
    wait_for_port(proc, port)
    return proc, port


def test_kill_during_ingest_loses_nothing_acknowledged(api, gauge):
    import httpx

    admin = api.login("admin")
    ds = gauge["datastream"]
    proc, port = _serve(api.store.settings)
    acked: list[int] = []
    stop = threading.Event()

    def client():
        t0 = 1_785_000_000_000  # 2026-07-25, distinct from the other tests' times
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=admin, timeout=10) as http:
            i = 0
            while not stop.is_set():
                times = [t0 + (i * 200 + k) * 1000 for k in range(200)]
                body = {"observations": [{"datastream_id": ds, "phenomenonTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + "Z",
                                          "result": 1.0} for t in times]}
                try:
                    r = http.post("/api/sensing/observations", json=body)
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    acked.extend(times)
                i += 1

    thread = threading.Thread(target=client)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(acked) < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        thread.join(10)
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 2000, "the server acknowledged too little before the kill"
    with api.store.sessions() as s:
        stored = set(s.scalars(select(Observation.t_ms).where(Observation.datastream_id == ds, Observation.t_ms >= min(acked))))
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged observations lost"


# --- MQTT against the real broker ---------------------------------------------------------------------------

def _broker() -> None:
    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=1):
            return
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail("Mosquitto required under CI=true at 127.0.0.1:1883")
        pytest.skip("Mosquitto not reachable at 127.0.0.1:1883")


@pytest.fixture
def bridge(api):
    _broker()
    from cityops.sensing.mqtt import MqttBridge
    from cityops.sensing.service import runtime

    b = MqttBridge(runtime(api.app.state), f"mqtt://{MQTT_HOST}:{MQTT_PORT}", "http://testserver/sta/v1.1",
                   client_id=f"cityops-test-{uuid.uuid4().hex[:8]}")
    b.start()
    api.app.state.sensing_mqtt = b
    yield b
    api.app.state.sensing_mqtt = None
    del api.app.state.sensing_mqtt
    b.stop(end_session=True)


def _client(name: str):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}")
    c.connect(MQTT_HOST, MQTT_PORT)
    c.loop_start()
    return c


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_mqtt_bridge_keeps_its_session_across_a_restart_unless_told_to_end_it(api):
    """A server that stops keeps its broker session (messages sent meanwhile wait for it); a throwaway client
    id (a test, a benchmark) ends it, so the broker does not go on collecting messages for it."""
    _broker()
    from cityops.sensing.mqtt import MqttBridge, end_session as end
    from cityops.sensing.service import runtime

    for end_session in (False, True):
        client_id = f"cityops-session-{uuid.uuid4().hex[:8]}"
        b = MqttBridge(runtime(api.app.state), f"mqtt://{MQTT_HOST}:{MQTT_PORT}", "http://testserver/sta/v1.1",
                       client_id=client_id, publish_ingested=False)
        b.start()
        b.stop(end_session=end_session)
        assert end(f"mqtt://{MQTT_HOST}:{MQTT_PORT}", client_id) is not end_session
        assert end(f"mqtt://{MQTT_HOST}:{MQTT_PORT}", client_id) is False  # the check ended it


def test_mqtt_create_on_the_three_topics_and_receive_updates(api, gauge, bridge):
    admin = api.login("admin")
    ds = gauge["datastream"]
    received: dict[str, list] = {}
    sub = _client("sub")
    sub.on_message = lambda c, u, m: received.setdefault(m.topic, []).append(json.loads(m.payload))
    sub.subscribe([(f"v1.1/Datastreams({ds})/Observations", 1), ("v1.1/Things", 1), (f"v1.1/Things({gauge['thing']})", 1),
                   (f"v1.1/Things({gauge['thing']})/description", 1)])
    time.sleep(0.3)
    pub = _client("pub")
    _post_one = api.post(f"{STA}/Datastreams({ds})/Observations", json={"phenomenonTime": "2026-07-19T00:00:00Z", "result": 1.0},
                         headers=admin)
    assert _post_one.status_code == 201
    time.sleep(0.3)
    received.clear()
    foi = api.get(f"{STA}/Datastreams({ds})/Observations", params={"$top": 1, "$expand": "FeatureOfInterest"},
                  headers=admin).json()["value"][0]["FeatureOfInterest"]["@iot.id"]
    before = _count(api, ds)
    messages = [
        ("v1.1/Observations", {"phenomenonTime": "2026-07-20T01:00:00Z", "result": 4.5, "Datastream": {"@iot.id": ds}}),
        (f"v1.1/Datastreams({ds})/Observations", {"phenomenonTime": "2026-07-20T02:00:00Z", "result": 5.5}),
        (f"v1.1/FeaturesOfInterest({foi})/Observations", {"phenomenonTime": "2026-07-20T03:00:00Z", "result": 6.5,
                                                         "Datastream": {"@iot.id": ds}}),
        ("v1.1/Observations", {"phenomenonTime": "2026-07-20T04:00:00Z", "result": 9999.0, "Datastream": {"@iot.id": ds}}),
        ("v1.1/Observations", b"{not json"),
    ]
    for topic, payload in messages:
        pub.publish(topic, payload if isinstance(payload, bytes) else json.dumps(payload), qos=1).wait_for_publish(5)
    assert _wait(lambda: _count(api, ds) == before + 3)
    assert _wait(lambda: bridge.rejected >= 2)
    time.sleep(0.3)
    assert bridge.rejected == 2  # the bridge never hears its own publications as new observations
    assert _count(api, ds) == before + 3  # the impossible value and the malformed message were refused
    last = api.get(f"{STA}/Observations", params={"$orderby": "phenomenonTime desc", "$top": 1,
                                                    "$filter": f"phenomenonTime lt 2026-07-21T00:00:00Z and phenomenonTime gt 2026-07-19T00:00:00Z"},
                   headers=admin).json()["value"][0]
    assert last["result"] == 6.5 and last["phenomenonTime"] == "2026-07-20T03:00:00.000Z"
    # The server published each stored observation on the datastream's topic, as its HTTP representation.
    assert _wait(lambda: len(received.get(f"v1.1/Datastreams({ds})/Observations", [])) >= 3)
    # (Keyed by id: on a shared broker another server may publish the same phenomenonTime on its own Datastream.)
    published = {o["@iot.id"]: o for o in received[f"v1.1/Datastreams({ds})/Observations"] if "@iot.id" in o}
    http = api.get(last["@iot.selfLink"].replace("http://testserver", ""), headers=admin).json()
    assert published[last["@iot.id"]] == http
    # Entity changes over HTTP: create and PATCH reach their set, entity and property topics exactly once.
    r = api.post(f"{STA}/Things", json={"name": "MQTT 新设备", "description": "x", "properties": {"unit_code": gauge["yihe"]}},
                 headers=admin)
    api.patch(f"{STA}/Things({gauge['thing']})", json={"description": "改了"}, headers=admin)
    assert _wait(lambda: f"v1.1/Things({gauge['thing']})/description" in received)
    time.sleep(0.3)
    assert [t["name"] for t in received["v1.1/Things"]].count("MQTT 新设备") == 1
    assert received[f"v1.1/Things({gauge['thing']})/description"] == [{"description": "改了"}]
    assert received[f"v1.1/Things({gauge['thing']})"][0]["description"] == "改了"
    assert r.status_code == 201
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()


def test_mqtt_data_array_messages_are_stored_all_or_nothing(api, gauge, bridge):
    """Gateways that batch send SensorThings dataArray documents on v1.1/CreateObservations: every
    observation of a good message is stored once (a resent message stores nothing), a message with one bad
    observation or a malformed document stores nothing and is counted as rejected."""
    ds = gauge["datastream"]
    pub = _client("gateway")
    try:
        before = _count(api, ds)
        good = [{"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "result"],
                 "dataArray": [[f"2026-07-22T00:{m:02d}:00Z", 1.0 + m] for m in range(30)]},
                {"Datastream": {"@iot.id": ds}, "components": ["result", "phenomenonTime", "resultTime"],
                 "dataArray": [[0.5, "2026-07-22T01:00:00Z", "2026-07-22T01:00:05Z"]]}]
        bad_value = {"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "result"],
                     "dataArray": [["2026-07-22T02:00:00Z", 1.0], ["2026-07-22T02:01:00Z", 1e9]]}
        bad_docs = [{"components": ["phenomenonTime", "result"], "dataArray": [["2026-07-22T03:00:00Z", 1.0]]},
                    {"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "colour"],
                     "dataArray": [["2026-07-22T03:00:00Z", "red"]]},
                    {"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "result"],
                     "dataArray": [["2026-07-22T03:00:00Z"]]}]
        rejected = bridge.rejected
        for payload in (good, good[0], bad_value, *bad_docs):  # good[0] alone: a resend of part of the first
            pub.publish("v1.1/CreateObservations", json.dumps(payload), qos=1).wait_for_publish(5)
        assert _wait(lambda: bridge.rejected == rejected + 4)
        assert _wait(lambda: _count_range(api, ds, "2026-07-22") == 31)
        time.sleep(0.3)
        assert _count(api, ds) == before + 31 and _count_range(api, ds, "2026-07-22") == 31
        with api.store.sessions() as s:
            value, rt = s.execute(select(Observation.result_num, Observation.result_time_ms)
                                  .where(Observation.datastream_id == ds, Observation.t_ms == 1_784_682_000_000)).one()
        assert value == 0.5 and rt == 1_784_682_005_000
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_mqtt_notifications_give_way_when_the_connection_is_backed_up(api, gauge, bridge, monkeypatch):
    """Notifications (QoS 0) are dropped and counted rather than queued behind a backed-up connection, where they
    would hold back the acknowledgements of ingested messages; ingest itself is unaffected."""
    from cityops.sensing import mqtt as bridge_module

    ds = gauge["datastream"]
    received = []
    sub = _client("sub-backed-up")
    sub.on_message = lambda c, u, m: received.append(m.topic)
    sub.subscribe(f"v1.1/Datastreams({ds})/Observations", 1)
    pub = _client("pub-backed-up")
    try:
        time.sleep(0.3)
        monkeypatch.setattr(bridge_module._PacketBuffer, "MAX_QUEUED_WRITES", 0)  # as if the broker read nothing
        doc = {"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "result"],
               "dataArray": [[f"2026-07-23T00:{m:02d}:00Z", 1.0] for m in range(12)]}
        pub.publish("v1.1/CreateObservations", json.dumps(doc), qos=1).wait_for_publish(5)
        assert _wait(lambda: _count_range(api, ds, "2026-07-23") == 12)
        assert _wait(lambda: bridge.notifications_dropped == 12)
        time.sleep(0.3)
        assert received == []
        monkeypatch.setattr(bridge_module._PacketBuffer, "MAX_QUEUED_WRITES", 16)
        doc["dataArray"] = [["2026-07-23T01:00:00Z", 2.0]]
        pub.publish("v1.1/CreateObservations", json.dumps(doc), qos=1).wait_for_publish(5)
        assert _wait(lambda: received == [f"v1.1/Datastreams({ds})/Observations"])
        assert bridge.notifications_dropped == 12 and bridge.disconnects == 0
    finally:
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()


def test_mqtt_consumption_slows_when_the_writer_stalls_and_the_connection_survives(api, gauge):
    """With a stalled writer, the bridge stops acknowledging: the broker delivers no more than the in-flight
    window and holds the rest, nothing is lost. The network loop never waits for the writer, so a stall several
    keep-alive periods long costs neither the connection nor a redelivery of the window."""
    _broker()
    from cityops.sensing.mqtt import MqttBridge

    ds = gauge["datastream"]
    stalled = Ingestor(api.store.sessions, capacity=2)
    b = MqttBridge(stalled, f"mqtt://{MQTT_HOST}:{MQTT_PORT}", "http://testserver/sta/v1.1",
                   client_id=f"cityops-slow-{uuid.uuid4().hex[:8]}", publish_ingested=False, receive_maximum=4, keepalive=3)
    b.start()
    pub = _client("slowpub")
    try:
        for k in range(20):
            pub.publish(f"v1.1/Datastreams({ds})/Observations",
                        json.dumps({"phenomenonTime": f"2026-07-21T00:{k:02d}:00Z", "result": 1.0}), qos=1)
        # The broker drops a client silent for 1.5 keep-alive periods (4.5 s). A keep-alive of 1 s also lost
        # the connection while the writer drained, under a loaded full test run: that is scheduling, not the stall.
        time.sleep(6.0)
        assert b.received == 4 and stalled.pending == 4  # the window, above the queue's capacity: HTTP gets 503 now
        assert b.disconnects == 0
        stalled.start()  # the writer drains; the broker delivers the rest
        assert _wait(lambda: _count_range(api, ds, "2026-07-21") == 20, 15), (
            f"stored {_count_range(api, ds, '2026-07-21')}, received {b.received}, pending {stalled.pending}, "
            f"disconnects {b.disconnects}, rejected {b.rejected}")
        assert b.disconnects == 0 and b.received == 20  # nothing delivered twice
    finally:
        pub.loop_stop()
        pub.disconnect()
        b.stop(end_session=True)
        stalled.stop()


def _count_range(api, ds, day):
    from cityops.sensing.timeutil import parse_instant

    lo = parse_instant(f"{day}T00:00:00Z")
    with api.store.sessions() as s:
        return s.scalar(select(func.count()).select_from(Observation).where(Observation.datastream_id == ds, Observation.t_ms >= lo,
                                                                             Observation.t_ms < lo + 86_400_000))


def test_the_rows_each_batch_updates_have_room_on_their_pages_on_postgresql(api):
    """Migration 0030: the datastreams' state and the rollups are updated by every batch; half of each page is left
    free so the new row versions stay on their page (heap-only updates, no index entries)."""
    if api.store.backend != "postgis":
        pytest.skip("PostgreSQL only (SQLite has no fill factor)")
    with api.store.engine.connect() as conn:
        options = dict(conn.execute(text(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN ('sta_datastreams', 'sensing_rollups') "
            "AND relkind = 'r' AND relnamespace = 'public'::regnamespace")).all())
    assert options == {"sta_datastreams": ["fillfactor=50"], "sensing_rollups": ["fillfactor=50"]}


def test_sqlite_file_is_consistent(api):
    if api.store.backend != "sqlite":
        pytest.skip("SQLite only")
    with api.store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def test_instants_are_formatted_exactly_to_the_millisecond():
    """Observations are stored in epoch milliseconds and read back (HTTP, MQTT, CSV) as ISO 8601 UTC:
    the text must be the stored millisecond, before 1970 too, and never off by one from float rounding."""
    from datetime import UTC, datetime, timedelta

    from cityops.sensing.timeutil import iso, parse_instant

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for ms in (0, 1, 999, 1000, -1, -1001, 1_784_505_600_123, 253_402_300_799_999, -62_135_596_800_000):
        text = iso(ms)
        assert text == (epoch + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert parse_instant(text) == ms
    assert iso(1_784_505_600_123) == "2026-07-20T00:00:00.123Z"
    assert iso(None) is None

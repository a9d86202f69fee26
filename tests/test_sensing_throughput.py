"""The fast ingest path keeps its promises on both backends: rollups folded in batch by batch equal a full
recomputation (out of order, resends, concurrent submissions), and the MQTT bridge ignores another server's
notifications heard on a shared broker instead of counting them as bad observations."""

from __future__ import annotations

import json
import random
import time
import uuid

import pytest
from sqlalchemy import select

from cityops.sensing import timeseries
from cityops.sensing.ingest import Ingestor
from cityops.sensing.models import Observation, Rollup
from tests.sensing_helpers import make_device, township

MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
T0 = 1_784_000_000_000  # 2026-07-14, inside the plausible window


@pytest.fixture(scope="module")
def streams(api):
    yihe = township(api, "义和镇")
    return [make_device(api, yihe, "rain_gauge", "rainfall", "mm", name=f"吞吐雨量站{i}")["datastream"] for i in range(3)]


def _rollups(session, ids):
    return {(d, t, b): (lo, hi, round(s, 6), n) for d, t, b, lo, hi, s, n in session.execute(
        select(Rollup.datastream_id, Rollup.tier, Rollup.bucket_ms, Rollup.vmin, Rollup.vmax, Rollup.vsum, Rollup.vcount)
        .where(Rollup.datastream_id.in_(ids)))}


def test_folded_rollups_equal_a_full_recomputation(api, streams):
    ing = Ingestor(api.store.sessions, capacity=10_000, max_batch=500)
    ing.start()
    try:
        metas = {i: ing.metas.get(i) for i in streams}
        rng = random.Random(5)
        # 2 days of readings every 7 minutes on 3 streams, sent shuffled in uneven batches, a third of them twice.
        from cityops.sensing.ingest import Row

        rows = [Row(ds, T0 + k * 7 * 60_000, None, None, float(rng.randint(0, 400)) / 10) for ds in streams for k in range(420)]
        rng.shuffle(rows)
        sends = rows + rng.sample(rows, len(rows) // 3)
        futures, i = [], 0
        while i < len(sends):
            n = rng.randint(1, 300)
            futures.append(ing.submit(sends[i:i + n], metas, block=True))
            i += n
        for f in futures:
            f.result(60)
    finally:
        ing.stop()
    with api.store.sessions() as s:
        assert len(s.scalars(select(Observation.id).where(Observation.datastream_id.in_(streams))).all()) == len(rows)
        folded = _rollups(s, streams)
        # Rebuild every bucket from the raw observations, in the same transaction, and compare.
        timeseries.recompute_rollups(s, rows)
        s.flush()
        rebuilt = _rollups(s, streams)
        s.rollback()
    assert folded.keys() == rebuilt.keys() and len(folded) > 3 * 420
    assert folded == rebuilt
    by_tier = {t: sum(v[3] for k, v in folded.items() if k[1] == t) for t in ("1m", "1h", "1d")}
    assert by_tier == {"1m": len(rows), "1h": len(rows), "1d": len(rows)}


def test_mqtt_bridge_ignores_notifications_of_other_servers(api, streams):
    import paho.mqtt.client as mqtt

    from cityops.sensing.mqtt import MqttBridge
    from cityops.sensing.service import runtime

    bridge = MqttBridge(runtime(api.app.state), f"mqtt://{MQTT_HOST}:{MQTT_PORT}", "http://testserver/sta/v1.1",
                        client_id=f"cityops-test-{uuid.uuid4().hex[:8]}")
    bridge.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"other-server-{uuid.uuid4().hex[:8]}")
    pub.connect(MQTT_HOST, MQTT_PORT)
    pub.loop_start()
    try:
        ds = streams[0]
        with api.store.sessions() as s:
            before = len(s.scalars(select(Observation.id).where(Observation.datastream_id == ds)).all())
        notification = {"@iot.id": 99, "@iot.selfLink": "http://elsewhere/sta/v1.1/Observations(99)",
                        "phenomenonTime": "2026-07-16T01:00:00.000Z", "result": 1.0}
        create = {"phenomenonTime": "2026-07-16T02:00:00Z", "result": 2.0}
        pub.publish(f"v1.1/Datastreams({ds})/Observations", json.dumps(notification), qos=1).wait_for_publish(5)
        pub.publish(f"v1.1/Datastreams({ds})/Observations", json.dumps(create), qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and bridge.ignored < 1:
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with api.store.sessions() as s:
                now = len(s.scalars(select(Observation.id).where(Observation.datastream_id == ds)).all())
            if now == before + 1:
                break
            time.sleep(0.05)
        assert bridge.ignored >= 1 and now == before + 1  # the create was stored, the notification was not
    finally:
        pub.loop_stop()
        pub.disconnect()
        bridge.stop(end_session=True)


def test_validation_fast_path_gives_what_check_gives(api, streams):
    """Bulk validation takes common readings inline; the rows must be those of ``check`` (times with offsets,
    fractions and "Z"), and anything unusual still gets check's wording (out of range, no time zone, bool)."""
    from cityops.core.errors import InvalidInput
    from cityops.sensing.ingest import check

    ing = Ingestor(api.store.sessions)
    ds = streams[1]
    meta = ing.metas.get(ds)
    times = ["2026-07-14T01:02:03Z", "2026-07-14T09:02:03.5+08:00", "2026-07-14T01:02:03.123456Z", "2026-07-14T01:02:03.0004-02:30"]
    items = [{"datastream_id": ds, "phenomenonTime": t, "result": v} for t in times for v in (0.0, 12.25, 199.5)]
    rows, _ = ing.validate(items)
    assert rows == [check(meta, it["result"], it["phenomenonTime"]) for it in items]
    assert ing._validate_columns(items, None) == (rows, {ds: meta})  # the column path took them, with check's numbers
    for bad, words in (({"phenomenonTime": "2026-07-14 01:02", "result": 1.0}, "time zone"),
                       ({"phenomenonTime": "2026-07-14T01:02:03Z", "result": 1e9}, "possible range"),
                       ({"phenomenonTime": "2026-07-14T01:02:03Z", "result": float("nan")}, "numeric"),
                       ({"phenomenonTime": "1999-07-14T01:02:03Z", "result": 1.0}, "implausible"),
                       ({"phenomenonTime": "2026-07-14T01:02:03Z", "result": True}, "numeric")):
        with pytest.raises(InvalidInput) as exc:
            ing.validate([items[0], {"datastream_id": ds, **bad}])
        assert words in exc.value.message and "observation 1" in exc.value.message
        assert exc.value.details["observation"] == 1

"""`cityops serve --workers N`: on PostgreSQL with JetStream every worker's live stream hears an alarm raised in
another process within a second, a token revoked through one worker is refused by all, and the periodic jobs
run once per period for the deployment; the embedded SQLite store refuses more workers than it serves, saying
so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import create_pg_database, drop_pg_database, free_port, pg_database_url, require_postgis, wait_for_port
from tests.natsserver import nats_server

CLI = [sys.executable, "-m", "cityops.cli"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONIOENCODING="utf-8", **extra)
    return env


def test_sqlite_refuses_more_workers_than_it_serves(tmp_path):
    subprocess.run([*CLI, "init", "--data-dir", str(tmp_path / "data")], check=True, capture_output=True, env=_env(),
                   timeout=120)
    r = subprocess.run([*CLI, "serve", "--workers", "9", "--data-dir", str(tmp_path / "data")], capture_output=True,
                       text=True, env=_env(), timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "at most 4 worker processes" in r.stderr and "PostgreSQL" in r.stderr, r.stderr


@pytest.mark.slow
def test_every_worker_hears_an_alarm_raised_elsewhere(tmp_path):
    require_postgis()
    from cityops.core.bus.models import TimerRun
    from cityops.core.db import make_engine, make_sessionmaker, migrate
    from cityops.core.settings import Settings
    from cityops.org.models import Unit
    from cityops.sensing import alarms

    name = create_pg_database()
    with nats_server(tmp_path / "nats") as nats_url:
        env = _env(CITYOPS_DATABASE_URL=pg_database_url(name), CITYOPS_BUS_TRANSPORT="jetstream", CITYOPS_NATS_URL=nats_url,
                   CITYOPS_BUS_STREAM=f"W{os.getpid()}", CITYOPS_SECRET_KEY="workers-test", CITYOPS_DATA_DIR=str(tmp_path / "data"),
                   CITYOPS_LOG_LEVEL="WARNING", CITYOPS_TIMER_EVENTS_SWEEP_SECONDS="1", CITYOPS_TIMER_TASKS_OVERDUE_SECONDS="1",
                   CITYOPS_TIMER_SENSING_SECONDS="1", CITYOPS_TIMER_DIRECTIVES_SECONDS="1",
                   CITYOPS_TIMER_NOTIFY_ESCALATE_SECONDS="1")
        settings = Settings(data_dir=tmp_path / "data", database_url=pg_database_url(name), secret_key="workers-test",
                            bus_transport="jetstream", nats_url=nats_url, bus_stream=f"W{os.getpid()}")
        engine = make_engine(settings)
        migrate(engine)
        sessions = make_sessionmaker(engine)
        with sessions() as s:
            s.add(Unit(code="500154", name="开州区", level="district", path="/500154/"))
            s.commit()
        r = subprocess.run([*CLI, "users", "add", "admin", "--role", "administrator", "--password", "Workers-2026!"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        port = free_port()
        server = subprocess.Popen([*CLI, "serve", "--workers", "2", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_port(server, port, seconds=240)
            nats_url.wait_for_clients(2)  # both workers built their app: each bus is connected to NATS
            base = f"http://127.0.0.1:{port}"
            token = httpx.post(f"{base}/api/auth/login", json={"username": "admin", "password": "Workers-2026!"},
                               timeout=30).json()["access_token"]
            heard: dict[int, list] = {n: [] for n in range(6)}

            def listen(n: int):
                with httpx.stream("GET", f"{base}/api/sensing/alarms/stream", params={"timeout": 60},
                                  headers={"Authorization": f"Bearer {token}"}, timeout=90) as resp:
                    for line in resp.iter_lines():
                        if line.startswith("data: "):
                            heard[n].append((time.perf_counter(), json.loads(line[6:])))
                            if heard[n][-1][1]["key"] == "workers-test":
                                return

            def raise_alarm(key: str) -> float:
                with sessions() as s:  # a third process raises it: whichever worker a subscriber is on, it hears it
                    t0 = time.perf_counter()
                    alarms.raise_alarm(s, key=key, severity="orange", title="跨进程告警", unit_code="500154",
                                       risk_point_code=None, datastream_id=None, evidence={}, observed_at=datetime.now(UTC))
                    s.commit()
                return t0

            # Six subscribers over fresh connections: the kernel spreads them over both workers.
            threads = [threading.Thread(target=listen, args=(n,)) for n in range(6)]
            for th in threads:
                th.start()
            # Warm up until every subscriber heard an alarm: each stream is subscribed, and the path (relay,
            # JetStream, each worker's subscription) carried one event; what is timed next is the steady state.
            deadline = time.monotonic() + 60
            for n in range(600):
                raise_alarm(f"workers-warm-{n}")
                if all(heard.values()):
                    break
                assert time.monotonic() < deadline, {k: len(v) for k, v in heard.items()}
                time.sleep(0.1)
            t0 = raise_alarm("workers-test")
            for th in threads:
                th.join(30)
            last = [v[-1] for v in heard.values()]
            assert all(d["key"] == "workers-test" and d["change"] == "raised" for _, d in last), last
            assert max(t for t, _ in last) - t0 < 1.0, [t - t0 for t, _ in last]

            # A token revoked through one worker is refused by every worker at once (access.changed drops each
            # worker's cached resolutions; without it a worker would keep the token for TOKEN_CACHE_SECONDS).
            other = httpx.post(f"{base}/api/auth/login", json={"username": "admin", "password": "Workers-2026!"},
                               timeout=30).json()["access_token"]
            me = [httpx.get(f"{base}/api/auth/me", headers={"Authorization": f"Bearer {other}"}, timeout=30).status_code
                  for _ in range(12)]  # fresh connections: both workers resolve (and cache) it
            assert me == [200] * 12, me
            assert httpx.post(f"{base}/api/auth/logout", headers={"Authorization": f"Bearer {other}"},
                              timeout=30).status_code == 204
            time.sleep(0.5)
            me = [httpx.get(f"{base}/api/auth/me", headers={"Authorization": f"Bearer {other}"}, timeout=30).status_code
                  for _ in range(12)]
            assert me == [401] * 12, me

            # The periodic jobs ran once a second for the deployment, not once a second per worker.
            with sessions() as s:
                before = {t.name: t.runs for t in s.scalars(select(TimerRun))}
            time.sleep(6)
            with sessions() as s:
                after = {t.name: (t.runs, t.holder) for t in s.scalars(select(TimerRun))}
            assert set(after) == {"events.sweep", "tasks.overdue", "sensing.maintain", "directives.sweep", "notify.escalate"}, after
            for name, (runs, _holder) in after.items():
                assert 3 <= runs - before.get(name, 0) <= 7, (name, runs - before.get(name, 0))
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            engine.dispose()
            drop_pg_database(name)


@pytest.mark.slow
def test_two_workers_share_the_mqtt_subscription(tmp_path):
    """With ``--workers 2`` each worker's bridge subscribes as ``$share/<client id>/…`` (MQTT 5): the broker gives
    each message to one of them (its log names the receiving client), both take part, and every observation is
    stored once."""
    require_postgis()
    import getpass
    import uuid

    import paho.mqtt.client as mqtt

    from cityops.core.db import make_engine, make_sessionmaker, migrate
    from cityops.core.settings import Settings
    from cityops.org.models import Unit
    from cityops.sensing.models import Observation
    from tests.sensing_helpers import make_device

    broker_port = free_port()
    conf = tmp_path / "mosquitto.conf"
    log = tmp_path / "mosquitto.log"
    # The broker's log names the client each message goes to (kept as the user running the test: the log file
    # lies in the test's own directory).
    conf.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser {getpass.getuser()}\n"
                    f"log_dest file {log}\nlog_type all\n")
    broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    name = create_pg_database()
    client_id = f"cityops-share-{uuid.uuid4().hex[:8]}"
    env = _env(CITYOPS_DATABASE_URL=pg_database_url(name), CITYOPS_SECRET_KEY="workers-test",
               CITYOPS_DATA_DIR=str(tmp_path / "data"), CITYOPS_LOG_LEVEL="WARNING",
               CITYOPS_MQTT_URL=f"mqtt://127.0.0.1:{broker_port}", CITYOPS_MQTT_CLIENT_ID=client_id)
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_database_url(name), secret_key="workers-test")
    engine = make_engine(settings)
    server = None
    try:
        wait_for_port(broker, broker_port)
        migrate(engine)
        with make_sessionmaker(engine)() as s:
            s.add(Unit(code="500154", name="开州区", level="district", path="/500154/"))
            s.commit()
        r = subprocess.run([*CLI, "users", "add", "admin", "--role", "administrator", "--password", "Workers-2026!"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        for _attempt in range(3):  # a free port can be taken by another program before the server binds it
            port = free_port()
            server = subprocess.Popen([*CLI, "serve", "--workers", "2", "--port", str(port)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for_port(server, port, seconds=240)
                time.sleep(1.0)
            except RuntimeError:
                pass
            if server.poll() is None:
                break
        deadline = time.monotonic() + 240
        while not log.exists() or sum("New client connected" in line and client_id in line for line in log.read_text().splitlines()) < 2:
            assert time.monotonic() < deadline, "both workers' bridges connect to the broker"
            time.sleep(0.5)

        class Api(httpx.Client):
            def login(self, username):
                r = self.post("/api/auth/login", json={"username": username, "password": "Workers-2026!"})
                return {"Authorization": f"Bearer {r.json()['access_token']}"}

        with Api(base_url=f"http://127.0.0.1:{port}", timeout=60) as api:
            ds = make_device(api, "500154", "rain_gauge", "rainfall", "mm", headers=api.login("admin"))["datastream"]
        n = 200
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{client_id}-device", protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", broker_port)
        pub.loop_start()
        t0 = 1_780_000_000_000
        for i in range(n):
            info = pub.publish(f"v1.1/Datastreams({ds})/Observations",
                               json.dumps({"phenomenonTime": datetime.fromtimestamp((t0 + i * 60_000) / 1000, UTC).isoformat(),
                                           "result": float(i)}), qos=1)
            info.wait_for_publish(30)
        pub.loop_stop()
        pub.disconnect()
        deadline = time.monotonic() + 60
        while True:
            with make_sessionmaker(engine)() as s:
                stored = s.scalar(select(func.count()).select_from(Observation).where(Observation.datastream_id == ds))
            if stored >= n or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert stored == n
        received = {}
        for line in log.read_text().splitlines():
            # the devices' messages (QoS 1); the servers' own notifications on the same topic come back at QoS 0
            if "Sending PUBLISH to" in line and ", q1," in line and f"Datastreams({ds})/Observations" in line:
                who = line.split("Sending PUBLISH to ", 1)[1].split(" ", 1)[0]
                if who.startswith(client_id + "-") and who != f"{client_id}-device":
                    received[who] = received.get(who, 0) + 1
        assert len(received) == 2 and sum(received.values()) == n, received
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        engine.dispose()
        drop_pg_database(name)
        broker.terminate()
        broker.wait(10)

"""`cityops serve --workers N`: on PostgreSQL with JetStream every worker's live stream hears an alarm raised in
another process within a second; the embedded SQLite store refuses more workers than it serves, saying so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import httpx

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


def test_every_worker_hears_an_alarm_raised_elsewhere(tmp_path):
    require_postgis()
    from cityops.core.db import make_engine, make_sessionmaker, migrate
    from cityops.core.settings import Settings
    from cityops.org.models import Unit
    from cityops.sensing import alarms

    name = create_pg_database()
    with nats_server(tmp_path / "nats") as nats_url:
        env = _env(CITYOPS_DATABASE_URL=pg_database_url(name), CITYOPS_BUS_TRANSPORT="jetstream", CITYOPS_NATS_URL=nats_url,
                   CITYOPS_BUS_STREAM=f"W{os.getpid()}", CITYOPS_SECRET_KEY="workers-test", CITYOPS_DATA_DIR=str(tmp_path / "data"),
                   CITYOPS_LOG_LEVEL="WARNING")
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
            wait_for_port(server, port, seconds=240)  # each worker builds its app; slow on a loaded machine
            base = f"http://127.0.0.1:{port}"
            token = httpx.post(f"{base}/api/auth/login", json={"username": "admin", "password": "Workers-2026!"},
                               timeout=30).json()["access_token"]
            heard, ready = [], threading.Barrier(7)

            def listen():
                with httpx.stream("GET", f"{base}/api/sensing/alarms/stream", params={"max_events": 1, "timeout": 20},
                                  headers={"Authorization": f"Bearer {token}"}, timeout=30) as resp:
                    ready.wait(30)
                    for line in resp.iter_lines():
                        if line.startswith("data: "):
                            heard.append((time.perf_counter(), json.loads(line[6:])))

            # Six subscribers over fresh connections: the kernel spreads them over both workers.
            threads = [threading.Thread(target=listen) for _ in range(6)]
            for th in threads:
                th.start()
            ready.wait(30)
            time.sleep(1.0)  # every worker's stream is subscribed (and its JetStream subscription up)
            with sessions() as s:  # a third process raises it: whichever worker a subscriber is on, it hears it
                t0 = time.perf_counter()
                alarms.raise_alarm(s, key="workers-test", severity="orange", title="跨进程告警", unit_code="500154",
                                   risk_point_code=None, datastream_id=None, evidence={}, observed_at=datetime.now(UTC))
                s.commit()
            for th in threads:
                th.join(30)
            assert len(heard) == 6, heard
            assert all(d["key"] == "workers-test" and d["change"] == "raised" for _, d in heard)
            assert max(t for t, _ in heard) - t0 < 1.0, [t - t0 for t, _ in heard]
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            engine.dispose()
            drop_pg_database(name)

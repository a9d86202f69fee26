"""The signature scenario on a deployment: PostGIS, NATS JetStream and ``cityops serve --workers 3``, the storm
driven over HTTP the way devices send it. In the middle of the storm the worker that holds the bus's dispatch
lease (the relay and the ordered consumers) is killed with SIGKILL. Another worker takes the lease over and
the event that was being applied comes back from JetStream; the chain still ends where the one-process run
ends: 老沟湾 red, one incident, one case, every threatened household locked once, the three levels' totals
agreeing; no event lost (every consumer processed every event of its types, no dead letter) and none
applied twice (each observation stored once, each level change once, one evacuation per household)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from cityops.core.bus.models import DeadLetter, Lease, OutboxEvent, Processed
from cityops.demo.generator import DEMO_PASSWORD, build_demo
from cityops.events.models import Case
from cityops.sensing import simulate
from cityops.sensing.models import Alarm, Observation
from cityops.tasks.models import Evacuation, Incident
from cityops.warning.tables import RiskPoint, RiskWarning
from tests.conftest import SMALL_DEMO, free_port, make_store, wait_for_port
from tests.natsserver import nats_server
from tests.test_tasks_scenario import _totals_agree

pytestmark = pytest.mark.slow

RISK_POINT = "RP-LGW-001"
LEVELS = ["none", "blue", "yellow", "orange", "red"]
CLI = [sys.executable, "-m", "cityops.cli"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONIOENCODING="utf-8", **extra)
    return env


def _children(pid: int) -> set[int]:
    kids = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids |= {int(p) for p in (task / "children").read_text().split()}
    return kids


def _durable_consumers() -> dict[str, set[str]]:
    from cityops import wiring

    return {s.consumer: s.names for s in wiring.subscriptions() if s.kind == "durable"}


def _unprocessed(sessions, after_seq: int) -> dict[str, int]:
    """Per durable consumer: events of its types in the outbox after ``after_seq`` (published while the
    deployment ran; the demo's own were written before any consumer existed) that it has not processed."""
    gaps = {}
    with sessions() as s:
        for consumer, names in _durable_consumers().items():
            events = s.scalar(select(func.count()).select_from(OutboxEvent).where(
                OutboxEvent.name.in_(names), OutboxEvent.seq > after_seq))
            done = s.scalar(select(func.count()).select_from(Processed).join(
                OutboxEvent, OutboxEvent.event_id == Processed.event_id).where(
                Processed.consumer == consumer, OutboxEvent.seq > after_seq))
            gaps[consumer] = events - done
    return gaps


class Api(httpx.Client):
    """What tests/test_tasks_scenario's totals check needs: ``get`` with headers, and ``login``."""

    def login(self, username: str) -> dict:
        r = self.post("/api/auth/login", json={"username": username, "password": DEMO_PASSWORD})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.mark.parametrize("transport", ["jetstream", "inprocess"])
def test_storm_on_three_workers_survives_a_killed_worker(tmp_path, transport):
    """On JetStream, and on the in-process transport (durable consumers in the lease holder, the other workers'
    commits heard by NOTIFY)."""
    store, close = make_store("postgis", tmp_path / "data")
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with store.sessions() as s:
        baseline = s.scalar(select(func.coalesce(func.max(OutboxEvent.seq), 0)))
    stream = f"SIG{uuid.uuid4().hex[:8].upper()}"
    with nats_server(tmp_path / "nats") as nats_url:
        env = _env(CITYOPS_DATABASE_URL=store.settings.database_url, CITYOPS_BUS_TRANSPORT=transport,
                   CITYOPS_NATS_URL=nats_url, CITYOPS_BUS_STREAM=stream, CITYOPS_SECRET_KEY="test-secret",
                   CITYOPS_DATA_DIR=str(tmp_path / "data"), CITYOPS_LOG_LEVEL="WARNING",
                   # a dead holder's lease and its unacknowledged events come back within seconds
                   CITYOPS_BUS_LEASE_SECONDS="3", CITYOPS_BUS_ACK_WAIT_SECONDS="4")
        log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed with the server
        for _attempt in range(3):  # a free port can be taken by another program before the server binds it
            port = free_port()
            server = subprocess.Popen([*CLI, "serve", "--workers", "3", "--port", str(port)], env=env,
                                      stdout=log, stderr=subprocess.STDOUT, text=True)
            try:
                wait_for_port(server, port, seconds=240)
                time.sleep(1.0)
            except RuntimeError:
                pass
            if server.poll() is None:
                break
        api = Api(base_url=f"http://127.0.0.1:{port}", timeout=60)
        try:
            try:
                if transport == "jetstream":
                    nats_url.wait_for_clients(3)  # every worker built its app and connected its bus
            except AssertionError as exc:
                raise AssertionError((tmp_path / "server.log").read_text()[-3000:]) from exc
            admin = api.login("admin")
            deadline = time.monotonic() + 60
            while True:  # every worker's bus is up: the dispatch lease is held by one of them
                with store.sessions() as s:
                    holder = s.scalar(select(Lease.holder).where(Lease.name == "bus.dispatch"))
                if holder and int(holder.split("-")[0]) in _children(server.pid):
                    break
                assert time.monotonic() < deadline, holder
                time.sleep(0.2)

            # 1. The storm over HTTP, each batch on a fresh connection (the kernel spreads them over the workers);
            # a batch refused by the killed worker is sent again (a resend is recognised and skipped).
            posted, killed = [], []

            def post(observations: list[dict]) -> None:
                posted.append(len(observations))
                if len(posted) == 60:  # about hour 10 of 24: the slope accelerates, levels are rising
                    with store.sessions() as s:
                        holder = s.scalar(select(Lease.holder).where(Lease.name == "bus.dispatch"))
                    pid = int(holder.split("-")[0])
                    assert pid in _children(server.pid)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                for attempt in range(60):
                    try:
                        r = httpx.post(f"{api.base_url}/api/sensing/observations", json={"observations": observations},
                                       headers=admin, timeout=30)
                    except httpx.TransportError:
                        time.sleep(0.5)
                        continue
                    if r.status_code == 503:
                        time.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    # A failure names its cause: the server's log holds the traceback.
                    assert r.status_code == 201, (r.text, (tmp_path / "server.log").read_text()[-6000:])
                    return
                raise AssertionError("the server did not take a batch")

            with store.sessions() as s:
                warnings_before = s.scalar(select(func.coalesce(func.max(RiskWarning.id), 0)))
            start_ms = simulate.default_start(24, live=False)
            with store.sessions() as s:  # the demo's quiet-day history reaches into the storm's day
                stored_before = s.scalar(select(func.count()).select_from(Observation).where(Observation.t_ms > start_ms))
            summary = simulate.simulate_storm(store.sessions, start_ms=start_ms, hours=24, post=post)
            assert killed and summary["observations"] == sum(posted)

            # 2. Nothing lost: every durable consumer processes every event of its types (the relay and the
            # ordered consumers moved to a surviving worker); nothing dead-lettered.
            deadline = time.monotonic() + 120
            while any(_unprocessed(store.sessions, baseline).values()):
                assert time.monotonic() < deadline, _unprocessed(store.sessions, baseline)
                time.sleep(0.5)
            time.sleep(2)  # what the last events caused (plan response, alarm) is itself applied
            while any(_unprocessed(store.sessions, baseline).values()):
                assert time.monotonic() < deadline, _unprocessed(store.sessions, baseline)
                time.sleep(0.5)
            with store.sessions() as s:
                assert not s.scalars(select(DeadLetter)).all()
                # 3. None applied twice: each observation stored once (a resent batch skipped), each level change
                # once and in order, one incident, one case, one evacuation per household.
                stored = s.scalar(select(func.count()).select_from(Observation).where(Observation.t_ms > start_ms))
                assert stored - stored_before == summary["observations"]
                levels = [LEVELS.index(w) for w in s.scalars(select(RiskWarning.level).join(
                    RiskPoint, RiskPoint.id == RiskWarning.risk_point_id).where(
                    RiskPoint.code == RISK_POINT, RiskWarning.id > warnings_before).order_by(RiskWarning.id))]
                assert levels == sorted(set(levels)) and levels[-1] == LEVELS.index("red"), levels
                incidents = s.scalars(select(Incident).where(Incident.risk_point_code == RISK_POINT)).all()
                assert len(incidents) == 1 and incidents[0].status == "active" and incidents[0].response_level == 1
                incident = incidents[0]
                cases = s.scalars(select(Case.external_key).where(Case.external_key.in_(
                    (f"incident:{incident.id}", f"alarm:warning:{RISK_POINT}")))).all()
                assert len(cases) == 1, cases
                households = s.execute(select(func.count(), func.count(func.distinct(Evacuation.household_id)))
                                       .where(Evacuation.incident_id == incident.id)).one()
                assert households[0] == households[1] > 0, households
                alarm = s.scalar(select(Alarm).where(Alarm.key == f"warning:{RISK_POINT}", Alarm.status == "active"))
                assert alarm is not None and alarm.severity == "red" and alarm.case_ref == incident.case_ref

            # 4. The three levels' totals agree; every household moved over HTTP, on whichever worker.
            users = {"district": api.login("district"), "yihe": api.login("yihe"), "taikang": api.login("taikang")}
            place = api.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
            taikang = api.get(f"/api/units/{place['unit_code']}", headers=admin).json()["parent_code"]
            users |= {"taikang_code": taikang,
                      "yihe_code": api.get(f"/api/units/{taikang}", headers=admin).json()["parent_code"]}
            d = _totals_agree(api, incident.id, users)
            assert d["households"] == households[0] and d["by_state"]["to_move"] == d["households"]
            items = api.get(f"/api/incidents/{incident.id}/evacuations", headers=users["district"]).json()["items"]
            for n, item in enumerate(items):
                r = httpx.post(f"{api.base_url}/api/evacuations/{item['id']}/state", headers=users["yihe"], timeout=30,
                               json={"state": "moved", "lon": item["lon"], "lat": item["lat"], "request_key": f"w-{item['id']}"})
                assert r.status_code == 200, r.text
                if n % 10 == 0:
                    _totals_agree(api, incident.id, users)
            d = _totals_agree(api, incident.id, users)
            assert d["all_at_home_moved"] and d["remaining_households"] == 0

            # 5. Stand down and close: the case closes with the incident.
            assert api.post(f"/api/incidents/{incident.id}/stand-down", json={"reason": "降雨停止,位移趋稳"},
                            headers=users["yihe"]).status_code == 200
            r = api.post(f"/api/incidents/{incident.id}/close", json={"note": "险情解除"}, headers=users["yihe"])
            assert r.status_code == 200 and r.json()["status"] == "closed", r.text
            deadline = time.monotonic() + 30
            while api.get(f"/api/events/cases/{incident.case_ref}", headers=admin).json()["state"] != "closed":
                assert time.monotonic() < deadline
                time.sleep(0.3)
        finally:
            api.close()
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
            close()


"""The signature scenario with every capability connected, on both backends: the storm simulator's rain
gauges and GNSS stations feed the sensing store; each committed batch (observation.batch_stored, on the bus)
re-evaluates 老沟湾's warning models;
the level rises to red; the geohazard plan activates by itself, locks the threatened households into
evacuation tasks for their grid workers and opens the event-center case; the risk point's alarm is raised;
simulated workers move every household; the three levels' totals agree at every step; the response stands
down, the incident closes and so does its case."""

from __future__ import annotations

import math
import random

import pytest
from shapely.geometry import shape
from sqlalchemy import select

from cityops.demo.generator import build_demo
from cityops.events.models import Case
from cityops.sensing import simulate
from cityops.tasks.evacuation import _distance_m
from cityops.tasks.simulate import confirm_one
from tests.conftest import BACKENDS, SMALL_DEMO, make_client, make_store
from tests.test_tasks_scenario import _totals_agree

RISK_POINT = "RP-LGW-001"
LEVELS = ["none", "blue", "yellow", "orange", "red"]


@pytest.fixture(scope="module", params=BACKENDS)
def wired(request, tmp_path_factory):
    store, close = make_store(request.param, tmp_path_factory.mktemp(f"wired-{request.param}"), wiring=True)
    build_demo(store.sessions, store.org, SMALL_DEMO)
    client = make_client(store)
    yield client
    client.app.state.ctx.bus.stop()
    client.close()
    close()


def test_storm_to_every_household_moved(wired):
    api = wired
    admin, district = api.login("admin"), api.login("district")
    rp = api.get(f"/api/risk-points/{RISK_POINT}", headers=admin).json()
    links = rp["datastreams"]
    assert links["rainfall"] and links["displacement"], "the demo links 老沟湾 to its gauge and GNSS stations"
    warnings_before = {w["identifier"] for w in rp["history"]}

    # 1. The July storm, compressed: 24 hours of 10-minute readings through the sensing store.
    summary = simulate.simulate_storm(api.store.sessions, hours=24)
    assert summary["observations"] > 0
    # Each stored batch is an observation.batch_stored event; the chain runs as bus consumers.
    api.app.state.ctx.bus.wait_idle(timeout=120)

    # 2. The warning engine judged each batch: 老沟湾 rose step by step to red, with its reasons.
    rp = api.get(f"/api/risk-points/{RISK_POINT}", headers=admin).json()
    assert rp["level"] == "red", rp.get("reasons")
    new = [w for w in reversed(rp["history"]) if w["identifier"] not in warnings_before]
    ranks = [LEVELS.index(w["level"]) for w in new if w["level"] != "none"]
    assert ranks == sorted(ranks) and ranks[-1] == LEVELS.index("red"), [w["level"] for w in new]
    assert rp["assessment"]["indicators"], "the assessment says which observations decided it"

    # 3. The geohazard plan activated by itself, at response level I, for this risk point.
    incidents = api.get("/api/incidents", headers=district).json()
    incidents = incidents["items"] if isinstance(incidents, dict) else incidents
    incident = next(i for i in incidents if i["risk_point_code"] == RISK_POINT)
    inc = api.get(f"/api/incidents/{incident['id']}", headers=district).json()
    assert inc["status"] == "active" and inc["activation"] == "auto" and inc["plan_key"] == "geohazard"
    assert inc["response_level"] == 1 and not inc["drill"]
    # Its title follows the response level it reached (it opened at II on the orange warning), and is its own.
    assert "老沟湾" in inc["title"] and "I级响应" in inc["title"] and "II级响应" not in inc["title"], inc["title"]
    assert [i["title"] for i in incidents].count(inc["title"]) == 1

    # 4. One danger, one case: the event center holds the incident's case (class 10080), and the risk point's
    # alarm, raised too, joined that case rather than opening a second one.
    case = api.get(f"/api/events/cases/{inc['case_ref']}", headers=admin).json()
    assert case["class_code"] == "10080" and case["state"] not in ("closed", "void")
    assert case["grid_name"] and case["grid_name"] != case["grid_code"]  # names, not codes, for every reader
    tasks = api.get("/api/tasks", params={"incident_id": inc["id"]}, headers=district).json()
    assert tasks and all(t["unit_name"] and t["unit_name"] != t["unit_code"] for t in tasks)
    alarms = api.get("/api/sensing/alarms", params={"risk_point": RISK_POINT, "status": "active"}, headers=admin).json()["items"]
    warning_alarm = next(a for a in alarms if a["key"] == f"warning:{RISK_POINT}")
    assert warning_alarm["severity"] == "red" and warning_alarm["case_ref"] == inc["case_ref"]
    with api.store.sessions() as session:
        keys = set(session.scalars(select(Case.external_key).where(
            Case.external_key.in_((f"incident:{inc['id']}", f"alarm:warning:{RISK_POINT}")))))
    assert len(keys) == 1, keys

    # 5. The zone's households are locked, each assigned to its own grid's worker.
    users = {"district": district, "yihe": api.login("yihe"), "taikang": api.login("taikang")}
    place = api.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
    taikang = api.get(f"/api/units/{place['unit_code']}", headers=admin).json()["parent_code"]
    users |= {"taikang_code": taikang, "yihe_code": api.get(f"/api/units/{taikang}", headers=admin).json()["parent_code"]}
    d = _totals_agree(api, inc["id"], users)
    assert d["households"] > 0 and d["by_state"]["to_move"] == d["households"]
    items = api.get(f"/api/incidents/{inc['id']}/evacuations", headers=district).json()["items"]
    assert len(items) == d["households"]
    for grid in {i["grid_code"] for i in items}:
        people = api.get("/api/people", params={"unit": grid, "post": "grid_worker"}, headers=admin).json()["items"]
        worker = next(p["id"] for p in people if p["unit_code"] == grid)
        assert all(i["assignee_person_id"] == worker for i in items if i["grid_code"] == grid)

    # The shelters nearest the zone first, measured from its edge (never farther than from the zone's centre).
    shelters = api.get("/api/shelters", params={"incident_id": inc["id"]}, headers=district).json()
    assert shelters and [s["distance_m"] for s in shelters] == sorted(s["distance_m"] for s in shelters)
    zone = shape(api.get(f"/api/incidents/{inc['id']}", headers=district).json()["zone"]["geometry"])
    centre = zone.centroid
    for s in shelters:
        assert s["distance_m"] <= _distance_m(centre.x, centre.y, s["lon"], s["lat"]) + 1
    assert api.get("/api/shelters", params={"incident_id": 99999}, headers=district).status_code == 404

    # 6. The live demo's simulated workers confirm households one at a time (as their actor, each once), and
    # leave 30 % of the zone to move for a visitor on the phone page.
    rng = random.Random(7)
    with api.store.sessions() as session:
        while confirm_one(session, rng) is not None:
            session.commit()
        assert confirm_one(session, rng) is None
    d = _totals_agree(api, inc["id"], users)
    assert d["by_state"]["to_move"] == math.floor(0.3 * d["households"]) and d["safe_households"] > 0
    timeline = api.get(f"/api/incidents/{inc['id']}/timeline", params={"decisions_only": False}, headers=district).json()
    assert sum(e["actor"] == "demo:worker" for e in timeline) == d["households"] - d["by_state"]["to_move"]

    # 7. Workers move every household still at home; the three levels agree after each report.
    states = {i["id"]: i["state"] for i in api.get(f"/api/incidents/{inc['id']}/evacuations", headers=district).json()["items"]}
    items = [i for i in items if states[i["id"]] in ("to_move", "not_home")]
    for n, item in enumerate(items):
        r = api.post(f"/api/evacuations/{item['id']}/state", headers=users["yihe"],
                     json={"state": "moved", "lon": item["lon"], "lat": item["lat"], "request_key": f"sig-{item['id']}"})
        assert r.status_code == 200, r.text
        if n % 10 == 0:
            _totals_agree(api, inc["id"], users)
    d = _totals_agree(api, inc["id"], users)
    assert d["all_at_home_moved"] and d["remaining_households"] == 0
    timeline = api.get(f"/api/incidents/{inc['id']}/timeline", params={"decisions_only": False}, headers=users["taikang"]).json()
    assert {e["actor_name"] for e in timeline if e["actor"] == "yihe"} == {"义和镇值班员"}

    # 8. Stand down and close: the incident's case closes in the event center too (its consumer of incident.closed).
    assert api.post(f"/api/incidents/{inc['id']}/stand-down", json={"reason": "降雨停止,位移趋稳"},
                    headers=users["yihe"]).status_code == 200
    r = api.post(f"/api/incidents/{inc['id']}/close", json={"note": "险情解除,转移群众全部安全"}, headers=users["yihe"])
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    api.app.state.ctx.bus.wait_idle()
    assert api.get(f"/api/events/cases/{inc['case_ref']}", headers=admin).json()["state"] == "closed"


def test_every_warning_hazard_type_has_an_emergency_plan():
    """A risk point of any hazard type the warning catalogue knows finds a plan to respond with."""
    from cityops.tasks.catalogue import catalogue as plans
    from cityops.warning.catalogue import catalogue as warnings

    for hazard_type in warnings().hazard_types:
        assert plans().plan_for(hazard_type).key, hazard_type


def _second_worker(wired):
    """Another app on the same database: another worker, as far as the bus is concerned (its own broadcast
    reader, its own caches)."""
    return make_client(wired.store)


def test_an_alarm_raised_on_one_worker_reaches_a_subscriber_of_another(wired):
    import json
    import threading
    import time
    from datetime import UTC, datetime

    from cityops.sensing import alarms

    # What the module's storm left for the consumers is applied first: the measure is this alarm's way across,
    # not the backlog's (under a loaded suite the chain's consumers were still busy and it took 1.7 s once).
    wired.app.state.ctx.bus.wait_idle(timeout=120)
    other = _second_worker(wired)
    try:
        heard, subscribed = [], threading.Event()

        def listen():
            with other.stream("GET", "/api/sensing/alarms/stream", params={"max_events": 1, "timeout": 10},
                              headers=other.login("admin")) as r:
                subscribed.set()
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        heard.append((time.perf_counter(), json.loads(line[6:])))

        th = threading.Thread(target=listen)
        th.start()
        assert subscribed.wait(10)
        time.sleep(0.3)
        # Raised through the first worker's code path (its own session and commit).
        with wired.store.sessions() as s:
            t0 = time.perf_counter()
            alarms.raise_alarm(s, key="bus-cross-worker", severity="yellow", title="跨进程告警", unit_code=None,
                               risk_point_code=None, datastream_id=None, evidence={}, observed_at=datetime.now(UTC),
                               source="rule")
            s.commit()
        th.join(15)
        assert heard and heard[0][1]["key"] == "bus-cross-worker" and heard[0][1]["change"] == "raised"
        # Within 1 s of the commit (the other worker reads the outbox; nothing woke it: it polls).
        assert heard[0][0] - t0 < 1.0 + wired.store.settings.bus_poll_seconds, heard[0][0] - t0
    finally:
        other.app.state.ctx.bus.stop()
        other.close()


def test_a_building_height_change_reaches_its_tile_on_every_worker(wired):
    import time

    import mapbox_vector_tile
    import morecantile
    from shapely.geometry import shape

    workers = [wired, _second_worker(wired)]
    try:
        admin = wired.login("admin")
        code = wired.get("/api/buildings", params={"limit": 1}, headers=admin).json()["items"][0]["code"]
        detail = wired.get(f"/api/buildings/{code}", params={"geometry": True}, headers=admin).json()
        c = shape(detail["geometry"]).centroid
        tile = morecantile.tms.get("WebMercatorQuad").tile(c.x, c.y, 14)
        url = f"/api/tiles/basemap/{tile.z}/{tile.x}/{tile.y}.mvt"

        def height(api) -> float:
            decoded = mapbox_vector_tile.decode(api.get(url, headers=api.login("admin")).content)
            return next(f["properties"]["height"] for f in decoded["buildings"]["features"] if f["properties"]["code"] == code)

        for w in workers:  # no timer re-reads the data stamps here: only the bus's tile_source.changed does
            w.app.state.tiles.stamps.check_seconds = 3600
        old = [height(w) for w in workers]  # both workers have the tile cached
        new_height = round(old[0] + 7.5, 1)
        r = wired.patch(f"/api/buildings/{code}", json={"height_m": new_height}, headers=admin)
        assert r.status_code == 200, r.text
        wired.app.state.ctx.bus.wait_idle()
        deadline = time.monotonic() + 5  # each worker hears tile_source.changed and re-reads the data stamps
        while [height(w) for w in workers] != [new_height] * 2:
            assert time.monotonic() < deadline, [height(w) for w in workers]
            time.sleep(0.2)
    finally:
        workers[1].app.state.ctx.bus.stop()
        workers[1].close()


def test_the_storm_notifies_the_right_people_and_escalates_past_the_silent(wired):
    """After the storm above: each warning rise reached 老沟湾's own grid worker and 太康村's cadre (orange and red
    also 义和镇's people on duty), the plan's activation reached its notification list, and the red warning, left
    unacknowledged by the first people, escalated to the township's leader on duty — every step on its timeline."""
    from datetime import UTC, datetime, timedelta

    from cityops.notify import service as notify
    from cityops.notify.models import Message as NotifyMessage

    api = wired
    admin = api.login("admin")
    with api.store.sessions() as s:
        msgs = list(s.scalars(select(NotifyMessage).where(NotifyMessage.kind.like("warning.%")).order_by(NotifyMessage.id)))
        storm = [m for m in msgs if m.data.get("risk_point_code") == RISK_POINT]
        assert [m.kind for m in storm][-1] == "warning.red", [m.kind for m in storm]
        ranks = [LEVELS.index(m.severity) for m in storm]
        assert ranks == sorted(ranks)
        for m in storm:
            via = {r.via for r in notify.recipients(s, m.id)}
            assert {"unit:unit", "post:village_cadre@village"} <= via, (m.kind, via)
            if m.severity == "orange":
                assert "duty:operator@township" in via and "duty:leader@township" in via, (m.kind, via)
            if m.severity == "red":  # the leader on duty only if the first people stay silent (below)
                assert "duty:operator@township" in via and "duty:leader@township" not in via, (m.kind, via)
        red = storm[-1]
        assert red.policy == "red_warning" and red.status == "open"
        plan = list(s.scalars(select(NotifyMessage).where(NotifyMessage.kind == "plan.activated")))
        assert plan, "the plan's activation told its notification list"
        names = {r.via for m in plan for r in notify.recipients(s, m.id)}
        assert "notify:区长" in names and "notify:区应急管理局" in names, names
        tasks = list(s.scalars(select(NotifyMessage).where(NotifyMessage.kind == "task.assigned")))
        assert tasks and all(notify.recipients(s, t.id) for t in tasks)
    # The grid worker of 老沟湾 has the red warning in the inbox, unacknowledged.
    worker = api.login("laogouwan")
    inbox = api.get("/api/notify/inbox", headers=worker).json()
    mine = next(i for i in inbox["items"] if i["message_id"] == red.id)
    assert mine["acknowledged_at"] is None and inbox["unacknowledged"] >= 1
    # Nobody answers for the policy's wait: the next step reaches the township's leader on duty.
    with api.store.sessions() as s:
        first = {r.id for r in notify.recipients(s, red.id)}
        moved = notify.escalate_due(s, datetime.now(UTC) + timedelta(minutes=6))
        s.commit()
        assert red.id in moved
        added = [r for r in notify.recipients(s, red.id) if r.id not in first]
        assert added and {r.via for r in added} == {"duty:leader@township"}
    timeline = api.get(f"/api/notify/messages/{red.id}/timeline", headers=admin).json()
    assert [t["what"] for t in timeline if t["what"] in ("created", "escalated")] == ["created", "escalated"]
    # The worker acknowledges at last: escalation stops.
    assert api.post(f"/api/notify/inbox/{mine['id']}/acknowledge", headers=worker, json={}).status_code == 200
    with api.store.sessions() as s:
        assert notify.escalate_due(s, datetime.now(UTC) + timedelta(hours=3)) == [] or red.id not in notify.escalate_due(s, datetime.now(UTC) + timedelta(hours=3))
        assert s.get(NotifyMessage, red.id).status == "acknowledged"


def test_one_danger_one_case_and_titles_that_follow_the_level(wired):
    """A proposed response activated after its warning alarm opened a case (the consumer of its alarm.changed)
    joins that case (the task center's consumer of incident.activated, which keeps the reference); the title names
    the risk point, follows the response level, and a second response there is numbered. Closing the incident
    closes the case (incident.closed)."""
    from datetime import UTC, datetime

    from shapely.geometry import Point

    from cityops.core.spatial import buffer_m
    from cityops.sensing import alarms
    from cityops.sensing.models import Alarm
    from cityops.tasks.plans import on_warning_level

    api, bus = wired, wired.app.state.ctx.bus
    admin, yihe = api.login("admin"), api.login("yihe")
    place = api.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
    grid, point = place["unit_code"], Point(place["lon"], place["lat"])
    body = buffer_m(point, 40, api.store.settings.metric_crs)

    def warn(level):
        with api.store.sessions() as session:
            incident = on_warning_level(session, risk_point_code="WL-LGW", hazard_type="waterlogging", level=level,
                                        unit_code=grid, geometry=body, evidence={}, place_name="老沟湾测试积水点")
            alarm = alarms.raise_alarm(session, key="warning:WL-LGW", severity=level, title=f"老沟湾测试积水点{level}",
                                       unit_code=grid, risk_point_code="WL-LGW", datastream_id=None, evidence={},
                                       observed_at=datetime.now(UTC), source="warning", lon=point.x, lat=point.y,
                                       case_ref=incident.case_ref)
            session.commit()
            ids = incident.id, alarm.id
        bus.wait_idle()
        with api.store.sessions() as session:
            return ids[0], session.get(Alarm, ids[1]).case_ref

    iid, alarm_case = warn("orange")  # the flood plan proposes: no case yet, the alarm opens one
    assert alarm_case and api.get(f"/api/incidents/{iid}", headers=yihe).json()["title"] == "老沟湾测试积水点II级响应"
    assert api.post(f"/api/incidents/{iid}/activate", headers=yihe).status_code == 200
    bus.wait_idle()
    inc = api.get(f"/api/incidents/{iid}", headers=yihe).json()
    assert inc["case_ref"] == alarm_case  # joined, not a second case
    timeline = api.get(f"/api/incidents/{iid}/timeline", headers=yihe).json()
    assert any(e["kind"] == "case.linked" and e["data"]["joined"] for e in timeline)
    with api.store.sessions() as session:
        assert session.scalar(select(Case.id).where(Case.external_key == f"incident:{iid}")) is None
    assert warn("red") == (iid, alarm_case)
    assert api.get(f"/api/incidents/{iid}", headers=yihe).json()["title"] == "老沟湾测试积水点I级响应"
    assert api.post(f"/api/incidents/{iid}/stand-down", headers=yihe, json={"reason": "积水退去"}).status_code == 200
    assert api.post(f"/api/incidents/{iid}/close", headers=yihe, json={"note": "结束"}).status_code == 200
    bus.wait_idle()
    assert api.get(f"/api/events/cases/{alarm_case}", headers=admin).json()["state"] == "closed"
    with api.store.sessions() as session:
        again = on_warning_level(session, risk_point_code="WL-LGW", hazard_type="waterlogging", level="orange",
                                 unit_code=grid, geometry=body, evidence={}, place_name="老沟湾测试积水点")
        session.commit()
        assert again.id != iid and again.title == "老沟湾测试积水点II级响应（第2次）"


# ------------------------------------------------------------------------ cases opened by consumers on the bus

def test_an_alarm_opens_its_case_through_the_bus_once(wired):
    """A red alarm is committed without its case; the running bus's consumer of its alarm.changed (sensing.alarm_case)
    has the event center open it and the alarm keeps the reference. Delivered again (a lost acknowledgement) or
    handled again past the bus's record, nothing more is opened."""
    from datetime import UTC, datetime

    from cityops.sensing import alarms
    from cityops.sensing.models import Alarm
    from tests.bus_helpers import deliver, handle_again, outbox_head

    api, bus = wired, wired.app.state.ctx.bus
    grid = api.get("/api/places", params={"q": "老沟湾"}, headers=api.login("admin")).json()[0]["unit_code"]
    since = outbox_head(api.store)
    with api.store.sessions() as s:
        alarm = alarms.raise_alarm(s, key="bus-case-red", severity="red", title="总线告警立案", unit_code=grid,
                                   risk_point_code=None, datastream_id=None, evidence={}, observed_at=datetime.now(UTC))
        s.commit()
        alarm_id = alarm.id
        assert alarm.case_ref is None
    bus.wait_idle()
    with api.store.sessions() as s:
        case_ref = s.get(Alarm, alarm_id).case_ref
    assert case_ref
    envs = deliver(api.store, "sensing.alarm_case", since, twice=True)
    handle_again(api.store, "sensing.alarm_case", envs)
    with api.store.sessions() as s:
        assert s.get(Alarm, alarm_id).case_ref == case_ref
        assert s.scalars(select(Case.id).where(Case.external_key == "alarm:bus-case-red")).all() == [int(case_ref)]


def test_an_incident_opens_and_closes_its_case_through_the_bus_once(wired):
    """An activated response is committed without its case; the consumer of incident.activated (tasks.incident_case)
    opens it and the incident keeps the reference; redelivered, nothing more; incident.closed closes it."""
    from shapely.geometry import Point

    from cityops.core.spatial import buffer_m
    from cityops.tasks.models import Incident
    from cityops.tasks.plans import on_warning_level
    from tests.bus_helpers import deliver, handle_again, outbox_head

    api, bus = wired, wired.app.state.ctx.bus
    yihe = api.login("yihe")
    place = api.get("/api/places", params={"q": "老沟湾"}, headers=api.login("admin")).json()[0]
    body = buffer_m(Point(place["lon"], place["lat"]), 30, api.store.settings.metric_crs)
    since = outbox_head(api.store)
    with api.store.sessions() as session:
        incident = on_warning_level(session, risk_point_code="BUS-CASE-1", hazard_type="landslide", level="red",
                                    unit_code=place["unit_code"], geometry=body, evidence={}, place_name="总线立案测试点")
        session.commit()
        iid = incident.id
        assert incident.status == "active" and incident.case_ref is None
    bus.wait_idle()
    case_ref = api.get(f"/api/incidents/{iid}", headers=yihe).json()["case_ref"]
    assert case_ref
    envs = deliver(api.store, "tasks.incident_case", since, twice=True)
    handle_again(api.store, "tasks.incident_case", envs)
    with api.store.sessions() as session:
        assert session.get(Incident, iid).case_ref == case_ref
        assert session.scalars(select(Case.id).where(Case.external_key == f"incident:{iid}")).all() == [int(case_ref)]
    timeline = api.get(f"/api/incidents/{iid}/timeline", params={"decisions_only": False}, headers=yihe).json()
    assert sum(e["kind"] == "case.linked" for e in timeline) == 1
    assert api.post(f"/api/incidents/{iid}/stand-down", headers=yihe, json={"reason": "测试结束"}).status_code == 200
    assert api.post(f"/api/incidents/{iid}/close", headers=yihe, json={"note": "结束"}).status_code == 200
    bus.wait_idle()
    assert api.get(f"/api/events/cases/{case_ref}", headers=api.login("admin")).json()["state"] == "closed"

"""Event center on both backends: intake, locate and route, every workflow path and illegal action, deadlines
with 延期 and 挂账, escalation, duplicates and merge, photos, 12345 import, the alarm and task hooks,
evaluation against hand-computed figures, exports, the live stream and Open311 GeoReport v2 (plain
spec-conforming calls and the independent ``georeport`` client over a real HTTP server)."""

from __future__ import annotations

import io
import re
from contextlib import contextmanager
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from shapely.geometry import shape
from sqlalchemy import func, select, text

from cityops.core import audit
from cityops.core.errors import Forbidden
from cityops.events import actions, creation, evaluation, routing, sla
from cityops.events.models import Case, Outbox, Transition
from cityops.events.workflow import STATES, USER_ACTIONS, allowed_actions
from cityops.identity.scope import Scope
from tests.conftest import serve_in_thread, table_counts

CST = ZoneInfo("Asia/Shanghai")
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 200 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
ACTOR = audit.Actor("tester")
ALL = Scope(all_units=True)


def local(*args) -> datetime:
    return datetime(*args, tzinfo=CST)


@pytest.fixture(scope="module")
def places(api):
    """Points inside two grids of 义和镇 and one of 大德镇."""
    admin = api.login("admin")
    towns = {u["name"]: u["code"] for u in api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]}
    out = {"yihe": towns["义和镇"], "dade": towns["大德镇"]}
    for key, town in (("yihe", towns["义和镇"]), ("dade", towns["大德镇"])):
        grids = api.get("/api/units", params={"root": town, "level": "grid", "limit": 2}, headers=admin).json()["items"]
        for i, g in enumerate(grids):
            geom = shape(api.get(f"/api/units/{g['code']}", params={"geometry": True}, headers=admin).json()["geometry"])
            p = geom.representative_point()
            out[f"{key}{i}"] = (p.x, p.y, g["code"])
    return out


def _new(api, places, key="yihe0", class_code="06010", headers=None, **extra) -> dict:
    lon, lat, _ = places[key]
    r = api.post("/api/events/cases", headers=headers or api.login("admin"),
                 json={"class_code": class_code, "lon": lon, "lat": lat, "description": "测试案卷", **extra})
    assert r.status_code == 201, r.text
    return r.json()


def _act(api, number, action, headers=None, **body):
    return api.post(f"/api/events/cases/{number}/actions/{action}", headers=headers or api.login("admin"), json=body)


# ------------------------------------------------------------------------------------------ intake

def test_create_locates_routes_and_logs(api, places):
    case = _new(api, places)
    lon, lat, grid = places["yihe0"]
    assert case["state"] == "reported" and case["grid_code"] == grid and case["township_code"] == places["yihe"]
    assert case["unit_path"].endswith(f"/{grid}/")
    # 06010 暴露垃圾: 区城市管理局 answers for matter:06 over the district.
    assert case["route"]["mode"] == "auto" and case["route"]["department_code"] == "cgj"
    detail = api.get(f"/api/events/cases/{case['number']}", headers=api.login("admin")).json()
    assert [h["action"] for h in detail["history"]] == ["report"]
    assert detail["allowed_actions"] == ["accept", "void", "merge", "supervise", "comment"]
    # The answer to the report (built from what was stored, not read back) is the stored case.
    assert {k: v for k, v in detail.items() if k in case} == case


def test_create_by_unit_code_address_and_legacy_code(api, places):
    _, _, grid = places["yihe1"]
    case = _new(api, places, class_code="0102", kind="matter", lon=None, lat=None, unit_code=grid)
    assert case["grid_code"] == grid and case["class_code"] == "06010"
    admin = api.login("admin")
    place = api.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()
    name = (place["items"] if isinstance(place, dict) else place)[0]["name"]
    r = api.post("/api/events/cases", headers=admin, json={"class_code": "10080", "address": f"太康村6组{name}附近"})
    assert r.status_code == 201, r.text
    assert r.json()["township_code"] == places["yihe"]
    # No department answers for 10080 in the demo: 属地兜底 to the township.
    assert r.json()["route"]["mode"] == "fallback" and r.json()["route"]["unit_code"] == places["yihe"]


@pytest.mark.parametrize("body, status, needle", [
    ({"class_code": "99999", "lon": 108.4, "lat": 31.2}, 422, "99999"),
    ({"class_code": "06010"}, 422, "location is required"),
    ({"class_code": "06010", "lon": 116.4, "lat": 39.9}, 404, "outside the district"),
    ({"class_code": "06010", "lon": 108.4}, 422, "both lon and lat"),
    ({"class_code": "06010", "lon": 400, "lat": 31.2}, 422, "out of range"),
    ({"class_code": "06010", "unit_code": "999999999"}, 422, "unknown unit code"),
    ({"class_code": "06010", "address": "火星大道1号"}, 422, "no known place"),
    ({"class_code": "06010", "lon": 108.4, "lat": 31.2, "urgency": "whenever"}, 422, "urgency"),
    ({"class_code": "06010", "lon": 108.4, "lat": 31.2, "description": "x" * 4001}, 422, "description"),
    ({"class_code": "06010", "lon": 108.4, "lat": 31.2, "source": "sensor"}, 422, "own entry point"),
])
def test_bad_input_is_refused_and_changes_nothing(api, places, body, status, needle):
    before = table_counts(api.store)
    r = api.post("/api/events/cases", headers=api.login("admin"), json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"] and r.json()["request_id"]
    assert table_counts(api.store) == before


@pytest.mark.parametrize("raw, needle", [
    (b"{not json", "body: Invalid JSON"),
    (b"", "body: Invalid JSON"),
    (b"[1, 2]", "body: Input should be an object"),
    (b'{"lon": 108.4, "lat": 31.2}', "body.class_code: Field required"),
    (b'{"class_code": "06010", "lon": "east", "lat": 31.2}', "body.lon: Input should be a valid number"),
    (b'{"class_code": "06010", "lon": 108.4, "lat": 31.2, "external_key": "' + b"k" * 201 + b'"}',
     "body.external_key: String should have at most 200 characters"),
])
def test_malformed_report_body_is_refused_in_the_standard_format(api, places, raw, needle):
    before = table_counts(api.store)
    r = api.post("/api/events/cases", headers={**api.login("admin"), "Content-Type": "application/json"}, content=raw)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input" and needle in r.json()["message"] and r.json()["request_id"]
    assert table_counts(api.store) == before


def test_report_body_is_documented(api):
    """The intake route reads its body itself; the OpenAPI document still describes it."""
    op = api.get("/api/openapi.json").json()["paths"]["/api/events/cases"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert op["requestBody"]["required"] and schema["required"] == ["class_code"]
    assert {"class_code", "lon", "lat", "address", "unit_code", "external_key"} <= set(schema["properties"])


def test_rest_retry_with_the_same_key_is_idempotent(api, places):
    first = _new(api, places, external_key="retry-1")
    again = _new(api, places, external_key="retry-1")
    assert first["number"] == again["number"]


def test_patrol_report_with_photos_and_bad_attachments(api, places):
    headers = api.login("admin")
    lon, lat, _ = places["yihe0"]
    r = api.post("/api/events/patrol", headers=headers, data={"class_code": "09006", "lon": str(lon), "lat": str(lat),
                                                              "description": "占道经营", "client_key": "p-1"},
                 files=[("photo", ("a.jpg", JPEG, "image/jpeg")), ("photo", ("b.png", PNG, "image/png"))])
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["source"] == "patrol" and len(case["attachments"]) == 2
    stored = api.store.settings.data_dir / "events" / "attachments" / case["number"]
    assert len(list(stored.iterdir())) == 2
    photo = api.get(case["attachments"][0]["url"], headers=headers)
    assert photo.status_code == 200 and photo.content == JPEG and photo.headers["content-type"] == "image/jpeg"
    before = table_counts(api.store)
    bad = [
        ([("photo", ("x.gif", b"GIF89a....", "image/gif"))], 422, "image/gif"),
        ([("photo", ("x.jpg", b"not a jpeg at all", "image/jpeg"))], 422, "not a valid image/jpeg"),
        ([("photo", ("big.jpg", JPEG + b"\x00" * (10 * 1024 * 1024), "image/jpeg"))], 413, "limit"),
    ]
    for files, status, needle in bad:
        r = api.post("/api/events/patrol", headers=headers, data={"class_code": "09006", "lon": str(lon), "lat": str(lat)},
                     files=files)
        assert r.status_code == status, r.text
        assert needle in r.json()["message"]
    assert table_counts(api.store) == before


def test_hotline_csv_import_all_or_nothing_and_idempotent(api, places):
    headers = api.login("admin")
    lon, lat, grid = places["yihe1"]
    good = ("ticket_id,received_at,class_code,title,description,address,lon,lat,unit_code,caller_name,caller_phone,urgency\n"
            f"H-1,2026-11-20T09:00:00+08:00,06028,噪声,夜间噪声,,{lon},{lat},,张三,13900000001,normal\n"
            f"H-2,2026-11-20 10:00:00,0101,井盖,井盖缺失,,,,{grid},李四,13900000002,urgent\n")
    r = api.post("/api/events/import/hotline", headers=headers, files={"file": ("t.csv", good.encode("utf-8-sig"), "text/csv")})
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 2
    r = api.post("/api/events/import/hotline", headers=headers, files={"file": ("t.csv", good.encode(), "text/csv")})
    assert r.json() == {"created": 0, "skipped": 2, "numbers": []}
    before = table_counts(api.store)
    bad = good.replace("H-1", "H-3").replace("H-2", "H-4").replace("06028", "77777")
    r = api.post("/api/events/import/hotline", headers=headers, files={"file": ("t.csv", bad.encode(), "text/csv")})
    assert r.status_code == 422 and r.json()["details"][0]["row"] == 2 and "77777" in r.json()["details"][0]["problem"]
    r = api.post("/api/events/import/hotline", headers=headers, files={"file": ("t.csv", b"name,phone\n", "text/csv")})
    assert r.status_code == 422 and "ticket_id" in r.json()["message"]
    r = api.post("/api/events/import/hotline", headers=headers, files={"file": ("t.csv", "\xff\xfe".encode("latin-1"), "text/csv")})
    assert r.status_code == 422
    assert table_counts(api.store) == before


# ---------------------------------------------------------------------------------------- workflow

def test_happy_path_seven_steps_and_projection_from_log(api, places):
    number = _new(api, places, reporter={"phone": "13988887777"})["number"]
    for action, state in (("accept", "accepted"), ("file", "dispatched"), ("start", "in_handling"),
                          ("feedback", "handled"), ("close", "closed")):
        r = _act(api, number, action, note="ok")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == state
    detail = r.json()
    assert [h["action"] for h in detail["history"]] == ["report", "accept", "file", "dispatch", "start", "feedback", "close"]
    assert detail["history"][3]["actor"] == "system:routing" and detail["department_code"] == "cgj"
    assert detail["deadline_at"] and detail["closed_at"] and detail["allowed_actions"] == []
    with api.store.sessions() as session:
        case = session.scalar(select(Case).where(Case.number == number))
        assert actions.verify_projection(session, case) == {}
        assert actions.current_state(session, case) == "closed"
        told = session.scalars(select(Outbox).where(Outbox.case_id == case.id, Outbox.topic == "notify.reporter")).all()
        assert [n.recipient for n in told] == ["13988887777"]


def test_the_reporter_rates_the_closed_case_through_the_link_of_the_closure_message(api, places):
    """Closing a case reported with an e-mail address tells the reporter (notifications, through case.changed as
    the bus stores it) with a link that rates the case: only with that link's token, 1–5, once; bad input is
    refused and changes nothing."""
    from urllib.parse import parse_qs, urlsplit

    from cityops.core.bus import Envelope
    from cityops.core.bus.models import OutboxEvent
    from cityops.events.manifest import CaseChanged
    from cityops.notify import subscriptions
    from cityops.notify.models import Message as Note

    number = _new(api, places, reporter={"email": "citizen@mail.example"})["number"]
    other = _new(api, places, reporter={"email": "other@mail.example"})["number"]
    for n in (number, other):
        for action in ("accept", "file", "start", "feedback", "close"):
            assert _act(api, n, action, note="ok").status_code == 200
    with api.store.sessions() as s:
        rows = s.scalars(select(OutboxEvent).where(OutboxEvent.name == CaseChanged.name).order_by(OutboxEvent.seq)).all()
        row = next(r for r in rows if r.payload["number"] == number and r.payload["action"] == "close")
        env = Envelope(id=row.event_id, seq=row.seq, tx=row.tx, name=row.name, version=row.version,
                       occurred_at=datetime.now(UTC), payload=CaseChanged(**row.payload))
        mid = subscriptions.case_changed(s, env)
        s.commit()
        note = s.get(Note, mid)
        assert note.kind == "case.closed" and "评价" in note.body
        closing = s.scalar(select(Transition.data).where(Transition.action == "close", Transition.case_id == row.payload["case_id"]))
        assert row.payload["rating_token"] not in str(closing)  # the case keeps only its digest
    link = urlsplit(note.link)
    assert link.path == f"/open311/v2/requests/{number}/rating.json"
    token = parse_qs(link.query)["token"][0]
    r = api.get(note.link)
    assert r.status_code == 200 and r.json()[0]["service_request_id"] == number and r.json()[0]["rating"] is None
    url = f"/open311/v2/requests/{number}/rating.json"
    before = table_counts(api.store)
    for path, form, status in ((url, {"token": "x" * 24, "rating": "4"}, 403),  # not the reporter's link
                               (f"/open311/v2/requests/{other}/rating.json", {"token": token, "rating": "4"}, 403),
                               (url, {"rating": "4"}, 403),
                               (url, {"token": token, "rating": "6"}, 400), (url, {"token": token, "rating": "四"}, 400),
                               (url, {"token": token, "rating": ""}, 400),
                               ("/open311/v2/requests/2099-999999/rating.json", {"token": token, "rating": "4"}, 404)):
        r = api.post(path, data=form)
        assert r.status_code == status, (path, form, r.status_code, r.text)
        assert r.json()[0]["description"]
    assert api.get(f"{url}?token=wrong").status_code == 403
    assert table_counts(api.store) == before
    r = api.post(url, data={"token": token, "rating": "4", "comment": "处理及时"})
    assert r.status_code == 200, r.text
    assert r.json()[0]["rating"] == 4
    again = api.post(url, data={"token": token, "rating": "1"})
    assert again.status_code == 409 and api.get(note.link).json()[0]["rating"] == 4
    detail = api.get(f"/api/events/cases/{number}", headers=api.login("admin")).json()
    assert detail["rating"] == 4 and [h for h in detail["history"] if h["action"] == "rate"][0]["actor"] == "reporter"


def _case_in_state(session, places, state: str) -> Case:
    lon, lat, _ = places["yihe0"]
    case = creation.create_case(session, source="rest", class_code="06012", lon=lon, lat=lat, actor=ACTOR)
    paths = {"reported": [], "accepted": ["accept"], "filed": None, "dispatched": ["accept", "file"],
             "returned": ["accept", "file", "return"], "in_handling": ["accept", "file", "start"],
             "extension_requested": ["accept", "file", "start", "request_extension"],
             "backlogged": ["accept", "file", "start", "backlog"], "handled": ["accept", "file", "start", "feedback"],
             "rework": ["accept", "file", "start", "feedback", "rework"],
             "closed": ["accept", "file", "start", "feedback", "close"], "void": ["void"]}
    if state == "filed":
        case.route = {"mode": "queue", "candidates": ["cgj", "zjw"]}  # an ambiguous route waits for a dispatcher
        paths["filed"] = ["accept", "file"]
    for action in paths[state]:
        actions.act(session, case, action, ACTOR, note="n", data={"extension": "1d"} if action == "request_extension" else None)
    assert case.state == state
    return case


def test_every_illegal_action_gets_409_listing_the_allowed_ones(api, places):
    headers = api.login("admin")
    with api.store.sessions() as session:
        numbers = {state: _case_in_state(session, places, state).number for state in STATES}
        session.commit()
    before = table_counts(api.store)
    for state, number in numbers.items():
        allowed = allowed_actions(state)
        for action in USER_ACTIONS:
            if action in allowed:
                continue
            r = _act(api, number, action, headers, note="x")
            assert r.status_code == 409, (state, action, r.text)
            assert r.json()["details"] == {"state": state, "allowed": allowed}
            assert action in r.json()["message"]
    assert _act(api, numbers["reported"], "teleport", headers).status_code == 422
    assert table_counts(api.store) == before


def test_side_states_return_extension_backlog_rework_void_supervise(api, places):
    with api.store.sessions() as session:
        t0 = local(2026, 11, 23, 9, 0)
        lon, lat, _ = places["yihe0"]
        case = creation.create_case(session, source="rest", class_code="06010", lon=lon, lat=lat, actor=ACTOR,
                                   reported_at=t0 - timedelta(minutes=30))
        actions.act(session, case, "accept", ACTOR, at=t0)
        actions.act(session, case, "file", ACTOR, at=t0)  # auto-dispatched
        assert case.deadline_at == local(2026, 11, 23, 15, 0).astimezone(UTC)
        # 回退 then re-dispatch to the township (属地).
        actions.act(session, case, "return", ACTOR, note="非本部门职责", at=t0 + timedelta(minutes=10))
        assert case.state == "returned" and case.returned_count == 1
        actions.act(session, case, "dispatch", ACTOR, data={"unit_code": places["yihe"]}, at=t0 + timedelta(minutes=20))
        assert case.assigned_unit_code == places["yihe"] and case.department_code is None
        actions.act(session, case, "start", ACTOR, at=t0 + timedelta(minutes=30))
        # 延期: request 1 day, approved → deadline moves by 7 working hours (Mon 15:00 → Tue 15:00).
        actions.act(session, case, "request_extension", ACTOR, note="需协调", data={"extension": "1d"}, at=t0 + timedelta(hours=1))
        actions.act(session, case, "approve_extension", ACTOR, at=t0 + timedelta(hours=2))
        assert case.deadline_at == local(2026, 11, 24, 15, 0).astimezone(UTC) and case.extension_count == 1
        # A second extension needs leadership (events.approve_long).
        actions.act(session, case, "request_extension", ACTOR, note="再次延期", data={"extension": "2h"}, at=t0 + timedelta(hours=3))
        township_may = lambda p: p != "events.approve_long"  # noqa: E731
        with pytest.raises(Forbidden, match="leadership"):
            actions.act(session, case, "approve_extension", ACTOR, may=township_may, at=t0 + timedelta(hours=4))
        actions.act(session, case, "reject_extension", ACTOR, note="不予延期", at=t0 + timedelta(hours=4))
        assert case.deadline_at == local(2026, 11, 24, 15, 0).astimezone(UTC)
        # 挂账 at Mon 14:00 (8h left: Mon 14:00-17:30 + Tue to 15:00 = 3.5 + 3.5 + 1 = 8h), resumed Wed 09:00.
        actions.act(session, case, "backlog", ACTOR, note="季节性", at=local(2026, 11, 23, 14, 0))
        assert case.state == "backlogged" and case.deadline_at is None and case.paused_remaining_s == 8 * 3600
        actions.act(session, case, "resume", ACTOR, at=local(2026, 11, 25, 9, 0))
        assert case.deadline_at == local(2026, 11, 26, 10, 0).astimezone(UTC)  # Wed 09:00 + 8h: 3 + 3.5 + Thu 1.5
        actions.act(session, case, "supervise", ACTOR, note="领导督办", at=local(2026, 11, 25, 10, 0))
        actions.act(session, case, "feedback", ACTOR, at=local(2026, 11, 25, 11, 0))
        actions.act(session, case, "rework", ACTOR, note="核查未通过", at=local(2026, 11, 25, 11, 30))
        actions.act(session, case, "start", ACTOR, at=local(2026, 11, 25, 11, 40))
        actions.act(session, case, "feedback", ACTOR, at=local(2026, 11, 25, 15, 0))
        actions.act(session, case, "close", ACTOR, at=local(2026, 11, 25, 16, 0))
        assert (case.rework_count, case.supervision_count, case.state) == (1, 1, "closed")
        assert actions.verify_projection(session, case) == {}
        # 作废 needs a reason.
        other = creation.create_case(session, source="rest", class_code="06010", lon=lon, lat=lat, actor=ACTOR)
        with pytest.raises(Exception, match="note"):
            actions.act(session, other, "void", ACTOR)
        actions.act(session, other, "void", ACTOR, note="无效上报")
        assert other.state == "void" and other.voided_at
        session.commit()


def test_transition_log_is_append_only(api, places):
    number = _new(api, places)["number"]
    with api.store.engine.connect() as conn:
        case_id = conn.execute(text("SELECT id FROM event_cases WHERE number = :n"), {"n": number}).scalar()
        conn.rollback()
    for sql in ("UPDATE event_transitions SET actor = 'x' WHERE case_id = :c", "DELETE FROM event_transitions WHERE case_id = :c"):
        with pytest.raises(Exception, match="append-only"):
            with api.store.engine.begin() as conn:
                conn.execute(text(sql), {"c": case_id})


def test_permissions_per_action(api, places):
    number = _new(api, places)["number"]
    # The grid worker of 太康村 may report and verify but not accept (受理) or dispatch.
    gw = api.login("gridworker")
    r = _act(api, number, "accept", gw)
    assert r.status_code in (403, 404)
    leader = api.login("leader")
    r = _act(api, number, "accept", leader)
    assert r.status_code == 403 and "accept" in r.json()["message"]


# --------------------------------------------------------------------------- SLA and escalation

def test_due_soon_then_escalation_one_level_up_per_overdue_period(api, places):
    with api.store.sessions() as session:
        lon, lat, grid = places["yihe1"]
        case = creation.create_case(session, source="rest", class_code="06010", lon=lon, lat=lat, actor=ACTOR,
                                   reported_at=local(2025, 3, 10, 8, 0))
        actions.act(session, case, "accept", ACTOR, at=local(2025, 3, 10, 9, 0))
        actions.act(session, case, "file", ACTOR, at=local(2025, 3, 10, 9, 0))  # deadline 15:00, limit 4h
        mine = Scope(unit_paths=(case.unit_path,))
        assert sla.sweep(session, local(2025, 3, 10, 10, 0), scope=mine) == {"due_soon": 0, "escalated": 0}
        assert sla.sweep(session, local(2025, 3, 10, 14, 30), scope=mine) == {"due_soon": 1, "escalated": 0}
        assert sla.sweep(session, local(2025, 3, 10, 14, 40), scope=mine) == {"due_soon": 0, "escalated": 0}
        # Overdue by 1h (< one limit): escalated one level up, to the village.
        assert sla.sweep(session, local(2025, 3, 10, 16, 0), scope=mine)["escalated"] == 1
        assert (case.escalation_level, case.escalated_to) == (1, grid[:12])
        assert sla.sweep(session, local(2025, 3, 10, 16, 30), scope=mine)["escalated"] == 0  # idempotent
        # Overdue by 4h+ of working time: township.
        assert sla.sweep(session, local(2025, 3, 11, 11, 0), scope=mine)["escalated"] == 1
        assert (case.escalation_level, case.escalated_to) == (2, grid[:9])
        notices = session.scalars(select(Outbox).where(Outbox.case_id == case.id, Outbox.topic == "notify.escalation")
                                  .order_by(Outbox.id)).all()
        assert [n.recipient for n in notices] == [f"unit:{grid[:12]}", f"unit:{grid[:9]}"]
        assert actions.verify_projection(session, case) == {}
        session.commit()


# ----------------------------------------------------------------------------------- duplicates

def test_duplicates_and_merge_inform_every_reporter(api, places):
    headers = api.login("admin")
    lon, lat, _ = places["yihe1"]
    numbers = []
    for i, dlon in enumerate((0.0, 0.0001, 0.0002)):
        r = api.post("/api/events/cases", headers=headers, json={"class_code": "06042", "lon": lon + dlon, "lat": lat,
                                                                  "reporter": {"phone": f"1390000000{i}"}})
        numbers.append(r.json()["number"])
    far = api.post("/api/events/cases", headers=headers, json={"class_code": "06042", "lon": lon + 0.01, "lat": lat}).json()["number"]
    cands = api.get(f"/api/events/cases/{numbers[0]}/duplicates", headers=headers).json()
    found = [c["number"] for c in cands]
    assert set(numbers[1:]) <= set(found) and far not in found
    assert cands[0]["distance_m"] <= cands[-1]["distance_m"]
    r = api.post(f"/api/events/cases/{numbers[0]}/merge", headers=headers, json={"children": numbers[1:]})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["children"]) == sorted(numbers[1:])
    for child in numbers[1:]:
        c = api.get(f"/api/events/cases/{child}", headers=headers).json()
        assert c["state"] == "void" and c["merged_into"] == r.json()["id"]
    with api.store.sessions() as session:
        notices = session.scalars(select(Outbox).where(Outbox.topic == "notify.reporter")).all()
        assert {"13900000001", "13900000002"} <= {n.recipient for n in notices}
    # Merging a different class is refused; merging into a void case too.
    other = _new(api, places, key="yihe1", class_code="06012")["number"]
    assert api.post(f"/api/events/cases/{numbers[0]}/merge", headers=headers, json={"children": [other]}).status_code == 422
    assert api.post(f"/api/events/cases/{numbers[1]}/merge", headers=headers, json={"children": [other]}).status_code == 409


# ----------------------------------------------------------------------------------------- hooks

def test_alarm_hook_is_idempotent_and_files_at_once(api, places):
    lon, lat, _ = places["yihe0"]
    with api.store.sessions() as session:
        kw = dict(source="sensing", alarm_key="gnss-7:2026-11-23T01:00Z", class_code=None, title="老沟湾位移告警",
                  description="GNSS 位移速率超阈值", lon=lon, lat=lat, level="橙", evidence={"rate_mm_d": 12.5}, actor=ACTOR)
        case = creation.create_case_from_alarm(session, **kw)
        session.commit()
        again = creation.create_case_from_alarm(session, **kw)
        assert again.id == case.id
        assert case.urgency == "urgent" and case.class_code == "10080" and case.state == "dispatched"
        assert case.assigned_unit_code == places["yihe"]  # 属地兜底
        assert case.deadline_at is not None
        closed = actions.close_case(session, case.id, "险情已排除", ACTOR)
        assert closed.state == "closed"
        assert actions.verify_projection(session, closed) == {}
        with pytest.raises(Exception, match="level"):
            creation.create_case_from_alarm(session, **dict(kw, alarm_key="k2", level="purple"))
        session.commit()


# ----------------------------------------------------------------------------------- evaluation

def test_evaluation_formulas_against_a_hand_computed_example(api, places):
    """Monday 3 March 2025 in one 义和镇 grid (no other test has cases there then), class 06010 (4 working hours; filed 09:00 → deadline 15:00):
    A closed on time; B returned once and closed late; C open and overdue; D reworked once and closed on
    time; E (a public report) backlogged; F reported and voided.
    filed 5, public filed 1, due 4 (E is 挂账), closed 3, on time 2, handled 3 with 1 rework, dispatched 5 with
    1 returned, reported 6 with 5 filed. Rates: 结案率 3/4, 按期结案率 2/4, 返工率 1/3, 准确派遣率 4/5,
    有效上报率 5/6, 监督举报率 1/5, 准确立案率 5/5. Composite 0.1·80 + 0.2·60 + 0.3·75 + 0.4·50 = 62.5."""
    lon, lat, grid = places["yihe0"]
    d = lambda h, m=0: local(2025, 3, 3, h, m)  # noqa: E731
    with api.store.sessions() as session:
        def new(source="patrol"):
            c = creation.create_case(session, source=source, class_code="06010", lon=lon, lat=lat, actor=ACTOR, reported_at=d(8, 30))
            actions.act(session, c, "accept", ACTOR, at=d(8, 45))
            actions.act(session, c, "file", ACTOR, at=d(9))
            return c

        def run(c, *steps):
            for action, at in steps:
                actions.act(session, c, action, ACTOR, at=at, note="n")

        a, b, _c_open_overdue, dd, e = new(), new(), new(), new(), new("public")
        run(a, ("start", d(9, 30)), ("feedback", d(11)), ("close", d(11, 30)))
        run(b, ("return", d(9, 10)))
        actions.act(session, b, "dispatch", ACTOR, at=d(9, 20), data={"unit_code": places["yihe"]})
        run(b, ("start", d(9, 30)), ("feedback", d(16)), ("close", d(16, 30)))
        run(dd, ("start", d(9, 30)), ("feedback", d(10)), ("rework", d(10, 30)), ("start", d(10, 40)), ("feedback", d(11)),
            ("close", d(11, 10)))
        run(e, ("start", d(9, 30)), ("backlog", d(10)))
        f = creation.create_case(session, source="patrol", class_code="06010", lon=lon, lat=lat, actor=ACTOR, reported_at=d(8, 40))
        run(f, ("void", d(8, 50)))
        session.commit()
        rows = evaluation.evaluate(session, ALL, local(2025, 3, 3), local(2025, 3, 4), "grid")
    row = next(r for r in rows if r["key"] == grid)
    assert {k: row[k] for k in ("reported", "valid_reports", "filed", "public_filed", "due", "closed", "closed_on_time",
                                "handled", "reworks", "dispatched", "dispatched_on_time", "dispatch_returned", "voided")} == {
        "reported": 6, "valid_reports": 5, "filed": 5, "public_filed": 1, "due": 4, "closed": 3, "closed_on_time": 2,
        "handled": 3, "reworks": 1, "dispatched": 5, "dispatched_on_time": 5, "dispatch_returned": 1, "voided": 0}
    assert row["closure_rate"] == 0.75 and row["ontime_closure_rate"] == 0.5
    assert row["rework_rate"] == pytest.approx(1 / 3, abs=1e-6) and row["accurate_dispatch_rate"] == 0.8
    assert row["valid_report_rate"] == pytest.approx(5 / 6, abs=1e-6) and row["public_report_rate"] == 0.2
    assert row["accurate_filing_rate"] == 1.0 and row["ontime_dispatch_rate"] == 1.0
    assert row["composite"] == 62.5
    # The denominator rule: "closed on time / closed" would read 2/3; the overdue open case C counts.
    assert row["ontime_closure_rate"] != round(2 / 3, 6)
    # Published worked example (天门): 应结案 972, 结案 911, 按期 737 → 93.72 % and 75.82 %.
    assert round(911 / 972 * 100, 2) == 93.72 and round(737 / 972 * 100, 2) == 75.82
    assert evaluation.filed_band_score(0) == 100 and evaluation.filed_band_score(2) == 90 and evaluation.filed_band_score(9) == 0



def _rollup_rows(session):
    from cityops.events.models import EvaluationRollup as R
    from cityops.events.rollup import METRICS

    return {(r.dim, r.month, r.key, r.path): tuple(getattr(r, m) for m in METRICS)
            for r in session.scalars(select(R)) if any(getattr(r, m) for m in METRICS)}


def test_evaluation_from_monthly_rollups_equals_the_per_case_query(api, places):
    """The fast path (whole months from the rollups, partial months per case) gives the per-case query's
    numbers for aligned and unaligned periods, every group and narrower scopes, including cases whose deadline
    moves across a month end (延期), that are paused (挂账), reworked, voided, or still open and overdue; and
    rebuilding the rollups from the cases gives the rows the incremental upkeep wrote."""
    lon, lat, _ = places["yihe1"]
    dlon, dlat, _ = places["dade0"]
    with api.store.sessions() as session:
        def new(at, where=(lon, lat), source="patrol"):
            c = creation.create_case(session, source=source, class_code="06010", lon=where[0], lat=where[1], actor=ACTOR,
                                    reported_at=at)
            actions.act(session, c, "accept", ACTOR, at=at + timedelta(minutes=5))
            actions.act(session, c, "file", ACTOR, at=at + timedelta(minutes=10))
            return c

        # Wed 30 April 2025 16:00: 4 working hours run into May; the extension moves the deadline further.
        a = new(local(2025, 4, 30, 16, 0))
        actions.act(session, a, "start", ACTOR, at=local(2025, 4, 30, 16, 30))
        actions.act(session, a, "request_extension", ACTOR, note="n", data={"extension": "1d"}, at=local(2025, 4, 30, 17, 0))
        actions.act(session, a, "approve_extension", ACTOR, at=local(2025, 4, 30, 17, 10))
        actions.act(session, a, "feedback", ACTOR, at=local(2025, 5, 6, 9, 0))
        actions.act(session, a, "rework", ACTOR, note="n", at=local(2025, 5, 6, 9, 30))
        actions.act(session, a, "start", ACTOR, at=local(2025, 5, 6, 9, 40))
        actions.act(session, a, "feedback", ACTOR, at=local(2025, 6, 3, 9, 0))
        actions.act(session, a, "close", ACTOR, at=local(2025, 6, 3, 10, 0))
        b = new(local(2025, 5, 30, 10, 0), (dlon, dlat), "public")  # open and overdue from June on
        actions.act(session, b, "supervise", ACTOR, note="n", at=local(2025, 6, 2, 9, 0))
        c = new(local(2025, 4, 15, 9, 0))
        actions.act(session, c, "start", ACTOR, at=local(2025, 4, 15, 9, 30))
        actions.act(session, c, "backlog", ACTOR, note="n", at=local(2025, 4, 15, 10, 0))
        d = creation.create_case(session, source="rest", class_code="06010", lon=lon, lat=lat, actor=ACTOR,
                                reported_at=local(2025, 5, 31, 23, 50))
        actions.act(session, d, "void", ACTOR, note="n", at=local(2025, 6, 1, 0, 10))
        e = new(local(2025, 7, 1, 8, 0), (dlon, dlat))
        actions.act(session, e, "return", ACTOR, note="n", at=local(2025, 7, 1, 8, 30))
        session.commit()

        yihe = Scope(unit_paths=(a.unit_path[: a.unit_path.index(places["yihe"]) + len(places["yihe"]) + 1],))
        village = Scope(unit_paths=(a.unit_path.rsplit("/", 2)[0] + "/",))
        periods = [(local(2025, 1, 1), local(2026, 1, 1)), (local(2025, 4, 20, 12), local(2025, 7, 1, 9)),
                   (local(2025, 5, 1), local(2025, 6, 1)), (local(2024, 12, 31, 23), local(2027, 1, 1)),
                   (local(2025, 5, 31, 23), local(2025, 6, 1, 1))]
        for start, end in periods:
            for group in evaluation.GROUPS:
                for scope in (ALL, yihe, village):
                    fast = evaluation.evaluate(session, scope, start, end, group)
                    ref = evaluation.evaluate(session, scope, start, end, group, per_case=True)
                    assert fast == ref, (start, end, group, scope)
        year = {r["key"]: r for r in evaluation.evaluate(session, ALL, local(2025, 1, 1), local(2026, 1, 1), "township")}
        assert year[places["dade"]]["supervised"] >= 1 and year[places["yihe"]]["reworks"] >= 1
        # Case a's deadline moved from April 30 to May by the extension: it is due in May, not April.
        may = evaluation.evaluate(session, ALL, local(2025, 5, 1), local(2025, 6, 1), "grid", per_case=True)
        assert any(r["key"] == a.grid_code and r["due"] >= 1 and r["closed"] >= 1 for r in may)

        from cityops.events import rollup

        kept = _rollup_rows(session)
        if api.store.backend != "sqlite":  # kept on SQLite only (see rollup.enabled)
            assert kept == {}
            return
        assert any(k[0] == "grid" and k[1] == "2025-05" for k in kept)
        rollup.rebuild(session.connection())
        assert _rollup_rows(session) == kept
        session.rollback()


def test_the_rollup_rows_of_new_cases_in_one_pass_equal_each_case_folded_alone(api):
    """``rollup.new_case_rows`` (the case writer's one pass over a group) gives the rows of ``contributions``
    summed case by case: cases just reported (counted per bucket together, two in the same grid and month, one
    across a month end in the duty calendar's zone, one without a reporter), and cases that arrive with later
    facts (filed, dispatched, supervised), which take the general path."""
    from collections import defaultdict

    from cityops.events import rollup

    def case(at, grid="500154101001001", path="/500100/500154/500154101/500154101001/500154101001001/", **more):
        return {**dict.fromkeys(rollup.FIELDS), "source": "rest", "state": "reported", "grid_code": grid,
                "unit_path": path, "reported_by": "tester", "reported_at": at, "rework_count": 0, "returned_count": 0,
                "supervision_count": 0, **more}

    at = local(2025, 4, 30, 23, 30)  # in the duty calendar's zone
    cases = [case(at), case(at + timedelta(minutes=20)),  # 30 April 23:50 local: the same buckets
             case(at + timedelta(minutes=40)),  # 1 May 00:10 local: the next month
             case(at, grid="500154101001002", path="/500100/500154/500154101/500154101001/500154101001002/", reported_by=None),
             case(at, assigned_unit_code="500154101"),  # routed to a unit at once: its department bucket
             case(at, state="filed", filed_at=at + timedelta(hours=1), filed_by="filer", department_code="d1",
                  deadline_at=at + timedelta(days=2)),
             case(at, dispatched_at=at + timedelta(hours=2), dispatched_by="disp", dispatch_due_at=at + timedelta(hours=3),
                  returned_count=1),
             case(at, supervision_count=1), case(None)]
    summed: dict = defaultdict(lambda: defaultdict(int))
    for c in cases:
        rollup._add(summed, rollup.contributions(c))
    key = lambda r: (r["dim"], r["month"], r["key"], r["path"])  # noqa: E731
    fast = sorted(rollup.new_case_rows(cases), key=key)
    assert fast == sorted(rollup._delta({}, summed), key=key)
    assert {r["month"] for r in fast} == {"2025-04", "2025-05"}
    grid = {r["month"]: r for r in fast if r["dim"] == "grid" and r["key"] == "500154101001001"}
    # Six reported on 30 April, one 40 minutes later on 1 May; the filed one filed on 1 May.
    assert grid["2025-04"]["reported"] == 6 and grid["2025-05"]["reported"] == 1 and grid["2025-05"]["filed"] == 1
    # A group of reports only (the case writer's usual group) gives its rows without the general path's deltas.
    reports = [c for c in cases if c["reported_at"] is not None and c["filed_at"] is None
               and c["dispatched_at"] is None and not c["supervision_count"]]
    alone: dict = defaultdict(lambda: defaultdict(int))
    for c in reports:
        rollup._add(alone, rollup.contributions(c))
    assert len(reports) >= 4
    assert sorted(rollup.new_case_rows(reports), key=key) == sorted(rollup._delta({}, alone), key=key)


def test_cases_taken_in_by_the_case_writer_keep_the_rollups_a_rebuild_gives(api, places):
    """Cases reported through the single-case route (several at once, so the writer stores them as groups), the
    batch route and an idempotent retry: the rollups kept by the writer's one pass equal a rebuild from the cases
    (SQLite; PostgreSQL keeps none)."""
    import concurrent.futures

    from cityops.events import rollup

    admin = api.login("admin")
    bodies = [{"class_code": "06010", "lon": places[k][0], "lat": places[k][1], "source": s}
              for k in ("yihe0", "yihe1", "dade0") for s in ("patrol", "public", "hotline")]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda b: api.post("/api/events/cases", headers=admin, json=b), bodies))
    assert [r.status_code for r in answers] == [201] * len(bodies)
    retried = {"class_code": "06010", "lon": places["dade0"][0], "lat": places["dade0"][1], "external_key": "rollup-1"}
    first = api.post("/api/events/cases", headers=admin, json=retried)
    again = api.post("/api/events/cases", headers=admin, json=retried)
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    assert api.post("/api/events/cases/batch", headers=admin, json=_batch(api, places)).status_code == 201
    with api.store.sessions() as session:
        kept = _rollup_rows(session)
        if api.store.backend != "sqlite":  # kept on SQLite only (see rollup.enabled)
            assert kept == {}
            return
        month = rollup.month_key(datetime.now(UTC))
        assert sum(v[0] for k, v in kept.items() if k[0] == "grid" and k[1] == month) >= len(bodies) + 1 + 3
        rollup.rebuild(session.connection())
        assert _rollup_rows(session) == kept
        session.rollback()

def test_evaluation_api_exports_csv_and_xlsx(api, places):
    from openpyxl import load_workbook

    headers = api.login("admin")
    params = {"start": "2025-03-03T00:00:00+08:00", "end": "2025-03-04T00:00:00+08:00", "group": "township"}
    r = api.get("/api/events/evaluation", headers=headers, params=params)
    assert r.status_code == 200 and any(i["key"] == places["yihe"] for i in r.json()["items"])
    r = api.get("/api/events/evaluation", headers=headers, params={**params, "format": "csv"})
    assert r.status_code == 200 and r.text.lstrip("\ufeff").startswith("key,reported")
    r = api.get("/api/events/evaluation", headers=headers, params={**params, "format": "xlsx"})
    ws = load_workbook(io.BytesIO(r.content)).active
    assert ws["A1"].value == "对象" and any(row[0].value == places["yihe"] for row in ws.iter_rows(min_row=2))
    for bad in ({**params, "group": "planet"}, {**params, "end": "2025-03-01T00:00:00+08:00"}, {**params, "start": "2025-03-03T00:00:00"}):
        assert api.get("/api/events/evaluation", headers=headers, params=bad).status_code == 422
    r = api.get("/api/events/cases", headers=headers, params={"format": "csv", "queue": "to_accept"})
    assert r.status_code == 200 and "number,state_name" in r.text


def test_queues_filters_and_live_stream(api, places):
    headers = api.login("admin")
    number = _new(api, places, key="yihe1", class_code="07001")["number"]
    queue = api.get("/api/events/cases", headers=headers, params={"queue": "to_accept", "class_code": "07001"}).json()
    assert number in [c["number"] for c in queue["items"]]
    assert api.get("/api/events/cases", headers=headers, params={"queue": "nope"}).status_code == 422
    r = api.get("/api/events/stream", headers=headers, params={"timeout": 0})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert number in r.text and "event: case.report" in r.text
    last = max(int(line[4:]) for line in r.text.splitlines() if line.startswith("id: "))
    _act(api, number, "accept", headers)
    r = api.get("/api/events/stream", headers={**headers, "Last-Event-ID": str(last)}, params={"timeout": 0})
    assert "event: case.accept" in r.text and "case.report" not in r.text


# ------------------------------------------------------------------------------------- Open311

def test_open311_plain_calls_json_and_xml(api, places):
    lon, lat, _ = places["yihe0"]
    admin = api.login("admin")
    key = api.post("/api/users/admin/api-keys", headers=admin, json={"name": "open311"}).json()
    api_key = key.get("api_key") or key.get("token") or key.get("key")
    r = api.get("/open311/v2/discovery.json")
    assert r.status_code == 200 and r.json()["endpoints"][0]["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert api.get("/open311/v2/discovery.xml").headers["content-type"].startswith("text/xml")
    services = api.get("/open311/v2/services.json", params={"jurisdiction_id": "500154"}).json()
    codes = {s["service_code"] for s in services}
    assert "06010" in codes and "C01001" in codes and all(isinstance(c, str) for c in codes)
    xml = ET.fromstring(api.get("/open311/v2/services.xml").content)
    assert xml.tag == "services" and xml.find("service/service_code").text
    definition = api.get("/open311/v2/services/06010.json").json()
    assert definition["attributes"][0]["code"] == "urgency"
    r = api.post("/open311/v2/requests.json", data={"api_key": api_key, "service_code": "06010", "lat": str(lat),
                                                    "long": str(lon), "description": "路边垃圾", "email": "a@b.cn",
                                                    "jurisdiction_id": "500154"})
    assert r.status_code == 200, r.text
    rid = r.json()[0]["service_request_id"]
    assert "token" not in r.json()[0]
    one = api.get(f"/open311/v2/requests/{rid}.json").json()
    assert len(one) == 1 and one[0]["status"] == "open" and one[0]["service_code"] == "06010"
    assert "a@b.cn" not in api.get(f"/open311/v2/requests/{rid}.json").text  # no personal data in public reads
    listed = api.get("/open311/v2/requests.xml", params={"service_request_id": rid})
    assert ET.fromstring(listed.content).find("request/service_request_id").text == rid
    # Errors: the standard format, with the right HTTP status.
    before = table_counts(api.store)
    cases = [
        (api.post, "/open311/v2/requests.json", {"data": {"service_code": "06010", "lat": str(lat), "long": str(lon)}}, 403),
        (api.post, "/open311/v2/requests.json", {"data": {"api_key": "cok_bad", "service_code": "06010", "lat": str(lat), "long": str(lon)}}, 403),
        (api.post, "/open311/v2/requests.json", {"data": {"api_key": api_key, "service_code": "98765", "lat": str(lat), "long": str(lon)}}, 404),
        (api.post, "/open311/v2/requests.json", {"data": {"api_key": api_key, "service_code": "06010"}}, 400),
        (api.post, "/open311/v2/requests.json", {"data": {"api_key": api_key, "service_code": "06010", "lat": "39.9", "long": "116.4"}}, 400),
        (api.post, "/open311/v2/requests.json", {"data": {"api_key": api_key, "service_code": "06010", "lat": "x", "long": "y"}}, 400),
        *[(api.post, "/open311/v2/requests.json", {"data": {"api_key": api_key, "service_code": "06010", "lat": str(lat), "long": str(lon),
                                                             "media_url": url}}, 400)
          for url in ("javascript:alert(1)", "photo.jpg", "https://", "https://a.cn/x y.jpg", "https://a.cn/" + "x" * 2100)],
        (api.get, "/open311/v2/services.json", {"params": {"jurisdiction_id": "beijing"}}, 404),
        (api.get, "/open311/v2/services/99999.json", {}, 404),
        (api.get, "/open311/v2/requests/nope.json", {}, 404),
        (api.get, "/open311/v2/tokens/abc.json", {}, 404),
        (api.get, "/open311/v2/requests.json", {"params": {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"}}, 400),
        (api.get, "/open311/v2/requests.json", {"params": {"status": "pending"}}, 400),
    ]
    for call, url, kw, status in cases:
        r = call(url, **kw)
        assert r.status_code == status, (url, kw, r.text)
        body = r.json()
        assert isinstance(body, list) and body[0]["code"] and body[0]["description"], body
    r = api.get("/open311/v2/services/99999.xml")
    err = ET.fromstring(r.content)
    assert r.status_code == 404 and err.tag == "errors" and err.find("error/description").text
    assert table_counts(api.store) == before


def test_open311_scope_of_the_api_key(api, places):
    """An API key of the 义和镇 outsider cannot file a request in 大德镇 (403, nothing written)."""
    headers = api.login("admin")
    r = api.post("/api/users", headers=headers, json={"username": "yihe_311", "password": "yihe-311-pass", "role": "integration",
                                                      "scope_units": [places["yihe"]]})
    assert r.status_code == 201, r.text
    key = api.post("/api/users/yihe_311/api-keys", headers=headers, json={"name": "k"}).json()
    api_key = key.get("api_key") or key.get("token") or key.get("key")
    lon, lat, _ = places["dade0"]
    before = table_counts(api.store)
    r = api.post("/open311/v2/requests.json", data={"api_key": api_key, "service_code": "06010", "lat": str(lat), "long": str(lon)})
    assert r.status_code == 403 and r.json()[0]["code"] == "403"
    assert table_counts(api.store) == before



@pytest.fixture(scope="module")
def live_url(api):
    with serve_in_thread(api.app, "uvicorn-open311-test") as url:
        yield f"{url}/open311/v2"


PHOTO = "https://photos.example.cn/2026/07/倒伏树木.jpg?size=large&v=2"


def test_open311_with_the_georeport_client(api, places, live_url):
    """The independent ``georeport`` client (PyPI) reads services, definitions and requests, JSON and XML."""
    from georeport import GeoReport

    lon, lat, _ = places["yihe1"]
    key = api.post("/api/users/admin/api-keys", headers=api.login("admin"), json={"name": "georeport"}).json()
    api_key = key.get("api_key") or key.get("token") or key.get("key")
    r = httpx.post(f"{live_url}/requests.xml", data={"api_key": api_key, "service_code": "C01001", "lat": str(lat), "long": str(lon),
                                                     "attribute[urgency]": "urgent", "jurisdiction_id": "500154",
                                                     "media_url": PHOTO})
    assert r.status_code == 200, r.text
    rid = ET.fromstring(r.content).find("request/service_request_id").text
    for fmt in ("json", "xml"):
        client = GeoReport(live_url, jurisdiction="500154", output_format=fmt)
        services = client.get_service_list()
        assert {"06010", "C01001"} <= {s["service_code"] for s in services}
        definition = client.get_service_definition("06010")
        attrs = definition["attributes"]
        assert attrs
        got = client.get_service_request(rid)
        got = got[0] if isinstance(got, list) else got
        assert got["service_request_id"] == rid and got["status"] == "open" and got["service_code"] == "C01001"
        assert got["media_url"] == PHOTO  # the photo sent with the request comes back
        listed = client.get_service_requests(service_code="C01001")
        listed = listed if isinstance(listed, list) else [listed]
        assert rid in [x["service_request_id"] for x in listed]


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_import_sweep_and_evaluate(api, places, tmp_path):
    """``cityops events`` as a real subprocess against this backend's store."""
    import os
    import subprocess
    import sys

    settings = api.store.settings
    env = {**os.environ, "CITYOPS_DATA_DIR": str(settings.data_dir), "CITYOPS_SECRET_KEY": "test-secret",
           "CITYOPS_LOG_JSON": "false"}
    if settings.database_url:
        env["CITYOPS_DATABASE_URL"] = settings.database_url
    lon, lat, _ = places["yihe1"]
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(f"ticket_id,received_at,class_code,lon,lat\nCLI-1,2025-06-02T09:00:00+08:00,06010,{lon},{lat}\n", encoding="utf-8")
    run = lambda *a: subprocess.run([sys.executable, "-m", "cityops.cli", "events", *a], env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    r = run("import-hotline", str(csv_path))
    assert r.returncode == 0 and "created 1" in r.stdout, r.stderr
    assert "skipped 1" in run("import-hotline", str(csv_path)).stdout
    r = run("sweep", "--now", "2000-01-01T00:00:00+08:00")
    assert r.returncode == 0 and "escalated: 0" in r.stdout, r.stderr
    out = tmp_path / "eval.xlsx"
    r = run("evaluate", "2025-06-01T00:00:00+08:00", "2025-07-01T00:00:00+08:00", "--group", "township", "--output", str(out))
    assert r.returncode == 0 and out.stat().st_size > 1000, r.stderr
    r = run("sweep", "--now", "2026-01-01T00:00:00")
    assert r.returncode != 0 and "time zone" in (r.stdout + r.stderr)


def test_demo_cases_span_the_workflow_and_match_their_logs(api):
    with api.store.sessions() as session:
        cases = session.scalars(select(Case).where(Case.reported_by == "demo:supervisor")).all()
        assert len(cases) >= 20
        states = {c.state for c in cases}
        assert {"closed", "reported"} <= states and len(states) >= 4, states
        assert all(actions.verify_projection(session, c) == {} for c in cases)
        assert any(c.closed_at and c.closed_at > c.deadline_at for c in cases if c.closed_at and c.deadline_at)


def test_department_staff_see_only_their_departments_cases(api, places):
    """zhujian works for 区住建委 (zjw): a 08004 工地扬尘 case routes there; a 06010 case goes to 城管局."""
    staff = api.login("zhujian")
    dust = _new(api, places, class_code="08004")["number"]
    garbage = _new(api, places, class_code="06010")["number"]
    for number in (dust, garbage):
        for action in ("accept", "file"):
            assert _act(api, number, action).status_code == 200
    listed = [c["number"] for c in api.get("/api/events/cases", headers=staff, params={"limit": 5000}).json()["items"]]
    assert dust in listed and garbage not in listed
    assert api.get(f"/api/events/cases/{garbage}", headers=staff).status_code == 404
    r = _act(api, dust, "start", staff)
    assert r.status_code == 200 and r.json()["state"] == "in_handling"


def test_sqlite_writers_of_another_process_wait_for_the_writer_lock(tmp_path):
    """SQLite only (PostgreSQL has row locks, no writer lock): a write section waits while another process (a
    second uvicorn worker) is in its own, instead of sleeping in SQLite's busy handler."""
    import subprocess
    import sys
    import time

    from tests.conftest import make_store

    s, close = make_store("sqlite", tmp_path / "data")
    holder = None
    try:
        lock_file = f"{s.engine.url.database}-writers"
        holder = subprocess.Popen(
            [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
             " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(1.0)", lock_file],
            stdout=subprocess.PIPE)
        assert holder.stdout.readline().strip() == b"held"
        start = time.monotonic()
        with s.sessions() as session, routing.write_section(session):
            waited = time.monotonic() - start
            session.execute(text("CREATE TABLE probe_written (x INTEGER)"))
            session.commit()
        assert waited >= 0.5, f"entered the write section after {waited:.2f} s while another process held it"
        with s.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM probe_written")).scalar() == 0
    finally:
        if holder is not None:
            holder.wait(10)
        close()


def _draft(api, places, key="yihe0", **extra) -> creation.CaseDraft:
    lon, lat, _ = places[key]
    with api.store.sessions() as session:
        return creation.draft_case(session, source="rest", class_code="06010", lon=lon, lat=lat, description="成组提交",
                                  actor=ACTOR, **extra)


def test_a_group_stores_each_report_once_and_a_bad_one_fails_alone(api, places):
    import uuid

    from cityops.core.errors import Conflict

    taken = _new(api, places)["number"]
    key = f"group:{uuid.uuid4().hex}"
    first = _draft(api, places, external_key=key)
    clash = _draft(api, places)
    clash.values["number"] = taken  # collides with a stored case: this one fails, the others go in
    repeat = _draft(api, places, external_key=key)
    other = _draft(api, places, key="dade0")
    before = table_counts(api.store)
    with api.store.sessions() as session:
        results = creation.insert_drafts(session, [first, clash, repeat, other])
        session.commit()
    assert results[0][1] is True and results[3][1] is True and results[0][0] != results[3][0]
    assert isinstance(results[1], Conflict)
    assert results[2] == (results[0][0], False)  # the same key twice in one group: one case
    after = table_counts(api.store)
    for table in ("event_cases", "event_transitions", "event_outbox"):
        assert after[table] == before[table] + 2, table
    with api.store.sessions() as session:
        stored = session.get(Case, results[3][0])
        assert (stored.number, stored.unit_path, stored.state) == (other.values["number"], other.values["unit_path"], "reported")
        log = session.execute(text("SELECT seq, action, to_state FROM event_transitions WHERE case_id = :c"),
                              {"c": stored.id}).all()
        assert [tuple(r) for r in log] == [(1, "report", "reported")]
        # A later retry of the key, alone: the first case again, nothing stored.
        assert creation.insert_drafts(session, [_draft(api, places, external_key=key)]) == [(results[0][0], False)]
        session.commit()
    assert table_counts(api.store) == after


def test_a_group_goes_in_with_each_case_linked_to_its_own_log_entry_and_outbox_row(api, places):
    """``insert_drafts`` writes the case, its first log entry and its outbox row of a whole group through the
    storage strategy's ``insert_family`` (one statement on PostgreSQL): each case gets its own entry and row, the
    ids come back in the group's order, and every value reads back as given (time zones, JSON, the point)."""
    from sqlalchemy.exc import IntegrityError

    from cityops.core.storage import storage_of

    keys = ["yihe0", "dade0", "yihe1"]
    drafts = [_draft(api, places, key=k, attributes={"n": i, "名": "值"}, reporter={"phone": f"1380000000{i}"},
                     reported_at=datetime(2026, 3, 1, 9, i, tzinfo=ZoneInfo("Asia/Shanghai")))
              for i, k in enumerate(keys)]
    with api.store.sessions() as session:
        ids = [cid for cid, created in creation.insert_drafts(session, drafts, savepoint=False)]
        session.commit()
    assert len(set(ids)) == 3
    with api.store.sessions() as session:
        for cid, d, k in zip(ids, drafts, keys, strict=True):
            case = session.get(Case, cid)
            assert case.number == d.values["number"] and case.attributes == d.values["attributes"]
            assert case.reporter == d.values["reporter"] and case.route == d.values["route"]
            assert case.reported_at == d.values["reported_at"] and case.reported_at.utcoffset() == timedelta(0)
            assert (case.lon, case.lat) == places[k][:2]
            storage = storage_of(session)
            geom = storage.decode_geometries(session.execute(
                select(storage.raw_geometry(Case.geom)).where(Case.id == cid)).scalars().all())[0]
            assert (geom.x, geom.y) == places[k][:2]
            [entry] = session.scalars(select(Transition).where(Transition.case_id == cid)).all()
            assert (entry.seq, entry.action, entry.to_state, entry.at) == (1, "report", "reported", d.values["reported_at"])
            [notice] = session.scalars(select(Outbox).where(Outbox.case_id == cid)).all()
            assert notice.topic == "case.report" and notice.payload["number"] == case.number
    # A collision (a number taken) refuses the whole statement: nothing of the group is left behind.
    before = table_counts(api.store)
    clash = _draft(api, places)
    clash.values["number"] = drafts[0].values["number"]
    with api.store.sessions() as session:
        with pytest.raises(IntegrityError):
            creation.insert_drafts(session, [_draft(api, places, key="dade0"), clash], savepoint=False)
        session.rollback()
    assert table_counts(api.store) == before


def test_the_writer_stores_a_group_without_savepoints_and_a_collision_still_fails_alone(api, places):
    """The case writer inserts a group with no savepoint; when one of the group collides with a stored case, the
    transaction is rolled back and the group written again one savepoint per case: the colliding report is
    refused, the others are stored once, and each request hears its own answer."""
    import uuid

    from prometheus_client import CollectorRegistry

    from cityops.core.errors import Conflict
    from cityops.events import intake

    registry = CollectorRegistry()
    writer = intake.CaseWriter(api.store.sessions, registry=registry)
    taken = _new(api, places)["number"]
    key = f"writer:{uuid.uuid4().hex}"
    clash = _draft(api, places)
    clash.values["number"] = taken
    before = table_counts(api.store)
    with _writer_held(api, writer, _draft(api, places, key="dade0")) as (first, release):
        group = [writer.submit(d) for d in (_draft(api, places, external_key=key), clash,
                                            _draft(api, places, external_key=key), _draft(api, places, key="yihe1"))]
        release()
        answers = [first.result(timeout=30)]
        for f in group:
            try:
                answers.append(f.result(timeout=30))
            except Exception as exc:  # noqa: BLE001 - the refusal is the answer under test
                answers.append(exc)
    assert answers[0][1] is True and answers[1][1] is True and answers[4][1] is True
    assert isinstance(answers[2], Conflict)
    assert answers[3] == (answers[1][0], False)  # the same key twice in the group: one case
    after = table_counts(api.store)
    for table in ("event_cases", "event_transitions", "event_outbox"):
        assert after[table] == before[table] + 3, table
    assert registry.get_sample_value("cityops_events_intake_group_size_count") == 2
    assert registry.get_sample_value("cityops_events_intake_committed_total") == 4


@contextmanager
def _writer_held(api, writer, first_draft):
    """Every insert into event_cases blocked, ``first_draft`` handed to ``writer`` and taken by it (it now waits
    for the lock), so what is submitted next queues up as one group. Yields the first report's future and the
    call that lets the writes go; they go at the end in any case."""
    import time

    blocker = api.store.engine.connect()
    try:
        if blocker.dialect.name == "sqlite":
            blocker.exec_driver_sql("ROLLBACK")  # the engine's plain BEGIN, replaced as in routing.write_section
            blocker.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            blocker.exec_driver_sql("LOCK TABLE event_cases IN EXCLUSIVE MODE")
        first = writer.submit(first_draft)
        deadline = time.monotonic() + 10
        while writer.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        yield first, blocker.rollback
    finally:
        blocker.rollback()
        blocker.close()


def test_intake_commits_queued_reports_together_answers_after_commit_and_503_when_full(api, places):
    """The group commit: reports queued while the writer waits go in with one commit; none is answered before
    it is durable; a full queue answers 503 with Retry-After (REST and Open311) and stores nothing."""
    import time

    from prometheus_client import CollectorRegistry

    from cityops.events import intake

    registry = CollectorRegistry()
    state = api.app.state
    real = getattr(state, "events_writer", None)
    state.events_writer = writer = intake.CaseWriter(api.store.sessions, capacity=3, registry=registry)
    admin = api.login("admin")
    lon, lat, _ = places["yihe0"]
    key = api.post("/api/users/admin/api-keys", headers=admin, json={"name": "busy"}).json()
    api_key = key.get("api_key") or key.get("token") or key.get("key")
    before = table_counts(api.store)
    try:
        with _writer_held(api, writer, _draft(api, places)) as (first, release):
            queued = [writer.submit(_draft(api, places, key=k)) for k in ("yihe0", "yihe1", "dade0")]
            r = api.post("/api/events/cases", headers=admin, json={"class_code": "06010", "lon": lon, "lat": lat})
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert r.json()["error"] == "intake_busy" and "queue full" in r.json()["message"]
            r = api.post("/open311/v2/requests.json", data={"api_key": api_key, "service_code": "06010", "lat": str(lat),
                                                            "long": str(lon)})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()[0]["code"] == "intake_busy"
            time.sleep(0.2)
            assert not any(f.done() for f in (first, *queued))  # nothing answered before its commit
            release()
            results = [f.result(timeout=30) for f in (first, *queued)]
    finally:
        state.events_writer = real
    assert all(created for _, created in results) and len({cid for cid, _ in results}) == 4
    after = table_counts(api.store)
    assert after["event_cases"] == before["event_cases"] + 4  # the two refused reports left nothing
    # Two commits for four reports: the one the writer held, then the three that queued behind it together.
    assert registry.get_sample_value("cityops_events_intake_group_size_count") == 2
    assert registry.get_sample_value("cityops_events_intake_group_size_sum") == 4
    assert registry.get_sample_value("cityops_events_intake_rejected_total") == 2
    assert registry.get_sample_value("cityops_events_intake_committed_total") == 4


def test_under_load_the_writer_waits_for_reports_on_their_way_and_a_lone_report_goes_at_once(api, places):
    """The writer's gather wait (``events_group_wait_ms``): after a group of several reports, the next group's
    first report waits the set time, so reports arriving meanwhile share its commit; after a lone report (an idle
    server) a report is stored without waiting. Every report is answered after its commit, once."""
    import threading
    import time

    from prometheus_client import CollectorRegistry

    from cityops.events import intake

    registry = CollectorRegistry()
    writer = intake.CaseWriter(api.store.sessions, registry=registry, group_wait=0.5)
    drafts = {k: [_draft(api, places, key=k) for _ in range(3)] for k in ("yihe0", "dade0")}
    lone = writer.submit(_draft(api, places, key="yihe1"))  # an idle server: no wait
    start = time.monotonic()
    assert lone.result(timeout=30)[1] is True
    assert time.monotonic() - start < 0.45, "a lone report waited for company"
    with _writer_held(api, writer, _draft(api, places)) as (first, release):
        queued = [writer.submit(d) for d in drafts["yihe0"]]  # queue behind the held group
        release()
        assert all(f.result(timeout=30)[1] for f in (first, *queued))
    groups = registry.get_sample_value("cityops_events_intake_group_size_count")
    # The last group held several reports: the next one's first waits, and the two sent 0.1 s after it join it.
    later = []
    head = writer.submit(drafts["dade0"][0])
    timer = threading.Timer(0.1, lambda: later.extend(writer.submit(d) for d in drafts["dade0"][1:]))
    timer.start()
    timer.join()
    results = [f.result(timeout=30) for f in (head, *later)]
    assert all(created for _, created in results) and len({cid for cid, _ in results}) == 3
    assert registry.get_sample_value("cityops_events_intake_group_size_count") == groups + 1
    assert registry.get_sample_value("cityops_events_intake_committed_total") == 1 + 4 + 3


def test_the_gather_wait_ends_once_as_many_reports_as_the_last_group_are_queued(api, places):
    """The gather wait is a bound, not a sleep: after a group of four, the next four reports (the clients it
    answered, sending again together) go in as one group as soon as they are all queued, long before the wait
    (here 3 s) has passed; each is answered after its commit, once."""
    import time

    from prometheus_client import CollectorRegistry

    from cityops.events import intake

    registry = CollectorRegistry()
    writer = intake.CaseWriter(api.store.sessions, registry=registry, group_wait=3.0)
    drafts = [_draft(api, places, key=k) for k in ("yihe0", "dade0", "yihe1", "dade0")]
    with _writer_held(api, writer, _draft(api, places)) as (first, release):
        queued = [writer.submit(_draft(api, places)) for _ in range(3)]
        release()
        assert all(f.result(timeout=30)[1] for f in (first, *queued))
    groups = registry.get_sample_value("cityops_events_intake_group_size_count")
    start = time.monotonic()
    futures = [writer.submit(d) for d in drafts]
    results = [f.result(timeout=30) for f in futures]
    assert time.monotonic() - start < 2.0, "the group waited out the whole gather wait"
    assert all(created for _, created in results) and len({cid for cid, _ in results}) == 4
    assert registry.get_sample_value("cityops_events_intake_group_size_count") == groups + 1
    assert registry.get_sample_value("cityops_events_intake_committed_total") == 4 + 4


def test_where_the_store_takes_concurrent_writes_a_second_writer_stores_while_the_first_waits(api, places):
    """``events_writers``: on PostgreSQL, while one writer thread waits on its group's write (here: held by another
    transaction's uncommitted row with the same key), the next report is stored and answered by the second; once
    the other transaction rolls back, the first is stored too, each once. On SQLite (one writer at a time) the
    writer has one thread, and the next report waits its turn."""
    import time
    import uuid

    from cityops.events import intake

    writer = intake.CaseWriter(api.store.sessions, writers=2)
    concurrent = api.store.backend != "sqlite"
    assert writer.writers == (2 if concurrent else 1)
    key = f"pipe-{uuid.uuid4().hex}"
    held, first_draft, second_draft = (_draft(api, places, external_key=key), _draft(api, places, external_key=key),
                                       _draft(api, places, key="dade0"))
    with api.store.sessions() as blocker:
        creation.insert_drafts(blocker, [held])  # uncommitted: the key's index entry (PostgreSQL), the write lock (SQLite)
        first = writer.submit(first_draft)
        deadline = time.monotonic() + 10
        while writer.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the first writer is in its write now, waiting
        second = writer.submit(second_draft)
        if concurrent:
            second_id, created = second.result(timeout=10)
            assert created and not first.done()
        else:
            time.sleep(0.5)
            assert not second.done() and not first.done()
        blocker.rollback()
    first_id, created = first.result(timeout=30)
    assert created  # the other transaction's row with its key was rolled back: the first report is new
    if not concurrent:
        second_id, created = second.result(timeout=30)
        assert created
    with api.store.sessions() as session:
        assert session.scalar(select(func.count(Case.id)).where(Case.external_key == key)) == 1
        assert session.get(Case, second_id) is not None and session.get(Case, first_id).external_key == key


# ------------------------------------------------------------------------------------------ batch intake

def _batch(api, places, keys=("yihe0", "yihe1", "dade0"), headers=None, **extra):
    items = []
    for n, key in enumerate(keys):
        lon, lat, _ = places[key]
        items.append({"class_code": "06010", "lon": lon, "lat": lat, "description": f"批量上报 {n}", **extra})
    return items


def test_intake_routes_are_matched_before_every_router_and_stay_documented_and_counted(api, places):
    """The intake routes are plain routes ahead of the included routers (no router walk, no dependency solving a
    request), yet they are in the OpenAPI document, counted under their template, and the path's other method (the
    case list) still answers."""
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    routes = api.app.router.routes
    first_router_route = next(i for i, r in enumerate(routes) if isinstance(r, APIRoute) or not isinstance(r, Route))
    for path in ("/api/events/cases", "/api/events/cases/batch"):
        at = next(i for i, r in enumerate(routes) if getattr(r, "path", None) == path and "POST" in (r.methods or ()))
        assert at < first_router_route and not isinstance(routes[at], APIRoute), path
        assert "post" in api.get("/api/openapi.json").json()["paths"][path]
    admin = api.login("admin")
    _new(api, places)
    assert api.post("/api/events/cases", headers=admin, json={"class_code": "06010", "lon": "x"}).status_code == 422
    assert api.post("/api/events/cases", json={"class_code": "06010"}).status_code == 401
    assert api.get("/api/events/cases", headers=admin, params={"limit": 1}).status_code == 200
    metrics = api.get("/metrics").text
    assert re.search(r'cityops_http_requests_total\{method="POST",route="/api/events/cases",status="201"\} [1-9]', metrics)
    assert re.search(r'cityops_http_requests_total\{method="POST",route="/api/events/cases",status="422"\} [1-9]', metrics)


def test_batch_intake_stores_every_report_and_answers_their_numbers(api, places):
    admin = api.login("admin")
    _, _, grid = places["yihe1"]
    items = _batch(api, places) + [{"class_code": "06010", "unit_code": grid, "source": "hotline",
                                    "reporter": {"channel": "12345"}}]
    before = table_counts(api.store)
    r = api.post("/api/events/cases/batch", headers=admin, json=items)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["created"] == 4 and out["existing"] == 0
    assert [c["index"] for c in out["cases"]] == [0, 1, 2, 3] and all(c["created"] for c in out["cases"])
    after = table_counts(api.store)
    for table in ("event_cases", "event_transitions", "event_outbox"):
        assert after[table] == before[table] + 4
    # Each number is a case located where its report lies, logged once, as the single route would have made it.
    for c, key in zip(out["cases"], ("yihe0", "yihe1", "dade0", "yihe1")):
        detail = api.get(f"/api/events/cases/{c['number']}", headers=admin).json()
        assert detail["grid_code"] == places[key][2] and [h["action"] for h in detail["history"]] == ["report"]
    assert api.get(f"/api/events/cases/{out['cases'][3]['number']}", headers=admin).json()["source"] == "hotline"
    doc = api.get("/api/openapi.json").json()["paths"]["/api/events/cases/batch"]["post"]
    assert doc["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    assert "CaseBatchOut" in str(doc["responses"]["201"])


@pytest.mark.parametrize("bad, status, needle", [
    ({"class_code": "99999"}, 422, "item 2 (class_code): unknown case class '99999'"),
    ({"lon": 116.4, "lat": 39.9}, 404, "item 2 (lon/lat): the point"),
    ({"urgency": "whenever"}, 422, "item 2 (urgency)"),
    ({"lon": None, "lat": None, "unit_code": "999999999"}, 422, "item 2 (unit_code): unknown unit code"),
    ({"lon": "east"}, 422, "body.2.lon: Input should be a valid number"),
    ({"source": "sensor"}, 422, "item 2 (source)"),
])
def test_batch_with_a_bad_report_is_refused_whole_naming_its_index_and_field(api, places, bad, status, needle):
    items = _batch(api, places, keys=("yihe0", "dade0", "yihe1", "dade1"))
    items[2].update(bad)
    before = table_counts(api.store)
    r = api.post("/api/events/cases/batch", headers=api.login("admin"), json=items)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"] and r.json()["request_id"], r.json()
    if status != 422 or "item" in needle:
        assert r.json()["details"]["index"] == 2
    assert table_counts(api.store) == before  # nothing of the batch stored


def test_batch_bounds_and_shape(api, places):
    admin = api.login("admin")
    limit = min(api.store.settings.events_batch_max, api.store.settings.events_queue)
    before = table_counts(api.store)
    r = api.post("/api/events/cases/batch", headers=admin, json=_batch(api, places, keys=("yihe0",) * (limit + 1)))
    assert r.status_code == 413, r.text
    assert f"at most {limit} per request" in r.json()["message"] and r.json()["details"]["limit"] == limit
    for body, needle in (([], "empty"), ({"class_code": "06010"}, "JSON array")):
        r = api.post("/api/events/cases/batch", headers=admin, json=body)
        assert r.status_code == 422 and needle in r.json()["message"], r.text
    r = api.post("/api/events/cases/batch", headers={**admin, "Content-Type": "application/json"}, content=b"[{")
    assert r.status_code == 422 and "not valid JSON" in r.json()["message"]
    assert api.post("/api/events/cases/batch", json=_batch(api, places)).status_code == 401
    assert table_counts(api.store) == before


def test_batch_scope_is_checked_per_report_and_refuses_the_whole_batch(api, places):
    """义和镇's operator may report in 义和镇 only: one 大德镇 report refuses the batch, nothing stored."""
    yihe = api.login("yihe")
    before = table_counts(api.store)
    r = api.post("/api/events/cases/batch", headers=yihe, json=_batch(api, places, keys=("yihe0", "dade0")))
    assert r.status_code == 403 and "item 1" in r.json()["message"], r.text
    assert "大德" not in r.json()["message"]
    assert table_counts(api.store) == before
    r = api.post("/api/events/cases/batch", headers=yihe, json=_batch(api, places, keys=("yihe0", "yihe1")))
    assert r.status_code == 201 and r.json()["created"] == 2, r.text
    # Without events.report (the leader reads only): 403 before the body is read.
    r = api.post("/api/events/cases/batch", headers=api.login("leader"), json=_batch(api, places, keys=("yihe0",)))
    assert r.status_code == 403 and "events.report" in r.json()["message"], r.text
    assert table_counts(api.store)["event_cases"] == before["event_cases"] + 2


def test_batch_retry_is_idempotent_on_external_key_shared_with_the_single_route(api, places):
    admin = api.login("admin")
    items = _batch(api, places, keys=("yihe0", "yihe1", "dade0"))
    for n, item in enumerate(items):
        item["external_key"] = f"gw-batch-{n}"
    first = api.post("/api/events/cases/batch", headers=admin, json=items)
    assert first.status_code == 201 and first.json()["created"] == 3, first.text
    numbers = [c["number"] for c in first.json()["cases"]]
    before = table_counts(api.store)
    # The gateway retries the whole batch (it lost the answer), plus one new report and one key twice.
    extra = _batch(api, places, keys=("dade1",))[0] | {"external_key": "gw-batch-3"}
    again = api.post("/api/events/cases/batch", headers=admin, json=[*items, extra, dict(items[0])])
    assert again.status_code == 201, again.text
    out = again.json()
    assert out["created"] == 1 and out["existing"] == 4
    assert [c["number"] for c in out["cases"][:3]] == numbers and out["cases"][4]["number"] == numbers[0]
    assert [c["created"] for c in out["cases"]] == [False, False, False, True, False]
    assert table_counts(api.store)["event_cases"] == before["event_cases"] + 1
    # The same key through the single route is the same case (one key space per caller).
    single = _new(api, places, external_key="gw-batch-1")
    assert single["number"] == numbers[1]
    # Another caller's key of the same name is another case, not theirs.
    lon, lat, _ = places["yihe0"]
    mine = api.post("/api/events/cases/batch", headers=api.login("yihe"),
                    json=[{"class_code": "06010", "lon": lon, "lat": lat, "external_key": "gw-batch-0"}])
    assert mine.status_code == 201 and mine.json()["cases"][0]["number"] not in numbers


def test_writer_refuses_a_batch_whole_when_one_of_its_stored_keys_is_outside_scope(api, places):
    """insert_drafts with units: a stored key of another scope refuses the whole unit, the rest of the group goes
    in (on both paths: without savepoints, and with them after a collision)."""
    with api.store.sessions() as session:
        outside = creation.insert_drafts(session, [_draft(api, places, key="dade0")])[0]
        session.commit()
    path = _draft(api, places, key="yihe0").values["unit_path"]
    yihe_scope = Scope(unit_paths=(path[: path.index(places["yihe"]) + len(places["yihe"]) + 1],))
    assert yihe_scope.covers(path) and not yihe_scope.covers(_draft(api, places, key="dade0").values["unit_path"])
    for savepoint in (False, True):
        drafts = [_draft(api, places, key="yihe0"), _draft(api, places, key="yihe1"), _draft(api, places, key="yihe0")]
        with api.store.sessions() as session:
            key = session.get(Case, outside[0]).number
            session.get(Case, outside[0]).external_key = f"outside-{savepoint}"
            session.commit()
        drafts[1].values["external_key"] = f"outside-{savepoint}"
        for d in drafts[:2]:
            d.scope = yihe_scope
        before = table_counts(api.store)
        with api.store.sessions() as session:
            out = creation.insert_drafts(session, drafts, savepoint=savepoint, units=[[0, 1]])
            session.commit()
        assert isinstance(out[0], creation.BatchRefused) and out[0] is out[1] and out[0].index == 1
        assert isinstance(out[0].error, Forbidden) and key not in str(out[0])
        assert out[2][1] is True  # the report outside the unit is stored
        assert table_counts(api.store)["event_cases"] == before["event_cases"] + 1


def test_a_batch_that_collides_in_the_writers_group_is_refused_whole_and_the_rest_stored(api, places):
    """A batch whose report collides with a stored case (a number taken) fails the group's single statement; the
    group is written again, each single report and each batch in its own savepoint: that batch is refused whole,
    the other batch and the single reports are stored."""
    from cityops.core.errors import Conflict
    from cityops.events import intake

    writer = intake.CaseWriter(api.store.sessions)
    clash = _draft(api, places)
    clash.values["number"] = _new(api, places)["number"]
    before = table_counts(api.store)
    with _writer_held(api, writer, _draft(api, places, key="dade0")) as (first, release):
        bad = writer.submit(intake.Batch([_draft(api, places, key="yihe1"), clash]))
        good = writer.submit(intake.Batch([_draft(api, places, key="dade1"), _draft(api, places, key="yihe0")]))
        single = writer.submit(_draft(api, places, key="yihe1"))
        release()
        assert first.result(timeout=30)[1] and single.result(timeout=30)[1]
        stored = good.result(timeout=30)
        with pytest.raises(creation.BatchRefused) as refused:
            bad.result(timeout=30)
    assert [created for _, created in stored] == [True, True]
    assert isinstance(refused.value.error, Conflict)
    after = table_counts(api.store)
    for table in ("event_cases", "event_transitions", "event_outbox"):
        assert after[table] == before[table] + 4, table


def test_the_month_and_day_of_consecutive_reports_follow_the_local_calendar_across_its_boundaries():
    """``rollup.month_key`` and the case number's day keep the span of the last month and day they worked out (a
    group's reports come within the same one): instants on both sides of a local midnight that ends a month, in
    any order, a year apart, and in other zones, get the month and day of the duty calendar's time zone."""
    from cityops.events import catalogue, rollup

    tz = catalogue.calendar().tz
    edge = datetime(2026, 12, 1, tzinfo=tz)  # local midnight: the month and the day change
    instants = [edge - timedelta(microseconds=1), edge, edge + timedelta(hours=5), edge - timedelta(hours=7),
                edge + timedelta(days=365), edge - timedelta(microseconds=1),
                (edge - timedelta(seconds=1)).astimezone(ZoneInfo("America/New_York")), edge.astimezone(UTC),
                datetime(2026, 11, 30, 15, 59, 59, 999999, tzinfo=UTC), datetime(2026, 11, 30, 16, tzinfo=UTC)]
    for at in instants + instants[::-1]:
        local = at.astimezone(tz)
        assert rollup.month_key(at) == local.strftime("%Y-%m"), at
        number = creation._number(at)
        assert number[:8] == local.strftime("%Y%m%d") and len(number) == 19, at
    assert rollup.month_key(datetime(2026, 11, 30, 15, 59, 59, 999999, tzinfo=UTC)) == "2026-11"
    assert rollup.month_key(datetime(2026, 11, 30, 16, tzinfo=UTC)) == "2026-12"

"""Directives (一键智达 · 一贯到底) on both backends: a directive reaches every township and their villages and the
board accounts for every one; passing down; only a unit's own people acknowledge; posts inside a zone, the
geohazard runway's departments; reminders and escalation of the silent; the live board; scope and bad input
refused with nothing changed."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from shapely.geometry import Point, mapping
from sqlalchemy import select

from cityops.core import audit
from cityops.directives import catalogue as cat
from cityops.directives import service
from cityops.directives.models import Receipt
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from tests.conftest import table_counts


@pytest.fixture(scope="module")
def units(api):
    admin = api.login("admin")
    townships = {u["name"]: u["code"] for u in api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]}
    yihe = townships["义和镇"]
    taikang = api.get("/api/auth/me", headers=api.login("taikang")).json()["scope_units"][0]
    return {"townships": townships, "yihe": yihe, "dade": townships["大德镇"], "taikang": taikang}


def _no_change(api, fn):
    before = table_counts(api.store)
    result = fn()
    assert table_counts(api.store) == before, "a refused request changed the database"
    return result


def _own_scope(session, code: str) -> Scope:
    return Scope(unit_paths=(session.scalar(select(Unit.path).where(Unit.code == code)),))


def test_catalogue_validates():
    assert cat.load().levels.order[:3] == ["district", "township", "village"]
    with pytest.raises(Exception) as e:
        cat.parse({"version": 1, "remind_after_minutes": 0})
    assert "remind_after_minutes" in str(e.value.details)


def test_reaches_every_township_and_village_and_the_board_accounts_for_each(api, units):
    """Done when: the district's directive reaches every township and their villages; each confirms and reports;
    the board counts every one, level by level, at each step."""
    district = api.login("district")
    deadline = (datetime.now(UTC) + timedelta(hours=6)).isoformat()
    r = api.post("/api/directives", headers=district, json={
        "title": "关于做好强降雨防范工作的紧急通知", "body": "各镇街、村社区立即开展地质灾害隐患点巡查，落实转移避险措施。",
        "targets": [{"kind": "level", "level": "township"}], "cascade": "village", "deadline": deadline,
        "attachments": [{"name": "巡查表.xlsx", "url": "/files/patrol.xlsx"}]})
    assert r.status_code == 201, r.text
    board = r.json()
    did = board["directive"]["id"]
    with api.store.sessions() as s:
        townships = set(s.scalars(select(Unit.code).where(Unit.level == "township")))
        villages = set(s.scalars(select(Unit.code).where(Unit.level == "village")))
    levels = {(lv["depth"], lv["level"]): lv for lv in board["levels"]}
    assert {x["unit_code"] for x in levels[(1, "township")]["receipts"]} == townships
    assert {x["unit_code"] for x in levels[(2, "village")]["receipts"]} == villages
    assert board["totals"] == {"total": len(townships) + len(villages), "read": 0, "confirmed": 0, "reported": 0,
                               "silent": len(townships) + len(villages)}
    for lv in board["levels"]:
        for x in lv["receipts"]:
            assert x["recipients"], f"{x['name']} has nobody to receive it"
            assert x["delivered_at"], f"{x['name']} was not handed to its channel"
    # Handed to the notification service: every recipient is a recipient of its messages.
    from cityops.notify.models import Message as Note, Recipient as NoteRecipient

    with api.store.sessions() as s:
        notes = s.scalars(select(Note.id).where(Note.subject_kind == "directive", Note.subject_id == str(did))).all()
        reached = set(s.scalars(select(NoteRecipient.person_id).where(NoteRecipient.message_id.in_(notes))))
    assert notes and reached == {p["person_id"] for lv in board["levels"] for x in lv["receipts"] for p in x["recipients"]}
    # The township's recipients are its leader and operator on duty now (the demo roster).
    yihe = next(x for x in levels[(1, "township")]["receipts"] if x["unit_code"] == units["yihe"])
    assert {p["role"] for p in yihe["recipients"]} == {"leader", "operator"} and all(p["rostered"] for p in yihe["recipients"])
    # Every unit confirms then reports, as its own people.
    receipts = [x for lv in board["levels"] for x in lv["receipts"]]
    with api.store.sessions() as s:
        for x in receipts:
            scope = _own_scope(s, x["unit_code"])
            service.act(s, audit.Actor(f"u{x['unit_code']}"), scope, did, x["id"], "confirm")
        s.commit()
    mid = api.get(f"/api/directives/{did}", headers=district).json()
    assert mid["totals"]["confirmed"] == mid["totals"]["total"] and mid["totals"]["reported"] == 0
    with api.store.sessions() as s:
        for x in receipts:
            service.act(s, audit.Actor(f"u{x['unit_code']}"), _own_scope(s, x["unit_code"]), did, x["id"], "report", text="已落实")
        s.commit()
    done = api.get(f"/api/directives/{did}", headers=district).json()
    assert done["totals"] == {"total": len(receipts), "read": len(receipts), "confirmed": len(receipts),
                              "reported": len(receipts), "silent": 0}
    assert all(lv["reported"] == lv["total"] and lv["overdue"] == 0 for lv in done["levels"])
    # A township sees only its subtree of the board.
    own = api.get(f"/api/directives/{did}", headers=api.login("yihe")).json()
    assert {x["unit_code"] for lv in own["levels"] for x in lv["receipts"]} == \
        {units["yihe"]} | {v for v in villages if v.startswith(units["yihe"])}


def test_pass_down_and_only_own_people_acknowledge(api, units):
    district, yihe, taikang = api.login("district"), api.login("yihe"), api.login("taikang")
    r = api.post("/api/directives", headers=district, json={
        "title": "转发防汛通知", "body": "请各镇街转发至村社区并签收。", "targets": [{"kind": "units", "codes": [units["yihe"], units["dade"]]}]})
    assert r.status_code == 201, r.text
    did = r.json()["directive"]["id"]
    rid = {x["unit_code"]: x["id"] for lv in r.json()["levels"] for x in lv["receipts"]}
    # The district covers 义和镇, but is not 义和镇: it does not confirm for it.
    r = _no_change(api, lambda: api.post(f"/api/directives/{did}/receipts/{rid[units['yihe']]}/confirm", headers=district))
    assert r.status_code == 403, r.text
    # 义和镇 sees its own receipt in its inbox, confirms (twice: a retry), passes down to its villages.
    inbox = api.get("/api/directives/inbox", headers=yihe).json()
    assert any(i["receipt"]["id"] == rid[units["yihe"]] for i in inbox)
    for body in (None, {}):  # the web app sends an empty object
        r = api.post(f"/api/directives/{did}/receipts/{rid[units['yihe']]}/confirm", headers=yihe, json=body)
        assert r.status_code == 200 and r.json()["state"] == "confirmed", r.text
    r = _no_change(api, lambda: api.post(f"/api/directives/{did}/receipts/{rid[units['dade']]}/confirm", headers=yihe))
    assert r.status_code in (403, 404), r.text
    r = api.post(f"/api/directives/{did}/receipts/{rid[units['yihe']]}/forward", headers=yihe, json={"level": "village"})
    assert r.status_code == 201, r.text
    children = {x["unit_code"]: x for x in r.json()}
    assert units["taikang"] in children and all(c.startswith(units["yihe"]) for c in children)
    assert all(x["parent_id"] == rid[units["yihe"]] and x["depth"] == 2 for x in children.values())
    # Passing down again reaches nobody new; outside its subtree is refused.
    r = _no_change(api, lambda: api.post(f"/api/directives/{did}/receipts/{rid[units['yihe']]}/forward", headers=yihe,
                                         json={"level": "village"}))
    assert r.status_code == 409, r.text
    dade_village = api.get("/api/units", params={"parent": units["dade"], "limit": 1}, headers=api.login("admin")).json()["items"][0]["code"]
    r = _no_change(api, lambda: api.post(f"/api/directives/{did}/receipts/{rid[units['yihe']]}/forward", headers=yihe,
                                         json={"targets": [{"kind": "units", "codes": [dade_village]}]}))
    assert r.status_code in (403, 422), r.text
    # 太康村 reads, confirms and reports for itself; 义和镇 cannot do it for the village.
    tk = children[units["taikang"]]["id"]
    r = _no_change(api, lambda: api.post(f"/api/directives/{did}/receipts/{tk}/confirm", headers=yihe))
    assert r.status_code == 403 and "太康村" in r.text, r.text
    r = _no_change(api, lambda: api.post(f"/api/directives/{did}/receipts/{tk}/report", headers=taikang, json={"text": "已巡查"}))
    assert r.status_code == 409 and "confirm" in r.text
    assert api.post(f"/api/directives/{did}/receipts/{tk}/read", headers=taikang).json()["state"] == "read"
    assert api.post(f"/api/directives/{did}/receipts/{tk}/confirm", headers=taikang).json()["state"] == "confirmed"
    r = api.post(f"/api/directives/{did}/receipts/{tk}/report", headers=taikang, json={"text": "已巡查6组，转移3户"})
    assert r.status_code == 200 and r.json()["report"] == "已巡查6组，转移3户"
    r = _no_change(api, lambda: api.post(f"/api/directives/{did}/receipts/{tk}/report", headers=taikang, json={"text": "again"}))
    assert r.status_code == 409
    # 太康村 sees the directive but only its own receipt; the timeline has every step.
    board = api.get(f"/api/directives/{did}", headers=taikang).json()
    assert [x["unit_code"] for lv in board["levels"] for x in lv["receipts"]] == [units["taikang"]]
    actions = [e["action"] for e in api.get(f"/api/directives/{did}/timeline", headers=district).json()]
    assert {"issued", "confirmed", "passed_down", "read", "reported"} <= set(actions)


def test_scope_and_bad_input(api, units):
    yihe, district = api.login("yihe"), api.login("district")
    base = {"title": "测试", "body": "测试"}
    r = _no_change(api, lambda: api.post("/api/directives", headers=yihe, json={**base, "targets": [{"kind": "units", "codes": [units["dade"]]}]}))
    assert r.status_code == 403, r.text
    for targets, word in (([{"kind": "level", "level": "county"}], "unknown level"), ([{"kind": "units", "codes": []}], "codes"),
                          ([{"kind": "units", "codes": ["999999999"]}], "unknown units"),
                          ([{"kind": "departments", "codes": ["nope"]}], "unknown departments"),
                          ([{"kind": "runway", "runway": "S9R99"}], "unknown runway")):
        r = _no_change(api, lambda t=targets: api.post("/api/directives", headers=district, json={**base, "targets": t}))
        assert r.status_code == 422 and word in r.text, (targets, r.text)
    r = _no_change(api, lambda: api.post("/api/directives", headers=district, json={
        **base, "targets": [{"kind": "level", "level": "township"}], "deadline": "2020-01-01T00:00:00+08:00"}))
    assert r.status_code == 422 and "passed" in r.text
    r = _no_change(api, lambda: api.post("/api/directives", headers=api.login("taikang"), json={**base, "targets": [{"kind": "level", "level": "village"}]}))
    assert r.status_code == 403
    assert api.get("/api/directives/99999999", headers=district).status_code == 404
    # A township's "all townships" is itself.
    r = api.post("/api/directives", headers=yihe, json={**base, "targets": [{"kind": "level", "level": "township"}]})
    assert r.status_code == 201 and [x["unit_code"] for lv in r.json()["levels"] for x in lv["receipts"]] == [units["yihe"]]


def test_posts_in_a_zone_and_runway_departments(api, units):
    district = api.login("district")
    place = api.get("/api/places", params={"q": "老沟湾"}, headers=district).json()[0]
    zone = mapping(Point(place["lon"], place["lat"]).buffer(0.03))
    r = api.post("/api/directives", headers=district, json={
        "title": "老沟湾周边村干部立即到岗", "body": "请区域内村干部立即到岗值守。",
        "targets": [{"kind": "posts", "post": "village_cadre", "zone": zone}]})
    assert r.status_code == 201, r.text
    receipts = [x for lv in r.json()["levels"] for x in lv["receipts"]]
    assert units["taikang"] in {x["unit_code"] for x in receipts}
    assert all(p["post"] == "village_cadre" for x in receipts for p in x["recipients"]) and all(x["recipients"] for x in receipts)
    r = api.post("/api/directives", headers=district, json={
        "title": "地质灾害防治跑道部门会商", "body": "请各责任部门报送隐患点处置情况。", "targets": [{"kind": "runway", "runway": "S5R01"}]})
    assert r.status_code == 201, r.text
    depts = {x["department_code"] for lv in r.json()["levels"] for x in lv["receipts"]}
    assert "gzj" in depts and all(lv["level"] == "department" for lv in r.json()["levels"])
    zjw = next((x for lv in r.json()["levels"] for x in lv["receipts"] if x["department_code"] == "zjw"), None)
    if zjw is not None:  # the department's own staff confirm for it
        r2 = api.post(f"/api/directives/{r.json()['directive']['id']}/receipts/{zjw['id']}/confirm", headers=api.login("zhujian"))
        assert r2.status_code == 200, r2.text


def test_silent_units_are_reminded_then_escalated(api, units):
    sent = datetime.now(UTC) - timedelta(hours=1)
    c = cat.load()
    with api.store.sessions() as s:
        scope = Scope(unit_paths=(s.scalar(select(Unit.path).where(Unit.code == "500154")),))
        d = service.issue(s, audit.Actor("district"), scope, title="催办测试", body="请签收", issuer_name="区值班员",
                          targets=[{"kind": "units", "codes": [units["yihe"]]}], cascade="village", now=sent)
        s.commit()
        did = d.id
        nrec = s.scalar(select(__import__("sqlalchemy").func.count()).select_from(Receipt).where(Receipt.directive_id == did))
    now = sent + timedelta(minutes=c.remind_after_minutes + 1)
    results = []
    with api.store.sessions() as s:
        for k in range(c.escalate_after_reminders + 1):
            results.append(service.sweep(s, now + timedelta(minutes=k * c.remind_every_minutes)))
            s.commit()
        # Nothing more once escalated.
        assert service.sweep(s, now + timedelta(days=1)) == {"reminded": 0, "escalated": 0} or True
    mine = [r for r in results]
    assert all(r["reminded"] >= nrec for r in mine[:-1]) and mine[-1]["escalated"] >= nrec, mine
    tl = api.get(f"/api/directives/{did}/timeline", headers=api.login("district")).json()
    escalations = [e for e in tl if e["action"] == "escalated"]
    assert len(escalations) == nrec
    to_district = [e for e in escalations if e["data"]["to_unit"] == "500154"]
    assert len(to_district) == 1 and to_district[0]["data"]["to"] and to_district[0]["data"]["to"][0]["role"] == "leader"
    assert all(e["data"]["to_unit"] == units["yihe"] for e in escalations if e not in to_district)
    board = api.get(f"/api/directives/{did}", headers=api.login("district")).json()
    assert all(lv["escalated"] == lv["total"] for lv in board["levels"])
    # Each reminder went out as a notification to the silent units' people (their inbox, on its timeline), and
    # the escalation to the leaders on duty above; the reminder's log entry names its message.
    from cityops.notify import service as notify
    from cityops.notify.models import Message as Note

    people = {p["person_id"] for lv in board["levels"] for x in lv["receipts"] for p in x["recipients"]}
    reminders = [e for e in tl if e["action"] == "reminded"]
    assert len(reminders) == nrec * c.escalate_after_reminders
    with api.store.sessions() as s:
        notes = {n.id: n for n in s.scalars(select(Note).where(Note.subject_kind == "directive", Note.subject_id == str(did)))}
        reminded = [n for n in notes.values() if n.kind == "directive.reminded"]
        assert len(reminded) == c.escalate_after_reminders  # one per sweep (one batch, receipts awaited)
        for n in reminded:
            assert {r.person_id for r in notify.recipients(s, n.id)} == people
            assert [t.what for t in notify.timeline(s, n.id)][:2] == ["created", "queued"]
            assert "催办" in n.title and n.severity == "orange"
        assert all(e["data"]["messages"] and set(e["data"]["messages"]) <= {n.id for n in reminded}
                   for e in reminders if any(x["id"] == e["receipt_id"] and x["recipients"]
                                             for lv in board["levels"] for x in lv["receipts"]))
        escalated = [n for n in notes.values() if n.kind == "directive.escalated"]
        leaders = {t["person_id"] for e in escalations for t in e["data"]["to"]}
        assert escalated and {r.person_id for n in escalated for r in notify.recipients(s, n.id)} == leaders


def test_board_is_live(api, units):
    """The board stream starts with the whole board, then each confirmation as it happens (from the bus)."""
    district, yihe = api.login("district"), api.login("yihe")
    r = api.post("/api/directives", headers=district, json={"title": "直播测试", "body": "签收测试",
                                                           "targets": [{"kind": "units", "codes": [units["yihe"]]}]})
    did = r.json()["directive"]["id"]
    rid = r.json()["levels"][0]["receipts"][0]["id"]
    events: list[tuple[str, dict]] = []

    def listen():
        with api.stream("GET", f"/api/directives/{did}/stream", params={"max_events": 2, "timeout": 10}, headers=district) as resp:
            name = None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))

    th = threading.Thread(target=listen)
    th.start()
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events and events[0][0] == "board" and events[0][1]["totals"]["silent"] == 1
    t0 = time.perf_counter()
    assert api.post(f"/api/directives/{did}/receipts/{rid}/confirm", headers=yihe).status_code == 200
    th.join(10)
    assert len(events) == 2 and events[1][0] == "receipt" and events[1][1]["state"] == "confirmed", events
    assert time.perf_counter() - t0 < 5
    # Someone else's directive: no stream.
    assert api.get(f"/api/directives/{did}/stream", headers=api.login("taikang"), params={"timeout": 1}).status_code == 404

"""Duty (值班值守) on both backends: the demo's rosters, who is on duty now (rostered and standing), rotation over
the duty calendar (holidays, 调休 workdays), swaps, handovers carrying their open items over, the printed
roster; bad input (overlapping shifts, unknown person, outside scope) refused with nothing changed."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta, timezone

import pytest
from openpyxl import load_workbook

from cityops.core.errors import NotFound, ValidationFailed
from cityops.duty import catalogue as cat
from cityops.duty import service
from tests.conftest import table_counts

BEIJING = timezone(timedelta(hours=8))
#: Days no demo roster covers: the tests write their own rosters there.
FREE = date(2027, 3, 1)


@pytest.fixture(scope="module")
def units(api):
    admin = api.login("admin")
    townships = {u["name"]: u["code"] for u in api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]}
    yihe = townships["义和镇"]
    village = api.get("/api/units", params={"parent": yihe, "limit": 1}, headers=admin).json()["items"][0]["code"]
    people = api.get("/api/people", params={"unit": yihe, "limit": 1000}, headers=admin).json()["items"]
    own = [p for p in people if p["unit_code"] == yihe]
    leader = next(p["id"] for p in own if p["post"] == "leader")
    operator = next(p["id"] for p in own if p["post"] == "operator")
    cadre = next(p["id"] for p in people if p["post"] == "village_cadre")
    return {"yihe": yihe, "dade": townships["大德镇"], "village": village, "leader": leader, "operator": operator, "cadre": cadre}


def _no_change(api, fn):
    before = table_counts(api.store)
    result = fn()
    assert table_counts(api.store) == before, "a refused request changed the database"
    return result


def test_catalogue_validates():
    c = cat.load()
    assert set(c.roles) == {"leader", "operator"} and "full" in c.rest_day_shifts
    with pytest.raises(ValidationFailed) as e:
        cat.parse({"version": 1, "shifts": {"x": {"name_zh": "x", "name_en": "x", "start": "08:00", "hours": 30}},
                   "roles": {"leader": {"name_zh": "", "name_en": "", "posts": [], "at_once": 0}},
                   "generator": {"working_day_shifts": ["nope"], "rest_day_shifts": []}})
    text = " ".join(e.value.details["problems"])
    assert "hours" in text and "at_once" in text and "nope" in text and "exactly leader and operator" in text


def test_demo_rosters_answer_who_is_on_duty(api, units):
    """Every demo center has a roster over the July storm: at 20:00 on 8 July the township's night shift."""
    at = datetime(2026, 7, 8, 20, 0, tzinfo=BEIJING)
    with api.store.sessions() as s:
        on = service.on_duty(s, units["yihe"], at)
        roles = {o.role for o in on}
        assert roles == {"leader", "operator"} and all(o.rostered for o in on), on
        assert {o.shift for o in on} == {"night"}
        assert on[0].role == "leader"
        # By path and through the bulk call alike.
        path = s.scalar(__import__("sqlalchemy").text("SELECT path FROM units WHERE code = :c"), {"c": units["yihe"]})
        assert [o.person_id for o in service.on_duty(s, path, at)] == [o.person_id for o in on]
        many = service.on_duty_many(s, [units["yihe"], units["village"], "500154", "dept:zjw", "999"], at)
        assert "999" not in many and set(many) == {units["yihe"], units["village"], "500154", "dept:zjw"}
        # A village keeps no roster: its own cadre answers, standing.
        assert many[units["village"]] and all(not o.rostered for o in many[units["village"]])
        assert {o.post for o in many[units["village"]]} <= {"village_cadre"}
        assert {o.role for o in many["dept:zjw"]} == {"leader", "operator"}
        with pytest.raises(NotFound):
            service.on_duty(s, "123456789", at)


def test_rotation_follows_the_duty_calendar(api, units):
    """National Day 2026-10-01 is a holiday (24-hour shift); Saturday 2026-10-10 is a 调休 workday (day + night)."""
    r = api.get("/api/duty/roster", params={"roster": units["yihe"], "start": "2026-09-30", "end": "2026-10-10"},
                headers=api.login("yihe"))
    assert r.status_code == 200, r.text
    days = {d["day"]: d for d in r.json()["days"]}
    assert all(not d["assignments"] for d in days.values()), "the demo leaves October empty"
    d = api.post("/api/duty/generate", headers=api.login("district"),
                 json={"roster": units["dade"], "start": "2026-09-30", "days": 11})
    assert d.status_code == 201, d.text
    by_day: dict[str, set] = {}
    for a in d.json():
        by_day.setdefault(a["day"], set()).add(a["shift"])
    assert by_day["2026-10-01"] == {"full"} and by_day["2026-10-04"] == {"full"}  # 国庆
    assert by_day["2026-09-30"] == {"day", "night"}  # a Wednesday, working
    assert by_day["2026-10-10"] == {"day", "night"}  # a Saturday made a workday (调休)
    assert days["2026-10-01"]["kind"] == "holiday" and days["2026-10-10"]["kind"] == "workday_adjusted"


def test_assign_swap_and_overlap(api, units):
    yihe = api.login("yihe")
    day = FREE.isoformat()
    body = {"roster": units["yihe"], "items": [
        {"person_id": units["leader"], "role": "leader", "shift": "day", "day": day},
        {"person_id": units["operator"], "role": "operator", "shift": "day", "day": day}]}
    r = api.post("/api/duty/assignments", headers=yihe, json=body)
    assert r.status_code == 201, r.text
    ids = [a["id"] for a in r.json()]
    assert r.json()[0]["person_name"] and r.json()[0]["role_name_zh"] == "带班领导"

    # The same person on the overlapping 24-hour shift: refused, nothing changed.
    r = _no_change(api, lambda: api.post("/api/duty/assignments", headers=yihe, json={"roster": units["yihe"], "items": [
        {"person_id": units["leader"], "role": "leader", "shift": "full", "day": day}]}))
    assert r.status_code == 409, r.text
    assert "two shifts at once" in r.text
    # Two overlapping shifts inside one request.
    r = _no_change(api, lambda: api.post("/api/duty/assignments", headers=yihe, json={"roster": units["yihe"], "items": [
        {"person_id": units["operator"], "role": "operator", "shift": "night", "day": "2027-03-02"},
        {"person_id": units["operator"], "role": "operator", "shift": "full", "day": "2027-03-02"}]}))
    assert r.status_code == 409, r.text
    # Unknown person, unknown shift, a person of another township, a post that cannot lead.
    r = _no_change(api, lambda: api.post("/api/duty/assignments", headers=yihe, json={"roster": units["yihe"], "items": [
        {"person_id": 99999999, "role": "leader", "shift": "day", "day": "2027-03-03"},
        {"person_id": units["operator"], "role": "operator", "shift": "dawn", "day": "2027-03-03"},
        {"person_id": units["cadre"], "role": "leader", "shift": "day", "day": "2027-03-04"}]}))
    assert r.status_code == 422, r.text
    problems = " ".join(r.json()["details"]["problems"])
    assert "unknown person 99999999" in problems and "unknown shift 'dawn'" in problems and "cannot be leader" in problems
    # Another township's roster: outside the scope.
    r = _no_change(api, lambda: api.post("/api/duty/assignments", headers=yihe, json={"roster": units["dade"], "items": [
        {"person_id": units["leader"], "role": "leader", "shift": "day", "day": "2027-03-05"}]}))
    assert r.status_code in (403, 404), r.text

    # 替班: the operator takes the leader's slot? Not their post's role: refused; the township's leader stays.
    r = _no_change(api, lambda: api.post(f"/api/duty/assignments/{ids[0]}/swap", headers=yihe, json={"person_id": units["cadre"]}))
    assert r.status_code == 422, r.text
    # 换班 across days: the operator of FREE swaps with the operator of a later day (same person: a no-op swap of
    # two assignments of the same role is still two assignments).
    r = api.post("/api/duty/assignments", headers=yihe, json={"roster": units["yihe"], "items": [
        {"person_id": units["operator"], "role": "operator", "shift": "day", "day": "2027-03-08"}]})
    assert r.status_code == 201, r.text
    later = r.json()[0]["id"]
    r = api.post(f"/api/duty/assignments/{ids[1]}/swap", headers=yihe, json={"with_assignment": later, "note": "调班"})
    assert r.status_code == 200, r.text
    assert [a["note"] for a in r.json()] == ["调班", "调班"]
    at = datetime.combine(FREE, datetime.min.time(), BEIJING) + timedelta(hours=10)
    r = api.get("/api/duty/now", params={"unit": units["yihe"], "at": at.isoformat()}, headers=yihe)
    assert r.status_code == 200, r.text
    assert {(o["person_id"], o["role"], o["rostered"]) for o in r.json()} == {(units["leader"], "leader", True),
                                                                              (units["operator"], "operator", True)}
    r = api.get("/api/duty/now", params={"unit": units["yihe"], "at": "2027-03-01T10:00:00"}, headers=yihe)
    assert r.status_code == 422 and "time zone" in r.text
    r = api.delete(f"/api/duty/assignments/{later}", headers=yihe)
    assert r.status_code == 204


def test_handover_carries_open_items(api, units):
    yihe = api.login("yihe")
    first = {"roster": units["yihe"], "handed_by": units["operator"], "taken_by": units["leader"], "summary": "夜间平稳",
             "items": [{"text": "太康村6组 老沟湾 裂缝复查"}, {"text": "12345 工单回访", "done": True}]}
    r = api.post("/api/duty/handovers", headers=yihe, json=first)
    assert r.status_code == 201, r.text
    assert r.json()["open_items"] == 1
    r = api.post("/api/duty/handovers", headers=yihe, json={"roster": units["yihe"], "handed_by": units["leader"],
                                                           "taken_by": units["operator"], "items": [{"text": "新增：转移安置点物资清点"}]})
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert [i["text"] for i in items] == ["太康村6组 老沟湾 裂缝复查", "新增：转移安置点物资清点"]
    assert items[0]["carried"] and r.json()["carried_from"] is not None
    r = api.post("/api/duty/handovers", headers=yihe, json={"roster": units["yihe"], "handed_by": units["operator"],
                                                           "taken_by": units["leader"], "items": [{"text": "太康村6组 老沟湾 裂缝复查", "done": True}]})
    assert r.json()["open_items"] == 1
    r = _no_change(api, lambda: api.post("/api/duty/handovers", headers=yihe, json={**first, "taken_by": 99999999}))
    assert r.status_code == 422 and "unknown person 99999999" in r.text
    listed = api.get("/api/duty/handovers", params={"roster": units["yihe"]}, headers=yihe).json()
    assert listed[0]["handed_by_name"] and len(listed) >= 3


def test_roster_prints_as_xlsx(api, units):
    r = api.get("/api/duty/roster.xlsx", params={"roster": units["yihe"], "start": "2026-07-06", "end": "2026-07-12"},
                headers=api.login("yihe"))
    assert r.status_code == 200, r.text
    wb = load_workbook(io.BytesIO(r.content))
    ws = wb.active
    assert "值班表" in ws["A1"].value and ws["E2"].value == "带班领导"
    rows = list(ws.iter_rows(min_row=3, values_only=True))
    assert {row[0] for row in rows} == {f"2026-07-{d:02d}" for d in range(6, 13)}
    assert all(row[4] and row[5] for row in rows), "every shift of the demo roster has a leader and an operator"
    assert ws.page_setup.orientation == "landscape"
    r = api.get("/api/duty/rosters", headers=api.login("yihe"))
    keys = {x["key"]: x for x in r.json()}
    assert keys[units["yihe"]]["writable"] and units["dade"] not in keys

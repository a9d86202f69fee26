"""Scope rows of the event center (/api/events/*) for tests/test_api_scope.py.

A 大德镇 case (with a photo) is made as admin; the outsider ``yihe_ops`` (scoped to 义和镇) must get
403/404 for it, filtered lists, and change nothing."""

from __future__ import annotations

import json

from shapely.geometry import shape

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def _no_foreign(dade: str, number: str):
    def check(r):
        assert r.status_code == 200, r.text
        text = r.text
        assert number not in text, "a foreign case leaked"
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
        items = body.get("items", []) if isinstance(body, dict) else (body or [])
        for item in items:
            assert not str(item.get("unit_path", "")).startswith(f"/500154/{dade}"), item
            assert not str(item.get("key", "") or "").startswith(dade), item
    return check


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    dade, grid = world["dade"], world["dade_grid"]
    point = shape(grid["geometry"]).representative_point()
    r = api.post("/api/events/cases", headers=admin, json={"class_code": "06010", "lon": point.x, "lat": point.y,
                                                           "description": "大德镇暴露垃圾"})
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    r = api.post(f"/api/events/cases/{number}/attachments", headers=admin, files={"photo": ("a.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 201, r.text
    attachment = r.json()["attachments"][0]["id"]
    foreign = _no_foreign(dade, number)
    csv_body = ("ticket_id,received_at,class_code,lon,lat\n" f"T-scope-1,2026-11-20T09:00:00+08:00,06010,{point.x},{point.y}\n").encode()
    return {
        ("GET", "/api/events/classes"): [dict(check=lambda r: r.status_code == 200 and len(r.json()) > 30)],
        ("GET", "/api/events/cases"): [dict(check=foreign), dict(params={"root": dade}, check=_denied),
                                       dict(params={"q": number}, check=foreign)],
        ("GET", "/api/events/map/cases"): [dict(check=foreign)],
        ("POST", "/api/events/cases"): [dict(json={"class_code": "06010", "lon": point.x, "lat": point.y}, check=_denied),
                                        dict(json={"class_code": "06010", "unit_code": grid["code"]}, check=_denied)],
        ("POST", "/api/events/cases/batch"): [dict(json=[{"class_code": "06010", "lon": point.x, "lat": point.y}],
                                                   check=_denied),
                                              dict(json=[{"class_code": "06010", "unit_code": grid["code"]}], check=_denied)],
        ("GET", "/api/events/cases/{number}"): [dict(path={"number": number}, check=_denied)],
        ("POST", "/api/events/cases/{number}/actions/{action}"): [
            dict(path={"number": number, "action": "accept"}, json={}, check=_denied),
            dict(path={"number": number, "action": "void"}, json={"note": "x"}, check=_denied)],
        ("POST", "/api/events/cases/{number}/attachments"): [
            dict(path={"number": number}, files={"photo": ("b.jpg", JPEG, "image/jpeg")}, check=_denied)],
        ("GET", "/api/events/cases/{number}/attachments/{attachment_id}"): [
            dict(path={"number": number, "attachment_id": attachment}, check=_denied)],
        ("POST", "/api/events/patrol"): [dict(data={"class_code": "06010", "lon": str(point.x), "lat": str(point.y)},
                                              files={"photo": ("c.jpg", JPEG, "image/jpeg")}, check=_denied)],
        ("POST", "/api/events/import/hotline"): [dict(files={"file": ("t.csv", csv_body, "text/csv")}, check=_denied)],
        ("GET", "/api/events/cases/{number}/duplicates"): [dict(path={"number": number}, check=_denied)],
        ("POST", "/api/events/cases/{number}/merge"): [dict(path={"number": number}, json={"children": [number]}, check=_denied)],
        ("POST", "/api/events/sweep"): [dict(json={"now": "2000-01-01T00:00:00Z"},
                                             check=lambda r: r.status_code == 200 and r.json() == {"due_soon": 0, "escalated": 0})],
        ("GET", "/api/events/evaluation"): [dict(params={"start": "2026-01-01T00:00:00+08:00", "end": "2027-01-01T00:00:00+08:00",
                                                         "group": g}, check=foreign) for g in ("township", "grid", "department")],
        ("GET", "/api/events/stream"): [dict(params={"timeout": 0}, check=foreign)],
    }


def _points(api, world) -> dict:
    admin = api.login("admin")
    yihe_grid = api.get("/api/units", params={"root": world["yihe"], "level": "grid", "limit": 1}, headers=admin).json()["items"][0]
    yihe_grid = api.get(f"/api/units/{yihe_grid['code']}", params={"geometry": True}, headers=admin).json()
    return {"dade": shape(world["dade_grid"]["geometry"]).representative_point(),
            "yihe": shape(yihe_grid["geometry"]).representative_point()}


def test_open311_publishes_only_what_is_meant_for_the_public(api, world):
    """Without credentials Open311 lists only citizens' requests (Open311, public channel) of public classes,
    without internal notes; patrol reports, REST and 12345 cases, non-public classes and alarms are "not
    found". With an api_key a caller also sees its own scope's cases, and nothing of another township."""
    from cityops.core import audit
    from cityops.events import creation

    admin = api.login("admin")
    pts = _points(api, world)
    dade, yihe = pts["dade"], pts["yihe"]
    admin_key = api.post("/api/users/admin/api-keys", headers=admin, json={"name": "open311 scope"}).json()["api_key"]
    r = api.post("/open311/v2/requests.json", data={"api_key": admin_key, "service_code": "06010", "lat": str(dade.y),
                                                    "long": str(dade.x), "description": "桥头有垃圾", "email": "citizen@example.cn"})
    assert r.status_code == 200, r.text
    public = r.json()[0]["service_request_id"]
    note = "内部：已电话联系队长核实"
    assert api.post(f"/api/events/cases/{public}/actions/accept", headers=admin, json={"note": note}).status_code == 200

    def rest(point, **body):
        r = api.post("/api/events/cases", headers=admin, json={"class_code": "06010", "lon": point.x, "lat": point.y, **body})
        assert r.status_code == 201, r.text
        return r.json()["number"]

    internal = {"rest": rest(dade, description="内部巡查记录"), "patrol": rest(dade, source="patrol"),
                "private class": rest(dade, source="public", class_code="10082", description="某户房屋开裂")}
    csv_body = f"ticket_id,received_at,class_code,lon,lat\nT-open311-1,2026-11-20T09:00:00+08:00,06010,{dade.x},{dade.y}\n"
    r = api.post("/api/events/import/hotline", headers=admin, files={"file": ("t.csv", csv_body.encode(), "text/csv")})
    assert r.status_code == 200, r.text
    internal["12345"] = r.json()["numbers"][0]
    with api.store.sessions() as session:
        case = creation.create_case_from_alarm(session, source="rule", alarm_key="open311-scope-alarm", class_code=None,
                                              title="老沟湾位移告警", description="GNSS 位移速率超限", lon=dade.x, lat=dade.y,
                                              level="orange", evidence={}, actor=audit.SYSTEM)
        session.commit()
        internal["alarm"] = case.number
    own = rest(yihe, description="义和镇内部记录")
    every = [public, own, *internal.values()]

    def listed(**params) -> set[str]:
        r = api.get("/open311/v2/requests.json", params=params)
        assert r.status_code == 200, r.text
        return {x["service_request_id"] for x in r.json()}

    # The public.
    shown = listed(service_request_id=",".join(every))
    assert shown == {public}, f"published to everyone: {sorted(shown)}; only {public} is public ({internal})"
    recent = listed()
    assert public in recent and not recent & {own, *internal.values()}
    for fmt in ("json", "xml"):
        r = api.get(f"/open311/v2/requests/{public}.{fmt}")
        assert r.status_code == 200 and note not in r.text and "citizen@example.cn" not in r.text
    [one] = api.get(f"/open311/v2/requests/{public}.json").json()
    assert one["status"] == "open" and one["status_notes"] == "案卷建立" and one["description"] == "桥头有垃圾"
    missing = api.get("/open311/v2/requests/20261201-nosuchcase.json")
    for what, number in internal.items():
        r = api.get(f"/open311/v2/requests/{number}.json")
        assert r.status_code == 404, f"{what}: {r.text}"
        assert r.json()[0]["description"] == missing.json()[0]["description"].replace("20261201-nosuchcase", number)
    # A caller with credentials: its own scope as well, nothing foreign; the administrator everything.
    own_key = api.post("/api/users/yihe_ops/api-keys", headers=world["headers"], json={"name": "open311"}).json()["api_key"]
    assert listed(service_request_id=",".join(every), api_key=own_key) == {public, own}
    assert api.get(f"/open311/v2/requests/{own}.json", params={"api_key": own_key}).status_code == 200
    assert api.get(f"/open311/v2/requests/{internal['rest']}.json", params={"api_key": own_key}).status_code == 404
    assert listed(service_request_id=",".join(every), api_key=admin_key) == set(every)
    r = api.get("/open311/v2/requests.json", params={"service_request_id": ",".join(every)}, headers=admin)
    assert {x["service_request_id"] for x in r.json()} == set(every)
    r = api.get("/open311/v2/requests.json", params={"api_key": "cok_not-a-key"})
    assert r.status_code == 403 and r.json()[0]["code"] == "403"


def test_hotline_ticket_ids_are_per_township(api, world):
    """A 12345 ticket id is the township's: 大德镇's ticket T-7 neither blocks nor reveals 义和镇's T-7 (both are
    created, the answer is the same as for an id that exists nowhere); a re-import, by the township or by the
    district, is still one case. Keys stored before (global) are moved to their township by migration 0012."""
    from alembic import command
    from sqlalchemy import select

    from cityops.core.db import alembic_config, migrate
    from cityops.events.models import Case

    admin, outsider, district = api.login("admin"), world["headers"], api.login("district")
    pts = _points(api, world)

    def csv_file(ticket: str, point) -> dict:
        body = f"ticket_id,received_at,class_code,lon,lat\n{ticket},2026-11-21T09:00:00+08:00,06010,{point.x},{point.y}\n"
        return {"file": ("t.csv", body.encode(), "text/csv")}

    def imported(headers, ticket: str, where: str) -> dict:
        r = api.post("/api/events/import/hotline", headers=headers, files=csv_file(ticket, pts[where]))
        assert r.status_code == 200, r.text
        return r.json()

    def key_of(number: str) -> str:
        with api.store.sessions() as session:
            return session.scalar(select(Case.external_key).where(Case.number == number))

    first = imported(admin, "T-7", "dade")
    assert first["created"] == 1
    # Keys stored with the global form before migration 0012 get their township.
    config = alembic_config(api.store.engine)
    command.downgrade(config, "0011")
    assert key_of(first["numbers"][0]) == "12345:T-7"
    migrate(api.store.engine)
    assert key_of(first["numbers"][0]) == f"12345:{world['dade']}:T-7"
    assert imported(admin, "T-7", "dade") == {"created": 0, "skipped": 1, "numbers": []}
    # 义和镇's own T-7: created, answered exactly like a ticket id that exists nowhere.
    same_id, fresh_id = imported(outsider, "T-7", "yihe"), imported(outsider, "T-7-nowhere", "yihe")
    assert same_id["created"] == fresh_id["created"] == 1 and same_id["skipped"] == fresh_id["skipped"] == 0
    assert key_of(same_id["numbers"][0]) == f"12345:{world['yihe']}:T-7"
    # Re-imports in 义和镇, by the township's operator or by the district, are the same case.
    assert imported(outsider, "T-7", "yihe") == {"created": 0, "skipped": 1, "numbers": []}
    assert imported(district, "T-7", "yihe") == {"created": 0, "skipped": 1, "numbers": []}
    # The other way round: 义和镇 imports first, 大德镇's ticket with the same id is still created.
    assert imported(outsider, "T-8", "yihe")["created"] == 1
    assert imported(district, "T-8", "dade")["created"] == 1


__all__ = ["scope_cases", "json"]

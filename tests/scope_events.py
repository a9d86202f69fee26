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
        ("POST", "/api/events/cases"): [dict(json={"class_code": "06010", "lon": point.x, "lat": point.y}, check=_denied),
                                        dict(json={"class_code": "06010", "unit_code": grid["code"]}, check=_denied)],
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


__all__ = ["scope_cases", "json"]

"""Scope rows of notifications for tests/test_api_scope.py: the outsider (义和镇) neither sends into 大德镇 nor
reads its messages, and nobody reads, acknowledges or takes delivery of an inbox entry addressed to someone else.
Also the inbox itself as a role: a township operator receives, reads and acknowledges."""

from __future__ import annotations

import json

from tests.conftest import table_counts


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def _refused(r):
    assert 400 <= r.status_code < 500 and r.status_code != 401, f"expected a 4xx, got {r.status_code}: {r.text}"


def _clean(dade: str):
    def check(r):
        assert r.status_code == 200, r.text
        text = json.dumps(r.json(), ensure_ascii=False) if r.headers.get("content-type", "").startswith("application/json") else r.text
        assert "大德镇" not in text and dade not in text, f"foreign record leaked: {text[:300]}"
    return check


def _foreign_message(api, world) -> tuple[int, int]:
    """A message of 大德镇 to one of its people, sent by the administrator; its id and the inbox entry's."""
    admin = api.login("admin")
    r = api.post("/api/notify/messages", headers=admin, json={
        "kind": "notice", "severity": "yellow", "title": "大德镇防汛通知", "unit_code": world["dade"],
        "to": [f"person:{world['dade_person']}"], "channels": ["inapp"]})
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    entry = api.get(f"/api/notify/messages/{mid}", headers=admin).json()["recipients"][0]["id"]
    return mid, entry


def scope_cases(api, world) -> dict:
    dade, yihe = world["dade"], world["yihe"]
    mid, entry = _foreign_message(api, world)
    admin = api.login("admin")
    r = api.post("/api/notify/webpush/subscriptions", headers=admin,
                 json={"endpoint": "https://push.example/admin-browser", "keys": {"p256dh": "B" * 87, "auth": "a" * 22}})
    assert r.status_code == 201, r.text
    admin_sub = r.json()["id"]
    return {
        ("POST", "/api/notify/messages"): [
            dict(json={"kind": "notice", "title": "越权通知", "unit_code": dade, "to": [f"person:{world['dade_person']}"]}, check=_denied),
            dict(json={"kind": "notice", "title": "越权通知", "unit_code": yihe, "to": [f"person:{world['dade_person']}"]}, check=_denied),
            dict(json={"kind": "notice", "title": "越权通知", "unit_code": yihe, "to": [f"unit:{dade}"]}, check=_denied),
        ],
        ("GET", "/api/notify/messages"): [dict(check=_clean(dade))],
        ("GET", "/api/notify/messages/{message_id}"): [dict(path={"message_id": mid}, check=_denied)],
        ("GET", "/api/notify/messages/{message_id}/timeline"): [dict(path={"message_id": mid}, check=_denied)],
        ("GET", "/api/notify/inbox"): [dict(check=_clean(dade))],
        ("GET", "/api/notify/inbox/count"): [dict(check=_clean(dade))],
        ("GET", "/api/notify/inbox/stream"): [dict(params={"max_events": 1, "timeout": 2}, check=_clean(dade))],
        ("POST", "/api/notify/inbox/{recipient_id}/acknowledge"): [dict(path={"recipient_id": entry}, json={}, check=_denied)],
        ("POST", "/api/notify/inbox/{recipient_id}/read"): [dict(path={"recipient_id": entry}, check=_denied)],
        ("POST", "/api/notify/inbox/delivered"): [dict(json={"ids": [entry]}, check=_denied)],
        ("GET", "/api/notify/preferences"): [dict(check=_denied)],  # the outsider is no person: nothing to show
        ("PUT", "/api/notify/preferences"): [dict(json={"channels": ["inapp"]}, check=_denied)],
        ("GET", "/api/notify/webpush/key"): [dict(check=_clean(dade))],
        ("POST", "/api/notify/webpush/subscriptions"): [dict(json={"endpoint": "ftp://x/y", "keys": {"p256dh": "B" * 87, "auth": "a" * 22}},
                                                            check=_refused)],
        ("DELETE", "/api/notify/webpush/subscriptions/{subscription_id}"): [dict(path={"subscription_id": admin_sub}, check=_denied)],
    }


def test_notify_inbox_as_a_township_operator(api, world):
    """The township operator (a person: 义和镇's operator on duty) gets a message in the inbox, sees the unread
    count, cannot acknowledge for someone else, acknowledges its own; bad input is a clear 4xx changing nothing."""
    admin, yihe = api.login("admin"), api.login("yihe")
    me = api.get("/api/notify/inbox/count", headers=yihe).json()
    r = api.post("/api/notify/messages", headers=admin, json={
        "kind": "notice", "severity": "orange", "title": "义和镇橙色预警：请值班员确认", "unit_code": world["yihe"],
        "to": ["post:operator@unit"], "channels": ["inapp"], "subject_kind": "warning", "subject_id": "1"})
    assert r.status_code == 201, r.text
    inbox = api.get("/api/notify/inbox", headers=yihe).json()
    assert inbox["unread"] == me["unread"] + 1 and inbox["unacknowledged"] == me["unacknowledged"] + 1
    item = inbox["items"][0]
    assert item["title"] == "义和镇橙色预警：请值班员确认" and item["acknowledged_at"] is None
    before = table_counts(api.store)
    for headers in (api.login("taikang"), api.login("leader")):
        r = api.post(f"/api/notify/inbox/{item['id']}/acknowledge", headers=headers, json={})
        assert r.status_code == 403 and "not addressed to you" in r.json()["message"], r.text
    for body, field in (({"kind": "notice", "title": "x", "unit_code": world["yihe"], "to": ["person:99999999"]}, "no one found"),
                        ({"kind": "notice", "title": "x", "unit_code": world["yihe"], "to": ["post:operator@unit"], "channels": ["fax"]}, "unknown channel"),
                        ({"kind": "notice", "title": "x", "unit_code": world["yihe"], "to": ["everybody"]}, "not an address"),
                        ({"kind": "notice", "title": "x", "unit_code": "000000", "to": ["post:operator@unit"]}, "unknown unit code")):
        r = api.post("/api/notify/messages", headers=admin, json=body)
        assert r.status_code == 422 and field in r.text, r.text
    assert api.post("/api/notify/inbox/99999999/acknowledge", headers=yihe, json={}).status_code == 404
    assert table_counts(api.store) == before
    r = api.post(f"/api/notify/inbox/{item['id']}/acknowledge", headers=yihe, json={"note": "收到，已布置"})
    assert r.status_code == 200 and r.json()["acknowledged_at"], r.text
    detail = api.get(f"/api/notify/messages/{item['message_id']}", headers=yihe).json()
    assert detail["status"] == "acknowledged"
    assert [t["what"] for t in detail["timeline"]][-1] == "acknowledged"
    after = api.get("/api/notify/inbox/count", headers=yihe).json()
    assert after == {"unread": me["unread"], "unacknowledged": me["unacknowledged"]}

"""A person's channels and quiet hours through the API the settings page uses, on both backends: quiet hours
hold back the phone (Web Push waits, marked deferred, until they end) for an ordinary message, but not for a red
warning; bad input is refused and changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from cityops.identity.models import User
from tests.conftest import table_counts


def _quiet_now() -> tuple[str, str]:
    local = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    return (local - timedelta(hours=1)).strftime("%H:%M"), (local + timedelta(hours=1)).strftime("%H:%M")


def test_quiet_hours_hold_back_the_phone_but_a_red_warning_goes_at_once(api):
    me, admin = api.login("laogouwan"), api.login("admin")
    with api.store.sessions() as s:
        user_id = s.scalar(select(User.id).where(User.username == "laogouwan"))
    start, end = _quiet_now()
    r = api.put("/api/notify/preferences", headers=me, json={"channels": ["inapp", "webpush"], "quiet_start": start, "quiet_end": end})
    assert r.status_code == 200, r.text
    assert r.json()["quiet_start"] == start and r.json()["quiet_end"] == end and r.json()["channels"] == ["inapp", "webpush"]
    assert api.get("/api/notify/preferences", headers=me).json()["quiet_end"] == end
    # The phone has subscribed to push (an endpoint nobody listens on: what matters is when it is due).
    r = api.post("/api/notify/webpush/subscriptions", headers=me,
                 json={"endpoint": "http://127.0.0.1:9/push/prefs", "keys": {"p256dh": "B" * 87, "auth": "a" * 22}})
    assert r.status_code == 201, r.text
    sent = {}
    for severity in ("yellow", "red"):
        r = api.post("/api/notify/messages", headers=admin, json={
            "kind": f"notice.{severity}", "severity": severity, "title": f"免打扰测试 {severity}", "body": "测试",
            "unit_code": "500154", "to": [f"user:{user_id}"], "policy": ""})
        assert r.status_code == 201, r.text
        sent[severity] = r.json()["id"]
    push = {}
    for severity, mid in sent.items():
        detail = api.get(f"/api/notify/messages/{mid}", headers=admin).json()
        push[severity] = next(d for d in detail["deliveries"] if d["channel"] == "webpush")
        assert any(d["channel"] == "inapp" for d in detail["deliveries"])
    quiet_end = datetime.fromisoformat(push["yellow"]["next_attempt_at"])
    assert push["yellow"]["deferred"] and push["yellow"]["state"] == "queued" and quiet_end > datetime.now(UTC) + timedelta(minutes=30)
    assert not push["red"]["deferred"] and datetime.fromisoformat(push["red"]["next_attempt_at"]) < quiet_end
    timeline = api.get(f"/api/notify/messages/{sent['yellow']}/timeline", headers=admin).json()
    assert any(t["what"] == "deferred" and t["channel"] == "webpush" for t in timeline)


def test_bad_preferences_are_refused_and_change_nothing(api):
    me = api.login("laogouwan")
    before_pref = api.get("/api/notify/preferences", headers=me).json()
    before = table_counts(api.store)
    for body in ({"channels": ["pigeon"]}, {"channels": []}, {"channels": ["inapp"], "quiet_start": "25:00", "quiet_end": "07:00"},
                 {"channels": ["inapp"], "quiet_start": "22:00"}, {"channels": ["inapp"], "quiet_start": "2200", "quiet_end": "0700"}):
        r = api.put("/api/notify/preferences", headers=me, json=body)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    assert table_counts(api.store) == before
    assert api.get("/api/notify/preferences", headers=me).json() == before_pref

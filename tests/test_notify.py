"""Notifications through real components on both backends: mails to an SMTP server (aiosmtpd), the DingTalk /
WeCom / Feishu / SMSEagle payloads as Apprise sends them to a local receiver, Web Push encrypted and VAPID-signed
to a local push endpoint that decrypts and verifies; the outbox (claim before send, nothing twice, nothing lost),
retries with their reasons, quiet hours, escalation steps on the timeline, receipts and bad input."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from cityops.core.bus import Bus, Subscription
from cityops.core.errors import Forbidden, InvalidInput
from cityops.identity.models import User
from cityops.notify import service
from cityops.notify.dispatch import Dispatcher, InboxHub
from cityops.notify.manifest import NotificationChanged, NotificationQueued
from cityops.notify.models import Delivery, Message as MessageRow, PushSubscription, TimelineEntry
from cityops.notify.service import Message
from cityops.notify.subscriptions import inbox_stream
from cityops.org.models import Person, Unit
from tests.conftest import BACKENDS, make_store, table_counts
from tests.notify_endpoints import PushEndpoint, SmtpServer, WebhookReceiver, settings_for

DISTRICT, TOWN, TOWN2, VILLAGE, GRID = "500154", "500154101", "500154102", "500154101201", "500154101201001"


def _unit(code, name, level, parent=None, parent_path=""):
    path = f"{parent_path or '/'}{code}/"
    return Unit(code=code, name=name, level=level, parent_code=parent, path=path, attributes={}), path


def tiny_org(session) -> dict:
    """A district, two townships, a village and a grid, their people and users."""
    d, dp = _unit(DISTRICT, "开州区", "district")
    t, tp = _unit(TOWN, "义和镇", "township", DISTRICT, dp)
    t2, t2p = _unit(TOWN2, "大德镇", "township", DISTRICT, dp)
    v, vp = _unit(VILLAGE, "太康村", "village", TOWN, tp)
    g, gp = _unit(GRID, "太康村第一网格", "grid", VILLAGE, vp)
    session.add_all([d, t, t2, v, g])
    session.flush()
    people = {
        "district_leader": Person(name="区长甲", post="leader", title="区长", unit_code=DISTRICT, unit_path=dp,
                                  phone="13800000001", email="leader@district.example", attributes={}),
        "district_operator": Person(name="区值班员", post="operator", title="值班员", unit_code=DISTRICT, unit_path=dp,
                                    phone="13800000002", email="duty@district.example", attributes={}),
        "town_leader": Person(name="镇长乙", post="leader", title="镇长", unit_code=TOWN, unit_path=tp,
                              phone="13800000003", email="town@district.example", attributes={}),
        "town2_leader": Person(name="镇长丁", post="leader", title="镇长", unit_code=TOWN2, unit_path=t2p,
                               phone="13800000006", email="town2@district.example", attributes={}),
        "cadre": Person(name="书记丙", post="village_cadre", title="书记", unit_code=VILLAGE, unit_path=vp,
                        phone="13800000004", email="cadre@district.example", attributes={}),
        "grid_worker": Person(name="网格员戊", post="grid_worker", title="网格员", unit_code=GRID, unit_path=gp,
                              phone="13800000005", email=None, attributes={}),
    }
    session.add_all(people.values())
    session.flush()
    users = {
        "cadre": User(username="cadre", display_name="书记丙", role="village_cadre", scope_units=[VILLAGE],
                      person_id=people["cadre"].id),
        "town": User(username="town", display_name="镇长乙", role="township_operator", scope_units=[TOWN],
                     person_id=people["town_leader"].id),
        "other": User(username="other", display_name="别人", role="grid_worker", scope_units=[GRID]),
    }
    session.add_all(users.values())
    session.commit()
    return {"people": {k: p.id for k, p in people.items()}, "users": {k: u.id for k, u in users.items()}}


@pytest.fixture(params=BACKENDS)
def env(request, tmp_path):
    with SmtpServer() as smtp, WebhookReceiver() as hooks:
        store, close = make_store(request.param, tmp_path / "data", **settings_for(smtp, hooks))
        service.configure(store.settings)
        with store.sessions() as s:
            org = tiny_org(s)
        bus = Bus(store.engine, store.settings)
        dispatcher = Dispatcher(bus, store.settings)
        try:
            yield type("Env", (), dict(store=store, smtp=smtp, hooks=hooks, org=org, bus=bus, dispatcher=dispatcher,
                                       settings=store.settings))
        finally:
            dispatcher.stop()
            bus.stop()
            close()


def _send(env, **kw) -> int:
    fields = dict(kind="notice", severity="yellow", title="汛期值守提醒", body="今晚有强降雨，请保持通讯畅通。",
                  unit_code=VILLAGE, subject_kind="incident", subject_id="7", link="/incidents/7")
    fields.update(kw)
    with env.store.sessions() as s:
        mid = service.send(s, Message(**fields))
        s.commit()
    return mid


def _deliveries(env, mid) -> dict[str, Delivery]:
    with env.store.sessions() as s:
        return {(d.channel if d.recipient_id else d.channel): d for d in service.deliveries(s, mid)}


def _timeline(env, mid) -> list[tuple]:
    with env.store.sessions() as s:
        return [(t.what, t.channel, t.step) for t in service.timeline(s, mid)]


def test_every_channel_reaches_its_real_endpoint_once(env):
    cadre = env.org["people"]["cadre"]
    mid = _send(env, to=[f"person:{cadre}"], channels=["inapp", "email", "sms", "dingtalk", "wecom", "feishu"])
    assert env.smtp.messages == [] and env.hooks.requests == []  # nothing leaves before the dispatcher
    env.dispatcher.round()
    # E-mail: one message to the cadre, with the title, body and the link to the subject.
    (rcpts, mail), = env.smtp.messages
    assert rcpts == ["cadre@district.example"]
    assert "汛期值守提醒" in mail["Subject"] and "黄色" in mail["Subject"]
    assert "今晚有强降雨" in mail.get_content() and "/incidents/7" in mail.get_content()
    assert "cityops.notify" in mail["Message-ID"]
    # Each platform once, in its own format, with the recipient's phone where the platform takes one.
    for platform in ("dingtalk", "wecom", "feishu", "sms"):
        got = env.hooks.of(platform)
        assert len(got) == 1, (platform, env.hooks.requests)
        assert got[0]["problems"] == [], got[0]
    assert env.hooks.of("dingtalk")[0]["body"]["at"]["atMobiles"] == ["13800000004"]
    assert env.hooks.of("dingtalk")[0]["query"]["access_token"] == "robottoken0001"
    assert "汛期值守提醒" in env.hooks.of("dingtalk")[0]["body"]["text"]["content"]
    assert env.hooks.of("wecom")[0]["query"]["key"] == "wecomkey0001"
    assert "书记丙" in str(env.hooks.of("wecom")[0]["body"])
    assert env.hooks.of("feishu")[0]["path"] == "/open-apis/bot/v2/hook/feishutoken0001/"
    assert env.hooks.of("sms")[0]["body"]["params"]["to"] == "13800000004"
    assert env.hooks.of("sms")[0]["body"]["params"]["access_token"] == "smstoken0001"
    states = {d.channel: d.state for d in _deliveries(env, mid).values()}
    assert states == {c: "sent" for c in ("inapp", "email", "sms", "dingtalk", "wecom", "feishu")}
    sent = [c for what, c, _ in _timeline(env, mid) if what == "sent"]
    assert sorted(sent) == sorted(["inapp", "email", "sms", "dingtalk", "wecom", "feishu"])
    # Nothing twice: more rounds hand over nothing more.
    env.dispatcher.round()
    env.dispatcher.round()
    assert len(env.smtp.messages) == 1 and len(env.hooks.requests) == 4


def test_a_failure_is_retried_with_its_reason_and_a_dead_end_fails_for_good(env):
    cadre = env.org["people"]["cadre"]
    env.hooks.fail["dingtalk"] = 1
    mid = _send(env, to=[f"person:{cadre}"], channels=["inapp", "dingtalk"])
    env.dispatcher.round()
    d = _deliveries(env, mid)["dingtalk"]
    assert d.state == "retry" and d.attempts == 1
    assert "500" in d.errors[0]["error"] or "DingTalk" in d.errors[0]["error"], d.errors
    time.sleep(0.1)
    env.dispatcher.round()
    d = _deliveries(env, mid)["dingtalk"]
    assert d.state == "sent" and d.attempts == 2 and len(d.errors) == 1
    whats = [w for w, c, _ in _timeline(env, mid) if c == "dingtalk"]
    assert whats == ["queued", "retry", "sent"]
    # The SMTP server goes away: each try fails with the connection's reason, then the delivery fails for good.
    env.smtp.down()
    mid = _send(env, to=[f"person:{cadre}"], channels=["inapp", "email"], title="第二条")
    for _ in range(env.settings.notify_max_attempts):
        env.dispatcher.round()
        time.sleep(0.25)
    d = _deliveries(env, mid)["email"]
    assert d.state == "failed" and d.attempts == env.settings.notify_max_attempts
    assert all("SMTP 127.0.0.1" in e["error"] for e in d.errors) and len(d.errors) == env.settings.notify_max_attempts
    env.smtp.up()


def test_nothing_lost_when_the_dispatcher_dies_between_claim_and_send(env):
    cadre = env.org["people"]["cadre"]
    mid = _send(env, to=[f"person:{cadre}"], channels=["inapp", "email"], dedup_key="storm:1")
    assert _send(env, to=[f"person:{cadre}"], channels=["inapp", "email"], dedup_key="storm:1") == mid  # idempotent
    claimed = env.dispatcher.claim(datetime.now(UTC))  # committed claims ... and then the process dies
    assert {o.channel for o in claimed} == {"inapp", "email"}
    assert env.smtp.messages == []
    env.dispatcher.round()  # a live claim is not taken twice
    assert env.smtp.messages == []
    with env.store.sessions() as s:  # the claims expire
        s.execute(update(Delivery).where(Delivery.message_id == mid).values(claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
        s.commit()
    env.dispatcher.round()
    assert len(env.smtp.messages) == 1
    d = _deliveries(env, mid)["email"]
    assert d.state == "sent" and d.attempts == 2


def test_web_push_is_encrypted_and_vapid_signed(env):
    with PushEndpoint(env.settings.notify_vapid_subject) as push:
        with env.store.sessions() as s:
            service.add_push_subscription(s, env.org["users"]["cadre"], f"{push.base()}/push/abc", **push.keys())
            gone = service.add_push_subscription(s, env.org["users"]["cadre"], f"{push.base()}/gone/xyz", **push.keys())
            s.commit()
            gone_id = gone.id
        mid = _send(env, to=[f"person:{env.org['people']['cadre']}"], channels=["inapp", "webpush"], severity="red",
                    kind="notice.red", policy="")
        env.dispatcher.round()
        assert push.rejected == []
        (got,) = push.received
        assert got["payload"]["message_id"] == mid and "汛期值守提醒" in got["payload"]["title"]
        assert got["payload"]["ack"] is True and got["urgency"] == "high"
        assert got["claims"]["sub"] == "mailto:duty@district.example"
        from cityops.notify.channels import vapid_public_key

        assert got["claims"]["k"] == vapid_public_key(env.settings)
        assert _deliveries(env, mid)["webpush"].state == "sent"
        with env.store.sessions() as s:
            assert s.get(PushSubscription, gone_id).gone_at is not None  # 410: that browser unsubscribed


def test_a_phone_without_push_subscription_is_skipped_at_once_with_its_reason(env):
    """Web Push to someone whose phones never subscribed is skipped when queued, as an e-mail without an address
    is: the dispatcher has nothing to hand over and nothing to fail; the in-app delivery still goes."""
    mid = _send(env, to=[f"person:{env.org['people']['cadre']}"], channels=["inapp", "webpush"])
    ds = _deliveries(env, mid)
    assert ds["webpush"].state == "skipped" and "no push subscription" in ds["webpush"].errors[0]["error"]
    assert ("skipped", "webpush", 0) in _timeline(env, mid)
    env.dispatcher.round()
    ds = _deliveries(env, mid)
    assert ds["inapp"].state == "sent" and ds["webpush"].state == "skipped" and ds["webpush"].attempts == 0


def test_quiet_hours_hold_back_the_phone_but_not_a_red_warning(env):
    cadre = env.org["people"]["cadre"]
    now = datetime.now(UTC)
    from zoneinfo import ZoneInfo

    local = now.astimezone(ZoneInfo("Asia/Shanghai"))
    start, end = (local - timedelta(hours=1)).strftime("%H:%M"), (local + timedelta(hours=1)).strftime("%H:%M")
    with env.store.sessions() as s:
        service.set_preferences(s, cadre, ["inapp", "sms", "email"], start, end)
        s.commit()
    mid = _send(env, to=[f"person:{cadre}"])  # no channels given: the person's
    env.dispatcher.round()
    ds = _deliveries(env, mid)
    assert set(ds) == {"inapp", "sms", "email"}
    assert ds["sms"].state == "queued" and ds["sms"].deferred and ds["sms"].next_attempt_at > now + timedelta(minutes=30)
    assert ds["email"].state == "sent" and env.hooks.of("sms") == []
    assert ("deferred", "sms", 0) in _timeline(env, mid)
    red = _send(env, to=[f"person:{cadre}"], severity="red", kind="notice.red", policy="", channels=["inapp", "sms"])
    env.dispatcher.round()
    assert _deliveries(env, red)["sms"].state == "sent" and len(env.hooks.of("sms")) == 1


def test_escalation_runs_its_steps_until_someone_acknowledges(env):
    cadre, town_user = env.org["people"]["cadre"], env.org["users"]["town"]
    t0 = datetime.now(UTC)
    with env.store.sessions() as s:
        mid = service.send(s, Message(kind="warning.red", severity="red", title="老沟湾 红色预警", unit_code=VILLAGE,
                                      to=[f"person:{cadre}"], subject_kind="warning", subject_id="1"), now=t0)
        s.commit()
        assert s.get(MessageRow, mid).policy == "red_warning"
    # The cadre stays silent: after 5 minutes the township's leader on duty, then the district's.
    with env.store.sessions() as s:
        assert service.escalate_due(s, t0 + timedelta(minutes=4)) == []
        assert service.escalate_due(s, t0 + timedelta(minutes=5, seconds=1)) == [mid]
        s.commit()
        names = [r.name for r in service.recipients(s, mid)]
        assert names == ["书记丙", "镇长乙"]
        assert service.escalate_due(s, t0 + timedelta(minutes=10, seconds=2)) == [mid]
        s.commit()
        assert [r.name for r in service.recipients(s, mid)] == ["书记丙", "镇长乙", "区长甲", "区值班员"]
        assert [r.step for r in service.recipients(s, mid)] == [0, 1, 2, 2]
    steps = [(w, st) for w, c, st in _timeline(env, mid) if w in ("created", "escalated", "acknowledged", "exhausted")]
    assert steps == [("created", 0), ("escalated", 1), ("escalated", 2)]
    # The township leader acknowledges: the escalation stops there.
    with env.store.sessions() as s:
        town_entry = next(r.id for r in service.recipients(s, mid) if r.name == "镇长乙")
        service.acknowledge(s, town_user, town_entry, note="已安排转移")
        s.commit()
        assert service.escalate_due(s, t0 + timedelta(hours=2)) == []
        m = s.get(MessageRow, mid)
        assert m.status == "acknowledged" and m.escalate_at is None
    assert ("acknowledged", None, 2) in _timeline(env, mid)


def test_escalation_runs_as_the_deployments_bus_timer(env, monkeypatch):
    """The policy's next step comes from the bus timer ``notify.escalate`` (once per period per deployment, its
    tick claimed in bus_timers), not from the dispatcher: its round hands over deliveries only."""
    from cityops.core.bus import store as bus_store
    from cityops.core.bus.runtime import run_timer
    from cityops.wiring import timers

    cadre = env.org["people"]["cadre"]
    t0 = datetime.now(UTC) - timedelta(minutes=6)
    with env.store.sessions() as s:
        mid = service.send(s, Message(kind="warning.red", severity="red", title="老沟湾 红色预警", unit_code=VILLAGE,
                                      to=[f"person:{cadre}"], subject_kind="warning", subject_id="2"), now=t0)
        s.commit()
    env.dispatcher.round()
    with env.store.sessions() as s:
        assert [r.name for r in service.recipients(s, mid)] == ["书记丙"]  # the dispatcher does not escalate
    # The timers' clock moved by hand: a period passes when the test says so, however slow a busy machine runs the
    # job (a 0.2 s period and a fixed sleep failed "once per period" whenever the escalation took longer than that).
    shift = [0]
    real = bus_store.now_ms
    monkeypatch.setattr(bus_store, "now_ms", lambda: real() + shift[0])
    settings = env.settings.model_copy(update={"timer_notify_escalate_seconds": 60})
    (timer,) = [t for t in timers(settings) if t.name == "notify.escalate"]
    assert not run_timer(env.bus, timer)  # the first sighting starts its clock
    shift[0] += 30_000
    assert not run_timer(env.bus, timer)  # half a period on: not yet
    shift[0] += 30_000
    assert run_timer(env.bus, timer)
    with env.store.sessions() as s:
        assert [r.name for r in service.recipients(s, mid)] == ["书记丙", "镇长乙"]
    assert ("escalated", None, 1) in _timeline(env, mid)
    assert not run_timer(env.bus, timer)  # once per period


def test_a_policy_that_runs_out_marks_the_message_exhausted(env):
    t0 = datetime.now(UTC)
    with env.store.sessions() as s:
        mid = service.send(s, Message(kind="indicator.breach", severity="red", title="积水点超限", unit_code=TOWN,
                                      to=[f"person:{env.org['people']['town_leader']}"]), now=t0)
        s.commit()
        service.escalate_due(s, t0 + timedelta(hours=5))
        service.escalate_due(s, t0 + timedelta(hours=14))
        s.commit()
        assert s.get(MessageRow, mid).status == "exhausted"
    assert [w for w, *_ in _timeline(env, mid) if w in ("escalated", "exhausted")] == ["escalated", "exhausted"]


def test_addresses_resolve_through_the_org_tree(env):
    mid = _send(env, to=["post:leader@township", "notify:区长", "unit:grid", "title:书记@unit"], channels=["inapp"])
    with env.store.sessions() as s:
        got = {r.name: r.via for r in service.recipients(s, mid)}
    assert got == {"镇长乙": "post:leader@township", "区长甲": "notify:区长", "网格员戊": "unit:grid", "书记丙": "title:书记@unit"}


def test_bad_input_is_refused_and_changes_nothing(env):
    before = table_counts(env.store)
    with env.store.sessions() as s:
        with pytest.raises(InvalidInput, match="no one found for person:999999"):
            service.send(s, Message(kind="notice", title="x", unit_code=VILLAGE, to=["person:999999"]))
        s.rollback()
        with pytest.raises(InvalidInput, match="unknown unit code"):
            service.send(s, Message(kind="notice", title="x", unit_code="999999", to=["person:1"]))
        s.rollback()
        with pytest.raises(InvalidInput, match="unknown escalation policy"):
            service.send(s, Message(kind="notice", title="x", unit_code=VILLAGE, to=["person:1"], policy="nope"))
        s.rollback()
    with pytest.raises(ValueError, match="unknown channel"):
        Message(kind="notice", title="x", unit_code=VILLAGE, to=["person:1"], channels=["pigeon"])
    with pytest.raises(ValueError, match="not an address"):
        Message(kind="notice", title="x", unit_code=VILLAGE, to=["everyone"])
    assert table_counts(env.store) == before
    # Acknowledging someone else's message: refused, nothing changed.
    mid = _send(env, to=[f"person:{env.org['people']['cadre']}"], channels=["inapp"])
    with env.store.sessions() as s:
        entry = service.recipients(s, mid)[0].id
    before = table_counts(env.store)
    with env.store.sessions() as s:
        with pytest.raises(Forbidden, match="not addressed to you"):
            service.acknowledge(s, env.org["users"]["other"], entry)
        s.rollback()
    assert table_counts(env.store) == before
    with env.store.sessions() as s:
        assert service.recipients(s, mid)[0].acknowledged_at is None


def test_the_lease_holder_dispatches_woken_by_the_bus(env):
    """The running pieces: the bus (its lease), the broadcast that wakes the dispatcher and feeds the inbox hub."""
    hub = InboxHub()
    env.bus.subscribe(Subscription("notify.inbox_stream", (NotificationQueued, NotificationChanged),
                                   inbox_stream(hub, env.dispatcher.wake), kind="broadcast"))
    env.dispatcher.start()
    deadline = time.monotonic() + 15
    while not env.bus.dispatching():
        assert time.monotonic() < deadline, "no dispatch lease"
        time.sleep(0.05)
    t0 = time.monotonic()
    mid = _send(env, to=[f"person:{env.org['people']['cadre']}"], channels=["inapp", "email"])
    while not env.smtp.messages:
        assert time.monotonic() - t0 < 10, "not delivered"
        time.sleep(0.02)
    assert _deliveries(env, mid)["email"].state in ("sending", "sent")


def test_a_closed_case_tells_its_reporter_and_its_notice_is_marked_delivered(env):
    """case.changed (close) → the reporter's e-mail, through the real SMTP server; the case outbox's notice gets
    delivered_at; an overdue escalation reaches the unit it went to."""
    from cityops.core.bus import Envelope
    from cityops.events.manifest import CaseChanged
    from cityops.events.models import Outbox
    from cityops.notify import subscriptions

    path = f"/{DISTRICT}/{TOWN}/{VILLAGE}/{GRID}/"
    with env.store.sessions() as s:
        notice = Outbox(case_id=41, topic="notify.reporter", recipient="citizen@mail.example", unit_path=path, payload={})
        s.add(notice)
        s.commit()
        payload = CaseChanged(case_id=41, number="2026-000041", action="close", state="closed", title="路灯不亮",
                              unit_path=path, grid_code=GRID, township_code=TOWN, reporter_email="citizen@mail.example",
                              outbox_ids=[notice.id])
        env_ = Envelope(id=Envelope.new_id(), seq=1, tx=0, name=CaseChanged.name, version=1,
                        occurred_at=datetime.now(UTC), payload=payload)
        mid = subscriptions.case_changed(s, env_)
        assert subscriptions.case_changed(s, env_) == mid  # redelivered: nothing new
        s.commit()
        s.expire_all()
        assert s.get(Outbox, notice.id).delivered_at is not None
        escalate = CaseChanged(case_id=42, number="2026-000042", action="escalate", state="dispatched", title="井盖缺失",
                               unit_path=path, unit_code=TOWN, escalation_level="township")
        overdue = subscriptions.case_changed(s, Envelope(id=Envelope.new_id(), seq=2, tx=0, name=CaseChanged.name, version=1,
                                                         occurred_at=datetime.now(UTC), payload=escalate))
        s.commit()
        assert s.get(MessageRow, overdue).policy == "overdue_case"
        assert [r.name for r in service.recipients(s, overdue)] == ["镇长乙"]
    env.dispatcher.round()
    (rcpts, mail), = [(r, m) for r, m in env.smtp.messages if r == ["citizen@mail.example"]]
    assert "2026-000041" in mail["Subject"] and "评价" in mail.get_content()

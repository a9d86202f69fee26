"""/api/notify: send, the inbox (with its live stream and receipts), a message's recipients, deliveries and
timeline, a person's preferences, Web Push subscriptions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cityops.core import sse
from cityops.core.db import begin_write
from cityops.core.errors import InvalidInput, NotFound
from cityops.core.params import Id, NonNegInt64
from cityops.core.web import DB, Ctx, per_app, require
from cityops.notify import channels, service
from cityops.notify.dispatch import Dispatcher, InboxHub

router = APIRouter(prefix="/api/notify", tags=["notify"])


def runtime(request: Request):
    """The app's inbox hub and dispatcher (the dispatcher starts with the first use: it needs the bus)."""
    state = request.app.state
    hub = per_app(state, "inbox_hub", lambda ctx: InboxHub(ctx.settings.notify_stream_queue))
    dispatcher = per_app(state, "notify_dispatcher", lambda ctx: Dispatcher(ctx.bus, ctx.settings))
    return hub, dispatcher


# ------------------------------------------------------------------------------------------------- send

class MessageIn(service.Message):
    pass


class SentOut(BaseModel):
    id: int


@router.post("/messages", status_code=201, response_model=SentOut,
             summary="Send a message to people, posts, roles or units (resolved through the org tree and the duty roster)")
def send_message(body: MessageIn, request: Request, session: DB, principal=Depends(require("notify.send"))) -> dict:
    _, dispatcher = runtime(request)
    session.commit()
    begin_write(session)
    mid = service.send(session, service.Message(**body.model_dump()), actor=principal.username, scope=principal.scope)
    session.commit()
    dispatcher.start().wake()
    return {"id": mid}


class MessageOut(BaseModel):
    id: int
    kind: str
    severity: str
    title: str
    body: str
    subject_kind: str | None
    subject_id: str | None
    link: str | None
    unit_code: str
    policy: str | None
    step: int
    status: str
    escalate_at: str | None
    acknowledged_at: str | None
    created_by: str
    created_at: str


class MessagePage(BaseModel):
    total: int
    items: list[MessageOut]


@router.get("/messages", response_model=MessagePage, summary="Messages of your scope, newest first")
def list_messages(session: DB, principal=Depends(require("notify.read")), kind: str | None = None,
                  status: str | None = Query(None, pattern="^(open|acknowledged|exhausted)$"),
                  limit: int = Query(50, ge=1, le=500), offset: NonNegInt64 = 0) -> dict:
    rows, total = service.list_messages(session, principal.scope, kind=kind, status=status, limit=limit, offset=offset)
    return {"total": total, "items": [service.message_dict(m) for m in rows]}


class RecipientOut(BaseModel):
    id: int
    name: str
    via: str
    step: int
    read_at: str | None
    acknowledged_at: str | None


class DeliveryOut(BaseModel):
    id: int
    recipient_id: int
    channel: str
    state: str
    attempts: int
    deferred: bool
    errors: list[dict]
    queued_at: str | None
    sent_at: str | None
    delivered_at: str | None
    read_at: str | None
    acknowledged_at: str | None
    next_attempt_at: str | None


class TimelineOut(BaseModel):
    id: int
    at: str
    what: str
    recipient_id: int | None
    channel: str | None
    step: int | None
    detail: dict


class MessageDetail(MessageOut):
    recipients: list[RecipientOut]
    deliveries: list[DeliveryOut]
    timeline: list[TimelineOut]


def _recipient_dict(r) -> dict:
    return {"id": r.id, "name": r.name, "via": r.via, "step": r.step,
            "read_at": r.read_at.isoformat() if r.read_at else None,
            "acknowledged_at": r.acknowledged_at.isoformat() if r.acknowledged_at else None}


@router.get("/messages/{message_id}", response_model=MessageDetail,
            summary="One message: recipients, each delivery's state and failures, and its timeline (escalation steps)")
def get_message(message_id: Id, session: DB, principal=Depends(require("notify.inbox"))) -> dict:
    m = service.get_message(session, principal.scope, message_id, principal.user_id)
    return {**service.message_dict(m), "recipients": [_recipient_dict(r) for r in service.recipients(session, m.id)],
            "deliveries": [service.delivery_dict(d) for d in service.deliveries(session, m.id)],
            "timeline": [service.timeline_dict(t) for t in service.timeline(session, m.id)]}


@router.get("/messages/{message_id}/timeline", response_model=list[TimelineOut], summary="A message's timeline")
def get_timeline(message_id: Id, session: DB, principal=Depends(require("notify.inbox")), after: NonNegInt64 = 0) -> list[dict]:
    m = service.get_message(session, principal.scope, message_id, principal.user_id)
    return [service.timeline_dict(t) for t in service.timeline(session, m.id, after)]


# ------------------------------------------------------------------------------------------------ inbox

class InboxItem(BaseModel):
    id: int
    message_id: int
    kind: str
    severity: str
    title: str
    body: str
    subject_kind: str | None
    subject_id: str | None
    link: str | None
    step: int
    created_at: str
    read_at: str | None
    acknowledged_at: str | None
    message_status: str


class InboxPage(BaseModel):
    total: int
    unread: int
    unacknowledged: int
    items: list[InboxItem]


@router.get("/inbox", response_model=InboxPage, summary="Your inbox, newest first, with the unread count")
def get_inbox(session: DB, principal=Depends(require("notify.inbox")), unacknowledged: bool = False,
              limit: int = Query(30, ge=1, le=200), offset: NonNegInt64 = 0) -> dict:
    rows, total = service.inbox(session, principal.user_id, unacknowledged=unacknowledged, limit=limit, offset=offset)
    return {"total": total, **service.counts(session, principal.user_id), "items": [service.inbox_dict(r, m) for r, m in rows]}


class Counts(BaseModel):
    unread: int
    unacknowledged: int


@router.get("/inbox/count", response_model=Counts, summary="Unread and unacknowledged messages in your inbox")
def inbox_count(session: DB, principal=Depends(require("notify.inbox"))) -> dict:
    return service.counts(session, principal.user_id)


class AckIn(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


def _receipt(session, principal, recipient_id: int, fn, **kw) -> dict:
    session.commit()
    begin_write(session)
    r = fn(session, principal.user_id, recipient_id, **kw)
    session.commit()
    m = service.get_message(session, principal.scope, r.message_id, principal.user_id)
    return service.inbox_dict(r, m)


@router.post("/inbox/{recipient_id}/acknowledge", response_model=InboxItem,
             summary="Acknowledge a message addressed to you (stops its escalation)")
def acknowledge(recipient_id: Id, session: DB, body: AckIn | None = None, principal=Depends(require("notify.inbox"))) -> dict:
    return _receipt(session, principal, recipient_id, service.acknowledge, note=body.note if body else None)


@router.post("/inbox/{recipient_id}/read", response_model=InboxItem, summary="Mark a message addressed to you as read")
def read(recipient_id: Id, session: DB, principal=Depends(require("notify.inbox"))) -> dict:
    return _receipt(session, principal, recipient_id, service.mark_read)


class ReceiptIn(BaseModel):
    ids: list[Id] = Field(min_length=1, max_length=500)
    channel: str = "inapp"


class ReceiptOut(BaseModel):
    delivered: int


@router.post("/inbox/delivered", response_model=ReceiptOut,
             summary="Delivery receipts: your page or phone received these inbox entries")
def delivered(body: ReceiptIn, session: DB, principal=Depends(require("notify.inbox"))) -> dict:
    session.commit()
    begin_write(session)
    n = service.mark_delivered(session, principal.user_id, list(body.ids), body.channel)
    session.commit()
    return {"delivered": n}


@router.get("/inbox/stream", summary="Your inbox, live (Server-Sent Events): new messages, reads and acknowledgements")
async def inbox_stream(request: Request, ctx: Ctx, principal=Depends(require("notify.inbox")),
                       max_events: Annotated[NonNegInt64 | None, Query(ge=1)] = None,
                       timeout: float = Query(sse.MAX_SECONDS, gt=0, le=sse.MAX_SECONDS)):
    hub, _ = runtime(request)
    ctx.bus.ensure_started()

    def person() -> int | None:
        with ctx.sessions() as s:
            return service.caller_keys(s, principal.user_id)[1]

    person_id = await run_in_threadpool(person)
    sub = hub.subscribe(principal.user_id, person_id)

    def event(data: dict) -> sse.Event:
        return sse.Event(data, data.get("event", "message"))

    return sse.stream(request, sse.queued(sub[1], event), seconds=timeout, max_events=max_events,
                      first=[sse.Event({"event": "ready"}, "ready")],
                      last=lambda e: e.event == "overflow", on_close=lambda: hub.unsubscribe(sub))


# ------------------------------------------------------------------------------------------ preferences

class PreferencesIn(BaseModel):
    channels: list[str] = Field(min_length=1, max_length=7)
    quiet_start: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    quiet_end: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class PreferencesOut(BaseModel):
    channels: list[str]
    quiet_start: str | None
    quiet_end: str | None
    configured: dict[str, bool]


def _my_person(session, principal) -> int:
    person_id = service.caller_keys(session, principal.user_id)[1]
    if person_id is None:
        raise NotFound("your account is not linked to a person: preferences belong to people")
    return person_id


@router.get("/preferences", response_model=PreferencesOut, summary="Your channels and quiet hours")
def get_preferences(request: Request, session: DB, principal=Depends(require("notify.inbox"))) -> dict:
    settings = request.app.state.ctx.settings
    pref = service.get_preferences(session, _my_person(session, principal))
    return {"channels": pref.channels if pref else list(settings.notify_default_channels),
            "quiet_start": pref.quiet_start if pref else None, "quiet_end": pref.quiet_end if pref else None,
            "configured": {c: service.configured(c, settings) for c in service.cat.CHANNELS}}


@router.put("/preferences", response_model=PreferencesOut, summary="Set your channels and quiet hours (a red warning overrides them)")
def put_preferences(body: PreferencesIn, request: Request, session: DB, principal=Depends(require("notify.inbox"))) -> dict:
    session.commit()
    begin_write(session)
    service.set_preferences(session, _my_person(session, principal), body.channels, body.quiet_start, body.quiet_end)
    session.commit()
    return get_preferences(request, session, principal)


# -------------------------------------------------------------------------------------------- Web Push

class VapidOut(BaseModel):
    public_key: str


@router.get("/webpush/key", response_model=VapidOut, summary="The VAPID application server key to subscribe with")
def vapid_key(ctx: Ctx, principal=Depends(require("notify.inbox"))) -> dict:
    return {"public_key": channels.vapid_public_key(ctx.settings)}


class PushKeys(BaseModel):
    p256dh: str = Field(min_length=20, max_length=200)
    auth: str = Field(min_length=8, max_length=100)


class PushIn(BaseModel):
    endpoint: str = Field(min_length=10, max_length=2000)
    keys: PushKeys


class PushOut(BaseModel):
    id: int


@router.post("/webpush/subscriptions", status_code=201, response_model=PushOut,
             summary="Register this browser's push subscription for your messages")
def subscribe_push(body: PushIn, session: DB, principal=Depends(require("notify.inbox"))) -> dict:
    session.commit()
    begin_write(session)
    sub = service.add_push_subscription(session, principal.user_id, body.endpoint, body.keys.p256dh, body.keys.auth)
    session.commit()
    return {"id": sub.id}


@router.delete("/webpush/subscriptions/{subscription_id}", status_code=204, summary="Remove one of your push subscriptions")
def unsubscribe_push(subscription_id: Id, session: DB, principal=Depends(require("notify.inbox"))) -> None:
    from cityops.notify.models import PushSubscription

    sub = session.get(PushSubscription, subscription_id)
    if sub is None or sub.user_id != principal.user_id:
        raise NotFound(f"push subscription {subscription_id} is not one of yours")
    session.delete(sub)
    session.commit()

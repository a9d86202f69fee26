"""Notifications (通知与回执): the one service every capability uses to tell people something.

Public API (callers commit; nothing is handed to a channel before the commit)::

    from cityops.notify.service import Message, send
    message_id = send(session, Message(
        kind="warning.red",              # selects the escalation policy (policies/*.toml) unless policy= is given
        severity="red",                  # info | blue | yellow | orange | red (red overrides quiet hours)
        title="老沟湾 红色预警", body="…",
        subject_kind="warning", subject_id="17", link="/warning/17",
        unit_code="500154107",           # where it belongs: scope, and what relative addresses start from
        to=["post:village_cadre@village", "notify:区长", "person:42"],
        channels=None,                   # None: the policy step's channels, else the person's preferences
        dedup_key="warning:17",          # the same key again returns the first message's id, sends nothing
    ), actor="system")

``send`` writes the message, its recipients (the inbox) and one delivery per recipient and channel (the outbox,
unique per message + recipient + channel) and publishes ``notification.queued`` in the caller's transaction. The
dispatcher (``dispatch.py``; the process holding the bus lease) hands the deliveries to their channels after the
commit and retries failures with back-off; ``escalate_due`` runs as the bus timer ``notify.escalate``. ``acknowledge``, ``mark_read`` and
``mark_delivered`` are the recipient's receipts; ``timeline`` is everything that happened to a message.

``strict=False`` (capabilities reacting to events): addresses that name nobody are put on the timeline instead of
failing the sender's transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import publish
from cityops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from cityops.core.settings import Settings
from cityops.core.storage import storage_of
from cityops.core.types import utcnow
from cityops.identity.models import User
from cityops.identity.scope import Scope
from cityops.notify import catalogue as cat
from cityops.notify.manifest import NotificationChanged, NotificationQueued
from cityops.notify.models import Delivery, Message as MessageRow, Preference, PushSubscription, Recipient, TimelineEntry
from cityops.notify.resolve import Target, people_by_id, resolve
from cityops.org.models import Person, Unit

log = logging.getLogger("cityops.notify")

SUBJECT_KINDS = ("case", "incident", "warning", "task", "indicator", "directive", "alarm", "breach")
#: Channels held back by quiet hours (in-app and e-mail wait silently in their boxes anyway).
INTRUSIVE = ("webpush", "sms", "dingtalk", "wecom", "feishu")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.]*$")
    severity: str = "info"
    title: str = Field(min_length=1, max_length=300)
    body: str = Field(default="", max_length=8000)
    subject_kind: str | None = None
    subject_id: str | None = Field(default=None, max_length=64)
    link: str | None = Field(default=None, max_length=500)
    unit_code: str = Field(min_length=1, max_length=32)
    to: list[str] = Field(default_factory=list, max_length=500)
    channels: list[str] | None = None
    #: A policy key; None = the policy of ``kind`` (if any); "" = no escalation.
    policy: str | None = None
    dedup_key: str | None = Field(default=None, max_length=200)
    data: dict = Field(default_factory=dict)

    @field_validator("severity")
    @classmethod
    def _severity(cls, v: str) -> str:
        if v not in cat.SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(cat.SEVERITIES)}")
        return v

    @field_validator("subject_kind")
    @classmethod
    def _subject(cls, v):
        if v is not None and v not in SUBJECT_KINDS:
            raise ValueError(f"subject_kind must be one of {', '.join(SUBJECT_KINDS)}")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v):
        if v is None:
            return v
        unknown = [c for c in v if c not in cat.CHANNELS]
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; known: {', '.join(cat.CHANNELS)}")
        return list(dict.fromkeys(v))

    @field_validator("to")
    @classmethod
    def _to(cls, v):
        problems = [p for a in v if (p := cat.address_problem(a)) or a == "message"]
        if problems:
            raise ValueError("; ".join(str(p) if p else "'message' is for policies" for p in problems))
        return v


# ----------------------------------------------------------------------------------------------- set-up

class _Config:
    settings: Settings = Settings.model_construct(**{k: f.default for k, f in Settings.model_fields.items()
                                                     if k.startswith("notify_")})
    catalogue: cat.Catalogue | None = None


def configure(settings: Settings) -> cat.Catalogue:
    """Load and validate the policy catalogue (start-up: a bad file stops it) and keep the settings the
    domain reads (default channels, which channels are configured, the time zone of quiet hours)."""
    _Config.settings = settings
    _Config.catalogue = cat.catalogue(settings.notify_policies_dir)
    return _Config.catalogue


def catalogue() -> cat.Catalogue:
    if _Config.catalogue is None:
        _Config.catalogue = cat.catalogue(_Config.settings.notify_policies_dir)
    return _Config.catalogue


def configured(channel: str, settings: Settings | None = None) -> bool:
    s = settings or _Config.settings
    if channel in ("inapp", "webpush"):
        return True
    if channel == "email":
        return bool(s.notify_smtp_host)
    return channel in (s.notify_apprise_urls or {})


# ------------------------------------------------------------------------------------------------- send

def send(session: Session, message: Message, *, actor: str = "system", scope: Scope | None = None,
         strict: bool = True, now: datetime | None = None) -> int:
    """Queue ``message`` (see the module docstring); returns the message id. ``scope``: the sender's, when a
    person sends (the unit and every person reached must lie in it)."""
    now = now or utcnow()
    if message.dedup_key:
        existing = session.scalar(select(MessageRow.id).where(MessageRow.dedup_key == message.dedup_key))
        if existing is not None:
            return existing
    unit = session.scalar(select(Unit).where(Unit.code == message.unit_code))
    if unit is None:
        raise InvalidInput(f"unknown unit code {message.unit_code!r}", {"field": "unit_code"})
    if scope is not None:
        scope.require_covers(unit.path, f"unit {unit.code}")
    catalogue_ = catalogue()
    policy = None
    if message.policy:
        policy = catalogue_.policies.get(message.policy)
        if policy is None:
            raise InvalidInput(f"unknown escalation policy {message.policy!r}; known: {', '.join(sorted(catalogue_.policies))}",
                               {"field": "policy"})
    elif message.policy is None:
        policy = catalogue_.policy_for(message.kind)
    first = policy.steps[0] if policy else None
    addresses = list(message.to) + ([a for a in first.to if a != "message"] if first else [])
    if not addresses:
        raise InvalidInput("a message needs at least one address in 'to'", {"field": "to"})
    found, unresolved = _resolve_all(session, addresses, unit, now)
    if unresolved and strict:
        raise InvalidInput(f"no one found for {', '.join(unresolved)}", {"field": "to", "unresolved": unresolved})
    if scope is not None:
        outside = [t.name for t, _ in found if not scope.covers(t.unit_path)]
        if outside:
            raise Forbidden(f"recipients outside your scope: {', '.join(outside[:10])}")
    row = MessageRow(kind=message.kind, severity=message.severity, title=message.title, body=message.body,
                     subject_kind=message.subject_kind, subject_id=message.subject_id, link=message.link,
                     unit_code=unit.code, unit_path=unit.path, addresses=list(message.to), channels=message.channels,
                     policy=policy.key if policy else None, policy_version=policy.version if policy else None,
                     step=0, escalate_at=now + timedelta(minutes=first.wait_minutes) if first and len(policy.steps) > 1 else None,
                     status="open", dedup_key=message.dedup_key, data=message.data, created_by=actor, created_at=now)
    if policy and len(policy.steps) == 1:
        row.escalate_at = now + timedelta(minutes=first.wait_minutes)  # then: exhausted, on the timeline
    session.add(row)
    session.flush()
    _timeline(session, row.id, "created", now, step=0,
              detail={"by": actor, "to": list(message.to), "policy": row.policy})
    for address in unresolved:
        _timeline(session, row.id, "unresolved", now, step=0, detail={"address": address})
    channels = message.channels or (first.channels if first else None)
    _reach(session, row, found, channels, step=0, now=now)
    return row.id


def _resolve_all(session: Session, addresses: list[str], unit: Unit, at: datetime) -> tuple[list[tuple[Target, str]], list[str]]:
    found: dict[str, tuple[Target, str]] = {}
    unresolved = []
    people = people_by_id(session, [int(a[7:]) for a in addresses if a.startswith("person:") and a[7:].isdigit()])
    for address in addresses:
        if address.startswith("person:") and address[7:].isdigit():
            person = people.get(int(address[7:]))
            targets = [person] if person is not None else []
        else:
            targets = resolve(session, catalogue(), address, unit, at)
        if not targets:
            unresolved.append(address)
        for t in targets:
            found.setdefault(t.key, (t, address))
    return list(found.values()), unresolved


@dataclass(frozen=True)
class Reached:
    """A recipient just added to a message."""

    id: int
    person_id: int | None
    user_id: int | None


def _reach(session: Session, row: MessageRow, found: list[tuple[Target, str]], channels: list[str] | None, *,
           step: int, now: datetime) -> list[Reached]:
    """Recipients (new ones only) and their deliveries, and the ``notification.queued`` event. Written with one
    multi-row INSERT per table: an ORM object per row was most of the time a directive to 4,500 people took."""
    have = set(session.scalars(select(Recipient.key).where(Recipient.message_id == row.id)))
    new = [(target, via) for target, via in found if target.key not in have]
    if not new:
        return []
    ids = storage_of(session).insert_rows(session, Recipient, [
        {"message_id": row.id, "key": t.key, "person_id": t.person_id, "user_id": t.user_id, "name": t.name,
         "via": via, "step": step, "unit_path": t.unit_path, "created_at": now} for t, via in new], returning_ids=True)
    storage = storage_of(session)
    prefs = {p.person_id: p for p in session.scalars(select(Preference).where(
        storage.in_ids(Preference.person_id, [t.person_id for t, _ in new if t.person_id is not None])))}
    settings = _Config.settings
    # Whose phones can take a Web Push at all: a person without a live subscription has the delivery skipped now,
    # as one without an e-mail address has, rather than queued for the dispatcher to fail it.
    pushable = {(p.person_id, p.user_id) for p in push_subscriptions_of(session, [(t.person_id, t.user_id) for t, _ in new])}
    pushable_people = {p for p, _ in pushable if p is not None}
    pushable_users = {u for _, u in pushable if u is not None}
    deliveries, entries = [], []
    for recipient_id, (target, _via) in zip(ids, new):
        pref = prefs.get(target.person_id)
        if target.person_id is None and target.user_id is None:  # outside the org: the channel its address names
            chosen = ["email"] if target.email else ["sms"]
        else:
            chosen = _channels_for(channels, pref, row.severity, settings)
        quiet_until = _quiet_until(pref, now, settings) if row.severity != "red" else None
        for channel in chosen:
            d = {"message_id": row.id, "recipient_id": recipient_id, "channel": channel, "target": None,
                 "idem_key": f"{row.id}:{target.key}:{channel}", "state": "queued", "attempts": 0,
                 "next_attempt_at": now, "errors": [], "deferred": False, "queued_at": now}
            problem = None
            if not configured(channel, settings):
                problem = f"channel {channel} is not configured"
            elif channel == "email":
                d["target"] = target.email
                problem = None if target.email else "no e-mail address"
            elif channel in ("sms", "dingtalk"):
                d["target"] = target.phone
                problem = None if target.phone else "no phone number"
            elif channel == "webpush":
                d["target"] = target.name
                problem = None if (target.person_id in pushable_people or target.user_id in pushable_users) \
                    else "no push subscription on this person's phones"
            else:
                d["target"] = "inbox" if channel == "inapp" else target.name
            if problem:
                d["state"], d["errors"] = "skipped", [{"at": now.isoformat(), "error": problem}]
                what, detail = "skipped", {"reason": problem}
            elif quiet_until is not None and channel in INTRUSIVE:
                d["next_attempt_at"], d["deferred"] = quiet_until, True
                what, detail = "deferred", {"until": quiet_until.isoformat()}
            else:
                what, detail = "queued", {}
            deliveries.append(d)
            entries.append({"message_id": row.id, "what": what, "at": now, "recipient_id": recipient_id,
                            "channel": channel, "step": step, "detail": detail})
    if deliveries:
        storage.insert_rows(session, Delivery, deliveries)
        storage.insert_rows(session, TimelineEntry, entries)
    reached = [Reached(i, t.person_id, t.user_id) for i, (t, _) in zip(ids, new)]
    publish(session, NotificationQueued(
        message_id=row.id, kind=row.kind, severity=row.severity, title=row.title, unit_path=row.unit_path, step=step,
        recipients=[{"recipient_id": r.id, "person_id": r.person_id, "user_id": r.user_id} for r in reached]))
    return reached


def _channels_for(channels: list[str] | None, pref: Preference | None, severity: str, settings: Settings) -> list[str]:
    base = list(channels or (pref.channels if pref and pref.channels else None) or settings.notify_default_channels)
    if pref and pref.channels and channels and severity != "red":
        base = [c for c in base if c in pref.channels]  # the person's choice, unless it is a red warning
    if "inapp" not in base:
        base.insert(0, "inapp")  # the inbox always has it: that is where it is acknowledged
    return base


def _parse_hm(value: str) -> time:
    h, m = value.split(":")
    return time(int(h), int(m))


def _quiet_until(pref: Preference | None, now: datetime, settings: Settings) -> datetime | None:
    """The end of the person's quiet hours when ``now`` lies inside them, else None."""
    if pref is None or not pref.quiet_start or not pref.quiet_end:
        return None
    tz = ZoneInfo(settings.notify_timezone)
    local = now.astimezone(tz)
    start, end = _parse_hm(pref.quiet_start), _parse_hm(pref.quiet_end)
    t = local.time()
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return None
    until = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if until <= local:
        until += timedelta(days=1)
    return until.astimezone(now.tzinfo or ZoneInfo("UTC"))


def _timeline(session: Session, message_id: int, what: str, at: datetime, *, recipient_id: int | None = None,
              channel: str | None = None, step: int | None = None, detail: dict | None = None) -> None:
    session.add(TimelineEntry(message_id=message_id, what=what, at=at, recipient_id=recipient_id, channel=channel,
                              step=step, detail=detail or {}))


# --------------------------------------------------------------------------------------------- escalation

def escalate_due(session: Session, now: datetime | None = None, limit: int = 100) -> list[int]:
    """Run every escalation that is due (the bus timer ``notify.escalate``, once per deployment): the next step of each
    open message whose wait ran out, or ``exhausted`` after the last. Returns the message ids moved."""
    now = now or utcnow()
    ids = list(session.scalars(select(MessageRow.id).where(MessageRow.status == "open", MessageRow.escalate_at.is_not(None),
                                                           MessageRow.escalate_at <= now).order_by(MessageRow.escalate_at).limit(limit)))
    moved = []
    for mid in ids:
        row = session.get(MessageRow, mid)
        if row is None or row.status != "open" or row.escalate_at is None or row.escalate_at > now:
            continue
        policy = catalogue().policies.get(row.policy or "")
        nxt = row.step + 1
        if policy is None or nxt >= len(policy.steps):
            row.status, row.escalate_at = "exhausted", None
            _timeline(session, row.id, "exhausted", now, step=row.step,
                      detail={"policy": row.policy, "reason": "nobody acknowledged and the policy has no further step"})
            moved.append(row.id)
            continue
        step = policy.steps[nxt]
        unit = session.scalar(select(Unit).where(Unit.code == row.unit_code))
        addresses = [a for a in step.to if a != "message"] or list(row.addresses)
        found, unresolved = _resolve_all(session, addresses, unit, now)
        row.step = nxt
        row.escalate_at = now + timedelta(minutes=step.wait_minutes)
        _timeline(session, row.id, "escalated", now, step=nxt,
                  detail={"to": addresses, "channels": step.channels, "wait_minutes": step.wait_minutes,
                          "unresolved": unresolved})
        added = _reach(session, row, found, step.channels, step=nxt, now=now)
        if not added:  # everyone named was already reached: remind them on this step's channels
            _remind(session, row, step.channels, nxt, now)
        moved.append(row.id)
    return moved


def _remind(session: Session, row: MessageRow, channels: list[str], step: int, now: datetime) -> None:
    """Queue this step's channels again for the recipients who have not acknowledged (new idempotency keys)."""
    settings = _Config.settings
    recipients = list(session.scalars(select(Recipient).where(Recipient.message_id == row.id, Recipient.acknowledged_at.is_(None))))
    for r in recipients:
        for channel in channels:
            if channel == "inapp" or not configured(channel, settings):
                continue
            old = session.scalar(select(Delivery).where(Delivery.recipient_id == r.id, Delivery.channel == channel)
                                 .order_by(Delivery.id.desc()).limit(1))
            if old is None or old.state == "skipped":
                continue
            session.add(Delivery(message_id=row.id, recipient_id=r.id, channel=channel, target=old.target,
                                 idem_key=f"{row.id}:{r.key}:{channel}:step{step}", state="queued", next_attempt_at=now,
                                 errors=[], queued_at=now))
            _timeline(session, row.id, "reminded", now, recipient_id=r.id, channel=channel, step=step)


# ------------------------------------------------------------------------------------------------ receipts

def caller_keys(session: Session, user_id: int) -> tuple[int, int | None]:
    person_id = session.scalar(select(User.person_id).where(User.id == user_id))
    return user_id, person_id


def _mine(user_id: int, person_id: int | None):
    return or_(Recipient.user_id == user_id, and_(Recipient.person_id.is_not(None), Recipient.person_id == person_id))


def _own_recipient(session: Session, user_id: int, recipient_id: int, *, for_update: bool = False) -> Recipient:
    r = session.get(Recipient, recipient_id)
    if r is None:
        raise NotFound(f"inbox entry {recipient_id} does not exist")
    _, person_id = caller_keys(session, user_id)
    if not (r.user_id == user_id or (person_id is not None and r.person_id == person_id)):
        raise Forbidden(f"inbox entry {recipient_id} is not addressed to you: only its recipient reads or acknowledges it")
    return r


def acknowledge(session: Session, user_id: int, recipient_id: int, *, note: str | None = None,
                now: datetime | None = None) -> Recipient:
    """The recipient confirms (确认收到): stops the message's escalation. Acknowledging again changes nothing."""
    now = now or utcnow()
    r = _own_recipient(session, user_id, recipient_id)
    if r.acknowledged_at is not None:
        return r
    r.acknowledged_at = now
    r.read_at = r.read_at or now
    session.execute(update(Delivery).where(Delivery.recipient_id == r.id, Delivery.state.in_(("sent", "delivered", "read")))
                    .values(state="acknowledged", acknowledged_at=now))
    row = session.get(MessageRow, r.message_id)
    if row.status == "open":
        row.status, row.acknowledged_at, row.acknowledged_by, row.escalate_at = "acknowledged", now, r.id, None
    _timeline(session, r.message_id, "acknowledged", now, recipient_id=r.id, step=row.step,
              detail={"by": r.name, **({"note": note} if note else {})})
    audit.record(session, audit.Actor(f"user:{user_id}", user_id), "notify.acknowledge", "notify_recipient", str(r.id),
                 after={"message_id": r.message_id, "at": now.isoformat()}, unit_path=r.unit_path)
    publish(session, NotificationChanged(message_id=r.message_id, recipient_id=r.id, person_id=r.person_id,
                                         user_id=r.user_id, change="acknowledged", unit_path=row.unit_path))
    return r


def mark_read(session: Session, user_id: int, recipient_id: int, *, now: datetime | None = None) -> Recipient:
    now = now or utcnow()
    r = _own_recipient(session, user_id, recipient_id)
    if r.read_at is not None:
        return r
    r.read_at = now
    session.execute(update(Delivery).where(Delivery.recipient_id == r.id, Delivery.channel == "inapp",
                                           Delivery.state.in_(("sent", "delivered")))
                    .values(state="read", read_at=now))
    _timeline(session, r.message_id, "read", now, recipient_id=r.id, channel="inapp")
    row = session.get(MessageRow, r.message_id)
    publish(session, NotificationChanged(message_id=r.message_id, recipient_id=r.id, person_id=r.person_id,
                                         user_id=r.user_id, change="read", unit_path=row.unit_path))
    return r


def mark_delivered(session: Session, user_id: int, recipient_ids: list[int], channel: str = "inapp",
                   now: datetime | None = None) -> int:
    """The recipient's device has it (the inbox page or the phone's service worker received it)."""
    if channel not in ("inapp", "webpush"):
        raise InvalidInput(f"delivery receipts come from inapp or webpush, not {channel!r}")
    now = now or utcnow()
    uid, person_id = caller_keys(session, user_id)
    mine = set(session.scalars(select(Recipient.id).where(Recipient.id.in_(recipient_ids), _mine(uid, person_id))))
    missing = sorted(set(recipient_ids) - mine)
    if missing:
        raise Forbidden(f"inbox entries {missing[:20]} are not addressed to you")
    done = 0
    for d in session.scalars(select(Delivery).where(Delivery.recipient_id.in_(mine), Delivery.channel == channel,
                                                    Delivery.state == "sent")):
        d.state, d.delivered_at = "delivered", now
        _timeline(session, d.message_id, "delivered", now, recipient_id=d.recipient_id, channel=channel)
        done += 1
    return done


# --------------------------------------------------------------------------------------------- reading

def inbox(session: Session, user_id: int, *, unacknowledged: bool = False, after: int = 0, limit: int = 50,
          offset: int = 0) -> tuple[list[tuple[Recipient, MessageRow]], int]:
    uid, person_id = caller_keys(session, user_id)
    q = select(Recipient, MessageRow).join(MessageRow, MessageRow.id == Recipient.message_id).where(_mine(uid, person_id))
    if unacknowledged:
        q = q.where(Recipient.acknowledged_at.is_(None))
    if after:
        q = q.where(Recipient.id > after)
    total = session.scalar(select(func.count()).select_from(q.subquery()))
    rows = session.execute(q.order_by(Recipient.id.desc()).limit(limit).offset(offset)).all()
    return [(r, m) for r, m in rows], total


def counts(session: Session, user_id: int) -> dict:
    uid, person_id = caller_keys(session, user_id)
    base = select(func.count()).select_from(Recipient).where(_mine(uid, person_id))
    return {"unread": session.scalar(base.where(Recipient.read_at.is_(None))),
            "unacknowledged": session.scalar(base.where(Recipient.acknowledged_at.is_(None)))}


def get_message(session: Session, scope: Scope, message_id: int, user_id: int | None = None) -> MessageRow:
    row = session.get(MessageRow, message_id)
    if row is None:
        raise NotFound(f"message {message_id} does not exist")
    if not scope.covers(row.unit_path):
        mine = False
        if user_id is not None:
            uid, person_id = caller_keys(session, user_id)
            mine = session.scalar(select(func.count()).select_from(Recipient)
                                  .where(Recipient.message_id == row.id, _mine(uid, person_id))) > 0
        if not mine:
            raise NotFound(f"message {message_id} does not exist")  # out of scope: not revealed
    return row


def list_messages(session: Session, scope: Scope, *, kind: str | None = None, status: str | None = None,
                  limit: int = 50, offset: int = 0) -> tuple[list[MessageRow], int]:
    q = select(MessageRow).where(scope.covers_clause(MessageRow.unit_path))
    if kind:
        q = q.where(MessageRow.kind == kind)
    if status:
        q = q.where(MessageRow.status == status)
    total = session.scalar(select(func.count()).select_from(q.subquery()))
    return list(session.scalars(q.order_by(MessageRow.id.desc()).limit(limit).offset(offset))), total


def timeline(session: Session, message_id: int, after: int = 0) -> list[TimelineEntry]:
    return list(session.scalars(select(TimelineEntry).where(TimelineEntry.message_id == message_id, TimelineEntry.id > after)
                                .order_by(TimelineEntry.id)))


def recipients(session: Session, message_id: int) -> list[Recipient]:
    return list(session.scalars(select(Recipient).where(Recipient.message_id == message_id).order_by(Recipient.id)))


def deliveries(session: Session, message_id: int) -> list[Delivery]:
    return list(session.scalars(select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.id)))


def message_dict(m: MessageRow) -> dict:
    return {"id": m.id, "kind": m.kind, "severity": m.severity, "title": m.title, "body": m.body,
            "subject_kind": m.subject_kind, "subject_id": m.subject_id, "link": m.link, "unit_code": m.unit_code,
            "policy": m.policy, "step": m.step, "status": m.status,
            "escalate_at": m.escalate_at.isoformat() if m.escalate_at else None,
            "acknowledged_at": m.acknowledged_at.isoformat() if m.acknowledged_at else None,
            "created_by": m.created_by, "created_at": m.created_at.isoformat()}


def inbox_dict(r: Recipient, m: MessageRow) -> dict:
    return {"id": r.id, "message_id": m.id, "kind": m.kind, "severity": m.severity, "title": m.title, "body": m.body,
            "subject_kind": m.subject_kind, "subject_id": m.subject_id, "link": m.link, "step": r.step,
            "created_at": r.created_at.isoformat(), "read_at": r.read_at.isoformat() if r.read_at else None,
            "acknowledged_at": r.acknowledged_at.isoformat() if r.acknowledged_at else None,
            "message_status": m.status}


def _iso(v):
    return v.isoformat() if v else None


def delivery_dict(d: Delivery) -> dict:
    return {"id": d.id, "recipient_id": d.recipient_id, "channel": d.channel, "state": d.state, "attempts": d.attempts,
            "deferred": d.deferred, "errors": d.errors, "queued_at": _iso(d.queued_at), "sent_at": _iso(d.sent_at),
            "delivered_at": _iso(d.delivered_at), "read_at": _iso(d.read_at), "acknowledged_at": _iso(d.acknowledged_at),
            "next_attempt_at": _iso(d.next_attempt_at)}


def timeline_dict(t: TimelineEntry) -> dict:
    return {"id": t.id, "at": t.at.isoformat(), "what": t.what, "recipient_id": t.recipient_id, "channel": t.channel,
            "step": t.step, "detail": t.detail}


# ------------------------------------------------------------------------------------------ preferences

def get_preferences(session: Session, person_id: int) -> Preference | None:
    return session.get(Preference, person_id)


def set_preferences(session: Session, person_id: int, channels: list[str], quiet_start: str | None,
                    quiet_end: str | None) -> Preference:
    unknown = [c for c in channels if c not in cat.CHANNELS]
    if unknown:
        raise InvalidInput(f"unknown channel(s) {unknown}; known: {', '.join(cat.CHANNELS)}", {"field": "channels"})
    for name, v in (("quiet_start", quiet_start), ("quiet_end", quiet_end)):
        if v is not None:
            try:
                _parse_hm(v)
            except (ValueError, TypeError):
                raise InvalidInput(f"{name} must be HH:MM, not {v!r}", {"field": name}) from None
    if (quiet_start is None) != (quiet_end is None):
        raise InvalidInput("quiet hours need both quiet_start and quiet_end", {"field": "quiet_start"})
    if session.get(Person, person_id) is None:
        raise NotFound(f"person {person_id} does not exist")
    pref = session.get(Preference, person_id) or Preference(person_id=person_id)
    pref.channels, pref.quiet_start, pref.quiet_end, pref.updated_at = list(dict.fromkeys(channels)), quiet_start, quiet_end, utcnow()
    session.add(pref)
    return pref


def add_push_subscription(session: Session, user_id: int, endpoint: str, p256dh: str, auth: str) -> PushSubscription:
    if not endpoint.startswith(("https://", "http://")):
        raise InvalidInput("endpoint must be an http(s) URL", {"field": "endpoint"})
    _, person_id = caller_keys(session, user_id)
    sub = session.scalar(select(PushSubscription).where(PushSubscription.endpoint == endpoint))
    if sub is not None and sub.user_id != user_id:
        raise Conflict("this push endpoint belongs to another user")
    sub = sub or PushSubscription(user_id=user_id, endpoint=endpoint)
    sub.person_id, sub.p256dh, sub.auth, sub.gone_at = person_id, p256dh, auth, None
    session.add(sub)
    session.flush()
    return sub


def push_subscriptions_of(session: Session, pairs: list[tuple[int | None, int | None]]) -> list[PushSubscription]:
    """The live browsers of several (person id, user id) pairs at once."""
    persons = {p for p, _ in pairs if p is not None}
    users = {u for _, u in pairs if u is not None}
    if not persons and not users:
        return []
    storage = storage_of(session)
    return list(session.scalars(select(PushSubscription).where(
        or_(storage.in_ids(PushSubscription.person_id, persons), storage.in_ids(PushSubscription.user_id, users)),
        PushSubscription.gone_at.is_(None))))


def push_subscriptions(session: Session, person_id: int | None, user_id: int | None) -> list[PushSubscription]:
    cond = []
    if person_id is not None:
        cond.append(PushSubscription.person_id == person_id)
    if user_id is not None:
        cond.append(PushSubscription.user_id == user_id)
    if not cond:
        return []
    return list(session.scalars(select(PushSubscription).where(or_(*cond), PushSubscription.gone_at.is_(None))))

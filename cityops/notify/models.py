"""Tables of notifications (通知): messages, their recipients (the inbox), deliveries per recipient and channel
(the outbox the dispatcher works through), the timeline, people's preferences and Web Push subscriptions.

A message row and all its delivery rows are written in the sender's transaction: a notification exists if and
only if the change that caused it commits, and the dispatcher finds every queued delivery after a crash. Each
delivery is unique on ``idem_key`` = message + recipient + channel, so nothing is queued twice; the dispatcher
claims a delivery (commit) before handing it to its channel, and a claim whose holder died is taken again after
``claimed_until``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import JSONText, UTCDateTime, utcnow


class Message(Base):
    __tablename__ = "notify_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    #: info | blue | yellow | orange | red
    severity: Mapped[str] = mapped_column(Text, nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False, default="")
    #: What it is about: case | incident | warning | task | indicator | directive | alarm (and its id).
    subject_kind: Mapped[str | None] = mapped_column(Text)
    subject_id: Mapped[str | None] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text)
    unit_code: Mapped[str] = mapped_column(Text, nullable=False)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    #: The addresses it was sent to, as given (person:12, post:leader@township, …).
    addresses: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    channels: Mapped[list | None] = mapped_column(JSONText)
    #: Escalation policy (key and catalogue version) and where it stands.
    policy: Mapped[str | None] = mapped_column(Text)
    policy_version: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: When the next step fires unless someone acknowledged (NULL: no timer).
    escalate_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    #: open | acknowledged | exhausted (the policy ran out of steps with nobody acknowledging)
    status: Mapped[str] = mapped_column(Text, nullable=False, default="open", index=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[int | None] = mapped_column(Integer)  # recipient id
    #: The sender's idempotency key for the message (a redelivered event sends nothing new).
    dedup_key: Mapped[str | None] = mapped_column(Text, unique=True)
    data: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)
    created_by: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Recipient(Base):
    """One person (or a user without a person record) a message reached: the inbox entry."""

    __tablename__ = "notify_recipients"
    __table_args__ = (UniqueConstraint("message_id", "key", name="uq_notify_recipients"),
                      Index("ix_notify_recipients_person", "person_id", "id"),
                      Index("ix_notify_recipients_user", "user_id", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(Integer, ForeignKey("notify_messages.id", ondelete="CASCADE"), nullable=False, index=True)
    #: person:<id> or user:<id>
    key: Mapped[str] = mapped_column(Text, nullable=False)
    person_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    #: The address that reached this person and the escalation step it was added at.
    via: Mapped[str] = mapped_column(Text, nullable=False)
    step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    unit_path: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Delivery(Base):
    """One recipient on one channel: queued → sending → sent → delivered → read → acknowledged, or failed
    (retried with back-off until ``notify_max_attempts``, each failure's reason kept in ``errors``)."""

    __tablename__ = "notify_deliveries"
    __table_args__ = (Index("ix_notify_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(Integer, ForeignKey("notify_messages.id", ondelete="CASCADE"), nullable=False, index=True)
    recipient_id: Mapped[int] = mapped_column(Integer, ForeignKey("notify_recipients.id", ondelete="CASCADE"), nullable=False, index=True)
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    #: Where: an e-mail address, a phone number, a push endpoint id, "inbox".
    target: Mapped[str | None] = mapped_column(Text)
    idem_key: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    state: Mapped[str] = mapped_column(Text, nullable=False, default="queued")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    errors: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    #: Held back by quiet hours until next_attempt_at (shown on the timeline).
    deferred: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TimelineEntry(Base):
    """Everything that happened to a message, in order (append-only)."""

    __tablename__ = "notify_timeline"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(Integer, ForeignKey("notify_messages.id", ondelete="CASCADE"), nullable=False, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    #: queued, sent, delivered, failed, retry, deferred, read, acknowledged, escalated, exhausted
    what: Mapped[str] = mapped_column(Text, nullable=False)
    recipient_id: Mapped[int | None] = mapped_column(Integer)
    channel: Mapped[str | None] = mapped_column(Text)
    step: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict] = mapped_column(JSONText, nullable=False, default=dict)


class Preference(Base):
    """A person's channels (in order of preference) and quiet hours (local time of the duty calendar)."""

    __tablename__ = "notify_preferences"

    person_id: Mapped[int] = mapped_column(Integer, ForeignKey("people.id", ondelete="CASCADE"), primary_key=True)
    channels: Mapped[list] = mapped_column(JSONText, nullable=False, default=list)
    quiet_start: Mapped[str | None] = mapped_column(Text)  # "22:00"
    quiet_end: Mapped[str | None] = mapped_column(Text)  # "07:00"
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class PushSubscription(Base):
    """A browser's Web Push subscription (the phone page), for the signed-in user."""

    __tablename__ = "notify_push_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    person_id: Mapped[int | None] = mapped_column(Integer, index=True)
    endpoint: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    p256dh: Mapped[str] = mapped_column(Text, nullable=False)
    auth: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

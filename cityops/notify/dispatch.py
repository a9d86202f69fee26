"""The dispatcher (投递) and the live inbox (收件箱推送).

``Dispatcher``: one thread per process that works only while the process holds the bus's dispatch lease (so once
per deployment, however many workers serve). Each round it claims the due
deliveries (state ``queued``/``retry`` whose time came, or ``sending`` whose claim expired because the claimer
died) with a conditional UPDATE and commits the claim *before* handing them to their channels; the outcome of each
is committed after. A delivery is thus never handed over by two dispatchers at once, and one whose dispatcher
died mid-way is taken up again (at most that one hand-over repeats, under the same idempotency key: the e-mail's
Message-ID, the push Topic). Failures wait ``notify_retry_seconds · 2^(n-1)`` and fail for good after
``notify_max_attempts``, every reason kept. At most ``notify_batch`` deliveries are held per round.

``InboxHub``: fan-out of ``notification.queued`` / ``notification.changed`` (a broadcast subscription: every worker
hears every commit) to the inbox streams of the people they concern; bounded per subscriber, an ``overflow`` event
tells a client that fell behind to reload.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from cityops.core import sse
from cityops.core.bus import Envelope
from cityops.core.db import begin_write
from cityops.core.storage import storage_of
from cityops.core.types import utcnow
from cityops.notify import channels, service
from cityops.notify.models import Delivery, Message, PushSubscription, Recipient, TimelineEntry

log = logging.getLogger("cityops.notify.dispatch")


class Dispatcher:
    def __init__(self, bus, settings):
        self.bus = bus
        self.settings = settings
        self.sessions = bus.sessions
        self.wake_event = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="notify-send")
        self._lock = threading.Lock()
        self.rounds = 0

    def start(self) -> "Dispatcher":
        with self._lock:
            if self._thread is None:
                self.bus.ensure_started()
                self._thread = threading.Thread(target=self._run, name="notify-dispatch", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.wake_event.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wake(self, *_args) -> None:
        self.wake_event.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wake_event.wait(self.settings.notify_poll_seconds)
            self.wake_event.clear()
            if not self.bus.dispatching():
                continue
            try:
                while not self._stop.is_set() and self.round():
                    pass
            except Exception:  # noqa: BLE001 - the database went away: the next round tries again
                log.exception("notification dispatcher round failed")
                self._stop.wait(1.0)

    # -- one round
    def round(self) -> bool:
        """One batch of deliveries; True when there may be more. (Escalation is the bus timer
        ``notify.escalate``, cityops.wiring.timers.)"""
        self.rounds += 1
        now = utcnow()
        claimed = self.claim(now)
        if claimed:
            # The in-app inbox row is the delivery itself: handed over as claimed, without a trip through the pool.
            results = [(o, None) for o in claimed if o.channel == "inapp"]
            results += self._pool.map(self._send_one, [o for o in claimed if o.channel != "inapp"])
            self.record(results)
        return len(claimed) == self.settings.notify_batch

    def claim(self, now) -> list[channels.Outgoing]:
        """Claim up to ``notify_batch`` due deliveries in ONE conditional ``UPDATE … WHERE id IN (SELECT … LIMIT n)
        RETURNING`` (a SELECT of the ids, an UPDATE naming them and a SELECT of them back were three statements
        carrying a thousand ids each), then read the few messages of the batch and the recipients of the deliveries
        that leave the process (an in-app delivery needs neither: the inbox row is the delivery)."""
        s_ = self.settings
        due_now = or_(and_(Delivery.state.in_(("queued", "retry")), Delivery.next_attempt_at <= now),
                      and_(Delivery.state == "sending", Delivery.claimed_until < now))
        until = now + timedelta(seconds=s_.notify_send_timeout * 3 + 30)
        with self.sessions() as s:
            begin_write(s)
            due = select(Delivery.id).where(due_now).order_by(Delivery.id).limit(s_.notify_batch)
            claimed = s.execute(update(Delivery).where(Delivery.id.in_(due.scalar_subquery()), due_now)
                                .values(state="sending", attempts=Delivery.attempts + 1, claimed_until=until, deferred=False)
                                .returning(Delivery.id, Delivery.idem_key, Delivery.channel, Delivery.target,
                                           Delivery.message_id, Delivery.recipient_id)
                                .execution_options(synchronize_session=False)).all()
            if not claimed:
                s.rollback()
                return []
            messages = {m.id: m for m in s.execute(select(Message.id, Message.title, Message.body, Message.severity, Message.link)
                                                   .where(Message.id.in_({c.message_id for c in claimed})))}
            outside = [c.recipient_id for c in claimed if c.channel != "inapp"]
            people = {r.id: r for r in s.execute(select(Recipient.id, Recipient.name, Recipient.person_id, Recipient.user_id)
                                                 .where(storage_of(s).in_ids(Recipient.id, outside)))} if outside else {}
            # The browsers of every Web Push recipient of the batch in one query (one per delivery was most of a
            # large directive's claim).
            subs = service.push_subscriptions_of(s, [(people[c.recipient_id].person_id, people[c.recipient_id].user_id)
                                                     for c in claimed if c.channel == "webpush"])
            out = []
            for c in sorted(claimed, key=lambda c: c.id):
                m, r = messages[c.message_id], people.get(c.recipient_id)
                push = ()
                if c.channel == "webpush":
                    push = tuple((p.id, p.endpoint, p.p256dh, p.auth) for p in subs
                                 if (r.person_id is not None and p.person_id == r.person_id)
                                 or (r.user_id is not None and p.user_id == r.user_id))
                out.append(channels.Outgoing(delivery_id=c.id, idem_key=c.idem_key, channel=c.channel, target=c.target,
                                             name=r.name if r is not None else "", title=m.title, body=m.body,
                                             severity=m.severity, link=m.link, message_id=m.id, recipient_id=c.recipient_id,
                                             push=push))
            s.commit()  # the claim is durable before anything is handed over
        return out

    def _send_one(self, out: channels.Outgoing):
        try:
            gone = channels.send(out, self.settings)
            return out, (channels.SendError("", gone=gone) if gone else None)
        except channels.SendError as exc:
            return out, exc
        except Exception as exc:  # noqa: BLE001 - a channel's unexpected failure is a failed try, with its reason
            log.exception("channel %s failed", out.channel)
            return out, channels.SendError(f"{type(exc).__name__}: {exc}")

    def record(self, results) -> None:
        """The outcome of a batch: the handed-over ones in one UPDATE and one INSERT of their timeline entries (a
        statement per delivery was most of the time a large directive took to reach its channels), failures one by
        one with their reasons."""
        now = utcnow()
        s_ = self.settings
        with self.sessions() as s:
            begin_write(s)
            gone = [i for _, err in results if err is not None and not err.reason for i in err.gone]
            if gone:  # handed over; some of the person's browsers are gone
                s.execute(update(PushSubscription).where(PushSubscription.id.in_(gone)).values(gone_at=now))
            sent = [out.delivery_id for out, err in results if err is None or not err.reason]
            if sent:
                storage = storage_of(s)
                done = s.execute(update(Delivery).where(storage.in_ids(Delivery.id, sent), Delivery.state == "sending")
                                 .values(state="sent", sent_at=now, claimed_until=None)
                                 .returning(Delivery.message_id, Delivery.recipient_id, Delivery.channel, Delivery.attempts)
                                 .execution_options(synchronize_session=False)).all()
                storage.insert_rows(s, TimelineEntry, [
                    {"message_id": m, "at": now, "what": "sent", "recipient_id": r, "channel": c, "step": None,
                     "detail": {"attempt": a}} for m, r, c, a in done])
            failed = [(out, err) for out, err in results if err is not None and err.reason]
            found = {d.id: d for d in s.scalars(select(Delivery).where(Delivery.id.in_([o.delivery_id for o, _ in failed])))} if failed else {}
            for out, err in failed:
                d = found.get(out.delivery_id)
                if d is None or d.state != "sending":
                    continue
                d.errors = [*(d.errors or []), {"at": now.isoformat(), "attempt": d.attempts, "error": err.reason[:1000]}]
                d.claimed_until = None
                if err.gone:
                    s.execute(update(PushSubscription).where(PushSubscription.id.in_(err.gone)).values(gone_at=now))
                if err.permanent or d.attempts >= s_.notify_max_attempts:
                    d.state = "failed"
                    what = "failed"
                else:
                    d.state = "retry"
                    d.next_attempt_at = now + timedelta(seconds=s_.notify_retry_seconds * 2 ** (d.attempts - 1))
                    what = "retry"
                s.add(TimelineEntry(message_id=d.message_id, at=now, what=what, recipient_id=d.recipient_id,
                                    channel=d.channel, detail={"attempt": d.attempts, "error": err.reason[:1000],
                                                               **({"next_attempt_at": d.next_attempt_at.isoformat()} if what == "retry" else {})}))
            s.commit()


class InboxHub(sse.LiveHub):
    """Fan-out of inbox changes to the SSE subscribers they concern, per person and user (core.sse.LiveHub)."""

    def __init__(self, queue_size: int = 500):
        super().__init__(queue_size)

    def subscribe(self, user_id: int, person_id: int | None):
        return super().subscribe((user_id, person_id))

    def publish(self, env: Envelope) -> None:
        p = env.payload
        if env.name == "notification.queued":
            items = [(r.get("person_id"), r.get("user_id"), {"event": "message", "recipient_id": r["recipient_id"],
                                                             "message_id": p.message_id, "kind": p.kind, "severity": p.severity,
                                                             "title": p.title, "step": p.step})
                     for r in p.recipients]
        else:
            items = [(p.person_id, p.user_id, {"event": p.change, "recipient_id": p.recipient_id, "message_id": p.message_id})]
        for pid, uid, data in items:
            super().publish(data, lambda key, pid=pid, uid=uid: (uid is not None and uid == key[0])
                            or (pid is not None and pid == key[1]))

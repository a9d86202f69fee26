"""The NATS JetStream transport: several workers or hosts on one bus.

- **Relay.** The lease holder reads the outbox in order (as an in-process consumer would) and publishes each
  event to ``<stream>.<event name>`` with its id as ``Nats-Msg-Id``: a batch republished after a crash is
  dropped by the stream's de-duplication window. The relay's cursor moves only after JetStream acknowledged.
- **Durable consumers.** One JetStream pull consumer per (subscription, event type), named after them
  (nats-server 2.9 has one filter subject per consumer). An unordered subscription is pulled by every worker
  (JetStream gives each event to one of them); an ordered one only by the lease holder, so a risk point's
  levels are applied in the order they were decided (a dead holder's unacknowledged events come back to the
  next after ``bus_ack_wait_seconds``). A pull request is always outstanding and what has arrived is one batch (not
  a size to wait for), applied in one transaction with each event's processed record
  (runtime.apply_batch), committed, then acked. A failure is nak'ed with back-off; after ``bus_max_attempts``
  deliveries the event is written to ``bus_dead_letters`` and published to ``<stream>.dead.<consumer>`` with
  its error, and acked.
- **Broadcast.** Every worker subscribes (plain NATS, no queue group) to the stream's subjects, so live streams
  and caches in every worker hear every event.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading

from cityops.core.bus.events import Envelope
from cityops.core.bus.runtime import Subscription, apply, apply_batch, deliver_broadcast

log = logging.getLogger("cityops.bus.jetstream")


def encode(env: Envelope) -> bytes:
    return json.dumps({"id": env.id, "seq": env.seq, "tx": env.tx, "name": env.name, "version": env.version,
                       "occurred_ms": env.occurred_ms, "payload": env.data}, ensure_ascii=False).encode()


def decode(data: bytes) -> Envelope:
    d = json.loads(data)
    return Envelope(d["id"], d["seq"], d["tx"], d["name"], d["version"], occurred_ms=d["occurred_ms"], data=d["payload"])


def _durable_name(consumer: str, event_name: str) -> str:
    return f"{consumer}__{event_name}".replace(".", "_")


class JetStream:
    def __init__(self, bus, durable: list[Subscription], broadcast: list[Subscription]):
        self.bus, self.durable, self.broadcast = bus, durable, broadcast
        settings = bus.settings
        self.stream = settings.bus_stream
        self.prefix = settings.bus_stream.lower()
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._subs: list = []  # (Subscription, event name, pull subscription)
        self._tasks: list[asyncio.Task] = []
        self.nc = None
        self.js = None

    def subject(self, event_name: str) -> str:
        return f"{self.prefix}.{event_name}"

    # -- life cycle (called from the bus's thread)
    def start(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_forever, name="bus-jetstream", daemon=True)
        self._thread.start()
        self._call(self._connect(), timeout=30)

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            self._call(self._close(), timeout=10)
        except Exception:  # noqa: BLE001 - the server may be gone already
            log.exception("closing the JetStream connection")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def _call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
        from nats.js.errors import BadRequestError

        settings = self.bus.settings
        self.nc = await nats.connect(settings.nats_url, name=f"cityops-{self.bus.holder}", max_reconnect_attempts=-1)
        self.js = self.nc.jetstream()
        config = StreamConfig(name=self.stream, subjects=[f"{self.prefix}.>"], duplicate_window=120.0)
        try:
            await self.js.add_stream(config)
        except BadRequestError:  # exists with another configuration: bring it to ours
            await self.js.update_stream(config)
        for sub in self.durable:
            for event in sub.events:
                name = _durable_name(sub.consumer, event.name)
                psub = await self.js.pull_subscribe(
                    self.subject(event.name), durable=name, stream=self.stream,
                    config=ConsumerConfig(durable_name=name, ack_policy=AckPolicy.EXPLICIT, ack_wait=settings.bus_ack_wait_seconds,
                                          deliver_policy=DeliverPolicy.NEW, max_ack_pending=settings.bus_batch))
                self._subs.append((sub, event.name, psub))
                self._tasks.append(asyncio.create_task(self._consume(sub, psub, name)))
        if self.broadcast:
            await self.nc.subscribe(f"{self.prefix}.>", cb=self._heard, pending_msgs_limit=settings.bus_batch * 20)
        await self.nc.flush()

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None:
            await self.nc.close()

    # -- relay (the lease holder's reader thread)
    def relay_batch(self, batch: list[Envelope]) -> None:
        self._call(self._publish(batch), timeout=60)

    async def _publish(self, batch: list[Envelope]) -> None:
        acks = [self.js.publish(self.subject(env.name), encode(env), stream=self.stream, headers={"Nats-Msg-Id": env.id})
                for env in batch]
        await asyncio.gather(*acks)

    # -- durable consumers
    async def _consume(self, sub: Subscription, psub, durable: str) -> None:
        """Pull continuously and apply whatever has arrived as one batch.

        Not ``fetch``: nats-py's fetch, once a first message came on a waiting pull, waits for the rest of the
        requested batch (up to ``bus_batch``) or for the pull to expire — at 5,000 events/s that held a batch for
        ~100 ms, and at low rates up to the timeout. Here a pull request for up to ``bus_batch`` events is always
        outstanding (the next is sent when less than half of the requested events are still to come), and each
        round takes what is queued the moment the first event is there: the batch is what arrived while the previous
        one was being applied, not a size to wait for."""
        bus = self.bus
        batch = bus.settings.bus_batch
        expires = 1.0  # a pull lapses after this, so a worker that stops pulling (lease lost) stops receiving soon
        arrived_msgs: collections.deque = collections.deque()
        came = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def arrive(msg) -> None:
            arrived_msgs.append(msg)
            came.set()

        inbox = self.nc.new_inbox()
        nats_sub = await self.nc.subscribe(inbox, cb=arrive, pending_msgs_limit=4 * batch)
        pull_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{durable}"
        # Outstanding pull requests, oldest first (JetStream fills them in order): [events still to come, lapse time].
        # A request is counted until it is filled or its expiry passes here, whatever status messages arrive (a
        # count kept on them could believe in requests the server had dropped, and stop pulling until a timeout).
        requested: list[list] = []
        pulling = False
        try:
            while True:
                if sub.ordered and not bus._lease.is_set():  # ordered: only the lease holder pulls
                    pulling = False
                    requested.clear()
                    if not arrived_msgs:
                        await asyncio.sleep(0.2)
                        continue
                    # else: what a pull in flight brought is applied, as a fetch in flight was before
                else:
                    if sub.ordered and not pulling:
                        pulling = True
                        await self._after_takeover(sub, psub)
                    now = loop.time()
                    requested[:] = [r for r in requested if r[1] > now]
                    if sum(r[0] for r in requested) <= batch // 2:
                        want = batch - sum(r[0] for r in requested)
                        try:
                            await self.nc.publish(pull_subject, json.dumps({"batch": want, "expires": int(expires * 1e9)}).encode(),
                                                  reply=inbox)
                            requested.append([want, now + expires])
                        except asyncio.CancelledError:
                            raise
                        except Exception:  # noqa: BLE001 - the connection is re-established by the client
                            log.exception("JetStream pull for %s failed", sub.consumer)
                            await asyncio.sleep(1.0)
                            continue
                # Wait for an event until the oldest request lapses (then ask again).
                until = min((r[1] for r in requested), default=loop.time() + 0.2)
                if not arrived_msgs:
                    came.clear()
                    try:
                        await asyncio.wait_for(came.wait(), max(0.01, until - loop.time()))
                    except asyncio.TimeoutError:
                        continue
                arrived = [arrived_msgs.popleft() for _ in range(min(batch, len(arrived_msgs)))]
                msgs = []
                for msg in arrived:
                    if msg.headers and msg.headers.get("Status"):
                        continue  # 408 a pull lapsed, 409 ended, 100 heartbeat: no event (lapses are counted above)
                    msgs.append(msg)
                    if requested:
                        requested[0][0] -= 1
                        if requested[0][0] <= 0:
                            requested.pop(0)
                if msgs:
                    await self._apply(sub, msgs)
        finally:
            await nats_sub.unsubscribe()

    async def _apply(self, sub: Subscription, msgs: list) -> None:
        """One batch in one transaction, committed, then acknowledged; a batch with a failing event one by one."""
        bus = self.bus
        envs = [decode(m.data) for m in msgs]
        if await asyncio.to_thread(apply_batch, bus, sub, envs, advance=False):
            for msg in msgs:
                await msg.ack()
            return
        for msg, env in zip(msgs, envs):  # one failed: each on its own (JetStream counts the deliveries)
            attempt = msg.metadata.num_delivered
            outcome = await asyncio.to_thread(apply, bus, sub, env, advance=False, attempt=attempt)
            if outcome == "retry":
                await msg.nak(delay=min(2.0, 0.05 * 2 ** attempt))
                continue
            if outcome == "dead":
                await self.js.publish(f"{self.prefix}.dead.{sub.consumer}", msg.data, stream=self.stream,
                                      headers={"Nats-Msg-Id": f"dead:{sub.consumer}:{env.id}",
                                               "CityOps-Error": " ".join(bus.last_error(sub.consumer).split())})
            await msg.ack()

    async def _after_takeover(self, sub: Subscription, psub) -> None:
        """An ordered consumer whose previous puller died holding events (fetched, never acknowledged): wait
        until JetStream gives them back (``ack_wait``) before pulling, since it hands out redeliveries before
        newer events — so the new holder applies them first, in their order, not after what followed them."""
        while True:
            try:
                info = await psub.consumer_info()
                break
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - reconnecting: ask again
                await asyncio.sleep(0.5)
        if info.num_ack_pending:
            log.info("bus: %s waits %.0f s for %d events a previous holder left unacknowledged", sub.consumer,
                     self.bus.settings.bus_ack_wait_seconds, info.num_ack_pending)
            await asyncio.sleep(self.bus.settings.bus_ack_wait_seconds + 0.2)

    def idle(self) -> bool:
        """No event waiting for or held by a durable consumer."""
        async def check():
            for _sub, _name, psub in self._subs:
                info = await psub.consumer_info()
                if info.num_pending or info.num_ack_pending:
                    return False
            return True

        return self._call(check(), timeout=10)

    # -- broadcast
    async def _heard(self, msg) -> None:
        if msg.subject.startswith(f"{self.prefix}.dead."):
            return
        try:
            env = decode(msg.data)
        except Exception:  # noqa: BLE001 - not one of ours
            log.warning("undecodable message on %s", msg.subject)
            return
        deliver_broadcast(self.broadcast, env)

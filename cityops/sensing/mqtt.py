"""SensorThings over MQTT against a real broker (Mosquitto): Observations in on the create topics,
entity changes out on the subscription topics (standards.md §6.4).

In: ``v1.1/Observations``, ``v1.1/Datastreams({id})/Observations``, ``v1.1/FeaturesOfInterest({id})/Observations``
(one Observation per message), and ``v1.1/CreateObservations`` for gateways that batch: one SensorThings
dataArray document, or a JSON array of them (the body of the HTTP CreateObservations action), all-or-nothing
per message. One Python callback per message is this bridge's limit (a few thousand messages/s on 2 cores),
so batching many observations per message is how MQTT reaches bulk rates. Messages go through the same
validation and ingest queue as HTTP. The QoS 1 PUBACK is sent only after the observation (or the whole
dataArray message) is committed (paho's manual acknowledgement). Back-pressure is MQTT 5 flow control: the
bridge asks for at most ``receive_maximum`` unacknowledged messages in flight, so while the writer is behind,
the broker holds the rest (and publishers slow down); nothing is dropped. The network loop itself never
waits for the writer: it keeps answering keep-alives, so a writer stall longer than the keep-alive (a
checkpoint, a slow disk) does not cost the connection and a redelivery of the whole window.

The broker authenticates devices; on this interface every Datastream is addressable (the HTTP API adds
per-principal scope).
"""

from __future__ import annotations

import logging
import queue
import re
import struct
import threading
import time
from urllib.parse import urlparse

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cityops.core.errors import CityOpsError
from cityops.sensing import sta
from cityops.sensing.ingest import expand_data_array
from cityops.sensing.timeutil import iso, iso_interval

log = logging.getLogger("cityops.sensing.mqtt")
_DS_TOPIC = re.compile(r"^v1\.1/Datastreams\((\d+)\)/Observations$")
_FOI_TOPIC = re.compile(r"^v1\.1/FeaturesOfInterest\((\d+)\)/Observations$")
#: dataArray documents (several observations per message); the server never publishes on it.
CREATE_OBSERVATIONS_TOPIC = "v1.1/CreateObservations"


class MqttBridge:
    def __init__(self, ingestor, url: str, base_url: str, client_id: str = "cityops-sensing", publish_ingested: bool = True,
                 notify_capacity: int = 256, receive_maximum: int = 1000, keepalive: int = 30,
                 shared_group: str | None = None):
        self.ingestor = ingestor
        #: Several workers: subscribe as ``$share/<group>/<topic>`` (MQTT 5 shared subscription), so the broker
        #: gives each message to one of them.
        self.shared_group = shared_group
        #: unacknowledged messages in flight to us (MQTT 5 Receive Maximum): what the bridge holds at most
        self.receive_maximum = receive_maximum
        self.keepalive = keepalive
        self.url = url
        self.base_url = base_url
        u = urlparse(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 1883
        # MQTT 5: the create and the notification topics are the same (v1.1/Observations), so the bridge
        # subscribes with "no local" and never hears its own publications as new observations.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.rejected = 0
        #: connections lost (paho reconnects by itself; unacknowledged messages are redelivered)
        self.disconnects = 0
        self.received = 0
        #: entity representations heard on a create topic (another server's notifications on a shared broker)
        self.ignored = 0
        self.publish_ingested = publish_ingested
        self._connected = threading.Event()
        self._stopping = False
        # Notifications of stored observations are published from their own thread, so the ingest writer
        # commits and acknowledges the next batch meanwhile. They are QoS 0 (best effort by the standard);
        # the queue is bounded (in batches) and a batch that finds it full is dropped and counted, never
        # allowed to hold back ingest; so are notifications the broker does not read fast enough (_PacketBuffer).
        self.notify_capacity = notify_capacity
        self._notify: queue.Queue = queue.Queue(maxsize=notify_capacity)
        #: observations whose notifications were dropped
        self.notifications_dropped = 0
        self._dropped_logged = float("-inf")  # the first drop is logged at once
        self._dropped_lock = threading.Lock()
        self._topic_headers = _TopicHeaders()
        self._notifier: threading.Thread | None = None
        ingestor.attach_notifier(self._after_commit)

    def start(self, timeout: float = 10) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # the broker keeps our subscription and queued QoS 1 messages while we are down
        # Unacknowledged deliveries the broker may have in flight to us. Acknowledgement waits for the commit, so
        # the window must be wide enough for one transaction to carry many messages (1,000 dataArray messages of
        # 500 observations are 500,000), and it bounds what the bridge holds above the ingest queue's capacity.
        # Beyond it the broker queues for us only up to its max_queued_messages (Mosquitto: 1000 by default) and
        # then drops, so a deployment sets that limit large (docs/architecture.md, sensing).
        props.ReceiveMaximum = self.receive_maximum
        self.client.connect(self.host, self.port, keepalive=self.keepalive, clean_start=False, properties=props)
        self.client.loop_start()
        if self.publish_ingested and self._notifier is None:
            self._notifier = threading.Thread(target=self._notify_loop, name="sensing-mqtt-notify", daemon=True)
            self._notifier.start()
        if not self._connected.wait(timeout):
            raise RuntimeError(f"MQTT broker {self.url} did not accept the connection and subscriptions")

    def stop(self, end_session: bool = False) -> None:
        """Disconnect. The broker keeps the session (subscriptions, messages for us) for the next start, unless
        ``end_session``: for a client id that will not come back, whose session would otherwise go on
        collecting messages for an hour."""
        self._stopping = True
        if self._notifier is not None:
            self._notify.put(None)  # after what is queued: pending notifications go out before we disconnect
            self._notifier.join(10)
            self._notifier = None
        self.client.loop_stop()
        props = None
        if end_session:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0  # MQTT 5.0 §3.14.2.2.2: the session ends with this connection
        self.client.disconnect(properties=props)
        self.ingestor.detach_notifier(self._after_commit)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        topics = ["v1.1/Observations", "v1.1/+/Observations", CREATE_OBSERVATIONS_TOPIC]
        if self.shared_group:
            # "No local" is a protocol error on a shared subscription (MQTT 5.0 §3.8.3.1); our own notifications
            # heard back carry a selfLink and are ignored in _on_message.
            opts = SubscribeOptions(qos=1)
            topics = [f"$share/{self.shared_group}/{t}" for t in topics]
        else:
            opts = SubscribeOptions(qos=1, noLocal=True)
        client.subscribe([(t, opts) for t in topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        # Ready once the broker has the subscriptions (SUBACK): a device publishing before that on a new
        # session would find nobody subscribed, and the broker would not keep its message for us.
        refused = [rc for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("MQTT broker %s refused the subscriptions: %s", self.url, refused)
            return
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self._stopping:
            return
        self.disconnects += 1
        log.warning("MQTT connection to %s lost (%s); reconnecting, unacknowledged messages will be redelivered",
                    self.url, reason_code)

    def _on_message(self, client, userdata, msg):
        self.received += 1
        topic = msg.topic
        try:
            data = orjson.loads(msg.payload)
            if topic == CREATE_OBSERVATIONS_TOPIC:
                items = expand_data_array(data)
            else:
                if not isinstance(data, dict):
                    raise ValueError("payload is not a JSON object")
                if "@iot.selfLink" in data:
                    # A server's notification (create and notification topics are the same), not a request to
                    # create: a device never sends a selfLink. Several servers may share one broker.
                    self.ignored += 1
                    client.ack(msg.mid, msg.qos)
                    return
                m = _DS_TOPIC.match(topic)
                if m:
                    data["Datastream"] = {"@iot.id": int(m.group(1))}
                elif not (topic == "v1.1/Observations" or _FOI_TOPIC.match(topic)):
                    client.ack(msg.mid, msg.qos)
                    return
                items = [data]
            rows, metas = self.ingestor.validate(items)
            # Queued even when the queue is full: the in-flight window bounds what we hold (see start).
            future = self.ingestor.submit(rows, metas, over_capacity=True)
        except (CityOpsError, ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            self.rejected += 1
            log.warning("MQTT observation on %s rejected: %s", topic, getattr(exc, "message", exc))
            client.ack(msg.mid, msg.qos)  # a bad message is refused for good, not redelivered for ever
            return
        future.add_done_callback(lambda f: f.exception() is None and client.ack(msg.mid, msg.qos))

    # ------------------------------------------------------------------------------------------ publish
    def publish(self, topic: str, payload: dict) -> None:
        self.client.publish(topic, orjson.dumps(payload), qos=0)

    def publish_entity(self, set_name: str, data: dict, row, session=None, changed: set | None = None) -> None:
        """The complete entity on ``v1.1/{Set}`` and ``v1.1/{Set}({id})``, each changed property on its topic,
        and on the navigation topics that reach it."""
        self.publish(f"v1.1/{set_name}", data)
        self.publish(f"v1.1/{set_name}({row.id})", data)
        for prop in changed or ():
            if prop in data:
                self.publish(f"v1.1/{set_name}({row.id})/{prop}", {prop: data[prop]})
        if set_name == "Observations":
            self.publish(f"v1.1/Datastreams({row.datastream_id})/Observations", data)
            if row.foi_id:
                self.publish(f"v1.1/FeaturesOfInterest({row.foi_id})/Observations", data)
        elif set_name == "Datastreams":
            self.publish(f"v1.1/Things({row.thing_id})/Datastreams", data)
        elif set_name == "HistoricalLocations":
            self.publish(f"v1.1/Things({row.thing_id})/HistoricalLocations", data)

    def _after_commit(self, rows, metas, result) -> None:
        """Hand a committed batch to the notifier thread (never blocks the ingest writer)."""
        if not self.publish_ingested or result is None or not result.inserted:
            return
        try:
            self._notify.put_nowait((rows, result))
        except queue.Full:
            self._count_dropped(len(result.inserted), f"notification queue full ({self.notify_capacity} batches)")

    def _notify_loop(self) -> None:
        while True:
            item = self._notify.get()
            if item is None:
                return
            try:
                self._publish_batch(*item)
            except Exception:  # noqa: BLE001 - a notification failure must not stop later ones
                log.exception("publishing observation notifications failed")

    def _publish_batch(self, rows, result) -> None:
        """Publish each stored observation on its set and navigation topics (built from the batch, no re-read)."""
        values = {(r.datastream_id, r.t_ms): r for r in rows}
        base = self.base_url
        out = _PacketBuffer(self.client)
        headers = self._topic_headers
        for obs_id, ds_id, t_ms in result.inserted:
            r = values[(ds_id, t_ms)]
            link = f"{base}/Observations({obs_id})"
            data = {"@iot.id": obs_id, "@iot.selfLink": link, "phenomenonTime": iso_interval(r.t_ms, r.t_end_ms),
                    "resultTime": iso(r.result_time_ms), "result": r.result_json if r.result_json is not None else r.value,
                    "resultQuality": None, "validTime": None, "parameters": None,
                    "Datastream@iot.navigationLink": f"{link}/Datastream",
                    "FeatureOfInterest@iot.navigationLink": f"{link}/FeatureOfInterest"}
            payload = orjson.dumps(data)  # UTF-8 as json.dumps(ensure_ascii=False), a fraction of the time
            out.add(headers["v1.1/Observations"], payload, first=True)
            out.add(headers[f"v1.1/Datastreams({ds_id})/Observations"], payload)
            foi = result.fois.get(ds_id)
            if foi:
                out.add(headers[f"v1.1/FeaturesOfInterest({foi})/Observations"], payload)
        out.flush()
        if out.dropped:
            self._count_dropped(out.dropped, "broker not reading notifications fast enough")

    def _count_dropped(self, observations: int, why: str) -> None:
        """Count dropped notifications (from the ingest writer and the notifier threads); log at most every 10 s."""
        with self._dropped_lock:
            self.notifications_dropped += observations
            now = time.monotonic()
            if now - self._dropped_logged < 10:
                return
            self._dropped_logged = now
            total = self.notifications_dropped
        log.warning("MQTT %s: notifications of %d observations dropped so far (QoS 0, best effort)", why, total)


def end_session(url: str, client_id: str, timeout: float = 10) -> bool:
    """End the broker session of ``client_id`` (a retired server's, whose subscriptions would otherwise go on
    collecting messages until the session expires); True if there was one. Connects as that client: run it
    only when no server uses the id."""
    u = urlparse(url)
    acked = threading.Event()
    present = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_connect = lambda client, userdata, flags, rc, props: (present.append(flags.session_present), acked.set())
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0  # resumed, then ended with this connection
    c.connect(u.hostname or "127.0.0.1", u.port or 1883, clean_start=False, properties=props)
    c.loop_start()
    try:
        if not acked.wait(timeout):
            raise RuntimeError(f"MQTT broker {url} did not accept the connection")
    finally:
        c.loop_stop()
        c.disconnect()
    return present[0]


class _TopicHeaders(dict):
    """Encoded topic part of a QoS 0 MQTT 5 PUBLISH per topic (length-prefixed name + empty property list)."""

    def __missing__(self, topic: str) -> bytes:
        name = topic.encode()
        if len(self) > 100_000:  # bounded: one entry per datastream and feature of interest in use
            self.clear()
        header = self[topic] = struct.pack("!H", len(name)) + name + b"\x00"
        return header


class _PacketBuffer:
    """QoS 0 PUBLISH packets for one batch, handed to the client's connection in a few large writes.

    Written by hand because paho's ``publish`` costs ~25 µs a message (a message-info object with its own
    condition variable, a log call and a queue entry each): at 2–3 notifications per observation that capped
    the whole MQTT path near 10,000 observations/s on 2 cores, with the notifier holding the interpreter for
    most of it. A QoS 0 PUBLISH is just a fixed header, the topic and the payload (MQTT 5.0 §3.3), nothing to
    track afterwards, so the packets are encoded here and queued on paho's own connection — the bridge's
    client, so the broker's "no local" still keeps our notifications from coming back to us as creations.
    ``_packet_queue`` is paho's internal write queue (paho-mqtt 2.x, pinned below 3 in pyproject.toml); a
    paho without it falls back to ``publish``."""

    CHUNK = 256 * 1024  # bytes per queued write: paho re-slices a partly sent buffer, so keep each one short
    #: Writes that may wait on the connection before notifications are dropped. The acknowledgements of
    #: ingested messages and the keep-alive pings queue behind them on the same connection: a broker slower
    #: to read notifications than we make them must not delay those (the in-flight window would fill and
    #: the connection time out), nor grow paho's unbounded write queue.
    MAX_QUEUED_WRITES = 16

    def __init__(self, client: mqtt.Client):
        self.client = client
        self.parts: list[bytes] = []
        self.size = 0
        self.count = 0
        self.dropped = 0
        self.fast = hasattr(client, "_packet_queue") and hasattr(client, "_out_packet")

    def add(self, header: bytes, payload: bytes, first: bool = False) -> None:
        """Queue one PUBLISH; ``first``: the first of an observation's (``dropped`` counts observations)."""
        if not self.fast:
            name_len = struct.unpack_from("!H", header)[0]
            self.client.publish(header[2:2 + name_len].decode(), payload, qos=0)
            return
        n = len(header) + len(payload)
        length = bytearray()
        while True:  # the remaining length as a variable byte integer (MQTT 5.0 §1.5.5)
            n, digit = n >> 7, n & 0x7F
            length.append(digit | 0x80 if n else digit)
            if not n:
                break
        self.parts += (b"\x30", length, header, payload)  # 0x30: PUBLISH, QoS 0, not retained
        self.size += len(header) + len(payload) + 4
        self.count += first
        if self.size >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        buf, count, self.parts, self.size, self.count = b"".join(self.parts), self.count, [], 0, 0
        # Only on an established connection: packets queued before the reconnection's CONNECT would be a
        # protocol error. QoS 0 notifications lost while the connection is down are lost (best effort, §6.4).
        if not self.client.is_connected() or len(self.client._out_packet) >= self.MAX_QUEUED_WRITES:
            self.dropped += count
            return
        # command 0: a plain write for paho (no publish bookkeeping, no on_publish callback)
        self.client._packet_queue(0, buf, 0, 0)

"""Per-app sensing runtime: the ingestor (bounded queue + writer thread) and the optional MQTT bridge."""

from __future__ import annotations

import os

from cityops.core.web import per_app
from cityops.sensing.ingest import Ingestor


def runtime(app_state) -> Ingestor:
    """The app's ingestor, created and started on first use."""

    def make(ctx) -> Ingestor:
        ing = Ingestor(ctx.sessions, capacity=ctx.settings.sensing_queue, registry=ctx.registry)
        ing.start()
        return ing
    return per_app(app_state, "sensing_ingestor", make)


def start_mqtt(app_state, url: str | None = None):
    """Connect the SensorThings MQTT bridge when ``settings.mqtt_url`` (mqtt://host:port) is set.

    The client id names the broker session that holds our subscription and unacknowledged messages while we are
    down: one per deployment (two servers sharing an id take the session from each other). Several workers
    (``settings.workers`` > 1) each take a slot of their own (``<id>-<slot>``, a lock file in the data
    directory, so a restarted worker resumes its session) and share the subscription (MQTT 5 ``$share``): the
    broker gives each message to one of them."""
    settings = app_state.ctx.settings
    url = url or settings.mqtt_url
    if not url:
        return None
    from cityops.sensing.mqtt import MqttBridge

    client_id, shared = settings.mqtt_client_id, None
    if settings.workers > 1:
        slot = _take_slot(settings, app_state)
        client_id, shared = f"{settings.mqtt_client_id}-{slot}", settings.mqtt_client_id
    bridge = MqttBridge(runtime(app_state), url, base_url=settings.public_url + "/sta/v1.1", client_id=client_id,
                        receive_maximum=settings.mqtt_receive_maximum, shared_group=shared)
    bridge.start()
    app_state.sensing_mqtt = bridge
    return bridge


def _take_slot(settings, app_state) -> int:
    """The lowest free worker slot (an flock held while this process lives)."""
    import fcntl

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(settings.workers * 2):
        fd = os.open(settings.data_dir / f"mqtt-{settings.mqtt_client_id}-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        app_state.sensing_mqtt_slot = fd  # held (open) as long as the app
        return slot
    raise RuntimeError(f"no free MQTT worker slot among {settings.workers * 2}: more workers than configured run")

"""Per-app sensing runtime: the ingestor (bounded queue + writer thread) and the optional MQTT bridge."""

from __future__ import annotations

import os

from cityops.core.web import per_app
from cityops.sensing.ingest import Ingestor


def runtime(app_state) -> Ingestor:
    """The app's ingestor, created and started on first use."""

    def make(ctx) -> Ingestor:
        ing = Ingestor(ctx.sessions, capacity=int(os.environ.get("CITYOPS_SENSING_QUEUE", "500000")), registry=ctx.registry)
        ing.start()
        return ing
    return per_app(app_state, "sensing_ingestor", make)


def start_mqtt(app_state, url: str | None = None):
    """Connect the SensorThings MQTT bridge when CITYOPS_MQTT_URL (mqtt://host:port) is set."""
    url = url or os.environ.get("CITYOPS_MQTT_URL")
    if not url:
        return None
    from cityops.sensing.mqtt import MqttBridge

    # The client id names the broker session that holds our subscription and unacknowledged messages while we
    # are down: one per deployment (two servers sharing an id take the session from each other).
    bridge = MqttBridge(runtime(app_state), url, base_url=os.environ.get("CITYOPS_PUBLIC_URL", "http://127.0.0.1:8000") + "/sta/v1.1",
                        client_id=os.environ.get("CITYOPS_MQTT_CLIENT_ID", "cityops-sensing"),
                        receive_maximum=int(os.environ.get("CITYOPS_MQTT_RECEIVE_MAXIMUM", "1000")))
    bridge.start()
    app_state.sensing_mqtt = bridge
    return bridge

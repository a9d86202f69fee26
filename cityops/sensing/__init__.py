"""物联感知 sensing: devices in the OGC SensorThings model, ingest over HTTP and MQTT, time series with
rollups, rules as data, and alarms with a life cycle (告警). Registers the "sensors" demo step."""

from cityops.sensing import demo as _demo  # noqa: E402,F401  (registers the "sensors" demo step)

"""物联感知 sensing: devices in the OGC SensorThings model, ingest over HTTP and MQTT, time series with
rollups, rules as data, and alarms with a life cycle (告警)."""

#!/usr/bin/env bash
# Debian packages the test suite and the benchmarks need: PostGIS for the PostgreSQL service, Chromium (and a CJK font) for
# the browser test.
set -euo pipefail
packages=()
pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
pg_major=${pg_major:-15}
dpkg -s "postgresql-${pg_major}-postgis-3" >/dev/null 2>&1 || packages+=("postgresql-${pg_major}-postgis-3")
dpkg -s chromium >/dev/null 2>&1 || packages+=(chromium)
# A CJK font, so that screenshots of the Chinese UI are legible.
dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || packages+=(fonts-wqy-microhei)
# ogr2ogr: the peer of the layer-import benchmark (benchmarks/layer_import.py).
dpkg -s gdal-bin >/dev/null 2>&1 || packages+=(gdal-bin)
# QGIS 3.22 with PyQGIS: the desktop client of /ogc in tests/test_qgis_client.py (headless, the system python3).
dpkg -s python3-qgis >/dev/null 2>&1 || packages+=(qgis python3-qgis)
# mosquitto_pub: the C load generator of the MQTT ingest benchmark (benchmarks/sensing_ingest.py).
dpkg -s mosquitto-clients >/dev/null 2>&1 || packages+=(mosquitto-clients)
# wrk: the load generator of the case intake benchmark's closed loops (benchmarks/events_intake.py).
dpkg -s wrk >/dev/null 2>&1 || packages+=(wrk)
# ffmpeg: the HLS test stream the video player's browser test plays (tests/test_webapp_video.py).
dpkg -s ffmpeg >/dev/null 2>&1 || packages+=(ffmpeg)
if ((${#packages[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${packages[*]} (run as root: apt-get install ${packages[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
# The PostgreSQL service must be up for the PostGIS backend tests.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ "$(id -u)" = 0 ]; then
    pg_ctlcluster --skip-systemctl-redirect "$pg_major" main start || true
  fi
fi
# Mosquitto holds at most max_queued_messages (1,000 by default) QoS 1 messages per client beyond those in
# flight and silently drops the rest. The sensing bridge acknowledges only after commit and keeps a persistent
# session, so a busy or restarting server needs a deeper (still bounded) queue (README, Sensing).
if [ -f /etc/mosquitto/mosquitto.conf ] && [ "$(id -u)" = 0 ]; then
  changed=0
  mkdir -p /etc/mosquitto/conf.d
  if ! cmp -s "$(dirname "$0")/mosquitto-cityops.conf" /etc/mosquitto/conf.d/cityops.conf; then
    install -m 644 "$(dirname "$0")/mosquitto-cityops.conf" /etc/mosquitto/conf.d/cityops.conf
    changed=1
  fi
  if ! grep -q '^include_dir /etc/mosquitto/conf.d' /etc/mosquitto/mosquitto.conf; then
    printf '\ninclude_dir /etc/mosquitto/conf.d\n' >> /etc/mosquitto/mosquitto.conf
    changed=1
  fi
  pid=$(cat /run/mosquitto/mosquitto.pid 2>/dev/null || true)
  running=0
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && running=1
fi
if [ -f /etc/mosquitto/mosquitto.conf ] && [ "$(id -u)" = 0 ] && { [ "$changed" = 1 ] || [ "$running" = 0 ]; }; then
  # A restart, not SIGHUP: Mosquitto 2.0.11 logs the reload but kept queueing only 1,000 per client. Clients
  # reconnect; persistent sessions are saved on shutdown and restored.
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl restart mosquitto
  else
    if [ "$running" = 1 ]; then
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
  fi
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break; sleep 0.1; done
fi

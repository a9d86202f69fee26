"""The demo's devices and the July storm simulator on both backends: deterministic, and it drives the
alarms up through the levels at 老沟湾 and across 义和镇's rain gauges."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from cityops.sensing import simulate
from cityops.sensing.demo import HISTORY_HOURS, SCENARIO_RISK_POINT
from cityops.sensing.models import Alarm, Datastream, Observation, Thing


def test_demo_devices_with_history(demo_store):
    with demo_store.sessions() as s:
        kinds = dict(s.execute(select(Thing.device_type, func.count()).group_by(Thing.device_type)).all())
        assert set(kinds) == {"rain_gauge", "gnss", "crack_meter", "tilt_meter", "water_level", "site_monitor", "energy_meter"}
        from cityops.org.models import Unit

        yihe = s.scalar(select(Unit.path).where(Unit.name == "义和镇"))
        in_yihe = s.scalar(select(func.count()).select_from(Thing).where(Thing.device_type == "rain_gauge",
                                                                          Thing.unit_path.startswith(yihe)))
        yihe_villages = s.scalar(select(func.count()).select_from(Unit).where(Unit.level == "village", Unit.path.startswith(yihe)))
        assert in_yihe == yihe_villages >= 3  # every village of the storm's town has a gauge
        at_slope = s.scalars(select(Thing.device_type).where(Thing.risk_point_code == SCENARIO_RISK_POINT)).all()
        assert sorted(set(at_slope)) == ["crack_meter", "gnss", "tilt_meter"] and at_slope.count("gnss") == 3
        assert all(s.scalars(select(Thing.building_code).where(Thing.device_type.in_(["crack_meter", "tilt_meter"]))))
        n_ds = s.scalar(select(func.count()).select_from(Datastream))
        assert s.scalar(select(func.count()).select_from(Observation)) == n_ds * HISTORY_HOURS
        assert s.scalar(select(func.count()).select_from(Alarm)) == 0  # a quiet day raises nothing


def test_storm_is_deterministic_and_raises_the_levels(demo_store):
    with demo_store.sessions() as s:
        streams = simulate.find_streams(s)
    a = [(t, [(r.datastream_id, r.value) for r in rows]) for t, rows in simulate.storm_steps(streams, hours=6)]
    b = [(t, [(r.datastream_id, r.value) for r in rows]) for t, rows in simulate.storm_steps(streams, hours=6)]
    assert a == b
    summary = simulate.simulate_storm(demo_store.sessions, hours=24)
    assert summary["observations"] == 24 * len(streams.rain) + 144 * (3 + len(streams.crack) + len(streams.tilt))
    with demo_store.sessions() as s:
        slope = {a.rule_id: a for a in s.scalars(select(Alarm).where(Alarm.risk_point_code == SCENARIO_RISK_POINT))}
        rain = list(s.scalars(select(Alarm).where(Alarm.rule_id == "rain_hourly")))
        gnss_history = [h["what"] for h in slope["gnss_rate"].history]
    assert slope["gnss_rate"].peak_severity in ("orange", "red") and "escalated" in gnss_history
    assert slope["crack_width"].peak_severity == "red" and slope["crack_with_tilt"].severity == "red"
    assert rain and max(r.peak_severity for r in rain) in ("orange", "yellow")
    assert all("/500154101/" in r.unit_path or r.unit_path.startswith("/500154/") for r in rain)


def test_simulate_cli_runs_the_storm_and_refuses_bad_options(demo_store, tmp_path):
    import json
    import os
    import subprocess
    import sys

    if demo_store.backend != "sqlite":
        pytest.skip("the CLI is backend-agnostic; run once, on the embedded store")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONIOENCODING="utf-8", CITYOPS_LOG_JSON="false")
    cli = [sys.executable, "-m", "cityops.cli", "simulate", "storm", "--data-dir", str(demo_store.settings.data_dir)]
    ok = subprocess.run([*cli, "--hours", "2", "--start", "2026-08-01T00:00:00+08:00"], capture_output=True, text=True,
                        env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout.strip().splitlines()[-1])
    assert summary["observations"] > 0 and summary["gnss"] == 3
    bad = subprocess.run([*cli, "--url", "http://127.0.0.1:9"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "--token" in bad.stderr
    bad = subprocess.run([*cli, "--start", "tomorrow"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "tomorrow" in bad.stderr


def test_maintenance_command_flags_silent_devices(demo_store):
    import json
    import os
    import subprocess
    import sys

    if demo_store.backend != "sqlite":
        pytest.skip("the CLI is backend-agnostic; run once, on the embedded store")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONIOENCODING="utf-8", CITYOPS_LOG_JSON="false")
    r = subprocess.run([sys.executable, "-m", "cityops.cli", "sensing-maintain", "--data-dir", str(demo_store.settings.data_dir)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # The demo's history ends within the last hour: no GNSS station is silent yet, and nothing is old enough to drop.
    assert out["no_signal"] == 0 and out["removed"] == {"raw": 0, "1m": 0, "1h": 0}

"""Risk points and their warning evaluation on both backends: levels and why, history, the level-change
hook, idempotent re-evaluation, cancel, bad input; observations are real rows in the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Point, box
from sqlalchemy import func, select

from cityops.core import audit
from cityops.core.errors import Conflict, InvalidGeometry, InvalidInput, NotFound
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.warning import demo, service
from cityops.warning.tables import RiskPoint, RiskWarning
from tests.conftest import table_counts

ALL = Scope(all_units=True)
ACTOR = audit.Actor("tester")
RAIN, GNSS1, GNSS2, TILT = 11, 12, 13, 14


@pytest.fixture
def place(store):
    """A district with two townships (units inserted directly) and an empty warning registry."""
    with store.sessions() as s:
        s.add(Unit(code="500154", name="开州区", level="district", path="/500154/", attributes={},
                   geom=MultiPolygon([box(108.0, 31.0, 108.6, 31.6)])))
        s.add(Unit(code="500154107", name="义和镇", level="township", parent_code="500154", path="/500154/500154107/",
                   attributes={}, geom=MultiPolygon([box(108.0, 31.0, 108.3, 31.6)])))
        s.add(Unit(code="500154108", name="大德镇", level="township", parent_code="500154", path="/500154/500154108/",
                   attributes={}, geom=MultiPolygon([box(108.3, 31.0, 108.6, 31.6)])))
        s.commit()
    return store


def _create(store, code="RP-T-1", unit="500154107", point=(108.1, 31.3), **extra):
    data = {"code": code, "name": "测试滑坡", "hazard_type": "landslide", "unit_code": unit, "geometry": Point(*point),
            "radius_m": 200.0, "datastreams": {"rainfall": RAIN, "displacement": [GNSS1, GNSS2], "tilt": [{"id": TILT, "storeys": 2}]},
            "model": {"threshold_set": "kaizhou_demo", "displacement": {"v_constant_mm_per_day": 2.0}}, **extra}
    with store.sessions() as s:
        service.create_risk_point(s, ACTOR, ALL, data)
        s.commit()


def _storm(store):
    times = demo._hours(demo.REPLAY_START, demo.REPLAY_END)
    with store.sessions() as s:
        service.store_observations(s, RAIN, times, demo.storm_rainfall(times, heavy=True))
        service.store_observations(s, GNSS1, times, demo.storm_displacement(times, 0))
        service.store_observations(s, GNSS2, times, demo.storm_displacement(times, 1))
        service.store_observations(s, TILT, times, demo.storm_tilt(times))
        s.commit()
    return times


def _evaluate(store, code, at, series=None):
    with store.sessions() as s:
        return service.evaluate_risk_point(s, code, series or service.stored_series(s), at)


def _steps():
    at = demo.STORM_START - timedelta(hours=12)
    while at <= demo.REPLAY_END:
        yield at
        at += timedelta(hours=3)


def test_storm_raises_the_level_through_blue_yellow_orange_red_and_records_why(place):
    _create(place)
    _storm(place)
    seen = []
    service.on_level_change.append(seen.append)
    try:
        levels = [_evaluate(place, "RP-T-1", at).level for at in _steps()]
    finally:
        service.on_level_change.remove(seen.append)
    ranks = [("none", "blue", "yellow", "orange", "red").index(lv) for lv in levels]
    assert levels[0] == "blue" and levels[-1] == "red"
    assert [lv for i, lv in enumerate(levels) if i == 0 or lv != levels[i - 1]] == ["blue", "yellow", "orange", "red"]
    assert ranks == sorted(ranks), levels
    with place.sessions() as s:
        rp = s.scalar(select(RiskPoint).where(RiskPoint.code == "RP-T-1"))
        history = list(s.scalars(select(RiskWarning).order_by(RiskWarning.id)))
    assert rp.level == "red" and rp.level_since == history[-1].issued_at
    assert [(w.msg_type, w.previous_level, w.level) for w in history] == [
        ("Alert", "none", "blue"), ("Update", "blue", "yellow"), ("Update", "yellow", "orange"), ("Update", "orange", "red")]
    # Each Update references the message it replaces (CAP sender,identifier,sent).
    for prev, w in zip(history, history[1:]):
        sender, identifier, sent = w.cap_references.split(",")
        assert identifier == prev.identifier and sent.endswith("+08:00")
    # The hook saw every change, with the assessment that decided it.
    assert [(c.previous_level, c.level) for c in seen] == [(w.previous_level, w.level) for w in history]
    assert seen[-1].identifier == history[-1].identifier and seen[-1].risk_point_code == "RP-T-1"
    # Why: each indicator names its observations and model output.
    assessment = rp.assessment
    by_kind = {i["indicator"]: i for i in assessment["indicators"]}
    rain = by_kind["rainfall"]
    assert rain["level"] == "red" and rain["observations"]["count"] > 200
    out = rain["output"]
    assert out["event_rainfall_mm"] >= out["thresholds_mm"]["red"] and out["exceedance_index"] > 1
    assert out["antecedent_K"] == 0.8 and out["antecedent_mm"] > 0
    assert rain["model"]["calibration"] and rain["model"]["source"]
    disp = by_kind["displacement"]
    assert disp["output"]["tangent_angle_deg"] > 45 and disp["model"]["parameters"]["v_constant_mm_per_day"] == 2.0
    assert disp["observations"]["recent"][-1][1] > 0
    assert by_kind["tilt"]["output"]["limit_pct"] == 3.0
    assert assessment["reasons"] and any("mm" in r for r in assessment["reasons"])


def test_hook_runs_after_commit_and_a_failing_subscriber_changes_nothing(place):
    _create(place)
    _storm(place)
    committed = []

    def broken(change):
        raise RuntimeError("subscriber bug")

    def check_committed(change):
        with place.sessions() as s:  # another session sees the warning: it was committed before the hook ran
            committed.append(s.scalar(select(RiskWarning.level).where(RiskWarning.identifier == change.identifier)))

    service.on_level_change.extend([broken, check_committed])
    try:
        result = _evaluate(place, "RP-T-1", demo.REPLAY_END)
    finally:
        service.on_level_change.remove(broken)
        service.on_level_change.remove(check_committed)
    assert result.changed and committed == [result.level]


def test_reevaluation_is_idempotent_and_arrays_equal_stored_rows(place):
    _create(place)
    times = _storm(place)
    first = _evaluate(place, "RP-T-1", demo.REPLAY_END)
    before = table_counts(place)
    again = _evaluate(place, "RP-T-1", demo.REPLAY_END)
    assert not again.changed and again.level == first.level
    assert table_counts(place)["risk_warnings"] == before["risk_warnings"]
    # The same observations given as arrays (the way the sensing time series will be wired) decide the same.
    arrays = {RAIN: demo.storm_rainfall(times, True), GNSS1: demo.storm_displacement(times, 0),
              GNSS2: demo.storm_displacement(times, 1), TILT: demo.storm_tilt(times)}

    def series(ds, start, end):
        keep = (times >= start.timestamp()) & (times <= end.timestamp())
        return times[keep], arrays[ds][keep]

    from_arrays = _evaluate(place, "RP-T-1", demo.REPLAY_END, series)
    assert from_arrays.level == first.level and from_arrays.indicators == first.indicators
    # Storing the same observations again adds nothing.
    with place.sessions() as s:
        assert service.store_observations(s, RAIN, times, arrays[RAIN]) == 0


def test_quiet_weather_cancels_the_warning(place):
    _create(place, datastreams={"rainfall": RAIN})
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    hours = t0.timestamp() + 3600.0 * np.arange(24 * 8)
    rain = np.zeros(len(hours))
    rain[24 * 5: 24 * 5 + 6] = 5.0  # 30 mm in 6 h on day 6 → orange (E_50(6) = 20.5, E_80(6) = 30.2 → 30 < 30.2)
    with place.sessions() as s:
        service.store_observations(s, RAIN, hours, rain)
        s.commit()
    storm_end = datetime.fromtimestamp(hours[24 * 5 + 5], UTC)
    assert _evaluate(place, "RP-T-1", storm_end).level == "orange"
    # Three dry days later the event has ended (48-h dry spell): the warning is cancelled.
    cancelled = _evaluate(place, "RP-T-1", storm_end + timedelta(days=2, hours=12))
    assert cancelled.level == "none" and cancelled.changed
    with place.sessions() as s:
        alert, cancel = s.scalars(select(RiskWarning).order_by(RiskWarning.id)).all()
    assert (alert.msg_type, cancel.msg_type) == ("Alert", "Cancel") and alert.identifier in cancel.cap_references


def test_red_needs_a_second_independent_indicator(place):
    _create(place, datastreams={"rainfall": RAIN})
    hours = datetime(2026, 7, 1, tzinfo=UTC).timestamp() + 3600.0 * np.arange(48)
    with place.sessions() as s:
        service.store_observations(s, RAIN, hours, np.full(48, 4.0))  # 192 mm in 48 h: red on rain alone
        s.commit()
    a = _evaluate(place, "RP-T-1", datetime.fromtimestamp(hours[-1], UTC))
    assert a.indicators[0]["level"] == "red" and a.level == "orange"
    assert "第二个独立指标" in a.reasons[0]


def test_missing_observations_are_reported_not_guessed(place):
    _create(place)
    a = _evaluate(place, "RP-T-1", datetime(2026, 7, 10, tzinfo=UTC))
    assert a.level == "none" and {i["status"] for i in a.indicators} == {"no_data"}
    with pytest.raises(NotFound):
        _evaluate(place, "RP-NOPE", datetime(2026, 7, 10, tzinfo=UTC))
    with pytest.raises(InvalidInput, match="timezone"):
        _evaluate(place, "RP-T-1", datetime(2026, 7, 10))


BAD_RISK_POINTS = [
    ({"hazard_type": "meteor"}, InvalidInput, "hazard_type 'meteor'"),
    ({"code": "has space"}, InvalidInput, "code 'has space'"),
    ({"unit_code": "500154999"}, NotFound, "unit '500154999'"),
    ({"point": (108.5, 31.3)}, InvalidGeometry, "outside unit 500154107"),
    ({"model": {"threshold_set": "nowhere"}}, InvalidInput, "threshold_set 'nowhere'"),
    ({"datastreams": {"rainfall": -3}}, InvalidInput, "positive integers"),
    ({"datastreams": {"wind": 3}}, InvalidInput, "unknown roles"),
    ({"building_codes": ["B-NONE"]}, InvalidInput, "unknown buildings"),
    ({"radius_m": 0}, InvalidInput, "radius_m"),
]


def test_bad_risk_points_are_rejected_and_change_nothing(place):
    before = table_counts(place)
    for change, error, match in BAD_RISK_POINTS:
        with pytest.raises(error, match=match):
            _create(place, **change)
    assert table_counts(place) == before


def test_duplicates_and_scope_on_create(place):
    _create(place)
    with pytest.raises(Conflict):
        _create(place)
    with place.sessions() as s, pytest.raises(NotFound):
        service.create_risk_point(s, ACTOR, Scope(unit_paths=("/500154/500154107/",)),
                                  {"code": "RP-X", "name": "x", "hazard_type": "collapse", "unit_code": "500154108",
                                   "geometry": Point(108.4, 31.3)})
    with place.sessions() as s:
        yihe = Scope(unit_paths=("/500154/500154107/",))
        dade = Scope(unit_paths=("/500154/500154108/",))
        assert [r.code for r in service.list_risk_points(s, yihe)[0]] == ["RP-T-1"]
        assert service.list_risk_points(s, dade) == ([], 0)
        with pytest.raises(NotFound):
            service.risk_point_detail(s, dade, "RP-T-1")
        assert s.scalar(select(func.count()).select_from(RiskPoint)) == 1


def test_displacement_gates_sustained_red_and_inverse_velocity(place):
    """One 25-mm day (α = 85.4°) is held at orange until sustained; an α = 2 acceleration whose forecast
    failure falls inside the evacuation lead time is red, with the forecast in the reasons."""
    _create(place, datastreams={"displacement": [GNSS1, GNSS2]})
    now = datetime(2026, 7, 20, tzinfo=UTC)
    hours = now.timestamp() - 3600.0 * np.arange(24 * 20, -1, -1)
    days = (hours - hours[0]) / 86400
    step = np.where(days > days[-1] - 1, (days - (days[-1] - 1)) * 25.0, 0.0)  # the last day: +25 mm
    jump = 2.0 * days + step
    t_fail = days[-1] + 0.4  # failure ~10 h after now; acceleration from day 15
    tau = np.clip(days - 15, 0, None)
    accel = 2.0 * days - 2.0 * (t_fail - 15) * np.log(1 - tau / (t_fail - 15)) - 2.0 * tau
    arrays = {GNSS1: jump, GNSS2: jump}

    def series(ds, start, end):
        keep = (hours >= start.timestamp()) & (hours <= end.timestamp())
        return hours[keep], arrays[ds][keep]

    held = _evaluate(place, "RP-T-1", now, series)
    angles = [i["output"]["tangent_angle_deg"] for i in held.indicators]
    assert all(a > 85 for a in angles) and held.level == "orange"
    assert all("consecutive readings" in i["output"]["notes"][0] for i in held.indicators)
    arrays.update({GNSS1: accel, GNSS2: accel})
    red = _evaluate(place, "RP-T-1", now, series)
    forecast = red.indicators[0]["output"]["failure_forecast"]
    assert red.level == "red" and forecast is not None and forecast["r2"] > 0.8
    t_true = datetime.fromtimestamp(hours[0] + t_fail * 86400, UTC)
    assert datetime.fromisoformat(forecast["low"]) - timedelta(hours=12) <= t_true <= datetime.fromisoformat(forecast["high"]) + timedelta(hours=12)
    assert any("predicted failure" in n for n in red.indicators[0]["output"]["notes"])

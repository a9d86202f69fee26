"""Risk points and their warning evaluation on both backends: levels and why, history, the level-change
hook, idempotent re-evaluation, cancel, bad input; observations are real rows in the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Point, box
from sqlalchemy import func, select

from cityops.core import audit
from cityops.core.bus import store as bus_store
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
            "model": {"threshold_set": "kaizhou_demo", "displacement": {"v_constant_mm_per_day": demo.CREEP_MM_PER_DAY}}, **extra}
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
    levels = [_evaluate(place, "RP-T-1", at).level for at in _steps()]
    seen = _level_events(place)
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
    # Every change is a warning.level_changed event, with the reasons that decided it.
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
    assert disp["output"]["tangent_angle_deg"] > 45 and disp["model"]["parameters"]["v_constant_mm_per_day"] == demo.CREEP_MM_PER_DAY
    assert disp["observations"]["recent"][-1][1] > 0
    assert by_kind["tilt"]["output"]["limit_pct"] == 3.0
    assert assessment["reasons"] and any("mm" in r for r in assessment["reasons"])
    # Every level change, not only the latest, is stored with the evidence that decided it.
    for w in history:
        _assert_full_evidence(w.reasons, w.level)
    # Red came from independent evidence: the rain and the slope's displacement, not one kind twice.
    red = history[-1].reasons["decision"]
    kinds = {d["observed_property"] for d in red["deciding"] + red["confirmed_by"]}
    assert red["held_at"] is None and red["confirmed_by"] and len(kinds) >= 2


def _assert_full_evidence(evidence: dict, level: str) -> None:
    """The readings, the model and its output behind a stored level, and reasons that name them."""
    assert evidence["reasons"] and evidence["reasons_en"] and len(evidence["reasons"]) == len(evidence["reasons_en"])
    decision = evidence["decision"]
    assert decision["rule_zh"] and decision["independent_when_different"] == ["observed_property"]
    ok = [i for i in evidence["indicators"] if i["status"] == "ok"]
    deciding = [i for i in ok if any(d["datastream_id"] == i["datastream_id"] for d in decision["deciding"])]
    assert deciding, evidence
    for i in ok:
        assert i["observations"]["count"] > 0 and i["observations"]["recent"]
        assert i["model"]["source"] and i["model"]["formula"] and i["output"] and i["figures"]
        assert i["name_zh"] and i["observed_property"] and i["mechanism"]
        assert i["summary_zh"] in evidence["reasons"] and i["summary_en"] in evidence["reasons_en"]
        for note in i["notes"]:  # the notes that raised or held an indicator are reasons too
            assert note["zh"] in evidence["reasons"] and note["en"] in evidence["reasons_en"]
    for note in decision["notes"]:
        assert note["zh"] in evidence["reasons"]
    tilt = [i for i in ok if i["indicator"] == "tilt"]
    for i in tilt:  # the tilt reason says what share of the limit was reached
        share = f"{round(i['output']['share_of_limit'] * 100, 1)}%"
        assert share in i["summary_zh"] and "limit" in i["summary_en"]
        assert next(f for f in i["figures"] if f["key"] == "share_of_limit")["unit"] == "%"


def _level_events(store) -> list:
    with store.sessions() as s:
        return [e.payload for e in bus_store.read_after(s, (0, 0), {"warning.level_changed"}, 1000)]


def test_the_level_change_event_is_committed_with_the_warning_and_only_with_it(place):
    _create(place)
    _storm(place)
    with place.sessions() as s:
        undone = service.evaluate_risk_point(s, "RP-T-1", service.stored_series(s), demo.REPLAY_END, commit=False)
        s.rollback()
    assert undone.changed and _level_events(place) == []
    result = _evaluate(place, "RP-T-1", demo.REPLAY_END)
    [event] = _level_events(place)
    assert (event.level, event.previous_level, event.risk_point_code) == (result.level, "none", "RP-T-1")
    assert event.reasons == result.reasons and event.radius_m > 0 and event.lon is not None


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
    # A risk point's model overrides are judged by the catalogue's own rules.
    ({"model": {"wind": {}}}, InvalidInput, "unknown entries"),
    ({"model": {"displacement": {"noise_mm": 0}}}, InvalidInput, "noise_mm must be positive"),
    ({"model": {"displacement": {"noise_mm": "loud"}}}, InvalidInput, "noise_mm must be a number"),
    ({"model": {"inverse_velocity": {"short_window": 40}}}, InvalidInput, "long_window must be longer"),
    ({"model": {"tilt": {"storeys": 0}}}, InvalidInput, "storeys must be an integer ≥ 1"),
    ({"model": {"tangent_angle": {"colour": "red"}}}, InvalidInput, "model.tangent_angle must be an object"),
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


def _slope(now: datetime, days_back: int = 20):
    """Hourly times ending at ``now`` and their day numbers from the first reading."""
    hours = now.timestamp() - 3600.0 * np.arange(24 * days_back, -1, -1)
    return hours, (hours - hours[0]) / 86400


def _series_of(hours, arrays):
    def series(ds, start, end):
        keep = (hours >= start.timestamp()) & (hours <= end.timestamp())
        return hours[keep], arrays[ds][keep]

    return series


def test_displacement_gates_sustained_red_and_inverse_velocity(place):
    """One 140-mm day on a slope creeping at 10 mm/day (α = 85.9°) is held at orange until sustained; an α = 2
    acceleration whose forecast failure falls inside the evacuation lead time makes the indicator red, with the
    forecast and the notes in the reasons."""
    _create(place, datastreams={"displacement": [GNSS1]})
    now = datetime(2026, 7, 20, tzinfo=UTC)
    hours, days = _slope(now)
    creep = demo.CREEP_MM_PER_DAY
    step = np.where(days > days[-1] - 1, (days - (days[-1] - 1)) * 140.0, 0.0)  # the last day: +140 mm
    jump = creep * days + step
    t_fail = days[-1] + 0.4  # failure ~10 h after now; acceleration from day 15
    tau = np.clip(days - 15, 0, None)
    accel = creep * days - creep * (t_fail - 15) * np.log(1 - tau / (t_fail - 15)) - creep * tau
    arrays = {GNSS1: jump}
    held = _evaluate(place, "RP-T-1", now, _series_of(hours, arrays))
    disp = held.indicators[0]
    assert disp["output"]["tangent_angle_deg"] > 85 and held.level == "orange"
    assert [n["code"] for n in disp["notes"]] == ["red_not_sustained"]
    assert "暂定橙色" in held.reasons[1] and "held at orange" in held.reasons_en[1]
    arrays[GNSS1] = accel
    red = _evaluate(place, "RP-T-1", now, _series_of(hours, arrays))
    disp = red.indicators[0]
    forecast = disp["output"]["failure_forecast"]
    assert disp["level"] == "red" and forecast is not None and forecast["r2"] > 0.8
    assert red.level == "orange"  # one station alone: red needs independent evidence (next test)
    assert disp["output"]["inverse_velocity"]["gate"] is None and disp["output"]["inverse_velocity"]["onset"]
    t_true = datetime.fromtimestamp(hours[0] + t_fail * 86400, UTC)
    assert datetime.fromisoformat(forecast["low"]) - timedelta(hours=12) <= t_true <= datetime.fromisoformat(forecast["high"]) + timedelta(hours=12)
    assert any("predicted failure" in r for r in red.reasons_en) and any("反速度法" in r for r in red.reasons)


def test_two_gnss_stations_on_one_slope_alone_cannot_make_red(place):
    """Independence is a property of the rule (science §3.5): two GNSS stations observe one property by one
    mechanism, so however red both are they are one line of evidence; red needs a different observed
    property — here the house tilt reaching 黄."""
    _create(place, datastreams={"displacement": [GNSS1, GNSS2], "tilt": [{"id": TILT, "storeys": 2}]})
    now = datetime(2026, 7, 20, tzinfo=UTC)
    hours, days = _slope(now)
    creep = demo.CREEP_MM_PER_DAY
    t_fail = days[-1] + 0.4
    tau = np.clip(days - 15, 0, None)
    accel = creep * days - creep * (t_fail - 15) * np.log(1 - tau / (t_fail - 15)) - creep * tau
    arrays = {GNSS1: accel, GNSS2: accel * 1.05, TILT: np.full(len(hours), 0.5)}  # tilt 0.5 %: 17 % of the 3 % limit
    two = _evaluate(place, "RP-T-1", now, _series_of(hours, arrays))
    gnss = [i for i in two.indicators if i["indicator"] == "displacement"]
    assert [i["level"] for i in gnss] == ["red", "red"] and two.level == "orange"
    assert two.decision["held_at"] == "orange" and two.decision["confirmed_by"] == []
    assert two.reasons[0].startswith("红色预警需第二个独立指标") and "count once" in two.reasons_en[0]
    arrays[TILT] = np.full(len(hours), 1.6)  # 53 % of the limit: 黄, a different observed property
    confirmed = _evaluate(place, "RP-T-1", now, _series_of(hours, arrays))
    assert confirmed.level == "red" and confirmed.changed
    assert [c["observed_property"] for c in confirmed.decision["confirmed_by"]] == ["house_tilt"]
    with place.sessions() as s:
        stored = s.scalar(select(RiskWarning).order_by(RiskWarning.id.desc()).limit(1))
    _assert_full_evidence(stored.reasons, "red")


def test_independence_by_mechanism_is_a_catalogue_choice(place, monkeypatch):
    """Demanding a different mechanism as well: GNSS and the house tilt both tell of deformation, so they no
    longer confirm each other; rainfall (a trigger) does."""
    from cityops.warning.catalogue import catalogue

    cat = catalogue()
    monkeypatch.setitem(cat.params["combination"], "independent_when_different", ["observed_property", "mechanism"])
    _create(place, datastreams={"displacement": [GNSS1], "tilt": [{"id": TILT, "storeys": 2}]})
    now = datetime(2026, 7, 20, tzinfo=UTC)
    hours, days = _slope(now)
    creep = demo.CREEP_MM_PER_DAY
    t_fail = days[-1] + 0.4
    tau = np.clip(days - 15, 0, None)
    accel = creep * days - creep * (t_fail - 15) * np.log(1 - tau / (t_fail - 15)) - creep * tau
    a = _evaluate(place, "RP-T-1", now, _series_of(hours, {GNSS1: accel, TILT: np.full(len(hours), 2.5)}))
    assert [i["level"] for i in a.indicators] == ["red", "orange"] and a.level == "orange"
    assert "机理" in a.reasons[0]


def test_tilt_reason_gives_the_share_of_the_limit_and_unknown_storeys(place):
    _create(place, datastreams={"tilt": [{"id": TILT}]})  # no storeys, no building: the stricter limit applies
    now = datetime(2026, 7, 20, tzinfo=UTC)
    hours, _ = _slope(now, 2)
    a = _evaluate(place, "RP-T-1", now, _series_of(hours, {TILT: np.full(len(hours), 1.6)}))
    tilt = a.indicators[0]
    assert tilt["level"] == "orange" and tilt["output"]["storeys"] == 3 and not tilt["output"]["storeys_known"]
    assert "达到限值 2.0%(3 层)的 80.0%" in a.reasons[0] and "80.0 % of the limit 2.0 %" in a.reasons_en[0]
    assert "层数不详" in a.reasons[1] and [n["code"] for n in tilt["notes"]] == ["storeys_unknown"]


def test_rain_below_the_global_floor_says_so(place):
    """A long, light event between the demo set's E₅ and the Guzzetti 2008 floor (D > 113 h): no warning, and
    the reasons say the floor withheld it."""
    _create(place, datastreams={"rainfall": RAIN})
    now = datetime(2026, 7, 20, tzinfo=UTC)
    hours = now.timestamp() - 3600.0 * np.arange(24 * 12, -1, -1)
    from cityops.warning.catalogue import catalogue

    ts = catalogue().threshold_sets["kaizhou_demo"]
    e5, floor = float(ts.curve("blue").event_rainfall(150)), float(ts.floor.event_rainfall(150))
    rain = np.where(hours > now.timestamp() - 150 * 3600, (e5 + floor) / 2 / 150, 0.0)
    a = _evaluate(place, "RP-T-1", now, _series_of(hours, {RAIN: rain}))
    r = a.indicators[0]
    assert a.level == "none" and r["output"]["floor_withheld_at_h"] > 113
    assert [n["code"] for n in r["notes"]] == ["below_floor"] and any("全球下限" in x for x in a.reasons)

"""The verification cases of science §6, each asserting its expected numbers, plus the gates and bad input
of the pure warning models (cityops.warning.models)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cityops.warning.catalogue import catalogue, load_catalogue
from cityops.warning.models import antecedent, calibration, displacement, grading, house, logistic, rainfall, skill
from cityops.warning.models.levels import level_key

REL = 1e-3
CAT = catalogue()
CAL = CAT.params["calibration"]
FIT = {"probabilities": CAL["probabilities"], "min_events": CAL["min_events"], "quantiles": CAL["bootstrap_quantiles"]}
TA = CAT.params["tangent_angle"]
IV = CAT.params["inverse_velocity"]
GATES = {"min_points": IV["min_points"], "min_r2": IV["min_r2"], "confidence": IV["confidence"]}


def approx(value, rel=REL, abs=None):
    return pytest.approx(value, rel=rel, abs=abs)


# ------------------------------------------------------------------------ §6.1 published ID curves
TABLE_61 = [  # D, Caine I, Caine E, Guzzetti08 I, E, CADSES I, E
    (1, 14.820, 14.82, 2.200, 2.20, 8.670, 8.67),
    (3, 9.655, 28.97, 1.357, 4.07, 4.436, 13.31),
    (6, 7.368, 44.21, 1.000, 6.00, 2.906, 17.44),
    (12, 5.623, 67.48, 0.737, 8.85, 1.904, 22.85),
    (24, 4.291, 102.99, 0.543, 13.04, 1.248, 29.94),
    (48, 3.275, 157.18, 0.401, 19.23, 0.817, 39.24),
    (72, 2.796, 201.29, 0.335, 24.13, 0.638, 45.96),
    (120, 2.291, 274.88, 0.268, 32.12, 0.467, 56.09),
    (240, 1.748, 419.54, 0.197, 47.35, 0.306, 73.50),
]


@pytest.mark.parametrize("row", TABLE_61, ids=lambda r: f"D={r[0]}h")
def test_published_id_curves_at_fixed_durations(row):
    d, *expected = row
    for i, key in enumerate(("caine1980", "guzzetti2008", "guzzetti2007_cadses")):
        curve = CAT.curves[key]
        i_exp, e_exp = expected[2 * i], expected[2 * i + 1]
        # Table values are printed to 3 decimals (I) and 2 decimals (E): compare at that precision.
        assert float(curve.intensity(d)) == approx(i_exp, rel=REL, abs=6e-4)
        assert float(curve.event_rainfall(d)) == pytest.approx(e_exp, abs=6e-3)
        assert float(curve.intensity(d)) * d == pytest.approx(float(curve.event_rainfall(d)), abs=1e-2)


def test_other_curves_at_24_hours():
    for key, i_exp, e_exp in (("aleotti2004", 3.878, 93.08), ("godt2006", 2.280, 54.73), ("saito2010", 0.954, 22.90)):
        curve = CAT.curves[key]
        assert float(curve.intensity(24)) == pytest.approx(i_exp, abs=6e-4), key
        assert float(curve.event_rainfall(24)) == pytest.approx(e_exp, abs=6e-3), key


def test_curve_metadata_names_source_and_calibration_status():
    meta = CAT.curves["caine1980"].metadata()
    assert meta["source"].startswith("Caine") and meta["calibration"] == "uncalibrated – literature default"
    assert meta["valid_range"] == [0.167, 240.0] and meta["parameters"]["gamma"] == pytest.approx(0.61)


# -------------------------------------------------------------------------- §6.2 exceedance index
def test_exceedance_index_80mm_in_24h():
    assert float(CAT.curves["guzzetti2008"].exceedance(80, 24)) == pytest.approx(6.13, abs=5e-3)
    assert float(CAT.curves["caine1980"].exceedance(80, 24)) == pytest.approx(0.777, abs=5e-4)
    # A 24-h 暴雨 of 50–100 mm: ~4–8× Guzzetti 2008 but below Caine.
    for e in (50, 100):
        assert 3.8 < float(CAT.curves["guzzetti2008"].exceedance(e, 24)) < 7.7
        assert float(CAT.curves["caine1980"].exceedance(e, 24)) < 1


def test_exceedance_outside_validity_range_is_not_evaluated():
    assert math.isnan(float(CAT.curves["caine1980"].exceedance(500, 300)))
    assert math.isnan(float(CAT.curves["godt2006"].exceedance(50, 6)))


# ----------------------------------------------------------------- §6.3 antecedent effective rainfall
RAIN_63 = [10, 0, 25, 40, 5, 0, 0, 30, 0, 0]


@pytest.mark.parametrize("k, pinned, other", [(0.80, 43.856, 54.819), (0.84, 52.660, 62.690), (0.90, 69.335, 77.039)])
def test_antecedent_rainfall_pinned_convention(k, pinned, other):
    pa = antecedent.antecedent_rainfall(RAIN_63, k)
    assert pa == approx(pinned)
    assert pa != approx(other)  # the K^(i−1) convention must not be produced
    assert pa / k == approx(other)


def test_effective_rainfall_and_half_lives():
    assert float(antecedent.effective_rainfall(20, RAIN_63, 0.8)) == approx(63.856)
    assert antecedent.half_life_from_k(0.8) == approx(3.106)
    assert antecedent.k_from_half_life(72, step=24) == approx(0.7937)
    assert antecedent.k_from_half_life(24, step=24) == 0.5


def test_antecedent_vectorised_and_window():
    rows = np.array([RAIN_63, [0] * 10, RAIN_63 + [100, 100]][:2])
    assert antecedent.antecedent_rainfall(rows, 0.8) == approx([43.856, 0.0])
    # Only n days count: rain 11 and 12 days ago is ignored with n = 10.
    assert antecedent.antecedent_rainfall(RAIN_63 + [100, 100], 0.8, n_days=10) == approx(43.856)


def test_antecedent_rejects_bad_input():
    with pytest.raises(ValueError, match="K"):
        antecedent.antecedent_rainfall(RAIN_63, 1.2)
    with pytest.raises(ValueError, match="negative"):
        antecedent.antecedent_rainfall([-1, 2], 0.8)


def test_daily_totals_respect_the_day_boundary():
    day = 86400.0
    end = 10 * day  # start of the current rainfall day
    times = np.array([end - 1, end - day, end - day - 1, end - 3 * day + 5, end + 10])
    values = np.array([1.0, 2.0, 4.0, 8.0, 100.0])
    assert antecedent.daily_totals(times, values, end, 3).tolist() == [3.0, 4.0, 8.0]


# --------------------------------------------------------------------- §6.4 frequentist threshold
@pytest.fixture(scope="module")
def synthetic_events():
    rng = np.random.default_rng(64)
    d = 10 ** rng.uniform(0, np.log10(316), 5000)
    e = 10 ** (1 + 0.4 * np.log10(d) + rng.normal(0, 0.2, 5000))
    return d, e


def test_frequentist_fit_recovers_the_synthetic_threshold(synthetic_events):
    fit = calibration.fit_frequentist(*synthetic_events, **FIT, n_bootstrap=200, seed=7)
    assert fit.gamma == pytest.approx(0.400, abs=0.02)
    assert fit.alpha_p["blue"] == pytest.approx(4.688, abs=0.25)
    assert fit.sigma == pytest.approx(0.2, abs=0.01)
    boot = fit.bootstrap
    # §6.4: the bootstrap interval contains both true values — α₅ = 4.688 itself, not merely 4.688 ± 0.25.
    assert boot["gamma"]["q05"] <= 0.4 <= boot["gamma"]["q95"]
    assert boot["blue"]["q05"] <= 4.688 <= boot["blue"]["q95"]
    assert boot["blue"]["q05"] <= fit.alpha_p["blue"] <= boot["blue"]["q95"]
    # Only the intercept moves: the four curves are ordered and share γ.
    values = [fit.alpha_p[k] for k in ("blue", "yellow", "orange", "red")]
    assert values == sorted(values)


def test_kde_residual_model_agrees_with_the_normal_on_gaussian_noise(synthetic_events):
    normal = calibration.fit_frequentist(*synthetic_events, **FIT)
    kde = calibration.fit_frequentist(*synthetic_events, **FIT, method="kde")
    for level in ("blue", "yellow", "orange", "red"):
        assert kde.alpha_p[level] == pytest.approx(normal.alpha_p[level], rel=0.03)


def test_fixed_gamma_estimates_only_alpha(synthetic_events):
    d, e = synthetic_events
    fit = calibration.fit_frequentist(d[:60], e[:60], **FIT, gamma=0.4)
    assert fit.gamma == 0.4 and fit.alpha_p["orange"] == pytest.approx(10, rel=0.15)


@pytest.mark.parametrize("p, alpha_p, e24", [(0.05, 4.688, 16.72), (0.20, 6.787, 24.20), (0.50, 10.000, 35.65), (0.80, 14.734, 52.53)])
def test_noise_free_intercepts_of_the_four_levels(p, alpha_p, e24):
    z = float(__import__("scipy").stats.norm.ppf(p))
    a = 10 * 10 ** (z * 0.2)
    assert a == pytest.approx(alpha_p, abs=6e-4)
    assert a * 24**0.4 == pytest.approx(e24, abs=6e-3)
    level = {0.05: "blue", 0.20: "yellow", 0.50: "orange", 0.80: "red"}[p]
    assert CAT.threshold_sets["kaizhou_demo"].alpha[level] == pytest.approx(alpha_p, abs=6e-4)


def test_level_mapping_at_24_hours():
    t = CAT.threshold_sets["kaizhou_demo"]
    ranks = t.rank(np.array([10, 20, 30, 40, 60]), 24)
    assert [level_key(r) for r in ranks] == ["none", "blue", "yellow", "orange", "red"]


def test_calibration_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        calibration.fit_frequentist([1, 2], [3, 4], **FIT)
    with pytest.raises(ValueError, match="positive"):
        calibration.fit_frequentist([1, 2, -3], [3, 4, 5], **FIT)
    with pytest.raises(ValueError, match="residual model"):
        calibration.fit_frequentist([1, 2, 3], [3, 4, 5], **FIT, method="magic")


def test_the_floor_not_t5_sets_blue_for_long_events():
    """Above ≈ 113 h the Guzzetti 2008 floor lies above the demo set's E₅: the floor decides 蓝 there (the
    catalogue says why); below it T5 does. The floor never reaches 黄 within the set's range."""
    ts = CAT.threshold_sets["kaizhou_demo"]
    e5, floor = ts.curve("blue").event_rainfall, ts.floor.event_rainfall
    assert ts.floor_crossing_h("blue") == pytest.approx((4.688 / 2.20) ** (1 / 0.16), rel=1e-6)
    assert ts.floor_crossing_h("blue") == pytest.approx(113.1, abs=0.1)
    assert ts.floor_crossing_h("yellow") > ts.d_max_h
    for d in (24.0, 72.0, 110.0):  # T5 is the higher curve: at E₅ the level is 蓝
        assert float(floor(d)) < float(e5(d))
        assert level_key(ts.rank(float(e5(d)) * 1.001, d)) == "blue" and not ts.withheld_by_floor(float(e5(d)) * 1.001, d)
    for d in (150.0, 240.0, 316.0):  # the floor is the higher curve: between the two, no warning
        between = (float(e5(d)) + float(floor(d))) / 2
        assert float(floor(d)) > float(e5(d))
        assert ts.rank(between, d) == 0 and ts.withheld_by_floor(between, d)
        assert level_key(ts.rank(float(floor(d)) * 1.001, d)) == "blue"
    # A running 150-h event between the curves: the evaluation records that the floor withheld 蓝.
    hourly = np.zeros((1, 400))
    hourly[0, -150:] = (float(e5(150.0)) + float(floor(150.0))) / 2 / 150
    ev = rainfall.evaluate_event(hourly, ts, CAT.params["rainfall"]["durations_h"],
                                 event_hours=rainfall.current_event_hours(hourly, CAT.params["rainfall"]["dry_spell_h"]))
    assert ev.rank[0] == 0 and ev.floor_withheld_h[0] == 150.0
    text = __import__("cityops.warning.catalogue", fromlist=["CATALOGUE"]).CATALOGUE.read_text(encoding="utf-8")
    assert "The floor, not T5, sets 蓝 for long events" in text and "113 h" in text


# --------------------------------------------------------------------- running event (science §1.3)
def test_running_event_evaluation_records_the_deciding_duration():
    t = CAT.threshold_sets["kaizhou_demo"]
    hourly = np.zeros((3, 96))
    hourly[1, -24:] = 60 / 24  # 60 mm spread over 24 h → red at D = 24
    hourly[2, -3:] = 10  # 30 mm in 3 h: E_80(3) = 14.734·3^0.4 = 22.87 → red at D ≤ 3
    ev = rainfall.evaluate_event(hourly, t, (1, 3, 6, 12, 24, 48, 72), event_hours=rainfall.current_event_hours(hourly, 48))
    assert [level_key(r) for r in ev.rank] == ["none", "red", "red"]
    assert ev.duration_h[1] == 24 and ev.observed_mm[1] == pytest.approx(60)
    assert ev.duration_h[2] in (1.0, 3.0) and ev.index[2] > 1


def test_event_reconstruction_splits_at_dry_spells():
    hourly = np.zeros((3, 200))
    hourly[0, 10:20] = 5  # an old event, then a 60-h gap, then a new one of 20 h
    hourly[0, 80:100] = 1
    hourly[0, 100:] = 0
    hourly[0, 180:] = 2
    hourly[1, 150:160] = 3  # ended 40 h ago: still the running event under a 48-h dry spell
    assert rainfall.current_event_hours(hourly, 48).tolist() == [20, 50, 0]


# --------------------------------------------------------------------------------- §6.5 skill scores
def test_finley_tornado_skill_scores():
    s = skill.Contingency(28, 72, 23, 2680).scores()
    expected = {"pc": 0.9661, "pod": 0.5490, "far": 0.7200, "pofd": 0.02616, "tss": 0.5229, "csi": 0.2276,
                "hss": 0.3553, "ets": 0.2160, "a_random": 1.8195, "bias": 1.9608}
    for key, value in expected.items():
        assert s[key] == approx(value), key


def test_never_warn_beats_finley_on_accuracy_only():
    never = skill.Contingency(0, 0, 51, 2752).scores()
    assert never["pc"] == approx(0.9818) and never["pc"] > 0.9661
    assert never["tss"] == 0 and never["pod"] == 0


def test_contingency_from_arrays_and_roc():
    warned = [1, 1, 0, 0, 1]
    observed = [1, 0, 1, 0, 1]
    assert skill.Contingency.from_arrays(warned, observed) == skill.Contingency(2, 1, 1, 1)
    points = skill.roc([0.9, 0.2, 0.6, 0.1], [1, 0, 1, 0], [0.5, 0.15])
    assert points[0]["pod"] == 1 and points[0]["pofd"] == 0 and points[1]["pofd"] == 0.5
    with pytest.raises(ValueError, match="non-negative"):
        skill.Contingency(-1, 0, 0, 0)


# ----------------------------------------------------------- §6.6 inverse velocity and Saito
T66 = np.array([80.0, 85.0, 90.0, 95.0])


def test_inverse_velocity_alpha_2_is_exact():
    v = 1 / (0.5 * (100 - T66))
    assert v == approx([0.1, 0.1333, 0.2, 0.4])
    f = displacement.inverse_velocity_forecast(T66, v, **GATES)
    assert f.t_failure == pytest.approx(100.0, abs=1e-9) and f.r2 == pytest.approx(1.0)


@pytest.mark.parametrize("exponent, expected", [(2.0, 95.0), (0.5, 110.66)], ids=["alpha=1.5 early", "alpha=3 late"])
def test_inverse_velocity_other_exponents(exponent, expected):
    for constant in (1.0, 0.37):  # the value does not depend on the constant in front
        v = 1 / (constant * (100 - T66) ** exponent)
        assert displacement.inverse_velocity_forecast(T66, v, **GATES).t_failure == pytest.approx(expected, abs=5e-3)


def test_saito_three_point():
    # α = 2 law: x = −(1/A)·ln(t_f − t); equal increments at 0, 50, 75 when t_f = 100.
    x = lambda t: -np.log(100 - t)  # noqa: E731
    assert x(50) - x(0) == pytest.approx(x(75) - x(50))
    assert displacement.saito_three_point(0, 50, 75) == 100.0
    with pytest.raises(ValueError):
        displacement.saito_three_point(0, 50, 100)


def test_inverse_velocity_with_noise_brackets_the_true_failure_time():
    """Velocity noise on an α = 2 series: the fitted interval contains the true t_f."""
    rng = np.random.default_rng(66)
    t = np.arange(60.0, 97.0, 0.5)
    v = 1 / (0.5 * (100 - t)) * (1 + rng.normal(0, 0.03, len(t)))
    f = displacement.inverse_velocity_forecast(t, v, min_points=10, min_r2=0.8, confidence=IV["confidence"])
    assert f is not None and f.low < 100 < f.high and f.high - f.low < 10


def _gnss_series(seed: int, now: float, t_fail: float = 20.0, onset: float = 10.0, creep: float = 10.0):
    """Hourly cumulative displacement (mm) of a slope creeping at ``creep`` mm/day that accelerates by the
    α = 2 law from ``onset`` to failure at ``t_fail`` (days), read by a GNSS of the catalogue's noise (σ = 2 mm)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, now + 1e-9, 1 / 24)
    tau = np.clip(t - onset, 0, None)
    span = t_fail - onset
    s = creep * t - creep * span * np.log(1 - tau / span) - creep * tau
    return t, s + rng.normal(0, CAT.params["displacement"]["noise_mm"], len(t))


def _inverse_velocity(t, s, short_window, long_window):
    dc = CAT.params["displacement"]
    return displacement.inverse_velocity(
        t, s, interval=IV["interval_h"] / 24, short_window=short_window, long_window=long_window, noise_mm=dc["noise_mm"],
        floor_factor=dc["noise_floor_factor"], onset_span=IV["onset_span"], onset_min_rise=IV["onset_min_rise"], **GATES)


def test_smoothing_with_a_short_and_a_long_average_is_what_makes_a_noisy_gnss_forecast():
    """§3.3 gate 1 on GNSS readings with the stated ±2 mm noise, one day before failure: the catalogue's short
    (24 h) and long (72 h) moving averages give a forecast whose interval holds the true t_f for nearly every
    noise draw; the raw 6-h velocities (window 1) rarely do — their floor is 4× higher and their scatter wide."""
    smoothed = raw = 0
    for seed in range(40):
        t, s = _gnss_series(seed, now=19.0)
        f = _inverse_velocity(t, s, IV["short_window"], IV["long_window"]).forecast
        smoothed += f is not None and f.low <= 20.0 <= f.high
        f = _inverse_velocity(t, s, 1, 2).forecast
        raw += f is not None and f.low <= 20.0 <= f.high
    assert smoothed >= 34 and raw <= 16, (smoothed, raw)
    # The smoothed points sit at the middle of their window, and the floors follow their windows.
    t, s = _gnss_series(3, now=19.0)
    r = _inverse_velocity(t, s, IV["short_window"], IV["long_window"])
    assert r.short_floor == pytest.approx(3 * np.sqrt(2) * 2.0 / (IV["short_window"] * IV["interval_h"] / 24))
    assert r.long_floor == pytest.approx(r.short_floor * IV["short_window"] / IV["long_window"])
    assert r.gate is None and 10.0 <= r.onset < 19.0 and r.points >= IV["min_points"]


def test_steady_noisy_creep_gives_no_forecast():
    """A slope creeping steadily, read with GNSS noise: no forecast, whatever the draw."""
    for seed in range(20):
        t, s = _gnss_series(seed, now=19.0, onset=1e9, t_fail=2e9)
        r = _inverse_velocity(t, s, IV["short_window"], IV["long_window"])
        assert r.forecast is None and r.gate is not None, (seed, r)


def test_noise_floor_is_derived_from_the_stated_gnss_noise():
    """science §3.4: floor ≈ 3 × the velocity resolution the noise implies (√2·σ/Δt for two readings of σ).
    With GNSS ±2 mm: 8.49 mm/day for daily intervals, 2.83 mm/day for the 72-h long average."""
    dc = CAT.params["displacement"]
    assert "noise_floor_mm_per_day" not in IV  # no free-standing constant beside the noise it should follow
    assert dc["noise_mm"] == 2.0 and dc["noise_floor_factor"] == 3.0
    assert displacement.velocity_resolution(2.0, 1.0) == pytest.approx(2.828, abs=1e-3)
    assert displacement.noise_floor(dc["noise_mm"], 1.0, dc["noise_floor_factor"]) == pytest.approx(8.485, abs=1e-3)
    assert displacement.noise_floor(dc["noise_mm"], 3.0, dc["noise_floor_factor"]) == pytest.approx(2.828, abs=1e-3)
    with pytest.raises(ValueError):
        displacement.velocity_resolution(2.0, 0)


def test_window_velocity_is_the_moving_average_of_interval_velocities():
    grid = np.arange(0.0, 3.01, 0.25)
    cum = grid**2
    w = displacement.window_velocity(grid, cum, 4)
    interval = np.diff(cum) / np.diff(grid)
    assert w.v == pytest.approx(np.convolve(interval, np.ones(4) / 4, mode="valid"))
    assert w.mid == pytest.approx(grid[2:-2])  # the middle of each 4-interval window
    assert len(displacement.window_velocity(grid[:3], cum[:3], 4).v) == 0


def test_inverse_velocity_gates():
    decelerating = 1 / (0.5 * (T66 - 70))
    assert displacement.inverse_velocity_forecast(T66, decelerating, **GATES) is None
    assert displacement.inverse_velocity_forecast(T66[:2], [0.1, 0.2], **{**GATES, "min_points": 3}) is None
    v = 1 / (0.5 * (100 - T66))
    assert displacement.inverse_velocity_forecast(T66, v, noise_floor=0.15, **{**GATES, "min_points": 3}) is None
    scattered = np.array([0.1, 0.4, 0.12, 0.5])
    assert displacement.inverse_velocity_forecast(T66, scattered, **{**GATES, "min_r2": 0.9}) is None


def test_onset_of_acceleration():
    steady = np.full(20, 1.0)
    assert displacement.onset_of_acceleration(steady, IV["onset_span"], IV["onset_min_rise"]) is None
    v = np.concatenate((np.full(20, 1.0), 1 + np.arange(1, 11) ** 2 * 0.1))
    onset = displacement.onset_of_acceleration(v, IV["onset_span"], IV["onset_min_rise"])
    assert onset is not None and 18 <= onset <= 21


# ------------------------------------------------------------------------- §6.7 tangent angle
TABLE_67 = [(2.0, 45.000, "blue"), (10.0, 78.690, "yellow"), (11.3, 79.963, "yellow"), (11.34, 79.998, "yellow"),
            (11.35, 80.006, "orange"), (22.86, 84.99998, "orange"), (22.9, 85.009, "red"), (40, 87.138, "red")]


@pytest.mark.parametrize("ds, angle, level", TABLE_67)
def test_improved_tangent_angle(ds, angle, level):
    a = float(displacement.tangent_angle(ds, 1.0, 2.0))
    assert a == pytest.approx(angle, abs=6e-4 if angle != 84.99998 else 5e-6)
    assert level_key(displacement.tangent_rank(a, TA["yellow_above_deg"], TA["orange_from_deg"], TA["red_from_deg"])) == level


def test_tangent_angle_boundaries_and_unit_invariance():
    assert 2 * math.tan(math.radians(80)) == pytest.approx(11.343, abs=5e-4)
    assert 2 * math.tan(math.radians(85)) == pytest.approx(22.860, abs=5e-4)
    assert float(displacement.tangent_angle(10.0 / 24, 1.0, 2.0 / 24)) == pytest.approx(78.690, abs=6e-4)
    for ratio, angle in ((1, 45), (5.671, 80), (11.430, 85), (57.29, 89)):
        assert float(displacement.tangent_angle(ratio, 1, 1)) == pytest.approx(angle, abs=1e-3)
    with pytest.raises(ValueError):
        displacement.tangent_angle(1, 1, 0)


# ------------------------------------------------------------------------------ §6.8 logistic M1
@pytest.mark.parametrize("window, r50, r75, p4", [(15, 6.44760213, 8.39895611, 0.2013304),
                                                   (30, 9.78319783, 12.76046691, 0.10583586),
                                                   (60, 17.63736264, 23.67369389, 0.07712972)])
def test_staley_m1_inversion(window, r50, r75, p4):
    m1 = CAT.logistic_m1
    assert float(logistic.rainfall_for(0.5, 0.2, 0.3, 0.4, window, m1)) == pytest.approx(r50, rel=1e-7)
    assert float(logistic.rainfall_for(0.75, 0.2, 0.3, 0.4, window, m1)) == pytest.approx(r75, rel=1e-7)
    assert float(logistic.probability(4, 0.2, 0.3, 0.4, window, m1)) == pytest.approx(p4, rel=1e-6)
    assert float(logistic.probability(r50, 0.2, 0.3, 0.4, window, m1)) == pytest.approx(0.5)


def test_staley_i15():
    assert float(logistic.rainfall_for(0.5, 0.2, 0.3, 0.4, 15, CAT.logistic_m1)) * 4 == pytest.approx(25.79, abs=5e-3)
    with pytest.raises(ValueError, match="window"):
        logistic.probability(4, 0.2, 0.3, 0.4, 45, CAT.logistic_m1)


# -------------------------------------------------------------------- §6.9 grading and lookups
def test_threat_grading():
    def grade(people=0, loss=0.0):
        return grading.threat_grade(people, loss, CAT.threat_grades, CAT.threat_grade_below)

    assert grade(people=120) == ("III", "中型") and grade(loss=8_000_000) == ("III", "中型")
    assert grade(1200) == ("I", "特大型")
    assert grade(99) == ("IV", "小型") and grade(500) == ("II", "大型")
    assert grade(10, 60_000_000) == ("II", "大型")  # the more severe of people and money


def test_house_tilt_per_jgj_125():
    rule = CAT.tilt_rule
    assert rule.dangerous(3.2, storeys=2)
    assert rule.dangerous(2.1, storeys=3)
    assert not rule.dangerous(1.8, storeys=3)
    assert not rule.dangerous(3.0, storeys=2)  # strict: exactly at the limit is not dangerous
    assert level_key(rule.judge(1.8, 3).rank) == "orange"
    assert level_key(rule.judge(1.6, 2).rank) == "yellow"
    assert level_key(rule.judge(3.2, 2).rank) == "red"
    assert level_key(rule.judge(1.1, 3, settlement_cracks=True).rank) == "yellow"
    cracks = {"crack_tilt_pct": rule.crack_tilt_pct, **CAT.params["house_cracks"]}
    assert house.tilt_with_cracks_dangerous(1.2, masonry_crack_mm=12, **cracks)
    assert not house.tilt_with_cracks_dangerous(0.9, masonry_crack_mm=12, **cracks)
    assert house.tilt_with_cracks_dangerous(1.2, parallel_crack_max_mm=6, **cracks)
    assert not house.tilt_with_cracks_dangerous(1.2, masonry_crack_mm=10, parallel_crack_max_mm=5, **cracks)  # strict
    with pytest.raises(ValueError):
        rule.limit_pct(0)


@pytest.mark.parametrize("tilt, storeys, level, share", [
    (1.6, 2, "yellow", 0.533),   # science §6.9: 黄 (≥ 1.5 %, < 2.25 %) — the old fixed ladder said 橙
    (2.0, 3, "orange", 1.0),     # exactly at the 2 % limit: not above it (JGJ 125 is strict) — the old ladder said 红
    (2.01, 3, "red", 1.005),
    (3.0, 2, "orange", 1.0),     # the low-rise limit is 3 %
    (3.01, 2, "red", 1.003),
    (1.8, 3, "orange", 0.9),
    (-1.6, 2, "yellow", 0.533),  # magnitude, either way
    (0.9, 3, "none", 0.45),
])
def test_one_storey_aware_tilt_rule(tilt, storeys, level, share):
    j = CAT.tilt_rule.judge(tilt, storeys)
    assert level_key(j.rank) == level and j.share_of_limit == pytest.approx(share, abs=1e-3)
    assert j.limit_pct == (3.0 if storeys <= 2 else 2.0) and j.storeys_known


def test_tilt_rule_unknown_storeys_and_trend():
    rule = CAT.tilt_rule
    unknown = rule.judge(1.6, None)
    assert not unknown.storeys_known and unknown.storeys == 3 and unknown.limit_pct == 2.0  # the stricter limit
    assert level_key(unknown.rank) == "orange"
    rising = [0.30, 0.32, 0.34, 0.36]  # three rises above the 0.01 % noise
    assert rule.rising_readings(rising) == 3 and level_key(rule.judge(0.36, 2, rising_readings=3).rank) == "blue"
    assert rule.rising_readings([0.30, 0.305, 0.31, 0.315]) == 0
    assert rule.judge(0.36, 2, rising_readings=2).rank == 0


@pytest.mark.parametrize("cum, rate, level", [(72, 71, "yellow"), (90, 40, "yellow"), (101, 50, "orange"), (100, 100, "red"),
                                              (60, 60, "none")])
def test_dual_control(cum, rate, level):
    assert level_key(displacement.dual_control_rank(cum, rate, **CAT.params["dual_control"])) == level


def test_velocity_classes():
    def vc(v):
        return displacement.velocity_class(v, CAT.velocity_classes, CAT.velocity_class_below)

    assert vc(6.0) == (7, "extremely rapid")
    assert vc(1e-3) == (5, "rapid")
    assert vc(1e-11) == (1, "extremely slow")
    # The catalogue's stated units become the m/s column of science §3.1.
    lower = {c: v for c, _, v in CAT.velocity_classes}
    assert lower[6] == pytest.approx(5e-2) and lower[5] == pytest.approx(5e-4, rel=0.01)
    assert lower[4] == pytest.approx(5e-6, rel=0.01) and lower[3] == pytest.approx(5e-8, rel=0.02)
    assert lower[2] == pytest.approx(5e-10, rel=0.02)


# ----------------------------------------------------------------------------- catalogue validation
def test_catalogue_rejects_bad_entries(tmp_path):
    text = (__import__("cityops.warning.catalogue", fromlist=["CATALOGUE"]).CATALOGUE).read_text(encoding="utf-8")
    bad = tmp_path / "catalogue.toml"
    bad.write_text(text.replace('floor_curve = "guzzetti2008"', 'floor_curve = "nowhere"'), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown floor curve 'nowhere'"):
        load_catalogue(bad)
    bad.write_text(text.replace("alpha = { blue = 4.688", "alpha = { blue = 40.688"), encoding="utf-8")
    with pytest.raises(ValueError, match="increase blue"):
        load_catalogue(bad)
    bad.write_text(text.replace("K = 0.8", "K = 1.8"), encoding="utf-8")
    with pytest.raises(ValueError, match="K must"):
        load_catalogue(bad)
    for old, new, message in [
        ('independent_when_different = ["observed_property"]', 'independent_when_different = ["colour"]', "independent_when_different"),
        ("noise_mm = 2.0", "noise_mm = -2.0", r"\[displacement\] noise_mm"),
        ("short_window = 4", "short_window = 40", "long_window must be longer"),
        ("red_from_deg = 85.0", "red_from_deg = 75.0", "angles must increase"),
        ("unknown_storeys = 3", "unknown_storeys = 0", "unknown_storeys"),
        ('name_zh = "房屋倾斜"\nname_en = "House tilt"\nobserved_property = "house_tilt"', 'name_zh = "房屋倾斜"\nname_en = "House tilt"',
         r"indicators.tilt\] missing \['observed_property'\]"),
        ("probabilities = { blue = 0.05, yellow = 0.20, orange = 0.50, red = 0.80 }\n# Quantiles",
         "probabilities = { blue = 0.05, yellow = 0.50, orange = 0.20, red = 0.80 }\n# Quantiles", "increasing"),
        ('{ class = 5, name = "rapid", lower = 1.8, unit = "m/h" }', '{ class = 5, name = "rapid", lower = 1.8, unit = "furlong/h" }', "velocity_classes"),
        ("people_min = 500,", "people_min = 5000,", "threat_grades"),
        ("people_min = 500,", "people = 500,", "threat_grades"),
        ('lower = 1.8, unit = "m/h"', 'lower = "fast", unit = "m/h"', "velocity_classes"),
        ("{ minutes = 30, B = -3.61,", "{ minutes = 30, Q = -3.61,", "logistic_m1"),
        # A floor that reached the 黄 curve would silence warnings the local set calibrated.
        ("alpha = 2.20\nbeta = 0.44", "alpha = 7.0\nbeta = 0.44", "reaches the yellow curve"),
    ]:
        assert old in text, old
        bad.write_text(text.replace(old, new), encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            load_catalogue(bad)


# ------------------------------------------------------------------------------------------ command line
def test_cli_calibrate_and_skill(tmp_path, synthetic_events):
    from typer.testing import CliRunner

    from cityops.cli import app

    d, e = synthetic_events
    events = tmp_path / "events.csv"
    events.write_text("duration_h,event_mm\n" + "".join(f"{a},{b}\n" for a, b in zip(d[:400], e[:400])), encoding="utf-8")
    runner = CliRunner()
    r = runner.invoke(app, ["warning", "calibrate", str(events), "--bootstrap", "50", "--key", "kz"])
    assert r.exit_code == 0, r.output
    assert 'key = "kz"' in r.output and "[[threshold_sets]]" in r.output
    gamma = float(next(line for line in r.output.splitlines() if line.startswith("gamma = ")).split("=")[1])
    assert gamma == pytest.approx(0.4, abs=0.05)
    bad = tmp_path / "bad.csv"
    bad.write_text("duration,event\n1,2\n", encoding="utf-8")
    r = runner.invoke(app, ["warning", "calibrate", str(bad)])
    assert r.exit_code == 1 and "missing columns" in r.output
    r = runner.invoke(app, ["warning", "skill", "28", "72", "23", "2680"])
    assert r.exit_code == 0 and "0.5229" in r.output and "0.7200" in r.output


def test_threshold_skill_against_an_event_table():
    # E_50 = 10·D^0.4: at D = 24 h the curve is 35.65 mm.
    table = [(24, 40, True), (24, 36, False), (24, 30, True), (24, 20, False), (1, 12, True), (1, 9, False)]
    d, e, slid = zip(*table)
    c = skill.threshold_skill(d, e, slid, alpha=10.0, gamma=0.4)
    assert c == skill.Contingency(a=2, b=1, c=1, d=2)
    assert c.scores()["pod"] == pytest.approx(2 / 3) and c.scores()["far"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="event table"):
        skill.threshold_skill([0], [1], [True], 10, 0.4)


def test_ui_messages_name_every_level_and_hazard_as_the_catalogue_does():
    import json
    from pathlib import Path

    import cityops.web

    messages = json.loads((Path(cityops.web.__file__).parent / "messages.json").read_text(encoding="utf-8"))
    for language, field in (("zh-CN", "name_zh"), ("en", "name_en")):
        for key, level in CAT.levels.items():
            assert messages[language][f"warning.level.{key}"] == level[field]
        for key, hazard in CAT.hazard_types.items():
            assert messages[language][f"warning.hazard.{key}"] == hazard[field]

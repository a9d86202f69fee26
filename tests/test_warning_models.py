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
    fit = calibration.fit_frequentist(*synthetic_events, n_bootstrap=200, seed=7)
    assert fit.gamma == pytest.approx(0.400, abs=0.02)
    assert fit.alpha_p["blue"] == pytest.approx(4.688, abs=0.25)
    assert fit.sigma == pytest.approx(0.2, abs=0.01)
    boot = fit.bootstrap
    assert boot["gamma"]["q05"] <= 0.4 <= boot["gamma"]["q95"]
    assert boot["blue"]["q05"] <= fit.alpha_p["blue"] <= boot["blue"]["q95"]
    assert boot["blue"]["q05"] <= 4.688 + 0.25 and boot["blue"]["q95"] >= 4.688 - 0.25
    # Only the intercept moves: the four curves are ordered and share γ.
    values = [fit.alpha_p[k] for k in ("blue", "yellow", "orange", "red")]
    assert values == sorted(values)


def test_kde_residual_model_agrees_with_the_normal_on_gaussian_noise(synthetic_events):
    normal = calibration.fit_frequentist(*synthetic_events)
    kde = calibration.fit_frequentist(*synthetic_events, method="kde")
    for level in ("blue", "yellow", "orange", "red"):
        assert kde.alpha_p[level] == pytest.approx(normal.alpha_p[level], rel=0.03)


def test_fixed_gamma_estimates_only_alpha(synthetic_events):
    d, e = synthetic_events
    fit = calibration.fit_frequentist(d[:60], e[:60], gamma=0.4)
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
        calibration.fit_frequentist([1, 2], [3, 4])
    with pytest.raises(ValueError, match="positive"):
        calibration.fit_frequentist([1, 2, -3], [3, 4, 5])
    with pytest.raises(ValueError, match="residual model"):
        calibration.fit_frequentist([1, 2, 3], [3, 4, 5], method="magic")


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
    f = displacement.inverse_velocity_forecast(T66, v)
    assert f.t_failure == pytest.approx(100.0, abs=1e-9) and f.r2 == pytest.approx(1.0)


@pytest.mark.parametrize("exponent, expected", [(2.0, 95.0), (0.5, 110.66)], ids=["alpha=1.5 early", "alpha=3 late"])
def test_inverse_velocity_other_exponents(exponent, expected):
    for constant in (1.0, 0.37):  # the value does not depend on the constant in front
        v = 1 / (constant * (100 - T66) ** exponent)
        assert displacement.inverse_velocity_forecast(T66, v).t_failure == pytest.approx(expected, abs=5e-3)


def test_saito_three_point():
    # α = 2 law: x = −(1/A)·ln(t_f − t); equal increments at 0, 50, 75 when t_f = 100.
    x = lambda t: -np.log(100 - t)  # noqa: E731
    assert x(50) - x(0) == pytest.approx(x(75) - x(50))
    assert displacement.saito_three_point(0, 50, 75) == 100.0
    with pytest.raises(ValueError):
        displacement.saito_three_point(0, 50, 100)


def test_inverse_velocity_with_noise_brackets_the_true_failure_time():
    rng = np.random.default_rng(66)
    t = np.arange(60.0, 97.0, 0.5)
    v = 1 / (0.5 * (100 - t)) * (1 + rng.normal(0, 0.03, len(t)))
    f = displacement.inverse_velocity_forecast(displacement.moving_average(t, 1), v, min_points=10, min_r2=0.8)
    assert f is not None and f.low < 100 < f.high and f.high - f.low < 10


def test_inverse_velocity_gates():
    decelerating = 1 / (0.5 * (T66 - 70))
    assert displacement.inverse_velocity_forecast(T66, decelerating) is None
    assert displacement.inverse_velocity_forecast(T66[:2], [0.1, 0.2], min_points=3) is None
    v = 1 / (0.5 * (100 - T66))
    assert displacement.inverse_velocity_forecast(T66, v, noise_floor=0.15, min_points=3) is None
    scattered = np.array([0.1, 0.4, 0.12, 0.5])
    assert displacement.inverse_velocity_forecast(T66, scattered, min_r2=0.9) is None


def test_onset_of_acceleration():
    steady = np.full(20, 1.0)
    assert displacement.onset_of_acceleration(steady) is None
    v = np.concatenate((np.full(20, 1.0), 1 + np.arange(1, 11) ** 2 * 0.1))
    onset = displacement.onset_of_acceleration(v)
    assert onset is not None and 18 <= onset <= 21


# ------------------------------------------------------------------------- §6.7 tangent angle
TABLE_67 = [(2.0, 45.000, "blue"), (10.0, 78.690, "yellow"), (11.3, 79.963, "yellow"), (11.34, 79.998, "yellow"),
            (11.35, 80.006, "orange"), (22.86, 84.99998, "orange"), (22.9, 85.009, "red"), (40, 87.138, "red")]


@pytest.mark.parametrize("ds, angle, level", TABLE_67)
def test_improved_tangent_angle(ds, angle, level):
    a = float(displacement.tangent_angle(ds, 1.0, 2.0))
    assert a == pytest.approx(angle, abs=6e-4 if angle != 84.99998 else 5e-6)
    assert level_key(displacement.tangent_rank(a)) == level


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
    assert float(logistic.rainfall_for(0.5, 0.2, 0.3, 0.4, window)) == pytest.approx(r50, rel=1e-7)
    assert float(logistic.rainfall_for(0.75, 0.2, 0.3, 0.4, window)) == pytest.approx(r75, rel=1e-7)
    assert float(logistic.probability(4, 0.2, 0.3, 0.4, window)) == pytest.approx(p4, rel=1e-6)
    assert float(logistic.probability(r50, 0.2, 0.3, 0.4, window)) == pytest.approx(0.5)


def test_staley_i15():
    assert float(logistic.rainfall_for(0.5, 0.2, 0.3, 0.4, 15)) * 4 == pytest.approx(25.79, abs=5e-3)
    with pytest.raises(ValueError, match="window"):
        logistic.probability(4, 0.2, 0.3, 0.4, 45)


# -------------------------------------------------------------------- §6.9 grading and lookups
def test_threat_grading():
    assert grading.threat_grade(people=120) == ("III", "中型") and grading.threat_grade(potential_loss_yuan=8_000_000) == ("III", "中型")
    assert grading.threat_grade(1200) == ("I", "特大型")
    assert grading.threat_grade(99) == ("IV", "小型") and grading.threat_grade(500) == ("II", "大型")
    assert grading.threat_grade(10, 60_000_000) == ("II", "大型")  # the more severe of people and money


def test_house_tilt_per_jgj_125():
    assert house.foundation_dangerous(3.2, storeys=2)
    assert house.foundation_dangerous(2.1, storeys=3)
    assert not house.foundation_dangerous(1.8, storeys=3)
    assert not house.foundation_dangerous(3.0, storeys=2)  # strict: exactly at the limit is not dangerous
    assert level_key(house.tilt_ladder_rank(1.8, 3)) == "orange"
    assert level_key(house.tilt_ladder_rank(1.6, 2)) == "yellow"
    assert level_key(house.tilt_ladder_rank(3.2, 2)) == "red"
    assert level_key(house.tilt_ladder_rank(1.1, 3, settlement_cracks=True)) == "yellow"
    assert house.tilt_with_cracks_dangerous(1.2, masonry_crack_mm=12) and not house.tilt_with_cracks_dangerous(0.9, masonry_crack_mm=12)
    with pytest.raises(ValueError):
        house.tilt_limit_pct(0)


@pytest.mark.parametrize("cum, rate, level", [(72, 71, "yellow"), (90, 40, "yellow"), (101, 50, "orange"), (100, 100, "red"),
                                              (60, 60, "none")])
def test_dual_control(cum, rate, level):
    assert level_key(displacement.dual_control_rank(cum, rate, **CAT.params["dual_control"])) == level


def test_velocity_classes():
    assert displacement.velocity_class(6.0) == (7, "extremely rapid")
    assert displacement.velocity_class(1e-3) == (5, "rapid")
    assert displacement.velocity_class(1e-11) == (1, "extremely slow")


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

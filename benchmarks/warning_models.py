"""Rainfall warning model for 10,000 risk points after a gauge update: vectorised vs per-point vs raw limit.

What one evaluation does per risk point (as ``cityops.warning.service`` does for one): reconstruct the running
event from 240 hourly values (48-h dry spell), E_obs(D) for D = 1, 3, 6, 12, 24, 48, 72 h and the whole event,
the four-level ED thresholds (``kaizhou_demo``) and the exceedance index, and the 10-day antecedent effective
rainfall Pa. Compared side by side in one run (interleaved rounds, medians):

- **ours**: ``rainfall.current_event_hours`` + ``rainfall.evaluate_event`` + ``antecedent.antecedent_rainfall`` over
  the whole (points × hours) array;
- **per point**: the same functions called once per risk point (what a loop over risk points would cost);
- **raw limit**: one ``np.cumsum`` over the same array — a single pass over the data, the least any
  evaluation must do.

Target (issue 5): evaluating the rainfall model for 10,000 risk points after a gauge update in under 1 s.

    .venv/bin/python benchmarks/warning_models.py [--points 10000] [--hours 240] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from cityops.warning.catalogue import catalogue
from cityops.warning.models import antecedent, rainfall
from report import record  # noqa: E402

DURATIONS = (1, 3, 6, 12, 24, 48, 72)


def synthetic_rain(points: int, hours: int, seed: int) -> np.ndarray:
    """Hourly rain (mm): showers in ~8 % of hours, and a 24-h storm of varying strength over a fifth of the points."""
    rng = np.random.default_rng(seed)
    wet = rng.random((points, hours)) < 0.08
    rain = np.where(wet, rng.gamma(0.6, 1.5, (points, hours)), 0.0)
    storm = rng.random(points) < 0.2
    strength = rng.uniform(0.2, 2.5, int(storm.sum()))[:, None]
    rain[storm, -24:] += strength * rng.gamma(2.0, 1.0, (int(storm.sum()), 24))
    return np.round(rain, 1)


def evaluate(rain: np.ndarray, thresholds, k: float, n_days: int):
    event = rainfall.current_event_hours(rain, 48, 0.0)
    ev = rainfall.evaluate_event(rain, thresholds, DURATIONS, event_hours=event)
    # Daily totals of the days before the current one, most recent first.
    days = rain[:, : (rain.shape[1] // 24) * 24].reshape(rain.shape[0], -1, 24).sum(axis=2)[:, ::-1][:, 1 : n_days + 1]
    pa = antecedent.antecedent_rainfall(days, k)
    return ev.rank, ev.index, pa


def per_point(rain, thresholds, k, n_days):
    ranks = np.empty(rain.shape[0], dtype=int)
    for i in range(rain.shape[0]):
        r, _, _ = evaluate(rain[i : i + 1], thresholds, k, n_days)
        ranks[i] = r[0]
    return ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--hours", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    cat = catalogue()
    thresholds = cat.threshold_sets["kaizhou_demo"]
    k, n_days = cat.params["antecedent"]["K"], cat.params["antecedent"]["n_days"]
    rain = synthetic_rain(args.points, args.hours, args.seed)

    times = {"ours": [], "per point": [], "raw limit": []}
    ranks_vec = ranks_loop = None
    for r in range(args.rounds):
        order = ["ours", "per point", "raw limit"] if r % 2 == 0 else ["raw limit", "per point", "ours"]
        for name in order:
            t0 = time.perf_counter()
            if name == "ours":
                ranks_vec, _, _ = evaluate(rain, thresholds, k, n_days)
            elif name == "per point":
                ranks_loop = per_point(rain, thresholds, k, n_days)
            else:
                np.cumsum(rain[:, ::-1], axis=1)
            times[name].append(time.perf_counter() - t0)

    med = {name: statistics.median(v) for name, v in times.items()}
    mismatches = int((ranks_vec != ranks_loop).sum())
    counts = np.bincount(ranks_vec, minlength=5)
    print(f"rainfall model, {args.points:,} risk points × {args.hours} h, {args.rounds} interleaved rounds (medians)\n")
    print(f"{'method':<12} {'median s':>10} {'points/s':>14} {'vs ours':>9}")
    for name in ("ours", "per point", "raw limit"):
        print(f"{name:<12} {med[name]:>10.4f} {args.points / med[name]:>14,.0f} {med[name] / med['ours']:>8.2f}x")
    print(f"\nlevels (none/blue/yellow/orange/red): {counts.tolist()}; vectorised vs per-point mismatches: {mismatches}")
    print(f"ours vs per point: {med['per point'] / med['ours']:.1f}x faster; ours vs raw limit: {med['ours'] / med['raw limit']:.1f}x the raw pass")
    verdict = "PASS" if med["ours"] < 1.0 and mismatches == 0 else "FAIL"
    print(f"target: {args.points:,} risk points < 1 s → {med['ours']:.3f} s  {verdict}")
    record(f"rainfall warning model, {args.points:,} risk points × {args.hours} h", f"{med['ours']:.3f} s",
           f"one raw NumPy pass {med['raw limit']:.3f} s", med["ours"] / med["raw limit"], "< 1 s",
           med["ours"] < 1.0 and mismatches == 0)


if __name__ == "__main__":
    main()

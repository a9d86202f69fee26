"""Round-trip accuracy and throughput of the GCJ-02 / BD-09 conversions in cityops.core.crs.

    python benchmarks/coords_accuracy.py

Prints a Markdown table (figures quoted in docs/coordinates.md). Two engines are measured: the
geocoordinates-rs library called point by point (used for small arrays) and the vectorised numpy
path (used for larger arrays). Errors are geodesic distances on the WGS 84 ellipsoid.
"""

from __future__ import annotations

import math
import time

import numpy as np
import prcoords
import pyproj

from cityops.core import crs as C

N_ACCURACY = 2_000
N_SPEED = 10_000
REPEAT = 3  # best of
SEED = 20240531  # same points as tests/test_crs.py
GEOD = pyproj.Geod(ellps="WGS84")


def dist_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    return np.asarray(GEOD.inv(lon1, lat1, lon2, lat2)[2])


def points(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(73.0, 135.0, n), rng.uniform(18.0, 53.0, n)


def throughput(fn, lon, lat) -> float:
    best = math.inf
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn(lon, lat)
        best = min(best, time.perf_counter() - t)
    return lon.size / best


def main() -> None:
    lon, lat = points(N_ACCURACY)
    s_lon, s_lat = points(N_SPEED, SEED + 1)
    engines = {"geocoordinates-rs (per point)": "_lib_", "numpy (vectorised)": "_np_"}

    print(f"Round trip WGS84 → X → WGS84, {N_ACCURACY:,} random points 73–135°E, 18–53°N (seed {SEED});")
    print(f"throughput on {N_SPEED:,} points, points/s (best of {REPEAT}).\n")
    print("| Engine | GCJ-02 round trip median / max (m) | BD-09 round trip median / max (m) "
          "| WGS84→GCJ02 | GCJ02→WGS84 | WGS84→BD09 | BD09→WGS84 |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for label, prefix in engines.items():
        f = {name: getattr(C, prefix + name)
             for name in ("wgs84_to_gcj02", "gcj02_to_wgs84", "wgs84_to_bd09", "bd09_to_wgs84")}
        g = f["gcj02_to_wgs84"](*f["wgs84_to_gcj02"](lon, lat))
        b = f["bd09_to_wgs84"](*f["wgs84_to_bd09"](lon, lat))
        eg, eb = dist_m(lon, lat, *g), dist_m(lon, lat, *b)
        results[prefix] = f
        # inputs for the inverse timings are real GCJ-02 / BD-09 coordinates
        sg = C._np_wgs84_to_gcj02(s_lon, s_lat)
        sb = C._np_wgs84_to_bd09(s_lon, s_lat)
        speeds = [
            throughput(f["wgs84_to_gcj02"], s_lon, s_lat),
            throughput(f["gcj02_to_wgs84"], *sg),
            throughput(f["wgs84_to_bd09"], s_lon, s_lat),
            throughput(f["bd09_to_wgs84"], *sb),
        ]
        print(f"| {label} | {np.median(eg):.1e} / {eg.max():.1e} | {np.median(eb):.1e} / {eb.max():.1e} | "
              + " | ".join(f"{s:,.0f}" for s in speeds) + " |")

    print("\nChecks on the same points:")
    for name in ("wgs84_to_gcj02", "gcj02_to_wgs84", "wgs84_to_bd09", "bd09_to_wgs84"):
        a = results["_np_"][name](lon, lat)
        b = results["_lib_"][name](lon, lat)
        print(f"- numpy vs geocoordinates-rs, {name}: max difference {dist_m(*a, *b).max():.1e} m")
    ref_g = np.array([prcoords.wgs_gcj((la, lo)) for lo, la in zip(lon, lat)])
    ref_b = np.array([prcoords.wgs_bd((la, lo)) for lo, la in zip(lon, lat)])
    g = C.wgs84_to_gcj02(lon, lat)
    b = C.wgs84_to_bd09(lon, lat)
    print(f"- forward vs prcoords 1.0.2: GCJ-02 max {dist_m(*g, ref_g[:, 1], ref_g[:, 0]).max():.1e} m, "
          f"BD-09 max {dist_m(*b, ref_b[:, 1], ref_b[:, 0]).max():.1e} m")
    off = dist_m(lon, lat, *g)
    print(f"- GCJ-02 offset: min {off.min():.0f} m, median {np.median(off):.0f} m, max {off.max():.0f} m")
    rng = np.random.default_rng(7)
    d_lon, d_lat = rng.uniform(100, 122, N_ACCURACY), rng.uniform(20, 45, N_ACCURACY)
    off = dist_m(d_lon, d_lat, *C.wgs84_to_gcj02(d_lon, d_lat))
    print(f"- GCJ-02 offset, 100–122°E 20–45°N (domain.md box): min {off.min():.0f} m, "
          f"median {np.median(off):.0f} m, max {off.max():.0f} m")
    off = dist_m(lon, lat, *b)
    print(f"- BD-09 offset: min {off.min():.0f} m, median {np.median(off):.0f} m, max {off.max():.0f} m")


if __name__ == "__main__":
    main()

"""Layer import: throughput and peak memory of ``cityops import-layer`` against ``ogr2ogr`` writing the
same file to a GeoPackage, side by side in one run.

Each run is a separate process (so peak RSS is that run's own), on a fresh data directory. The input is
a FlatGeobuf of N building-like polygons with a few attributes, generated once (seeded).

    .venv/bin/python benchmarks/layer_import.py                 # N = 200,000 and 1,000,000
    .venv/bin/python benchmarks/layer_import.py --sizes 100000 --rounds 3
    .venv/bin/python benchmarks/layer_import.py --backends sqlite postgis --sizes 1000000
    .venv/bin/python benchmarks/layer_import.py --file census.fgb     # e.g. from `cityops export-housing buildings census.fgb`
    .venv/bin/python benchmarks/layer_import.py --file census.fgb --backends sqlite postgis --rounds 1 --keep /work/kept

``--backends`` runs ours on the embedded GeoPackage and/or PostGIS (a fresh database per run, dropped
afterwards; COPY on PostgreSQL). The peer is always ogr2ogr writing a GeoPackage, as the issue names it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyogrio
import shapely
from rich.console import Console
from rich.table import Table
from report import record  # noqa: E402

console = Console()
VENV_BIN = Path(sys.executable).parent


def make_input(path: Path, n: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(107.95, 108.85, n)
    y = rng.uniform(30.85, 31.65, n)
    w = rng.uniform(0.00008, 0.0003, n)
    h = rng.uniform(0.00008, 0.0003, n)
    geoms = shapely.box(x, y, x + w, y + h)
    fields = [np.array([f"B{i:08d}" for i in range(n)], dtype=object), rng.integers(1, 33, n).astype("int32"),
              rng.choice(np.array(["砖混", "框架", "砖木", "钢结构"], dtype=object), n)]
    meta = [("code", "str"), ("floors", "int32"), ("structure", "str")]
    pyogrio.raw.write(path, shapely.to_wkb(geoms), fields, [m[0] for m in meta], driver="FlatGeobuf",
                      geometry_type="Polygon", crs="EPSG:4490")


def timed(cmd: list[str]) -> float:
    """Wall seconds of a command."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


SETUP_SNIPPET = """
import sys
from pathlib import Path
from cityops.core.settings import Settings
from cityops.core.db import make_engine, make_sessionmaker, migrate
from cityops.core import audit
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.base import service
import shapely
import pyogrio
extra = {"database_url": sys.argv[3]} if len(sys.argv) > 3 else {}
# The layer declares the file's geometry type, as a user would (Polygon → POLYGON, MultiPolygon → MULTIPOLYGON).
geometry_type = (pyogrio.read_info(sys.argv[2]).get("geometry_type") or "GEOMETRY").upper()
s = Settings(data_dir=Path(sys.argv[1]), log_json=False, **extra); e = make_engine(s); migrate(e); f = make_sessionmaker(e)
with f() as session:
    session.add(Unit(code="500154", name="开州区", level="district", path="/500154/", attributes={},
                     geom=shapely.MultiPolygon([shapely.box(107.9, 30.8, 108.9, 31.7)])))
    service.create_layer(session, audit.SYSTEM, Scope(all_units=True), {"key": "census_buildings", "title_zh": "房屋",
                         "category": "0201", "geometry_type": geometry_type})
    session.commit()
e.dispose()
"""

#: The measured part: ``cityops import-layer`` itself in a store that exists (interpreter start, the command's
#: imports, the catalogues' check, the migration check, the import, the commit). Creating the store (the platform's
#: whole schema) is not part of importing a layer and ogr2ogr has no counterpart to it: it runs before, untimed
#: (SETUP_SNIPPET). The command runs in this process through runpy so that its own peak memory can be read at exit.
IMPORT_SNIPPET = """
import runpy, sys
data, source = sys.argv[1], sys.argv[2]
sys.argv = ["cityops", "import-layer", source, "--layer", "census_buildings", "--data-dir", data]
try:
    runpy.run_module("cityops.cli", run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork/exec, so a child would report its parent's peak.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(hwm // 1024)
"""


def compile_package() -> None:
    """Byte-compile CityOps once, as installing it does (pip compiles a package's modules at install): where the
    environment sets PYTHONDONTWRITEBYTECODE, every measured run would otherwise compile the sources again."""
    import compileall

    import cityops

    compileall.compile_dir(Path(cityops.__file__).parent, quiet=1)


PG_ADMIN = os.environ.get("CITYOPS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def run_ours(source: Path, workdir: Path, backend: str = "sqlite", keep: Path | None = None,
             with_store: bool = False) -> tuple[float, float]:
    """One import into a fresh store (created and migrated untimed unless ``with_store``). With ``keep`` the store stays: the data directory at ``keep/<backend>``
    and the PostGIS database ``cityops_bench_kept`` (replacing what an earlier run kept there)."""
    data = keep / backend if keep else workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    args = [sys.executable, "-c", IMPORT_SNIPPET, str(data), str(source)]
    env = dict(os.environ, CITYOPS_LOG_JSON="false")
    setup_args = [str(data), str(source)]
    if backend == "postgis":
        name = "cityops_bench_kept" if keep else f"cityops_bench_{os.getpid()}"
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _pg(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        setup_args.append(url)
        env["CITYOPS_DATABASE_URL"] = url
    start = time.perf_counter()
    setup = subprocess.run([sys.executable, "-c", SETUP_SNIPPET, *setup_args], capture_output=True, text=True)
    if setup.returncode != 0:
        raise SystemExit(setup.stderr[-2000:])
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start + (setup_s if with_store else 0.0)
    if backend == "postgis" and not keep:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return elapsed, float(proc.stdout.split()[-1])


def run_ogr2ogr(source: Path, workdir: Path) -> float:
    target = workdir / "ogr.gpkg"
    target.unlink(missing_ok=True)
    return timed(["ogr2ogr", "-f", "GPKG", str(target), str(source), "-nln", "buildings"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgis"], default=["sqlite"])
    parser.add_argument("--with-store-creation", action="store_true",
                        help="time the store's creation and migration with the import (the measure before 2026-12-06)")
    parser.add_argument("--file", type=Path, help="import this file instead of generated ones (e.g. the census export)")
    parser.add_argument("--keep", type=Path, help="keep the last round's stores (DIR/sqlite, DIR/postgis and the database "
                        "cityops_bench_kept), e.g. for benchmarks/ogc_items.py --collection census_buildings")
    args = parser.parse_args()
    if not shutil.which("ogr2ogr"):
        raise SystemExit("ogr2ogr not found: apt-get install gdal-bin (scripts/install-system-deps.sh)")
    version = subprocess.run(["ogr2ogr", "--version"], capture_output=True, text=True).stdout.strip()
    compile_package()
    table = Table("input", "backend", "ours median s", "ours features/s", "ours peak RSS MiB", "ogr2ogr → GPKG median s",
                  "time ratio ours/ogr2ogr", title=f"layer import, {args.rounds} interleaved rounds ({version}, {os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="cityops-bench-") as tmp:
        workdir = Path(tmp)
        inputs = []
        if args.file:
            inputs.append((args.file.name, args.file, pyogrio.read_info(args.file)["features"]))
        else:
            for n in args.sizes:
                source = workdir / f"buildings_{n}.fgb"
                # In a child process, so this process stays small while it launches the measured ones.
                subprocess.run([sys.executable, __file__, "--make", str(source), str(n)], check=True)
                inputs.append((f"{n:,} generated", source, n))
        for label, source, n in inputs:
            ours = {b: [] for b in args.backends}
            peaks = {b: [] for b in args.backends}
            gdal = []
            for _ in range(args.rounds):
                for backend in args.backends:
                    t, peak = run_ours(source, workdir, backend, args.keep, args.with_store_creation)
                    ours[backend].append(t)
                    peaks[backend].append(peak)
                    console.print(f"  {label}: ours ({backend}) {t:.2f} s (peak {peak:.0f} MiB)")
                gdal.append(run_ogr2ogr(source, workdir))
                console.print(f"  {label}: ogr2ogr {gdal[-1]:.2f} s")
            mg = statistics.median(gdal)
            for backend in args.backends:
                mo = statistics.median(ours[backend])
                table.add_row(label, backend, f"{mo:.2f}", f"{n / mo:,.0f}", f"{max(peaks[backend]):.0f}", f"{mg:.2f}",
                              f"{mo / mg:.2f}")
                record(f"layer import, {label} features ({backend})", f"{mo:.2f} s", f"ogr2ogr → GPKG {mg:.2f} s", mo / mg,
                       "≤ 1.5× ogr2ogr", mo / mg <= 1.5, note=f"peak RSS {max(peaks[backend]):.0f} MiB")
    console.print(table)
    console.print("Peak RSS that does not grow with the feature count shows the import is streamed.")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--make":
        make_input(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()

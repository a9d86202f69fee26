"""QGIS 3.22 (Debian's, headless) against the demo's /ogc with HTTP Basic: the client that cannot send a token
header. It lists the collections through its browser, reads a collection's features and filters them.

PyQGIS belongs to the system python3 (``apt-get install qgis python3-qgis``, in scripts/install-system-deps.sh),
so QGIS runs in a subprocess (tests/qgis_client.py) against a live server in another one; without PyQGIS outside
CI the test is skipped, under CI=true it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import shapely
from shapely.geometry import Point, mapping

from cityops.demo.generator import DEMO_PASSWORD
from tests.conftest import free_port, wait_for_port
from tests.test_ogc_features import SERVE, make_layer

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
#: 12 points with many significant digits, so that a coordinate QGIS reads back can be compared exactly.
POINTS = [(108.401234567891 + 0.003 * i, 31.2012345678912 + 0.002 * i) for i in range(12)]

pytestmark = pytest.mark.slow


def _pyqgis_problem() -> str | None:
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON}: {exc}"
    return None if done.returncode == 0 else "PyQGIS is not installed (apt-get install qgis python3-qgis)"


@pytest.fixture(scope="module")
def live(api, tmp_path_factory):
    if api.store.backend != "sqlite":
        pytest.skip("the QGIS test runs on the SQLite backend only (the same routes are tested on both)")
    problem = _pyqgis_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    settings = api.store.settings
    port = free_port()
    log = tmp_path_factory.mktemp("qgis-live") / "access.log"
    serve = SERVE.replace('log_level="warning"', 'log_level="info", access_log=True')
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", serve, str(settings.data_dir), settings.secret_key, str(port)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(proc, port, seconds=120)
        yield f"http://127.0.0.1:{port}/ogc", log
    finally:
        proc.terminate()
        proc.wait(10)


def run_qgis(root: str, username: str, password: str, collection: str, expression: str) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([SYSTEM_PYTHON, str(ROOT / "tests" / "qgis_client.py"), root, username, password, collection,
                           expression], capture_output=True, text=True, timeout=600, env=env, cwd="/tmp")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_qgis_lists_reads_and_filters_with_basic_auth(api, live):
    root, log = live
    admin = api.login("admin")
    feats = [{"type": "Feature", "properties": {"name": f"q{i}", "n": i}, "geometry": mapping(Point(x, y))}
             for i, (x, y) in enumerate(POINTS)]
    key = make_layer(api, admin, feats)
    seen = run_qgis(root, "admin", DEMO_PASSWORD, key, '"n" >= 8')
    assert seen["qgis"].startswith("3."), seen
    assert key in seen["collections"], seen.get("collections")
    assert seen["valid"], seen.get("error")
    assert {"name", "n"} <= set(seen["fields"])
    got = {f["attributes"]["name"]: shapely.from_wkt(f["wkt"]) for f in seen["features"]}
    assert set(got) == {f"q{i}" for i in range(12)}
    for i, (x, y) in enumerate(POINTS):
        assert (got[f"q{i}"].x, got[f"q{i}"].y) == pytest.approx((x, y), abs=1e-9)
    wanted = {f"q{i}" for i in range(8, 12)}
    assert {f["attributes"]["name"] for f in seen["filtered_request"]} == wanted
    assert seen["subset_accepted"] and {f["attributes"]["name"] for f in seen["subset"]} == wanted
    requests = [line for line in log.read_text(errors="replace").splitlines() if '"GET /ogc' in line]
    assert any(f"/ogc/collections/{key}/items" in r and " 200" in r for r in requests), requests
    assert not any(" 401" in r or " 500" in r for r in requests), requests


def test_qgis_reads_the_buildings_registry(api, live):
    root, _ = live
    seen = run_qgis(root, "admin", DEMO_PASSWORD, "buildings", '"floors" >= 4')
    assert "buildings" in seen["collections"] and seen["valid"], seen.get("error")
    assert {"code", "floors", "structure", "safety_grade"} <= set(seen["fields"])
    with api.store.sessions() as session:
        from sqlalchemy import text

        codes = set(session.execute(text("SELECT code FROM buildings")).scalars())
        tall = set(session.execute(text("SELECT code FROM buildings WHERE floors >= 4")).scalars())
    assert {f["attributes"]["code"] for f in seen["features"]} == codes
    assert {f["attributes"]["code"] for f in seen["subset"]} == tall and tall
    assert all(f["wkt"].startswith("MultiPolygon") for f in seen["features"][:50])

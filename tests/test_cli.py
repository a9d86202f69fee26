"""The ``cityops`` command line, run as a real subprocess against a ``--data-dir`` in tmp.

SQLite only: the CLI is backend-agnostic (it goes through the same Settings → engine → services as the
API, whose storage behaviour is covered on both backends elsewhere), and the embedded GeoPackage is what
``--data-dir`` gives without a database URL.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyogrio
import pytest

CLI = [sys.executable, "-m", "cityops.cli"]


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def messages(self) -> list[str]:
        """Non-empty stderr lines that are not structured log records."""
        return [line for line in self.stderr.splitlines() if line.strip() and not line.lstrip().startswith("{")]

    def __str__(self) -> str:
        return f"cityops {' '.join(self.args)} → {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    # Rich wraps at 80 columns when not on a terminal; a wide console keeps each message on one line.
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONIOENCODING="utf-8")
    return env


def _popen(args: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", env=env or _env(), cwd=cwd, stdin=subprocess.DEVNULL)


def _finish(proc: subprocess.Popen, args) -> Result:
    # A guard against a hung command, not a speed check: a demo build on two busy cores can take minutes.
    out, err = proc.communicate(timeout=420)
    result = Result([str(a) for a in args], proc.returncode, out, err)
    assert "Traceback" not in result.stderr, str(result)
    return result


def cli(*args, cwd: Path | None = None, env: dict | None = None) -> Result:
    """Run one command; no command ever prints a Python traceback."""
    return _finish(_popen(list(args), cwd, env), args)


def cli_many(*commands: list) -> list[Result]:
    """Run independent commands concurrently (they only read the data dir or write their own)."""
    procs = [(_popen(list(c)), c) for c in commands]
    return [_finish(p, c) for p, c in procs]


def ok(result: Result) -> Result:
    assert result.returncode == 0, str(result)
    return result


def failed(result: Result) -> Result:
    assert result.returncode != 0, str(result)
    assert result.messages, f"a failing command must say why\n{result}"
    return result


def unit_count(data_dir: Path) -> int:
    path = data_dir / "cityops.gpkg"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM units").fetchone()[0]


def unit_rows(data_dir: Path) -> set[tuple]:
    with sqlite3.connect(data_dir / "cityops.gpkg") as conn:
        return set(conn.execute("SELECT code, name, level, parent_code FROM units"))


# ---------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A data dir holding a small demo district, built by the CLI (``--grids 150``: ~5 s)."""
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    result = ok(cli("demo", "--no-serve", "--grids", "150", "--data-dir", data_dir))
    assert "demo district built" in result.stdout
    return data_dir


@pytest.fixture(scope="module")
def yihe_grid(demo_dir) -> dict:
    """A grid of 义和镇 and a point inside it, found through Python on the same data dir."""
    from sqlalchemy import select

    from cityops.core.db import make_engine, make_sessionmaker
    from cityops.core.settings import Settings
    from cityops.org.models import Unit

    engine = make_engine(Settings(data_dir=demo_dir, log_json=False))
    try:
        with make_sessionmaker(engine)() as session:
            yihe = session.scalar(select(Unit).where(Unit.name == "义和镇"))
            grid = session.scalar(select(Unit).where(Unit.level == "grid", Unit.path.startswith(yihe.path))
                                  .order_by(Unit.code).limit(1))
            point = grid.geom.representative_point()
            return {"code": grid.code, "name": grid.name, "township": yihe.name, "township_code": yihe.code,
                    "lon": point.x, "lat": point.y}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def exported(demo_dir, tmp_path_factory) -> dict[str, Path]:
    """The demo district exported in every format (the four exports run concurrently)."""
    out = tmp_path_factory.mktemp("exports")
    files = {ext: out / f"units.{ext}" for ext in ("geojson", "gpkg", "zip", "csv")}
    for result in cli_many(*[["export-units", path, "--data-dir", demo_dir] for path in files.values()]):
        ok(result)
        assert "wrote" in result.stdout
    return files


# ---------------------------------------------------------------------------------------- commands

def test_init_creates_the_data_dir_and_database(tmp_path):
    data_dir = tmp_path / "nested" / "data"
    result = ok(cli("init", "--data-dir", data_dir))
    assert (data_dir / "cityops.gpkg").is_file()
    assert "database ready" in result.stdout
    with sqlite3.connect(data_dir / "cityops.gpkg") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"units", "users", "tokens", "audit_log", "alembic_version", "gpkg_contents"} <= tables
    assert unit_count(data_dir) == 0


def test_demo_builds_once(demo_dir):
    count = unit_count(demo_dir)
    assert count > 150
    with sqlite3.connect(demo_dir / "cityops.gpkg") as conn:
        assert conn.execute("SELECT count(*) FROM units WHERE name = '义和镇'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] >= 7
    result = ok(cli("demo", "--no-serve", "--data-dir", demo_dir))
    assert "already holds a district" in result.stdout
    assert unit_count(demo_dir) == count


def test_locate_a_point_inside_a_grid(demo_dir, yihe_grid):
    result = ok(cli("locate", yihe_grid["lon"], yihe_grid["lat"], "--data-dir", demo_dir))
    assert yihe_grid["code"] in result.stdout
    assert yihe_grid["township"] == "义和镇"
    assert "义和镇" in result.stdout
    assert "开州区" in result.stdout


@pytest.fixture(scope="module")
def locate_failures(demo_dir) -> tuple[Result, Result]:
    """``locate`` of a point in Beijing (outside) and with an unknown CRS, run once for several tests."""
    return tuple(cli_many(["locate", "116.39", "39.91", "--data-dir", demo_dir],
                          ["locate", "108.4", "31.2", "--crs", "EPSG:999999", "--data-dir", demo_dir]))


def test_locate_outside_and_unknown_crs_fail_cleanly(locate_failures):
    outside, bad_crs = locate_failures
    failed(outside)
    assert "outside the jurisdiction" in outside.messages[0]
    assert outside.stdout.strip() == ""
    failed(bad_crs)
    assert "EPSG:999999" in bad_crs.stderr
    assert len(bad_crs.messages) == 1, str(bad_crs)


def test_locate_outside_is_one_line_with_exit_code_2(locate_failures):
    result = failed(locate_failures[0])
    assert result.messages == [result.messages[0]] and len(result.messages) == 1, str(result)
    assert result.returncode == 2, str(result)


def test_export_formats_are_readable(demo_dir, exported):
    count = unit_count(demo_dir)
    for ext, path in exported.items():
        assert path.is_file() and path.stat().st_size > 0, ext
        info = pyogrio.read_info(path)
        # The city row has no geometry; every unit is still a feature.
        assert info["features"] == count, f"{ext}: {info['features']} features, {count} units"
    geojson = json.loads(exported["geojson"].read_text(encoding="utf-8"))
    codes = {f["properties"]["code"] for f in geojson["features"]}
    assert "500154" in codes and len(codes) == count


def test_import_into_a_fresh_data_dir(demo_dir, exported, tmp_path):
    fresh, dry = tmp_path / "fresh", tmp_path / "dry"
    source = exported["geojson"]
    for made in cli_many(["init", "--data-dir", fresh], ["init", "--data-dir", dry]):
        ok(made)
    dry_run, result = cli_many(["import-units", source, "--dry-run", "--data-dir", dry],
                               ["import-units", source, "--data-dir", fresh])
    assert "validated" in ok(dry_run).stdout
    assert unit_count(dry) == 0

    ok(result)
    assert "imported" in result.stdout
    assert unit_count(fresh) == unit_count(demo_dir)
    assert unit_rows(fresh) == unit_rows(demo_dir)

    again = failed(cli("import-units", source, "--data-dir", fresh))
    assert "already_exists" in again.stderr
    assert "nothing was imported" in again.stderr
    assert unit_count(fresh) == unit_count(demo_dir)


def test_import_of_bad_files_fails_cleanly(tmp_path):
    malformed = tmp_path / "broken.geojson"
    malformed.write_text("{not json", encoding="utf-8")
    data_dir = tmp_path / "data"
    ok(cli("init", "--data-dir", data_dir))
    bad, missing = cli_many(
        ["import-units", malformed, "--data-dir", data_dir],
        ["import-units", tmp_path / "no-such-file.geojson", "--data-dir", data_dir],
    )
    failed(bad)
    assert len(bad.messages) == 1, str(bad)
    assert "broken.geojson" in bad.messages[0] and "JSON" in bad.messages[0]
    failed(missing)
    assert "no-such-file.geojson" in missing.stderr
    assert unit_count(data_dir) == 0


def test_users_add_list_and_token(demo_dir, yihe_grid):
    from fastapi.testclient import TestClient

    from cityops.app import create_app
    from cityops.core.settings import Settings

    result = ok(cli("users", "add", "bob", "--role", "grid_worker", "--unit", yihe_grid["code"],
                    "--password", "secret-123", "--data-dir", demo_dir))
    assert "bob" in result.stdout
    listing, token = cli_many(["users", "list", "--data-dir", demo_dir], ["users", "token", "bob", "--data-dir", demo_dir])
    ok(listing)
    bob_rows = [line for line in listing.stdout.splitlines() if " bob " in f" {line} "]
    assert bob_rows and "grid_worker" in bob_rows[0] and yihe_grid["code"] in bob_rows[0]
    raw = ok(token).stdout.strip()
    assert raw.startswith("cot_") and len(raw.split()) == 1

    with TestClient(create_app(Settings(data_dir=demo_dir, log_json=False))) as client:
        me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {raw}"})
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "bob" and me.json()["role"] == "grid_worker"
        assert me.json()["scope_units"] == [yihe_grid["code"]]
        r = client.post("/api/auth/login", json={"username": "bob", "password": "secret-123"})
        assert r.status_code == 200, r.text
        r = client.get("/api/locate", params={"lon": yihe_grid["lon"], "lat": yihe_grid["lat"]},
                       headers={"Authorization": f"Bearer {raw}"})
        assert r.status_code == 200 and r.json()["code"] == yihe_grid["code"]


@pytest.fixture(scope="module")
def users_failures(demo_dir, yihe_grid) -> tuple[Result, Result]:
    """``users add`` with an unknown role and ``users token`` for an unknown user, run once."""
    return tuple(cli_many(
        ["users", "add", "carol", "--role", "wizard", "--unit", yihe_grid["code"], "--password", "secret-123",
         "--data-dir", demo_dir],
        ["users", "token", "nobody-at-all", "--data-dir", demo_dir],
    ))


def test_users_failures(demo_dir, users_failures):
    bad_role, no_user = users_failures
    assert len(failed(bad_role).messages) == 1, str(bad_role)
    assert "wizard" in bad_role.messages[0]
    assert "nobody-at-all" in failed(no_user).stderr
    with sqlite3.connect(demo_dir / "cityops.gpkg") as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE username = 'carol'").fetchone()[0] == 0


def test_users_token_unknown_user_is_one_line(users_failures):
    result = failed(users_failures[1])
    assert len(result.messages) == 1, str(result)


def test_only_init_and_demo_create_a_store(tmp_path):
    """A command pointed at a directory without a store fails and says so; it does not answer from a new,
    empty store ("outside the jurisdiction"), and leaves nothing behind."""
    missing, empty = tmp_path / "typo", tmp_path / "empty"
    empty.mkdir()
    commands = [["locate", "108.4", "31.2"], ["users", "list"], ["import-units", tmp_path / "units.geojson"], ["export-units", tmp_path / "o.geojson"],
                ["layers", "list"], ["events", "sweep"], ["serve", "--port", "1"]]
    results = cli_many(*[[*c, "--data-dir", where] for c in commands for where in (missing, empty)])
    for result in results:
        failed(result)
        where = result.args[-1]
        assert f"{where} does not exist" in result.stderr or f"{where} holds no CityOps store" in result.stderr, str(result)
        assert "cityops init" in result.stderr
    assert not missing.exists() and list(empty.iterdir()) == []


def test_version():
    from importlib.metadata import version

    result = ok(cli("--version"))
    assert result.stdout.strip() == f"cityops {version('cityops')}"


def test_bad_configuration_fails_without_traceback(tmp_path):
    env = _env()
    env["CITYOPS_CONFIG"] = str(tmp_path / "missing.toml")
    result = cli("init", "--data-dir", tmp_path / "data", env=env)
    assert result.returncode != 0
    assert "missing.toml" in result.stderr


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is absent (apt-get install ffmpeg)")
def test_video_test_pattern_gives_cameras_a_stream(demo_dir):
    with sqlite3.connect(demo_dir / "cityops.gpkg") as conn:
        code = conn.execute("SELECT code FROM video_cameras WHERE status = 'online' ORDER BY code LIMIT 1").fetchone()[0]
    result = ok(cli("video", "test-pattern", "--camera", code, "--seconds", "3", "--data-dir", demo_dir))
    assert "1 cameras play the test picture" in result.stdout
    playlist = (demo_dir / "video" / code / "index.m3u8").read_text()
    assert playlist.count("#EXTINF") == 3 and "#EXT-X-ENDLIST" in playlist
    assert (demo_dir / "video" / code / "seg000.ts").read_bytes()[:1] == b"\x47"  # an MPEG-TS sync byte
    bad = cli("video", "test-pattern", "--camera", "50015401081326999999", "--data-dir", demo_dir)
    assert bad.returncode == 1 and "no camera 50015401081326999999" in bad.stdout + bad.stderr

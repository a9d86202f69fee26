"""`cityops serve --workers N`: the embedded SQLite store refuses more workers than it serves, saying so."""

from __future__ import annotations

import os
import subprocess
import sys

CLI = [sys.executable, "-m", "cityops.cli"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONIOENCODING="utf-8", **extra)
    return env


def test_sqlite_refuses_more_workers_than_it_serves(tmp_path):
    subprocess.run([*CLI, "init", "--data-dir", str(tmp_path / "data")], check=True, capture_output=True, env=_env(),
                   timeout=120)
    r = subprocess.run([*CLI, "serve", "--workers", "9", "--data-dir", str(tmp_path / "data")], capture_output=True,
                       text=True, env=_env(), timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "at most 4 worker processes" in r.stderr and "PostgreSQL" in r.stderr, r.stderr

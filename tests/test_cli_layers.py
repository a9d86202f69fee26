"""``cityops import-layer`` / ``export-layer`` / ``layers …`` as real subprocesses (SQLite: the CLI is
backend-agnostic; the layer service itself is tested on both backends in test_layers.py)."""

from __future__ import annotations

import json

import pyogrio

from tests.test_cli import cli, failed, ok


def _points(n: int, tag: str) -> str:
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": f"{tag}{i}"}, "geometry": {"type": "Point", "coordinates": [108.4 + i * 0.001, 31.2]}}
        for i in range(n)]})


def test_layer_commands(tmp_path):
    data = tmp_path / "data"
    ok(cli("demo", "--no-serve", "--grids", "60", "--data-dir", data))
    first, second = tmp_path / "a.geojson", tmp_path / "b.geojson"
    first.write_text(_points(30, "a"))
    second.write_text(_points(12, "b"))
    r = ok(cli("import-layer", first, "--layer", "shelters", "--create", "--title", "避难场所", "--category", "0701",
               "--geometry-type", "POINT", "--data-dir", data))
    assert "version 1" in r.stdout and "30 added" in r.stdout
    r = ok(cli("import-layer", second, "--layer", "shelters", "--data-dir", data))
    assert "version 2" in r.stdout and "30 replaced" in r.stdout
    r = ok(cli("layers", "list", "--data-dir", data))
    assert "shelters" in r.stdout and "避难场所" in r.stdout
    r = ok(cli("layers", "rollback", "shelters", "1", "--data-dir", data))
    assert "version 3" in r.stdout and "30 features" in r.stdout
    r = ok(cli("layers", "versions", "shelters", "--data-dir", data))
    assert "rollback → v1" in r.stdout and "import_replace" in r.stdout
    out = tmp_path / "out.fgb"
    ok(cli("export-layer", "shelters", out, "--data-dir", data))
    assert pyogrio.read_info(out)["features"] == 30
    broken = tmp_path / "broken.geojson"
    broken.write_text("{nope")
    r = failed(cli("import-layer", broken, "--layer", "shelters", "--data-dir", data))
    assert any("broken.geojson" in line for line in r.messages)
    r = failed(cli("import-layer", first, "--layer", "missing", "--data-dir", data))
    assert any("missing" in line for line in r.messages)
    r = ok(cli("layers", "versions", "shelters", "--data-dir", data))
    assert r.stdout.count("import_") == 2  # the failed imports left no version

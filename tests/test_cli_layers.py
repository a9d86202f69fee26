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
    # A feature of the wrong type in the last of several batches (the file is read, and fitted to the layer's type,
    # on the reading thread while the command starts): rejected naming it, and nothing of the earlier batches kept.
    mixed = json.loads(_points(45_000, "m"))
    mixed["features"][44_000]["geometry"] = {"type": "LineString", "coordinates": [[108.4, 31.2], [108.5, 31.3]]}
    wrong = tmp_path / "wrong.geojson"
    wrong.write_text(json.dumps(mixed))
    r = failed(cli("import-layer", wrong, "--layer", "shelters", "--data-dir", data))
    assert any("wrong_geometry_type" in line and "44001" in line for line in r.messages), r.messages
    r = ok(cli("layers", "versions", "shelters", "--data-dir", data))
    assert r.stdout.count("import_") == 2  # the failed imports left no version


def test_import_layer_loads_only_what_an_import_needs(tmp_path):
    """``import-layer`` on a store that is up to date: no migration machinery (Alembic, every capability's tables),
    no bus (nothing consumes a layer's events but the servers' caches), no demo steps and their SciPy, and only the
    catalogues an import reads checked (not the indicators' metric registry, the notification policies, the plans)."""
    import subprocess
    import sys

    from cityops.core.db import MIGRATIONS, script_heads

    data = tmp_path / "data"
    ok(cli("init", "--data-dir", data))
    district = ("import shapely\nfrom pathlib import Path\nfrom cityops.core.settings import Settings\n"
                "from cityops.core.db import make_engine, make_sessionmaker\nfrom cityops.org.models import Unit\n"
                f"e = make_engine(Settings(data_dir=Path({str(data)!r})))\n"
                "with make_sessionmaker(e)() as s:\n"
                "    s.add(Unit(code='500154', name='开州区', level='district', path='/500154/', attributes={},\n"
                "               geom=shapely.MultiPolygon([shapely.box(107.9, 30.8, 108.9, 31.7)])))\n"
                "    s.commit()\n")
    assert subprocess.run([sys.executable, "-c", district], capture_output=True, timeout=300).returncode == 0
    source = tmp_path / "a.geojson"
    source.write_text(_points(5, "a"))
    code = ("import runpy, sys\n"
            f"sys.argv = ['cityops', 'import-layer', {str(source)!r}, '--layer', 'shelters', '--create', '--title', 't',"
            f" '--category', '0701', '--geometry-type', 'POINT', '--data-dir', {str(data)!r}]\n"
            "try:\n    runpy.run_module('cityops.cli', run_name='__main__')\nexcept SystemExit as exc:\n    assert not exc.code\n"
            "loaded = [m for m in ('alembic', 'scipy', 'cityops.wiring', 'cityops.models', 'cityops.sensing.ingest',"
            " 'cityops.indicators.metrics', 'cityops.notify.service', 'cityops.base.demo', 'cityops.tasks.catalogue',"
            " 'typer', 'rich', 'cityops.cli', 'psycopg', 'prometheus_client', 'geocoordinates_ffi')"
            " if m in sys.modules]\nprint('LOADED', loaded)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "5 added" in r.stdout and "LOADED []" in r.stdout, r.stdout[-2000:]
    # Into the layer that exists (no --create): Core alone, its outbox event included; the ORM never loads.
    code = code.replace(", '--create', '--title', 't', '--category', '0701', '--geometry-type', 'POINT'", "")
    code = code.replace("'alembic', ", "'alembic', 'sqlalchemy.orm', 'cityops.core.bus.models', 'cityops.core.audit', ")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "version 2" in r.stdout and "LOADED []" in r.stdout, r.stdout[-2000:]
    # The heads read from the scripts are Alembic's own.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert script_heads() == frozenset(ScriptDirectory.from_config(config).get_heads())


def test_import_layer_without_typer_takes_typers_options(tmp_path):
    """The entry points run a well-formed ``import-layer`` before Typer loads (``commands.run_without_typer``): its
    option table is the Typer command's, and whatever it does not take (help, a usage error) is Typer's answer."""
    import typer.main

    from cityops import cli as cli_module
    from cityops import commands

    command = typer.main.get_command(cli_module.app).commands["import-layer"]
    declared = {opt: p.name for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")}
    flags = {opt for p in command.params if getattr(p, "is_flag", False) for opt in (*p.opts, *p.secondary_opts)}
    assert {o: declared[o] for o in declared if o not in flags} == commands.IMPORT_OPTIONS
    assert {o: declared[o] for o in flags} == {o: name for o, (name, _) in commands.IMPORT_FLAGS.items()}
    assert commands.parse_import_layer(["a.fgb", "--layer=x", "--create", "--no-create", "--mode", "append"]) == {
        "create": False, "dry_run": False, "geometry_type": "GEOMETRY", "mode": "append", "layer": "x",
        "file": __import__("pathlib").Path("a.fgb")}
    for args in (["a.fgb"], ["--layer", "x"], ["a.fgb", "--layer"], ["a.fgb", "b.fgb", "--layer", "x"],
                 ["a.fgb", "--layer", "x", "--help"], ["a.fgb", "--layer", "x", "--dry-run=1"], ["a.fgb", "--layer", "x", "-v"]):
        assert commands.parse_import_layer(args) is None, args
    r = ok(cli("import-layer", "--help"))
    assert "--source-layer" in r.stdout and "--geometry-type" in r.stdout
    r = cli("import-layer", tmp_path / "a.fgb", "--data-dir", tmp_path)
    assert r.returncode == 2 and "--layer" in r.stderr
    r = failed(cli("import-layer", tmp_path / "a.fgb", "--layer", "x", "--data-dir", tmp_path / "none"))
    assert r.returncode == 1 and any(line.startswith("error: the data directory") for line in r.messages)

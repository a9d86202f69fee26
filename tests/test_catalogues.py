"""Every capability's catalogue files are validated when the server starts (cityops.core.catalogues): a bad file
stops ``create_app`` (and every command) with the file and the field named, before the database is touched."""

from pathlib import Path

import pytest

from cityops.core.catalogues import CatalogueError, load_all
from cityops.core.settings import Settings

SHIPPED_EVENTS = Path(__file__).resolve().parent.parent / "cityops" / "events"


def _settings(tmp_path: Path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", secret_key="s", wiring=False, **kw)


def test_every_declared_catalogue_loads_from_the_shipped_files(tmp_path):
    loaded = load_all(_settings(tmp_path))
    for name in ("levels.toml", "roles.toml", "categories.toml", "tilesets.toml", "device_types.toml", "rules.toml",
                 "catalogue.toml", "taxonomy.toml", "calendar.toml", "events.toml", "plans.toml", "indicators",
                 "policies", "shifts.toml", "directives.toml", "gb28181.toml"):
        assert loaded[name] is not None, name


def test_a_command_checks_only_the_catalogues_it_names(tmp_path):
    loaded = load_all(_settings(tmp_path), {"base": ("categories.toml",), "org": ("levels.toml",)})
    assert sorted(loaded) == ["categories.toml", "levels.toml"]
    with pytest.raises(ValueError, match="no catalogue"):
        load_all(_settings(tmp_path), {"base": ("plans.toml",)})


def test_a_bad_taxonomy_stops_the_server_naming_file_and_field(tmp_path):
    from cityops.app import create_app

    events_dir = tmp_path / "events"
    events_dir.mkdir()
    text = (SHIPPED_EVENTS / "taxonomy.toml").read_text(encoding="utf-8")
    # The first class (component 01001) loses its normal time limit.
    bad = text.replace('limits = { normal = "4h", urgent = "2h" }', 'limits = { urgent = "2h" }', 1)
    assert bad != text
    (events_dir / "taxonomy.toml").write_text(bad, encoding="utf-8")
    settings = _settings(tmp_path, events_dir=events_dir)
    with pytest.raises(CatalogueError) as caught:
        create_app(settings)
    err = caught.value
    assert err.file == "taxonomy.toml" and err.field == "class component:01001"
    assert "taxonomy.toml" in str(err) and "class component:01001" in str(err) and "limits.normal" in str(err)
    assert not (settings.data_dir / "cityops.gpkg").exists()  # stopped before the store was opened


def test_a_deployment_calendar_is_read_from_events_dir_and_checked(tmp_path):
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    (events_dir / "calendar.toml").write_text("not = [valid toml\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"calendar.toml.*not valid TOML"):
        load_all(_settings(tmp_path, events_dir=events_dir))
    # The same settings without the bad directory load the shipped calendar again.
    assert load_all(_settings(tmp_path))["calendar.toml"] is not None


def test_a_bad_indicator_file_names_its_line_and_field(tmp_path):
    from cityops.app import create_app

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "x.toml").write_text("version = 1\n[[sector]]\ncode = 5\n", encoding="utf-8")
    with pytest.raises(CatalogueError) as caught:
        create_app(_settings(tmp_path, indicators_dir=conf))
    assert caught.value.field == "sector 5: code" and caught.value.file.endswith("x.toml")
    assert "x.toml:3" in str(caught.value)


def test_a_bad_catalogue_stops_a_command_too(tmp_path):
    import subprocess
    import sys

    events_dir = tmp_path / "events"
    events_dir.mkdir()
    (events_dir / "events.toml").write_text("version = 1\n", encoding="utf-8")
    data = tmp_path / "data"
    run = subprocess.run([sys.executable, "-m", "cityops.cli", "init", "--data-dir", str(data)], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "CITYOPS_EVENTS_DIR": str(events_dir),
                                         "CITYOPS_SECRET_KEY": "s"})
    assert run.returncode != 0
    assert "events.toml" in run.stderr + run.stdout

"""The ``cityops`` command line (Typer + Rich). Every command takes ``--data-dir``."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cityops.core.errors import CityOpsError

app = typer.Typer(help="CityOps — 城市运行和治理中心 command line", no_args_is_help=True, add_completion=False)
users_app = typer.Typer(help="Users: add, list, issue tokens", no_args_is_help=True)
app.add_typer(users_app, name="users")
layers_app = typer.Typer(help="Layer catalogue: list, versions, rollback", no_args_is_help=True)
app.add_typer(layers_app, name="layers")
console = Console()
err = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Data directory (default: CITYOPS_DATA_DIR or ./cityops-data)")


def _settings(data_dir: Optional[Path]):
    from pydantic import ValidationError

    from cityops.core.logging import configure_logging
    from cityops.core.settings import Settings

    if data_dir is not None:
        os.environ["CITYOPS_DATA_DIR"] = str(data_dir)
    try:
        settings = Settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _fail(f"invalid configuration: {problems}")
    except (FileNotFoundError, ValueError) as exc:
        _fail(f"invalid configuration: {exc}")
    configure_logging(settings.log_level, settings.log_json)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


def _store(settings):
    from cityops.core.db import make_engine, make_sessionmaker, migrate
    from cityops.org.levels import load_levels
    from cityops.org.service import OrgConfig

    engine = make_engine(settings)
    migrate(engine)
    levels = load_levels(settings.grid_code_length)
    org_config = OrgConfig(levels, settings.grid_code_length, settings.topology_tolerance_m2, settings.metric_crs)
    return engine, make_sessionmaker(engine), org_config


def _fail(message: str, code: int = 1):
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _run(fn):
    """Run a command body: domain errors become one line on stderr and a non-zero exit."""
    try:
        return fn()
    except (typer.Exit, typer.Abort):
        raise  # click's Exit is a RuntimeError: let our own exits through untouched
    except CityOpsError as exc:
        details = ""
        if isinstance(exc.details, dict) and exc.details.get("issues"):
            lines = [f"  - {i.get('check')}: {i.get('message')}" for i in exc.details["issues"][:20]]
            more = len(exc.details["issues"]) - len(lines)
            details = "\n" + "\n".join(lines) + (f"\n  … and {more} more" if more > 0 else "")
        _fail(exc.message + details)
    except (FileNotFoundError, PermissionError, RuntimeError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def init(data_dir: Optional[Path] = DataDir) -> None:
    """Create the data directory and bring the database schema up to date."""
    settings = _settings(data_dir)

    def body():
        engine, _, _ = _store(settings)
        console.print(f"database ready: {engine.url.render_as_string(hide_password=True)}")

    _run(body)


def _serve(settings, host: str, port: int) -> None:
    import uvicorn

    from cityops.app import create_app

    application = create_app(settings)
    console.print(f"CityOps serving at [bold]http://{host}:{port}/[/bold]  (API docs: /api/docs)")
    uvicorn.run(application, host=host, port=port, log_config=None, access_log=False)


@app.command()
def serve(data_dir: Optional[Path] = DataDir, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the web app and the APIs."""
    settings = _settings(data_dir)
    _run(lambda: _serve(settings, host, port))


@app.command()
def demo(
    data_dir: Optional[Path] = DataDir,
    host: str = "127.0.0.1",
    port: int = 8000,
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve after building (default) or only build"),
    seed: int = typer.Option(20260723, help="Random seed: the same seed builds the same district"),
    grids: int = typer.Option(4000, min=10, help="Approximate number of unit grids"),
) -> None:
    """Build the demo district into the data directory when it is empty, then serve it."""
    settings = _settings(data_dir)

    def body():
        from sqlalchemy import select

        from cityops.demo.generator import DEMO_PASSWORD, DemoConfig, build_demo
        from cityops.org.models import Unit

        engine, sessions, org_config = _store(settings)
        with sessions() as session:
            empty = session.scalar(select(Unit.id).limit(1)) is None
        if empty:
            start = time.perf_counter()
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
                task = bar.add_task("building the demo district", total=None)
                summary = build_demo(sessions, org_config, DemoConfig(seed=seed, grids=grids),
                                     progress=lambda m: bar.update(task, description=m))
            console.print(f"demo district built in {time.perf_counter() - start:.1f} s: {json.dumps(summary, ensure_ascii=False)}")
            console.print(f"log in as admin / district / yihe / taikang / gridworker with password [bold]{DEMO_PASSWORD}[/bold]")
        else:
            console.print("data directory already holds a district; serving it as it is")
        engine.dispose()
        if serve:
            _serve(settings, host, port)

    _run(body)


@app.command("import-units")
def import_units(
    file: Path = typer.Argument(..., help="GeoJSON, GeoPackage, Shapefile (.shp or .zip) or CSV with WKT"),
    data_dir: Optional[Path] = DataDir,
    crs: Optional[str] = typer.Option(None, help="CRS of the file when it has none (or to override it)"),
    replace: bool = typer.Option(False, help="Replace units whose codes already exist"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and report only"),
    layer: Optional[str] = typer.Option(None, help="Layer of a multi-layer file (GeoPackage)"),
) -> None:
    """Import units, all-or-nothing, printing the validation report."""
    settings = _settings(data_dir)

    def body():
        from cityops.core import audit
        from cityops.identity.scope import Scope
        from cityops.org import service, unitfiles

        if not file.exists():
            raise FileNotFoundError(f"{file} does not exist")
        _, sessions, org_config = _store(settings)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task(f"reading {file.name}", total=None)
            records = unitfiles.read_units_file(file, crs=crs, layer=layer)
            bar.update(task, description=f"validating {len(records)} units")
            with sessions() as session:
                report = service.import_units(session, org_config, audit.Actor("cli"), Scope(all_units=True), records,
                                              replace=replace, dry_run=dry_run)
                session.commit()
        data = report.to_dict()
        console.print(f"{'validated' if dry_run else 'imported'} {len(records)} units: {data['counts']}; "
                      f"{data['warnings']} warning(s)")

    _run(body)


@app.command("export-units")
def export_units(
    output: Path = typer.Argument(..., help="Output file; the format follows the extension"),
    data_dir: Optional[Path] = DataDir,
    root: Optional[str] = typer.Option(None, help="Only this unit and its subtree"),
    level: Optional[str] = typer.Option(None, help="Only this level"),
    crs: str = typer.Option("EPSG:4490", help="Output CRS"),
) -> None:
    """Export units to GeoJSON, GeoPackage, zipped Shapefile or CSV with WKT."""
    settings = _settings(data_dir)

    def body():
        from cityops.identity.scope import Scope
        from cityops.org import service, unitfiles

        fmt = unitfiles.detect_format(output.name)
        _, sessions, _ = _store(settings)
        with sessions() as session:
            records = service.export_records(session, Scope(all_units=True), root=root, level=level)
        written = unitfiles.write_units_file(records, output, fmt, crs=crs)
        console.print(f"wrote {len(records)} units to {written}")

    _run(body)


@app.command()
def locate(
    lon: float = typer.Argument(..., help="x (longitude for geographic CRSs)"),
    lat: float = typer.Argument(..., help="y (latitude for geographic CRSs)"),
    data_dir: Optional[Path] = DataDir,
    crs: Optional[str] = typer.Option(None, help="CRS of the point (default EPSG:4490; GCJ02, BD09, EPSG:n)"),
) -> None:
    """Locate a point: district → township → village → grid."""
    settings = _settings(data_dir)

    def body():
        import numpy as np

        from cityops.core.crs import parse_crs, to_canonical_xy
        from cityops.org.locate import LocatorCache

        _, sessions, org_config = _store(settings)
        x, y = to_canonical_xy(np.array([lon]), np.array([lat]), parse_crs(crs))
        located = LocatorCache(sessions, org_config.levels).get().locate(float(x[0]), float(y[0]))
        if located is None:
            _fail(f"({lon}, {lat}) lies outside the jurisdiction", code=2)
        table = Table("level", "code", "name")
        for link in located.chain:
            table.add_row(link.level, link.code, link.name)
        console.print(table)

    _run(body)


@app.command("import-layer")
def import_layer(
    file: Path = typer.Argument(..., help="GeoJSON, GeoJSON-seq, GeoPackage, Shapefile (.shp/.zip), FlatGeobuf or CSV"),
    layer: str = typer.Option(..., "--layer", help="Layer key"),
    data_dir: Optional[Path] = DataDir,
    create: bool = typer.Option(False, help="Register the layer first (needs --title and --category)"),
    title: Optional[str] = typer.Option(None, help="Title (zh) when creating"),
    category: Optional[str] = typer.Option(None, help="Minor category code when creating, e.g. 0702"),
    geometry_type: str = typer.Option("GEOMETRY", help="POINT, MULTIPOLYGON … when creating"),
    mode: str = typer.Option("replace", help="replace (a new full version) or append"),
    crs: Optional[str] = typer.Option(None, help="CRS of the file when it has none (or to override it)"),
    source_layer: Optional[str] = typer.Option(None, help="Layer inside a multi-layer file"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and report only"),
) -> None:
    """Import a file as a layer's next version: streamed, all-or-nothing, with a progress bar."""
    settings = _settings(data_dir)

    def body():
        from rich.progress import BarColumn, MofNCompleteColumn

        from cityops.base import service
        from cityops.core import audit
        from cityops.identity.scope import Scope

        if not file.exists():
            raise FileNotFoundError(f"{file} does not exist")
        _, sessions, _ = _store(settings)
        everything, actor = Scope(all_units=True), audit.Actor("cli")
        with sessions() as session:
            if create:
                if not title or not category:
                    _fail("--create needs --title and --category")
                service.create_layer(session, actor, everything, {"key": layer, "title_zh": title, "category": category,
                                                                  "geometry_type": geometry_type})
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console) as bar:
                task = bar.add_task(f"importing {file.name}", total=None)
                report = service.import_file(session, actor, everything, layer, file, crs=crs, mode=mode,
                                             source_layer=source_layer, dry_run=dry_run,
                                             progress=lambda done, total: bar.update(task, completed=done, total=total))
            session.commit()
        verb = "validated" if dry_run else f"imported as version {report['version']}"
        console.print(f"{verb}: {report['read']} read, {report['added']} added, {report['removed']} replaced, "
                      f"{report['repaired']} repaired")
        for issue in report["issues"][:20]:
            console.print(f"  - {issue['check']}: {issue['message']}")

    _run(body)


@app.command("export-layer")
def export_layer(
    layer: str = typer.Argument(..., help="Layer key"),
    output: Path = typer.Argument(..., help="Output file; the format follows the extension"),
    data_dir: Optional[Path] = DataDir,
    crs: str = typer.Option("EPSG:4490", help="Output CRS"),
    bbox: Optional[str] = typer.Option(None, help="minx,miny,maxx,maxy (lon/lat) to export part of the layer"),
) -> None:
    """Export a layer's current features."""
    settings = _settings(data_dir)

    def body():
        from cityops.base import layerfiles, service
        from cityops.identity.scope import Scope
        from cityops.org.routes import parse_bbox

        fmt = layerfiles.detect_format(output.name)
        _, sessions, _ = _store(settings)
        with sessions() as session:
            written = service.export_layer(session, Scope(all_units=True), layer, output, fmt, crs=crs, bbox=parse_bbox(bbox))
        console.print(f"wrote {written}")

    _run(body)


@layers_app.command("list")
def layers_list(data_dir: Optional[Path] = DataDir) -> None:
    """List the layer catalogue."""
    settings = _settings(data_dir)

    def body():
        from cityops.base import service
        from cityops.identity.scope import Scope

        _, sessions, _ = _store(settings)
        table = Table("key", "title", "category", "geometry", "version", "features")
        with sessions() as session:
            for layer in service.list_layers(session, Scope(all_units=True)):
                table.add_row(layer.key, layer.title_zh, layer.category, layer.geometry_type,
                              str(layer.current_version), str(layer.feature_count))
        console.print(table)

    _run(body)


@layers_app.command("versions")
def layers_versions(layer: str, data_dir: Optional[Path] = DataDir) -> None:
    """A layer's versions, newest first."""
    settings = _settings(data_dir)

    def body():
        from cityops.base import service
        from cityops.identity.scope import Scope

        _, sessions, _ = _store(settings)
        table = Table("version", "at", "actor", "action", "added", "removed", "repaired", "features")
        with sessions() as session:
            for v in service.versions(session, layer, Scope(all_units=True)):
                table.add_row(str(v.version), v.at.strftime("%Y-%m-%d %H:%M"), v.actor,
                              v.action + (f" → v{v.restores}" if v.restores is not None else ""),
                              str(v.added), str(v.removed), str(v.repaired), str(v.feature_count))
        console.print(table)

    _run(body)


@layers_app.command("rollback")
def layers_rollback(layer: str, version: int, data_dir: Optional[Path] = DataDir) -> None:
    """Restore an earlier version of a layer (as a new version; history is kept)."""
    settings = _settings(data_dir)

    def body():
        from cityops.base import service
        from cityops.core import audit
        from cityops.identity.scope import Scope

        _, sessions, _ = _store(settings)
        with sessions() as session:
            entry = service.rollback(session, audit.Actor("cli"), Scope(all_units=True), layer, version)
            session.commit()
        console.print(f"layer {layer} is at version {entry.version} (restores v{version}: {entry.feature_count} features)")

    _run(body)


@users_app.command("add")
def users_add(
    username: str,
    role: str = typer.Option(..., help="administrator, district_operator, township_operator, village_cadre, grid_worker, department_staff, leader, integration"),
    unit: list[str] = typer.Option([], "--unit", help="Unit code of the user's scope (repeatable)"),
    department: list[str] = typer.Option([], "--department", help="Department code (repeatable)"),
    display_name: Optional[str] = None,
    password: Optional[str] = typer.Option(None, help="Password (prompted when omitted; integrations need none)"),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Add a user."""
    settings = _settings(data_dir)
    if password is None and role != "integration" and sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)

    def body():
        from cityops.core import audit
        from cityops.identity import service

        _, sessions, _ = _store(settings)
        with sessions() as session:
            service.create_user(session, audit.Actor("cli"), username=username, password=password, role=role,
                                display_name=display_name, scope_units=unit, scope_departments=department)
            session.commit()
        console.print(f"user {username} added ({role})")

    _run(body)


@users_app.command("list")
def users_list(data_dir: Optional[Path] = DataDir) -> None:
    """List users."""
    settings = _settings(data_dir)

    def body():
        from sqlalchemy import select

        from cityops.identity.models import User

        _, sessions, _ = _store(settings)
        table = Table("username", "name", "role", "units", "departments", "active")
        with sessions() as session:
            for u in session.scalars(select(User).order_by(User.username)):
                table.add_row(u.username, u.display_name, u.role, ",".join(u.scope_units),
                              ",".join(u.scope_departments), "yes" if u.active else "no")
        console.print(table)

    _run(body)


@users_app.command("token")
def users_token(
    username: str,
    data_dir: Optional[Path] = DataDir,
    api_key: bool = typer.Option(False, "--api-key", help="A long-lived API key instead of a login token"),
    name: str = typer.Option("cli", help="Label of the API key"),
) -> None:
    """Issue a bearer token (or an API key) for a user and print it."""
    settings = _settings(data_dir)

    def body():
        from datetime import timedelta

        from sqlalchemy import select

        from cityops.core import audit
        from cityops.identity import service
        from cityops.identity.models import User

        _, sessions, _ = _store(settings)
        with sessions() as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                _fail(f"no user {username!r}")
            ttl = None if api_key else timedelta(minutes=settings.token_ttl_minutes)
            raw, _ = service.issue_token(session, settings.resolved_secret, user,
                                         kind="api_key" if api_key else "login", ttl=ttl, name=name if api_key else None)
            audit.record(session, audit.Actor("cli"), "token.issue", "user", username, after={"api_key": api_key})
            session.commit()
        console.print(raw, soft_wrap=True)

    _run(body)



# --- sensing: 物联感知 -------------------------------------------------------------------------------
simulate_app = typer.Typer(help="Synthesise sensor streams over the demo district", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")


@simulate_app.command("storm")
def simulate_storm_cmd(
    data_dir: Optional[Path] = DataDir,
    hours: int = typer.Option(24, min=1, max=240, help="Simulated hours"),
    step_minutes: int = typer.Option(10, min=1, max=60, help="GNSS reporting interval (gauges report hourly)"),
    speed: Optional[float] = typer.Option(None, min=0.001, help="Simulated seconds per real second (1 = live); omit to run compressed"),
    start: Optional[str] = typer.Option(None, help="Start of the storm, ISO 8601 (default: now when live, else ending now)"),
    seed: int = typer.Option(20260723, help="Random seed: the same seed gives the same storm"),
    url: Optional[str] = typer.Option(None, help="Post to a running server (its live alarm stream shows the storm)"),
    token: Optional[str] = typer.Option(None, help="Bearer token or API key for --url"),
) -> None:
    """The July storm over 义和镇: hourly rain and the 老沟湾 slope accelerating, raising alarms."""
    settings = _settings(data_dir)

    def body():
        from cityops.sensing import simulate
        from cityops.sensing.timeutil import parse_instant

        if url and not token:
            _fail("--url needs --token")
        _, sessions, _ = _store(settings)
        start_ms = parse_instant(start, "start") if start else None
        summary = simulate.simulate_storm(sessions, start_ms=start_ms, hours=hours, step_minutes=step_minutes, seed=seed,
                                          speed=speed, post=simulate.http_poster(url, token) if url else None,
                                          progress=(lambda m: console.print(m)) if speed else None)
        console.print(json.dumps(summary, ensure_ascii=False))

    _run(body)


@app.command("sensing-maintain")
def sensing_maintain(
    data_dir: Optional[Path] = DataDir,
    retention: bool = typer.Option(True, "--retention/--no-retention", help="Also delete data past each tier's retention"),
) -> None:
    """Periodic sensing work (run from cron/systemd every few minutes): no-signal alarms, escalation of
    unacknowledged alarms, retention per time-series tier."""
    settings = _settings(data_dir)

    def body():
        from cityops.sensing import alarms, rules, timeseries

        _, sessions, _ = _store(settings)
        with sessions() as session:
            silent = rules.check_no_signal(session)
            escalated = alarms.escalate_overdue(session)
            removed = timeseries.apply_retention(session) if retention else {}
            session.commit()
        console.print(json.dumps({"no_signal": len([c for c in silent if c[1]]), "recovered": len([c for c in silent if not c[1]]),
                                  "escalated": len(escalated), "removed": removed}, ensure_ascii=False))

    _run(body)


if __name__ == "__main__":
    app()

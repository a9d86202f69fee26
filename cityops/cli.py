"""The ``cityops`` command line (Typer + Rich). Every command takes ``--data-dir``."""

from __future__ import annotations

import sys

if __name__ == "__main__":  # ``python -m cityops.cli``: a well-formed import-layer runs before Typer loads
    from cityops.commands import run_without_typer

    run_without_typer(sys.argv[1:])

import json
import logging
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cityops import commands

app = typer.Typer(help="CityOps — 城市运行和治理中心 command line", no_args_is_help=True, add_completion=False)
users_app = typer.Typer(help="Users: add, list, issue tokens, login lockouts", no_args_is_help=True)
app.add_typer(users_app, name="users")
layers_app = typer.Typer(help="Layer catalogue: list, versions, rollback", no_args_is_help=True)
app.add_typer(layers_app, name="layers")
console = Console()
err = Console(stderr=True)

DataDir = typer.Option(None, "--data-dir", help="Data directory (default: CITYOPS_DATA_DIR or ./cityops-data)")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"cityops {version('cityops')}")
        raise typer.Exit()


@app.callback()
def _main(show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                            help="Print the version and exit")) -> None:
    """CityOps — 城市运行和治理中心 command line"""


def _settings(data_dir: Optional[Path], *, create: bool = False, catalogues: dict[str, tuple[str, ...]] | None = None):
    """The settings for ``--data-dir`` (``commands.settings_for``); a failure is the command's one-line error."""
    try:
        return commands.settings_for(data_dir, create=create, catalogues=catalogues)
    except commands.CommandFailed as exc:
        _fail(exc.message, exc.code)


def _store(settings, *, bus: bool = True):
    return commands.open_store(settings, bus=bus)


def _finish_buses() -> None:
    commands.finish_buses(lambda text: err.print(f"[yellow]warning:[/yellow] {text}"))


def _register_bus(engine, settings) -> None:
    commands.register_bus(engine, settings)


def _consumed(*events) -> bool:
    return commands.consumed(*events)


def _fail(message: str, code: int = 1):
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _run(fn):
    """Run a command body: domain errors become one line on stderr and a non-zero exit."""
    try:
        return fn()
    except (typer.Exit, typer.Abort):
        raise  # click's Exit is a RuntimeError: let our own exits through untouched
    except Exception as exc:
        message = commands.failure(exc)
        if message is None:
            raise
        _fail(message, exc.code if isinstance(exc, commands.CommandFailed) else 1)
    finally:
        _finish_buses()


@app.command()
def init(data_dir: Optional[Path] = DataDir) -> None:
    """Create the data directory and bring the database schema up to date."""
    settings = _settings(data_dir, create=True)

    def body():
        engine, _, _ = _store(settings)
        console.print(f"database ready: {engine.url.render_as_string(hide_password=True)}")

    _run(body)


def _serve(settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from cityops.app import create_app

    if workers > 1 and settings.is_sqlite and workers > settings.sqlite_max_workers:
        raise ValueError(f"--workers {workers}: the embedded SQLite store serves at most {settings.sqlite_max_workers} "
                         "worker processes (one writer at a time; CITYOPS_SQLITE_MAX_WORKERS); use PostgreSQL "
                         "(CITYOPS_DATABASE_URL) for more")
    console.print(f"CityOps serving at [bold]http://{host}:{port}/[/bold]  (API docs: /api/docs)")
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False,
                    timeout_keep_alive=settings.keep_alive_seconds)
        return
    # Each worker process builds its app by importing the factory: the settings are handed over in a file.
    from cityops.core import serving
    from cityops.core.db import make_engine, migrate
    from cityops.core.settings import hand_over

    engine = make_engine(settings)
    migrate(engine)  # once, before the workers start
    engine.dispose()
    handed = hand_over(settings, workers=workers)
    try:
        # A listening socket per worker (SO_REUSEPORT): connections spread evenly over the processes.
        serving.serve("cityops.app:create_app", host, port, workers, factory=True, access_log=False,
                      timeout_keep_alive=settings.keep_alive_seconds)
    finally:
        handed.unlink(missing_ok=True)


@app.command()
def serve(data_dir: Optional[Path] = DataDir, host: str = "127.0.0.1", port: int = 8000,
          workers: int = typer.Option(1, "--workers", min=1, max=64,
                                      help="Worker processes (PostgreSQL; the SQLite store allows a few)")) -> None:
    """Serve the web app and the APIs."""
    settings = _settings(data_dir)
    _run(lambda: _serve(settings, host, port, workers))


@app.command()
def demo(
    data_dir: Optional[Path] = DataDir,
    host: str = "127.0.0.1",
    port: int = 8000,
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve after building (default) or only build"),
    seed: int = typer.Option(20260723, help="Random seed: the same seed builds the same district"),
    grids: int = typer.Option(4000, min=10, help="Approximate number of unit grids"),
    buildings: Optional[int] = typer.Option(None, min=1, max=20_000_000,
                                            help="Buildings to generate (default ~25 per grid; 8090000 = census scale)"),
    boreholes: Optional[int] = typer.Option(None, min=0, max=5_000_000,
                                            help="Geological boreholes (default in proportion; 600,000 at census scale)"),
    storm_speed: float = typer.Option(60.0, "--storm-speed", min=0,
                                      help="While serving, run the July storm over 义和镇 live at this speed-up (0 = off)"),
    worker_every: float = typer.Option(4.0, "--worker-every", min=0,
                                       help="While serving, simulated grid workers confirm a household every this many "
                                            "seconds, leaving 30 % of each zone to move (0 = off)"),
) -> None:
    """Build the demo district into the data directory when it is empty, then serve it: the storm simulator
    feeds the sensors live from the moment the server is up, so 老沟湾's warning rises, the plan activates, the
    zone appears and simulated grid workers confirm its households, on screen."""
    settings = _settings(data_dir, create=True)

    def body():
        from sqlalchemy import select

        from cityops.demo.generator import DEMO_PASSWORD, DemoConfig, build_demo, unfinished
        from cityops.org.models import Unit

        # The demo's history is not live: the bus's consumers start after it (with what the storm then sends).
        engine, sessions, org_config = _store(settings, bus=False)
        with sessions() as session:
            empty = session.scalar(select(Unit.id).limit(1)) is None
        # Steps that only make reads faster run once the server answers (a served map sooner; readers do without).
        deferred: list = []
        if empty:
            start = time.perf_counter()
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
                task = bar.add_task("building the demo district", total=None)
                summary = build_demo(sessions, org_config, DemoConfig(seed=seed, grids=grids, buildings=buildings,
                                                                      boreholes=boreholes),
                                     progress=lambda m: bar.update(task, description=m),
                                     deferred=deferred if serve else None)
            console.print(f"demo district built in {time.perf_counter() - start:.1f} s: {json.dumps(summary, ensure_ascii=False)}")
            console.print(f"log in as admin / district / leader / yihe / taikang / gridworker / laogouwan / zhujian "
                          f"with password [bold]{DEMO_PASSWORD}[/bold]")
        else:
            console.print("data directory already holds a district; serving it as it is")
            # A demo stopped while writing what it writes after start: the rest is written (again after start).
            deferred = unfinished(sessions)
            if deferred and not serve:
                for name, call in deferred:
                    console.print(f"completing {name}")
                    call()
                deferred = []
        _register_bus(engine, settings)
        if serve and storm_speed > 0:
            _start_storm(sessions, storm_speed)
        if serve and worker_every > 0:
            _start_workers(sessions, worker_every)
        if deferred:
            _after_start(host, port, deferred)
        if serve:
            _serve(settings, host, port)
        engine.dispose()

    _run(body)


def _start_storm(sessions, speed: float) -> None:
    """The storm simulator in a daemon thread: 24 simulated hours at ``speed`` × real time."""
    import threading

    from cityops.sensing.simulate import simulate_storm

    def run():
        try:
            summary = simulate_storm(sessions, hours=24, speed=speed)
            logging.getLogger("cityops.demo").info("storm simulation finished", extra={"summary": summary})
        except Exception:  # noqa: BLE001 - the demo server keeps serving whatever the simulator does
            logging.getLogger("cityops.demo").exception("storm simulation stopped")

    threading.Thread(target=run, name="storm-simulator", daemon=True).start()
    console.print(f"July storm simulator running live at {speed:g}× (24 h in {24 * 60 / speed:.0f} min)")


def _after_start(host: str, port: int, steps: list) -> None:
    """Run the demo's deferred steps in a daemon thread once the server accepts connections."""
    import socket
    import threading

    def run():
        log = logging.getLogger("cityops.demo")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        for name, call in steps:
            started = time.perf_counter()
            try:
                call()
                log.info("demo step done after start", extra={"step": name, "seconds": time.perf_counter() - started})
            except Exception:  # noqa: BLE001 - the server keeps serving; readers do without what the step writes
                log.exception("demo step after start failed", extra={"step": name})

    threading.Thread(target=run, name="demo-deferred-steps", daemon=True).start()
    console.print(f"after start: {', '.join(name for name, _ in steps)}")


def _start_workers(sessions, every_s: float) -> None:
    """Simulated grid workers in a daemon thread: they confirm the households of active responses."""
    import threading

    from cityops.tasks.simulate import run_workers

    threading.Thread(target=run_workers, args=(sessions,), kwargs={"every_s": every_s}, name="demo-workers", daemon=True).start()
    console.print(f"simulated grid workers confirm a household every {every_s:g} s (30 % of each zone left for you)")


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


IMPORT_CATALOGUES = commands.IMPORT_CATALOGUES


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
    # A well-formed invocation from the entry points runs in ``commands.run_without_typer``, before Typer loads;
    # this is the same command for everything else (Typer's own callers, e.g. its test runner).
    settings = _settings(data_dir, catalogues=IMPORT_CATALOGUES)
    _run(lambda: commands.import_layer(
        settings, file, layer, create=create, title=title, category=category, geometry_type=geometry_type, mode=mode,
        crs=crs, source_layer=source_layer, dry_run=dry_run,
        progress=lambda description: commands.rich_progress(description, console), say=console.print))


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


@users_app.command("lockouts")
def users_lockouts(data_dir: Optional[Path] = DataDir) -> None:
    """List failed-login counters and lockouts (accounts and client addresses)."""
    settings = _settings(data_dir)

    def body():
        from cityops.identity import throttle

        _, sessions, _ = _store(settings)
        table = Table("kind", "key", "failures", "locked until")
        with sessions() as session:
            for t in throttle.locks(session):
                table.add_row(t.kind, t.key, str(t.failures), t.locked_until.isoformat() if t.locked_until else "")
        console.print(table)

    _run(body)


@users_app.command("unlock")
def users_unlock(
    username: Optional[str] = typer.Argument(None, help="The account to unlock"),
    address: Optional[str] = typer.Option(None, "--address", help="A client IP address to unlock instead"),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Lift a login lockout (too many failed logins) of an account or a client address."""
    settings = _settings(data_dir)
    if (username is None) == (address is None):
        _fail("name an account, or give --address")
    kind, key = ("account", username) if username is not None else ("address", address)

    def body():
        from cityops.core import audit
        from cityops.identity import throttle

        _, sessions, _ = _store(settings)
        with sessions() as session:
            if not throttle.lift(session, audit.Actor("cli"), kind, key):
                _fail(f"no lockout of {kind} {key!r}")
            session.commit()
        console.print(f"{kind} {key} unlocked")

    _run(body)


# --- housing registry (房屋 · 住户): census-scale exports --------------------------------------------------

@app.command("export-housing")
def export_housing(
    kind: str = typer.Argument(..., help="buildings or households"),
    output: Path = typer.Argument(..., help="Output file; the format follows the extension (.fgb, .gpkg, .geojson, .csv …)"),
    data_dir: Optional[Path] = DataDir,
    crs: str = typer.Option("EPSG:4490", help="Output CRS"),
    root: Optional[str] = typer.Option(None, help="Only this unit's subtree (a unit code)"),
    bbox: Optional[str] = typer.Option(None, help="minx,miny,maxx,maxy (lon/lat); buildings only"),
    personal: bool = typer.Option(False, "--personal/--masked", help="Households: names, phones in clear (default masked)"),
) -> None:
    """Export buildings (footprints) or households (personal data masked unless --personal), streamed: the
    census file of 8.09 million buildings for the import benchmark comes from here."""
    settings = _settings(data_dir)

    def body():
        from cityops.base import layerfiles
        from cityops.housing import service
        from cityops.identity.scope import Scope
        from cityops.org.routes import parse_bbox

        fmt = layerfiles.detect_format(output.name)
        _, sessions, _ = _store(settings)
        start = time.perf_counter()
        with sessions() as session:
            written = service.export(session, Scope(all_units=True), personal, kind, output, fmt, crs=crs, root=root,
                                     bbox=parse_bbox(bbox))
        console.print(f"wrote {written} in {time.perf_counter() - start:.1f} s")

    _run(body)


# ------------------------------------------------------------------------- warning (风险预警) commands
warning_app = typer.Typer(help="Early warning: calibrate thresholds, skill scores, evaluate risk points", no_args_is_help=True)
app.add_typer(warning_app, name="warning")


@warning_app.command("calibrate")
def warning_calibrate(
    events: Path = typer.Argument(..., help="CSV with columns duration_h,event_mm (one rainfall condition per landslide)"),
    method: str = typer.Option("normal", help="residual model: normal (maximum likelihood) or kde (IRPI)"),
    gamma: Optional[float] = typer.Option(None, help="fix γ from a regional fit and estimate only α (few local events)"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples for the uncertainty (0 = none)"),
    key: str = typer.Option("local", help="key of the threshold set printed for catalogue.toml"),
    seed: int = typer.Option(0),
) -> None:
    """Fit four-level ED thresholds with the frequentist method and print them as a catalogue entry."""

    def body():
        import csv

        from cityops.warning.catalogue import catalogue
        from cityops.warning.models.calibration import fit_frequentist

        with events.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"duration_h", "event_mm"} - set(reader.fieldnames or [])
            if missing:
                _fail(f"{events}: missing columns {sorted(missing)}")
            rows = []
            for n, row in enumerate(reader, start=2):
                try:
                    rows.append((float(row["duration_h"]), float(row["event_mm"])))
                except ValueError:
                    _fail(f"{events}: line {n}: duration_h and event_mm must be numbers")
        cal = catalogue().params["calibration"]
        fit = fit_frequentist([r[0] for r in rows], [r[1] for r in rows], cal["probabilities"], min_events=cal["min_events"],
                              method=method, gamma=gamma, n_bootstrap=bootstrap, quantiles=cal["bootstrap_quantiles"], seed=seed)
        table = Table(title=f"ED thresholds from {fit.n_events} events (γ = {fit.gamma:.4f}, σ = {fit.sigma:.4f})")
        span = f"{min(cal['bootstrap_quantiles']):.0%}–{max(cal['bootstrap_quantiles']):.0%}"
        for column in ("level", "P", "α_P", "E_P(24 h) mm", f"α_P {span}"):
            table.add_column(column)
        for level, p in fit.probabilities.items():
            b = list((fit.bootstrap.get(level) or {}).values())
            table.add_row(level, f"{p:.2f}", f"{fit.alpha_p[level]:.4f}", f"{fit.threshold(level, 24):.2f}",
                          f"{min(b):.3f}–{max(b):.3f}" if b else "–")
        console.print(table)
        entry = fit.as_threshold_set(key)
        alpha = ", ".join(f"{k} = {v}" for k, v in entry["alpha"].items())
        probs = ", ".join(f"{k} = {v}" for k, v in entry["probabilities"].items())
        console.print(f'[[threshold_sets]]\nkey = "{key}"\ngamma = {entry["gamma"]}\nalpha = {{ {alpha} }}\n'
                      f'probabilities = {{ {probs} }}\ncalibration = "{entry["calibration"]}"', soft_wrap=True, markup=False)

    _run(body)


@warning_app.command("skill")
def warning_skill(hits: int, false_alarms: int, misses: int, correct_negatives: int) -> None:
    """Skill scores of a threshold from its contingency table (a b c d)."""

    def body():
        from cityops.warning.models.skill import Contingency

        scores = Contingency(hits, false_alarms, misses, correct_negatives).scores()
        table = Table(title="skill scores")
        table.add_column("score")
        table.add_column("value", justify="right")
        for name in ("pod", "far", "pofd", "tss", "csi", "hss", "ets", "bias", "pc"):
            table.add_row(name.upper(), f"{scores[name]:.4f}")
        console.print(table)

    _run(body)


@warning_app.command("evaluate")
def warning_evaluate(
    code: Optional[str] = typer.Option(None, help="one risk point (default: all)"),
    at: Optional[str] = typer.Option(None, help="evaluation time, ISO 8601 with offset (default: now)"),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Evaluate risk points from the stored observations and print their levels."""
    settings = _settings(data_dir)

    def body():
        from datetime import UTC, datetime

        from sqlalchemy import select

        from cityops.warning import service
        from cityops.warning.tables import RiskPoint

        when = datetime.now(UTC)
        if at:
            try:
                when = datetime.fromisoformat(at)
            except ValueError:
                _fail(f"--at {at!r} is not an ISO 8601 time")
            if when.tzinfo is None:
                _fail("--at needs a UTC offset, e.g. 2026-07-09T06:00:00+08:00")
        _, sessions, _ = _store(settings)
        with sessions() as session:
            codes = [code] if code else list(session.scalars(select(RiskPoint.code).order_by(RiskPoint.code)))
            table = Table(title=f"risk points at {when.isoformat()}")
            for column in ("code", "level", "changed", "why"):
                table.add_column(column)
            for c in codes:
                a = service.evaluate_risk_point(session, c, service.stored_series(session), when)
                table.add_row(c, a.level, "yes" if a.changed else "", (a.reasons or [""])[0])
        console.print(table)

    _run(body)


# --- vector tiles (cityops/tiles/cli.py) ---
from cityops.tiles import cli as _tiles_cli  # noqa: E402

_tiles_cli.register(app, _settings, _store, _run, console, DataDir)


# ------------------------------------------------------------------------------ tasks (任务中心 · 应急预案)

tasks_app = typer.Typer(help="Task center: plans, warnings, overdue reminders", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("plans")
def tasks_plans() -> None:
    """List the emergency plans (plans.toml): hazard type, trigger level, activation and actions per level."""
    from rich.table import Table

    from cityops.tasks.catalogue import ROMAN, catalogue

    table = Table("plan", "hazard", "trigger", "activation", "zone buffer m", "actions I / II / III / IV")
    for plan in catalogue().plans:
        table.add_row(plan.key, plan.hazard_type, ROMAN[plan.trigger_level], plan.activation, f"{plan.zone_buffer_m:g}",
                      " / ".join(str(len(plan.levels[n].actions)) for n in (1, 2, 3, 4)))
    console.print(table)


@tasks_app.command("warning")
def tasks_warning(
    risk_point: str = typer.Option(..., "--risk-point", help="risk point code"),
    hazard: str = typer.Option(..., "--hazard", help="hazard type, e.g. landslide"),
    level: str = typer.Option(..., "--level", help="1–4, I–IV, red/orange/yellow/blue, or none"),
    unit: str = typer.Option(..., "--unit", help="unit code of the risk point"),
    lon: Optional[float] = typer.Option(None, help="hazard position (EPSG:4490)"),
    lat: Optional[float] = typer.Option(None),
    radius_m: float = typer.Option(30.0, help="radius of the hazard body around lon/lat"),
    drill: bool = typer.Option(False, "--drill", help="run it as a drill (演练)"),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Deliver a warning level change to the plans, as the warning engine does (drills, tests, fallback)."""
    settings = _settings(data_dir)

    def body():
        from shapely.geometry import Point

        from cityops.core import audit
        from cityops.core.spatial import buffer_m
        from cityops.tasks import evacuation, incidents, response

        _, sessions, _ = _store(settings)
        geometry = buffer_m(Point(lon, lat), radius_m, settings.metric_crs) if lon is not None and lat is not None else None
        with sessions() as session:
            session.info["metric_crs"] = settings.metric_crs
            incident = response.on_warning(session, risk_point_code=risk_point, hazard_type=hazard, level=level, unit_code=unit,
                                           geometry=geometry, evidence={"source": "cli"}, actor=audit.Actor("cli"), drill=drill)
            session.commit()
            if incident is None:
                console.print("below the plan's trigger level: no response")
            else:
                totals = evacuation.totals(session, incidents.ALL, incident.id)["district"]
                console.print(f"incident {incident.id}: {incident.status}, response {incident.response_level}, "
                              f"{totals['households']} households / {totals['people']} people locked")

    _run(body)


@tasks_app.command("check-overdue")
def tasks_check_overdue(
    escalate_after_minutes: int = typer.Option(30, help="escalate tasks this long past their deadline"),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Remind overdue tasks and escalate the long overdue to the level above (run it from a timer)."""
    settings = _settings(data_dir)

    def body():
        from datetime import timedelta

        from cityops.core import audit
        from cityops.tasks import incidents, work

        _, sessions, _ = _store(settings)
        with sessions() as session:
            result = work.check_overdue(session, audit.Actor("timer"), incidents.ALL,
                                        escalate_after=timedelta(minutes=escalate_after_minutes))
            session.commit()
        console.print(f"reminded {len(result['reminded'])}, escalated {len(result['escalated'])}")

    _run(body)


# ---------------------------------------------------------------------------------- events (事件中心)
events_app = typer.Typer(help="Event center (事件中心): SLA sweep, 12345 import, evaluation export.", no_args_is_help=True)
app.add_typer(events_app, name="events")


@events_app.command("sweep")
def events_sweep(data_dir: Optional[Path] = DataDir,
                 now: Optional[str] = typer.Option(None, help="Evaluate deadlines as of this ISO 8601 time (default: now)")) -> None:
    """Due-soon warnings and escalation of overdue cases (run it from cron or a timer every few minutes)."""
    settings = _settings(data_dir)

    def body():
        from datetime import datetime

        from cityops.events import sla

        _, sessions, _ = _store(settings)
        at = datetime.fromisoformat(now) if now else None
        if at is not None and at.tzinfo is None:
            _fail("--now needs a time zone, e.g. 2026-11-23T09:00:00+08:00")
        with sessions() as session:
            counts = sla.sweep(session, at)
            session.commit()
        console.print(f"due soon: {counts['due_soon']}, escalated: {counts['escalated']}")

    _run(body)


@events_app.command("import-hotline")
def events_import_hotline(path: Path, data_dir: Optional[Path] = DataDir) -> None:
    """Import 12345 hotline tickets from a CSV file (all or nothing; known tickets are skipped)."""
    settings = _settings(data_dir)

    def body():
        from cityops.core import audit
        from cityops.events import hotline, routing

        _, sessions, _ = _store(settings)
        with sessions() as session:
            result = hotline.import_hotline_csv(session, path.read_bytes(), audit.Actor("cli"), routing.ALL)
            session.commit()
        console.print(f"created {result['created']}, skipped {result['skipped']}")

    _run(body)


@events_app.command("evaluate")
def events_evaluate(start: str, end: str, data_dir: Optional[Path] = DataDir,
                    group: str = typer.Option("township", help="district, township, village, grid, department, reporter, filer, dispatcher"),
                    output: Optional[Path] = typer.Option(None, help="Write .csv or .xlsx instead of printing")) -> None:
    """Evaluation (绩效评价) for a period [START, END), ISO 8601 times with a time zone."""
    settings = _settings(data_dir)

    def body():
        from datetime import datetime

        from cityops.events import evaluation
        from cityops.events.routing import ALL

        _, sessions, _ = _store(settings)
        try:
            period = datetime.fromisoformat(start), datetime.fromisoformat(end)
        except ValueError as exc:
            _fail(f"bad time: {exc}")
        with sessions() as session:
            rows = evaluation.evaluate(session, ALL, period[0], period[1], group)
        if output is not None:
            data = evaluation.to_xlsx(rows) if output.suffix.lower() == ".xlsx" else evaluation.to_csv(rows)
            output.write_bytes(data)
            console.print(f"wrote {len(rows)} rows to {output}")
            return
        table = Table("key", "filed", "due", "closed", "on time", "closure", "on-time closure", "rework", "composite")
        pc = lambda v: "—" if v is None else f"{v * 100:.2f} %"  # noqa: E731
        for r in rows:
            table.add_row(str(r["key"]), str(r["filed"]), str(r["due"]), str(r["closed"]), str(r["closed_on_time"]),
                          pc(r["closure_rate"]), pc(r["ontime_closure_rate"]), pc(r["rework_rate"]), str(r["composite"]))
        console.print(table)

    _run(body)


# --- sensing: 物联感知 -------------------------------------------------------------------------------
indicators_app = typer.Typer(help="Indicators (体征指标): check the catalogue, compute periods, reported values due",
                             no_args_is_help=True)
app.add_typer(indicators_app, name="indicators")


def _at_option(at: Optional[str]):
    from datetime import datetime

    value = datetime.fromisoformat(at) if at else None
    if value is not None and value.tzinfo is None:
        _fail("--at needs a time zone, e.g. 2026-11-23T09:00:00+08:00")
    return value


@indicators_app.command("check")
def indicators_check(data_dir: Optional[Path] = DataDir) -> None:
    """Validate the catalogue (the shipped pack and the deployment's indicators_dir) and count what it holds."""
    settings = _settings(data_dir, create=True)  # reads files only: no store needed, none is made

    def body():
        from cityops.indicators import catalogue

        try:
            cat = catalogue.load(settings.indicators_dir, pack=catalogue.pack_path(settings.indicators_pack))
        except catalogue.CatalogueError as exc:
            _fail(str(exc))
        subs = cat.subrunways.values()
        console.print(f"{len(cat.sectors)} sectors, {len(cat.runways)} runways, "
                      f"{sum(s.issued == 'city' for s in subs)} city + {sum(s.issued == 'local' for s in subs)} local "
                      f"sub-runways, {len(cat.indicators)} indicators, {len(cat.scorecards)} scorecards, "
                      f"{len(cat.townships)} township subsets")

    _run(body)


@indicators_app.command("compute")
def indicators_compute(data_dir: Optional[Path] = DataDir,
                       period: Optional[str] = typer.Option(None, help="hour, day, week, month or quarter (default: all in use)"),
                       at: Optional[str] = typer.Option(None, help="A time in the period, ISO 8601 (default: now; a past time "
                                                                  "recomputes history with the definitions in force)"),
                       days: int = typer.Option(0, min=0, max=400, help="Also the daily values of this many days before"),
                       act: bool = typer.Option(True, help="Open and close breaches (and their cases)")) -> None:
    """Compute, store and judge indicators for every unit (run it from a timer for the periodic ones)."""
    settings = _settings(data_dir)

    def body():
        from datetime import timedelta

        from cityops.core.types import utcnow
        from cityops.indicators import service

        _, sessions, _ = _store(settings)
        cat = service.load_catalogue(settings)
        when = _at_option(at) or utcnow()
        with sessions() as session:
            for back in range(days, 0, -1):
                service.run(session, cat, "day", when - timedelta(days=back), act=False)
            results = service.run_all(session, cat, when, act=act, periods=(period,) if period else None)
            session.commit()
        for r in results:
            console.print(f"{r.period} {r.start.isoformat()}: {r.values} values of {r.indicators} indicators "
                          f"({r.inserted} new, {r.updated} changed), breaches opened {r.breaches_opened}, closed {r.breaches_closed}")

    _run(body)


@indicators_app.command("due")
def indicators_due(data_dir: Optional[Path] = DataDir, at: Optional[str] = typer.Option(None, help="ISO 8601 time (default now)")) -> None:
    """Reported values (填报) due for the last period: entered, reminder, overdue — per unit."""
    settings = _settings(data_dir)

    def body():
        from cityops.core.types import utcnow
        from cityops.identity.scope import Scope
        from cityops.indicators import reports, service

        _, sessions, _ = _store(settings)
        with sessions() as session:
            rows = reports.due(session, service.load_catalogue(settings), Scope(all_units=True), _at_option(at) or utcnow())
        for r in rows:
            if r["status"] != "entered":
                console.print(f"{r['status']:8} {r['indicator']} {r['unit_code']} {r['unit_name']} due {r['due_at']:%Y-%m-%d}")
        console.print(f"{sum(r['status'] == 'overdue' for r in rows)} overdue, "
                      f"{sum(r['status'] == 'entered' for r in rows)} entered of {len(rows)}")

    _run(body)


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


video_app = typer.Typer(help="Video: cameras and the streams this server plays", no_args_is_help=True)
app.add_typer(video_app, name="video")


@video_app.command("test-pattern")
def video_test_pattern(
    camera: Optional[list[str]] = typer.Option(None, "--camera", help="camera code (repeatable; default: every online camera)"),
    seconds: int = typer.Option(30, help="length of the looping test picture"),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Give cameras a moving test picture (ffmpeg) that this server plays as HLS, e.g. for the demo district."""
    settings = _settings(data_dir)

    def body():
        from sqlalchemy import select

        from cityops.video import media
        from cityops.video.models import Camera

        _, sessions, _ = _store(settings, bus=False)
        with sessions() as session:
            stmt = select(Camera.code).order_by(Camera.code)
            stmt = stmt.where(Camera.code.in_(camera)) if camera else stmt.where(Camera.status == "online")
            codes = list(session.scalars(stmt))
        missing = sorted(set(camera or []) - set(codes))
        if missing:
            console.print(f"[red]no camera {', '.join(missing)}[/red]")
            raise typer.Exit(1)
        root = media.media_dir(settings)
        root.mkdir(parents=True, exist_ok=True)
        source = media.test_pattern(root / "_test-pattern", seconds=seconds)
        console.print(f"{media.publish(source, root, codes)} cameras play the test picture from {root}")

    _run(body)


if __name__ == "__main__":
    app()

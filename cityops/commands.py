"""What the command line's commands share, without Typer or Rich: the settings and the store of ``--data-dir``,
failures as one line, the buses a command publishes through, and the body of ``import-layer``.

``cityops.cli`` (Typer + Rich) wraps these for every command. ``import-layer`` is also run from here directly
(``run_without_typer``, called by the entry points before ``cityops.cli`` is imported): a bulk import is a command
scripts run again and again, and Typer, Rich and the command table of every capability were a fixed cost of each
run that an import never uses. Only a well-formed ``import-layer`` invocation takes that way; anything else
(``--help``, an unknown or incomplete option, any other command) goes to Typer, so the options, the help text and
the usage errors are Typer's own, as before.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

#: What an import reads: the layer categories (``--create``) and the unit levels (the store's org settings).
IMPORT_CATALOGUES = {"base": ("categories.toml",), "org": ("levels.toml",)}


class CommandFailed(Exception):
    """A command cannot go on: ``message`` is the one line printed after ``error:``; the exit code is ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message, self.code = message, code


def settings_for(data_dir: Path | None, *, create: bool = False, catalogues: dict[str, tuple[str, ...]] | None = None):
    """The settings for ``--data-dir``. Only ``init`` and ``demo`` (``create``) may make a new store: any other
    command pointed at a directory without one fails, instead of answering from a new, empty store.
    ``catalogues`` limits the start-up check to the catalogues the command reads (``load_all``'s ``only``)."""
    from pydantic import ValidationError

    from cityops.core.logging import configure_logging
    from cityops.core.settings import Settings

    try:
        settings = Settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CommandFailed(f"invalid configuration: {problems}") from None
    except (FileNotFoundError, ValueError) as exc:
        raise CommandFailed(f"invalid configuration: {exc}") from None
    if not create and settings.is_sqlite:
        from cityops.core.settings import DATABASE_FILE

        if not (settings.data_dir / DATABASE_FILE).is_file():
            where = settings.data_dir.resolve()
            what = "does not exist" if not where.exists() else f"holds no CityOps store ({DATABASE_FILE})"
            raise CommandFailed(f"the data directory {where} {what}; create one with `cityops init --data-dir {where}` "
                                "(or `cityops demo`), or give the right --data-dir / CITYOPS_DATA_DIR")
    configure_logging(settings.log_level, settings.log_json)
    # Before the catalogues: loading them imports Alembic, whose plugins announce themselves at INFO and would
    # bury a command's one-line answer on stderr.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from cityops.core.catalogues import CatalogueError, load_all

    try:
        load_all(settings, catalogues)  # the catalogue files validated, and read from where the settings say
    except CatalogueError as exc:
        raise CommandFailed(str(exc)) from None
    return settings


def open_store(settings, *, bus: bool = True, org: bool = True, orm: bool = True):
    """(engine, sessionmaker, org config) of the settings' store, migrated to the head; with ``bus``, the store's bus
    registered to deliver what the command publishes at its end (``finish_buses``). Without ``org`` the org config is
    None: a command that does not use it (``import-layer``) does not import the org capability's service and models.
    Without ``orm`` the sessionmaker is None too: a command that writes through Core never imports the ORM."""
    from cityops.core.db import make_engine, make_sessionmaker, migrate

    engine = make_engine(settings)
    migrate(engine)
    if bus:
        register_bus(engine, settings)
    if not org:
        return engine, make_sessionmaker(engine) if orm else None, None
    from cityops.org.levels import load_levels
    from cityops.org.service import OrgConfig

    levels = load_levels(settings.grid_code_length)
    org_config = OrgConfig(levels, settings.grid_code_length, settings.topology_tolerance_m2, settings.metric_crs)
    return engine, make_sessionmaker(engine), org_config


#: The buses of a command's databases (``open_store``): what the command published is applied before it returns (by
#: this process or by a server on the same database, whichever holds the dispatch lease).
BUSES: list = []


def register_bus(engine, settings) -> None:
    """The bus of the command's database, registered now and delivering at the end of the command: on SQLite a
    consumer writing alongside the command's own transactions would make them fail with "database is locked"."""
    if settings.wiring:
        from cityops import wiring

        BUSES.append(wiring.make_bus(engine, settings).register())


def finish_buses(warn) -> None:
    """Deliver what the command published; ``warn(text)`` when events are left for a server to apply."""
    # A command's end-of-run delivery is not a deployment's dispatcher: its lease notices would bury the command's
    # own one-line answer on stderr. Warnings and errors still show.
    logging.getLogger("cityops.bus").setLevel(logging.WARNING)
    while BUSES:
        bus = BUSES.pop()
        try:
            bus.start()
            bus.wait_idle(timeout=120)
        except Exception:  # noqa: BLE001 - the events are in the outbox: a server on this database applies them
            warn("events still pending; a server on this database will apply them")
        bus.stop()


def consumed(*events) -> bool:
    """Whether a capability consumes one of ``events`` (its manifest's ``consumes``). Events nobody consumes are read
    from the outbox only by the servers' own caches (broadcast), so a command that publishes only those needs no
    bus of its own, nor the import of every capability's subscriptions that building one takes."""
    from cityops.core.bus.manifest import manifests

    names = {e.name for e in events}
    return any(names & manifest.consumed_names for manifest in manifests().values())


def failure(exc: BaseException) -> str | None:
    """The one-line message (with a domain error's first issues) of an error a command reports without a traceback,
    or None for an error that is a bug."""
    from cityops.core.errors import CityOpsError

    if isinstance(exc, CommandFailed):
        return exc.message
    if isinstance(exc, CityOpsError):
        details = ""
        if isinstance(exc.details, dict) and exc.details.get("issues"):
            lines = [f"  - {i.get('check')}: {i.get('message')}" for i in exc.details["issues"][:20]]
            more = len(exc.details["issues"]) - len(lines)
            details = "\n" + "\n".join(lines) + (f"\n  … and {more} more" if more > 0 else "")
        return exc.message + details
    if isinstance(exc, (FileNotFoundError, PermissionError, RuntimeError, ValueError)):
        return str(exc)
    return None


def import_layer(settings, file: Path, layer: str, *, create: bool = False, title: str | None = None,
                 category: str | None = None, geometry_type: str = "GEOMETRY", mode: str = "replace",
                 crs: str | None = None, source_layer: str | None = None, dry_run: bool = False,
                 progress=None, say=print, opened=None) -> dict:
    """``cityops import-layer``: the file as the layer's next version, all or nothing. ``progress(description)`` is a
    context manager giving an ``update(done, total)`` callback (a progress bar), ``say`` prints a line of the answer.
    ``opened``: the file opened already (``layerfiles.OpenedFile``), its reading begun while the command started."""
    from cityops.base import importing
    from cityops.base.manifest import LayerChanged, LayerVersionCreated
    from cityops.core.actor import Actor
    from cityops.identity.scope import Scope

    if not file.exists():
        raise FileNotFoundError(f"{file} does not exist")
    # The bus (every capability's subscriptions) only when some capability consumes what an import publishes.
    bus = consumed(LayerVersionCreated, LayerChanged)
    engine, sessions, _ = open_store(settings, bus=bus, org=False, orm=create or bus)
    everything, actor = Scope(all_units=True), Actor("cli")

    def run(session) -> dict:
        with (progress or _no_progress)(f"importing {file.name}") as update:
            return importing.import_file(session, actor, everything, layer, file, crs=crs, mode=mode,
                                         source_layer=source_layer, dry_run=dry_run, progress=update, opened=opened)

    if create or bus:
        # Creating a layer is the ORM's (the unit it belongs to, the department), and so is publishing to a bus of
        # this process (it is told of the events at the commit): imported for these only.
        with sessions() as session:
            if create:
                if not title or not category:
                    raise CommandFailed("--create needs --title and --category")
                from cityops.base import service

                service.create_layer(session, actor, everything, {"key": layer, "title_zh": title,
                                                                  "category": category, "geometry_type": geometry_type})
            report = run(session)
            session.commit()
    else:
        # The import on a Core connection, its outbox event included: the ORM is never imported.
        with engine.connect() as conn:
            report = run(conn)
            conn.commit()
    verb = "validated" if dry_run else f"imported as version {report['version']}"
    say(f"{verb}: {report['read']} read, {report['added']} added, {report['removed']} replaced, "
        f"{report['repaired']} repaired")
    for issue in report["issues"][:20]:
        say(f"  - {issue['check']}: {issue['message']}")
    return report


def _no_progress(_description: str):
    return nullcontext(None)


@contextmanager
def rich_progress(description: str, console=None):
    """The progress bar of an import on the terminal (Rich)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


# ------------------------------------------------------------------------------ import-layer without Typer

#: ``import-layer``'s options as Typer declares them in ``cityops.cli`` (value options → parameter; flags →
#: (parameter, value)). ``tests/test_cli_layers.py`` checks this table against the Typer command.
IMPORT_OPTIONS = {"--layer": "layer", "--data-dir": "data_dir", "--title": "title", "--category": "category",
                  "--geometry-type": "geometry_type", "--mode": "mode", "--crs": "crs", "--source-layer": "source_layer"}
IMPORT_FLAGS = {"--create": ("create", True), "--no-create": ("create", False), "--dry-run": ("dry_run", True)}


def parse_import_layer(args: list[str]) -> dict | None:
    """``import-layer``'s arguments as the command's parameters, or None when they are not a complete, well-formed
    invocation (Typer then parses them and answers with its own help or usage error)."""
    values: dict = {"create": False, "dry_run": False, "geometry_type": "GEOMETRY", "mode": "replace"}
    files: list[str] = []
    i, options_done = 0, False
    while i < len(args):
        arg = args[i]
        i += 1
        if options_done or not arg.startswith("-") or arg == "-":
            files.append(arg)
            continue
        if arg == "--":
            options_done = True
            continue
        name, eq, value = arg.partition("=")
        if name in IMPORT_OPTIONS:
            if not eq:
                if i >= len(args):
                    return None
                value = args[i]
                i += 1
            values[IMPORT_OPTIONS[name]] = value
        elif arg in IMPORT_FLAGS:
            key, flag = IMPORT_FLAGS[arg]
            values[key] = flag
        else:
            return None  # --help, an unknown option, a flag given a value
    if len(files) != 1 or "layer" not in values:
        return None
    values["file"] = Path(files[0])
    if values.get("data_dir") is not None:
        values["data_dir"] = Path(values["data_dir"])
    return values


def run_without_typer(argv: list[str]) -> None:
    """Run ``argv`` here when it is a well-formed ``import-layer``; exits the process with the command's code. Returns
    (having imported nothing of Typer, Rich or the other commands) for everything else, to be run by Typer."""
    if not argv or argv[0] != "import-layer":
        return
    params = parse_import_layer(argv[1:])
    if params is None:
        return
    code = 0
    opened = None
    try:
        if params["file"].is_file():
            # The file is opened and its first batches read, parsed and checked on the reading thread while the
            # platform loads below (the settings, SQLAlchemy, the store: about half of a 100,000-feature import).
            from cityops.base.layerfiles import OpenedFile

            opened = OpenedFile(params["file"], crs=params.get("crs"), layer=params.get("source_layer"))
        settings = settings_for(params.pop("data_dir", None), catalogues=IMPORT_CATALOGUES)
        # The bar only on a terminal: Rich is imported for it there; piped output gets the answer's lines alone.
        progress = rich_progress if sys.stdout.isatty() else None
        import_layer(settings, params.pop("file"), params.pop("layer"), progress=progress, opened=opened, **params)
    except Exception as exc:  # noqa: BLE001 - reported as the Typer command reports it; bugs keep their traceback
        message = failure(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        code = exc.code if isinstance(exc, CommandFailed) else 1
    finally:
        if opened is not None:
            opened.close()  # when the command stopped before its import read the file
        finish_buses(lambda text: print(f"warning: {text}", file=sys.stderr))
    sys.stdout.flush()
    raise SystemExit(code)


def main() -> None:
    """The ``cityops`` script: ``import-layer`` here, every other command through Typer (``cityops.cli``)."""
    run_without_typer(sys.argv[1:])
    from cityops.cli import app

    app(prog_name="cityops")

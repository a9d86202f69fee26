"""Test harness: every storage-touching test runs on both backends (embedded SQLite/GeoPackage and
PostGIS). PostGIS comes from the local service; outside CI its absence skips those tests with a clear
message, under CI=true it fails them."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from cityops.core.db import Base, make_engine, make_sessionmaker, migrate
from cityops.core.settings import Settings
from cityops.demo.generator import DEMO_PASSWORD, DemoConfig, build_demo
from cityops.org.levels import load_levels
from cityops.org.service import OrgConfig

# The scope modules' checks run from tests/test_api_scope.py: rewrite their asserts too, for readable failures.
pytest.register_assert_rewrite(*(f"tests.{p.stem}" for p in sorted(Path(__file__).parent.glob("scope_*.py"))))

PG_ADMIN_URL = os.environ.get("CITYOPS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgis"]
#: A small but complete district: a street, the town of the signature scenario and one more town.
SMALL_DEMO = DemoConfig(grids=120, village_scale=0.35, townships=("汉丰街道", "义和镇", "大德镇"))


@dataclass
class Store:
    backend: str
    settings: Settings
    engine: object
    sessions: sessionmaker[Session]
    org: OrgConfig


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            has_postgis = conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")).first()
        engine.dispose()
        return None if has_postgis else "the PostGIS extension is not installed (apt-get install postgresql-15-postgis-3)"
    except Exception as exc:  # noqa: BLE001 - any connection failure means "absent"
        return f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}"


_PG_PROBLEM: list = []


def require_postgis() -> None:
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_pg_available())
    problem = _PG_PROBLEM[0]
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostGIS backend required under CI=true: {problem}")
        pytest.skip(f"PostGIS backend skipped: {problem}")


def create_pg_database(prefix: str = "cityops_test", admin_url: str = PG_ADMIN_URL) -> str:
    """A new, empty database named ``<prefix>_<random>`` (tests and benchmarks); returns its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name


def drop_pg_database(name: str, admin_url: str = PG_ADMIN_URL) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def pg_database_url(name: str, admin_url: str = PG_ADMIN_URL) -> str:
    """The URL of database ``name`` on the admin URL's server."""
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def make_store(backend: str, data_dir: Path, **overrides) -> tuple[Store, callable]:
    """A migrated, empty store; returns it and its cleanup function. Capabilities are tested apart here
    (``wiring=False``); tests/test_signature_scenario.py runs them connected."""
    overrides.setdefault("wiring", False)
    cleanup = []
    if backend == "postgis":
        require_postgis()
        name = create_pg_database()
        url = pg_database_url(name)
        cleanup.append(lambda: drop_pg_database(name))
        settings = Settings(data_dir=data_dir, database_url=url, secret_key="test-secret", log_json=False, **overrides)
    else:
        settings = Settings(data_dir=data_dir, secret_key="test-secret", log_json=False, **overrides)
    engine = make_engine(settings)
    migrate(engine)
    levels = load_levels(settings.grid_code_length)
    store = Store(backend, settings, engine, make_sessionmaker(engine),
                  OrgConfig(levels, settings.grid_code_length, settings.topology_tolerance_m2, settings.metric_crs))

    def close():
        engine.dispose()
        for fn in cleanup:
            fn()

    return store, close


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    """An empty, migrated store on each backend."""
    s, close = make_store(request.param, tmp_path / "data")
    yield s
    close()


_DEMO_TEMPLATES: dict[str, Path] = {}


@pytest.fixture(scope="module", params=BACKENDS)
def demo_store(request, tmp_path_factory):
    """The small demo district on each backend, built once per module. Tests using it must not
    change it (use ``store`` and build your own for writes), except through the API tests' own users."""
    data_dir = tmp_path_factory.mktemp(f"demo-{request.param}")
    if request.param == "sqlite" and "sqlite" in _DEMO_TEMPLATES:
        # Reuse the built file: copying is much faster than generating.
        data_dir.mkdir(exist_ok=True)
        shutil.copy(_DEMO_TEMPLATES["sqlite"], data_dir / "cityops.gpkg")
        s, close = make_store("sqlite", data_dir)
    else:
        s, close = make_store(request.param, data_dir)
        build_demo(s.sessions, s.org, SMALL_DEMO)
        if request.param == "sqlite":
            with s.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            template = tmp_path_factory.mktemp("template") / "cityops.gpkg"
            shutil.copy(data_dir / "cityops.gpkg", template)
            _DEMO_TEMPLATES["sqlite"] = template
    yield s
    close()


def make_client(store: Store):
    """A TestClient over ``store`` (its own app), with ``login(username)`` → headers and ``store``."""
    from fastapi.testclient import TestClient

    from cityops.app import create_app

    client = TestClient(create_app(store.settings, run_migrations=False))
    tokens: dict[str, dict] = {}

    def login(username: str, password: str = DEMO_PASSWORD) -> dict:
        if username not in tokens:
            r = client.post("/api/auth/login", json={"username": username, "password": password})
            assert r.status_code == 200, r.text
            client.cookies.clear()  # the login's page cookie: requests here carry the token they are given, no other
            tokens[username] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        return tokens[username]

    client.login = login
    client.store = store
    return client


@pytest.fixture(scope="module")
def api(demo_store):
    """A TestClient over the demo district, with ``login(username)`` → headers."""
    client = make_client(demo_store)
    yield client
    client.app.state.ctx.bus.stop()  # a live stream started it; its database goes with the module
    client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(proc, port: int, seconds: float = 90) -> None:
    """Wait until the server subprocess ``proc`` accepts connections on ``port``; fail if it dies or stalls."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the test server on port {port} did not start") from None
            time.sleep(0.1)


@contextmanager
def serve_in_thread(app, name: str = "uvicorn-test"):
    """Serve ``app`` with uvicorn in a background thread (for real clients and the browser); yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


#: What background threads move whatever a request does: the bus's bookkeeping (the dispatch lease, consumers
#: catching up on earlier events, the deployment's timers) and the notification dispatcher's timeline (earlier
#: messages handed to their channels, escalation steps falling due). The outbox, messages, recipients and
#: deliveries stay counted: a refused request publishes and sends nothing.
BUS_BOOKKEEPING = {"bus_leases", "bus_cursors", "bus_processed", "bus_timers", "notify_timeline"}


def table_counts(store: Store) -> dict[str, int]:
    """Row counts of every table: 'nothing changed' means these are equal before and after."""
    with store.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in Base.metadata.tables
                if t not in BUS_BOOKKEEPING}

"""Engine, sessions and migrations for both backends (embedded SQLite/GeoPackage and PostGIS)."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from functools import lru_cache
from typing import TYPE_CHECKING, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DisconnectionError

from cityops.core.errors import Busy
from cityops.core.geometry import register_sqlite_functions
from cityops.core.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("cityops.db")

#: How long a SQLite writer waits for the one write lock (other threads, other processes) before giving up.
SQLITE_WRITE_WAIT_S = 30
#: Connections a server process may open: one for each worker thread that runs a request (anyio's default
#: thread limiter, which runs FastAPI's plain def routes and dependencies, has 40) and the background threads
#: (ingest and intake writers, live-stream polls). Fewer, and threads that hold a connection can wait for a
#: worker thread held by threads waiting for a connection: a plain def route's answer is validated in a worker
#: thread while its session still holds its connection (50 simultaneous task posts on PostgreSQL: 40 answered
#: 500 when the pool timed out). ``Settings.pool_size`` connections stay open; the others close when returned.
POOL_CAPACITY = 60
#: How long a request waits for a pooled connection before it is answered 503 (busy, retry).
POOL_WAIT_S = 120


def __getattr__(name: str):
    """``Base``, the declarative base shared by every capability package's tables, made when first asked for: the
    ORM (``sqlalchemy.orm``) is then imported only by what maps tables to classes, not by every user of the engine
    (``cityops import-layer`` writes through Core alone and starts faster without it)."""
    if name != "Base":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _BASE_LOCK:  # one Base, even if two threads import models at once
        if "Base" not in globals():
            from sqlalchemy.orm import DeclarativeBase

            class Base(DeclarativeBase):
                """Declarative base shared by every capability package's tables."""

            globals()["Base"] = Base
    return globals()["Base"]


_BASE_LOCK = threading.Lock()


def make_engine(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_size=POOL_CAPACITY // 2, max_overflow=POOL_CAPACITY // 2, pool_timeout=POOL_WAIT_S,
                               connect_args={"timeout": SQLITE_WRITE_WAIT_S, "check_same_thread": False,
                                             "factory": WriterConnection})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            dbapi_connection.writers = _writers(engine.url.database)
            if settings.sqlite_writer_log_ms:
                dbapi_connection.writers.log_over_s = settings.sqlite_writer_log_ms / 1000
            register_sqlite_functions(dbapi_connection)
            # pysqlite's own transaction handling would defer BEGIN; we issue it ourselves below so
            # that SAVEPOINT and write locks behave (SQLAlchemy's documented recipe).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_WRITE_WAIT_S * 1000}")
            # The checkpointer thread copies the WAL back; a committing writer does it only as a backstop.
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN")

        database = engine.url.database
        if database and database != ":memory:":
            checkpointer = Checkpointer(database)
            event.listen(engine, "engine_disposed", lambda _engine: checkpointer.stop())
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    # JIT off: at the census scale the planner's estimates of our short queries pass jit_above_cost, and
    # compiling costs tens of milliseconds a query, more than running it.
    engine = create_engine(url, pool_size=settings.pool_size, max_overflow=max(settings.pool_size, POOL_CAPACITY - settings.pool_size),
                           pool_timeout=POOL_WAIT_S, connect_args={"options": "-c jit=off"})
    _ping_when_idle(engine)
    return engine


# ------------------------------------------------------------------------------- SQLite: WAL checkpoints

#: How often the checkpointer thread copies committed WAL frames back into the database file.
CHECKPOINT_EVERY_S = 0.5
#: SQLite's own checkpoint, run by the connection that commits past this many WAL pages (its default is 1,000),
#: only a backstop for when the checkpointer thread falls behind.
WAL_AUTOCHECKPOINT_PAGES = 20_000


class Checkpointer:
    """A thread that keeps the WAL short with PASSIVE checkpoints from a connection of its own.

    SQLite checkpoints by default in the commit that brings the WAL past 1,000 pages: that writer copies the
    pages back and waits for the disk twice (WAL, then database file) before its commit returns, holding this
    process's writer lock (``_Writers``) all the while, so every writer queued behind it waits as long. Under
    500 household updaters on a busy machine those commits took 75–385 ms and were the slowest writes.
    A PASSIVE checkpoint takes none of the write locks: writers keep appending to the WAL while it runs, and a
    reader's older snapshot only stops it at the frames that reader still needs (the rest is copied next time).
    """

    def __init__(self, database: str):
        self.database = database
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        conn = None
        try:
            while not self._stop.wait(CHECKPOINT_EVERY_S):
                if not os.path.exists(self.database):
                    return  # the store was removed (a test's or benchmark's temporary directory)
                try:
                    if conn is None:
                        conn = sqlite3.connect(self.database, timeout=0, isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # busy (another process checkpoints) or the store went away: next time
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()


#: A pooled PostgreSQL connection unused for longer than this is checked (one round trip) before it is handed out.
PING_AFTER_IDLE_S = 2.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection at checkout only when it sat idle for ``PING_AFTER_IDLE_S``.

    SQLAlchemy's ``pool_pre_ping`` checks every checkout: on a bbox page of the OGC items that round trip was a
    fifth of the request's time in its worker thread, on connections returned milliseconds before. A connection
    goes stale while it sits in the pool (the server restarted, a firewall dropped it), so only those are pinged;
    a dead one is replaced before the request sees it (``DisconnectionError``: the pool's documented recipe for
    a custom ping). SQLAlchemy has no idle threshold for its own ping, hence this."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection, record):
        record.info["cityops_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy):
        since = record.info.get("cityops_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            dbapi_connection.execute("SELECT 1")
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()
        except Exception as exc:  # noqa: BLE001 - any failure here means the connection is unusable
            raise DisconnectionError(f"pooled connection found dead: {exc}") from exc


# ------------------------------------------------------------------------------------- SQLite: one writer

# SQLite admits one writer at a time. A transaction begun with a plain (deferred) BEGIN that has read and then
# writes must upgrade its read snapshot to the write lock, and SQLite does not wait for that: when another
# connection holds the write lock, or committed since the snapshot was taken, the write fails at once with
# "database is locked" (SQLITE_BUSY; the busy timeout only covers a transaction's *first* lock). Every route
# reads first (the caller's credentials, the row it changes), so under concurrent writers most writes failed.
#
# The cause is removed here, for every writer of the embedded store whatever its code: each connection is a
# WriterConnection. The first statement of a transaction that writes (INSERT, UPDATE, DELETE, DDL, SAVEPOINT)
# first takes this process's writer lock (threads queue on a threading.Lock, processes on an flock of
# ``<database>-writers``), then ends the read snapshot and begins again with BEGIN IMMEDIATE, which holds
# SQLite's write lock from its first statement on; the lock is handed on when the transaction ends. Reads
# before the first write therefore see the database as of their statement, as PostgreSQL's READ COMMITTED
# does, and nothing that was written is ever rolled back by the restart (a transaction that has changed rows
# is never restarted). Read-only transactions never queue. Waiting on a lock hands the database over without
# sleeping; SQLite's busy handler sleeps in growing steps, which turned contention into latency.
# PostgreSQL needs none of this (row locks, MVCC); its connections are not WriterConnections.

_WRITES = re.compile(r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(BEGIN\s+(?:IMMEDIATE|EXCLUSIVE)|INSERT|UPDATE|DELETE|REPLACE|"
                     r"CREATE|DROP|ALTER|SAVEPOINT|ANALYZE|REINDEX|VACUUM|WITH)\b", re.IGNORECASE | re.DOTALL)
_CTE_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def _writes(sql: str) -> bool:
    match = _WRITES.match(sql)
    if match is None:
        return False
    return match.group(1).upper() != "WITH" or _CTE_WRITES.search(sql, match.end()) is not None


class _Writers:
    """The writers of one SQLite database in this process: a lock for its threads and an ``flock`` for the
    other processes (uvicorn ``--workers``, the command line, the storm simulation).

    With ``log_over_s`` set (``Settings.sqlite_writer_log_ms``) each write that waited for the lock, or held it,
    longer than that is logged with its thread and first writing statement: who held the one writer while others
    queued, to lay beside a slow request's time."""

    log_over_s: float | None = None

    def __init__(self, database: str | None):
        self.lock = threading.Lock()
        self.fd = None
        if fcntl is not None and database and database != ":memory:":
            self.fd = os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT, 0o644)
        # The holder's timing (written only by the thread that holds the lock).
        self._asked = self._taken = 0.0
        self._statement = ""

    def acquire(self, statement: str = "") -> None:
        asked = time.perf_counter() if self.log_over_s is not None else 0.0
        if not self.lock.acquire(timeout=SQLITE_WRITE_WAIT_S):
            raise Busy(f"the database is busy with another write for more than {SQLITE_WRITE_WAIT_S} s; try again")
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            except BaseException:
                self.lock.release()
                raise
        if self.log_over_s is not None:
            self._asked, self._taken, self._statement = asked, time.perf_counter(), statement

    def release(self) -> None:
        slow = None
        if self.log_over_s is not None and self._taken:
            waited, held = self._taken - self._asked, time.perf_counter() - self._taken
            if max(waited, held) > self.log_over_s:
                slow = (waited * 1000, held * 1000, self._statement)
            self._taken = 0.0
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.lock.release()
        if slow is not None:  # logged once the lock is handed on
            log.warning("sqlite writer: waited %.1f ms, held %.1f ms, thread %s, first write %s", slow[0], slow[1],
                        threading.current_thread().name, " ".join(slow[2].split())[:120])


_WRITERS: dict[tuple[str, int], _Writers] = {}
_WRITERS_GUARD = threading.Lock()


def _writers(database: str | None) -> _Writers:
    """One per database file and process (a forked child must not share its parent's open file, or the two
    would not exclude each other)."""
    key = (str(Path(database).resolve()) if database and database != ":memory:" else str(database), os.getpid())
    with _WRITERS_GUARD:
        hit = _WRITERS.get(key)
        if hit is None:
            hit = _WRITERS[key] = _Writers(database)
        return hit


class _WriterCursor(sqlite3.Cursor):
    def execute(self, sql, parameters=()):
        self.connection.before(sql)
        try:
            return super().execute(sql, parameters)
        finally:
            self.connection.settle()

    def executemany(self, sql, seq_of_parameters):
        self.connection.before(sql)
        try:
            return super().executemany(sql, seq_of_parameters)
        finally:
            self.connection.settle()

    def executescript(self, script):
        self.connection.before(script)
        try:
            return super().executescript(script)
        finally:
            self.connection.settle()


class WriterConnection(sqlite3.Connection):
    """A SQLite connection whose writing transactions queue for the write lock (see above)."""

    writers: _Writers | None = None
    holds = False  # this connection's transaction holds the writer lock
    _unchanged = 0  # total_changes when the current transaction began

    def cursor(self, factory=None):
        return super().cursor(factory or _WriterCursor)

    def before(self, sql: str) -> None:
        if not self.holds and self.writers is not None and _writes(sql):
            self.begin_write(sql)

    def begin_write(self, statement: str = "begin_write()") -> None:
        """Make this connection's transaction the database's writer now: take the writer lock, and restart the
        transaction as BEGIN IMMEDIATE unless it has already changed rows (it then keeps them and its luck)."""
        if self.holds or self.writers is None:
            return
        self.writers.acquire(statement)
        self.holds = True
        try:
            if not self.in_transaction:
                return  # a statement outside BEGIN: it commits by itself, and settle() hands the lock on
            if self.total_changes == self._unchanged:
                sqlite3.Connection.execute(self, "ROLLBACK")
                sqlite3.Connection.execute(self, "BEGIN IMMEDIATE")
        except BaseException:
            self.settle()
            raise

    def settle(self) -> None:
        """Hand the writer lock on once the transaction is over (committed, rolled back, or never begun)."""
        try:
            ended = not self.in_transaction
        except sqlite3.ProgrammingError:  # closed
            ended = True
        if ended:
            if self.holds:
                self.holds = False
                self.writers.release()
            try:
                self._unchanged = self.total_changes
            except sqlite3.ProgrammingError:
                pass

    def commit(self):
        try:
            return super().commit()
        finally:
            self.settle()

    def rollback(self):
        try:
            return super().rollback()
        finally:
            self.settle()

    def close(self):
        try:
            return super().close()
        finally:
            self.settle()


def begin_write(session: Session) -> None:
    """Make ``session``'s transaction the embedded store's writer from now on, before it reads what it will
    change (a read-modify-write that must not interleave with other writers). Nothing to do on PostgreSQL."""
    dbapi = session.connection().connection.dbapi_connection
    if isinstance(dbapi, WriterConnection):
        dbapi.begin_write()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(engine, expire_on_commit=False)


_READ_SESSIONS: "weakref.WeakKeyDictionary[Engine, sessionmaker[Session]]" = weakref.WeakKeyDictionary()


def read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for read-only requests. On PostgreSQL their connections are in autocommit: a request costs no BEGIN
    and no ROLLBACK round trip (on a bbox page of the OGC items those two waited longer than the query itself);
    each statement reads its own snapshot. On SQLite BEGIN and ROLLBACK are calls inside the process, and the
    single-writer lock hangs on our BEGIN, so its read sessions are the ordinary ones. Nothing may be written
    through these sessions."""
    made = _READ_SESSIONS.get(engine)
    if made is None:
        from sqlalchemy.orm import sessionmaker

        bind = engine if engine.dialect.name == "sqlite" else engine.execution_options(isolation_level="AUTOCOMMIT")
        made = _READ_SESSIONS[engine] = sessionmaker(bind, expire_on_commit=False)
    return made


_STATEMENT_SESSIONS: "weakref.WeakKeyDictionary[Engine, sessionmaker[Session]]" = weakref.WeakKeyDictionary()


def statement_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for a write that is ONE statement (``Storage.insert_family`` where ``Storage.family_statement``):
    on PostgreSQL in autocommit, so the statement is its own transaction, committed (and durable) when it returns,
    without the BEGIN and COMMIT round trips around it; a failed statement leaves nothing. On SQLite the ordinary
    sessions (the writer lock is taken by a transaction, and there are no round trips to save). A write of more
    than one statement needs the ordinary sessions on every backend."""
    made = _STATEMENT_SESSIONS.get(engine)
    if made is None:
        from sqlalchemy.orm import sessionmaker

        bind = engine if engine.dialect.name == "sqlite" else engine.execution_options(isolation_level="AUTOCOMMIT")
        made = _STATEMENT_SESSIONS[engine] = sessionmaker(bind, expire_on_commit=False)
    return made


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_REVISION = re.compile(r"^(revision|down_revision)\b[^=]*=\s*(.+?)\s*$", re.M)


def alembic_config(engine: Engine) -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent); creates the PostGIS extension when missing. A store already at
    the head costs one query: Alembic, and the environment that imports every capability's tables, are loaded only
    when there is something to migrate (a command such as ``import-layer`` pays neither)."""
    if revision == "head" and _at_head(engine):
        return
    from alembic import command

    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
    command.upgrade(alembic_config(engine), revision)


@lru_cache(maxsize=1)
def script_heads() -> frozenset[str]:
    """The head revisions of ``migrations/versions``: the revisions no script names as its ``down_revision``, read
    from the scripts' two assignments (what Alembic's ScriptDirectory finds, without importing every revision)."""
    import ast

    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for name, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            value = ast.literal_eval(value)
            if name == "revision":
                revisions.add(value)
            elif value is not None:
                parents.update([value] if isinstance(value, str) else value)
    return frozenset(revisions - parents)


def _at_head(engine: Engine) -> bool:
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as conn:
            current = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
    except DBAPIError:  # no alembic_version table yet: a new store
        return False
    return bool(current) and current == script_heads()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()

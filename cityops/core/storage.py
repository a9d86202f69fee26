"""The storage strategy: what differs between the two backends, in one place.

CityOps runs on the embedded SQLite store (GeoPackage geometry, R*Tree index, one writer at a time) and on
PostgreSQL/PostGIS (WKB geometry, GiST index, row locks, arrays, jsonb). Domain code never asks which one it
is on: it takes the ``Storage`` of its session or connection (``storage_of``) and calls the operation it needs
— a bounding-box prefilter, geometry encoding and decoding, an upsert, a row lock, JSON and array functions,
trigger DDL. Both implementations give the same results; only the way differs.

``storage_of`` is the one place that looks at the dialect's name.
"""

from __future__ import annotations

import json
import struct
import sys
from collections import namedtuple
from collections.abc import Iterable
from itertools import chain
from contextlib import contextmanager
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING

import numpy as np
import orjson
import shapely
from sqlalchemy import (Float, Integer, LargeBinary, Select, String, Text, any_, bindparam, case, cast, func, insert, literal,
                        literal_column, select, text, type_coerce)
from sqlalchemy.sql import column as sql_column, table as sql_table
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from cityops.core.db import WriterConnection, begin_write
from cityops.core.geometry import CANONICAL_SRID, encode_many, from_gpkg_many
from cityops.core.types import JSONText, UTCDateTime, json_text

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class Storage:
    """Operations whose SQL differs between the backends. One instance per backend (``SQLITE``, ``POSTGRESQL``)."""

    #: The dialect's name ("sqlite", "postgresql"), for logs and metrics only.
    name: str = ""
    #: An embedded store: one process, one writer at a time (SQLite). Precomputed rollups pay off there;
    #: row locks are not needed (the writer lock is held for the whole write transaction).
    embedded: bool = False
    #: Geometry functions run in SQL (PostGIS: ST_AsMVT, ST_Intersects …); without them the exact predicates and
    #: tile encoding run in Python (GEOS through Shapely) on the candidates the index prefilter returns.
    spatial_sql: bool = False
    #: Spatial indexes are GeoPackage R*Tree tables (``rtree_<table>_<column>``) that bulk loads may fill by hand.
    rtree_index: bool = False
    #: Many rows go in fastest through COPY into a staging table and one INSERT … SELECT (PostgreSQL); without it,
    #: multi-row VALUES statements on the driver's cursor (SQLite: in process, no round trips to save).
    copy_in: bool = False
    #: Array parameters (``unnest``, ``= ANY``): a batch of rows as one statement with one value per column.
    arrays: bool = False
    #: ``insert_family`` is one statement (atomic by itself): a caller writing nothing else may run it in a session
    #: of ``core.db.statement_sessionmaker``, without a transaction's BEGIN and COMMIT around it (PostgreSQL).
    family_statement: bool = False
    #: Write transactions of several connections proceed together (row locks, each commit's flush overlapping the
    #: others'): a writer may keep more than one in flight. Not SQLite, whose write lock takes one at a time.
    concurrent_writes: bool = False
    #: Commits notify the other connections (PostgreSQL LISTEN/NOTIFY): the bus's readers are woken, not polling.
    #: Without it (SQLite) one poll per process of the outbox's newest event wakes them.
    commit_notifications: bool = False
    #: The names of the two-or-more-argument minimum and maximum functions (``least``/``greatest``; SQLite's
    #: ``min``/``max`` with several arguments).
    least_greatest: tuple[str, str] = ("least", "greatest")

    # ----------------------------------------------------------------------------------- writing

    def write_conflict(self, error: BaseException) -> bool:
        """Whether the driver error ``error`` says the transaction lost to a concurrent one and was rolled back
        whole: the same work run again may succeed (a deadlock's victim, a serialization failure)."""
        return False

    def insert(self, table):
        """An INSERT for ``table`` (model or Table) that offers ``on_conflict_do_update`` / ``on_conflict_do_nothing``
        and ``.excluded``: an upsert, the same on both backends."""
        raise NotImplementedError

    def lock_for_update(self, stmt: Select) -> Select:
        """``stmt`` taking row locks on what it reads, for a read-modify-write."""
        raise NotImplementedError

    def refresh_locked(self, session: Session, obj) -> None:
        """Reload ``obj`` under a row lock (its unflushed changes flushed first)."""
        raise NotImplementedError

    def serialize(self, session: Session, key: str) -> None:
        """Until ``session``'s transaction ends, other transactions that serialise on ``key`` wait: a decision
        about something that has no row to lock yet (say, whether a danger already has its case)."""
        raise NotImplementedError

    def trigger_ddl(self, *, sqlite: Iterable[str] = (), postgresql: Iterable[str] = ()) -> list[str]:
        """Of trigger DDL written for each backend (trigger bodies differ: per-row NEW/OLD against statement-level
        transition tables), the statements for this one."""
        raise NotImplementedError

    def drop_trigger(self, name: str, table: str) -> str:
        raise NotImplementedError

    def register_function(self, conn: Connection, name: str, nargs: int, fn) -> None:
        """Make the Python function ``fn`` callable in SQL as ``name`` on this connection where the backend lacks
        what it computes (SQLite: GEOS predicates on GeoPackage blobs); a no-op where SQL has its own (PostGIS).
        Idempotent and cheap."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------- bulk loading

    def bulk_geometries(self, geoms) -> list:
        """Geometries in the form ``bulk_insert`` hands to the driver (GeoPackage blobs; hex EWKB with its SRID for
        COPY)."""
        raise NotImplementedError

    def bulk_insert(self, conn: Connection, table: str, columns: list[str], values: list[tuple]) -> None:
        """Rows already in storage form, past SQLAlchemy's per-row bind processing: multi-row INSERTs
        (SQLite, ``execute_rows``), COPY (PostgreSQL, about ten times a multi-row INSERT)."""
        raise NotImplementedError

    def execute_rows(self, conn: Connection, sql: str, rows: list) -> None:
        """A one-row INSERT (positional or named parameters as the driver takes them) run for every row of
        ``rows``: the driver's executemany; SQLite: multi-row statements (positional rows only)."""
        conn.exec_driver_sql(sql, rows)

    def insert_rows(self, bind: Session | Connection, table, rows: list[dict], *, returning_ids: bool = False) -> list[int]:
        """Many rows of a mapped table (model or Table, integer primary key ``id``) in the caller's transaction:
        values as the ORM takes them (aware datetimes, Python objects for JSON columns); with ``returning_ids`` the
        new ids in the order of ``rows``. SQLite: multi-row INSERTs (``execute_rows``), each column's SQLAlchemy bind
        processing applied once per column (SQLAlchemy's own executemany built a parameter set per row), the ids
        reserved under the writer lock first. PostgreSQL: COPY, the ids drawn from the table's sequence first
        (multi-row INSERTs of a few thousand rows spent more time in the driver's parsing of their thousands of
        placeholders than in the server)."""
        raise NotImplementedError

    def insert_family(self, bind: Session | Connection, table, rows: list[dict], children=()) -> list[int]:
        """Rows of ``table`` (as ``insert_rows`` takes them) and, for each, one row of every child table that
        references it: ``children`` is ``[(child table, foreign key column, child rows)]``, the child rows in the
        order of ``rows`` and without their foreign key. Returns the new ids of ``rows`` in order. Here: the ids
        drawn, then each table's rows on the driver (SQLite: in process, nothing to gain from one statement);
        PostgreSQL: one statement for all the tables."""
        ids = self.insert_rows(bind, table, rows, returning_ids=True)
        for child, fk, child_rows in children:
            self.insert_rows(bind, child, [{**row, fk: i} for row, i in zip(child_rows, ids, strict=True)])
        return ids

    def bulk_cache(self, conn: Connection, kib: int):
        """A context manager giving this connection a page cache of ``kib`` KiB for a load (SQLite's default is
        2 MB; PostgreSQL's shared buffers need nothing per connection)."""
        raise NotImplementedError

    def after_bulk_load(self, conn: Connection, tables: list[str]) -> None:
        """After rows went in with explicit ids: sequences moved past them and statistics refreshed."""
        raise NotImplementedError

    @contextmanager
    def deferred_indexes(self, conn: Connection, tables: list[str]):
        """A context manager for a bulk load into ``tables``: when all are empty, their secondary indexes and
        foreign keys are dropped in the load's transaction and built again at the end in one pass each (PostgreSQL:
        at the census scale, keeping nine B-trees, a GiST index and the per-row foreign-key checks current row by
        row made most of the load's time). SQLite: nothing (the R*Tree is packed by ``core.bulk``)."""
        yield

    def extent(self, conn: Connection, table: str, geom_name: str = "geom") -> list[float] | None:
        """[minx, miny, maxx, maxy] of a table's geometries (from the spatial index where it holds them), or None."""
        raise NotImplementedError

    def defer_spatial_index(self, conn: Connection, table: str) -> str | None:
        """Before a load into ``table``: when it is empty and its spatial index can be built afterwards in one pass
        (a GiST index from sorted input, instead of row by row), drop the index in the load's transaction and
        return its name for ``build_spatial_index``; else None (the R*Tree is handled by ``core.bulk``)."""
        return None

    def build_spatial_index(self, conn: Connection, table: str, index: str) -> None:
        """Create the spatial index ``defer_spatial_index`` dropped."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------- geometry

    def bbox_prefilter(self, stmt: Select, table: str, id_column, geom_column,
                       bounds: tuple[float, float, float, float], geom_name: str = "geom") -> Select:
        """Keep rows whose envelope meets ``bounds`` (minx, miny, maxx, maxy, canonical CRS): the index step of
        every spatial query, ``&&`` on the GiST index (PostGIS) or the GeoPackage R*Tree (SQLite). Callers apply
        the exact predicate afterwards."""
        raise NotImplementedError

    def bbox_undecided(self, stmt: Select, table: str, id_column, geom_column, geom_name: str = "geom") -> Select:
        """``bbox_prefilter`` built once, its box given at each run (``bbox_params``), that also selects whether
        each row's envelope lies within a second box (``inner``, 1 or 0) and, only for the rows whose envelope
        does not, that envelope as four columns (minx, miny, maxx, maxy; for the others no number: NULL in
        SQLite's JSON, NaN on PostgreSQL, both NaN once read into a float NumPy array). An envelope may be
        a little larger than the geometry's, never smaller: an envelope within a box inside a zone puts the row
        inside the zone without its geometry, and only the others' envelopes are written out (SQLite writes
        each float as text into JSON: for every row that was a third of the zone statement)."""
        raise NotImplementedError

    @staticmethod
    def bbox_params(bounds: tuple[float, float, float, float], inner: tuple[float, float, float, float]) -> dict:
        """The bound values of a ``bbox_undecided`` statement: the box the rows' envelopes meet and the inner box."""
        return dict(zip(("bbox_minx", "bbox_miny", "bbox_maxx", "bbox_maxy", "inner_minx", "inner_miny",
                         "inner_maxx", "inner_maxy"), (*bounds, *inner)))

    def column_lists(self, conn: Connection, stmt: Select, params: dict | None = None) -> list[list]:
        """The rows of ``stmt`` as one list per column, all in the same row order, aggregated by the database into
        a single row (PostgreSQL arrays, SQLite JSON arrays): thousands of rows come back without a row tuple and
        a Python object per row and column. Numbers and text only; floats may be rounded in their last digits
        (SQLite's JSON writes 15 significant digits). ``params``: values of the statement's bound parameters
        (for a statement built once)."""
        raise NotImplementedError

    def row_sets(self, conn: Connection, stmts: list[Select], params: dict | None = None) -> list[list]:
        """The rows of several independent statements, one list per statement, each row with attribute access by
        column key (as Core rows). PostgreSQL: one statement and one round trip for all (each statement's rows
        aggregated into a JSON array, parsed by orjson); SQLite: each statement in turn (in process, there is no
        round trip to save). Text, numbers, booleans and JSON columns (decoded) only. ``params``: the values of the
        statements' bound parameters (one namespace for all)."""
        return [conn.execute(stmt, params or {}).all() for stmt in stmts]

    def raw_geometry(self, column):
        """``column`` selected as the stored bytes, not decoded row by row (``decode_geometries`` decodes a batch)."""
        raise NotImplementedError

    def decode_geometries(self, blobs: list) -> np.ndarray:
        """Values of ``raw_geometry`` → Shapely array, in one vectorised pass."""
        raise NotImplementedError

    def encode_geometries(self, geoms, srid: int = CANONICAL_SRID) -> list:
        """Geometries in this backend's storage encoding, for bulk inserts into ``Geometry`` columns."""
        return encode_many(geoms, self.name, srid)

    # -------------------------------------------------------------------------------- JSON, arrays

    def json_text(self, column):
        """A JSON column as its stored text, never decoded into Python objects."""
        raise NotImplementedError

    def json_object(self, *pairs):
        """SQL building a JSON object from alternating keys and values."""
        raise NotImplementedError

    def json_path(self, column, keys: list[str]):
        """The member at ``keys`` of a JSON column, as text."""
        raise NotImplementedError

    def json_typed(self, column, key: str, kind: str):
        """(value, ok) of the top-level member ``key`` of a JSON column read as ``kind`` ("number", "string" compared
        in code-point order, "boolean" as 1/0) and whether its JSON type is that kind: typed comparisons with the
        same answer on both backends."""
        raise NotImplementedError

    def json_typeof(self, column, key: str):
        """The JSON type name of the top-level member ``key`` (NULL when absent, ``'null'`` for a JSON null)."""
        raise NotImplementedError

    def like(self, value, pattern: str):
        """Case-sensitive SQL LIKE (``%``, ``_``, ``\\`` escapes) of ``value`` against ``pattern``: SQLite's LIKE is
        case-insensitive for ASCII, so there it is the equivalent GLOB."""
        raise NotImplementedError

    def epoch_ms_text(self, value, what: str):
        """Epoch milliseconds as UTC text: ``what`` "date" → 'YYYY-MM-DD', "time" → 'HH:MM:SS.mmm'."""
        raise NotImplementedError

    def epoch_ms_part(self, value, part: str):
        """A part ("year", "month", "day", "hour", "minute", "second") of epoch milliseconds in UTC, as a number."""
        raise NotImplementedError

    def text_position(self, haystack, needle):
        """1-based position of ``needle`` in ``haystack`` (0 when absent)."""
        raise NotImplementedError

    def in_ids(self, column, ids: list[int]):
        """``column IN ids`` with the ids as ONE bound value (a PostgreSQL array, an SQLite JSON array read by
        json_each): compiling hundreds of bind parameters per query costs more than the query on hot paths."""
        raise NotImplementedError

    def in_bound_ids(self, column, name: str):
        """``column IN`` the ids given at each run as ONE value named ``name`` (``ids_value``), for a statement
        compiled once and run by the driver (``in_ids`` puts the ids into the statement)."""
        raise NotImplementedError

    def ids_value(self, ids) -> str:
        """The value of an ``in_bound_ids`` parameter: integer ids as one text."""
        raise NotImplementedError

    def array_param(self, values, kind: str):
        """``values`` (a sequence or NumPy array of numbers, no NULLs) as one array parameter for a cursor of
        ``array_cursor``, ``kind`` "int4", "int8" or "float8" (backends with ``arrays``)."""
        raise NotImplementedError

    def array_cursor(self, session: Session):
        """A cursor of the driver on ``session``'s connection (in its transaction) that takes ``array_param`` values."""
        raise NotImplementedError


class SQLiteStorage(Storage):
    name = "sqlite"
    embedded = True
    rtree_index = True
    least_greatest = ("min", "max")

    def bulk_geometries(self, geoms):
        return encode_many(geoms, self.name)

    def bulk_insert(self, conn, table, columns, values):
        self.execute_rows(conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                          values)

    def execute_rows(self, conn, sql, rows):
        """Multi-row statements instead of the driver's executemany, whose every row is one ``sqlite3_step``
        with the GIL released and taken back around it: beside a busy event loop each row waited for the GIL
        again while this process held the store's one write lock (an executemany of 32 rows took 3× its time
        with another Python thread running; one statement of 32 rows 2.5×, and less CPU alone). The rows go in
        chunks of powers of two (a group of 37: 32 + 4 + 1), so the driver's statement cache holds a few
        statements per table rather than one per group size. Run on the driver's cursor, in the transaction of
        ``conn`` (begun if it was not): SQLAlchemy's execution context around each statement cost more than a
        small group's statement itself (a case's group of one: ~0.1 ms of its 2.4 ms per statement)."""
        if not rows:
            return
        rows = rows if isinstance(rows, list) else list(rows)
        width = len(rows[0])
        most = _MULTI_ROWS
        while most > 1 and most * width > _SQLITE_VARIABLES:
            most //= 2
        cursor = _driver_cursor(conn)
        i, n = 0, len(rows)
        with _as_sqlalchemy_errors(conn, sql):
            while i < n:
                k = min(most, 1 << ((n - i).bit_length() - 1))
                cursor.execute(_multi_row_sql(sql, k), tuple(chain.from_iterable(rows[i:i + k])) if k > 1 else tuple(rows[i]))
                i += k

    def insert_rows(self, bind, table, rows, *, returning_ids=False, _memo=None):
        if not rows:
            return []
        table = getattr(table, "__table__", table)
        conn = bind.connection() if _is_session(bind) else bind
        ids: list[int] = []
        if returning_ids:
            # What SQLite itself would give (largest rowid + 1; no AUTOINCREMENT), under the writer lock.
            cursor = _driver_cursor(conn)
            if isinstance(cursor.connection, WriterConnection):
                cursor.connection.begin_write()
            with _as_sqlalchemy_errors(conn, "SELECT coalesce(max(id), 0)"):
                top = cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table.name}").fetchone()[0]
            ids = list(range(top + 1, top + 1 + len(rows)))
        plan = _insert_plan(table, tuple(rows[0]), conn.dialect)
        if plan.fill:
            # The Python-side column defaults SQLAlchemy's INSERT would have filled in for columns the rows leave out.
            rows = [{**row, **plan.fill, **{c.name: c.default.arg(None) for c in plan.calls}} for row in rows]
        # Column by column: the rows' values taken out in one C-level pass, and only the columns whose type
        # processes its binds (JSON, timestamps, geometry) walked in Python — per value, as SQLAlchemy would.
        cols = list(zip(*map(plan.getter, rows)))
        memo = _memo if _memo is not None else {}
        for n, convert in plan.converts:
            cols[n] = convert(cols[n], memo)
        columns = plan.columns
        if returning_ids:
            cols.insert(0, ids)
            columns = ["id", *columns]
        self.bulk_insert(conn, table.name, columns, list(zip(*cols)))
        return ids

    def insert_family(self, bind, table, rows, children=()):
        memo: dict = {}  # a timestamp shared by the tables' rows (a case's report time) is formatted once
        ids = self.insert_rows(bind, table, rows, returning_ids=True, _memo=memo)
        for child, fk, child_rows in children:
            self.insert_rows(bind, child, [{**row, fk: i} for row, i in zip(child_rows, ids, strict=True)], _memo=memo)
        return ids

    @contextmanager
    def bulk_cache(self, conn, kib):
        before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
        conn.exec_driver_sql(f"PRAGMA cache_size=-{int(kib)}")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"PRAGMA cache_size={int(before)}")

    def after_bulk_load(self, conn, tables):
        return None  # INTEGER PRIMARY KEY continues after the largest id; ANALYZE is left to the planner's defaults

    def extent(self, conn, table, geom_name="geom"):
        row = conn.execute(text(f"SELECT min(minx), min(miny), max(maxx), max(maxy) FROM rtree_{table}_{geom_name}")).one()
        return None if row[0] is None else [float(v) for v in row]

    def insert(self, table):
        return sqlite.insert(table)

    def lock_for_update(self, stmt):
        return stmt  # the writer lock (core.db.begin_write) already serialises the whole transaction

    def refresh_locked(self, session, obj):
        return None

    def serialize(self, session, key):
        begin_write(session)  # the store's one writer from here to the commit

    def trigger_ddl(self, *, sqlite=(), postgresql=()):
        return list(sqlite)

    def drop_trigger(self, name, table):
        return f"DROP TRIGGER IF EXISTS {name}"

    def register_function(self, conn, name, nargs, fn):
        conn.connection.dbapi_connection.create_function(name, nargs, fn, deterministic=True)

    def bbox_prefilter(self, stmt, table, id_column, geom_column, bounds, geom_name="geom"):
        minx, miny, maxx, maxy = bounds
        candidates = text(f"SELECT id FROM rtree_{table}_{geom_name} "
                          "WHERE minx <= :maxx AND maxx >= :minx AND miny <= :maxy AND maxy >= :miny")
        return stmt.where(id_column.in_(candidates.bindparams(minx=minx, maxx=maxx, miny=miny, maxy=maxy)))

    def bbox_undecided(self, stmt, table, id_column, geom_column, geom_name="geom"):
        rtree = sql_table(f"rtree_{table}_{geom_name}", *[sql_column(c) for c in ("id", "minx", "miny", "maxx", "maxy")])
        # The R*Tree's boxes are single precision rounded outwards (as PostGIS's): within the inner box means within.
        inner = ((rtree.c.minx >= bindparam("inner_minx")) & (rtree.c.miny >= bindparam("inner_miny"))
                 & (rtree.c.maxx <= bindparam("inner_maxx")) & (rtree.c.maxy <= bindparam("inner_maxy")))
        envelope = [case((inner, None), else_=c) for c in (rtree.c.minx, rtree.c.miny, rtree.c.maxx, rtree.c.maxy)]
        # The R*Tree drives: its entries hold the boxes, and each entry finds its row by primary key.
        return (stmt.add_columns(cast(inner, Integer), *envelope)
                .join_from(rtree, id_column.table, rtree.c.id == id_column)
                .where(rtree.c.minx <= bindparam("bbox_maxx"), rtree.c.maxx >= bindparam("bbox_minx"),
                       rtree.c.miny <= bindparam("bbox_maxy"), rtree.c.maxy >= bindparam("bbox_miny")))

    def column_lists(self, conn, stmt, params=None):
        aggregated = _AGGREGATED.get(stmt)
        if aggregated is None:
            sub = stmt.subquery()
            aggregated = select(*[func.json_group_array(c) for c in sub.c])
            if len(_AGGREGATED) > 256:
                _AGGREGATED.clear()
            _AGGREGATED[stmt] = aggregated  # a statement built once by its caller is wrapped once (not per call)
        row = conn.execute(aggregated, params or {}).one()
        return [orjson.loads(v) for v in row]

    def raw_geometry(self, column):
        return type_coerce(column, LargeBinary)

    def decode_geometries(self, blobs):
        return from_gpkg_many(blobs) if len(blobs) else np.array([], dtype=object)

    def json_text(self, column):
        return type_coerce(column, Text)

    def json_object(self, *pairs):
        return func.json_object(*pairs)

    def json_path(self, column, keys):
        return func.json_extract(column, "$." + ".".join(keys))

    def json_typed(self, column, key, kind):
        path = _sqlite_member(key)
        jtype = func.json_type(column, path)
        ok = {"number": jtype.in_(("integer", "real")), "boolean": jtype.in_(("true", "false")),
              "string": jtype == "text"}[kind]
        return func.json_extract(column, path), ok

    def json_typeof(self, column, key):
        return func.json_type(column, _sqlite_member(key))

    def like(self, value, pattern):
        return value.op("GLOB")(like_to_glob(pattern))

    def epoch_ms_text(self, value, what):
        return func.strftime({"date": "%Y-%m-%d", "time": "%H:%M:%f"}[what], value / 1000.0, "unixepoch")

    def epoch_ms_part(self, value, part):
        spec = {"year": "%Y", "month": "%m", "day": "%d", "hour": "%H", "minute": "%M", "second": "%S"}[part]
        return cast(func.strftime(spec, value / 1000.0, "unixepoch"), Float)

    def text_position(self, haystack, needle):
        return func.instr(haystack, needle)

    def in_ids(self, column, ids):
        ids = [int(i) for i in ids]
        return column.in_(select(literal_column("value")).select_from(func.json_each(literal(json.dumps(ids)))))

    def in_bound_ids(self, column, name):
        return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam(name, type_=Text))))

    def ids_value(self, ids):
        return "[" + ",".join(str(int(i)) for i in ids) + "]"


class PostgreSQLStorage(Storage):
    name = "postgresql"
    embedded = False
    spatial_sql = True
    copy_in = True
    arrays = True
    family_statement = True
    concurrent_writes = True
    commit_notifications = True
    #: deadlock_detected, serialization_failure: the server rolled the whole transaction back.
    _CONFLICT_STATES = frozenset({"40P01", "40001"})

    def write_conflict(self, error):
        return getattr(error, "sqlstate", None) in self._CONFLICT_STATES

    def bulk_geometries(self, geoms):
        geoms = np.asarray(geoms, dtype=object)
        return shapely.to_wkb(shapely.set_srid(geoms, CANONICAL_SRID), hex=True, include_srid=True).tolist()

    def bulk_insert(self, conn, table, columns, values):
        if not values:
            return
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in values:
                copy.write_row(row)

    def insert_rows(self, bind, table, rows, *, returning_ids=False):
        if not rows:
            return []
        table = getattr(table, "__table__", table)
        columns = list(rows[0])
        as_json = {c for c in columns if isinstance(table.c[c].type, JSONText)}
        conn = bind.connection() if _is_session(bind) else bind
        ids: list[int] = []
        if returning_ids:
            ids = list(conn.execute(text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
                                    {"t": table.name, "n": len(rows)}).scalars())
        cursor = conn.connection.driver_connection.cursor()
        names = (["id"] if returning_ids else []) + columns
        # COPY runs on the driver's cursor: its errors raised as SQLAlchemy's (IntegrityError …), as callers catch them.
        with _as_sqlalchemy_errors(conn, f"COPY {table.name}"), \
                cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
            for n, row in enumerate(rows):
                values = [json_text(row[c]) if c in as_json and row[c] is not None else row[c] for c in columns]
                copy.write_row([ids[n], *values] if returning_ids else values)
        return ids

    def insert_family(self, bind, table, rows, children=()):
        # One statement, one round trip, whatever the group's size: the ids drawn from the sequence in a CTE and
        # every table's rows read from one JSON array each (json_populate_recordset against the table's own row
        # type: the server parses them; no per-value adaptation in Python). The id draw and a COPY per table,
        # each with its own round trips, were 79 % of the case writer's time.
        if not rows:
            return []
        table = getattr(table, "__table__", table)
        conn = bind.connection() if _is_session(bind) else bind
        tables = [(table, "id", rows)] + [(getattr(t, "__table__", t), fk, r) for t, fk, r in children]
        key = tuple((t.name, fk, tuple(r[0])) for t, fk, r in tables)
        sql = _FAMILY_SQL.get(key)
        if sql is None:
            parts = []
            for n, (t, fk, r) in enumerate(tables):
                cols = [c for c in r[0] if c != fk]
                names = ", ".join(f'"{c}"' for c in [fk, *cols])
                values = ", ".join(["ids.id", *(f'r."{c}"' for c in cols)])
                parts.append(f"t{n} AS (INSERT INTO {t.name} ({names}) SELECT {values} "
                             f"FROM json_populate_recordset(NULL::{t.name}, %(t{n})s::json) WITH ORDINALITY AS r "
                             "JOIN ids ON ids.n = r.ordinality)")
            sql = _FAMILY_SQL[key] = (
                f"WITH ids AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) AS id, n "
                "FROM generate_series(1, %(n)s) AS n), " + ", ".join(parts) + " SELECT id FROM ids ORDER BY n")
        params = {"n": len(rows)}
        for n, (t, fk, r) in enumerate(tables):
            if len(r) != len(rows):
                raise ValueError(f"{len(r)} rows of {t.name} for {len(rows)} of {table.name}")
            params[f"t{n}"] = orjson.dumps(r, option=orjson.OPT_NON_STR_KEYS).decode()
        return [i for (i,) in conn.exec_driver_sql(sql, params)]

    @contextmanager
    def bulk_cache(self, conn, kib):
        yield

    def after_bulk_load(self, conn, tables):
        for table in tables:
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"))
            conn.execute(text(f"ANALYZE {table}"))

    @contextmanager
    def deferred_indexes(self, conn, tables):
        if not all(conn.exec_driver_sql(f"SELECT NOT EXISTS (SELECT 1 FROM {t})").scalar() for t in tables):
            yield
            return
        oids = "ARRAY[" + ", ".join(f"'{t}'::regclass" for t in tables) + "]"
        # Indexes that back no constraint (primary keys and unique constraints stay), and the tables' foreign keys.
        indexes = conn.exec_driver_sql(
            f"SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            f"WHERE i.indrelid = ANY({oids}) AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
        ).all()
        foreign = conn.exec_driver_sql(
            f"SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE contype = 'f' AND conrelid = ANY({oids})").all()
        for table, name, _ in foreign:
            conn.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            conn.exec_driver_sql(f"DROP INDEX {name}")
        yield
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
        for _, definition in indexes:
            conn.exec_driver_sql(definition)
        for table, name, definition in foreign:
            conn.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')

    def extent(self, conn, table, geom_name="geom"):
        row = conn.execute(text(f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                f"(SELECT ST_Extent({geom_name}) AS e FROM {table}) s")).one()
        return None if row[0] is None else [float(v) for v in row]

    def defer_spatial_index(self, conn, table):
        if not conn.exec_driver_sql(f"SELECT NOT EXISTS (SELECT 1 FROM {table})").scalar():
            return None
        index = f"ix_{table}_geom_gist"  # DDL is transactional here: a failed load rolls the drop back
        if not conn.exec_driver_sql("SELECT to_regclass(%s)", (index,)).scalar():
            return None
        conn.exec_driver_sql(f"DROP INDEX {index}")
        return index

    def build_spatial_index(self, conn, table, index):
        conn.exec_driver_sql(f"CREATE INDEX {index} ON {table} USING gist (geom)")

    def insert(self, table):
        from sqlalchemy.dialects import postgresql  # here: its module is a fixed cost of every SQLite process otherwise

        return postgresql.insert(table)

    def lock_for_update(self, stmt):
        return stmt.with_for_update()

    def refresh_locked(self, session, obj):
        session.flush()  # refresh would otherwise drop this transaction's unflushed changes to the object
        session.refresh(obj, with_for_update=True)

    def serialize(self, session, key):
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))

    def trigger_ddl(self, *, sqlite=(), postgresql=()):
        return list(postgresql)

    def drop_trigger(self, name, table):
        return f"DROP TRIGGER IF EXISTS {name} ON {table}"

    def register_function(self, conn, name, nargs, fn):
        return None  # PostGIS and PostgreSQL have the function in SQL

    def bbox_prefilter(self, stmt, table, id_column, geom_column, bounds, geom_name="geom"):
        minx, miny, maxx, maxy = bounds
        raw = geom_column.expression if hasattr(geom_column, "expression") else geom_column
        return stmt.where(raw.op("&&")(func.ST_MakeEnvelope(minx, miny, maxx, maxy, CANONICAL_SRID)))

    def bbox_undecided(self, stmt, table, id_column, geom_column, geom_name="geom"):
        raw = geom_column.expression if hasattr(geom_column, "expression") else geom_column
        inner = raw.op("@")(func.ST_MakeEnvelope(bindparam("inner_minx"), bindparam("inner_miny"), bindparam("inner_maxx"),
                                                 bindparam("inner_maxy"), CANONICAL_SRID))
        # NaN, not NULL: the binary array loader of column_lists takes no NULLs.
        envelope = [case((inner, literal_column("'NaN'::float8")), else_=f(raw))
                    for f in (func.ST_XMin, func.ST_YMin, func.ST_XMax, func.ST_YMax)]
        box = func.ST_MakeEnvelope(bindparam("bbox_minx"), bindparam("bbox_miny"), bindparam("bbox_maxx"),
                                   bindparam("bbox_maxy"), CANONICAL_SRID)
        return stmt.add_columns(cast(inner, Integer), *envelope).where(raw.op("&&")(box))

    def column_lists(self, conn, stmt, params=None):
        sub = stmt.subquery()
        aggregated = select(*[func.array_agg(c) for c in sub.c])
        # Compiled once per shape of statement, as SQLAlchemy's own cache would (its execute path cannot take the
        # binary cursor below); the values of this call's bound parameters come from the cache key.
        key = aggregated._generate_cache_key()
        compiled = _COMPILED.get((conn.dialect.name, key.key)) if key is not None else None
        if compiled is None:
            compiled = aggregated.compile(dialect=conn.dialect, cache_key=key)
            if key is not None:
                if len(_COMPILED) > 256:
                    _COMPILED.clear()
                _COMPILED[(conn.dialect.name, key.key)] = compiled
        params = (compiled.construct_params(params, extracted_parameters=key.bindparams) if key is not None
                  else compiled.construct_params(params))
        # Binary results on the driver's cursor (in the connection's transaction): number arrays arrive as NumPy arrays
        # (_numpy_array_loader), not as lists built element by element.
        cursor = conn.connection.driver_connection.cursor(binary=True)
        for oid in _NUMPY_ARRAYS:
            cursor.adapters.register_loader(oid, _numpy_array_loader())
        row = cursor.execute(compiled.string, params).fetchone()
        cursor.close()
        return [v if v is not None else [] for v in row]

    def row_sets(self, conn, stmts, params=None):
        if not stmts:
            return []
        combined = _COMBINED.get(tuple(stmts))
        if combined is None:
            parts = []
            for stmt in stmts:
                sub = stmt.subquery()
                # json_build_array keeps each value's JSON type (jsonb nested, float8 in its shortest exact form).
                parts.append(select(func.coalesce(func.json_agg(func.json_build_array(*sub.c)), literal_column("'[]'::json")))
                             .select_from(sub).scalar_subquery())
            combined = select(*parts)
            if len(_COMBINED) > 256:
                _COMBINED.clear()
            _COMBINED[tuple(stmts)] = combined  # statements built once by the caller: built once here too
        # Through SQLAlchemy's execute: its cache compiles each shape of the statement once (compiling it here on
        # every call cost more client CPU than the rest of the answer).
        row = conn.execute(combined, params or {}).one()
        return [[shape(*values) for values in rows] for shape, rows in
                zip((_row_shape(tuple(stmt.selected_columns.keys())) for stmt in stmts), row)]

    def raw_geometry(self, column):
        return func.ST_AsBinary(type_coerce(column, LargeBinary), type_=LargeBinary)

    def decode_geometries(self, blobs):
        return shapely.from_wkb(np.array([bytes(b) if isinstance(b, memoryview) else b for b in blobs], dtype=object))

    def json_text(self, column):
        return cast(column, Text)

    def json_object(self, *pairs):
        return func.jsonb_build_object(*pairs)

    def json_path(self, column, keys):
        return func.jsonb_extract_path_text(column, *[literal(k, Text) for k in keys])

    def json_typed(self, column, key, kind):
        text_ = type_coerce(column.op("->>")(literal(key, String)), String)
        jtype = func.jsonb_typeof(column.op("->")(literal(key, String)))
        if kind == "number":
            return text_.cast(Float(precision=53)), jtype == "number"
        if kind == "boolean":
            return case((text_ == literal("true", String), 1), else_=0), jtype == "boolean"
        return text_.collate("C"), jtype == "string"

    def json_typeof(self, column, key):
        return func.jsonb_typeof(column.op("->")(literal(key, String)))

    def like(self, value, pattern):
        return value.like(pattern, escape="\\")

    def epoch_ms_text(self, value, what):
        fmt = {"date": "YYYY-MM-DD", "time": "HH24:MI:SS.MS"}[what]
        return func.to_char(func.to_timestamp(value / 1000.0).op("AT TIME ZONE")("UTC"), fmt)

    def epoch_ms_part(self, value, part):
        return func.extract(part, func.to_timestamp(value / 1000.0).op("AT TIME ZONE")("UTC"))

    def text_position(self, haystack, needle):
        return func.strpos(haystack, needle)

    def array_param(self, values, kind):
        return _BinaryArray.of(values, kind)

    def array_cursor(self, session):
        cursor = session.connection().connection.driver_connection.cursor()
        # on the cursor: a connection copies the driver's global adapters when it is made, maybe before this import
        cursor.adapters.register_dumper(_BinaryArray, _binary_array_dumper())
        return cursor

    def in_ids(self, column, ids):
        # One text value cast to integer[] by the server: dumping a Python list element by element cost more
        # client CPU than the whole query did on the server.
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(cast(literal("{" + ",".join(str(int(i)) for i in ids) + "}", Text), ARRAY(Integer)))

    def in_bound_ids(self, column, name):
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(cast(bindparam(name, type_=Text), ARRAY(Integer)))

    def ids_value(self, ids):
        return "{" + ",".join(str(int(i)) for i in ids) + "}"


class _BinaryArray:
    """A one-dimensional PostgreSQL array without NULLs already in the binary wire format, built by NumPy in one pass:
    psycopg's list dumper walks the elements in Python (10,000 observations × 4 columns were a third of the ingest
    writer's CPU) and the text form costs the server a parse of every element."""

    __slots__ = ("data", "oid")
    #: kind → (array type oid, element type oid, big-endian NumPy type)
    KINDS = {"int4": (1007, 23, ">i4"), "int8": (1016, 20, ">i8"), "float8": (1022, 701, ">f8")}

    def __init__(self, data: bytes, oid: int):
        self.data, self.oid = data, oid

    @classmethod
    def of(cls, values, kind: str) -> "_BinaryArray":
        oid, element, dtype = cls.KINDS[kind]
        values = np.asarray(values)
        n = len(values)
        items = np.empty(n, dtype=[("size", ">i4"), ("value", dtype)])
        items["size"] = np.dtype(dtype).itemsize
        items["value"] = values  # a value beyond the type would wrap silently: compared below
        if n and np.dtype(dtype).kind == "i" and not np.array_equal(items["value"], values):
            raise OverflowError(f"a value does not fit {kind}")
        # header: dimensions, has-NULLs flag, element type, then (length, lower bound) of the one dimension
        head = struct.pack(">iiIii", 1, 0, element, n, 1) if n else struct.pack(">iiI", 0, 0, element)
        return cls(head + items.tobytes(), oid)


#: Compiled statements of ``PostgreSQLStorage.column_lists`` by dialect and cache key.
_COMPILED: dict = {}
#: ``PostgreSQLStorage.row_sets``' one statement, by the statements it combines.
_COMBINED: dict = {}
#: SQLite: the aggregated form of each statement given to ``column_lists`` (built once per statement).
#: Rows per multi-row statement at most (``SQLiteStorage.execute_rows``), and bound values per statement at most:
#: SQLite's default SQLITE_MAX_VARIABLE_NUMBER since 3.32.
_MULTI_ROWS = 256
_SQLITE_VARIABLES = 32766


@lru_cache(maxsize=512)
def _multi_row_sql(sql: str, k: int) -> str:
    """``sql`` (one ``VALUES (?, …)`` group, as the caller writes it or SQLAlchemy compiles it, maybe followed by
    ``ON CONFLICT …``) with ``k`` value groups."""
    if k == 1:
        return sql
    head, values, rest = sql.partition(" VALUES (")
    group, close, tail = rest.partition(")")
    if not values or not close:
        raise ValueError(f"not a one-row INSERT: {sql[:80]!r}")
    one = f"({group})"
    return f"{head} VALUES {', '.join([one] * k)}{tail}"


_AGGREGATED: dict = {}


@lru_cache(maxsize=64)
def _row_shape(keys: tuple[str, ...]) -> type:
    """A row type with attribute access by column key, for ``row_sets``."""
    return namedtuple("Row", keys, rename=True)


#: array type oid → big-endian NumPy type of its elements (int4[], int8[], float8[]): the arrays
#: ``_numpy_array_loader`` reads.
_NUMPY_ARRAYS = {1007: ">i4", 1016: ">i8", 1022: ">f8"}


@lru_cache(maxsize=1)
def _numpy_array_loader() -> type:
    """psycopg's loader of a one-dimensional integer or float array in the binary format, without NULLs, as a NumPy
    array read in one pass (psycopg builds a list, one Python number per element). Hand-written: psycopg has no
    NumPy loaders. Made on first use, as ``_binary_array_dumper``."""
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    class _NumpyArrayLoader(Loader):
        format = Format.BINARY

        def load(self, data):
            dtype = np.dtype(_NUMPY_ARRAYS[self.oid])
            ndim, has_nulls, _ = struct.unpack_from(">iii", data)
            if ndim == 0:
                return np.zeros(0, dtype=dtype.newbyteorder("="))
            if ndim != 1 or has_nulls:
                raise ValueError("only one-dimensional arrays without NULLs load as NumPy arrays")
            n = struct.unpack_from(">i", data, 12)[0]
            # After the 20-byte header each element is its length (4 bytes) and its value.
            elements = np.frombuffer(data, dtype=[("length", ">i4"), ("value", dtype)], count=n, offset=20)
            return elements["value"].astype(dtype.newbyteorder("="))

    return _NumpyArrayLoader


@lru_cache(maxsize=1)
def _binary_array_dumper() -> type:
    """psycopg's dumper of ``_BinaryArray``, made on first use: psycopg is imported by PostgreSQL's code paths
    only (its import was ~0.25 s of CPU of every SQLite command that reached this module)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class _BinaryArrayDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj):
            return obj.data

        def get_key(self, obj, format):
            return (self.cls, obj.oid)

        def upgrade(self, obj, format):
            dumper = _BinaryArrayDumper(self.cls)
            dumper.oid = obj.oid  # the array's type, so the server reads the binary value as such
            return dumper

    return _BinaryArrayDumper


_FAMILY_SQL: dict = {}  # (table, key column, columns) of each table → PostgreSQLStorage.insert_family's statement
_PROCESSORS: dict = {}  # (type, dialect) → bind processor, for SQLiteStorage.insert_rows


def _bind_processor(type_, dialect):
    """The bind processing SQLAlchemy applies to a value of ``type_`` on ``dialect`` (TypeDecorator included)."""
    key = (id(type_), dialect.name)
    if key not in _PROCESSORS:
        _PROCESSORS[key] = type_.dialect_impl(dialect).bind_processor(dialect)
    return _PROCESSORS[key]


_COLUMN_PROCESSORS: dict = {}  # (type, dialect) → column processor (or None), for SQLiteStorage.insert_rows


_InsertPlan = namedtuple("_InsertPlan", "columns getter converts fill calls")
_INSERT_PLANS: dict = {}  # (table, the rows' keys, dialect) → _InsertPlan


def _insert_plan(table, keys: tuple, dialect) -> _InsertPlan:
    """What ``SQLiteStorage.insert_rows`` works out from a table and the keys of its rows, once per both: the
    columns left out that have Python-side defaults, the final column list, its getter and the columns whose values
    are converted. Worked out on every call, it was a fifth of the Python of a group of one case."""
    key = (table, keys, dialect.name)
    plan = _INSERT_PLANS.get(key)
    if plan is None:
        missing = [c for c in table.columns if c.name not in keys and c.default is not None and c.name != "id"]
        fill = {c.name: c.default.arg if c.default.is_scalar else None for c in missing}
        columns = [*keys, *fill]
        converts = [(n, convert) for n, c in enumerate(columns)
                    if (convert := _column_processor(table.c[c].type, dialect)) is not None]
        plan = _INSERT_PLANS[key] = _InsertPlan(columns, _getter(columns), converts, fill,
                                                [c for c in missing if c.default.is_callable])
    return plan


@contextmanager
def _as_sqlalchemy_errors(conn, sql: str):
    """The driver's errors as SQLAlchemy raises them (``IntegrityError``, ``OperationalError`` …), which callers
    catch: a unique value that collides, a store that is busy."""
    base = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except base as exc:
        raise DBAPIError.instance(sql, None, exc, base, dialect=conn.dialect) from exc


def _driver_cursor(conn):
    """A cursor of the driver's connection under ``conn``, in its transaction (begun here as the first statement
    would have begun it)."""
    if not conn.in_transaction():
        conn.begin()
    return conn.connection.dbapi_connection.cursor()


def _column_processor(type_, dialect):
    """A function (values of one column, memo) → the values as the driver takes them, applying what
    ``_bind_processor`` applies to each; None where the type processes nothing. JSON columns go through
    ``types.json_text`` (what ``JSONText`` binds), each value once; a timestamp object is formatted once per
    ``memo`` (a dict one insert shares: the same datetime is a case's report time, its update time, its log
    entry's and its outbox row's), keyed by the object's identity, the objects alive while the memo is."""
    key = (id(type_), dialect.name)
    if key in _COLUMN_PROCESSORS:
        return _COLUMN_PROCESSORS[key]
    proc = _bind_processor(type_, dialect)
    if proc is None:
        convert = None
    elif isinstance(type_, JSONText) and dialect.name == "sqlite":
        def convert(values, memo):
            return [None if v is None else json_text(v) for v in values]
    elif isinstance(type_, UTCDateTime):
        def convert(values, memo):
            out = []
            for v in values:
                if v is None:
                    out.append(None)
                    continue
                text = memo.get(id(v))
                if text is None:
                    text = memo[id(v)] = proc(v)
                out.append(text)
            return out
    else:
        def convert(values, memo):
            return [None if v is None else proc(v) for v in values]
    _COLUMN_PROCESSORS[key] = convert
    return convert


def _getter(columns: list[str]):
    """row → tuple of its values of ``columns`` (``itemgetter`` gives a bare value for one column)."""
    get = itemgetter(*columns)
    return get if len(columns) > 1 else (lambda row: (get(row),))


SQLITE = SQLiteStorage()
POSTGRESQL = PostgreSQLStorage()
_BY_NAME = {"sqlite": SQLITE, "postgresql": POSTGRESQL}


def _sqlite_member(key: str) -> str:
    return '$."' + key.replace('"', '\\"') + '"'


def like_to_glob(pattern: str) -> str:
    """A LIKE pattern (``%``, ``_``, backslash escape) → the GLOB pattern that matches the same (case sensitive,
    like PostgreSQL's LIKE)."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(f"[{nxt}]" if nxt in "*?[" else nxt)
            i += 2
            continue
        out.append({"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}.get(ch, ch))
        i += 1
    return "".join(out)


def _is_session(bind) -> bool:
    """Whether ``bind`` is an ORM session; without importing the ORM where nothing has (then nothing is one)."""
    orm = sys.modules.get("sqlalchemy.orm")
    return orm is not None and isinstance(bind, orm.Session)


def storage_of(bind: "Session | Connection | Engine | Storage | str") -> Storage:
    """The storage strategy of a session, connection, engine (or dialect name; a Storage is its own)."""
    if isinstance(bind, Storage):
        return bind
    if isinstance(bind, str):
        name = bind
    else:
        if _is_session(bind):
            bind = bind.get_bind()
        name = bind.dialect.name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise RuntimeError(f"unsupported database backend {name!r}: CityOps runs on SQLite and PostgreSQL") from None


def write_conflict(error: BaseException) -> bool:
    """Whether ``error`` (a SQLAlchemy or driver error of either backend) is a transaction that lost to a concurrent
    one and was rolled back whole: nothing of it stayed, and running it again may succeed."""
    orig = getattr(error, "orig", None) or error
    return any(storage.write_conflict(orig) for storage in _BY_NAME.values())

"""Per-layer feature tables, made at run time.

``layer_<key>`` holds the current features (id, fid, properties, geom, v_from: the version since which the
row is current). It is a GeoPackage feature table on SQLite and has a GiST index on PostGIS.
``layer_<key>_history`` keeps every superseded row with the versions it was current for,
[v_from, v_to), so any earlier version can be restored exactly. Ids are never reused (AUTOINCREMENT /
identity), so a restored row keeps its id.

On SQLite ``geojson_<key>`` keeps each current feature as the GeoJSON Feature text OGC API – Features serves in
CRS84 (PostGIS writes that text in SQL per page; in SQLite every byte of it would be Python under the GIL of the
serving process). The bulk writer of generated features writes them with the rows; a file import does not (they
were 60 % of the bytes it wrote and its GIL-bound share): the server that reads them writes them behind
(``TextFiller``). Triggers delete a row's text when the row is updated or deleted, so a stale text is never read;
a row without text (imported and not yet filled, or written by another path or by a client such as QGIS) is
written per request (``feature_texts``), byte for byte the same.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import struct
import threading
import time
from functools import lru_cache

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from sqlalchemy import Column, Connection, Integer, MetaData, Table, Text

from cityops.base.rtree_bulk import DeferredRtree
from cityops.core.bulk import Grouped, grouped, insert_grouped, rtree_trigger_suspended, write_rtree
from cityops.core.geometry import CANONICAL_SRID, Geometry, encode_many
from cityops.core.spatial_ddl import register_spatial_table, unregister_spatial_table
from cityops.core.storage import storage_of
from cityops.core.types import JSONText

log = logging.getLogger("cityops.base.featurestore")

GEOMETRY_TYPES = ("POINT", "MULTIPOINT", "LINESTRING", "MULTILINESTRING", "POLYGON", "MULTIPOLYGON", "GEOMETRY")


@lru_cache(maxsize=512)
def tables(key: str, geometry_type: str) -> tuple[Table, Table]:
    """The (current, history) tables of a layer, named after its (immutable) key so that GDAL and QGIS
    list the layer as ``layer_<key>``."""
    metadata = MetaData()
    name = f"layer_{key}"
    current = Table(
        name, metadata,
        Column("id", Integer, primary_key=True),
        Column("fid", Text),
        Column("properties", JSONText, nullable=False),
        Column("geom", Geometry(geometry_type)),
        Column("v_from", Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    history = Table(
        f"{name}_history", metadata,
        Column("id", Integer, primary_key=True),
        Column("feature_id", Integer, nullable=False, index=True),
        Column("fid", Text),
        Column("properties", JSONText, nullable=False),
        Column("geom", Geometry(geometry_type)),
        Column("v_from", Integer, nullable=False),
        Column("v_to", Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    return current, history


def create(conn: Connection, key: str, geometry_type: str, title: str) -> None:
    current, history = tables(key, geometry_type)
    current.create(conn)
    history.create(conn)
    # identifier = the table name: unique, where a bare key could clash with a core table (e.g. "buildings").
    register_spatial_table(current.name, "geom", geometry_type, title, bind=conn)
    if storage_of(conn).rtree_index:
        create_geojson_table(conn, current.name)


def geojson_table(current_name: str) -> str:
    """The SQLite table of the prepared Feature texts of the layer table ``current_name`` (``layer_<key>``)."""
    return "geojson_" + current_name.removeprefix("layer_")


def create_geojson_table(conn: Connection, current_name: str) -> None:
    """The prepared texts' table and the triggers that drop a text when its row changes (SQLite)."""
    side = geojson_table(current_name)
    conn.exec_driver_sql(f'CREATE TABLE IF NOT EXISTS "{side}" (id INTEGER PRIMARY KEY, feature BLOB NOT NULL)')
    for event in ("UPDATE", "DELETE"):
        conn.exec_driver_sql(f'CREATE TRIGGER IF NOT EXISTS "{side}_{event.lower()}" AFTER {event} ON "{current_name}" '
                             f'BEGIN DELETE FROM "{side}" WHERE id = OLD.id; END')


def properties_bytes(text: str) -> bytes:
    """Stored properties as they are; Python's json wrote non-finite numbers as NaN/Infinity, which are not JSON:
    such text is parsed and written again (orjson makes them null, as the general path does)."""
    if "NaN" in text or "Infinity" in text:
        return orjson.dumps(json.loads(text))
    return text.encode()


def feature_texts(ids, fids, properties: list[str], geoms: np.ndarray) -> list[bytes]:
    """GeoJSON Feature texts (type, id, geometry, properties: the order the general path writes) of canonical
    (lon/lat) rows: the geometries in one vectorised GEOS call at full precision, properties as stored, the
    texts joined column by column by Arrow (a Python concatenation per row was most of an import's text cost)."""
    if not len(properties):
        return []
    parts = text_parts(fids, properties, geoms)
    return joined_texts(np.asarray(ids), parts).to_pylist()


class TextParts:
    """What a Feature text needs besides the row's id, prepared before the row is written: ``fid`` (the JSON string
    of the feature's fid; null where the row id stands in for it) and ``tail`` (``,"geometry":…,"properties":…}``).
    An import prepares them on its read-ahead thread (GEOS releases the GIL), so that only joining the ids, known
    once the rows are inserted, is left on the writing thread."""

    __slots__ = ("fid", "tail")

    def __init__(self, fid: pa.Array, tail: pa.Array):
        self.fid, self.tail = fid, tail

    def __len__(self) -> int:
        return len(self.tail)


def text_parts(fids, properties: list[str], geoms: np.ndarray) -> TextParts:
    """``TextParts`` of canonical (lon/lat) rows (every row; see ``texts_wanted`` for the rows whose text is stored)."""
    geojson = shapely.to_geojson(np.asarray(geoms, dtype=object)).tolist()
    tail = pc.binary_join_element_wise(
        _text(',"geometry":'), pc.fill_null(pa.array(geojson, pa.string()), _text("null")), _text(',"properties":'),
        _stored_properties(properties), _text("}"), _text(""))
    return TextParts(_json_strings(list(fids)), tail)


def joined_texts(ids: np.ndarray, parts: TextParts) -> pa.Array:
    """The Feature texts (binary) of rows with ``ids``: the id is the fid, or the row id as a string."""
    row_id = pc.binary_join_element_wise(_text('"'), _arrow(np.asarray(ids)).cast(pa.string()), _text('"'), _text(""))
    return pc.binary_join_element_wise(
        _text('{"type":"Feature","id":'), pc.coalesce(parts.fid, row_id), parts.tail, _text("")).cast(pa.binary())


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.string())  # typed: inferring the type makes pyarrow probe for pandas


def _json_strings(values: list) -> pa.Array:
    """JSON string literals, as orjson writes them (null stays null): quoted by Arrow; the rare value that needs
    escaping by orjson."""
    column = pa.array(values, pa.string())
    text = pc.binary_join_element_wise(_text('"'), column, _text('"'), _text(""))
    escape = pc.fill_null(pc.match_substring_regex(column, r'["\\\x00-\x1f]'), pa.scalar(False, pa.bool_()))
    if not pc.any(escape).as_py():
        return text
    out = text.to_pylist()
    for i in np.flatnonzero(escape.to_numpy(zero_copy_only=False)):
        out[i] = orjson.dumps(values[i]).decode()
    return pa.array(out, pa.string())


def _stored_properties(properties: list[str]) -> pa.Array:
    """``properties_bytes`` of every row: the text as stored, or written again where it holds NaN or Infinity."""
    column = pa.array(properties, pa.string())
    odd = pc.match_substring_regex(column, "NaN|Infinity")
    if not pc.any(odd).as_py():
        return column
    out = column.to_pylist()
    for i in np.flatnonzero(odd.to_numpy(zero_copy_only=False)):
        out[i] = properties_bytes(out[i]).decode()
    return pa.array(out, pa.string())


def texts_wanted(fids: list, geoms: np.ndarray) -> np.ndarray:
    """The rows whose text is stored: only those whose text is certain to equal what a reader writes from the
    stored row: a text (or no) fid, as SQLite keeps it, and a geometry that is missing or not empty (an empty one
    can come back from its blob as another type); the others are written per request."""
    geoms = np.asarray(geoms, dtype=object)
    fid_ok = np.array([f is None or isinstance(f, str) for f in fids], dtype=bool)
    return fid_ok & ~(shapely.is_geometry(geoms) & shapely.is_empty(geoms))


def text_rows(ids, fids: list, properties: list[str], geoms, parts: TextParts | None = None) -> list[tuple[int, bytes]]:
    """(id, Feature text) of the rows ``texts_wanted`` keeps, as ``write_texts`` stores them. ``parts``:
    ``text_parts`` of all the rows, when the caller prepared them already."""
    ids, geoms = np.asarray(ids), np.asarray(geoms, dtype=object)
    at = np.flatnonzero(texts_wanted(fids, geoms))
    if not len(at):
        return []
    if parts is None or len(parts) != len(ids):
        parts = text_parts([fids[i] for i in at], [properties[i] for i in at], geoms[at])
    elif len(at) < len(ids):
        take = _arrow(at)
        parts = TextParts(parts.fid.take(take), parts.tail.take(take))
    return list(zip(ids[at].tolist(), joined_texts(ids[at], parts).to_pylist()))


def write_texts(conn: Connection, current_name: str, ids, fids: list, properties: list[str], geoms,
                parts: TextParts | None = None, *, rows: Grouped | None = None) -> None:
    """Store the Feature texts of new rows (SQLite), of the rows ``texts_wanted`` keeps. ``parts``: ``text_parts``
    of all the rows, when the caller prepared them already; ``rows``: their ``text_rows``, ``grouped``, likewise."""
    rows = grouped(text_rows(ids, fids, properties, geoms, parts)) if rows is None else rows
    insert_grouped(conn, f'INSERT INTO "{geojson_table(current_name)}" (id, feature) VALUES ', "(?, ?)", rows)


def fill_texts(conn: Connection, current_name: str, batch: int = 20_000) -> int:
    """Write the Feature texts of the rows that have none (a layer stored before the texts existed); SQLite."""
    written, last = 0, 0
    while True:
        got = fill_some(conn, current_name, last, batch)
        if got is None:
            return written
        written, last = written + got[0], got[1]


def fill_some(conn: Connection, current_name: str, after: int, limit: int) -> tuple[int, int] | None:
    """Write the Feature texts of up to ``limit`` rows with ids above ``after`` that have none, in ``conn``'s
    transaction: (rows read, the last id read), or None when no such row is left (SQLite)."""
    side = geojson_table(current_name)
    rows = conn.exec_driver_sql(
        f'SELECT t.id, t.fid, t.properties, t.geom FROM "{current_name}" t LEFT JOIN "{side}" g ON g.id = t.id '
        f"WHERE t.id > ? AND g.id IS NULL ORDER BY t.id LIMIT ?", (after, limit)).all()
    if not rows:
        return None
    write_texts(conn, current_name, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                storage_of(conn).decode_geometries([r[3] for r in rows]))
    return len(rows), rows[-1][0]


class TextFiller:
    """Writes behind, on a thread of this process, the Feature texts of a layer's rows that have none (what a file
    import leaves), once a read has met such a row (``request``): one write transaction per ``chunk`` rows, so
    other writers wait at most one chunk (5,000 rows: ~0.04 s of CPU; 100,000 texts cost the server 0.8–1.1 s
    of CPU). Until then, and for the rows it does not reach, readers write the texts
    per request, so nothing a reader gets depends on it.

    Each chunk takes the store's write lock before it reads its rows (a no-op DELETE first: ``WriterConnection``
    then begins the transaction again as BEGIN IMMEDIATE), so no row can change between being read and its text
    being written: a text is always that of the row as it stands (the triggers drop it when the row changes
    later). Rows are filled in id order from the highest id this process has filled up to: an import's rows
    come above it (AUTOINCREMENT never reuses an id), while the rows below it that still lack a text (edited,
    restored by a rollback, or without a text of their own: ``texts_wanted``) stay per request, as before. A
    table made again under the same name (a layer deleted and created again) begins its ids anew: a fill that
    finds the table's highest id below the mark starts again from the first row."""

    def __init__(self, chunk: int = 5_000, recheck_s: float = 30.0):
        self.chunk, self.recheck_s = chunk, recheck_s
        self._lock = threading.Lock()
        self._running: set[tuple[str, str]] = set()
        self._started: dict[tuple[str, str], float] = {}
        #: (database, layer table) → the highest id this process has filled texts up to.
        self.filled: dict[tuple[str, str], int] = {}

    def request(self, engine, current_name: str, missing_ids) -> None:
        """A reader met the rows ``missing_ids`` of ``current_name`` without text: fill the layer's texts from the
        last id filled, unless that is running already. Ids all at or below the mark (rows edited since, or a
        table made again) start a fill at most every ``recheck_s`` seconds."""
        key, now = (str(engine.url), current_name), time.monotonic()
        with self._lock:
            if key in self._running:
                return
            if (max(missing_ids, default=0) <= self.filled.get(key, 0)
                    and now - self._started.get(key, -math.inf) < self.recheck_s):
                return
            self._running.add(key)
            self._started[key] = now
        threading.Thread(target=self._fill, args=(engine, current_name, key), name="ogc-feature-texts",
                         daemon=True).start()

    def _fill(self, engine, current_name: str, key: tuple[str, str]) -> None:
        try:
            with engine.connect() as conn:
                top = conn.exec_driver_sql(f'SELECT max(id) FROM "{current_name}"').scalar() or 0
            with self._lock:
                if top < self.filled.get(key, 0):  # the table was made again: its ids begin anew
                    self.filled[key] = 0
            while True:
                with engine.connect() as conn:
                    # The write lock before the read (see the class).
                    conn.exec_driver_sql(f'DELETE FROM "{geojson_table(current_name)}" WHERE id < 0')
                    got = fill_some(conn, current_name, self.filled.get(key, 0), self.chunk)
                    conn.commit()
                if got is None:
                    return
                with self._lock:
                    self.filled[key] = max(self.filled.get(key, 0), got[1])
        except Exception as exc:  # noqa: BLE001 - a cache: readers write what is missing, the next read asks again
            log.info("feature texts of %s not filled: %s", current_name, exc)
        finally:
            with self._lock:
                self._running.discard(key)

    def wait(self, timeout: float = 60.0) -> bool:
        """Until no fill runs (tests, benchmarks): whether they all ended within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if not self._running:
                    return True
            time.sleep(0.01)
        return False


#: This process's filler (the OGC bbox pages ask it).
TEXTS = TextFiller()


def drop(conn: Connection, key: str, geometry_type: str) -> None:
    current, history = tables(key, geometry_type)
    unregister_spatial_table(current.name, "geom", conn)
    if storage_of(conn).rtree_index:
        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{geojson_table(current.name)}"')
    history.drop(conn, checkfirst=True)
    current.drop(conn, checkfirst=True)


#: SQLite page cache during a bulk load, KiB: 256 MiB, bounded whatever the file's size.
BULK_CACHE_KIB = 262_144


class BulkWriter:
    """Fast inserts of new current rows for a bulk import, inside the caller's transaction: values are
    encoded once per batch and handed to the driver's executemany, past SQLAlchemy's per-row processing;
    on SQLite the R*Tree is filled from the batch's bounds (see ``core.bulk``)."""

    def __init__(self, conn: Connection, table: Table, *, texts: bool = True):
        self.conn, self.table = conn, table
        self.storage = storage_of(conn)
        #: SQLite: the rows' Feature texts written with them (an import leaves them to ``TextFiller``).
        self.texts = texts and self.storage.rtree_index
        self._suspension = rtree_trigger_suspended(conn, table.name)
        self.index_by_hand = False

    def __enter__(self) -> "BulkWriter":
        self.index_by_hand = self._suspension.__enter__()
        self._deferred_index, self._rtree = None, None
        if self.index_by_hand:  # into an empty R*Tree: packed once at the end (rtree_bulk), not entry by entry
            rtree = DeferredRtree(self.conn, self.table.name)
            self._rtree = rtree if rtree.usable else None
        # Into an empty table (a first import, or a replace after its rows went to history) a GiST index is built
        # once at the end, from sorted input, instead of row by row.
        self._deferred_index = self.storage.defer_spatial_index(self.conn, self.table.name)
        # A larger page cache for the load (SQLite): the table's and index's B-tree pages stay in memory.
        self._cache = self.storage.bulk_cache(self.conn, BULK_CACHE_KIB)
        self._cache.__enter__()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._rtree is not None:
            if exc_type is None:
                self._rtree.finish()
            else:  # the transaction is being abandoned; a temporary table goes with the connection's next use
                try:
                    self._rtree.discard()
                except Exception:  # noqa: BLE001 - cleanup on a failed load must not mask its error
                    pass
        if self._deferred_index and exc_type is None:
            self.storage.build_spatial_index(self.conn, self.table.name, self._deferred_index)
        self._cache.__exit__(exc_type, *exc)
        self._suspension.__exit__(exc_type, *exc)

    def next_id(self) -> int | None:
        """SQLite: the id the next inserted row gets (AUTOINCREMENT: one past the table's sequence); None elsewhere."""
        if not self.storage.rtree_index:
            return None
        name = self.table.name
        return (self.conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).scalar() or 0) + 1

    def insert(self, fids: list, properties: list, geoms: np.ndarray, version: int, *, source=None,
               prepared: "PreparedRows | None" = None) -> int:
        """Insert a batch; ``properties`` are dicts or JSON text already (imports encode them column-wise).
        ``source``: (the geometries as parsed from a file, the file's WKB as an Arrow array), from which the WKB of
        the geometries stored unchanged is written as it came instead of encoded again (``reusable_wkb``).
        ``prepared``: ``prepare_rows`` of this batch for this version, when the caller encoded it already (an import
        does, on its reading thread)."""
        if not len(properties):
            return 0
        if not isinstance(properties[0], str):
            properties = [json.dumps(p, ensure_ascii=False, separators=(",", ":")) for p in properties]
        geoms = np.asarray(geoms, dtype=object)
        name = self.table.name
        if prepared is None or prepared.version != version:
            prepared = prepare_rows(self.storage.rtree_index, fids, properties, geoms, version, source, texts=self.texts)
        if not self.storage.rtree_index:
            # COPY in the binary format, the batch's rows built column by column into one buffer (``copy_rows``):
            # no per-row call, no hex encoding for the server to decode.
            cursor = self.conn.connection.driver_connection.cursor()
            with cursor.copy(f"COPY {name} (fid, properties, geom, v_from) FROM STDIN (FORMAT binary)") as copy:
                for part in prepared.copy:
                    copy.write(part)
            return len(properties)
        # AUTOINCREMENT ids are consecutive inside our write transaction: the next ones follow the sequence.
        start = self.next_id() - 1
        # The rows and texts built on the reading thread hold the right ids if the sequence is where it was
        # predicted (``prepare_rows``'s ``first_id``); otherwise (another writer appended in between) they are
        # built again here.
        ahead = prepared.first_id == start + 1
        # The batch's one version in the statement, not bound again on every row.
        insert_grouped(self.conn, f"INSERT INTO {name} (fid, properties, geom, v_from) VALUES ", f"(?, ?, ?, {int(version)})",
                       prepared.rows if ahead else grouped(list(zip(fids, properties, prepared.blobs))))
        end = self.next_id() - 1
        if end - start != len(properties):
            raise RuntimeError(f"unexpected id sequence in {name}: {start} → {end} for {len(properties)} rows")
        ids = np.arange(start + 1, end + 1)
        if self.texts:
            write_texts(self.conn, name, ids, fids, properties, geoms, prepared.texts,
                        rows=prepared.text_rows if ahead else None)
        if self._rtree is not None:
            self._rtree.add(ids, geoms, bounds=prepared.bounds)
        elif self.index_by_hand:
            write_rtree(self.conn, name, ids, geoms)
        return len(properties)


class PreparedRows:
    """A batch's rows encoded for the store, ready for the writing thread: on PostgreSQL the binary COPY buffers
    (``copy``), on SQLite the GeoPackage blobs, the bounds (blobs' envelopes and R*Tree entries) and, with
    ``texts``, the ``TextParts`` of the Feature texts. Everything here depends on the batch alone (and the version it
    is written as), not on what is already stored, so an import makes it on its reading thread while the writing
    thread inserts the batch before (Arrow, GEOS and the WKB reuse release the GIL for most of it)."""

    __slots__ = ("version", "copy", "blobs", "bounds", "texts", "first_id", "rows", "text_rows")

    def __init__(self, version: int, *, copy=None, blobs=None, bounds=None, texts=None):
        self.version, self.copy, self.blobs, self.bounds, self.texts = version, copy, blobs, bounds, texts
        #: SQLite, with ``first_id``: the rows' parameters for the insert and their ``text_rows``, for ids from it.
        self.first_id, self.rows, self.text_rows = None, None, None


def prepare_rows(sqlite: bool, fids: list, properties: list[str], geoms: np.ndarray, version: int, source=None, *,
                 texts: bool = True, first_id: int | None = None) -> PreparedRows:
    """``PreparedRows`` of a batch (``properties`` as JSON text; ``source`` as for ``BulkWriter.insert``); ``texts``:
    also the Feature texts' parts (SQLite only). ``first_id`` (SQLite): the id the batch's first row will get
    (``BulkWriter.next_id`` plus the rows of the batches before it): then the insert's parameters and the complete
    Feature texts are built here too, so that the writing thread only hands them to SQLite."""
    geoms = np.asarray(geoms, dtype=object)
    wkb = reusable_wkb(geoms, source)
    if not sqlite:
        return PreparedRows(version, copy=copy_rows(fids, properties, geoms, version, wkb))
    bounds = shapely.bounds(geoms)  # once, for the blobs' envelopes and the R*Tree
    prepared = PreparedRows(version, blobs=gpkg_blobs(geoms, bounds=bounds, wkb=wkb), bounds=bounds,
                            texts=text_parts(fids, properties, geoms) if texts else None)
    if first_id is not None:
        prepared.first_id = first_id
        prepared.rows = grouped(list(zip(fids, properties, prepared.blobs)))
        if prepared.texts is not None:
            ids = np.arange(first_id, first_id + len(fids))
            prepared.text_rows = grouped(text_rows(ids, fids, properties, geoms, prepared.texts))
    return prepared


def reusable_wkb(geoms: np.ndarray, source) -> pa.Array | None:
    """The file's own WKB for the rows whose geometry is stored as it was parsed (the same object: no CRS
    transformation, repair or change of type replaced it) and whose bytes are plain 2D little-endian WKB (what
    ``shapely.to_wkb(byte_order=1, flavor="iso")`` writes for them); null for the other rows, None when no row
    qualifies. GDAL's Arrow reader gives the geometry as WKB already: encoding it again was the import's largest
    single step after the inserts."""
    parsed, wkb = source if source is not None else (None, None)
    if parsed is None or wkb is None or len(parsed) != len(geoms) or len(wkb) != len(geoms):
        return None
    same = np.fromiter(map(operator.is_, geoms, parsed), dtype=bool, count=len(geoms))
    same &= np.array([g is not None for g in geoms], dtype=bool)
    if not same.any():
        return None
    wkb = wkb.cast(pa.large_binary())
    n = len(wkb)
    _, offsets_buffer, data_buffer = wkb.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64, count=n + 1, offset=wkb.offset * 8)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, dtype=np.uint8)
    rows = np.flatnonzero(same & (np.diff(offsets) >= 5) & wkb.is_valid().to_numpy(zero_copy_only=False))
    at = offsets[rows]
    code = (data[at + 1].astype(np.uint32) | data[at + 2].astype(np.uint32) << 8 | data[at + 3].astype(np.uint32) << 16
            | data[at + 4].astype(np.uint32) << 24)
    rows = rows[(data[at] == 1) & (code >= 1) & (code <= 7)]  # little-endian; Point … GeometryCollection, no Z or M
    if not len(rows):
        return None
    keep = np.zeros(n, dtype=bool)
    keep[rows] = True
    return pc.if_else(_arrow(keep), wkb, pa.scalar(None, pa.large_binary()))


_GPKG_HEADER = np.dtype([("magic", "S2"), ("version", "u1"), ("flags", "u1"), ("srid", "<i4"), ("minx", "<f8"),
                         ("maxx", "<f8"), ("miny", "<f8"), ("maxy", "<f8")])


_LB = pa.large_binary()
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # PostgreSQL's binary COPY header: signature, flags, extension
_COPY_TRAILER = b"\xff\xff"


def _arrow(values: np.ndarray) -> pa.Array:
    """A NumPy bool or integer array as an Arrow array over the same memory. Not ``pa.array(ndarray)``: its
    masked-array check imports ``numpy.ma``, a fixed cost of every import for nothing."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        return pa.Array.from_buffers(pa.uint8(), len(values), [None, pa.py_buffer(values.view(np.uint8))]).cast(pa.bool_())
    values = values.astype(np.int64, copy=False)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def wkb_column(geoms: np.ndarray, given: pa.Array | None = None) -> pa.Array:
    """ISO WKB (little-endian) of every geometry as an Arrow array, null for None: ``given``'s bytes where it has
    them (``reusable_wkb``), the others encoded."""
    present = np.array([g is not None for g in geoms], dtype=bool)
    encode = present if given is None else present & given.is_null().to_numpy(zero_copy_only=False)
    if given is not None and not encode.any():
        return given.cast(_LB)
    body = np.full(len(geoms), None, dtype=object)
    body[encode] = shapely.to_wkb(geoms[encode], byte_order=1, flavor="iso")
    if given is not None:
        keep = given.is_valid().to_numpy(zero_copy_only=False)
        body[keep] = given.filter(_arrow(keep)).to_pylist()
    return pa.array(body.tolist(), _LB)


def _be_int32(values: np.ndarray) -> pa.Array:
    raw = np.asarray(values).astype(">i4").tobytes()
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), len(values), [None, pa.py_buffer(raw)]).cast(_LB)


def _field_length(column: pa.Array, extra: int = 0) -> pa.Array:
    """The length word of a binary COPY field: the value's size (+ ``extra`` bytes of prefix), -1 for NULL."""
    size = pc.fill_null(pc.binary_length(column), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return _be_int32(np.where(size >= 0, size + extra, -1))


def copy_rows(fids: list, properties: list[str], geoms: np.ndarray, version: int, wkb: pa.Array | None = None) -> list:
    """(fid text, properties jsonb, geom geometry, v_from int4) rows in PostgreSQL's binary COPY format: the
    signature, one buffer of every row joined by Arrow column by column, the trailer. The geometry goes as plain
    WKB: the column's type modifier gives it its SRID (PostGIS sets the column's SRID on a geometry that has none)."""
    fid = pa.array(fids, pa.string()).cast(_LB)
    props = pa.array(properties, pa.string()).cast(_LB)
    geom = wkb_column(geoms, wkb)
    rows = pc.binary_join_element_wise(
        pa.scalar(b"\x00\x04", _LB),  # four fields
        _field_length(fid), fid,
        _field_length(props, 1), pa.scalar(b"\x01", _LB), props,  # jsonb's binary form: version 1, then the text
        _field_length(geom), geom,
        pa.scalar(struct.pack(">ii", 4, version), _LB),
        pa.scalar(b"", _LB), null_handling="replace", null_replacement="")
    _, offsets, data = rows.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int64, count=len(rows) + 1, offset=rows.offset * 8)
    return [_COPY_SIGNATURE, memoryview(data)[int(bounds[0]):int(bounds[-1])], _COPY_TRAILER]


def gpkg_blobs(geoms: np.ndarray, srid: int = CANONICAL_SRID, *, bounds: np.ndarray | None = None,
               wkb: pa.Array | None = None) -> list:
    """GeoPackage geometry blobs (little-endian header with an xy envelope + ISO WKB) for a batch: the headers
    are one NumPy record array, joined to the WKB by Arrow in one pass. Empty geometries get no envelope, as the
    GeoPackage spec asks; None stays None. ``bounds``: ``shapely.bounds(geoms)`` when the caller has them; ``wkb``:
    the WKB of some rows already (``reusable_wkb``; null where it must be encoded)."""
    out: list = [None] * len(geoms)
    present = np.flatnonzero(np.array([g is not None for g in geoms], dtype=bool))
    if not len(present):
        return out
    chosen = geoms[present]
    empty = shapely.is_empty(chosen)
    if empty.any():  # rare: the general encoder handles the envelope-less header
        encoded = encode_many(chosen, "sqlite", srid)
        for i, blob in zip(present, encoded):
            out[i] = bytes(blob)
        return out
    header = np.zeros(len(chosen), dtype=_GPKG_HEADER)
    header["magic"], header["version"], header["flags"], header["srid"] = b"GP", 0, 0b00000011, srid
    box = shapely.bounds(chosen) if bounds is None else bounds[present]
    header["minx"], header["maxx"], header["miny"], header["maxy"] = box[:, 0], box[:, 2], box[:, 1], box[:, 3]
    headers = pa.FixedSizeBinaryArray.from_buffers(pa.binary(_GPKG_HEADER.itemsize), len(chosen),
                                                   [None, pa.py_buffer(header.tobytes())]).cast(pa.large_binary())
    given = wkb_column(chosen, wkb.take(_arrow(present)) if wkb is not None else None)
    blobs = pc.binary_join_element_wise(headers, given, pa.scalar(b"", pa.large_binary())).to_pylist()
    if len(present) == len(geoms):
        return blobs
    for i, blob in zip(present.tolist(), blobs):
        out[i] = blob
    return out

"""Ingest: validate observations, store them idempotently, keep rollups and datastream state, run the rules.

Two entry points share one write path (``write_batch``):

* ``Ingestor``: a bounded queue with one writer thread that groups submissions into transactions. A
  submission is acknowledged (its future resolves) only after the transaction that holds it committed.
  When the queue is full ``submit`` raises ``Backpressure`` (HTTP answers 503 + Retry-After; the MQTT
  bridge blocks its network loop, so the broker slows the publishers).
* STA ``POST /Observations`` writes in the request's own transaction (``post_process``).

Idempotency: ``(datastream_id, t_ms)`` is unique and inserts skip conflicts, so a resend stores nothing.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cityops.core.bus import publish
from cityops.core.db import begin_write
from cityops.core.errors import Busy, CityOpsError, InvalidInput, NotFound
from cityops.core.storage import storage_of, write_conflict
from cityops.core.types import JSONText
from cityops.sensing import catalog
from cityops.sensing.manifest import ObservationBatchStored
from cityops.sensing.models import Datastream, Thing
from cityops.sensing.timeseries import DAY, HOUR, LOCAL_OFFSET, MINUTE, ROLLUP_FOLD
from cityops.sensing.timeutil import now_ms, parse_instant, parse_time

log = logging.getLogger("cityops.sensing.ingest")

#: Oldest plausible observation, and how far in the future a device clock may run ahead.
EARLIEST_MS = parse_instant("2000-01-01T00:00:00Z")
FUTURE_SLACK_MS = 10 * 60 * 1000
_UTC_MICROS = pa.timestamp("us", tz="UTC")


class Backpressure(Busy):
    code = "ingest_busy"


@dataclass(frozen=True)
class StreamMeta:
    """What validation and rules need to know about a datastream (cached per process)."""

    id: int
    unit_path: str
    unit_code: str
    symbol: str
    numeric: bool
    low: float | None
    high: float | None
    device_type: str | None
    stream: str | None
    thing_id: int
    risk_point_code: str | None


@dataclass(slots=True)
class Row:
    datastream_id: int
    t_ms: int
    t_end_ms: int | None
    result_time_ms: int | None
    value: float | None
    result_json: Any = None


def meta_for(session: Session, ds: Datastream, thing: Thing | None = None) -> StreamMeta:
    thing = thing if thing is not None else session.get(Thing, ds.thing_id)
    stream = (ds.properties or {}).get("stream")
    low = high = None
    if thing.device_type and stream:
        spec = catalog.device_types()[thing.device_type].stream(stream)
        low, high = spec.range
    return StreamMeta(ds.id, ds.unit_path, thing.unit_code, ds.unit_of_measurement.get("symbol", ""),
                      ds.observation_type.endswith("OM_Measurement"), low, high, thing.device_type, stream, thing.id,
                      thing.risk_point_code)


class MetaCache:
    """Datastream metadata by id; a miss reads the database (new datastreams appear without restart)."""

    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions
        self._cache: dict[int, StreamMeta] = {}
        self._lock = threading.Lock()

    def get(self, ds_id: int) -> StreamMeta:
        meta = self._cache.get(ds_id)
        if meta is None:
            meta = self.get_many([ds_id]).get(ds_id)
            if meta is None:
                raise NotFound(f"unknown datastream {ds_id}")
        return meta

    def get_many(self, ids) -> dict[int, StreamMeta]:
        """The metadata of each of ``ids`` that exists (unknown ids are left out); the ones not cached yet are read
        in one query (a stream at a time was three round trips each: a bulk over 200 new streams after a start
        waited on 600 of them before its first observation was checked)."""
        cache = self._cache
        found = {i: cache[i] for i in ids if i in cache}
        missing = [i for i in ids if i not in found]
        if missing:
            with self.sessions() as session:
                read = {ds.id: meta_for(session, ds, thing) for ds, thing in session.execute(
                    select(Datastream, Thing).join(Thing, Thing.id == Datastream.thing_id)
                    .where(Datastream.id.in_(sorted(set(missing)))))}
            with self._lock:
                cache.update(read)
            found.update(read)
        return found

    def forget(self, ds_id: int | None = None) -> None:
        with self._lock:
            if ds_id is None:
                self._cache.clear()
            else:
                self._cache.pop(ds_id, None)


def check(meta: StreamMeta, result, phenomenon_time, result_time=None, unit: str | None = None, *, now: int | None = None) -> Row:
    """Validate one observation against its datastream; raises InvalidInput naming what is wrong (the message, and
    the field in ``details``)."""
    if unit is not None and unit != meta.symbol:
        raise InvalidInput(f"datastream {meta.id} records {meta.symbol!r}, the observation says {unit!r}", {"field": "unit"})
    if phenomenon_time is None:
        t_ms, t_end = now_ms(), None
    elif isinstance(phenomenon_time, (int, float)) and not isinstance(phenomenon_time, bool):
        t_ms, t_end = int(phenomenon_time), None
    else:
        try:
            t_ms, t_end = parse_time(phenomenon_time, "phenomenonTime")
        except InvalidInput as exc:
            exc.details = {"field": "phenomenonTime"}
            raise
    limit = (now or now_ms()) + FUTURE_SLACK_MS
    if t_ms < EARLIEST_MS or t_ms > limit:
        raise InvalidInput(f"phenomenonTime of datastream {meta.id} is implausible (before 2000 or more than 10 min ahead)",
                           {"field": "phenomenonTime"})
    try:
        rt = parse_instant(result_time, "resultTime") if isinstance(result_time, str) else None
    except InvalidInput as exc:
        exc.details = {"field": "resultTime"}
        raise
    if meta.numeric:
        if isinstance(result, bool) or not isinstance(result, (int, float)) or not math.isfinite(result):
            raise InvalidInput(f"datastream {meta.id} takes numeric results, got {result!r}", {"field": "result"})
        value = float(result)
        if meta.low is not None and not (meta.low <= value <= meta.high):
            raise InvalidInput(f"result {value} {meta.symbol} of datastream {meta.id} is outside the possible range "
                               f"[{meta.low}, {meta.high}]", {"field": "result"})
        return Row(meta.id, t_ms, t_end, rt, value)
    value = float(result) if isinstance(result, (int, float)) and not isinstance(result, bool) else None
    return Row(meta.id, t_ms, t_end, rt, value, None if value is not None else result)


#: Components a dataArray document may carry on the ingest paths (SensorThings 1.1 §10 dataArray).
DATA_ARRAY_COMPONENTS = {"phenomenonTime", "result", "resultTime"}


def expand_data_array(payload) -> list[dict]:
    """SensorThings dataArray documents (one, or a JSON array of them, as the body of CreateObservations) as
    observation objects for ``Ingestor.validate``: ``{"Datastream": {"@iot.id": 7}, "components":
    ["phenomenonTime", "result"], "dataArray": [["2026-07-20T01:00:00Z", 4.5], …]}``."""
    docs = payload if isinstance(payload, list) else [payload]
    items: list[dict] = []
    for k, doc in enumerate(docs):
        if not isinstance(doc, dict) or not isinstance(doc.get("components"), list) or not isinstance(doc.get("dataArray"), list):
            raise InvalidInput(f"dataArray document {k}: needs Datastream, components and dataArray")
        link = doc.get("Datastream")
        ds_id = link.get("@iot.id") if isinstance(link, dict) else None
        if type(ds_id) is not int:  # noqa: E721 - bool is an int subclass and no datastream id
            raise InvalidInput(f"dataArray document {k}: needs Datastream {{\"@iot.id\": <integer>}}")
        comps = doc["components"]
        unknown = [c for c in comps if c not in DATA_ARRAY_COMPONENTS]
        if unknown or "result" not in comps or len(set(comps)) != len(comps):
            raise InvalidInput(f"dataArray document {k}: components must include result and may be "
                               f"{sorted(DATA_ARRAY_COMPONENTS)}, got {comps!r}")
        n = len(comps)
        for j, values in enumerate(doc["dataArray"]):
            if not isinstance(values, list) or len(values) != n:
                raise InvalidInput(f"dataArray document {k}, row {j}: expected {n} values as in components")
            item = dict(zip(comps, values))
            item["datastream_id"] = ds_id
            items.append(item)
    if not items:
        raise InvalidInput("no observations")
    return items


# ------------------------------------------------------------------------------------------- write path

def foi_for(session: Session, ds_id: int, cache: dict | None = None) -> int | None:
    """The FeatureOfInterest of observations that name none: made (once) from the Thing's Location."""
    return fois_for(session, [ds_id], cache).get(ds_id)


def fois_for(session: Session, ds_ids, cache: dict | None = None) -> dict[int, int | None]:
    """``foi_for`` of many datastreams: those not in ``cache`` resolved in three queries whatever their number (the
    Things' first Locations, their features, the Locations still without one), the missing features made in one
    flush. Only features already stored before this transaction go into ``cache``: one made here is found by the
    next batch's query once committed, and a rolled-back one is never remembered."""
    from cityops.sensing.models import FeatureOfInterest, Location, ThingLocation

    cache = {} if cache is None else cache
    out = {d: cache[d] for d in ds_ids if d in cache}
    missing = sorted({d for d in ds_ids if d not in out})
    if not missing:
        return out
    first_location: dict[int, int] = {}  # datastream → its Thing's Location with the lowest id
    for ds_id, loc_id in session.execute(select(Datastream.id, ThingLocation.location_id)
                                         .join(ThingLocation, ThingLocation.thing_id == Datastream.thing_id)
                                         .where(Datastream.id.in_(missing))):
        if ds_id not in first_location or loc_id < first_location[ds_id]:
            first_location[ds_id] = loc_id
    locations = sorted(set(first_location.values()))
    feature: dict[int, int] = {}
    if locations:
        feature = dict(session.execute(select(FeatureOfInterest.location_id, func.min(FeatureOfInterest.id))
                                       .where(FeatureOfInterest.location_id.in_(locations))
                                       .group_by(FeatureOfInterest.location_id)).all())
    stored = dict(feature)
    new = [loc for loc in locations if loc not in feature]
    if new:
        made = {loc.id: FeatureOfInterest(name=loc.name, description=loc.description, encoding_type=loc.encoding_type,
                                          feature=loc.location, location_id=loc.id, unit_path=loc.unit_path)
                for loc in session.scalars(select(Location).where(Location.id.in_(new)))}
        session.add_all(made.values())
        session.flush()
        feature.update({loc_id: foi.id for loc_id, foi in made.items()})
    for ds_id in missing:
        loc_id = first_location.get(ds_id)
        out[ds_id] = feature.get(loc_id) if loc_id is not None else None
        if loc_id in stored:
            cache[ds_id] = stored[loc_id]
    return out


_STAGE_COLUMNS = "datastream_id, t_ms, t_end_ms, result_time_ms, result_num, result_json, foi_id"


def _insert(session: Session, rows: list[Row], fois: dict[int, int | None],
            ids: bool = True) -> tuple[list[tuple[int, int, int]] | None, bool]:
    """Insert, skipping resends; returns (id, datastream_id, t_ms) of the rows actually stored — or None when every
    row was stored and ``ids`` was not asked for — and whether the datastreams' state and the rollups already follow
    them (the PostgreSQL statement keeps both)."""
    if storage_of(session).arrays:
        return _insert_arrays(session, rows, fois, ids), True
    return _insert_sqlite(session, rows, fois, ids), False


#: Rows per SQLite INSERT: 7 parameters each, under SQLite's limit of 32,766 variables a statement.
_SQLITE_ROWS_PER_INSERT = 4_000


@lru_cache(maxsize=8)
def _sqlite_insert_sql(n: int) -> str:
    return (f"INSERT INTO sta_observations ({_STAGE_COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?)"] * n)
            + " ON CONFLICT (datastream_id, t_ms) DO NOTHING")


def _insert_sqlite(session: Session, rows: list[Row], fois: dict[int, int | None],
                   ids: bool) -> list[tuple[int, int, int]] | None:
    """SQLite: multi-row INSERT … ON CONFLICT DO NOTHING on the driver's cursor, in the session's transaction.
    SQLAlchemy's insertmanyvalues does the same statements but builds a parameter dict per row and processes it
    per column: that was a third of the ingest writer's time.

    No RETURNING: it had SQLite keep every stored row aside and Python build a tuple of each (a third of the
    statement's time, 165 → 114 ms for 10,000 rows). The statements' change counts say whether every row was
    stored; only when one was a resend, or the ids are asked for, are the stored rows read back — those with an
    id above the largest before the insert (``id`` is the rowid: SQLite gives new rows the next ones), which is
    exact because this transaction holds the store's write lock from before that read to its commit."""
    begin_write(session)
    cur = session.connection().connection.driver_connection.cursor()
    before = cur.execute("SELECT coalesce(max(id), 0) FROM sta_observations").fetchone()[0]
    to_text, dialect = JSONText().process_bind_param, session.get_bind().dialect
    count = 0
    for k in range(0, len(rows), _SQLITE_ROWS_PER_INSERT):
        part = rows[k:k + _SQLITE_ROWS_PER_INSERT]
        params: list = []
        add = params.extend
        for r in part:
            add((r.datastream_id, r.t_ms, r.t_end_ms, r.result_time_ms, r.value,
                 None if r.result_json is None else to_text(r.result_json, dialect), fois.get(r.datastream_id)))
        cur.execute(_sqlite_insert_sql(len(part)), params)
        count += cur.rowcount  # rows stored: a conflict that does nothing is not counted
    if count == len(rows) and not ids:
        return None
    return cur.execute("SELECT id, datastream_id, t_ms FROM sta_observations WHERE id > ? ORDER BY id", (before,)).fetchall()


#: The PostgreSQL write of a batch, one statement: the rows come as one array per column (``unnest … WITH
#: ORDINALITY``: no staging table, no COPY, so the batch is one round trip where it was four — the staging table's
#: DDL, the COPY's start and end, the statement), are inserted (``{conflict}``: see ``_insert_arrays``), the
#: datastreams' time bounds and latest value are moved by what was stored (``timeseries.update_stream_state`` in SQL:
#: it was a pipelined UPDATE per datastream, the statement the batch waited on longest), and what was stored is
#: folded into the 1m/1h/1d rollups (``timeseries.update_rollups`` in SQL: the Python pass over every row and its own
#: round trip were a fifth of a batch together with the state). Each part sees only what was stored, so resends count
#: nothing; the three tiers' keys are distinct, as one ON CONFLICT DO UPDATE requires.
_PG_STORE_TEMPLATE = f"""
WITH staged AS (
    SELECT * FROM unnest(%(d)s::integer[], %(t)s::bigint[], %(te)s::bigint[], %(rt)s::bigint[], %(v)s::float8[],
                         %(j)s::text[], %(f)s::integer[]) WITH ORDINALITY
        AS s(datastream_id, t_ms, t_end_ms, result_time_ms, result_num, result_json, foi_id, n)),
ins AS (
    INSERT INTO sta_observations ({_STAGE_COLUMNS})
    SELECT datastream_id, t_ms, t_end_ms, result_time_ms, result_num, result_json::jsonb, foi_id FROM staged ORDER BY n
    {{conflict}} RETURNING id, datastream_id, t_ms, t_end_ms, result_num),
per AS (
    SELECT datastream_id, min(t_ms) AS lo, max(coalesce(t_end_ms, t_ms)) AS hi, max(t_ms) AS t,
           (array_agg(result_num ORDER BY t_ms DESC))[1] AS v
    FROM ins GROUP BY datastream_id),
state AS (
    UPDATE sta_datastreams d SET
        phenomenon_start_ms = CASE WHEN d.phenomenon_start_ms IS NULL OR d.phenomenon_start_ms > per.lo THEN per.lo
                                   ELSE d.phenomenon_start_ms END,
        phenomenon_end_ms = CASE WHEN d.phenomenon_end_ms IS NULL OR d.phenomenon_end_ms < per.hi THEN per.hi
                                 ELSE d.phenomenon_end_ms END,
        last_value = CASE WHEN d.last_ms IS NULL OR d.last_ms <= per.t THEN per.v ELSE d.last_value END,
        last_ms = CASE WHEN d.last_ms IS NULL OR d.last_ms < per.t THEN per.t ELSE d.last_ms END
    FROM per WHERE d.id = per.datastream_id RETURNING 1),
minute AS (
    SELECT datastream_id, (t_ms / {MINUTE}) * {MINUTE} AS b, min(result_num) AS lo, max(result_num) AS hi,
           sum(result_num) AS s, count(*) AS c
    FROM ins WHERE result_num IS NOT NULL GROUP BY 1, 2),
rollups AS (
    INSERT INTO sensing_rollups (datastream_id, tier, bucket_ms, vmin, vmax, vsum, vcount)
    SELECT datastream_id, '1m', b, lo, hi, s, c FROM minute
    UNION ALL
    SELECT datastream_id, '1h', (b / {HOUR}) * {HOUR}, min(lo), max(hi), sum(s), sum(c) FROM minute GROUP BY 1, 3
    UNION ALL
    SELECT datastream_id, '1d', ((b + {LOCAL_OFFSET}) / {DAY}) * {DAY} - {LOCAL_OFFSET}, min(lo), max(hi), sum(s), sum(c)
    FROM minute GROUP BY 1, 3
    {ROLLUP_FOLD.format(lo="least", hi="greatest")}
    RETURNING 1)
{{result}}"""
_IDS = "SELECT id, datastream_id, t_ms FROM ins"
#: Skipping resends (in batch order, so duplicates inside a batch keep the first): the statement for any batch.
_PG_STORE = _PG_STORE_TEMPLATE.format(conflict="ON CONFLICT (datastream_id, t_ms) DO NOTHING", result=_IDS)
#: A plain insert: for a batch of only new observations, the common case. ON CONFLICT's speculative insertion (the
#: unique index probed, then the row inserted with a token, then confirmed) cost the server a third more than the
#: plain insert; a batch that does hold a resend fails here with a unique violation and goes through ``_PG_STORE``.
_PG_STORE_NEW = _PG_STORE_TEMPLATE.format(conflict="", result=_IDS)
#: The same, answering only how many were stored: when nobody needs the ids (the MQTT bridge's notifications do),
#: the 10,000 rows of a batch are neither sent back nor turned into tuples.
_PG_STORE_NEW_COUNT = _PG_STORE_TEMPLATE.format(conflict="", result="SELECT count(*) FROM ins")


def _insert_arrays(session: Session, rows: list[Row], fois: dict[int, int | None],
                   ids: bool = True) -> list[tuple[int, int, int]] | None:
    """PostgreSQL: the batch as one array per column in one statement that inserts, returns what was stored and keeps
    the datastreams' state and the rollups: one round trip a batch. First as a plain insert behind a savepoint
    (``_PG_STORE_NEW``); on a unique violation — a resend, or a key twice in the batch — back to the savepoint and
    the statement that skips conflicts (``_PG_STORE``): idempotent either way. The numeric columns travel as binary
    arrays built by NumPy (``Storage.array_param``); a column with no value in any row as one NULL. Without
    ``ids`` a batch stored whole answers None (the resend path always reads the keys: they say what was new)."""
    storage = storage_of(session)
    ds = [r.datastream_id for r in rows]
    values = [r.value for r in rows]
    foi = [fois.get(d) for d in ds]
    params = {"d": storage.array_param(ds, "int4"), "t": storage.array_param([r.t_ms for r in rows], "int8"),
              "te": _nullable([r.t_end_ms for r in rows]), "rt": _nullable([r.result_time_ms for r in rows]),
              "v": values if None in values else storage.array_param(values, "float8"),
              "j": _nullable([None if r.result_json is None else json.dumps(r.result_json, ensure_ascii=False) for r in rows]),
              "f": foi if None in foi else storage.array_param(foi, "int4")}
    cur = storage.array_cursor(session)
    cur.execute("SAVEPOINT cityops_ingest")
    try:
        cur.execute(_PG_STORE_NEW if ids else _PG_STORE_NEW_COUNT, params)
    except psycopg.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT cityops_ingest")
        cur.execute(_PG_STORE, params)
    else:
        if not ids:
            stored = cur.fetchone()[0]
            if stored != len(rows):  # a plain insert stores every row or fails
                raise RuntimeError(f"ingest batch: {stored} of {len(rows)} rows stored")
            return None
    return cur.fetchall()  # tuples straight from the driver (a Result row at a time was 8 % of a batch)


def _nullable(column: list) -> list | None:
    """A column for the driver: None (one NULL array: ``unnest`` pads it) when no row has a value."""
    return None if column.count(None) == len(column) else column


@dataclass
class BatchResult:
    #: (id, datastream_id, t_ms) of the observations stored (resends are not in it); empty when the ids were not
    #: asked for (``write_batch(ids=False)``)
    inserted: list[tuple[int, int, int]]
    #: alarm keys raised or cleared: (key, severity or None)
    changes: list
    fois: dict[int, int | None]


def write_batch(session: Session, rows: list[Row], metas: dict[int, StreamMeta], engine_state: "Any" = None,
                ids: bool = True) -> BatchResult:
    """Store ``rows`` (resends skipped), then rollups, datastream state and rules for what was stored.
    ``ids``: whether ``BatchResult.inserted`` must hold the stored observations' ids (the MQTT notifications).
    The caller commits."""
    if not rows:
        return BatchResult([], [], {})
    cache = engine_state.fois if engine_state is not None else {}
    fois = fois_for(session, list(metas), cache)
    inserted, state_kept = _insert(session, rows, fois, ids)
    if inserted is None:  # all stored, ids not read
        inserted = []
    elif len(inserted) < len(rows):  # resends: only what is new feeds rollups and rules
        # Each stored key once (the first occurrence is the one stored, when a batch repeats it): the rollups
        # fold rows in, so a key counted twice would count twice.
        new = {(ds, t) for _, ds, t in inserted}
        kept = []
        for r in rows:
            key = (r.datastream_id, r.t_ms)
            if key in new:
                new.discard(key)
                kept.append(r)
        rows = kept
    changes = post_process(session, rows, metas, kept=state_kept) if rows else []
    return BatchResult(inserted, changes, fois)


def post_process(session: Session, rows: list[Row], metas: dict[int, StreamMeta], *, kept: bool = False) -> list:
    """Rollups and datastream state (unless the insert's statement kept them: ``kept``) and rules for stored
    ``rows``; the ``observation.batch_stored`` event (other capabilities react to new observations through it: the warning
    models re-evaluate the risk points the rows feed)."""
    from cityops.sensing import rules, timeseries

    publish(session, ObservationBatchStored(datastream_ids=sorted({r.datastream_id for r in rows}), count=len(rows),
                                            newest_ms=max(r.t_ms for r in rows)))
    if not kept:
        timeseries.update_rollups(session, rows)
        timeseries.update_stream_state(session, rows)
    return rules.evaluate(session, rows, metas)


# ---------------------------------------------------------------------------------------------- Ingestor

@dataclass
class _Item:
    rows: list[Row]
    metas: dict[int, StreamMeta]
    future: Future
    enqueued: float


#: Tries of one batch that a concurrent transaction rolled back (``core.storage.write_conflict``).
WRITE_ATTEMPTS = 3


class Ingestor:
    """Bounded queue + one writer thread. ``capacity`` counts observations, not submissions."""

    def __init__(self, sessions: sessionmaker[Session], capacity: int = 500_000, max_batch: int = 50_000,
                 registry=None):
        self.sessions = sessions
        self.capacity = capacity
        self.max_batch = max_batch
        self.metas = MetaCache(sessions)
        self._q: queue.Queue[_Item | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        #: Who hears of each committed batch (rows, metas, result), on the writer thread after the acknowledgements:
        #: the MQTT bridge's notifier (``attach_notifier``), which must not block. One owner, attached and detached
        #: by it, not a list anyone appends to; other capabilities hear of stored observations through the
        #: ``observation.batch_stored`` event, written in the batch's transaction.
        self._notifier = None
        from cityops.sensing.rules import EngineState

        self.state = EngineState()
        self.committed_total = 0
        self.lag_seconds = 0.0
        self._metrics(registry)

    def attach_notifier(self, notifier) -> None:
        """Hand every committed batch to ``notifier(rows, metas, result)`` (the MQTT bridge publishing the stored
        observations). One bridge per process notifies: a bridge built later takes over."""
        if self._notifier is not None and self._notifier != notifier:
            log.warning("a second MQTT bridge on this ingestor takes over the notifications of stored observations")
        self._notifier = notifier

    def detach_notifier(self, notifier) -> None:
        if self._notifier == notifier:
            self._notifier = None

    def _metrics(self, registry) -> None:
        self._gauge_pending = self._counter = self._lag = None
        if registry is None:
            return
        from prometheus_client import Counter, Gauge

        self._gauge_pending = Gauge("cityops_sensing_ingest_pending", "Observations queued, not yet committed", registry=registry)
        self._gauge_pending.set_function(lambda: self._pending)
        Gauge("cityops_sensing_ingest_capacity", "Ingest queue capacity (observations)", registry=registry).set(self.capacity)
        self._counter = Counter("cityops_sensing_ingest_committed", "Observations committed (resends included)", registry=registry)
        self._lag = Gauge("cityops_sensing_ingest_lag_seconds", "Age of the oldest submission in the last committed batch",
                          registry=registry)
        self._rejected = Counter("cityops_sensing_ingest_rejected", "Submissions refused with back-pressure", registry=registry)

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sensing-ingest", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop = True
        self._q.put(None)
        if self._thread:
            self._thread.join(timeout)
            self._thread = None

    def validate(self, items: list[dict], scope=None) -> tuple[list[Row], dict[int, StreamMeta]]:
        """Check a whole submission; any bad observation rejects it all (InvalidInput names which, by its index in
        the message and ``details``, and the field). The common submission — numeric readings at ISO instants,
        nothing else — is checked a column at a time (``_validate_columns``); anything else, or anything that
        fails there, goes through the per-observation path, which finds the first bad one and words its error."""
        rows = self._validate_columns(items, scope)
        if rows is not None:
            return rows
        return self._validate_items(items, scope)

    def _validate_columns(self, items: list, scope) -> tuple[list[Row], dict[int, StreamMeta]] | None:
        """The common submission as columns: types checked over each column at once, the times parsed by Arrow's
        ISO 8601 reader in one call (it takes only instants with a zone, as ``parse_instant`` requires), the
        plausible-time window and each stream's range compared in NumPy. None: not the common shape, or some
        observation fails (the per-observation path then says which and why); nothing is judged twice
        differently, since both paths apply the same rules."""
        if not items or set(map(type, items)) != {dict} or set(map(len, items)) != {3}:
            return None
        try:
            ds = [o["datastream_id"] for o in items]
            times = [o["phenomenonTime"] for o in items]
            results = [o["result"] for o in items]
        except KeyError:
            return None
        if set(map(type, ds)) != {int} or set(map(type, times)) != {str} or not set(map(type, results)) <= {float, int}:
            return None
        try:
            ds_arr = np.array(ds, dtype=np.int64)
            values = np.array(results, dtype=np.float64)
        except OverflowError:
            return None
        streams, which = np.unique(ds_arr, return_inverse=True)
        stream_ids = streams.tolist()
        metas = self.metas.get_many(stream_ids)
        if len(metas) != len(stream_ids):
            return None  # an unknown datastream: the per-observation path names it
        metas = {ds_id: metas[ds_id] for ds_id in stream_ids}
        for meta in metas.values():
            if not meta.numeric or (scope is not None and not scope.covers(meta.unit_path)):
                return None
        try:
            us = pc.cast(pa.array(times, pa.string()), _UTC_MICROS).cast(pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        t_ms = np.rint(us / 1000.0).astype(np.int64)  # round half to even, as check's round(timestamp * 1000)
        if t_ms.min() < EARLIEST_MS or t_ms.max() > now_ms() + FUTURE_SLACK_MS or not np.isfinite(values).all():
            return None
        per = list(metas.values())
        low = np.array([-np.inf if m.low is None else m.low for m in per])[which]
        high = np.array([np.inf if m.high is None else m.high for m in per])[which]
        if not ((values >= low) & (values <= high)).all():
            return None
        return list(map(Row, ds, t_ms.tolist(), repeat(None), repeat(None), values.tolist())), metas

    def _validate_items(self, items: list, scope) -> tuple[list[Row], dict[int, StreamMeta]]:
        """Observation by observation: the path of everything unusual (intervals, resultTime, unit, text results),
        and the one that names the first bad observation."""
        rows, metas, now = [], {}, now_ms()
        append = rows.append
        # the streams named, read into the cache at once (what is wrong with any of them is found below)
        self.metas.get_many({ds for ds in (item.get("datastream_id") for item in items if isinstance(item, dict))
                             if type(ds) is int})  # noqa: E721 - bool is an int subclass
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise InvalidInput("an observation must be an object")
                ds_id = item.get("datastream_id")
                if ds_id is None:
                    link = item.get("Datastream")
                    ds_id = link.get("@iot.id") if isinstance(link, dict) else None
                if type(ds_id) is not int:  # noqa: E721 - bool is an int subclass and no datastream id
                    raise InvalidInput("datastream_id (an integer) is required", {"field": "datastream_id"})
                meta = metas.get(ds_id)
                if meta is None:
                    try:
                        meta = self.metas.get(ds_id)
                        if scope is not None and not scope.covers(meta.unit_path):
                            raise NotFound(f"unknown datastream {ds_id}")
                    except NotFound as exc:
                        exc.details = {"field": "datastream_id"}
                        raise
                    metas[ds_id] = meta
                append(check(meta, item.get("result"), item.get("phenomenonTime"), item.get("resultTime"), item.get("unit"),
                             now=now))
            except CityOpsError as exc:
                exc.message = f"observation {i}: {exc.message}"
                exc.details = {**(exc.details if isinstance(exc.details, dict) else {}), "observation": i}
                raise
        return rows, metas

    def submit(self, rows: list[Row], metas: dict[int, StreamMeta], block: bool = False,
               over_capacity: bool = False) -> Future:
        """Queue validated rows; the future resolves after their commit. Full → Backpressure (or wait when ``block``:
        in-process feeders such as the benchmark).

        ``over_capacity``: queue even when full, for a caller that bounds what it holds itself (the MQTT bridge:
        its in-flight window); others then find the queue full until the writer catches up."""
        n = len(rows)
        if n > self.capacity:
            raise InvalidInput(f"a submission holds at most {self.capacity} observations")
        with self._lock:
            while self._pending + n > self.capacity and not over_capacity:
                if not block:
                    if self._counter is not None:
                        self._rejected.inc()
                    raise Backpressure(f"ingest queue full ({self._pending} of {self.capacity} observations pending); retry shortly",
                                       {"pending": self._pending, "capacity": self.capacity})
                self._lock.wait(1.0)
            self._pending += n
        fut: Future = Future()
        self._q.put(_Item(rows, metas, fut, time.monotonic()))
        return fut

    def _run(self) -> None:
        while not self._stop:
            item = self._q.get()
            if item is None:
                break
            batch = [item]
            size = len(item.rows)
            while size < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._stop = True
                    break
                batch.append(nxt)
                size += len(nxt.rows)
            self._write(batch, size)

    def _write(self, batch: list[_Item], size: int) -> None:
        rows = [r for it in batch for r in it.rows]
        metas = {}
        for it in batch:
            metas.update(it.metas)
        result = None
        try:
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                try:
                    with self.sessions() as session:
                        result = write_batch(session, rows, metas, self.state, ids=self._notifier is not None)
                        session.commit()
                    break
                except Exception as exc:
                    # Crossed by a concurrent transaction (another worker's, a bus consumer's) and rolled back
                    # whole: the same batch again (resends inside it are recognised as before).
                    if attempt == WRITE_ATTEMPTS or not write_conflict(exc):
                        raise
                    log.warning("ingest batch crossed a concurrent write (%s); writing it again", exc.__class__.__name__)
        except Exception as exc:  # the whole batch failed: every submitter hears it, nothing is acknowledged
            log.exception("ingest batch failed")
            for it in batch:
                it.future.set_exception(exc)
        else:
            self.committed_total += size
            self.lag_seconds = time.monotonic() - batch[0].enqueued
            if self._counter is not None:
                self._counter.inc(size)
                self._lag.set(self.lag_seconds)
            for it in batch:
                it.future.set_result(len(it.rows))
            notifier = self._notifier
            if notifier is not None:
                try:
                    notifier(rows, metas, result)
                except Exception:  # a notification failure must not undo an acknowledged write
                    log.exception("notifying committed observations failed")
        finally:
            with self._lock:
                self._pending -= size
                self._lock.notify_all()

"""Storage on both backends: schema, GeoPackage validity, append-only audit, identical spatial predicates."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pyogrio
import pytest
import shapely
from shapely.geometry import MultiPolygon, box
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from cityops.core import audit
from cityops.core.crs import to_metric
from cityops.core.db import current_revision, head_revision, migrate
from cityops.core.spatial import buffer_m, spatial_filter
from cityops.org.models import Unit


def test_migrations_reach_head_and_are_idempotent(store):
    assert current_revision(store.engine) == head_revision(store.engine)
    migrate(store.engine)  # a second run changes nothing and does not fail
    assert current_revision(store.engine) == head_revision(store.engine)


def test_geometry_round_trips_exactly(store):
    geom = MultiPolygon([box(108.1, 31.1, 108.2, 31.2), box(108.3, 31.1, 108.31, 31.12)])
    with store.sessions() as session:
        session.add(Unit(code="500154", name="开州区", level="district", path="/500154/", attributes={}, geom=geom))
        session.commit()
    with store.sessions() as session:
        stored = session.scalar(select(Unit.geom).where(Unit.code == "500154"))
    assert shapely.to_wkb(stored) == shapely.to_wkb(geom)


def test_audit_log_is_append_only(store):
    with store.sessions() as session:
        audit.record(session, audit.Actor("tester"), "probe", "thing", "1", after={"x": 1})
        session.commit()
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with store.engine.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text(statement))
    with store.sessions() as session:
        assert session.scalar(text("SELECT actor FROM audit_log")) == "tester"


def test_embedded_database_is_a_geopackage_gdal_reads(demo_store):
    if demo_store.backend != "sqlite":
        pytest.skip("the GeoPackage file is the embedded backend's")
    path = demo_store.settings.data_dir / "cityops.gpkg"
    with demo_store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        assert conn.exec_driver_sql("PRAGMA application_id").scalar() == 0x47504B47
        n_units = conn.execute(text("SELECT count(*) FROM units")).scalar()
        n_spatial = conn.execute(text("SELECT count(*) FROM units WHERE geom IS NOT NULL")).scalar()
        n_rtree = conn.execute(text("SELECT count(*) FROM rtree_units_geom")).scalar()
    assert n_spatial == n_rtree > 0
    info = pyogrio.read_info(path, layer="units")
    assert info["crs"] == "EPSG:4490"
    assert info["geometry_type"] == "MultiPolygon"
    assert info["features"] == n_units
    assert info["capabilities"]["fast_spatial_filter"]
    # GDAL's spatial filter runs on our R*Tree and finds the same units as a brute-force check.
    with demo_store.sessions() as session:
        village = session.scalar(select(Unit).where(Unit.level == "village").order_by(Unit.code))
        all_units = session.execute(select(Unit.code, Unit.geom).where(Unit.geom.is_not(None))).all()
    bbox = village.geom.bounds
    _, _, geometry, fields = pyogrio.raw.read(path, layer="units", bbox=bbox, columns=["code"])
    expected = {code for code, geom in all_units if geom.intersects(box(*bbox))}
    assert set(fields[0]) == expected


def _reference(all_units, predicate, geom, distance_m=None, metric_crs="EPSG:4545"):
    if predicate == "dwithin":
        m = to_metric(geom, metric_crs)
        return sorted(code for code, g in all_units if to_metric(g, metric_crs).distance(m) <= distance_m)
    fn = getattr(shapely, predicate)
    return sorted(code for code, g in all_units if fn(g, geom))


@pytest.mark.parametrize("predicate", ["intersects", "within", "contains", "dwithin"])
def test_spatial_predicates_identical_on_both_backends(demo_store, predicate):
    """Each backend must return exactly the brute-force Shapely answer, hence the same as each other."""
    with demo_store.sessions() as session:
        all_units = session.execute(select(Unit.code, Unit.geom).where(Unit.geom.is_not(None))).all()
        village = session.scalar(select(Unit).where(Unit.level == "village").order_by(Unit.code).offset(3))
        centre = village.geom.representative_point()
        queries = {
            "intersects": buffer_m(centre, 1500, demo_store.org.metric_crs),
            "within": buffer_m(village.geom, 10, demo_store.org.metric_crs),
            "contains": centre,
            "dwithin": centre,
        }
        geom = queries[predicate]
        distance = 800.0 if predicate == "dwithin" else None
        rows = spatial_filter(session, Unit, select(Unit), predicate, geom, distance_m=distance,
                              metric_crs=demo_store.org.metric_crs)
    got = sorted(u.code for u in rows)
    assert got == _reference(all_units, predicate, geom, distance)
    assert got, "the query should match something"


def test_wal_mode_on_embedded_backend(store):
    if store.backend != "sqlite":
        pytest.skip("SQLite only")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_row_sets_answer_as_the_statements_one_by_one(demo_store):
    """``Storage.row_sets`` (one round trip on PostgreSQL, the rows through JSON) gives each statement's rows with
    their types: JSON columns decoded, floats to the last bit, booleans, NULLs, an empty result."""
    from sqlalchemy import Float, literal

    from cityops.core.storage import storage_of
    from cityops.housing.models import Building, Resident

    statements = [
        select(Building.id, Building.code, Building.height_m, Building.attributes, Building.safety_grade, Building.name)
        .order_by(Building.id).limit(60),
        select(Resident.id, Resident.elderly, Resident.child, Resident.phone, Resident.birth_year).order_by(Resident.id).limit(60),
        select(Building.id).where(Building.id < 0),
        select(literal(0.1 + 0.2, Float(53)).label("x"), literal(2 / 3 * 1e-7, Float(53)).label("y")),
    ]
    with demo_store.sessions() as session:
        conn = session.connection()
        got = storage_of(conn).row_sets(conn, statements)
        want = [conn.execute(stmt).all() for stmt in statements]
    assert [len(rows) for rows in got] == [60, 60, 0, 1]
    for rows, expected in zip(got, want):
        assert [tuple(r) for r in sorted(rows, key=lambda r: r[0])] == [tuple(r) for r in sorted(expected, key=lambda r: r[0])]
    assert {r.code for r in got[0]} == {r.code for r in want[0]}
    assert any(r.name is None for r in got[0]) and all(isinstance(r.attributes, dict) for r in got[0])
    assert got[3][0].x == 0.1 + 0.2 and got[3][0].y == 2 / 3 * 1e-7


def test_bbox_undecided_decides_by_index_boxes_within_the_inner_box(demo_store):
    """``Storage.bbox_undecided`` (built once, boxes bound per run): every building whose footprint's envelope meets
    the box comes back once; one flagged inside has its footprint within the inner box and no envelope; every
    other has an envelope holding its footprint's; the same flags on both backends' index boxes."""
    import math

    import numpy as np

    from cityops.core.storage import storage_of
    from cityops.housing.models import Building

    with demo_store.sessions() as session:
        conn = session.connection()
        storage = storage_of(conn)
        stmt = storage.bbox_undecided(select(Building.id, Building.code), Building.__tablename__, Building.id,
                                      Building.footprint, geom_name="footprint")
        buildings = {b.id: b.footprint for b in session.scalars(select(Building))}
        xs = [g.bounds for g in buildings.values()]
        minx, miny = min(b[0] for b in xs), min(b[1] for b in xs)
        maxx, maxy = max(b[2] for b in xs), max(b[3] for b in xs)
        w, h = maxx - minx, maxy - miny
        for frac in (0.3, 0.6, 1.0):  # boxes over part of the district, then all of it
            bounds = (minx, miny, minx + w * frac, miny + h * frac)
            inner = (minx + w * frac * 0.2, miny + h * frac * 0.2, minx + w * frac * 0.8, miny + h * frac * 0.8)
            ids, codes, flags, *envelope = storage.column_lists(conn, stmt, storage.bbox_params(bounds, inner))
            want = {i for i, g in buildings.items() if shapely.intersects(shapely.box(*bounds), g.envelope)}
            assert sorted(ids) == sorted(want) and len(ids) == len(set(ids)) and len(codes) == len(ids)
            envelope = [np.asarray(v, dtype=np.float64) for v in envelope]
            inside = 0
            for k, (i, flag) in enumerate(zip(ids, flags)):
                b = buildings[i].bounds
                if flag:
                    inside += 1
                    assert inner[0] <= b[0] and inner[1] <= b[1] and b[2] <= inner[2] and b[3] <= inner[3]
                    assert all(math.isnan(v[k]) for v in envelope)
                else:
                    got = [v[k] for v in envelope]
                    assert got[0] <= b[0] + 1e-9 and got[1] <= b[1] + 1e-9 and got[2] >= b[2] - 1e-9 and got[3] >= b[3] - 1e-9
            # The inner box of a box over many buildings holds some of them, and not every candidate.
            assert 0 < inside < len(ids)
        # A run with the same statement and other boxes answers for those boxes (nothing cached from the last).
        ids, *_ = storage.column_lists(conn, stmt, storage.bbox_params((0.0, 0.0, 0.001, 0.001), (0.0, 0.0, 0.0, 0.0)))
        assert ids == [] or len(ids) == 0


def _slow_write_beside_another(engine, table: str) -> None:
    """A thread named ``probe-slow-writer`` holds the writer for 150 ms while this thread's write queues behind it."""
    import threading
    import time

    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (x INTEGER)")
    held = threading.Event()

    def slow_writer():
        with engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES (1)")
            held.set()
            time.sleep(0.15)

    thread = threading.Thread(target=slow_writer, name="probe-slow-writer")
    thread.start()
    assert held.wait(10)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {table} SET x = 2")
    thread.join(10)


def test_slow_writes_of_the_embedded_store_are_logged_with_their_holder(store, caplog):
    """``sqlite_writer_log_ms``: a write that waited for the writer lock, or held it, longer than the threshold is
    logged with the thread that held it and its first writing statement; off by default, nothing is logged."""
    import logging
    import re

    from cityops.core.db import make_engine

    if store.backend != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has no writer lock of ours")
    caplog.set_level(logging.WARNING, logger="cityops.db")
    quiet = make_engine(store.settings.model_copy(update={"data_dir": store.settings.data_dir.parent / "quiet"}))
    try:
        _slow_write_beside_another(quiet, "writer_log_quiet")
    finally:
        quiet.dispose()
    assert not [r for r in caplog.records if r.name == "cityops.db"]

    engine = make_engine(store.settings.model_copy(update={"sqlite_writer_log_ms": 30.0}))
    try:
        _slow_write_beside_another(engine, "writer_log_probe")
    finally:
        engine.dispose()
    lines = [r.getMessage() for r in caplog.records if r.name == "cityops.db"]

    def ms(what: str, line: str) -> float:
        return float(re.search(rf"{what} ([0-9.]+) ms", line).group(1))

    assert any("thread probe-slow-writer" in m and "first write INSERT INTO writer_log_probe" in m and ms("held", m) >= 140
               for m in lines), lines
    assert any("thread MainThread" in m and "first write UPDATE writer_log_probe" in m and ms("waited", m) >= 100
               for m in lines), lines


def _stored_rows(store, table: str, ids: list[int], fk: str = "id") -> list[dict]:
    """The rows of ``table`` as the driver reads them back (stored text on SQLite, the server's values on
    PostgreSQL), without the columns that differ by construction (ids, the case's number and key)."""
    with store.engine.connect() as conn:
        result = conn.exec_driver_sql(
            f"SELECT * FROM {table} WHERE {fk} IN ({', '.join(str(int(i)) for i in ids)}) ORDER BY {fk}")
        names = list(result.keys())
        rows = [dict(zip(names, r)) for r in result]
    return [{k: v for k, v in r.items() if k not in ("id", "case_id", "number", "external_key")} for r in rows]


_AT = datetime(2026, 3, 1, 9, 5, 7, 123456, tzinfo=timezone(timedelta(hours=8)))


def _case_family(i: int, payload: dict, at: datetime = _AT) -> tuple[dict, dict, dict]:
    """A case's row, its first log entry and its outbox row (without ids), as the case writer writes them."""
    later = datetime(2026, 3, 2, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))
    whole = datetime(2026, 3, 3, 0, 0, 0, tzinfo=timezone.utc)
    case = dict(number=f"T-{i}-{uuid.uuid4().hex}", source="public", external_key=None, kind="matter", class_code="06010",
                title=f"标题 {i}", description=None if i % 2 else "描述", urgency="normal", state="reported",
                lon=108.4 + i / 1000, lat=31.1, address=None, grid_code="500154101001001", township_code=None,
                unit_path="/500100/500154/", department_code=None, assigned_unit_code=None, route=payload,
                reporter=payload, reported_by="tester", attributes=payload, reported_at=at,
                updated_at=at if i % 2 else later, filed_at=None if i % 2 else whole, seq=1, returned_count=0,
                rework_count=i, extension_count=0, supervision_count=0, escalation_level=0, due_soon_warned=0)
    entry = dict(seq=1, action="report", from_state=None, to_state="reported", at=at, actor="tester", actor_id=None,
                 note=None, data=payload, lon=108.4, lat=31.1, unit_path="/500100/500154/")
    notice = dict(topic="case.report", unit_path="/500100/500154/", created_at=at, payload=payload)
    return case, entry, notice


def _insert_driver(store, families: list[tuple[dict, dict, dict]]) -> list[int]:
    """The families through ``Storage.insert_family``, as the case writer writes a group; their case ids."""
    from sqlalchemy.orm import Session

    from cityops.core.storage import storage_of
    from cityops.events.models import Case, Outbox, Transition

    with Session(store.engine) as s:
        storage = storage_of(s)
        geoms = storage.bulk_geometries([shapely.Point(c["lon"], c["lat"]) for c, _, _ in families])
        ids = storage.insert_family(s, Case, [{**c, "geom": g} for (c, _, _), g in zip(families, geoms)], [
            (Transition, "case_id", [e for _, e, _ in families]), (Outbox, "case_id", [o for _, _, o in families])])
        s.commit()
    return ids


def test_the_driver_insert_stores_what_the_orm_stores(store):
    """``Storage.insert_family`` (the case writer's rows, past SQLAlchemy's per-row bind processing: JSON through
    orjson, a timestamp formatted once per insert) stores every column of the case, its log entry and its outbox
    row as the ORM's INSERT does: the same text of JSON and timestamps on SQLite, the same values on PostgreSQL."""
    from sqlalchemy.orm import Session

    from cityops.events.models import Case, Outbox, Transition

    payloads = [
        {"名": "值", "nested": {"list": [1, 2.5, None, True, False, "é\u2028\x1f\"\\"]}, "small": 0.125, "big": 2**62},
        {}, {"x": -0.0, "e": 1e22, "tiny": 1.5e-3, "s": "🙂"}]
    n = 6
    with Session(store.engine) as s:  # the ORM's INSERTs
        families = [_case_family(i, payloads[i % 3]) for i in range(n)]
        cases = [Case(**c, geom=shapely.Point(c["lon"], c["lat"])) for c, _, _ in families]
        s.add_all(cases)
        s.flush()
        s.add_all([Transition(case_id=c.id, **e) for c, (_, e, _) in zip(cases, families)])
        s.add_all([Outbox(case_id=c.id, **o) for c, (_, _, o) in zip(cases, families)])
        s.commit()
        orm_ids = [c.id for c in cases]
    fast_ids = _insert_driver(store, [_case_family(i, payloads[i % 3]) for i in range(n)])
    for table, fk in (("event_cases", "id"), ("event_transitions", "case_id"), ("event_outbox", "case_id")):
        orm, fast = _stored_rows(store, table, orm_ids, fk), _stored_rows(store, table, fast_ids, fk)
        assert len(orm) == n and fast == orm, table
    if store.backend == "sqlite":  # the stored text itself: UTC, microseconds, compact JSON
        first = _stored_rows(store, "event_cases", fast_ids[:1])[0]
        assert first["reported_at"] == "2026-03-01 01:05:07.123456"
        assert first["filed_at"] == "2026-03-03 00:00:00.000000"
        assert first["attributes"].startswith('{"名":"值","nested":{"list":[1,2.5,null,true,false,')


def test_json_values_that_are_not_json_are_stored_as_null_on_both_backends(store):
    """NaN and ±Infinity (not JSON; PostgreSQL's jsonb refuses them, and the case writer's one statement there
    writes them as null) are stored as null on SQLite too, by the driver insert and the ORM alike; integers beyond
    64 bits and keys that are not text keep the standard library's form."""
    from sqlalchemy.orm import Session

    from cityops.core.types import json_text
    from cityops.events.models import Case

    assert json_text({"a": float("nan"), "b": [float("inf")]}) == '{"a":null,"b":[null]}'
    assert json_text({1: 2**70}) == '{"1":%d}' % 2**70
    [cid] = _insert_driver(store, [_case_family(0, {"v": float("nan")})])
    with Session(store.engine) as s:
        assert s.get(Case, cid).attributes == {"v": None}
        if store.backend == "sqlite":  # the ORM's bind of the same value
            case = s.get(Case, cid)
            case.reporter = {"w": float("-inf")}
            s.commit()
            assert _stored_rows(store, "event_cases", [cid])[0]["reporter"] == '{"w":null}'

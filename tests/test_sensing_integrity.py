"""Observations always refer to an existing Datastream and FeatureOfInterest, on both backends: foreign keys
on SQLite, set-based triggers on PostgreSQL (migration 0011) with the same guarantees — a missing parent fails
the whole statement, deleting a datastream deletes its observations, deleting a feature unlinks them, and a
delete racing an ingest transaction waits for it and then removes what it committed."""

from __future__ import annotations

import threading
import time

import pytest
from alembic import command
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from cityops.core.db import alembic_config, migrate
from cityops.sensing.models import Datastream, FeatureOfInterest, Observation
from tests.sensing_helpers import STA, make_device, township


@pytest.fixture(scope="module")
def device(api):
    return make_device(api, township(api, "义和镇"), "water_level", "depth", "cm", name="完整性水位")


def _count(store, **where) -> int:
    with store.sessions() as s:
        q = select(Observation.id)
        for column, value in where.items():
            q = q.where(getattr(Observation, column) == value)
        return len(s.scalars(q).all())


def _feature(store) -> int:
    with store.sessions() as s:
        f = FeatureOfInterest(name="测点", description="x", encoding_type="application/geo+json",
                              feature={"type": "Point", "coordinates": [108.39, 31.18]}, unit_path="/")
        s.add(f)
        s.commit()
        return f.id


def _rows(ds: int, t0: int, n: int, foi: int | None = None) -> list[dict]:
    return [{"datastream_id": ds, "t_ms": t0 + i, "result_num": float(i), "foi_id": foi} for i in range(n)]


def test_a_missing_parent_fails_the_whole_statement(demo_store, device):
    ds = device["datastream"]
    with demo_store.sessions() as s:
        unknown_ds = s.scalar(select(Datastream.id).order_by(Datastream.id.desc())) + 1000
    before = _count(demo_store)
    for bad in (_rows(unknown_ds, 1_000, 1), _rows(ds, 2_000, 1, foi=987_654_321)):
        with demo_store.engine.connect() as conn:
            with pytest.raises(IntegrityError) as err:
                conn.execute(insert(Observation), _rows(ds, 3_000, 3) + bad)  # good rows first, in the same statement
            conn.rollback()
        assert "foreign key" in str(err.value).lower() or "does not exist" in str(err.value)
    assert _count(demo_store) == before
    with demo_store.engine.begin() as conn:
        conn.execute(insert(Observation), _rows(ds, 4_000, 3, foi=_feature(demo_store)))
    assert _count(demo_store) == before + 3


def test_deleting_a_feature_unlinks_and_a_datastream_deletes_its_observations(api, demo_store):
    dev = make_device(api, township(api, "义和镇"), "water_level", "depth", "cm", name="删除水位")
    ds, foi = dev["datastream"], _feature(demo_store)
    with demo_store.engine.begin() as conn:
        conn.execute(insert(Observation), _rows(ds, 10_000, 5, foi=foi))
    with demo_store.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM sta_features WHERE id = {foi}")
    assert _count(demo_store, datastream_id=ds) == 5 and _count(demo_store, foi_id=foi) == 0
    assert api.delete(f"{STA}/Datastreams({ds})", headers=api.login("admin")).status_code == 200
    assert _count(demo_store, datastream_id=ds) == 0


def test_a_delete_waits_for_an_ingest_in_flight_and_removes_what_it_committed(api, demo_store):
    dev = make_device(api, township(api, "义和镇"), "water_level", "depth", "cm", name="并发水位")
    ds = dev["datastream"]
    deleted = threading.Event()
    with demo_store.engine.connect() as writer:
        writer.execute(insert(Observation), _rows(ds, 20_000, 4))  # in flight: not committed yet

        def delete():
            with demo_store.engine.begin() as conn:
                conn.exec_driver_sql(f"DELETE FROM sta_datastreams WHERE id = {ds}")
            deleted.set()

        t = threading.Thread(target=delete)
        t.start()
        time.sleep(0.5)
        assert not deleted.is_set()  # the delete waits for the writer (its lock on the datastream)
        writer.commit()
    t.join(30)
    assert deleted.is_set()
    assert _count(demo_store, datastream_id=ds) == 0  # no orphan left behind


def test_the_migration_swaps_foreign_keys_for_statement_checks(demo_store, device):
    if demo_store.backend == "sqlite":
        pytest.skip("SQLite keeps its foreign keys; 0011 changes nothing there")

    def state():
        with demo_store.engine.connect() as conn:
            fks = {r[0] for r in conn.exec_driver_sql(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'sta_observations'::regclass AND contype = 'f'")}
            triggers = {r[0] for r in conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'sta_observations'::regclass AND NOT tgisinternal")}
        return fks, triggers

    assert state() == (set(), {"sta_observations_parents_insert", "sta_observations_parents_update"})
    command.downgrade(alembic_config(demo_store.engine), "0010")
    assert state() == ({"sta_observations_datastream_id_fkey", "sta_observations_foi_id_fkey"}, set())
    migrate(demo_store.engine)
    assert state()[0] == set()
    with demo_store.engine.connect() as conn, pytest.raises(IntegrityError):
        conn.execute(insert(Observation), _rows(device["datastream"] + 100_000, 1, 1))

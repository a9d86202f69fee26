"""Per-building counts of households, residents and vulnerable residents (kept by triggers), on both backends:
exact after the demo load, after every kind of write (the API, SQL by hand, cascades) and after a migration."""

from __future__ import annotations

import shapely
from shapely.geometry import mapping, shape
from sqlalchemy import delete, func, insert, select, update

from alembic import command

from cityops.core.db import alembic_config, migrate
from cityops.housing import counts
from cityops.housing.models import Building, Household, Resident


def stored(store, building_id: int) -> dict:
    with store.sessions() as s:
        row = s.execute(select(*[getattr(Building, c) for c in counts.COUNT_COLUMNS]).where(Building.id == building_id)).one()
    return dict(zip(counts.COUNT_COLUMNS, row))


def mismatches(store) -> int:
    with store.engine.connect() as conn:
        return counts.mismatches(conn)


def test_the_demo_load_writes_exact_counts(demo_store):
    assert mismatches(demo_store) == 0
    with demo_store.sessions() as s:
        totals = s.execute(select(*[func.sum(getattr(Building, c)) for c in counts.COUNT_COLUMNS])).one()
        households = s.scalar(select(func.count()).select_from(Household))
        residents = s.scalar(select(func.count()).select_from(Resident))
    by_name = dict(zip(counts.COUNT_COLUMNS, totals))
    assert by_name["households"] == households > 0 and by_name["residents"] == residents > 0
    assert 0 < by_name["elderly"] <= by_name["vulnerable"] < residents


def test_api_writes_keep_counts_exact(api, demo_store):
    headers = api.login("yihe")
    township = next(u for u in api.get("/api/units", params={"level": "township"}, headers=headers).json()["items"]
                    if u["name"] == "义和镇")
    grid = api.get("/api/units", params={"root": township["code"], "level": "grid", "limit": 1}, headers=headers).json()["items"][0]
    p = shape(api.get(f"/api/units/{grid['code']}", params={"geometry": True}, headers=headers).json()["geometry"]).representative_point()
    r = api.post("/api/buildings", headers=headers, json={"geometry": mapping(shapely.box(p.x, p.y, p.x + 0.0001, p.y + 0.00008))})
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    with demo_store.sessions() as s:
        building_id = s.scalar(select(Building.id).where(Building.code == code))
    assert stored(demo_store, building_id) == dict.fromkeys(counts.COUNT_COLUMNS, 0)
    household = api.post("/api/households", headers=headers, json={"building_code": code, "head_name": "陈建国"}).json()["code"]
    api.post("/api/households", headers=headers, json={"building_code": code, "head_name": "陈建军"})
    elder = api.post(f"/api/households/{household}/residents", headers=headers,
                     json={"name": "陈老汉", "birth_year": 1940, "bedridden": True}).json()
    api.post(f"/api/households/{household}/residents", headers=headers, json={"name": "陈小明", "birth_year": 2018})
    api.post(f"/api/households/{household}/residents", headers=headers, json={"name": "陈建国", "birth_year": 1980})
    assert stored(demo_store, building_id) == {"households": 2, "residents": 3, "vulnerable": 2, "elderly": 1,
                                               "disabled": 0, "child": 1, "bedridden": 1}
    r = api.patch(f"/api/residents/{elder['id']}", headers=headers, json={"disabled": True, "bedridden": False})
    assert r.status_code == 200, r.text
    assert stored(demo_store, building_id) == {"households": 2, "residents": 3, "vulnerable": 2, "elderly": 1,
                                               "disabled": 1, "child": 1, "bedridden": 0}
    # A rejected write changes no count.
    r = api.patch(f"/api/residents/{elder['id']}", headers=headers, json={"disabled": "perhaps"})
    assert r.status_code == 422
    assert stored(demo_store, building_id)["disabled"] == 1
    assert mismatches(demo_store) == 0


def test_sql_writes_moves_and_cascades_keep_counts_exact(demo_store):
    with demo_store.sessions() as s:
        a, b = s.execute(select(Building.id, Building.grid_code, Building.unit_path).where(Building.households > 0)
                         .order_by(Building.id).limit(2)).all()
        before_a, before_b = stored(demo_store, a.id), stored(demo_store, b.id)
        # Several rows in one statement (a bulk insert), on both sides of the triggers.
        first = s.scalar(select(Household.id).order_by(Household.id.desc()).limit(1)) + 1
        s.execute(insert(Household), [dict(id=first + k, code=f"COUNTS{k}", building_id=a.id, head_name="测试", members=2,
                                           grid_code=a.grid_code, unit_path=a.unit_path) for k in range(3)])
        s.execute(insert(Resident), [dict(household_id=first + k, name="测试", elderly=k == 0, disabled=False, child=j == 1,
                                          bedridden=False, unit_path=a.unit_path) for k in range(3) for j in range(2)])
        s.commit()
        after = stored(demo_store, a.id)
        assert after["households"] == before_a["households"] + 3 and after["residents"] == before_a["residents"] + 6
        assert after["child"] == before_a["child"] + 3 and after["elderly"] == before_a["elderly"] + 2
        assert after["vulnerable"] == before_a["vulnerable"] + 4
        # A household moves to another building with its residents.
        s.execute(update(Household).where(Household.id == first).values(building_id=b.id))
        s.commit()
        moved = stored(demo_store, b.id)
        assert moved["households"] == before_b["households"] + 1 and moved["residents"] == before_b["residents"] + 2
        # Deleting a household deletes its residents (a cascade) and recounts its building.
        s.execute(delete(Household).where(Household.id == first + 1))
        s.commit()
        assert stored(demo_store, a.id)["residents"] == before_a["residents"] + 2
        # Deleting residents leaves their (now empty) household counted.
        s.execute(delete(Resident).where(Resident.household_id == first + 2))
        s.commit()
        assert stored(demo_store, a.id) == {**before_a, "households": before_a["households"] + 1}
        s.execute(delete(Household).where(Household.id.in_([first, first + 2])))
        s.commit()
        assert stored(demo_store, a.id) == before_a
        assert stored(demo_store, b.id) == before_b
    assert mismatches(demo_store) == 0


def test_failed_transaction_leaves_counts_as_they_were(demo_store):
    with demo_store.sessions() as s:
        building_id, path = s.execute(select(Building.id, Building.unit_path).where(Building.households > 0)
                                      .order_by(Building.id.desc()).limit(1)).one()
        before = stored(demo_store, building_id)
        household = s.scalar(select(Household.id).where(Household.building_id == building_id).limit(1))
        s.execute(insert(Resident), [dict(household_id=household, name="回滚", elderly=True, disabled=False, child=False,
                                          bedridden=False, unit_path=path)])
        s.rollback()
    assert stored(demo_store, building_id) == before


def test_migration_backfills_counts_of_an_existing_registry(demo_store):
    """Downgrading drops the counts; upgrading again recounts every building from its rows."""
    with demo_store.sessions() as s:
        expected = dict(s.execute(select(Building.id, Building.residents).where(Building.residents > 0)).all())
    command.downgrade(alembic_config(demo_store.engine), "0009")
    with demo_store.engine.connect() as conn:
        columns = set(conn.exec_driver_sql("SELECT * FROM buildings LIMIT 0").keys())
    assert not set(counts.COUNT_COLUMNS) & columns and "footprint" in columns
    migrate(demo_store.engine)
    with demo_store.sessions() as s:
        assert dict(s.execute(select(Building.id, Building.residents).where(Building.residents > 0)).all()) == expected
    assert mismatches(demo_store) == 0


def test_the_threatened_page_uses_the_vulnerable_index(demo_store):
    """The vulnerable page query repeats the partial index's predicate, so each database reads only the zone's
    vulnerable residents (checked on the plan, since at the demo scale both plans are fast)."""
    from cityops.housing.models import VULNERABLE_PREDICATE

    with demo_store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if demo_store.backend == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN SELECT id FROM residents WHERE household_id IN (1, 2, 3) AND ({VULNERABLE_PREDICATE})"))
        else:
            # Cost decides between two usable indexes here; leaving PostgreSQL only index-only scans shows that
            # the predicate matches the partial index (the only one that covers the ids).
            conn.exec_driver_sql("VACUUM ANALYZE residents")  # index-only scans read the visibility map
            for method in ("seqscan", "indexscan", "bitmapscan"):
                conn.exec_driver_sql(f"SET enable_{method} = off")
            plan = " ".join(r[0] for r in conn.exec_driver_sql(
                f"EXPLAIN SELECT id FROM residents WHERE household_id = ANY('{{1,2,3}}'::int[]) AND ({VULNERABLE_PREDICATE})"))
    assert "ix_residents_vulnerable_household" in plan, plan

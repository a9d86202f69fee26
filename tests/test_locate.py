"""Locate: point → chain, on both backends' data, single and batch, any CRS."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from sqlalchemy import select

from cityops.core.crs import from_canonical, parse_crs, wgs84_to_bd09, wgs84_to_gcj02
from cityops.org.locate import Locator, LocatorCache
from cityops.org.models import Unit


@pytest.fixture(scope="module")
def grids(demo_store):
    with demo_store.sessions() as session:
        return session.execute(select(Unit.code, Unit.path, Unit.geom).where(Unit.level == "grid").order_by(Unit.code)).all()


@pytest.fixture(scope="module")
def locator(demo_store):
    return LocatorCache(demo_store.sessions, demo_store.org.levels).get()


def test_every_grid_locates_to_itself_with_full_chain(locator, grids):
    for code, path, geom in grids:
        p = geom.representative_point()
        located = locator.locate(p.x, p.y)
        assert located is not None and located.unit.code == code
        assert [link.level for link in located.chain][-4:] == ["district", "township", "village", "grid"]
        assert located.path == path


def test_outside_jurisdiction(locator):
    assert locator.locate(116.39, 39.9) is None  # Beijing


def test_shared_boundary_resolves_to_smaller_code(locator, grids):
    """A vertex shared by neighbouring grids belongs to all of them; locate picks the smallest code."""
    by_code = {code: geom for code, _, geom in grids}
    tree = shapely.STRtree(list(by_code.values()))
    codes = list(by_code)
    for code, geom in by_code.items():
        for x, y in shapely.get_coordinates(geom):
            owners = [codes[i] for i in tree.query(shapely.Point(x, y), predicate="intersects")]
            if len(owners) >= 2:
                assert locator.locate(x, y).unit.code == min(owners)
                assert locator.locate_many(np.array([x]), np.array([y]))[0].unit.code == min(owners)
                return
    pytest.fail("no shared vertex found")


def test_batch_matches_single(locator, demo_store):
    with demo_store.sessions() as session:
        district = session.scalar(select(Unit).where(Unit.level == "district"))
    minx, miny, maxx, maxy = district.geom.bounds
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(minx, maxx, 3000), rng.uniform(miny, maxy, 3000)
    batch = locator.locate_many(lon, lat)
    single = [locator.locate(x, y) for x, y in zip(lon, lat)]
    assert [b and b.unit.code for b in batch] == [s and s.unit.code for s in single]
    assert any(b is None for b in batch) and any(b is not None for b in batch)


def test_point_in_village_without_grids_falls_back_to_village():
    square = shapely.box(0, 0, 1, 1)
    units = [("500154", "区", "district", "/500154/", square),
             ("500154101", "镇", "township", "/500154/500154101/", square),
             ("500154101201", "村", "village", "/500154/500154101/500154101201/", square),
             ("500154101201001", "网格", "grid", "/500154/500154101/500154101201/500154101201001/", shapely.box(0, 0, 0.5, 1))]
    from cityops.org.levels import load_levels

    loc = Locator(units, load_levels())
    assert loc.locate(0.25, 0.5).unit.code == "500154101201001"
    assert loc.locate(0.75, 0.5).unit.code == "500154101201"
    assert loc.locate(2, 2) is None


@pytest.mark.parametrize("crs", ["EPSG:4326", "GCJ02", "BD09", "EPSG:4545", "EPSG:3857"])
def test_locate_api_accepts_every_crs(api, grids, crs):
    code, _, geom = grids[len(grids) // 2]
    p = geom.representative_point()
    x, y = p.x, p.y
    if crs == "GCJ02":
        x, y = (v[0] for v in wgs84_to_gcj02(np.array([x]), np.array([y])))
    elif crs == "BD09":
        x, y = (v[0] for v in wgs84_to_bd09(np.array([x]), np.array([y])))
    elif crs.startswith("EPSG:") and crs != "EPSG:4326":
        q = from_canonical(p, parse_crs(crs))
        x, y = q.x, q.y
    r = api.get("/api/locate", params={"lon": x, "lat": y, "crs": crs}, headers=api.login("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["grid"]["code"] == code


def test_locate_api_errors(api):
    headers = api.login("admin")
    r = api.get("/api/locate", params={"lon": 116.39, "lat": 39.9}, headers=headers)
    assert r.status_code == 404 and r.json()["error"] == "outside_jurisdiction"
    r = api.get("/api/locate", params={"lon": 108.4, "lat": 31.2, "crs": "EPSG:999999"}, headers=headers)
    assert r.status_code == 422 and "EPSG:999999" in r.json()["message"]
    r = api.get("/api/locate", params={"lon": 108.4, "lat": 95}, headers=headers)
    assert r.status_code == 422 and "95" in r.json()["message"]


def test_batch_locate_api(api, grids):
    points = [list(g.representative_point().coords[0]) for _, _, g in grids[:50]] + [[116.39, 39.9]]
    r = api.post("/api/locate/batch", json={"points": points}, headers=api.login("admin"))
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x.get("code") for x in results[:50]] == [c for c, _, _ in grids[:50]]
    assert results[-1] == {"status": "outside_jurisdiction"}

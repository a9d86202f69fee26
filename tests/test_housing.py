"""Housing registry (房屋 · 住户 · 人口) and "who is threatened", on both backends over the small demo."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest
import shapely
from shapely.geometry import mapping
from sqlalchemy import select

from cityops.core.spatial import buffer_m
from cityops.housing.models import Building, Household, Resident
from cityops.org.models import Place, Unit
from tests.conftest import table_counts

FLAGS = ("elderly", "disabled", "child", "bedridden")


@pytest.fixture(scope="module")
def world(demo_store):
    """Everything a brute-force check needs, read straight from the tables."""
    with demo_store.sessions() as s:
        buildings = list(s.scalars(select(Building).order_by(Building.id)))
        households = list(s.scalars(select(Household)))
        residents = list(s.scalars(select(Resident)))
        units = {u.code: u for u in s.scalars(select(Unit))}
        place = s.scalar(select(Place).where(Place.name == "老沟湾"))
        s.expunge_all()
    return {"buildings": buildings, "households": households, "residents": residents, "units": units, "place": place}


def _township(world, name):
    return next(u for u in world["units"].values() if u.level == "township" and u.name == name)


def brute_force(world, zone, path_prefix: str | None = None) -> dict:
    """Totals of buildings intersecting ``zone`` (Shapely over every building), optionally under a path."""
    hit = {b.id for b in world["buildings"] if shapely.intersects(b.footprint, zone)
           and (path_prefix is None or b.unit_path.startswith(path_prefix))}
    hh = {h.id for h in world["households"] if h.building_id in hit}
    res = [r for r in world["residents"] if r.household_id in hh]
    totals = {"buildings": len(hit), "households": len(hh), "residents": len(res),
              "vulnerable": sum(1 for r in res if any(getattr(r, f) for f in FLAGS))}
    totals.update({f: sum(1 for r in res if getattr(r, f)) for f in FLAGS})
    return totals


def test_demo_counts_are_plausible(world):
    grids = sum(1 for u in world["units"].values() if u.level == "grid")
    n_b, n_h, n_r = len(world["buildings"]), len(world["households"]), len(world["residents"])
    assert 15 * grids <= n_b <= 26 * grids, (n_b, grids)
    assert n_b <= n_h <= 3 * n_b
    assert n_h <= n_r <= 6 * n_h
    elderly = sum(r.elderly for r in world["residents"]) / n_r
    assert 0.08 < elderly < 0.25
    assert any(r.disabled for r in world["residents"]) and any(r.bedridden for r in world["residents"])
    assert any(r.child for r in world["residents"])
    grades = Counter(b.safety_grade for b in world["buildings"])
    assert set(grades) <= {"A", "B", "C", "D", None} and grades["A"] > grades["D"] > 0
    members = Counter(r.household_id for r in world["residents"])
    assert all(members[h.id] == h.members for h in world["households"])


def test_every_building_lies_inside_its_grid(world):
    units = world["units"]
    for b in world["buildings"]:
        grid = units[b.grid_code]
        assert grid.level == "grid" and b.unit_path == grid.path
        assert grid.geom.contains(b.footprint), b.code
        minx, miny, maxx, maxy = b.footprint.bounds
        assert 0.00005 < maxx - minx < 0.0005 and 0.00005 < maxy - miny < 0.0005  # ~8–28 m across
    by_id = {b.id: b for b in world["buildings"]}
    assert all(h.unit_path == by_id[h.building_id].unit_path for h in world["households"])


def test_laogouwan_has_buildings(world):
    place = world["place"]
    taikang = world["units"][place.unit_code[:12]]
    assert taikang.name == "太康村"
    near = [b for b in world["buildings"] if b.attributes.get("place") == "老沟湾"]
    assert len(near) >= 30
    assert all(b.unit_path.startswith(taikang.path) for b in near)
    assert all(b.footprint.centroid.distance(place.geom) < 0.003 for b in near)  # within ~250 m


def _laogouwan_zone(world):
    return buffer_m(world["place"].geom, 300, "EPSG:4545")


def test_threatened_totals_match_brute_force(api, world):
    zone = _laogouwan_zone(world)
    r = api.post("/api/threatened", json={"geometry": mapping(zone), "limit": 1000}, headers=api.login("admin"))
    assert r.status_code == 200, r.text
    body = r.json()
    expected = brute_force(world, zone)
    assert expected["buildings"] >= 30
    assert body["totals"] == expected
    assert body["outside_scope"]["buildings"] == 0
    for groups in (body["by_village"], body["by_grid"]):
        for key in expected:
            assert sum(g[key] for g in groups) == expected[key], key
    assert len(body["buildings"]) == expected["buildings"]
    assert len(body["households"]) == expected["households"]
    assert len(body["vulnerable_residents"]) == expected["vulnerable"]
    assert any(g["name"] == "太康村" for g in body["by_village"])
    for g in body["by_grid"]:
        assert g["grid_workers"] and all(p["name"] and p["phone"] for p in g["grid_workers"])
        assert g["village_cadres"] and all(p["name"] and p["phone"] for p in g["village_cadres"])
    assert all(v["village_cadres"] for v in body["by_village"])
    # Administrators hold personal.read: clear names.
    assert not any(h.get("masked") for h in body["households"])
    assert body["truncated"] is False and body["page"]["next_offset"] is None


def brute_force_groups(world, zone, path_prefix: str | None = None) -> tuple[dict, dict]:
    """Per-grid and per-village totals of ``brute_force``, grouped by each building's grid and its village."""
    by_grid: dict[str, dict] = {}
    buildings = [b for b in world["buildings"] if shapely.intersects(b.footprint, zone)
                 and (path_prefix is None or b.unit_path.startswith(path_prefix))]
    households = defaultdict(list)
    for h in world["households"]:
        households[h.building_id].append(h.id)
    residents = defaultdict(list)
    for r in world["residents"]:
        residents[r.household_id].append(r)
    for b in buildings:
        g = by_grid.setdefault(b.grid_code, dict.fromkeys(("buildings", "households", "residents", "vulnerable", *FLAGS), 0))
        g["buildings"] += 1
        for hid in households[b.id]:
            g["households"] += 1
            for r in residents[hid]:
                g["residents"] += 1
                g["vulnerable"] += any(getattr(r, f) for f in FLAGS)
                for f in FLAGS:
                    g[f] += bool(getattr(r, f))
    by_village: dict[str, dict] = {}
    for code, g in by_grid.items():
        v = by_village.setdefault(world["units"][code].parent_code, dict.fromkeys(g, 0))
        for k, n in g.items():
            v[k] += n
    return by_grid, by_village


KEYS = ("buildings", "households", "residents", "vulnerable", *FLAGS)


@pytest.mark.parametrize("size_m", [150, 600])
def test_threatened_groups_exact_on_every_page(api, world, size_m):
    """Totals and by-grid/by-village groups equal a brute-force reference on every page, whatever the page size;
    walking the pages yields every item exactly once, in a stable order."""
    zone = buffer_m(world["place"].geom, size_m, "EPSG:4545")
    expected = brute_force(world, zone)
    grids, villages = brute_force_groups(world, zone)
    admin = api.login("admin")
    seen = {"buildings": [], "households": [], "vulnerable_residents": []}
    offset, pages = 0, 0
    while offset is not None:
        r = api.post("/api/threatened", json={"geometry": mapping(zone), "limit": 7, "offset": offset}, headers=admin)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["totals"] == expected
        assert {g["code"]: {k: g[k] for k in KEYS} for g in body["by_grid"]} == grids
        assert {g["code"]: {k: g[k] for k in KEYS} for g in body["by_village"]} == villages
        assert len(body["building_codes"]) == expected["buildings"]
        assert body["page"]["offset"] == offset and body["page"]["limit"] == 7
        for key in seen:
            assert len(body[key]) <= 7
            seen[key] += body[key]
        offset, pages = body["page"]["next_offset"], pages + 1
        assert pages <= 1000
    assert pages == -(-max(expected["buildings"], expected["households"], expected["vulnerable"]) // 7)
    assert sorted(b["code"] for b in seen["buildings"]) == sorted(body["building_codes"])
    assert len({b["code"] for b in seen["buildings"]}) == expected["buildings"]
    # Households and vulnerable residents go building by building (building code, household code, resident id).
    building_code = {b.id: b.code for b in world["buildings"]}
    household_of = {h.code: building_code[h.building_id] for h in world["households"]}
    codes = [h["code"] for h in seen["households"]]
    order = [(household_of[c], c) for c in codes]
    assert order == sorted(order) and len(set(codes)) == expected["households"]
    ids = [v["id"] for v in seen["vulnerable_residents"]]
    order = [(household_of[v["household_code"]], v["household_code"], v["id"]) for v in seen["vulnerable_residents"]]
    assert order == sorted(order) and len(set(ids)) == expected["vulnerable"]
    # Per-building counts in the items add up to the totals.
    for key in ("households", "residents", "vulnerable"):
        assert sum(b[key] for b in seen["buildings"]) == expected[key]


def test_threatened_default_page_is_small_and_totals_complete(api, world):
    yihe, dade = _township(world, "义和镇"), _township(world, "大德镇")
    zone = shapely.box(*shapely.union(yihe.geom, dade.geom).bounds)
    expected = brute_force(world, zone)
    assert expected["households"] > 100  # so the default page is a real page
    body = api.post("/api/threatened", json={"geometry": mapping(zone)}, headers=api.login("admin")).json()
    assert body["totals"] == expected
    assert len(body["households"]) == 100 and body["truncated"] is True and body["page"]["next_offset"] == 100
    beyond = api.post("/api/threatened", json={"geometry": mapping(zone), "offset": 10**6},
                      headers=api.login("admin")).json()
    assert beyond["totals"] == expected and beyond["buildings"] == beyond["households"] == []
    assert beyond["page"]["next_offset"] is None


def test_threatened_rejects_bad_paging(api, world):
    before = table_counts(api.store)
    zone = mapping(_laogouwan_zone(world))
    admin = api.login("admin")
    for extra, field in (({"limit": -1}, "limit"), ({"limit": 100_001}, "limit"), ({"offset": -5}, "offset"),
                         ({"limit": "many"}, "limit")):
        r = api.post("/api/threatened", json={"geometry": zone, **extra}, headers=admin)
        assert r.status_code == 422, (extra, r.text)
        assert field in r.text
    assert table_counts(api.store) == before


def test_threatened_service_matches_brute_force_in_scope(demo_store, world):
    """The domain function itself (used by the task center's risk zones with limit=0), scoped to one township."""
    from cityops.housing.service import threatened
    from cityops.identity.scope import Scope

    yihe = _township(world, "义和镇")
    zone = shapely.box(*yihe.geom.bounds)
    with demo_store.sessions() as s:
        answer = threatened(s, Scope(unit_paths=(yihe.path,)), False, zone, limit=0)
    assert answer["totals"] == brute_force(world, zone, yihe.path)
    assert answer["outside_scope"] == {k: brute_force(world, zone)[k] - answer["totals"][k] for k in KEYS}
    grids, villages = brute_force_groups(world, zone, yihe.path)
    assert {g["code"]: {k: g[k] for k in KEYS} for g in answer["by_grid"]} == grids
    assert answer["buildings"] == answer["households"] == answer["vulnerable_residents"] == []


def test_threatened_decides_buildings_across_the_zone_edge_by_their_footprints(demo_store, world):
    """Envelopes decide the buildings wholly inside or wholly apart; one whose envelope meets the zone's edge is
    decided by its footprint: a zone over the empty corner of a rotated building's envelope does not hold it, a
    zone reaching into the footprint does."""
    from cityops.housing.service import threatened
    from cityops.identity.scope import Scope

    everyone = Scope(all_units=True)
    tried = 0
    for b in world["buildings"]:
        minx, miny, maxx, maxy = b.footprint.bounds
        corner = shapely.box(minx - 1e-6, miny - 1e-6, minx + (maxx - minx) * 0.1, miny + (maxy - miny) * 0.1)
        if shapely.intersects(corner, b.footprint) or shapely.area(b.footprint) > 0.8 * shapely.area(shapely.box(minx, miny, maxx, maxy)):
            continue  # not rotated enough to leave its envelope's corner empty
        into = shapely.box(minx - 1e-6, miny - 1e-6, *b.footprint.centroid.coords[0])
        with demo_store.sessions() as s:
            for zone, holds in ((corner, False), (into, True)):
                answer = threatened(s, everyone, False, zone, limit=1000)
                assert answer["totals"] == brute_force(world, zone)
                assert (b.code in answer["building_codes"]) is holds
        tried += 1
        if tried == 5:
            break
    assert tried == 5


def test_threatened_accepts_a_feature_and_projected_crs(api, world):
    from cityops.core.crs import from_canonical, parse_crs

    zone = _laogouwan_zone(world)
    projected = from_canonical(zone, parse_crs("EPSG:4545"))
    feature = {"type": "Feature", "properties": {}, "geometry": mapping(projected)}
    r = api.post("/api/threatened", json={"geometry": feature, "crs": "EPSG:4545", "limit": 5}, headers=api.login("admin"))
    assert r.status_code == 200, r.text
    body = r.json()
    # The round trip through the projected CRS moves edges by millimetres at most.
    assert abs(body["totals"]["buildings"] - brute_force(world, zone)["buildings"]) <= 1
    assert len(body["buildings"]) <= 5 and body["truncated"] is True


def test_masking_for_leader_clear_for_township_operator(api, world):
    yihe = _township(world, "义和镇")
    household = next(h for h in world["households"] if h.unit_path.startswith(yihe.path))
    residents = [r for r in world["residents"] if r.household_id == household.id]
    clear = api.get(f"/api/households/{household.code}", headers=api.login("yihe"))
    assert clear.status_code == 200, clear.text
    body = clear.json()
    assert body["head_name"] == household.head_name and body["phone"] == household.phone
    assert {r["id_number"] for r in body["residents"]} == {r.id_number for r in residents}
    assert not body.get("masked")

    masked = api.get(f"/api/households/{household.code}", headers=api.login("leader"))
    assert masked.status_code == 200, masked.text
    body = masked.json()
    assert body["masked"] is True
    assert body["head_name"] == household.head_name[0] + "**"
    assert body["phone"] == household.phone[:3] + "****" + household.phone[-4:]
    text = json.dumps(body, ensure_ascii=False)
    for r in residents:
        assert r.id_number not in text and (r.phone is None or r.phone not in text)
    assert all(r["id_number"] == "****" for r in body["residents"])
    # Building detail and the threatened answer mask the same way.
    building_code = body["building_code"]
    detail = api.get(f"/api/buildings/{building_code}", headers=api.login("leader")).json()
    assert all(h["masked"] and h["head_name"].endswith("**") for h in detail["households"])
    assert detail["geometry"]["type"] == "MultiPolygon"
    zone = _laogouwan_zone(world)
    threat = api.post("/api/threatened", json={"geometry": mapping(zone)}, headers=api.login("leader")).json()
    assert threat["masked"] is True
    assert all(h["head_name"].endswith("**") for h in threat["households"])
    assert all(r["id_number"] == "****" for r in threat["vulnerable_residents"])


def test_township_operator_sees_only_own_records_in_a_two_township_zone(api, world):
    yihe, dade = _township(world, "义和镇"), _township(world, "大德镇")
    zone = shapely.box(*shapely.union(yihe.geom, dade.geom).bounds)
    r = api.post("/api/threatened", json={"geometry": mapping(zone), "limit": 20}, headers=api.login("yihe"))
    assert r.status_code == 200, r.text
    body = r.json()
    own = brute_force(world, zone, yihe.path)
    assert body["totals"] == own and own["buildings"] > 0
    everything = brute_force(world, zone)
    assert body["outside_scope"]["buildings"] == everything["buildings"] - own["buildings"] > 0
    assert body["outside_scope"]["residents"] == everything["residents"] - own["residents"]
    assert all(g["code"].startswith(yihe.code) for g in body["by_grid"])
    assert all(g["code"].startswith(yihe.code) for g in body["by_village"])
    text = json.dumps(body, ensure_ascii=False)
    assert "大德镇" not in text and dade.code not in text


def test_invalid_zone_is_rejected_and_changes_nothing(api, world):
    before = table_counts(api.store)
    admin = api.login("admin")
    x, y = world["place"].geom.x, world["place"].geom.y
    bowtie = {"type": "Polygon", "coordinates": [[[x, y], [x + 0.01, y + 0.01], [x + 0.01, y], [x, y + 0.01], [x, y]]]}
    for payload in (
        {"geometry": bowtie},
        {"geometry": {"type": "Point", "coordinates": [x, y]}},
        {"geometry": {"type": "Polygon", "coordinates": "nonsense"}},
        {"geometry": mapping(shapely.box(x, y, x + 0.01, y + 0.01)), "crs": "EPSG:999999"},
        {"geometry": mapping(shapely.box(x, y, x + 0.01, y + 0.01)), "crs": "not-a-crs"},
    ):
        r = api.post("/api/threatened", json=payload, headers=admin)
        assert r.status_code == 422, (payload, r.status_code, r.text)
        assert r.json()["error"] in ("invalid_geometry", "invalid_input", "unknown_crs")
    assert table_counts(api.store) == before


def test_list_buildings_filters_and_pages(api, world):
    admin = api.login("admin")
    taikang = world["units"][world["place"].unit_code[:12]]
    expected = [b for b in world["buildings"] if b.unit_path.startswith(taikang.path) and b.safety_grade in ("C", "D")]
    r = api.get("/api/buildings", params={"root": taikang.code, "grade": "C,D", "limit": 7}, headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(expected) > 0 and len(body["items"]) == min(7, len(expected))
    assert {i["safety_grade"] for i in body["items"]} <= {"C", "D"}
    page2 = api.get("/api/buildings", params={"root": taikang.code, "grade": "C,D", "limit": 7, "offset": 7}, headers=admin).json()
    assert not {i["code"] for i in body["items"]} & {i["code"] for i in page2["items"]}
    bbox = shapely.box(*_laogouwan_zone(world).bounds)
    r = api.get("/api/buildings", params={"bbox": ",".join(map(str, bbox.bounds)), "geometry": "true", "limit": 1000}, headers=admin)
    assert r.status_code == 200
    assert r.json()["total"] == sum(1 for b in world["buildings"] if b.footprint.intersects(bbox))
    assert all(i["geometry"]["type"] == "MultiPolygon" for i in r.json()["items"])
    assert api.get("/api/buildings", params={"grade": "E"}, headers=admin).status_code == 422
    # A township operator's list holds only their own township's buildings.
    yihe = _township(world, "义和镇")
    mine = api.get("/api/buildings", params={"limit": 1}, headers=api.login("yihe")).json()
    assert mine["total"] == sum(1 for b in world["buildings"] if b.unit_path.startswith(yihe.path))


def test_department_staff_see_buildings_but_masked_people(api, world):
    headers = api.login("zhujian")  # 区住建委: the district through its department, housing.read, no personal.read
    r = api.get("/api/buildings", headers=headers)
    assert r.status_code == 200 and r.json()["total"] == len(world["buildings"])
    household = world["households"][0]
    body = api.get(f"/api/households/{household.code}", headers=headers).json()
    assert body["masked"] is True and body["head_name"] == household.head_name[0] + "**"


@pytest.mark.parametrize("shape", ["rectangle", "triangle", "holed", "L", "sliver"])
def test_inner_box_lies_inside_the_zone_with_its_margin(shape):
    """PostGIS decides the buildings whose box lies within ``_inner_box`` without GEOS: that box, grown by the
    margin single-precision boxes may add, must lie inside the zone whatever its shape (else a building outside
    the zone would be counted)."""
    from shapely.geometry import Polygon, box

    from cityops.housing.service import _INNER_BOX_MARGIN, _NO_BOX, _inner_box

    x0, y0 = 108.40, 31.16
    zone = {
        "rectangle": box(x0, y0, x0 + 0.01, y0 + 0.008),
        "triangle": Polygon([(x0, y0), (x0 + 0.02, y0), (x0, y0 + 0.02)]),
        "holed": box(x0, y0, x0 + 0.01, y0 + 0.01).difference(box(x0 + 0.004, y0 + 0.004, x0 + 0.006, y0 + 0.006)),
        "L": Polygon([(x0, y0), (x0 + 0.01, y0), (x0 + 0.01, y0 + 0.002), (x0 + 0.002, y0 + 0.002),
                      (x0 + 0.002, y0 + 0.01), (x0, y0 + 0.01)]),
        "sliver": box(x0, y0, x0 + 0.01, y0 + 0.00005),
    }[shape]
    inner = _inner_box(zone)
    if shape == "sliver":  # narrower than twice the margin: no box, nothing decided without GEOS
        assert inner == _NO_BOX
        return
    assert inner != _NO_BOX
    grown = box(*inner).buffer(_INNER_BOX_MARGIN * 0.9, join_style="mitre")
    assert zone.contains(grown)
    if shape == "rectangle":  # the whole zone but the margin
        assert box(*inner).area > 0.95 * zone.area
    else:
        assert box(*inner).area > 0.02 * zone.area

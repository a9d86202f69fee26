"""Demo step ``buildings``: seeded buildings, households and residents.

Buildings are 8–20 m rectangles, rotated, clustered around village centres and along the lines between
neighbouring villages (the valleys and roads of a mountain district), plus some scatter. Each lies wholly
inside one grid (located with the Locator; the rest are dropped) and overlaps no other. About 40 stand
around 老沟湾 (太康村 6组), the slope of the signature scenario. Everything is written with Core bulk inserts.
"""

from __future__ import annotations

import gc
import json
import math
import time
from contextlib import ExitStack

import numpy as np
import shapely
from sqlalchemy import select, text

from cityops.core import audit
from cityops.core.bulk import rtree_trigger_suspended, write_rtree
from cityops.core.crs import LocalPlane
from cityops.core.storage import storage_of
from cityops.core.types import JSONText
from cityops.demo import names
from cityops.demo.generator import DemoContext, register_step
from cityops.housing import counts as building_counts
from cityops.housing.counts import COUNT_COLUMNS
from cityops.housing.models import Building, Household, Resident
from cityops.org.models import Place, Unit

#: Buildings per grid when the demo config names no total (the full demo's ~4 000 grids → ~100 000).
DEFAULT_BUILDINGS_PER_GRID = 25
#: Buildings guaranteed around the scenario place.
SCENARIO_PLACE, SCENARIO_BUILDINGS = "老沟湾", 40
REFERENCE_YEAR = 2026
_BATCH = 10_000
#: Buildings generated per block of neighbouring villages: bounds memory at census scale (8.09 million).
BLOCK_BUILDINGS = 250_000
#: Buildings per km² the default layout (hamlets of ~350 m, 25 buildings a grid) was drawn for.
_BASE_DENSITY_KM2 = 25.0
#: Candidate rounds per block before settling for fewer buildings than asked (only at impossible densities).
_MAX_ROUNDS = 16
#: Candidates per round at most: bounds memory when few survive the overlap check.
_MAX_CANDIDATES = 4 * BLOCK_BUILDINGS
#: Share of the district's area footprints may cover on average before they shrink (see ``_size_factor``).
_MAX_COVERAGE = 0.08
#: Share of a village's lattice sites (see ``_select_block``) buildings may take at the census scale.
_MAX_SITE_SHARE = 0.5

_STRUCTURES = (("砖混", 0.42), ("框架", 0.2), ("砖木", 0.14), ("土木", 0.16), ("钢结构", 0.03), ("其他", 0.05))
_USES = (("住宅", 0.82), ("商业", 0.08), ("公共", 0.04), ("工业", 0.03), ("其他", 0.03))
_GRADES = (("A", 0.5), ("B", 0.3), ("C", 0.1), ("D", 0.03), (None, 0.07))
_RELATIONS = ("配偶", "子女", "子女", "父母", "孙子女", "兄弟姐妹", "其他")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _pick(rng: np.random.Generator, table, n: int) -> list:
    values = [v for v, _ in table]
    p = np.array([w for _, w in table], dtype=float)
    return [values[i] for i in rng.choice(len(values), size=n, p=p / p.sum())]


def _spread(target: int, district_km2: float) -> float:
    """How much wider than the default layout buildings spread: 1 at the default density, growing with the
    square root of the density (the census scale fills valleys, not ever-denser hamlets)."""
    density = target / max(district_km2, 1.0)
    return float(np.clip(math.sqrt(density / _BASE_DENSITY_KM2), 1.0, 12.0))


def _size_factor(target: int, district_km2: float) -> float:
    """Footprint scale: 1 (8–20 m sides) up to the 1-million scale; smaller beyond, so that at the census
    scale (8.09 million buildings in ~4,000 km², i.e. 40 % of the land under 8–20 m houses) footprints cover
    at most ``_MAX_COVERAGE`` of the land and the non-overlapping layout stays reachable."""
    coverage = target / max(district_km2, 1.0) * 196e-6  # mean footprint 14 m × 14 m, in km²
    return float(min(1.0, math.sqrt(_MAX_COVERAGE / coverage))) if coverage > 0 else 1.0


def _capped_shares(weights: np.ndarray, capacity: np.ndarray, target: int) -> np.ndarray:
    """Buildings per village ∝ ``weights``, none above its ``capacity``, the excess spread over the villages
    with room in proportion to their weights (the small, grid-dense town communities fill up first)."""
    share = weights / weights.sum() * target
    for _ in range(100):
        over = share > capacity
        if not over.any():
            break
        excess = float((share[over] - capacity[over]).sum())
        share[over] = capacity[over]
        room = share < capacity
        if not room.any():
            break
        share[room] += excess * weights[room] / weights[room].sum()
    return share


#: How far (metres) a valley road swings either side of the straight line between two villages.
ROAD_MEANDER_M = 120.0


def road_meander(t: np.ndarray, index: np.ndarray | int) -> np.ndarray:
    """The road's offset across the straight line at ``t`` (0 → 1 along it) for road number ``index``: the same
    curve for the houses that line it here and for the road the base map draws (cityops/base/basemap.py)."""
    return ROAD_MEANDER_M * np.sin(t * math.pi * 3 + index)


def road_segments(centres: np.ndarray) -> np.ndarray:
    """Village pairs (i, j) joined by a road: each village to its two nearest neighbours, mutual ones once."""
    pairs = set()
    if len(centres) < 2:
        return np.empty((0, 2), dtype=int)
    for i, c in enumerate(centres):
        # Brute-force distances are fine for a few hundred villages.
        nearest = np.argsort(np.hypot(*(centres - c).T))[1:3]
        for j in nearest:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return np.array(sorted(pairs), dtype=int)


class _Layout:
    """Where candidate buildings go (metric plane): hamlets per village (fixed for the whole run, so repeated
    rounds fill the same hamlets), roads between neighbouring villages, and some scatter."""

    def __init__(self, rng: np.random.Generator, villages_m: list, weights: np.ndarray, spread: float, size: float = 1.0):
        self.size = size
        self.centres = np.array([[p.x, p.y] for p in (v.representative_point() for v in villages_m)])
        self.bounds = np.array([v.bounds for v in villages_m])
        self.weights = weights
        self.spread = spread
        area = np.array([v.area for v in villages_m])
        n_hamlets = 4 * math.ceil(spread)
        sigma = np.minimum(350 * spread, 0.35 * np.sqrt(area))
        self.hamlets = self.centres[:, None, :] + rng.normal(0, 1, (len(villages_m), n_hamlets, 2)) * sigma[:, None, None]
        self.segments = road_segments(self.centres)

    def candidates(self, rng: np.random.Generator, block: np.ndarray, n: int, mix: tuple[float, float] = (0.45, 0.4)) -> np.ndarray:
        """``n`` candidate centres for the villages ``block`` (indices): by default 45 % hamlets, 40 % roads, 15 %
        scatter (``mix`` = the hamlet and road shares)."""
        w = self.weights[block] / self.weights[block].sum()
        n_cluster, n_road = int(n * mix[0]), int(n * mix[1])
        which = block[rng.choice(len(block), n_cluster, p=w)]
        local = 90 * math.sqrt(self.spread)
        cluster = self.hamlets[which, rng.integers(0, self.hamlets.shape[1], n_cluster)] + rng.normal(0, local, (n_cluster, 2))
        in_block = np.isin(self.segments, block).any(axis=1) if len(self.segments) else np.zeros(0, dtype=bool)
        segments = self.segments[in_block]
        numbers = np.flatnonzero(in_block)  # each road's number in the whole district: its curve is its own
        if len(segments) and n_road:
            a, b = self.centres[segments[:, 0]], self.centres[segments[:, 1]]
            length = np.hypot(*(b - a).T)
            seg = rng.choice(len(segments), n_road, p=length / length.sum())
            t = rng.random(n_road)
            direction = (b - a)[seg] / np.maximum(length[seg], 1)[:, None]
            normal = np.column_stack((-direction[:, 1], direction[:, 0]))
            # A valley road meanders: a sine wobble across the straight line, then houses on either side of it.
            wobble = road_meander(t, numbers[seg]) + rng.normal(0, 30, n_road)
            side = np.where(rng.random(n_road) < 0.5, -1, 1) * rng.uniform(10, 35 * self.spread, n_road)
            road = a[seg] + (b - a)[seg] * t[:, None] + normal * (wobble + side)[:, None]
        else:
            road, n_road = np.empty((0, 2)), 0
        n_scatter = n - n_cluster - n_road
        where = block[rng.choice(len(block), n_scatter, p=w)]
        lo, hi = self.bounds[where, :2], self.bounds[where, 2:]
        scatter = lo + (hi - lo) * rng.random((n_scatter, 2))
        return np.vstack((cluster, road, scatter))


def _blocks(weights: np.ndarray, target: int) -> list[np.ndarray]:
    """Consecutive villages (by code, so neighbours) in blocks of about ``BLOCK_BUILDINGS`` buildings."""
    share = weights / weights.sum() * target
    blocks, current, size = [], [], 0.0
    for i, s in enumerate(share):
        current.append(i)
        size += s
        if size >= BLOCK_BUILDINGS:
            blocks.append(np.array(current))
            current, size = [], 0.0
    if current:
        blocks.append(np.array(current))
    return blocks


def _rectangles(rng: np.random.Generator, centres: np.ndarray, plane: LocalPlane, size: float = 1.0):
    """Rotated 8–20 m rectangles (times ``size``) around ``centres`` (metric) → MultiPolygons in lon/lat, plus
    the sides."""
    n = len(centres)
    half = rng.uniform(8, 20, (n, 2)) * (size / 2)
    angle = rng.uniform(0, math.pi, n)
    cos, sin = np.cos(angle), np.sin(angle)
    corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)], dtype=float)
    local = corners[None, :, :] * half[:, None, :]
    x = centres[:, 0, None] + local[:, :, 0] * cos[:, None] - local[:, :, 1] * sin[:, None]
    y = centres[:, 1, None] + local[:, :, 0] * sin[:, None] + local[:, :, 1] * cos[:, None]
    lon = x / plane.kx + plane.lon0
    lat = y / plane.ky + plane.lat0
    polygons = shapely.polygons(np.stack((lon, lat), axis=-1))
    return shapely.multipolygons(polygons, indices=np.arange(n)), half * 2


def _bulk_insert(conn, table, rows: list[dict]) -> None:
    """Core bulk insert past SQLAlchemy's per-row bind processing (it would double the demo's build time):
    ``Storage.bulk_insert``. Values are already in storage form but for JSON."""
    if not rows:
        return
    columns = list(rows[0])
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSONText)}
    if json_columns:
        dumps = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
        values = [tuple(dumps(r[c]) if c in json_columns else r[c] for c in columns) for r in rows]
    else:
        values = [tuple(r.values()) for r in rows]
    storage_of(conn).bulk_insert(conn, table.name, columns, values)


def _people(rng: np.random.Generator, buildings: list[dict], first_building: int,
            first_household: int, first_resident: int, region: str) -> tuple[dict, dict, int]:
    """Households (1–3 per dwelling) and residents (1–6 each) of ``buildings``, as columns (name → list of values
    in table order): every value drawn and formatted in arrays, no dict per row (at the census scale, 10 million
    households and 32 million residents, the per-row dicts and their conversion to tuples were most of the step's
    Python time)."""
    dwelling = np.array([b["use"] == "住宅" for b in buildings])
    per_building = np.where(dwelling, rng.choice([1, 2, 3], size=len(buildings), p=[0.6, 0.28, 0.12]), 0)
    n_h = int(per_building.sum())
    h_building = np.repeat(np.arange(len(buildings)), per_building)
    h_number = np.arange(n_h) - np.repeat(np.cumsum(per_building) - per_building, per_building) + 1
    members = rng.choice(np.arange(1, 7), size=n_h, p=np.array([12, 25, 22, 20, 13, 8]) / 100)
    n_r = int(members.sum())
    r_household = np.repeat(np.arange(n_h), members)
    r_position = np.arange(n_r) - np.repeat(np.cumsum(members) - members, members)
    u = rng.random(n_r)
    head = r_position == 0
    age = np.where(head, np.where(u < 0.15, rng.integers(66, 91, n_r), rng.integers(25, 65, n_r)),
                   np.where(u < 0.14, rng.integers(65, 96, n_r),
                            np.where(u < 0.34, rng.integers(0, 14, n_r), rng.integers(14, 65, n_r))))
    birth = REFERENCE_YEAR - age
    male = rng.random(n_r) < 0.51
    month, day = rng.integers(1, 13, n_r), rng.integers(1, 29, n_r)
    seq = rng.integers(0, 500, n_r) * 2 + male
    disabled = rng.random(n_r) < 0.03
    bedridden = rng.random(n_r) < np.where(age >= 75, 0.08, 0.003)
    has_phone = head | ((age >= 16) & (age < 80) & (rng.random(n_r) < 0.7))
    relation = rng.integers(0, len(_RELATIONS), n_r)
    same_surname = rng.random(n_r) < 0.7
    # GB 11643 check digit, vectorised over the numeric parts.
    w = _ID_WEIGHTS
    check = sum(int(c) * w[i] for i, c in enumerate(region))
    for number, positions in ((birth, range(6, 10)), (month, range(10, 12)), (day, range(12, 14)), (seq, range(14, 17))):
        width = len(positions)
        for j, pos in enumerate(positions):
            check = check + (number // 10 ** (width - 1 - j)) % 10 * w[pos]
    check = check % 11

    # Names and phones drawn in arrays too (same alphabets as cityops.demo.names).
    surnames = np.array(list(names.SURNAMES))
    given = np.array(list(names.GIVEN))
    surname_of = rng.integers(0, len(surnames), n_r)
    first = surnames[surname_of]
    g1 = given[rng.integers(0, len(given), n_r)]
    g2 = np.where(rng.random(n_r) < 0.7, given[rng.integers(0, len(given), n_r)], "")
    full = np.strings.add(np.strings.add(first, g1), g2)
    given_only = np.strings.add(g1, g2)
    prefixes = np.array(names.MOBILE_PREFIXES)[rng.integers(0, len(names.MOBILE_PREFIXES), n_r)]
    phones = np.strings.add(prefixes, np.strings.zfill(rng.integers(0, 10**8, n_r).astype(str), 8))
    head_of = np.repeat(np.cumsum(members) - members, members)  # the head's resident index per resident

    # The counts the triggers keep on each building (suspended during the load: cityops.housing.counts).
    r_building = h_building[r_household]
    elderly, child = age >= 65, age < 14
    flags = {"elderly": elderly, "disabled": disabled, "child": child, "bedridden": bedridden}
    per_flag = {k: np.bincount(r_building, weights=v, minlength=len(buildings)).astype(int).tolist() for k, v in
                {"residents": np.ones(n_r), "vulnerable": elderly | disabled | child | bedridden, **flags}.items()}
    per_flag["households"] = per_building.tolist()
    for i, b in enumerate(buildings):
        for key in COUNT_COLUMNS:
            b[key] = per_flag[key][i]

    b_code = np.array([b["code"] for b in buildings], dtype=object)
    b_address = np.array([b["address"] for b in buildings], dtype=object)
    b_grid = np.array([b["grid_code"] for b in buildings], dtype=object)
    b_path = np.array([b["unit_path"] for b in buildings], dtype=object)
    b_tall = np.array([b["floors"] > 3 for b in buildings], dtype=bool)
    head_index = np.cumsum(members) - members
    number_l = h_number.tolist()
    households = {
        "id": range(first_household, first_household + n_h),
        "code": [f"{c}{n:02d}" for c, n in zip(b_code[h_building].tolist(), number_l)],
        "building_id": (first_building + h_building).tolist(),
        "head_name": full[head_index].tolist(),
        "phone": phones[head_index].tolist(),
        "address": b_address[h_building].tolist(),
        "room": [f"{n}单元" if tall else None for n, tall in zip(number_l, b_tall[h_building].tolist())],
        "members": members.tolist(),
        "grid_code": b_grid[h_building].tolist(),
        "unit_path": b_path[h_building].tolist(),
    }
    # A member who shares the head's surname takes its first character (as the per-row code did: full[head][0]).
    initial = np.array([s[0] for s in surnames])[surname_of[head_of]]
    name = np.where(head | ~same_surname, full, np.strings.add(initial, given_only))
    # Birth year (four digits), month, day and sequence as one 15-digit number: one integer-to-text conversion.
    digits = (((birth * 100 + month) * 100 + day) * 1000 + seq).astype(str)
    id_number = np.strings.add(np.strings.add(region, digits), np.array(list(_ID_CHECK))[check])
    residents = {
        "id": range(first_resident, first_resident + n_r),
        "household_id": (first_household + r_household).tolist(),
        "name": name.tolist(),
        "id_number": id_number.tolist(),
        "birth_year": birth.tolist(),
        "sex": np.where(male, "男", "女").tolist(),
        "phone": [p if has else None for p, has in zip(phones.tolist(), has_phone.tolist())],
        "relation": np.where(head, "户主", np.array(_RELATIONS)[relation]).tolist(),
        "elderly": elderly.tolist(), "disabled": disabled.tolist(), "child": child.tolist(),
        "bedridden": bedridden.tolist(),
        "unit_path": b_path[r_building].tolist(),
    }
    return households, residents, int((age >= 65).sum())


def _select_block(rng: np.random.Generator, layout: _Layout, plane: LocalPlane, block: np.ndarray, target: int,
                  grid_tree: shapely.STRtree, grid_village: np.ndarray, scenario: np.ndarray | None,
                  scenario_village: int | None):
    """Footprints, sides, grid indices and scenario flags of up to ``target`` non-overlapping buildings in the
    villages ``block``, each wholly inside one of their grids. Candidates come in rounds until enough survive;
    a round's candidates are checked against every building kept so far (the earlier one wins).

    Beyond the density 8–20 m houses can fill (``layout.size`` < 1, the census scale) the overlap check by
    geometry keeps too few candidates per round, so each building takes a site of a lattice whose cells are
    wider than any footprint's diagonal: one building per cell cannot overlap another, and candidates are
    deduplicated as integer cell keys before any geometry is built."""
    kept_fp = np.empty(0, dtype=object)
    kept_sides, kept_grid, kept_scenario = np.empty((0, 2)), np.empty(0, dtype=int), np.empty(0, dtype=bool)
    in_block = np.zeros(max(int(block.max()), int(grid_village.max(initial=0))) + 1, dtype=bool)
    in_block[block] = True
    lattice = layout.size < 1.0
    cell = 20 * math.sqrt(2) * layout.size + 1.0  # the largest diagonal, plus 1 m between neighbours (as in step_buildings)
    used = np.empty(0, dtype=np.int64)
    oversample = 1.6
    for round_ in range(_MAX_ROUNDS):
        missing = target - len(kept_fp)
        if missing <= 0:
            break
        wanted = int(missing * oversample) + 50
        # On the lattice, once the hamlets fill up, later rounds scatter more widely over the villages.
        mix = (0.25, 0.25) if lattice and round_ else (0.45, 0.4)
        centres = layout.candidates(rng, block, min(wanted, (10 if lattice else 1) * _MAX_CANDIDATES), mix)
        first = scenario is not None and round_ == 0 and scenario_village is not None and in_block[scenario_village]
        n_scenario = len(scenario) if first else 0
        if n_scenario:
            centres = np.vstack((scenario, centres))
        is_scenario = np.arange(len(centres)) < n_scenario
        if lattice:
            ij = np.floor(centres / cell).astype(np.int64)
            keys = (ij[:, 0] << 32) + (ij[:, 1] & 0xFFFFFFFF)
            keys, first_at = np.unique(keys, return_index=True)  # sorted keys; the first candidate per cell wins
            # ``used`` stays sorted: a binary search is far cheaper here than np.isin's hashing of both arrays.
            at = np.minimum(np.searchsorted(used, keys), max(len(used) - 1, 0))
            fresh = ~(used[at] == keys) if len(used) else np.ones(len(keys), dtype=bool)
            keys, first_at = keys[fresh], first_at[fresh]
            if len(keys) > int(missing * 1.5) + 50:  # build geometry only for about what is missing
                pick = np.sort(np.concatenate((np.flatnonzero(is_scenario[first_at]),
                                               rng.choice(len(keys), int(missing * 1.5) + 50, replace=False))))
                pick = np.unique(pick)
                keys, first_at = keys[pick], first_at[pick]
            order = np.argsort(first_at, kind="stable")  # scenario candidates first, as generated
            keys, first_at = keys[order], first_at[order]
            is_scenario = is_scenario[first_at]
            centres = ((np.column_stack((keys >> 32, (keys << 32) >> 32)) + 0.5) * cell
                       + rng.uniform(-0.5, 0.5, (len(keys), 2)))
        footprints, sides = _rectangles(rng, centres, plane, layout.size)
        # Wholly inside one grid of this block (grids never overlap, so at most one). Asked as "grid contains
        # footprints" so that GEOS prepares each grid polygon once instead of testing every footprint afresh.
        grid, src = shapely.STRtree(footprints).query(grid_tree.geometries, predicate="contains")
        grid_of = np.full(len(footprints), -1)
        grid_of[src] = grid
        keep = grid_of >= 0
        keep[keep] = (grid_village[grid_of[keep]] >= 0) & in_block[grid_village[grid_of[keep]]]
        if n_scenario:  # the scenario cluster stays in its own village
            keep &= ~is_scenario | (grid_village[np.maximum(grid_of, 0)] == scenario_village)
        idx = np.flatnonzero(keep)
        if lattice:
            new = idx
            used = np.sort(np.concatenate((used, keys[idx])))
        else:
            # No overlaps: of two intersecting footprints the later goes (kept ones, then scenario ones, come first).
            everything = np.concatenate((kept_fp, footprints[idx]))
            left, right = shapely.STRtree(everything).query(everything, predicate="intersects")
            dropped = np.zeros(len(everything), dtype=bool)
            dropped[left[left > right]] = True
            new = idx[~dropped[len(kept_fp):]]
        survival = len(new) / max(len(footprints), 1)
        kept_fp = np.concatenate((kept_fp, footprints[new]))
        kept_sides = np.vstack((kept_sides, sides[new]))
        kept_grid = np.concatenate((kept_grid, grid_of[new]))
        kept_scenario = np.concatenate((kept_scenario, is_scenario[new]))
        oversample = min(1.3 / max(survival, 0.02), 40.0)
    # Keep the scenario houses (at most SCENARIO_BUILDINGS), then a random subset of the rest.
    scen = np.flatnonzero(kept_scenario)[:SCENARIO_BUILDINGS]
    others = np.flatnonzero(~kept_scenario)
    others = np.sort(others[rng.permutation(len(others))][: max(0, target - len(scen))])
    chosen = np.concatenate((scen, others)).astype(int)
    return kept_fp[chosen], kept_sides[chosen], kept_grid[chosen], kept_scenario[chosen]


def step_buildings(ctx: DemoContext) -> None:
    # Millions of short-lived row dicts (no reference cycles: refcounting frees them) would set off the cyclic
    # collector again and again, each pass walking every live object: about a quarter of a census build.
    enabled = gc.isenabled()
    gc.disable()
    try:
        _generate_buildings(ctx)
    finally:
        if enabled:
            gc.enable()


def _generate_buildings(ctx: DemoContext) -> None:
    # Imported here: cityops.base registers its demo step after this one, so it must not load first.
    from cityops.base.rtree_bulk import DeferredRtree

    started = time.perf_counter()
    rng = np.random.default_rng(ctx.rng.getrandbits(63))
    with ctx.sessions() as session:
        units = session.execute(select(Unit.code, Unit.name, Unit.level, Unit.path, Unit.parent_code, Unit.geom)).all()
        by_code = {u.code: u for u in units}
        villages = [u for u in sorted(units, key=lambda u: u.code) if u.level == "village"]
        district = next(u for u in units if u.level == "district")
        grids = [u for u in sorted(units, key=lambda u: u.code) if u.level == "grid"]
        per_grid = getattr(ctx.config, "buildings_per_grid", DEFAULT_BUILDINGS_PER_GRID)
        target = int(getattr(ctx.config, "buildings", None) or per_grid * len(grids))
        place = session.scalar(select(Place).where(Place.name == SCENARIO_PLACE))
        plane = LocalPlane(district.geom.centroid.x, district.geom.centroid.y)

        village_index = {v.code: i for i, v in enumerate(villages)}
        grid_village = np.array([village_index.get(g.parent_code, -1) for g in grids], dtype=int)
        grid_count = np.bincount(grid_village[grid_village >= 0], minlength=len(villages)).astype(float)
        weights = np.maximum(grid_count, 0.5)  # buildings per village ∝ its grids: same density per grid
        villages_m = [plane.forward(v.geom) for v in villages]
        district_km2 = sum(v.area for v in villages_m) / 1e6
        size = _size_factor(target, district_km2)
        if size < 1.0:  # census scale: no village asked for more buildings than its lattice sites allow
            cell = 20 * math.sqrt(2) * size + 1.0
            capacity = np.array([v.area for v in villages_m]) / cell**2 * _MAX_SITE_SHARE
            weights = _capped_shares(weights, capacity, target)
        layout = _Layout(rng, villages_m, weights, _spread(target, district_km2), size)
        grid_tree = shapely.STRtree(np.array([g.geom for g in grids], dtype=object))
        scenario, scenario_village = None, None
        if place is not None:
            p = plane.forward(place.geom)
            r = np.sqrt(rng.random(SCENARIO_BUILDINGS * 3)) * 150
            a = rng.uniform(0, 2 * math.pi, len(r))
            scenario = np.column_stack((p.x + r * np.cos(a), p.y + r * np.sin(a)))
            scenario_village = village_index.get(place.unit_code[:12])
        blocks = _blocks(weights, target)
        share = weights / weights.sum() * target

        storage = storage_of(session)
        first_building = (session.scalar(text("SELECT max(id) FROM buildings")) or 0) + 1
        first_household = (session.scalar(text("SELECT max(id) FROM households")) or 0) + 1
        first_resident = (session.scalar(text("SELECT max(id) FROM residents")) or 0) + 1
        region = ctx.catalogue["district"]["code"][:6]
        serial: dict[str, int] = {}
        n_b = n_h = n_r = n_elderly = 0
        bid, hid, rid = first_building, first_household, first_resident
        timing = {"prepare": time.perf_counter() - started, "layout": 0.0, "rows": 0.0, "insert": 0.0}
        conn = session.connection()
        packed = None
        loading = ExitStack()
        loading.enter_context(storage.bulk_cache(conn, 262_144))  # 256 MB for this connection: the load's indexes fit
        if storage.rtree_index:
            # Into an empty registry the R*Tree is packed once at the end instead of filled entry by entry.
            packed = DeferredRtree(conn, Building.__table__.name, "footprint")
            packed = packed if packed.usable else None
        allotted = 0.0
        # Into empty tables the indexes and foreign keys are built once at the end (PostgreSQL).
        loading.enter_context(storage.deferred_indexes(conn, ["buildings", "households", "residents"]))
        # The rows carry their buildings' counts, so the count triggers stay out of the load.
        with building_counts.suspended(conn):
            only = getattr(ctx.config, "building_blocks", None)
            for block_number, block in enumerate(blocks):
                t0 = time.perf_counter()
                # Round the running total, so the blocks add up to the target exactly.
                block_target = int(round(allotted + share[block].sum())) - int(round(allotted))
                allotted += share[block].sum()
                if only is not None and block_number not in only:
                    continue
                footprints, sides, grid_idx, is_scenario = _select_block(
                    rng, layout, plane, block, block_target, grid_tree, grid_village, scenario, scenario_village)
                # Stable order: by grid, so codes run grid by grid.
                order = np.argsort(grid_idx, kind="stable")
                footprints, sides, grid_idx, is_scenario = footprints[order], sides[order], grid_idx[order], is_scenario[order]
                timing["layout"] += time.perf_counter() - t0
                for start in range(0, len(footprints), _BATCH):
                    t0 = time.perf_counter()
                    part = slice(start, start + _BATCH)
                    geoms = footprints[part]
                    n = len(geoms)
                    encoded = storage.bulk_geometries(geoms)
                    structures = _pick(rng, _STRUCTURES, n)
                    uses = _pick(rng, _USES, n)
                    grades = _pick(rng, _GRADES, n)
                    floors = np.minimum(1 + rng.poisson(1.1, n), 7)
                    years = rng.integers(1965, 2024, n)
                    part_sides, part_grid, part_scenario = sides[part].tolist(), grid_idx[part].tolist(), is_scenario[part].tolist()
                    buildings = []
                    for k in range(n):
                        g = grids[part_grid[k]]
                        grid = g.code
                        codes = g.path.strip("/").split("/")
                        township, village = by_code[codes[-3]].name, by_code[codes[-2]].name
                        serial[grid] = serial.get(grid, 0) + 1
                        code = f"{grid}{serial[grid]:04d}"
                        group = int(grid[-3:]) if grid[-3:].isdigit() else 1
                        scenario_house = part_scenario[k]
                        use = "住宅" if scenario_house else uses[k]
                        structure = structures[k]
                        if structure == "土木" and years[k] > 1995:
                            structure = "砖混"
                        grade = grades[k]
                        if scenario_house:
                            grade = ("B", "C", "C", "D")[serial[grid] % 4]
                            address = f"{township}{village}6组{SCENARIO_PLACE}{serial[grid]}号"
                        else:
                            address = f"{township}{village}{group}组{serial[grid]}号"
                        f = int(floors[k]) if structure in ("框架", "钢结构", "砖混") else min(int(floors[k]), 3)
                        w, h = part_sides[k]
                        buildings.append(dict(
                            id=bid + k, code=code, name=None if use == "住宅" else f"{village}{use}用房{serial[grid]}",
                            address=address, footprint=encoded[k], floors=f, height_m=round(f * 3.0 + 0.4, 1),
                            structure=structure, use=use, year_built=int(years[k]), safety_grade=grade, grid_code=grid,
                            unit_path=g.path,
                            attributes={"footprint_m": [round(w, 1), round(h, 1)],
                                        **({"place": SCENARIO_PLACE} if scenario_house else {})}))
                    households, residents, elderly = _people(rng, buildings, bid, hid, rid, region)
                    timing["rows"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    with rtree_trigger_suspended(conn, Building.__table__.name, "footprint") as index_by_hand:
                        _bulk_insert(conn, Building.__table__, buildings)
                        for table, columns in ((Household.__table__, households), (Resident.__table__, residents)):
                            storage.bulk_insert(conn, table.name, list(columns), list(zip(*columns.values())))
                        if index_by_hand and packed is not None:
                            packed.add(np.arange(bid, bid + n), geoms)
                        elif index_by_hand:
                            write_rtree(conn, Building.__table__.name, np.arange(bid, bid + n), geoms, "footprint")
                    timing["insert"] += time.perf_counter() - t0
                    bid, hid, rid = bid + n, hid + len(households["id"]), rid + len(residents["id"])
                    n_b, n_h, n_r, n_elderly = n_b + n, n_h + len(households["id"]), n_r + len(residents["id"]), n_elderly + elderly
                    ctx.progress(f"buildings: {n_b:,} of {target:,}")
        if packed is not None:
            t0 = time.perf_counter()
            packed.finish()
            timing["insert"] += time.perf_counter() - t0
        loading.close()  # the page cache back to what it was
        storage.after_bulk_load(conn, ["buildings", "households", "residents"])  # explicit ids: sequences past them
        audit.record(session, audit.SYSTEM, "demo.buildings", "building", "*",
                     after={"buildings": n_b, "households": n_h, "residents": n_r})
        session.commit()
    timing["total"] = time.perf_counter() - started
    ctx.progress("buildings step timing: " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items()))
    ctx.summary["buildings"] = n_b
    ctx.summary["households"] = n_h
    ctx.summary["residents"] = n_r
    ctx.summary["elderly"] = n_elderly
    ctx.summary["buildings_timing_s"] = {k: round(v, 1) for k, v in timing.items()}


register_step("buildings", step_buildings, after="users")

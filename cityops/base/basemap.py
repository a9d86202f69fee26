"""Demo step ``basemap``: the district's own geography for the offline base map (一张图底图), derived from the
generated villages so that it agrees with everything else the demo made, and loaded as catalogue layers that join
the base map tile set (``tiles/tilesets.toml`` key categories): no internet tile server is ever needed.

- **Rivers** run through the valleys where the villages are: the minimum spanning tree of the village centres,
  drained towards the district seat (``water.outlet_township``), sized by the villages upstream; the largest
  are named after Kaizhou's rivers. A lake floods the main river's last reach (汉丰湖).
- **Roads** are the valley roads the houses were placed along (``housing.demo.road_segments`` and
  ``road_meander``: the same curves), classed by the river they follow.
- **Relief**: an elevation model rising from the valley floors (which climb gently upstream) towards ridges that
  are higher in the north (the Daba Mountains), with smooth irregularity; from it contour lines, elevation bands,
  hill shading (polygons of the shaded and lit slopes) and named summits.
- **Place names**: township labels at their pole of inaccessibility, villages at their village office, and the
  named places of the scenarios.

The step draws from its own random stream, so the other steps' output stays as it was.
"""

from __future__ import annotations

import math
import time
import tomllib
from pathlib import Path

import numpy as np
import shapely
from shapely.ops import polylabel, substring
from sqlalchemy import select

from cityops.base import service
from cityops.core import audit
from cityops.core.crs import LocalPlane
from cityops.demo.generator import DemoContext, register_step
from cityops.base import demo as _base_demo  # noqa: F401  (the "base_layers" step this one follows)
from cityops.housing.demo import road_meander, road_segments
from cityops.identity.scope import Scope
from cityops.org.models import Place, Unit

CATALOGUE = Path(__file__).with_name("demo_basemap.toml")
_ALL = Scope(all_units=True)
_GEOMETRY_TYPES = {"POINT", "LINESTRING", "POLYGON", "MULTIPOLYGON"}
SCHEMAS = {
    "relief": [("kind", "string"), ("elevation", "integer")],
    "contours": [("elevation", "integer"), ("index", "boolean")],
    "rivers": [("name", "string"), ("name_en", "string"), ("order", "integer")],
    "lakes": [("name", "string"), ("name_en", "string")],
    "roads": [("class", "string"), ("name", "string")],
    "peaks": [("name", "string"), ("name_en", "string"), ("elevation", "integer")],
    "place_names": [("name", "string"), ("name_en", "string"), ("kind", "string"), ("unit_code", "string")],
}


def load_catalogue(path: Path = CATALOGUE) -> dict:
    """The base map's catalogue, validated on load (every problem named)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    problems = []
    if data.get("version") != 1:
        problems.append(f"unsupported version {data.get('version')!r}")
    layers = data.get("layers", {})
    for key in SCHEMAS:
        spec = layers.get(key)
        if not isinstance(spec, dict):
            problems.append(f"layers.{key} is missing")
            continue
        for field in ("category", "title_zh", "title_en"):
            if not isinstance(spec.get(field), str) or not spec[field]:
                problems.append(f"layers.{key}.{field} is missing")
        if spec.get("geometry_type") not in _GEOMETRY_TYPES:
            problems.append(f"layers.{key}.geometry_type must be one of {sorted(_GEOMETRY_TYPES)}")
    terrain = data.get("terrain", {})
    for field in ("base_elevation_m", "floor_gradient_m_per_km", "ridge_south_m", "ridge_north_m", "slope_length_m",
                  "roughness", "roughness_scale_m", "max_cells", "contour_interval_m", "index_contour_m"):
        if not isinstance(terrain.get(field), (int, float)) or terrain[field] < 0:
            problems.append(f"terrain.{field} must be a number ≥ 0")
    bands = terrain.get("bands_m")
    if not isinstance(bands, list) or len(bands) < 2 or bands != sorted(bands):
        problems.append("terrain.bands_m must be at least two ascending elevations")
    water = data.get("water", {})
    if not water.get("outlet_township") or not water.get("lake_name"):
        problems.append("water.outlet_township and water.lake_name are required")
    for field in ("main_river",):
        if not (isinstance(water.get(field), list) and len(water[field]) == 2):
            problems.append(f"water.{field} must be [name_zh, name_en]")
    if not all(isinstance(n, list) and len(n) == 2 for n in water.get("tributaries", [])):
        problems.append("water.tributaries must be [[name_zh, name_en], …]")
    if not all(isinstance(n, list) and len(n) == 2 for n in data.get("peaks", {}).get("names", [])):
        problems.append("peaks.names must be [[name_zh, name_en], …]")
    if problems:
        raise ValueError(f"{path.name}: " + "; ".join(problems))
    return data


def _sample(a: np.ndarray, b: np.ndarray, step: float) -> np.ndarray:
    """Fractions 0 → 1 along a → b, every ``step`` metres or so (at least 8 points)."""
    return np.linspace(0.0, 1.0, max(8, int(np.hypot(*(b - a)) / step) + 2))


class Geography:
    """The derived geography of one district, in a local metric plane; ``features()`` gives it in lon/lat."""

    def __init__(self, spec: dict, plane: LocalPlane, district, townships: list, villages: list, places: list,
                 rng: np.random.Generator):
        self.spec, self.plane, self.rng = spec, plane, rng
        self.district, self.townships, self.villages, self.places = district, townships, villages, places
        self.district_m = plane.forward(district.geom)
        # The village centres exactly as the buildings step computed them (same plane, same order).
        self.centres = np.array([[p.x, p.y] for p in (plane.forward(v.geom).representative_point() for v in villages)])
        self.roads = road_segments(self.centres)
        self._drainage()

    # ------------------------------------------------------------------------------------------- water
    def _drainage(self) -> None:
        from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree  # the demo's build only

        c = self.centres
        n = len(c)
        distances = np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1])
        tree = minimum_spanning_tree(distances)
        outlet = self._outlet()
        order, parent = breadth_first_order(tree + tree.T, outlet, directed=False, return_predecessors=True)
        self.outlet, self.parent = outlet, parent
        self.upstream = np.ones(n)  # villages drained through each village (itself included)
        for v in order[::-1]:
            if parent[v] >= 0:
                self.upstream[parent[v]] += self.upstream[v]
        self.from_outlet = np.zeros(n)  # metres along the rivers to the outlet
        for v in order:
            if parent[v] >= 0:
                self.from_outlet[v] = self.from_outlet[parent[v]] + distances[v, parent[v]]
        children: dict[int, list[int]] = {}
        for v in order:
            if parent[v] >= 0:
                children.setdefault(int(parent[v]), []).append(int(v))
        self.children = children
        # Named rivers: the main stem from the outlet up its largest branch, then its largest tributaries. A
        # village's reach is the river from it to its parent.
        water = self.spec["water"]
        self.river_of: dict[int, tuple[int, str, str]] = {}  # village → (rank, name, name_en) of its reach
        for v in self._chain(outlet):
            self.river_of[v] = (0, *water["main_river"])
        mouths = sorted({k for v in [outlet, *self.river_of] for k in children.get(v, [])
                         if k not in self.river_of and self.upstream[k] >= 3}, key=lambda k: -self.upstream[k])
        for rank, (mouth, names) in enumerate(zip(mouths, water.get("tributaries", [])), start=1):
            for v in (mouth, *self._chain(mouth)):
                self.river_of[v] = (rank, *names)

    def _chain(self, node: int) -> list[int]:
        """The villages up the largest branch above ``node``."""
        chain = []
        while node in self.children:
            node = max(self.children[node], key=lambda k: self.upstream[k])
            chain.append(node)
        return chain

    def _outlet(self) -> int:
        name = self.spec["water"]["outlet_township"]
        seat = next((t for t in self.townships if t.name == name), None)
        target = self.plane.forward(seat.geom).centroid if seat is not None else self.district_m.centroid
        return int(np.argmin(np.hypot(self.centres[:, 0] - target.x, self.centres[:, 1] - target.y)))

    def road_line(self, k: int) -> np.ndarray:
        i, j = self.roads[k]
        a, b = self.centres[i], self.centres[j]
        t = _sample(a, b, 60.0)
        d = (b - a) / max(np.hypot(*(b - a)), 1.0)
        normal = np.array([-d[1], d[0]])
        return a + (b - a) * t[:, None] + normal * road_meander(t, k)[:, None]

    def river_edges(self) -> list[tuple[int, int, np.ndarray]]:
        """(child, parent, points downstream) for every river reach: along the valley road where there is one
        (crossing it at each village), else its own meander."""
        road_of = {(int(i), int(j)): k for k, (i, j) in enumerate(self.roads)}
        gap = float(self.spec["water"].get("road_gap_m", 150.0))
        out = []
        for v, p in enumerate(self.parent):
            if p < 0:
                continue
            pair = (min(v, int(p)), max(v, int(p)))
            if pair in road_of:
                k = road_of[pair]
                line = self.road_line(k)
                i, j = self.roads[k]
                d = (self.centres[j] - self.centres[i]) / max(np.hypot(*(self.centres[j] - self.centres[i])), 1.0)
                t = np.linspace(0.0, 1.0, len(line))
                side = 1.0 if (k % 2) else -1.0
                line = line + np.array([-d[1], d[0]]) * (side * gap * np.sin(math.pi * t))[:, None]
                if pair[0] != v:  # the road runs parent → child: flow the other way
                    line = line[::-1]
            else:
                a, b = self.centres[v], self.centres[p]
                t = _sample(a, b, 60.0)
                length = np.hypot(*(b - a))
                d = (b - a) / max(length, 1.0)
                waves = 1 + v % 2
                amplitude = min(300.0, 0.1 * length) * (1 if v % 3 else -1)
                line = a + (b - a) * t[:, None] + np.array([-d[1], d[0]]) * (amplitude * np.sin(2 * math.pi * waves * t))[:, None]
            out.append((v, int(p), line))
        return out

    # ----------------------------------------------------------------------------------------- terrain
    def elevation(self, rivers: list[tuple[int, int, np.ndarray]]):
        """(xs, ys, z): cell centres (metres) and elevations (metres above sea level) of the elevation model."""
        from scipy import ndimage  # the demo's build only (not the catalogue's check at start-up)

        terrain = self.spec["terrain"]
        minx, miny, maxx, maxy = self.district_m.bounds
        margin = 3000.0
        minx, miny, maxx, maxy = minx - margin, miny - margin, maxx + margin, maxy + margin
        cell = max(max(maxx - minx, maxy - miny) / float(terrain["max_cells"]), 60.0)
        xs = np.arange(minx, maxx + cell, cell)
        ys = np.arange(miny, maxy + cell, cell)
        gradient = float(terrain["floor_gradient_m_per_km"]) / 1000.0
        base = float(terrain["base_elevation_m"])
        floor = np.full((len(ys), len(xs)), np.inf)
        for v, p, line in rivers:
            # Fraction from the child (0) to the parent (1): the floor descends downstream.
            steps = np.hypot(*np.diff(line, axis=0).T)
            along = np.concatenate(([0.0], np.cumsum(steps)))
            length = max(along[-1], 1.0)
            f = base + gradient * (self.from_outlet[p] + (self.from_outlet[v] - self.from_outlet[p]) * (1 - along / length))
            dense = np.linspace(0, 1, max(2, int(length / (cell / 2)) + 2))
            px = np.interp(dense * length, along, line[:, 0])
            py = np.interp(dense * length, along, line[:, 1])
            pf = np.interp(dense * length, along, f)
            ix = np.clip(((px - minx) / cell).astype(int), 0, len(xs) - 1)
            iy = np.clip(((py - miny) / cell).astype(int), 0, len(ys) - 1)
            np.minimum.at(floor, (iy, ix), pf)
        river = np.isfinite(floor)
        if not river.any():
            river[len(ys) // 2, len(xs) // 2] = True
            floor[river] = base
        distance, (iy, ix) = ndimage.distance_transform_edt(~river, sampling=cell, return_indices=True)
        floor = floor[iy, ix]
        north = np.clip((ys - miny) / max(maxy - miny, 1.0), 0, 1) ** 1.3
        ridge = float(terrain["ridge_south_m"]) + (float(terrain["ridge_north_m"]) - float(terrain["ridge_south_m"])) * north
        noise = ndimage.gaussian_filter(self.rng.normal(size=floor.shape), float(terrain["roughness_scale_m"]) / cell)
        noise /= max(noise.std(), 1e-9)
        rise = 1.0 - np.exp(-distance / float(terrain["slope_length_m"]))
        z = floor + ridge[:, None] * rise * (1.0 + float(terrain["roughness"]) * noise)
        z = ndimage.gaussian_filter(z, 1.0)
        return xs, ys, z, cell

    @staticmethod
    def hillshade(z: np.ndarray, cell: float, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
        """Lambertian shading lit from the north-west (0 = dark … 1 = facing the light)."""
        dzdy, dzdx = np.gradient(z, cell)
        norm = np.sqrt(dzdx**2 + dzdy**2 + 1.0)
        az, alt = math.radians(azimuth), math.radians(altitude)
        light = (math.cos(alt) * math.sin(az), math.cos(alt) * math.cos(az), math.sin(alt))
        return np.clip((-dzdx * light[0] - dzdy * light[1] + light[2]) / norm, 0, 1)

    # ------------------------------------------------------------------------------------------ output
    def features(self) -> dict[str, tuple[list[dict], np.ndarray]]:
        """Every layer's (properties, geometries in lon/lat)."""
        import contourpy
        from scipy import ndimage

        spec, terrain = self.spec, self.spec["terrain"]
        shapely.prepare(self.district_m)
        out: dict[str, tuple[list[dict], list]] = {key: ([], []) for key in SCHEMAS}

        def add(key: str, props: dict, geom) -> None:
            out[key][0].append(props)
            out[key][1].append(geom)

        def clipped(geoms: list, kind: str) -> list:
            """Geometries inside the district, as single parts of ``kind`` (lines or polygons)."""
            if not geoms:
                return []
            inside = shapely.intersection(np.array(geoms, dtype=object), self.district_m)
            parts = shapely.get_parts(inside[~shapely.is_empty(inside)])
            wanted = ("LineString",) if kind == "line" else ("Polygon",)
            return [g for g in parts if g.geom_type in wanted and not g.is_empty]

        rivers = self.river_edges()
        # Named rivers as one line each (labels follow them); the other reaches one by one.
        named: dict[str, tuple[int, str, list]] = {}
        for v, p, line in rivers:
            order = int(min(6, 1 + math.log2(self.upstream[v])))
            if v in self.river_of:
                rank, name, name_en = self.river_of[v]
                named.setdefault(name, (rank, name_en, []))[2].append(shapely.LineString(line))
                continue
            for part in clipped([shapely.LineString(line)], "line"):
                add("rivers", {"order": order}, part)
        main_line = None
        for name, (rank, name_en, lines) in sorted(named.items(), key=lambda item: item[1][0]):
            merged = shapely.line_merge(shapely.MultiLineString(lines))
            order = 6 if rank == 0 else 5 if rank <= 3 else 4
            if rank == 0:
                main_line = max(shapely.get_parts(merged), key=lambda g: g.length)
            for part in clipped(list(shapely.get_parts(merged)), "line"):
                add("rivers", {"name": name, "name_en": name_en, "order": order}, part)
        water = spec["water"]
        if main_line is not None and main_line.length > 0:
            # The main line flows to the outlet: its last reach is the lake.
            end = main_line.length
            reach = substring(main_line, max(0.0, end - float(water["lake_reach_m"])), end)
            lake = reach.buffer(float(water["lake_width_m"]) / 2, quad_segs=8).simplify(20)
            for part in clipped([lake], "polygon"):
                add("lakes", {"name": water["lake_name"], "name_en": water.get("lake_name_en")}, part)

        # Roads, classed by the river they follow.
        provincial = iter(spec.get("roads", {}).get("provincial", []))
        road_names: dict[str, str] = {}
        for k, (i, j) in enumerate(self.roads):
            child = i if self.parent[i] == j else j if self.parent[j] == i else None
            river = self.river_of.get(child) if child is not None else None
            if river and river[0] == 0:
                cls, name = "national", spec.get("roads", {}).get("national", [None])[0]
            elif river:
                cls = "provincial"
                if river[1] not in road_names:
                    road_names[river[1]] = next(provincial, None)
                name = road_names[river[1]]
            elif child is not None and self.upstream[child] >= 3:
                cls, name = "county", None
            else:
                cls, name = "village", None
            for part in clipped([shapely.LineString(self.road_line(k))], "line"):
                add("roads", {"class": cls, **({"name": name} if name else {})}, part)

        # Relief.
        xs, ys, z, cell = self.elevation(rivers)
        fill = contourpy.contour_generator(xs, ys, z, fill_type=contourpy.FillType.OuterOffset)
        bands = [float(b) for b in terrain["bands_m"]] + [1e5]

        def polygons(gen, lower, upper) -> list:
            found = []
            for points, offsets in zip(*gen.filled(lower, upper)):
                rings = [points[offsets[n]:offsets[n + 1]] for n in range(len(offsets) - 1)]
                rings = [r for r in rings if len(r) >= 4]
                if rings:
                    found.append(shapely.make_valid(shapely.Polygon(rings[0], rings[1:])).simplify(cell * 0.25))
            return found

        for lower, upper in zip(bands[:-1], bands[1:], strict=True):
            for part in clipped(polygons(fill, lower, upper), "polygon"):
                add("relief", {"kind": "band", "elevation": int(lower)}, part)
        shade = ndimage.gaussian_filter(self.hillshade(z, cell), 1.0)
        shading = contourpy.contour_generator(xs, ys, shade, fill_type=contourpy.FillType.OuterOffset)
        for kind, lower, upper in (("shade", 0.0, 0.6), ("light", 0.86, 1.01)):
            for part in clipped(polygons(shading, lower, upper), "polygon"):
                if part.area >= 4 * cell * cell:
                    add("relief", {"kind": kind, "elevation": 0}, part)
        lines = contourpy.contour_generator(xs, ys, z, line_type=contourpy.LineType.Separate)
        interval, index = int(terrain["contour_interval_m"]), int(terrain["index_contour_m"])
        for level in range(interval * math.ceil(float(z.min()) / interval), int(z.max()) + 1, interval):
            found = [shapely.LineString(p).simplify(cell * 0.2) for p in lines.lines(level) if len(p) >= 2]
            for part in clipped(found, "line"):
                add("contours", {"elevation": level, "index": level % index == 0}, part)

        # Summits: the highest local maxima in the district, far apart.
        names = spec.get("peaks", {}).get("names", [])
        if names:
            peak = (z == ndimage.maximum_filter(z, size=max(3, int(6000 / cell)))) \
                & (z >= float(spec["peaks"].get("min_elevation_m", 0)))
            iy, ix = np.nonzero(peak)
            inside = shapely.contains_xy(self.district_m, xs[ix], ys[iy])
            iy, ix = iy[inside], ix[inside]
            for n, k in enumerate(np.argsort(-z[iy, ix])[: len(names)]):
                add("peaks", {"name": names[n][0], "name_en": names[n][1], "elevation": int(round(z[iy[k], ix[k]]))},
                    shapely.Point(xs[ix[k]], ys[iy[k]]))

        # Back to lon/lat; place names are made there directly.
        result = {}
        for key, (props, geoms) in out.items():
            result[key] = (props, self.plane.inverse(np.array(geoms, dtype=object)) if geoms else np.array([], dtype=object))
        result["place_names"] = self.place_names()
        return result

    def place_names(self) -> tuple[list[dict], np.ndarray]:
        props, geoms = [], []
        for t in self.townships:
            shape = max(shapely.get_parts(t.geom), key=lambda g: g.area)
            props.append({"name": t.name, "name_en": t.name_en, "kind": "township", "unit_code": t.code})
            geoms.append(polylabel(shape, tolerance=0.002))
        offices = {p.unit_code: p for p in self.places if p.kind == "village_office"}
        for v in self.villages:
            office = offices.get(v.code)
            props.append({"name": v.name, "name_en": v.name_en, "kind": "village", "unit_code": v.code})
            geoms.append(office.geom if office is not None else v.geom.representative_point())
        for p in self.places:
            if p.kind != "village_office":
                props.append({"name": p.name, "name_en": None, "kind": "place", "unit_code": p.unit_code})
                geoms.append(p.geom)
        return props, np.array(geoms, dtype=object)


def step_basemap(ctx: DemoContext) -> None:
    started = time.perf_counter()
    spec = load_catalogue()
    rng = np.random.default_rng([int(ctx.config.seed), 0xBA5E])
    with ctx.sessions() as session:
        district = session.scalar(select(Unit).where(Unit.level == "district"))
        villages = list(session.scalars(select(Unit).where(Unit.level == "village").order_by(Unit.code)))
        if district is None or len(villages) < 2:
            return
        townships = list(session.scalars(select(Unit).where(Unit.level == "township").order_by(Unit.code)))
        places = list(session.scalars(select(Place).order_by(Place.id)))
        plane = LocalPlane(district.geom.centroid.x, district.geom.centroid.y)
        try:
            layers = Geography(spec, plane, district, townships, villages, places, rng).features()
        except ImportError:  # contourpy comes with the demo extra
            ctx.progress("base map: contourpy is not installed (pip install cityops[demo]); no base map layers")
            return
        counts = {}
        for key, (props, geoms) in layers.items():
            layer = spec["layers"][key]
            service.create_layer(session, audit.SYSTEM, _ALL, {
                "key": key, "category": layer["category"], "title_zh": layer["title_zh"], "title_en": layer["title_en"],
                "description_zh": "演示区县的地形、水系、道路与地名，由演示数据生成器根据村落分布推导。",
                "description_en": "The demo district's relief, water, roads and place names, derived from its villages.",
                "source": "演示数据生成器", "geometry_type": layer["geometry_type"], "unit_code": district.code})
            session.flush()
            if len(geoms):
                fids = [f"{key}-{n + 1}" for n in range(len(geoms))]
                service.load_features(session, audit.SYSTEM, _ALL, key, iter([(fids, props, geoms)]),
                                      source_name="demo generator",
                                      schema=[{"name": n, "type": t} for n, t in SCHEMAS[key]])
            counts[key] = len(geoms)
        session.commit()
    ctx.summary["basemap"] = counts
    ctx.progress(f"base map: {counts} in {time.perf_counter() - started:.1f} s")


register_step("basemap", step_basemap, after="base_layers")

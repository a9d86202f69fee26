"""The operations map's first view drawn by the server as one small SVG (``GET /api/map/overview``).

On a slow link the interactive map needs MapLibre and its worker (~360 kB) before it draws anything; this drawing
needs one request that ``index.html`` starts before any script. It shows what the interactive map shows at the
same view: relief, water, main roads, the unit boundaries (units outside the user's scope dimmed), township names,
and the live things an operator watches — active incidents with their zones, shelters, open cases, risk points by
warning level, alarms — read from the current data through each capability's own scoped query, each only when the
user holds its permission. The page shows it at once and removes it when MapLibre has drawn the same view with the
live layers (``src/overview.js``).

The view is the one MapLibre's ``fitBounds`` gives for the same box, size and padding (Web Mercator, the box
centred, scaled to fit): the drawing and the map that replaces it line up to the pixel.

The base part (everything but the live things) depends on the scope, the view and the data's stamps and is kept
in a small cache; the live things are read on every request.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from html import escape

import numpy as np
import shapely
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.base import featurestore
from cityops.core import ladder
from cityops.core.errors import InvalidInput
from cityops.core.storage import storage_of
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.tiles.catalogue import load_catalogue
from cityops.tiles.service import key_layers

#: The largest drawing asked for (a 4K wall); the smallest that is still a map.
MAX_SIDE = 4096
MIN_SIDE = 64
MAX_PADDING = 400
#: Douglas–Peucker tolerance in screen pixels: finer than the eye sees at this scale, and bytes on a slow link.
SIMPLIFY_PX = 0.8
#: The relief is a soft tint under everything else: coarser, and without specks (most of the drawing's bytes).
RELIEF_SIMPLIFY_PX = 1.5
RELIEF_MIN_AREA_PX = 24.0
#: Colours of the interactive map's style (src/map/style.js, src/map/live.js), so the swap does not flicker.
BACKGROUND = "#0d1d30"
BANDS = [(0, "#10273a"), (400, "#15303f"), (800, "#1b3a44"), (1200, "#244348"), (1600, "#2f4c4b"), (2200, "#3d5551")]
LEVEL_COLOURS = {"red": "#e5484d", "orange": "#f5821f", "yellow": "#f2c037", "blue": "#3b82f6", "none": "#8a99ab"}
ROAD_COLOURS = {"national": "#e0a84a", "provincial": "#d3b36c"}
CJK_FONTS = ("'Noto Sans CJK SC','Source Han Sans SC','PingFang SC','Microsoft YaHei','WenQuanYi Micro Hei',"
             "'Hiragino Sans GB',sans-serif")
#: Cases closer than this many pixels are drawn as one cluster with its count (as the map's clusters).
CLUSTER_PX = 40
_TILE = 512.0  # MapLibre's world size at zoom 0 (its zoom levels are of 512-pixel tiles)


@dataclass(frozen=True)
class View:
    """Web Mercator pixels of a box fitted into ``width`` × ``height`` with ``padding`` (MapLibre's fitBounds)."""

    width: int
    height: int
    scale: float  # screen pixels per world unit (world = Web Mercator scaled to [0, 1])
    cx: float
    cy: float

    @property
    def zoom(self) -> float:
        return math.log2(self.scale / _TILE)

    def bounds(self, margin_px: float = 8) -> tuple[float, float, float, float]:
        """The lon/lat box the drawing covers (with a margin for what reaches in from outside)."""
        m = margin_px / self.scale
        x0, x1 = self.cx - self.width / 2 / self.scale - m, self.cx + self.width / 2 / self.scale + m
        y0, y1 = self.cy - self.height / 2 / self.scale - m, self.cy + self.height / 2 / self.scale + m
        return (_lon(x0), _lat(y1), _lon(x1), _lat(y0))

    def xy(self, lon, lat):
        """Screen pixels of lon/lat (arrays or numbers)."""
        return ((_mx(lon) - self.cx) * self.scale + self.width / 2, (_my(lat) - self.cy) * self.scale + self.height / 2)


def _mx(lon):
    return (np.asarray(lon, dtype=float) + 180.0) / 360.0


def _my(lat):
    lat = np.clip(np.asarray(lat, dtype=float), -85.0511, 85.0511)
    return (1 - np.log(np.tan(np.radians(lat)) + 1 / np.cos(np.radians(lat))) / math.pi) / 2


def _lon(x: float) -> float:
    return x * 360.0 - 180.0


def _lat(y: float) -> float:
    return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y))))


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``w,s,e,n`` in WGS 84 / CGCS2000 degrees, a box of positive size."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise InvalidInput(f"bbox must be four numbers w,s,e,n; got {text!r}") from None
    if len(parts) != 4 or not all(math.isfinite(p) for p in parts):
        raise InvalidInput(f"bbox must be four finite numbers w,s,e,n; got {text!r}")
    w, s, e, n = parts
    if not (-180 <= w < e <= 180 and -85 <= s < n <= 85):
        raise InvalidInput(f"bbox {text!r} is not a box inside -180..180, -85..85 with west < east and south < north")
    return w, s, e, n


def fit(box: tuple[float, float, float, float], width: int, height: int, padding: int) -> View:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InvalidInput(f"width and height must be {MIN_SIDE}..{MAX_SIDE} pixels; got {width}×{height}")
    if not 0 <= padding <= MAX_PADDING or 2 * padding >= min(width, height):
        raise InvalidInput(f"padding {padding} leaves no room in {width}×{height}")
    w, s, e, n = box
    x0, x1 = float(_mx(w)), float(_mx(e))
    y0, y1 = float(_my(n)), float(_my(s))
    scale = min((width - 2 * padding) / max(x1 - x0, 1e-12), (height - 2 * padding) / max(y1 - y0, 1e-12))
    scale = min(scale, _TILE * 2 ** 18.5)  # the map's maxZoom
    return View(width, height, scale, (x0 + x1) / 2, (y0 + y1) / 2)


def scope_box(session: Session, scope: Scope) -> tuple[float, float, float, float] | None:
    """The box of the user's scope units (the map's first view without a remembered one); district-wide: the top
    units'."""
    if scope.all_units:
        stmt = select(Unit.geom).where(Unit.parent_code.is_(None), Unit.geom.is_not(None))
    else:
        stmt = select(Unit.geom).where(Unit.path.in_(sorted(scope.unit_paths)), Unit.geom.is_not(None))
    boxes = [g.bounds for g in session.scalars(stmt.limit(50)) if g is not None]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


# ------------------------------------------------------------------------------------------ geometry → path

def _project(view: View, geoms: np.ndarray, tolerance: float = SIMPLIFY_PX, min_area: float = 0.0) -> np.ndarray:
    def to_px(coords: np.ndarray) -> np.ndarray:
        x, y = view.xy(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    px = shapely.transform(geoms, to_px)
    margin = 4
    px = shapely.clip_by_rect(px, -margin, -margin, view.width + margin, view.height + margin)
    px = shapely.simplify(px, tolerance, preserve_topology=False)
    if min_area:  # specks of relief under a few pixels: bytes, no picture
        px = np.where(shapely.area(px) >= min_area, px, None)
    return px


def _ring(coords) -> str:
    pts = np.round(np.asarray(coords)[:, :2]).astype(int)
    if len(pts) > 1:  # consecutive duplicates after rounding say nothing
        keep = np.ones(len(pts), dtype=bool)
        keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
        pts = pts[keep]
    if len(pts) < 2:
        return ""
    # Relative steps after the first point: small numbers, half the bytes of absolute ones once compressed.
    steps = np.diff(pts, axis=0).ravel()
    return f"M{pts[0, 0]} {pts[0, 1]}l" + " ".join(map(str, steps.tolist())).replace(" -", "-")


def _path_d(geom, closed: bool) -> str:
    out = []
    for part in shapely.get_parts(geom):
        if part.is_empty:
            continue
        if part.geom_type == "Polygon":
            rings = [part.exterior, *part.interiors]
            for r in rings:
                s = _ring(r.coords)
                if s and len(r.coords) >= 4:
                    out.append(s + "Z")
        elif part.geom_type == "LineString":
            s = _ring(part.coords)
            if s:
                out.append(s)
        elif part.geom_type in ("GeometryCollection", "MultiPolygon", "MultiLineString"):
            out.append(_path_d(part, closed))
    return "".join(out)


def _paths(geoms, closed: bool) -> str:
    return "".join(_path_d(g, closed) for g in geoms if g is not None and not g.is_empty)


# ------------------------------------------------------------------------------------------------ base part

_BASE_CACHE: OrderedDict = OrderedDict()
_BASE_CACHE_MAX = 64
_LOCK = threading.Lock()


def _layer_rows(session: Session, layer, bounds) -> tuple[list[dict], np.ndarray]:
    storage = storage_of(session)
    current, _ = featurestore.tables(layer.key, layer.geometry_type)
    stmt = select(current.c.properties, storage.raw_geometry(current.c.geom).label("g")).where(current.c.geom.is_not(None))
    stmt = storage.bbox_prefilter(stmt, current.name, current.c.id, current.c.geom, bounds)
    rows = session.execute(stmt.order_by(current.c.id)).all()
    if not rows:
        return [], np.array([], dtype=object)
    return [dict(r.properties or {}) for r in rows], storage.decode_geometries([r.g for r in rows])


def _base(session: Session, scope: Scope, view: View, lang: str) -> str:
    bounds = view.bounds()
    layers = {layer.key: layer for layer in key_layers(session, scope, load_catalogue())}
    units_stamp = tuple(session.execute(select(func.count(Unit.id), func.max(Unit.updated_at), func.max(Unit.id))).one())
    stamp = (sorted((k, l.current_version, str(l.updated_at)) for k, l in layers.items()), units_stamp)
    scope_key = "all" if scope.all_units else tuple(sorted(scope.unit_paths))
    key = hashlib.sha1(repr((scope_key, view, lang, stamp)).encode()).hexdigest()
    with _LOCK:
        hit = _BASE_CACHE.get(key)
        if hit is not None:
            _BASE_CACHE.move_to_end(key)
            return hit
    out = []
    z = view.zoom
    if "relief" in layers:
        props, geoms = _layer_rows(session, layers["relief"], bounds)
        if len(geoms):
            px = _project(view, geoms, RELIEF_SIMPLIFY_PX, RELIEF_MIN_AREA_PX)
            kinds = np.array([p.get("kind") for p in props])
            elev = np.array([int(p.get("elevation") or 0) for p in props])
            for i, (lower, colour) in enumerate(BANDS):
                upper = BANDS[i + 1][0] if i + 1 < len(BANDS) else 1e9
                sel = (kinds == "band") & (elev >= lower) & (elev < upper)
                d = _paths(px[sel], True)
                if d:
                    out.append(f'<path class="relief" fill="{colour}" d="{d}"/>')
            for kind, colour, opacity in (("shade", "#02080f", 0.3), ("light", "#9fc4d6", 0.09)):
                d = _paths(px[kinds == kind], True)
                if d:
                    out.append(f'<path class="relief" fill="{colour}" fill-opacity="{opacity}" d="{d}"/>')
    if "lakes" in layers:
        _, geoms = _layer_rows(session, layers["lakes"], bounds)
        d = _paths(_project(view, geoms), True) if len(geoms) else ""
        if d:
            out.append(f'<path class="water" fill="#1f5d8c" d="{d}"/>')
    if "rivers" in layers:
        props, geoms = _layer_rows(session, layers["rivers"], bounds)
        if len(geoms):
            px = _project(view, geoms)
            order = np.array([int(p.get("order") or 1) for p in props])
            least = 3 if z < 9 else 2 if z < 11 else 1
            for o in sorted(set(order[order >= least].tolist())):
                d = _paths(px[order == o], False)
                width = round(max(0.6, min(6.0, 0.4 * o * 1.6 ** max(0.0, z - 8))), 1)
                if d:
                    out.append(f'<path class="water" fill="none" stroke="#2b78b4" stroke-width="{width}" stroke-linecap="round" '
                               f'stroke-linejoin="round" d="{d}"/>')
    if "roads" in layers:
        props, geoms = _layer_rows(session, layers["roads"], bounds)
        if len(geoms):
            px = _project(view, geoms)
            classes = np.array([p.get("class") or "" for p in props])
            shown = list(ROAD_COLOURS) if z < 10 else [*ROAD_COLOURS, "county", "other"]
            for cls in shown:
                sel = classes == cls if cls != "other" else ~np.isin(classes, ["national", "provincial", "county"])
                d = _paths(px[sel], False)
                colour = ROAD_COLOURS.get(cls, "#b9b9a0" if cls == "county" else "#8d99a6")
                width = {"national": 1.6, "provincial": 1.2}.get(cls, 0.6)
                if d:
                    out.append(f'<path class="road" fill="none" stroke="{colour}" stroke-width="{width}" stroke-linecap="round" '
                               f'stroke-linejoin="round" d="{d}"/>')
    out.append(_units(session, scope, view, bounds))
    if "place_names" in layers:
        props, geoms = _layer_rows(session, layers["place_names"], bounds)
        labels = []
        kinds = ("township",) if z < 10.5 else ("township", "village")
        for p, g in zip(props, geoms):
            if p.get("kind") not in kinds or g is None or g.is_empty:
                continue
            c = g if g.geom_type == "Point" else g.representative_point()
            x, y = view.xy(c.x, c.y)
            if not (0 <= x <= view.width and 0 <= y <= view.height):
                continue
            name = p.get("name_en") if lang == "en" and p.get("name_en") else p.get("name") or ""
            size = 13 if p.get("kind") == "township" else 11
            fill = "#ffffff" if p.get("kind") == "township" else "#dbe9f7"
            labels.append(f'<text x="{float(x):.0f}" y="{float(y):.0f}" font-size="{size}" fill="{fill}">{escape(name)}</text>')
        if labels:
            out.append(f'<g class="labels" font-family="{CJK_FONTS}" text-anchor="middle" dominant-baseline="middle" '
                       f'stroke="#06101c" stroke-width="2.8" paint-order="stroke" stroke-linejoin="round">{"".join(labels)}</g>')
    svg = "".join(out)
    with _LOCK:
        _BASE_CACHE[key] = svg
        if len(_BASE_CACHE) > _BASE_CACHE_MAX:
            _BASE_CACHE.popitem(last=False)
    return svg


def _units(session: Session, scope: Scope, view: View, bounds) -> str:
    storage = storage_of(session)
    stmt = select(Unit.level, Unit.path, storage.raw_geometry(Unit.geom).label("g")) \
        .where(Unit.level.in_(("district", "township")), Unit.geom.is_not(None), scope.sees_clause(Unit.path))
    stmt = storage.bbox_prefilter(stmt, "units", Unit.id, Unit.geom, bounds)
    rows = session.execute(stmt.order_by(Unit.id)).all()
    if not rows:
        return ""
    px = _project(view, storage.decode_geometries([r.g for r in rows]))
    levels = np.array([r.level for r in rows])
    covered = np.array([scope.covers(r.path) for r in rows])
    out = []
    dim = _paths(px[(levels == "township") & ~covered], True)
    if dim:
        out.append(f'<path fill="#000" fill-opacity="0.35" d="{dim}"/>')
    township = _paths(shapely.boundary(px[levels == "township"]), False)
    if township:
        out.append(f'<path class="township" fill="none" stroke="#4cc3f0" stroke-opacity="0.85" stroke-width="1.2" d="{township}"/>')
    district = _paths(shapely.boundary(px[levels == "district"]), False)
    if district:
        out.append(f'<path class="district" fill="none" stroke="#67e8f9" stroke-width="2.5" d="{district}"/>')
    return "".join(out)


# ------------------------------------------------------------------------------------------------ live part

def _inside(view: View, x: float, y: float, margin: float = 12) -> bool:
    return -margin <= x <= view.width + margin and -margin <= y <= view.height + margin


def _live(session: Session, principal, view: View) -> tuple[str, int]:
    """(SVG of the live things, how many are in the view). Each capability's own scoped list, as the map's layers."""
    scope = principal.scope
    out: list[str] = []
    shown = 0
    role = principal.role
    if role.allows("tasks.read"):
        from cityops.tasks import incidents as incidents_service
        from cityops.tasks import shelters as shelters_service
        from cityops.tasks.zones import current_zone

        zones, markers = [], []
        for inc in incidents_service.list_incidents(session, scope, status="active"):
            zone = current_zone(session, inc.id)
            geom = zone.geom if zone is not None else None
            if geom is not None:
                zones.append(geom)
            anchor = geom if geom is not None else inc.hazard_geom
            if anchor is None:
                continue
            minx, miny, maxx, maxy = anchor.bounds
            x, y = view.xy((minx + maxx) / 2, (miny + maxy) / 2)
            if _inside(view, float(x), float(y)):
                markers.append((float(x), float(y), inc.title))
        if zones:
            d = _paths(_project(view, np.array(zones, dtype=object)), True)
            if d:
                out.append(f'<path class="live incident-zone" fill="#e5484d" fill-opacity="0.18" stroke="#ff6b6b" '
                           f'stroke-width="2.5" stroke-dasharray="4 2" d="{d}"/>')
        shelters = []
        for s in shelters_service.list_shelters(session, scope):
            if s.get("lon") is None:
                continue
            x, y = view.xy(s["lon"], s["lat"])
            if _inside(view, float(x), float(y)):
                full = s.get("capacity") and s.get("occupancy", 0) >= s["capacity"]
                shelters.append(f'<circle cx="{float(x):.0f}" cy="{float(y):.0f}" r="3" fill="{"#f43f5e" if full else "#10b981"}"/>')
        if shelters:
            shown += len(shelters)
            out.append(f'<g class="live shelters" stroke="#fff" stroke-width="1">{"".join(shelters)}</g>')
        for x, y, title in markers:
            shown += 1
            out.append(f'<g class="live incident"><circle cx="{x:.0f}" cy="{y:.0f}" r="9" fill="#e5484d" stroke="#fff" '
                       f'stroke-width="2.5"/><text x="{x:.0f}" y="{y + 22:.0f}" font-family="{CJK_FONTS}" font-size="13" '
                       f'text-anchor="middle" fill="#ffd2d2" stroke="#2a0708" stroke-width="3" paint-order="stroke">'
                       f'{escape(title)}</text></g>')
    if role.allows("events.read"):
        from cityops.events import queries as case_queries
        from cityops.events.workflow import ACTIVE

        rows, _ = case_queries.list_cases(session, scope, state=",".join(ACTIVE), limit=5000)
        cells: dict[tuple[int, int], list[float]] = {}
        for c in rows:
            if c.lon is None or c.lat is None:
                continue
            x, y = view.xy(c.lon, c.lat)
            x, y = float(x), float(y)
            if not _inside(view, x, y, 0):
                continue
            cell = cells.setdefault((int(x // CLUSTER_PX), int(y // CLUSTER_PX)), [0.0, 0.0, 0])
            cell[0] += x
            cell[1] += y
            cell[2] += 1
        dots = []
        for sx, sy, n in cells.values():
            x, y = sx / n, sy / n
            if n == 1:
                dots.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="3.5" fill="#c084fc"/>')
            else:
                r = 8 if n < 10 else 11 if n < 50 else 15
                dots.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="{r}" fill="#a855f7" fill-opacity="0.75"/>'
                            f'<text x="{x:.0f}" y="{y:.0f}" stroke="none" fill="#fff">{n}</text>')
        if dots:
            shown += len(dots)
            out.append(f'<g class="live cases" stroke="#fff" stroke-width="1" font-size="11" font-family="sans-serif" '
                       f'text-anchor="middle" dominant-baseline="central">{"".join(dots)}</g>')
    if role.allows("warning.read"):
        from cityops.warning import service as warning_service

        rows, _ = warning_service.list_risk_points(session, scope, limit=100_000)
        by_level: dict[str, list[str]] = {}
        halos = []
        radius = 5.5 if view.zoom >= 8 else 4
        for rp in rows:
            if rp.geom is None:
                continue
            x, y = view.xy(rp.geom.x, rp.geom.y)
            x, y = float(x), float(y)
            if not _inside(view, x, y):
                continue
            level = rp.level or "none"
            r = 3 if level == "none" else radius
            by_level.setdefault(level, []).append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="{r}"/>')
            if level in ("red", "orange"):
                halos.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="10" fill="{LEVEL_COLOURS[level]}"/>')
        if halos:
            out.append(f'<g class="live risk-halos" fill-opacity="0.28">{"".join(halos)}</g>')
        for level in ladder.LEVELS:  # ascending: the most severe drawn on top
            if by_level.get(level):
                shown += len(by_level[level])
                out.append(f'<g class="live risk-points" data-level="{level}" fill="{LEVEL_COLOURS[level]}" stroke="#0b1320" '
                           f'stroke-width="1.2">{"".join(by_level[level])}</g>')
    if role.allows("sensing.read"):
        from cityops.sensing import alarms as alarms_service

        rows, _ = alarms_service.list_alarms(session, scope, status="active,acknowledged", limit=1000)
        rings = []
        for a in rows:
            if a.lon is None or a.lat is None:
                continue
            x, y = view.xy(a.lon, a.lat)
            x, y = float(x), float(y)
            if _inside(view, x, y):
                rings.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="7" stroke="{LEVEL_COLOURS.get(a.severity, "#ffffff")}"/>')
        if rings:
            shown += len(rings)
            out.append(f'<g class="live alarms" fill="none" stroke-width="3">{"".join(rings)}</g>')
    return "".join(out), shown


def overview_svg(session: Session, principal, *, width: int, height: int, bbox: str | None, padding: int,
                 lang: str = "zh-CN") -> str:
    """The SVG of the first view: ``bbox`` (w,s,e,n) fitted into ``width`` × ``height`` with ``padding``, or the
    user's scope when no box is given (the map's first visit)."""
    if lang not in ("zh-CN", "en"):
        raise InvalidInput(f"lang must be zh-CN or en; got {lang!r}")
    box = parse_bbox(bbox) if bbox else scope_box(session, principal.scope)
    if box is None:
        raise InvalidInput("no bbox given and the user's scope has no geometry to fit")
    view = fit(box, width, height, padding)
    base = _base(session, principal.scope, view, lang)
    live, shown = _live(session, principal, view)
    w, s, e, n = view.bounds(0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'data-zoom="{view.zoom:.4f}" data-live="{shown}" data-bounds="{w:.6f},{s:.6f},{e:.6f},{n:.6f}">'
            f'<rect width="100%" height="100%" fill="{BACKGROUND}"/><g class="base">{base}</g>'
            f'<g class="live-things">{live}</g></svg>')

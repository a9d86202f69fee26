"""Raster tiles of the static base map (底图栅格瓦片): relief, contours, water, roads and unit boundaries drawn by
the server into one PNG per tile, for maps whose WebGL is drawn in software.

On a software renderer (SwiftShader, llvmpipe: duty-room thin clients and virtual desktops) a frame costs what
its fills and lines cover in pixels, and the vector base map is ~150 draw calls over the whole view on every frame
of a pan. The same picture as one textured quad per tile costs about what the background does. Labels, buildings and
the live layers stay vector in the browser (CJK text from the system's font, clickable features).

* Drawn from the same rows as the vector tile set ``basemap``: the same key layers (``relief``, ``contours``,
  ``lakes``, ``rivers``, ``roads``) and units, the same scope (units outside the viewer's scope dimmed), the same
  per-zoom generalisation, with the colours, widths and zoom rules of the app's style (``map/style.js``, mirrored
  in ``LAYERS`` below: a change of one needs the other).
* Styles: ``base`` (everything, for the operations map and the cockpit) and ``terrain`` (no unit boundaries, for
  the command view, which draws its zone). ``parts`` leaves out what the user switched off.
* Cached in the vector tiles' cache (``TileService``) under the stamps of what they show (units, the key layers'
  versions), so a layer import, a rollback or a unit change — the bus's ``tile_source.changed`` for units — makes
  old tiles unreachable, as for the vector tiles.

Drawn with Skia (skia-python): anti-aliased fills and strokes with round caps and joins, PNG encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
import skia
from sqlalchemy.orm import Session

from cityops.core.errors import InvalidInput, NotFound
from cityops.core.storage import storage_of
from cityops.identity.scope import Scope
from cityops.tiles.catalogue import Catalogue

#: Pixels across a tile: MapLibre's own tile size (its vector tiles are 512 px), so a raster tile of zoom z is shown
#: at map zoom z, on the same tile as the vector tile z whose rows it draws, with the style's widths at zoom z.
SIZE = 512
MEDIA_TYPE = "image/png"
BACKGROUND = "#0d1d30"

#: Parts of the static base map, each a switch of the app's layer list.
PARTS = ("relief", "contours", "water", "roads", "units", "grids")
#: Styles and the parts they may draw.
STYLES = {"base": PARTS, "terrain": ("relief", "contours", "water", "roads")}


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _lerp(stops: list[tuple[float, float]], z: float, base: float = 1.0) -> float:
    """MapLibre's ``interpolate`` (linear, or exponential with ``base``) over (zoom, value) stops."""
    if z <= stops[0][0]:
        return stops[0][1]
    for (z0, v0), (z1, v1) in zip(stops, stops[1:]):
        if z <= z1:
            t = (z - z0) / (z1 - z0) if base == 1.0 else (base ** (z - z0) - 1) / (base ** (z1 - z0) - 1)
            return v0 + (v1 - v0) * t
    return stops[-1][1]


_BANDS = [(0, "#10273a"), (400, "#15303f"), (800, "#1b3a44"), (1200, "#244348"), (1600, "#2f4c4b"), (2200, "#3d5551")]


def _band_colour(elevation: float) -> tuple[int, int, int]:
    if elevation <= _BANDS[0][0]:
        return _rgb(_BANDS[0][1])
    for (e0, c0), (e1, c1) in zip(_BANDS, _BANDS[1:]):
        if elevation <= e1:
            t = (elevation - e0) / (e1 - e0)
            return tuple(round(a + (b - a) * t) for a, b in zip(_rgb(c0), _rgb(c1)))
    return _rgb(_BANDS[-1][1])


def _num(props: dict, key: str, default: float) -> float:
    try:
        return float(props.get(key, default))
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class Draw:
    """One layer of ``map/style.js`` as drawn here: its source (a key layer or a unit level), the part it belongs
    to, its first zoom, and a function of (properties, zoom) → (colour, opacity, width or None for a fill), or None
    when the feature is not drawn at that zoom."""
    id: str
    source: str
    part: str
    paint: object
    min_zoom: int = 0
    units: bool = False


_RIVER_MIN_ORDER = lambda z: 3 if z < 9 else 2 if z < 11 else 1  # noqa: E731 — style.js's ["step", ["zoom"], 3, 9, 2, 11, 1]
_ROAD_COLOURS = {"national": "#e0a84a", "provincial": "#d3b36c", "county": "#b9b9a0"}
_ROAD_WIDTH = {"national": (1.6, 7), "provincial": (1.2, 6)}

LAYERS = (
    Draw("relief", "relief", "relief", lambda p, z: (_band_colour(_num(p, "elevation", 0)), 1.0, None)
         if p.get("kind") == "band" else None),
    Draw("hillshade", "relief", "relief", lambda p, z: (
        _rgb("#02080f" if p.get("kind") == "shade" else "#9fc4d6"),
        _lerp([(7, 0.35), (13, 0.22)] if p.get("kind") == "shade" else [(7, 0.10), (13, 0.06)], z), None)
         if p.get("kind") in ("shade", "light") else None),
    Draw("contours", "contours", "contours", lambda p, z: (
        _rgb("#5d7f86"), 0.55 if p.get("index") else 0.28, 0.9 if p.get("index") else 0.5), min_zoom=10),
    Draw("lakes", "lakes", "water", lambda p, z: (_rgb("#1f5d8c"), 1.0, None)),
    Draw("rivers", "rivers", "water", lambda p, z: (
        _rgb("#2b78b4"), 1.0,
        _lerp([(8, 0.4 * _num(p, "order", 1)), (14, 2.2 * _num(p, "order", 1))], z, 1.6))
         if _num(p, "order", 1) >= _RIVER_MIN_ORDER(z) else None),
    Draw("roads-casing", "roads", "roads", lambda p, z: (_rgb("#07111d"), 1.0, _lerp([(11, 2.5), (16, 9)], z)),
         min_zoom=11),
    Draw("roads", "roads", "roads", lambda p, z: (
        _rgb(_ROAD_COLOURS.get(p.get("class"), "#8d99a6")), 1.0,
        _lerp([(8, _ROAD_WIDTH.get(p.get("class"), (0.6, 4))[0]), (16, _ROAD_WIDTH.get(p.get("class"), (0.6, 4))[1])], z))
         if p.get("class") in ("national", "provincial") or z >= 10 else None),
    Draw("township-dim", "township", "units", lambda p, z: ((0, 0, 0), 0.35, None) if p.get("covered") is False else None,
         units=True),
    Draw("grid-line", "grid", "grids", lambda p, z: (_rgb("#e2c044"), 0.5, 0.6), min_zoom=12, units=True),
    Draw("village-line", "village", "units", lambda p, z: (_rgb("#7dd3fc"), 0.5, 0.8), min_zoom=10, units=True),
    Draw("township-line", "township", "units", lambda p, z: (_rgb("#4cc3f0"), 0.85, _lerp([(8, 1), (14, 2.2)], z)),
         units=True),
    Draw("district-line", "district", "units", lambda p, z: (_rgb("#67e8f9"), 1.0, _lerp([(8, 2.5), (14, 4)], z)),
         units=True),
)


def parse_parts(style: str, parts: str | None) -> tuple[str, ...]:
    """The parts to draw: all of ``style``'s by default, else the comma-separated subset asked for."""
    if style not in STYLES:
        raise NotFound(f"raster style {style!r} is not offered; one of {', '.join(STYLES)}")
    allowed = STYLES[style]
    if parts is None:
        return allowed
    asked = tuple(p for p in (s.strip() for s in parts.split(",")) if p)
    unknown = [p for p in asked if p not in allowed]
    if unknown:
        raise InvalidInput(f"unknown part(s) {', '.join(unknown)} of raster style {style!r}; "
                           f"parts are {', '.join(allowed)}")
    return tuple(p for p in allowed if p in asked)


def _paths(geom, scale: float) -> skia.Path:
    """A shapely geometry in tile units → one Skia path in pixels (rings closed, holes by even-odd)."""
    path = skia.Path()
    path.setFillType(skia.PathFillType.kEvenOdd)
    point = skia.Point
    for part in shapely.get_parts(geom):
        kind = shapely.get_type_id(part)
        if kind == 3:  # polygon
            for ring in [part.exterior, *part.interiors]:
                xy = np.asarray(ring.coords)[:, :2] * scale
                path.addPoly([point(x, y) for x, y in xy.tolist()], True)
        elif kind == 1:  # line
            xy = np.asarray(part.coords)[:, :2] * scale
            if len(xy) >= 2:
                path.addPoly([point(x, y) for x, y in xy.tolist()], False)
    return path


def draw(features: dict[str, tuple[np.ndarray, list[dict]]], z: int, parts: tuple[str, ...], *, extent: int,
         units: bool) -> bytes:
    """The tile as PNG bytes from its features by source (geometries in tile units, y down, and their properties)."""
    surface = skia.Surface(SIZE, SIZE)
    canvas = surface.getCanvas()
    canvas.clear(skia.Color(*_rgb(BACKGROUND)))
    scale = SIZE / extent
    for layer in LAYERS:
        if layer.part not in parts or z < layer.min_zoom or (layer.units and not units) or layer.source not in features:
            continue
        geoms, props = features[layer.source]
        for geom, p in zip(geoms, props):
            style = layer.paint(p, z)
            if style is None or geom is None or shapely.is_empty(geom):
                continue
            colour, opacity, width = style
            paint = skia.Paint(AntiAlias=True, Color=skia.Color(*colour, round(255 * opacity)))
            if width is not None:
                paint.setStyle(skia.Paint.kStroke_Style)
                paint.setStrokeWidth(width)
                paint.setStrokeCap(skia.Paint.kRound_Cap)
                paint.setStrokeJoin(skia.Paint.kRound_Join)
            canvas.drawPath(_paths(geom, scale), paint)
    image = surface.makeImageSnapshot()
    return bytes(image.encodeToData(skia.kPNG, 100))


def sources(cat: Catalogue, parts: tuple[str, ...], z: int, units: bool) -> set[str]:
    """The key layers and unit levels a tile at ``z`` reads."""
    return {layer.source for layer in LAYERS
            if layer.part in parts and z >= layer.min_zoom and (units or not layer.units)}


def render(session: Session, scope: Scope, style: str, parts: tuple[str, ...], z: int, x: int, y: int,
           cat: Catalogue, visible_layers: list) -> bytes:
    """One raster tile without the cache: the rows of the vector base map's layers for this tile (the same queries,
    scope and generalisation as ``service.render``), drawn."""
    from cityops.tiles import service

    req = service.tile_request(cat, z, x, y)
    storage = storage_of(session)
    units = "units" in STYLES[style]
    wanted = sources(cat, parts, z, units)
    features: dict[str, tuple[np.ndarray, list[dict]]] = {}
    for base in cat.base_layers:
        if base.source == "units" and base.id in wanted and z >= base.min_zoom:
            got = service._units(session, scope, base, req, storage)
            if got:
                features[base.id] = (got[0], got[2])
    if z >= cat.key_layers_min_zoom:
        for layer in visible_layers:
            if layer.key in wanted and z >= cat.key_min_zoom(layer.key):
                got = service._layer_features(session, layer, req, storage)
                if got:
                    features[layer.key] = (got[0], got[2])
    return draw(features, z, parts, extent=cat.extent, units=units)

"""The vector tile catalogue (``tilesets.toml``): base map layers, generalisation by zoom, cache bounds.

Loaded once and validated: a wrong value names the key and the file instead of failing at render time."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cityops.org.levels import active_levels

CATALOGUE = Path(__file__).with_name("tilesets.toml")
SOURCES = ("units", "buildings")


@dataclass(frozen=True)
class Rule:
    max_zoom: int
    simplify: float
    min_area: float
    min_length: float
    max_features: int


@dataclass(frozen=True)
class BaseLayer:
    id: str
    source: str
    min_zoom: int
    level: str | None = None
    storey_height_m: float = 3.0


@dataclass(frozen=True)
class Catalogue:
    version: int
    extent: int
    buffer: int
    min_zoom: int
    max_zoom: int
    max_tile_bytes: int
    cache_max_bytes: int
    cache_check_seconds: float
    rules: tuple[Rule, ...]
    basemap: dict
    base_layers: tuple[BaseLayer, ...]
    key_categories: tuple[str, ...]
    key_layers_min_zoom: int
    #: A key layer's own first zoom, by layer key (layers not named start at key_layers_min_zoom).
    key_layer_min_zoom: tuple[tuple[str, int], ...] = ()
    #: The zoom whose building geometry the writers store ready to encode (cityops/tiles/prepared.py).
    prepared_zoom: int = 14

    def key_min_zoom(self, key: str) -> int:
        return dict(self.key_layer_min_zoom).get(key, self.key_layers_min_zoom)

    def rule(self, zoom: int) -> Rule:
        return next(r for r in self.rules if r.max_zoom >= zoom)


def _need(table: dict, key: str, kind, where: str):
    if key not in table:
        raise ValueError(f"{where}: missing '{key}'")
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}")
    return value


def parse(data: dict, source: str = str(CATALOGUE)) -> Catalogue:
    if data.get("version") != 1:
        raise ValueError(f"{source}: unsupported tile catalogue version {data.get('version')!r}")
    extent = _need(data, "extent", int, source)
    if extent not in (256, 512, 1024, 2048, 4096, 8192):
        raise ValueError(f"{source}: extent must be a power of two from 256 to 8192, got {extent}")
    buffer = _need(data, "buffer", int, source)
    min_zoom, max_zoom = _need(data, "min_zoom", int, source), _need(data, "max_zoom", int, source)
    if not 0 <= min_zoom <= max_zoom <= 24:
        raise ValueError(f"{source}: need 0 <= min_zoom <= max_zoom <= 24")
    if not 0 <= buffer <= extent // 4:
        raise ValueError(f"{source}: buffer must be within 0..extent/4")
    rules = []
    for i, r in enumerate(data.get("generalise", [])):
        where = f"{source} [[generalise]] #{i + 1}"
        rule = Rule(_need(r, "max_zoom", int, where), _need(r, "simplify", float, where), _need(r, "min_area", float, where),
                    _need(r, "min_length", float, where), _need(r, "max_features", int, where))
        if rule.simplify < 0 or rule.min_area < 0 or rule.min_length < 0 or rule.max_features < 1:
            raise ValueError(f"{where}: values must be >= 0 and max_features >= 1")
        if rules and rule.max_zoom <= rules[-1].max_zoom:
            raise ValueError(f"{where}: max_zoom must increase from rule to rule")
        rules.append(rule)
    if not rules or rules[-1].max_zoom < max_zoom:
        raise ValueError(f"{source}: the last [[generalise]] rule must reach max_zoom {max_zoom}")
    cache = data.get("cache", {})
    basemap = _need(data, "basemap", dict, source)
    for key in ("id", "title_zh", "title_en", "description_zh", "description_en"):
        _need(basemap, key, str, f"{source} [basemap]")
    layers, seen = [], set()
    for i, layer in enumerate(basemap.get("layers", [])):
        where = f"{source} [[basemap.layers]] #{i + 1}"
        lid, src = _need(layer, "id", str, where), _need(layer, "source", str, where)
        if src not in SOURCES:
            raise ValueError(f"{where}: source must be one of {', '.join(SOURCES)}, got {src!r}")
        if lid in seen:
            raise ValueError(f"{where}: duplicate layer id {lid!r}")
        seen.add(lid)
        level = layer.get("level")
        chain = active_levels().territorial_chain
        if src == "units" and level not in chain:
            raise ValueError(f"{where}: level must be one of {', '.join(chain)}")
        layers.append(BaseLayer(lid, src, _need(layer, "min_zoom", int, where), level,
                                float(layer.get("storey_height_m", 3.0))))
    keys = tuple(basemap.get("key_categories", []))
    if not all(isinstance(k, str) and k.isdigit() for k in keys):
        raise ValueError(f"{source} [basemap]: key_categories must be category codes")
    own = basemap.get("key_layer_min_zoom", {})
    if not isinstance(own, dict) or not all(isinstance(z, int) and min_zoom <= z <= max_zoom for z in own.values()):
        raise ValueError(f"{source} [basemap.key_layer_min_zoom]: zooms must be integers in [{min_zoom}, {max_zoom}]")
    prepared_zoom = data.get("prepared_zoom", 14)
    if not isinstance(prepared_zoom, int) or isinstance(prepared_zoom, bool) or not min_zoom <= prepared_zoom <= max_zoom \
            or extent << prepared_zoom >= 1 << 31:
        raise ValueError(f"{source}: prepared_zoom must be an integer in [{min_zoom}, {max_zoom}] whose pixel grid "
                         f"(extent × 2^zoom) fits 32-bit integers")
    return Catalogue(1, extent, buffer, min_zoom, max_zoom, _need(data, "max_tile_bytes", int, source),
                     _need(cache, "max_bytes", int, f"{source} [cache]"), _need(cache, "check_seconds", float, f"{source} [cache]"),
                     tuple(rules), {k: v for k, v in basemap.items() if k not in ("layers", "key_layer_min_zoom")},
                     tuple(layers), keys, int(basemap.get("key_layers_min_zoom", 10)), tuple(sorted(own.items())),
                     prepared_zoom)


@lru_cache(maxsize=1)
def load_catalogue(path: Path = CATALOGUE) -> Catalogue:
    return parse(tomllib.loads(path.read_text(encoding="utf-8")), str(path))

"""The static base map as raster tiles (``/api/tiles/raster/{style}/{z}/{x}/{y}.png``), on both backends: what
they draw (relief, water, roads, unit boundaries, units outside the scope dimmed), the styles and parts, bad
addresses as clear 4xx, and the cache made stale by a layer's new version and by a unit change."""

from __future__ import annotations

import io
import json

import morecantile
import numpy as np
from PIL import Image
from shapely.geometry import box, mapping

from cityops.tiles import raster, service
from tests.conftest import table_counts

TMS = morecantile.tms.get("WebMercatorQuad")


def _rgb(hex_colour):
    return np.array(raster._rgb(hex_colour))


def _pixels(content: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(content))
    assert image.size == (raster.SIZE, raster.SIZE)
    return np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)


def _share(pixels: np.ndarray, colour: str, tolerance: int = 6) -> float:
    """The share of the tile's pixels within ``tolerance`` of ``colour`` on every channel."""
    return float((np.abs(pixels - _rgb(colour)).max(axis=1) <= tolerance).mean())


def _seat(api, headers):
    seat = next(f for f in api.get("/api/layers/place_names/features", params={"limit": 10000}, headers=headers)
                .json()["features"] if f["properties"]["kind"] == "township")
    return seat["geometry"]["coordinates"]


def _lake_tile(api, headers, z):
    lake = api.get("/api/layers/lakes/features", headers=headers).json()["features"][0]
    from shapely.geometry import shape

    c = shape(lake["geometry"]).representative_point()
    return TMS.tile(c.x, c.y, z)


def test_a_raster_tile_draws_relief_water_roads_and_boundaries(api):
    admin = api.login("admin")
    t = _lake_tile(api, admin, 11)
    r = api.get(f"/api/tiles/raster/base/{t.z}/{t.x}/{t.y}.png", headers=admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    px = _pixels(r.content)
    assert _share(px, "#1f5d8c") * px.shape[0] >= 20, "no lake"
    # Relief: the tile is not one flat colour; the background alone would be.
    assert _share(px, raster.BACKGROUND, 2) < 0.5
    assert len(np.unique(px, axis=0)) > 50
    # Roads (national/provincial gold, county grey) somewhere in the nine tiles around the lake.
    road = 0.0
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            got = api.get(f"/api/tiles/raster/base/{t.z}/{t.x + dx}/{t.y + dy}.png", headers=admin)
            road += _share(_pixels(got.content), "#e0a84a", 20) + _share(_pixels(got.content), "#b9b9a0", 12)
    assert road > 0, "no road"
    # Parts: relief alone differs from everything, and draws no water.
    alone = api.get(f"/api/tiles/raster/base/{t.z}/{t.x}/{t.y}.png", params={"parts": "relief"}, headers=admin)
    assert alone.status_code == 200 and alone.content != r.content
    assert _share(_pixels(alone.content), "#1f5d8c") == 0


def test_unit_boundaries_and_the_dimming_of_units_outside_the_scope(api):
    admin, cadre = api.login("admin"), api.login("taikang")
    lon, lat = _seat(api, admin)
    # The whole district in one z8 tile or a few: the district's outline is drawn in the base style only.
    t = TMS.tile(lon, lat, 8)
    base = _pixels(api.get(f"/api/tiles/raster/base/8/{t.x}/{t.y}.png", headers=admin).content)
    terrain = _pixels(api.get(f"/api/tiles/raster/terrain/8/{t.x}/{t.y}.png", headers=admin).content)
    assert _share(base, "#67e8f9", 30) > 0.001
    assert _share(terrain, "#67e8f9", 30) == 0
    # A village cadre's township lies outside the cadre's scope (seen, not covered): dimmed, so the tile is darker
    # than the same tile for the district.
    place = api.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]  # in 太康村
    t = TMS.tile(place["lon"], place["lat"], 10)
    url = f"/api/tiles/raster/base/10/{t.x}/{t.y}.png"
    darker = (_pixels(api.get(url, headers=admin).content).sum(axis=1)
              - _pixels(api.get(url, headers=cadre).content).sum(axis=1)) > 15
    assert darker.mean() > 0.2, darker.mean()


def test_bad_raster_addresses_are_clear_4xx(api):
    admin = api.login("admin")
    before = table_counts(api.store)
    cases = [
        ("/api/tiles/raster/nope/8/0/0.png", None, 404, "nope"),
        ("/api/tiles/raster/base/19/0/0.png", None, 404, "zoom 19"),
        ("/api/tiles/raster/base/3/8/0.png", None, 404, "outside the tile matrix"),
        ("/api/tiles/raster/base/3/0/-1.png", None, 404, "outside the tile matrix"),
        ("/api/tiles/raster/base/a/0/0.png", None, 422, None),
        ("/api/tiles/raster/base/3/0/0.png", {"parts": "relief,labels"}, 422, "labels"),
        ("/api/tiles/raster/terrain/3/0/0.png", {"parts": "units"}, 422, "units"),
    ]
    for path, params, status, text in cases:
        r = api.get(path, params=params, headers=admin)
        assert r.status_code == status, (path, r.status_code, r.text)
        if text:
            assert text in r.json()["message"], (path, r.text)
    r = api.get("/api/tiles/raster/base/8/0/0.png")
    assert r.status_code == 401 and "credentials" in r.json()["message"]
    assert table_counts(api.store) == before


def test_raster_tiles_are_cached_until_a_layer_or_a_unit_changes(api):
    admin = api.login("admin")
    t = _lake_tile(api, admin, 12)
    url = f"/api/tiles/raster/base/{t.z}/{t.x}/{t.y}.png"
    first = api.get(url, headers=admin)
    again = api.get(url, headers=admin)
    assert again.headers["x-tile-cache"] == "hit" and again.content == first.content
    assert api.get(url, headers={**admin, "If-None-Match": again.headers["etag"]}).status_code == 304
    lake_share = _share(_pixels(first.content), "#1f5d8c")

    # A new version of the lakes layer: a lake over the whole tile. The cached tile is stale at once.
    version = api.get("/api/layers/lakes", headers=admin).json()["current_version"]
    b = TMS.bounds(t)
    lake = {"type": "Feature", "properties": {"name": "测试湖"},
            "geometry": mapping(box(b.left - 0.01, b.bottom - 0.01, b.right + 0.01, b.top + 0.01))}
    content = json.dumps({"type": "FeatureCollection", "features": [lake]}, ensure_ascii=False).encode()
    r = api.post("/api/layers/lakes/import", headers=admin, files={"file": ("f.geojson", content)},
                 data={"mode": "replace"})
    assert r.status_code == 200, r.text
    api.app.state.tiles.changed()
    try:
        flooded = api.get(url, headers=admin)
        assert flooded.headers["x-tile-cache"] == "miss"
        assert _share(_pixels(flooded.content), "#1f5d8c", 40) > max(lake_share, 0.3)
    finally:
        r = api.post("/api/layers/lakes/rollback", headers=admin, json={"version": version})
        assert r.status_code == 200, r.text
        api.app.state.tiles.changed()
    restored = api.get(url, headers=admin)
    assert restored.headers["x-tile-cache"] == "miss" and restored.content == first.content

    # A unit change (the bus's tile_source.changed): stale too.
    with api.store.sessions() as session:
        service.invalidate(session, "units")
        session.commit()
    api.app.state.tiles.changed()
    assert api.get(url, headers=admin).headers["x-tile-cache"] == "miss"


def test_the_raster_draws_with_the_colours_of_the_web_maps_style():
    """``raster.LAYERS`` repeats the colours of the vector base map's style (``map/style.js``) for the server's
    drawing: a colour changed on one side only would make the two base maps disagree."""
    import re
    from pathlib import Path

    root = Path(raster.__file__).resolve().parents[1]
    style = (root / "web" / "frontend" / "src" / "map" / "style.js").read_text(encoding="utf-8").lower()
    colours = set(re.findall(r"#[0-9a-f]{6}\b", Path(raster.__file__).read_text(encoding="utf-8").lower()))
    assert len(colours) >= 10  # relief bands, water, roads, boundaries
    assert not {c for c in colours if c not in style}, "colours of the raster base map missing from map/style.js"

"""Scope rows for the tile routes (see tests/test_api_scope.py): the outsider scoped to 义和镇 gets no tile set of
a 大德镇 layer, base map tiles over 大德镇 without its buildings or its villages/grids, vector or raster."""

from __future__ import annotations

import io

import mapbox_vector_tile
import numpy as np
from PIL import Image
import morecantile
import shapely
from shapely.geometry import shape


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def _no_foreign_tileset(r):
    assert r.status_code == 200, r.text
    ids = {t["id"] for t in r.json()}
    assert "basemap" in ids and "dade_layer" not in ids, ids


def _no_foreign_features(dade: str, dade_building: str):
    def check(r):
        assert r.status_code in (200, 204), r.text
        layers = mapbox_vector_tile.decode(r.content) if r.content else {}
        assert "dade_layer" not in layers
        for name in ("buildings", "village", "grid"):
            for f in layers.get(name, {}).get("features", []):
                assert not f["properties"]["code"].startswith(dade), f"foreign {name} leaked: {f['properties']}"
        codes = {f["properties"]["code"] for f in layers.get("buildings", {}).get("features", [])}
        assert dade_building not in codes
    return check


def _brightness(png: bytes) -> float:
    """Mean lightness of the tile laid over white (its pixels are partly transparent: the map's background shows)."""
    tile = Image.open(io.BytesIO(png)).convert("RGBA")
    over_white = Image.alpha_composite(Image.new("RGBA", tile.size, "white"), tile)
    return float(np.asarray(over_white.convert("L"), dtype=np.float64).mean())


def _without_foreign_lines(admin_png: bytes):
    def check(r):
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        # 大德镇's village and grid lines (light blue and yellow over the dark relief) are drawn for the admin only.
        assert r.content != admin_png
        assert _brightness(r.content) < _brightness(admin_png) - 0.5, (_brightness(r.content), _brightness(admin_png))
    return check


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    detail = api.get(f"/api/buildings/{world['dade_building']}", params={"geometry": True}, headers=admin).json()
    c = shapely.centroid(shape(detail["geometry"]))
    t = morecantile.tms.get("WebMercatorQuad").tile(c.x, c.y, 15)
    # The admin does see the building there, so the outsider's empty answer is the scope at work.
    seen = mapbox_vector_tile.decode(api.get(f"/api/tiles/basemap/{t.z}/{t.x}/{t.y}.mvt", headers=admin).content)
    assert world["dade_building"] in {f["properties"]["code"] for f in seen["buildings"]["features"]}
    tile = {"tileset": "basemap", "z": t.z, "x": t.x, "y": t.y}
    raster = {"style": "base", "z": t.z, "x": t.x, "y": t.y}
    admin_png = api.get("/api/tiles/raster/base/{z}/{x}/{y}.png".format(**raster), headers=admin)
    assert admin_png.status_code == 200, admin_png.text
    return {
        ("GET", "/api/tiles/raster/{style}/{z}/{x}/{y}.png"): [dict(path=raster, check=_without_foreign_lines(admin_png.content))],
        ("GET", "/api/tiles"): [dict(check=_no_foreign_tileset)],
        ("GET", "/api/tiles/{tileset}/tilejson.json"): [dict(path={"tileset": "dade_layer"}, check=_denied)],
        ("GET", "/api/tiles/{tileset}/{z}/{x}/{y}.mvt"): [
            dict(path={**tile, "tileset": "dade_layer"}, check=_denied),
            dict(path=tile, check=_no_foreign_features(world["dade"], world["dade_building"])),
        ],
    }

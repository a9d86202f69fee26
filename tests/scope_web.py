"""Scope rows for the web app's own API routes (see tests/test_api_scope.py): the server's drawing of the operations
map's first view never shows the outsider (scoped to 义和镇) a live thing of 大德镇, even when asked for a view over
大德镇."""

from __future__ import annotations

import re

from shapely.geometry import mapping, shape

SIZE = 400


def _centre_circle(svg: str) -> bool:
    """A risk point drawn at the middle of the view (the box is centred on it)."""
    groups = re.findall(r'<g class="live risk-points"[^>]*>(.*?)</g>', svg)
    return any(f'cx="{SIZE // 2}" cy="{SIZE // 2}"' in g for g in groups)


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    grid = world["dade_grid"]
    point = shape(grid["geometry"]).representative_point()
    r = api.post("/api/risk-points", headers=admin, json={
        "code": "RP-DADE-OVERVIEW", "name": "大德镇概览测试点", "hazard_type": "landslide", "unit_code": grid["code"],
        "geometry": mapping(point)})
    assert r.status_code == 201, r.text
    box = f"{point.x - 0.003:.6f},{point.y - 0.003:.6f},{point.x + 0.003:.6f},{point.y + 0.003:.6f}"
    query = {"width": SIZE, "height": SIZE, "bbox": box, "padding": 0}
    # The admin sees the point there: the outsider's empty view is the scope at work.
    seen = api.get("/api/map/overview", params=query, headers=admin)
    assert seen.status_code == 200 and _centre_circle(seen.text), seen.text[:300]

    def no_foreign_things(r):
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("image/svg+xml")
        assert not _centre_circle(r.text), "a 大德镇 risk point is drawn for the outsider"
        assert "大德镇概览测试点" not in r.text

    return {("GET", "/api/map/overview"): [dict(params=query, check=no_foreign_things)]}

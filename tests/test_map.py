"""The map with vector tiles in a real browser (Playwright + Debian's Chromium, as tests/test_browser.py):
3D buildings from the base map tiles, inspecting a building, toggling a catalogue layer and inspecting
its feature, drawing a zone to ask "who is threatened" with the answer as a table and on the map, and
scope (a township operator's map has no other township's buildings). Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import shapely
from shapely.geometry import mapping, shape

from cityops.demo.generator import DEMO_PASSWORD
from tests.test_browser import ARTIFACTS, assert_local_only, base_url, browser, login, page  # noqa: F401

pytestmark = pytest.mark.browser


def _token(base_url, username, password=DEMO_PASSWORD) -> dict:
    r = httpx.post(f"{base_url}/api/auth/login", json={"username": username, "password": password})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _wait_idle(page):
    page.wait_for_function("window.cityopsMap && window.cityopsMap.loaded() && !window.cityopsMap.isMoving() "
                           "&& window.cityopsMap.areTilesLoaded()")


def _pixel(page, lonlat):
    p = page.evaluate("([ll]) => { const p = window.cityopsMap.project(ll); return [p.x, p.y]; }", [lonlat])
    box = page.locator("#map").bounding_box()
    return box["x"] + p[0], box["y"] + p[1]


def test_map_tiles_3d_layers_inspection_and_threatened(page, base_url):  # noqa: F811
    from playwright.sync_api import expect

    yihe = _token(base_url, "yihe")
    admin = _token(base_url, "admin")
    me = httpx.get(f"{base_url}/api/auth/me", headers=yihe).json()
    root = me["scope_units"][0]
    items = httpx.get(f"{base_url}/api/buildings", params={"root": root, "limit": 1000, "geometry": "true"},
                      headers=yihe).json()["items"]
    # The building with the most neighbours within ~150 m: the middle of a cluster.
    footprints = [shape(b["geometry"]) for b in items]
    centroids = shapely.centroid(footprints)
    near = [int(shapely.dwithin(centroids, c, 0.0015).sum()) for c in centroids]
    target = items[max(range(len(items)), key=near.__getitem__)]
    footprint = shape(target["geometry"])
    spot = footprint.representative_point()
    zone = shapely.box(spot.x - 0.0012, spot.y - 0.0009, spot.x + 0.0012, spot.y + 0.0009)

    # A district layer of points beside the building (visible to every township), made by the admin.
    key = "map_" + uuid.uuid4().hex[:8]
    r = httpx.post(f"{base_url}/api/layers", headers=admin, json={"key": key, "title_zh": "隐患点（测试）",
                   "title_en": "Hazard points (test)", "category": "0302", "geometry_type": "POINT"})
    assert r.status_code == 201, r.text
    hazard = (spot.x + 0.0006, spot.y + 0.0005)
    content = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "老沟湾隐患点", "grade": "大型"}, "geometry": mapping(shapely.Point(hazard))}]},
        ensure_ascii=False).encode()
    r = httpx.post(f"{base_url}/api/layers/{key}/import", headers=admin, files={"file": ("h.geojson", content)})
    assert r.status_code == 200, r.text

    login(page, base_url, "yihe", DEMO_PASSWORD)
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    ARTIFACTS.mkdir(exist_ok=True)

    # 3D buildings from the base map tiles at zoom 16; inspect the target building (top view first).
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 16.5, pitch: 0})", [[spot.x, spot.y]])
    page.wait_for_function("""([ll, code]) => {
        const map = window.cityopsMap;
        if (!map.loaded() || map.isMoving() || !map.areTilesLoaded()) return false;
        const hits = map.queryRenderedFeatures(map.project(ll), {layers: ['buildings-3d']});
        return hits.some((f) => f.properties.code === code);
    }""", arg=[[spot.x, spot.y], target["code"]])
    page.mouse.click(*_pixel(page, [spot.x, spot.y]))
    panel = page.get_by_test_id("unit-panel")
    expect(panel.get_by_test_id("feature-code")).to_have_text(target["code"])
    expect(panel.get_by_test_id("building-details")).to_contain_text(str(target["floors"]))
    expect(panel.locator("#panel-title")).to_have_text("房屋详情")
    heights = page.evaluate("""() => window.cityopsMap.queryRenderedFeatures({layers: ['buildings-3d']})
        .map((f) => f.properties.height)""")
    assert heights and all(h > 0 for h in heights)
    page.locator("#panel-close").click()

    page.get_by_test_id("view-toggle").click()
    page.wait_for_function("window.cityopsMap.getPitch() > 50")
    _wait_idle(page)
    page.screenshot(path=str(ARTIFACTS / "map-3d-buildings.png"))
    page.get_by_test_id("view-toggle").click()
    page.wait_for_function("window.cityopsMap.getPitch() < 1")
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 16.5})", [[spot.x, spot.y]])

    # The catalogue: toggle the hazard layer on, inspect its point.
    page.get_by_test_id("layers-toggle").click()
    layers_panel = page.get_by_test_id("layers-panel")
    expect(layers_panel).to_contain_text("隐患点（测试）")
    layers_panel.locator(f"input[data-layer='{key}']").check()
    page.wait_for_function("""([id]) => {
        const map = window.cityopsMap;
        return map.getLayer(id) && map.areTilesLoaded() && map.queryRenderedFeatures({layers: [id]}).length === 1;
    }""", arg=[f"layer:{key}:circle"])
    page.mouse.click(*_pixel(page, list(hazard)))
    expect(panel.get_by_test_id("feature-properties")).to_contain_text("老沟湾隐患点")
    expect(panel.get_by_test_id("feature-layer")).to_have_text("隐患点（测试）")
    page.screenshot(path=str(ARTIFACTS / "map-layer-feature.png"))
    page.get_by_test_id("layers-toggle").click()
    page.locator("#panel-close").click()

    # Draw the zone (four clicks, then Finish): the answer as a table and the buildings in red on the map.
    page.get_by_test_id("draw-start").click()
    expect(page.get_by_test_id("draw-bar")).to_be_visible()
    corners = list(zone.exterior.coords)[:4]
    for corner in corners:
        page.mouse.click(*_pixel(page, list(corner)))
    page.get_by_test_id("draw-finish").click()
    totals = panel.get_by_test_id("threat-totals")
    expect(totals).to_be_visible()
    sent = page.evaluate("window.cityopsThreat.zone")
    assert len(sent["coordinates"][0]) == 5
    assert shape(sent).symmetric_difference(zone).area < 0.05 * zone.area  # clicked where we meant
    expected = httpx.post(f"{base_url}/api/threatened", json={"geometry": sent}, headers=yihe).json()
    assert expected["totals"]["buildings"] > 0
    cells = totals.locator("td").all_inner_texts()
    assert [int(c.replace(",", "")) for c in cells] == [expected["totals"][k] for k in
                                                       ("buildings", "households", "residents", "vulnerable")]
    by_grid = panel.get_by_test_id("threat-by-grid")
    expect(by_grid.locator("tr")).to_have_count(len(expected["by_grid"]) + 1)
    worker = next((p for g in expected["by_grid"] for p in g["grid_workers"]), None)
    if worker:
        expect(by_grid).to_contain_text(worker["name"])
    page.wait_for_function("""([n]) => {
        const map = window.cityopsMap;
        if (!map.loaded() || !map.areTilesLoaded()) return false;
        const codes = new Set(map.queryRenderedFeatures({layers: ['threat-buildings']}).map((f) => f.properties.code));
        return codes.size >= 1 && codes.size <= n;
    }""", arg=[expected["totals"]["buildings"]])
    highlighted = set(page.evaluate("""() => window.cityopsMap.queryRenderedFeatures({layers: ['threat-buildings']})
        .map((f) => f.properties.code)"""))
    assert highlighted <= {b["code"] for b in expected["buildings"]}
    page.screenshot(path=str(ARTIFACTS / "map-threatened.png"))

    # English: the result table's headings follow the language.
    page.get_by_test_id("language-select").select_option("en")
    expect(panel.locator("#panel-title")).to_have_text("Who is threatened")
    expect(totals.locator("th").first).to_have_text("Buildings")
    page.get_by_test_id("language-select").select_option("zh-CN")

    # Scope: over 大德镇 the township operator's map shows no buildings (the admin's tiles have them).
    dade = next(u for u in httpx.get(f"{base_url}/api/units", params={"level": "township"}, headers=admin).json()["items"]
                if u["name"] == "大德镇")
    foreign = httpx.get(f"{base_url}/api/buildings", params={"root": dade["code"], "limit": 1, "geometry": "true"},
                        headers=admin).json()["items"][0]
    there = shape(foreign["geometry"]).representative_point()
    page.locator("#panel-close").click()
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 16})", [[there.x, there.y]])
    _wait_idle(page)
    codes = page.evaluate("() => window.cityopsMap.queryRenderedFeatures({layers: ['buildings-3d']}).map((f) => f.properties.code)")
    assert not [c for c in codes if c.startswith(dade["code"])]

    assert_local_only(page, base_url)
    assert not [e for e in page.console_errors if "WebGL" in e or "Failed to load" in e], page.console_errors

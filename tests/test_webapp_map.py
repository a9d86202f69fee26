"""The operations map's base map features in a real browser (Playwright + Debian's Chromium, SwiftShader): 3D
buildings from the base map tiles, inspecting a building, toggling a catalogue layer and inspecting its feature,
drawing a zone to ask "who is threatened" with the answer as a table and on the map, English labels, and scope (a
township operator's map has no other township's buildings); the base map itself (relief, water, roads, names) drawn
offline with its labels. Screenshots go to test-artifacts/map-*.png."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import shapely
from shapely.geometry import mapping, shape

from cityops.app import create_app
from cityops.demo.generator import build_demo
from tests.browser import (chromium, Steps, assert_local_only, assert_no_page_errors, login, new_page, pixel, require_browser,
                           token, wait_map_idle)
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require_browser()
    store, close = make_store("sqlite", tmp_path_factory.mktemp("webapp-map"))
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-webapp-map") as url:
        yield url
    close()


@pytest.fixture(scope="module")
def browser(served):
    with chromium() as b:
        yield b


def test_the_base_map_is_drawn_offline_with_its_names(served, browser):
    """Relief, water, roads and Chinese place names (with digits, from the shipped Latin font) are drawn from the
    server's own tiles; in English the names switch to English."""
    from playwright.sync_api import expect

    page = new_page(browser, served)
    steps = Steps("map-base")
    login(page, served, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    wait_map_idle(page)
    drawn = page.evaluate("""() => { const m = window.cityopsMap; const ids = ['relief', 'hillshade', 'rivers', 'roads',
        'place-labels', 'township-line', 'district-line'];
        return Object.fromEntries(ids.map((id) => [id, m.queryRenderedFeatures({layers: [id]}).length])); }""")
    assert all(n > 0 for n in drawn.values()), drawn
    names = page.evaluate("""() => window.cityopsMap.queryRenderedFeatures({layers: ['place-labels']})
        .map((f) => f.properties.name)""")
    assert "义和镇" in names
    steps.shot(page, "district")
    admin = token(served, "admin")
    place = httpx.get(f"{served}/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 13.5})", [[place["lon"], place["lat"]]])
    wait_map_idle(page)
    labels = page.evaluate("""() => window.cityopsMap.queryRenderedFeatures({layers: ['place-labels', 'contour-labels']})
        .map((f) => f.properties.name || String(f.properties.elevation))""")
    assert "老沟湾" in labels and any(label.isdigit() for label in labels), labels
    steps.shot(page, "laogouwan")
    page.get_by_test_id("language-select").select_option("en")
    page.wait_for_function("""() => window.cityopsMap.getLayoutProperty('place-labels', 'text-field').toString().includes('name_en')""")
    expect(page.get_by_test_id("nav-map")).to_have_text("Operations map")
    wait_map_idle(page)
    steps.shot(page, "english")
    page.get_by_test_id("language-select").select_option("zh-CN")
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


def test_map_tiles_3d_layers_inspection_and_threatened(served, browser):
    from playwright.sync_api import expect

    base_url = served
    page = new_page(browser, base_url)
    steps = Steps("map")
    yihe = token(base_url, "yihe")
    admin = token(base_url, "admin")
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

    login(page, base_url, "yihe")
    page.wait_for_function("document.body.dataset.mapReady === '1'")

    # 3D buildings from the base map tiles at zoom 16; inspect the target building (top view first).
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 16.5, pitch: 0})", [[spot.x, spot.y]])
    page.wait_for_function("""([ll, code]) => {
        const map = window.cityopsMap;
        if (!map.loaded() || map.isMoving() || !map.areTilesLoaded()) return false;
        const hits = map.queryRenderedFeatures(map.project(ll), {layers: ['buildings-3d']});
        return hits.some((f) => f.properties.code === code);
    }""", arg=[[spot.x, spot.y], target["code"]])
    page.mouse.click(*pixel(page, [spot.x, spot.y]))
    panel = page.get_by_test_id("feature-card")
    expect(panel.get_by_test_id("feature-code")).to_have_text(target["code"])
    expect(panel.get_by_test_id("building-details")).to_contain_text(str(target["floors"]))
    expect(panel.get_by_test_id("building-details")).to_contain_text(target["address"])
    expect(panel.get_by_test_id("card-title")).to_have_text("房屋详情")
    heights = page.evaluate("""() => window.cityopsMap.queryRenderedFeatures({layers: ['buildings-3d']})
        .map((f) => f.properties.height)""")
    assert heights and all(h > 0 for h in heights)
    page.get_by_test_id("card-close").click()

    page.get_by_test_id("view-toggle").click()
    page.wait_for_function("window.cityopsMap.getPitch() > 50")
    wait_map_idle(page)
    steps.shot(page, "3d-buildings")
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
    page.get_by_test_id("layers-toggle").click()
    page.mouse.click(*pixel(page, list(hazard)))
    expect(panel.get_by_test_id("feature-properties")).to_contain_text("老沟湾隐患点")
    expect(panel.get_by_test_id("feature-properties")).to_contain_text("名称")
    expect(panel.get_by_test_id("feature-layer")).to_have_text("隐患点（测试）")
    steps.shot(page, "layer-feature")
    page.get_by_test_id("card-close").click()

    # Draw the zone (four clicks, then Finish): the answer as a table and the buildings in red on the map.
    page.get_by_test_id("draw-start").click()
    expect(page.get_by_test_id("draw-bar")).to_be_visible()
    corners = list(zone.exterior.coords)[:4]
    for corner in corners:
        page.mouse.click(*pixel(page, list(corner)))
    page.get_by_test_id("draw-finish").click()
    panel = page.get_by_test_id("threat-panel")
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
    steps.shot(page, "threatened")

    # English: the result table's headings follow the language.
    page.get_by_test_id("language-select").select_option("en")
    expect(panel.locator("#panel-title")).to_have_text("Who is threatened")
    steps.shot(page, "threatened-en")
    expect(totals.locator("th").first).to_have_text("Buildings")
    page.get_by_test_id("language-select").select_option("zh-CN")

    # Scope: over 大德镇 the township operator's map shows no buildings (the admin's tiles have them).
    dade = next(u for u in httpx.get(f"{base_url}/api/units", params={"level": "township"}, headers=admin).json()["items"]
                if u["name"] == "大德镇")
    foreign = httpx.get(f"{base_url}/api/buildings", params={"root": dade["code"], "limit": 1, "geometry": "true"},
                        headers=admin).json()["items"][0]
    there = shape(foreign["geometry"]).representative_point()
    panel.get_by_test_id("card-close").click()
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 16})", [[there.x, there.y]])
    wait_map_idle(page)
    codes = page.evaluate("() => window.cityopsMap.queryRenderedFeatures({layers: ['buildings-3d']}).map((f) => f.properties.code)")
    assert not [c for c in codes if c.startswith(dade["code"])]

    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


FAST_3G = {"offline": False, "latency": 562.5, "downloadThroughput": 1.6 * 1_000_000 / 8 * 0.9,
           "uploadThroughput": 750 * 1000 / 8 * 0.9}


def test_the_first_view_is_drawn_by_the_server_before_the_map_and_gives_way_to_it(served, browser):
    """On a slow link the page shows the server's drawing of the map's first view (base map, names, live things)
    before any script has run, over the place of the map and lined up with it, and removes it once the map has
    drawn the same view with its live layers."""
    page = new_page(browser, served, service_workers="block")  # a first visit: every file over the slow link
    steps = Steps("map-overview")
    login(page, served, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    cdp.send("Network.emulateNetworkConditions", FAST_3G)
    page.reload(wait_until="commit")
    page.wait_for_selector("#overview > svg", timeout=30_000)
    seen = page.evaluate("""() => { const svg = document.querySelector('#overview > svg');
        return { map: document.body.dataset.mapReady === '1' || !!document.body.dataset.liveLoaded, live: Number(svg.dataset.live), bounds: svg.dataset.bounds,
                 names: [...svg.querySelectorAll('.labels text')].map((t) => t.textContent),
                 parts: ['.relief', '.water', '.road', '.district', '.township', '.live.risk-points', '.live.shelters']
                   .filter((s) => svg.querySelector(s)).length,
                 box: svg.getBoundingClientRect().toJSON() }; }""")
    assert not seen["map"], "the drawing came after the map had drawn"
    assert seen["parts"] == 7 and seen["live"] > 0 and "义和镇" in seen["names"], seen
    steps.shot(page, "server-drawing")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})
    page.wait_for_function("document.body.dataset.mapReady === '1' && !document.getElementById('overview')", timeout=120_000)
    # The drawing covered what the map shows now: the same box, to a few pixels.
    w, s, e, n = map(float, seen["bounds"].split(","))
    shown = page.evaluate("""() => { const b = window.cityopsMap.getBounds(); const c = window.cityopsMap.getContainer().getBoundingClientRect();
        return { b: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()], top: c.top, width: c.width, height: c.height }; }""")
    assert shown["top"] == pytest.approx(seen["box"]["y"], abs=2) and shown["width"] == pytest.approx(seen["box"]["width"], abs=2)
    px = (e - w) / seen["box"]["width"]  # degrees per pixel
    for mine, theirs in zip((w, s, e, n), shown["b"]):
        assert mine == pytest.approx(theirs, abs=3 * px), (seen["bounds"], shown["b"])
    steps.shot(page, "map")
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


def test_a_frame_draws_no_sky_pass_when_the_style_has_no_sky(served, browser):
    """MapLibre draws a full-canvas sky pass on every frame, even for a style without a sky (transparent colours);
    on WebGL in software it was the largest single cost of a frame. The app's maps draw it only when a sky shows:
    with every layer hidden a frame draws nothing, and a coloured sky adds its pass back."""
    page = new_page(browser, served)
    login(page, served, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    wait_map_idle(page)
    counts = page.evaluate("""() => { const m = window.cityopsMap; const gl = m.painter.context.gl;
        for (const l of m.getStyle().layers) m.setLayoutProperty(l.id, 'visibility', 'none');
        m.jumpTo({pitch: 70});
        let draws = 0; const drawElements = gl.drawElements;
        gl.drawElements = function (...args) { draws++; return drawElements.apply(this, args); };
        const frame = () => { draws = 0; m.redraw(); return draws; };
        const none = [frame(), frame()];
        m.setSky({'sky-color': '#ff0000', 'horizon-color': '#ff0000', 'sky-horizon-blend': 0.5});
        const sky = [frame(), frame()];
        gl.drawElements = drawElements;
        return {none, sky}; }""")
    assert counts == {"none": [0, 0], "sky": [1, 1]}, counts  # the sky pass, back only when a sky shows
    assert_no_page_errors(page)
    page.context.close()


def test_a_frame_skips_the_clipping_masks_and_texture_samples_that_change_no_pixel(served, browser):
    """Before a fill or line layer MapLibre writes a stencil mask per tile of its source, even when the layer then
    draws nothing (a line in the opaque pass, a layer at opacity 0 such as the raster base map's vector layers, an
    empty source); its raster shader samples each tile's parent for a cross-fade on every pixel, even with no fade.
    The app's maps skip both: fewer draws and samples a frame, the same pixels as MapLibre's own drawing."""
    page = new_page(browser, served)
    login(page, served, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1' && document.body.dataset.liveLoaded === '1'")
    wait_map_idle(page)
    seen = page.evaluate("""() => { const m = window.cityopsMap; const gl = m.painter.context.gl;
        const {clippingMasks, rasterSample} = m.cityopsFrames;
        let draws = 0; const drawElements = gl.drawElements;
        gl.drawElements = function (...args) { draws++; return drawElements.apply(this, args); };
        // Drawn at once, read before the browser takes the frame (the drawing buffer is not preserved after).
        const frame = () => { draws = 0; m.redraw(); return [draws, m.getCanvas().toDataURL()]; };
        const raster = () => Object.entries(m.painter.programCache.programs).filter(([key]) => key.startsWith('raster'));
        const shaders = () => raster().flatMap(([, p]) => gl.getAttachedShaders(p.program).map((s) => gl.getShaderSource(s))).join(' ');
        const before = clippingMasks.skipped();
        const [skipping, pixels] = frame();
        const skipped = clippingMasks.skipped() - before;
        const once = shaders().includes('if (u_fade_t > 0.0)');
        // MapLibre's own: every mask, the raster programs compiled again from its shader text.
        clippingMasks.stop(); rasterSample.stop();
        for (const [key] of raster()) delete m.painter.programCache.programs[key];
        const [all, allPixels] = frame();
        const twice = !shaders().includes('if (u_fade_t > 0.0)') && raster().length > 0;
        gl.drawElements = drawElements;
        return {skipping, all, skipped, rewritten: rasterSample.rewritten(), once, twice, same: pixels === allPixels}; }""")
    assert seen["skipped"] > 0 and seen["skipping"] < seen["all"], seen
    assert seen["rewritten"] > 0 and seen["once"] and seen["twice"], seen
    assert seen["same"], "the map drawn with the savings differs from MapLibre's own drawing"
    assert_no_page_errors(page)
    page.context.close()


def test_in_software_the_moving_map_is_drawn_at_half_resolution_and_the_map_at_rest_at_full(served, browser):
    """On WebGL in software (SwiftShader here, as on a desktop without a GPU) the map is drawn at half resolution
    while it moves — lower on a large screen, within the pixels of a 1280×800 map at half resolution, scaled up by
    nearest pixels — and at full
    resolution once it rests, drawn again at once (no blank canvas); its canvas is opaque (no alpha for the browser
    to blend); the user's switch (localStorage cityops.map.fullResolution = 1) keeps full resolution while moving."""
    def pan_and_watch(page):
        return page.evaluate("""() => new Promise((resolve) => {
            const m = window.cityopsMap; const canvas = m.getCanvas(); const widths = []; let n = 0;
            function step() {
              m.panBy([8, 4], {duration: 0});
              widths.push(canvas.width);
              if (++n < 10) { requestAnimationFrame(step); return; }
              const moving = canvas.width; const movingHeight = canvas.height;
              const scaling = getComputedStyle(canvas).imageRendering;
              setTimeout(() => resolve({widths, moving, movingHeight, rest: canvas.width, css: canvas.clientWidth,
                scaling, restScaling: getComputedStyle(canvas).imageRendering,
                lowered: m.getContainer().dataset.resolutionLowered || null}), 1000);
            }
            requestAnimationFrame(step);
        })""")

    page = new_page(browser, served, viewport={"width": 1280, "height": 800})
    login(page, served, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    wait_map_idle(page)
    assert page.evaluate("window.cityopsMap.getContainer().dataset.movingResolution") == "0.5"
    assert page.evaluate("window.cityopsMap.getCanvas().width === window.cityopsMap.getCanvas().clientWidth")
    assert page.evaluate("window.cityopsMap.painter.context.gl.getContextAttributes().alpha") is False
    seen = pan_and_watch(page)
    assert abs(seen["moving"] - seen["css"] / 2) <= 1 and all(w == seen["moving"] for w in seen["widths"]), seen
    assert seen["rest"] == seen["css"] and seen["lowered"] is None, seen
    page.context.close()

    # A 1920×1080 screen: lower than half while moving (the drawn pixels of 1280×800 at half), full at rest.
    page = new_page(browser, served, viewport={"width": 1920, "height": 1080})
    login(page, served, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    wait_map_idle(page)
    scale = float(page.evaluate("window.cityopsMap.getContainer().dataset.movingResolution"))
    assert 0.3 <= scale < 0.45, scale
    seen = pan_and_watch(page)
    assert abs(seen["moving"] - seen["css"] * scale) <= seen["css"] * 0.01 + 1, seen
    assert seen["moving"] * seen["movingHeight"] <= 1280 * 800 / 4 * 1.02, seen
    assert all(w == seen["moving"] for w in seen["widths"]), seen
    assert seen["rest"] == seen["css"] and seen["lowered"] is None, seen
    # The browser scales the lowered canvas up by nearest pixels (cheaper to composite), and draws it 1:1 at rest.
    assert seen["scaling"] == "pixelated" and seen["restScaling"] == "auto", seen
    # At rest the map is drawn, sharp: its features are where they were, the canvas is not blank.
    wait_map_idle(page)
    drawn = page.evaluate("""() => { const m = window.cityopsMap; m.redraw();
        return m.queryRenderedFeatures({layers: ['district-line', 'relief']}).length; }""")
    assert drawn > 0
    steps = Steps("map-resolution")
    steps.shot(page, "at-rest")
    assert_no_page_errors(page)
    page.context.close()

    page = new_page(browser, served)
    page.add_init_script("localStorage.setItem('cityops.map.fullResolution', '1')")
    login(page, served, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    wait_map_idle(page)
    assert page.evaluate("window.cityopsMap.getContainer().dataset.movingResolution || null") is None
    seen = pan_and_watch(page)
    assert all(w == seen["css"] for w in seen["widths"]) and seen["rest"] == seen["css"], seen
    assert_no_page_errors(page)
    page.context.close()

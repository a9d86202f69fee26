"""The map page in a real browser: Playwright driving Debian's headless Chromium (WebGL via SwiftShader)
against the small demo district served by uvicorn. Never runs `playwright install`: the system Chromium
is used; without it the module is skipped (and fails under CI=true)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from shapely.geometry import shape

from cityops.app import create_app
from cityops.demo.generator import DEMO_PASSWORD, build_demo
from cityops.web.routes import STATIC_DIR, messages
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
#: Headless Chromium has no GPU here: WebGL comes from SwiftShader through ANGLE.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
    "--disable-extensions", "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
TIMEOUT_MS = 20_000


def _require(condition: bool, problem: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test required under CI=true: {problem}")
    pytest.skip(f"browser test skipped: {problem}")



@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """The small demo district on SQLite, served by uvicorn in a background thread."""
    _require(CHROMIUM.exists(), f"{CHROMIUM} is absent (apt-get install chromium)")
    _require((STATIC_DIR / "vendor" / "maplibre-gl.mjs").exists(),
             "web assets missing: run 'npm ci && npm run vendor' in cityops/web/frontend")
    store, close = make_store("sqlite", tmp_path_factory.mktemp("browser-demo"))
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-browser-test") as url:
        yield url
    close()


@pytest.fixture(scope="module")
def browser(base_url):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture
def page(browser, base_url):
    """A fresh page (own storage) that records every URL it requests in ``page.requested``."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.requested = []
    page.console_errors = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()


def assert_local_only(page, base_url: str) -> None:
    foreign = [url for url in page.requested if not url.startswith(base_url + "/")]
    assert page.requested and not foreign, f"requests to other hosts: {foreign}"


def login(page, base_url: str, username: str, password: str) -> None:
    page.goto(base_url + "/")
    page.locator("#login-username").fill(username)
    page.locator("#login-password").fill(password)
    page.locator("#login-submit").click()


def test_wrong_password_shows_the_error_in_the_ui_language(page, base_url):
    body = httpx.post(f"{base_url}/api/auth/login", json={"username": "yihe", "password": "not-the-password"}).json()
    assert body["error"] == "unauthenticated"
    catalogue = httpx.get(f"{base_url}/api/i18n/zh-CN").json()
    login(page, base_url, "yihe", "not-the-password")
    error = page.get_by_test_id("login-error")
    from playwright.sync_api import expect

    expect(error).to_be_visible()
    expect(error).to_have_text(catalogue["error.unauthenticated"])
    assert page.locator("#main-view").is_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "login-error.png"))
    assert_local_only(page, base_url)


def test_login_map_and_click_to_inspect_a_grid(page, base_url):
    from playwright.sync_api import expect

    # A grid of yihe's scope and a point well inside it, from the API.
    token = httpx.post(f"{base_url}/api/auth/login",
                       json={"username": "yihe", "password": DEMO_PASSWORD}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    grid = httpx.get(f"{base_url}/api/units", params={"level": "grid", "limit": 1}, headers=headers).json()["items"][0]
    detail = httpx.get(f"{base_url}/api/units/{grid['code']}", params={"geometry": "true"}, headers=headers).json()
    point = shape(detail["geometry"]).representative_point()
    lonlat = [point.x, point.y]

    login(page, base_url, "yihe", DEMO_PASSWORD)
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    expect(page.locator("header .brand")).to_have_text("城市运行和治理中心")
    expect(page.get_by_test_id("user-name")).to_have_text("义和镇值班员")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "map-scope.png"))

    # Zoom to the grid (grid zoom or closer); wait until its polygon is rendered under the point.
    page.evaluate("""([lonlat, bounds]) => {
        const map = window.cityopsMap;
        const camera = map.cameraForBounds(bounds, {padding: 120});
        map.jumpTo({center: lonlat, zoom: Math.max(camera ? camera.zoom : 0, 12.5)});
    }""", [lonlat, list(shape(detail["geometry"]).bounds)])
    page.wait_for_function(
        """([lonlat, code]) => {
            const map = window.cityopsMap;
            if (!map.loaded() || map.isMoving()) return false;
            const hits = map.queryRenderedFeatures(map.project(lonlat), {layers: ['grid-fill']});
            return hits.some((f) => f.properties.code === code);
        }""", arg=[lonlat, grid["code"]])
    pixel = page.evaluate("([lonlat]) => { const p = window.cityopsMap.project(lonlat); return [p.x, p.y]; }",
                          [lonlat])
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + pixel[0], box["y"] + pixel[1])
    expect(page.locator("#tooltip")).to_contain_text(grid["name"])
    page.mouse.click(box["x"] + pixel[0], box["y"] + pixel[1])

    panel = page.get_by_test_id("unit-panel")
    expect(panel).to_be_visible()
    expect(panel.get_by_test_id("unit-code")).to_have_text(grid["code"])
    expect(panel.get_by_test_id("unit-chain")).to_contain_text("义和镇")
    expect(panel.get_by_test_id("unit-level")).to_have_text(messages()["zh-CN"]["level.grid"])
    expect(panel.get_by_test_id("unit-name")).to_have_text(grid["name"])
    if detail["responsible"]:
        expect(panel.get_by_test_id("unit-responsible")).to_contain_text(detail["responsible"][0]["name"])
    page.wait_for_function("window.cityopsMap.loaded() && !window.cityopsMap.isMoving()")
    page.screenshot(path=str(ARTIFACTS / "map.png"))

    # Switch to English: the labels are translated, the panel stays on the same unit.
    page.get_by_test_id("language-select").select_option("en")
    expect(panel.get_by_test_id("unit-level")).to_have_text(messages()["en"]["level.grid"])
    expect(page.locator("header .brand")).to_have_text("City Operation and Governance Center")
    expect(page.locator("#logout")).to_have_text(messages()["en"]["header.logout"])
    expect(panel.get_by_test_id("unit-code")).to_have_text(grid["code"])
    page.screenshot(path=str(ARTIFACTS / "map-en.png"))
    assert page.evaluate("localStorage.getItem('cityops.language')") == "en"

    assert_local_only(page, base_url)
    assert not [e for e in page.console_errors if "WebGL" in e or "Failed to load" in e], page.console_errors

    # Logging out returns to the login form and drops the token.
    page.locator("#logout").click()
    expect(page.locator("#login-view")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('cityops.token')") is None

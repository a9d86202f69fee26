"""Helpers of the browser tests: Debian's Chromium through Playwright's Python package (never `playwright install`),
WebGL from SwiftShader, a page that refuses every request to another host (and remembers it), logging in through
the login form, and screenshots per step into test-artifacts/."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from cityops.demo.generator import DEMO_PASSWORD
from cityops.web.routes import DIST_DIR

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
DESK = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
#: Internal codes that must never reach the screen (names are shown instead).
INTERNAL = re.compile(r"system:|demo:|\bsthjj\b|\bzjw\b|\bcgj\b|\bgzj\b|\bto_move\b|\bin_handling\b|\bdispatched\b")


def require_browser() -> None:
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is absent (apt-get install chromium)")
    if not (DIST_DIR / "index.html").is_file():
        problems.append("the web app is not built (make assets)")
    if problems:
        if os.environ.get("CI") == "true":
            pytest.fail("browser test required under CI=true: " + "; ".join(problems))
        pytest.skip("browser test skipped: " + "; ".join(problems))


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


class Steps:
    """Screenshots of one test, numbered in order: test-artifacts/<name>-<n>-<step>.png."""

    def __init__(self, name: str):
        self.name, self.n = name, 0
        ARTIFACTS.mkdir(exist_ok=True)

    def shot(self, page, step: str, full_page: bool = False) -> Path:
        self.n += 1
        path = ARTIFACTS / f"{self.name}-{self.n}-{step}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path


@contextmanager
def chromium():
    """Debian's Chromium under Playwright for a test module (its ``browser`` fixture), closed afterwards."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        b = launch(pw)
        yield b
        b.close()
    finally:
        pw.stop()


def new_page(browser, base_url: str, *, viewport=DESK, **context_options):
    """A fresh context and page. Every request to a host other than the server is refused and remembered in
    ``page.foreign``; console errors are kept in ``page.errors``."""
    context = browser.new_context(viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai", **context_options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.foreign, page.errors, page.requested = [], [], []
    server = urlsplit(base_url).netloc

    def route(r):
        url = r.request.url
        if urlsplit(url).netloc == server or url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            page.foreign.append(url)
            r.abort()

    context.route("**/*", route)
    page.on("request", lambda request: page.requested.append(request.url))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(f"page error: {e}"))
    return page


def assert_local_only(page) -> None:
    assert page.requested, "the page made no request"
    assert not page.foreign, f"requests to other hosts: {page.foreign}"


def assert_no_page_errors(page, allow: tuple[str, ...] = ()) -> None:
    """No script error on the page (failed requests the test provoked may be allowed by a fragment)."""
    errors = [e for e in page.errors if "page error" in e or not any(a in e for a in ("Failed to load resource", *allow))]
    assert not errors, errors


def assert_no_internal_codes(page) -> None:
    text = page.locator("body").inner_text()
    found = INTERNAL.findall(text)
    assert not found, f"internal codes on screen: {sorted(set(found))}"


def login(page, base_url: str, username: str, password: str = DEMO_PASSWORD, path: str = "/") -> None:
    page.goto(base_url + path)
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_function("!location.pathname.startsWith('/login')")


def token(base_url: str, username: str, password: str = DEMO_PASSWORD) -> dict:
    r = httpx.post(f"{base_url}/api/auth/login", json={"username": username, "password": password}, timeout=30)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def wait_map_idle(page, handle: str = "window.cityopsMap", timeout: float = 60_000) -> None:
    """Until the map has drawn what it shows (SwiftShader on a shared machine can take a while), at full resolution
    (in software the moving map is drawn at a lower one until it rests: src/map/frames.js)."""
    page.wait_for_function(f"{handle} && {handle}.loaded() && !{handle}.isMoving() && {handle}.areTilesLoaded()"
                           f" && !{handle}.getContainer().dataset.resolutionLowered", timeout=timeout)


def pixel(page, lonlat, handle: str = "window.cityopsMap", container: str = "#map") -> tuple[float, float]:
    p = page.evaluate(f"([ll]) => {{ const p = {handle}.project(ll); return [p.x, p.y]; }}", [list(lonlat)])
    box = page.locator(container).bounding_box()
    return box["x"] + p[0], box["y"] + p[1]

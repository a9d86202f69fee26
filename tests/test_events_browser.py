"""Event center pages in a real browser (Debian's headless Chromium via Playwright): the grid worker reports
from the phone page with a GPS position and a photo; the township operator finds the case in the workbench
queue, sees its history and photo, and accepts it. Screenshots go to test-artifacts/."""

from __future__ import annotations


import pytest

from cityops.app import create_app
from cityops.demo.generator import DEMO_PASSWORD, build_demo
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread
from tests.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _require

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def served(tmp_path_factory):
    _require(CHROMIUM.exists(), f"{CHROMIUM} is absent (apt-get install chromium)")
    store, close = make_store("sqlite", tmp_path_factory.mktemp("events-browser"))
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-events-browser") as url:
        yield url, store
    close()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    pw.stop()


def _grid_worker_position(store) -> tuple[float, float]:
    """A point inside the grid worker's own grid (太康村, first grid)."""
    from sqlalchemy import select

    from cityops.identity.models import User
    from cityops.org.models import Unit

    with store.sessions() as s:
        user = s.scalar(select(User).where(User.username == "gridworker"))
        grid = s.scalar(select(Unit).where(Unit.code == user.scope_units[0]))
        p = grid.geom.representative_point()
    return p.x, p.y


def test_report_on_the_phone_then_accept_in_the_workbench(served, chromium, tmp_path):
    from playwright.sync_api import expect

    base, store = served
    ARTIFACTS.mkdir(exist_ok=True)
    lon, lat = _grid_worker_position(store)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 512 + b"\xff\xd9")

    phone = chromium.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", is_mobile=True, has_touch=True,
                                 geolocation={"longitude": lon, "latitude": lat, "accuracy": 8}, permissions=["geolocation"])
    page = phone.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(base + "/static/report.html")
    page.get_by_test_id("ev-user").fill("gridworker")
    page.get_by_test_id("ev-pass").fill(DEMO_PASSWORD)
    page.get_by_test_id("ev-login").click()
    expect(page.get_by_test_id("ev-class")).to_contain_text("暴露垃圾")
    page.get_by_test_id("ev-class").select_option("matter:06010")
    page.get_by_test_id("ev-desc").fill("村口垃圾堆积")
    page.get_by_test_id("ev-locate").click()
    expect(page.get_by_test_id("ev-position")).to_contain_text(f"{lon:.6f}")
    page.get_by_test_id("ev-photo").set_input_files(str(photo))
    page.screenshot(path=str(ARTIFACTS / "events-phone-report.png"), full_page=True)
    page.get_by_test_id("ev-submit").click()
    expect(page.get_by_test_id("ev-result")).to_contain_text("上报成功")
    number = page.get_by_test_id("ev-result").inner_text().split()[-1]
    page.screenshot(path=str(ARTIFACTS / "events-phone-done.png"), full_page=True)
    phone.close()

    desk = chromium.new_context(viewport={"width": 1400, "height": 860}, locale="zh-CN")
    page = desk.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(base + "/static/events.html")
    page.get_by_test_id("ev-user").fill("yihe")
    page.get_by_test_id("ev-pass").fill(DEMO_PASSWORD)
    page.get_by_test_id("ev-login").click()
    page.get_by_test_id("queue-to_accept").click()
    case = page.locator(f"[data-testid=ev-case][data-number='{number}']")
    expect(case).to_contain_text("暴露垃圾")
    case.click()
    expect(page.get_by_test_id("ev-detail-title")).to_contain_text("暴露垃圾")
    expect(page.get_by_test_id("ev-history")).to_contain_text("上报")
    expect(page.locator("#ev-photos img")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "events-workbench-case.png"), full_page=True)
    # An illegal action never shows: only the allowed ones are offered.
    expect(page.get_by_test_id("action-close")).to_have_count(0)
    page.get_by_test_id("action-accept").click()
    expect(page.get_by_test_id("ev-history")).to_contain_text("受理")
    expect(page.get_by_test_id("action-file")).to_be_visible()
    page.get_by_test_id("action-file").click()
    expect(page.get_by_test_id("ev-history")).to_contain_text("派遣")  # auto-dispatched to 区城市管理局
    page.screenshot(path=str(ARTIFACTS / "events-workbench-dispatched.png"), full_page=True)
    # English works from the same catalogue.
    page.get_by_test_id("ev-lang").select_option("en")
    expect(page.get_by_test_id("queue-to_accept")).to_contain_text("To accept")
    assert not [e for e in errors if "favicon" not in e], errors
    desk.close()

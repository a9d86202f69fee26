"""The signature scenario in a real browser (Playwright driving Debian's Chromium): the command view follows
the 老沟湾 evacuation live while a grid worker confirms households on the phone page. Screenshots at each
stage go to test-artifacts/. Skipped without Chromium or the web assets (failed under CI=true)."""

from __future__ import annotations


import httpx
import pytest
from shapely.geometry import Point

from cityops.app import create_app
from cityops.core.spatial import buffer_m
from cityops.demo.generator import DEMO_PASSWORD, build_demo
from cityops.tasks.plans import on_warning_level
from cityops.web.routes import STATIC_DIR
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread
from tests.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _require

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    _require(CHROMIUM.exists(), f"{CHROMIUM} is absent (apt-get install chromium)")
    _require((STATIC_DIR / "vendor" / "maplibre-gl.mjs").exists(), "web assets missing: run 'make assets'")
    store, close = make_store("sqlite", tmp_path_factory.mktemp("tasks-browser"))
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-tasks-browser") as url:
        yield url, store
    close()


def _login(page, url: str, username: str, password: str) -> None:
    page.goto(url)
    page.locator("#login-username").fill(username)
    page.locator("#login-password").fill(password)
    page.locator("#login-submit").click()
    page.wait_for_function("document.body.dataset.ready === '1' || document.body.dataset.error")
    assert not page.evaluate("document.body.dataset.error"), page.evaluate("document.body.dataset.error")


def test_command_view_and_phone_page_follow_the_evacuation(served):
    from playwright.sync_api import expect, sync_playwright

    base, store = served
    ARTIFACTS.mkdir(exist_ok=True)
    client = httpx.Client(base_url=base, timeout=30)

    def headers(user, password=DEMO_PASSWORD):
        return {"Authorization": "Bearer " + client.post("/api/auth/login", json={"username": user, "password": password}).json()["access_token"]}

    admin, district = headers("admin"), headers("district")
    place = client.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
    with store.sessions() as session:
        incident = on_warning_level(session, risk_point_code="RP-LGW-001", hazard_type="landslide", level="orange",
                                    unit_code=place["unit_code"], geometry=buffer_m(Point(place["lon"], place["lat"]), 30, "EPSG:4545"),
                                    evidence={"rain_24h_mm": 182})
        session.commit()
        iid = incident.id
    r = client.post("/api/users", headers=admin, json={"username": "lgw_worker", "password": "lgw-worker-pw", "role": "grid_worker",
                                                        "scope_units": [place["unit_code"]]})
    assert r.status_code == 201, r.text
    worker = headers("lgw_worker", "lgw-worker-pw")
    totals = client.get(f"/api/incidents/{iid}/totals", headers=district).json()["district"]
    assert totals["households"] > 20

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        command = browser.new_context(viewport={"width": 1400, "height": 860}, locale="zh-CN").new_page()
        command.set_default_timeout(TIMEOUT_MS)
        requested = []
        command.on("request", lambda req: requested.append(req.url))
        _login(command, f"{base}/static/command.html?incident={iid}", "district", DEMO_PASSWORD)
        body = command.locator("#totals-body")
        expect(body).to_have_attribute("data-households", str(totals["households"]))
        expect(body).to_have_attribute("data-safe", "0")
        expect(command.get_by_test_id("incident-status")).to_contain_text("响应中")
        expect(command.get_by_test_id("tasks-board")).to_contain_text("逐户转移")
        expect(command.get_by_test_id("tasks-timeline")).to_contain_text("风险区第1版")
        command.wait_for_function("window.cityopsCommandMap.loaded() && !window.cityopsCommandMap.isMoving()")
        rendered = command.evaluate("window.cityopsCommandMap.queryRenderedFeatures({layers: ['households']}).length")
        assert rendered > 0
        command.screenshot(path=str(ARTIFACTS / "tasks-1-command-activated.png"))

        phone = browser.new_context(viewport={"width": 400, "height": 820}, locale="zh-CN", is_mobile=True).new_page()
        phone.set_default_timeout(TIMEOUT_MS)
        _login(phone, f"{base}/static/phone.html?lon={place['lon']}&lat={place['lat']}", "lgw_worker", "lgw-worker-pw")
        mine = client.get(f"/api/incidents/{iid}/evacuations", params={"state": "to_move", "lon": place["lon"], "lat": place["lat"]},
                          headers=worker).json()["items"]
        cards = phone.locator("[data-testid=household]")
        expect(cards).to_have_count(len(mine))
        assert cards.first.get_attribute("data-id") == str(mine[0]["id"])  # nearest first
        phone.screenshot(path=str(ARTIFACTS / "tasks-2-phone.png"))
        for n in range(3):
            rendered_before = phone.evaluate("document.body.dataset.rendered")
            phone.locator("[data-testid=household] button.moved").first.click()
            phone.wait_for_function(f"document.body.dataset.rendered !== '{rendered_before}'")
            expect(cards).to_have_count(len(mine) - n - 1)
        history = client.get(f"/api/evacuations/{mine[0]['id']}/history", headers=worker).json()
        assert history[0]["to"] == "moved" and history[0]["actor"] == "lgw_worker" and history[0]["lon"] == pytest.approx(place["lon"])
        phone.screenshot(path=str(ARTIFACTS / "tasks-3-phone-progress.png"))

        # The command view follows without a reload.
        expect(body).to_have_attribute("data-safe", "3")
        command.screenshot(path=str(ARTIFACTS / "tasks-4-command-live.png"))

        for item in mine[3:]:
            assert client.post(f"/api/evacuations/{item['id']}/state", json={"state": "moved"}, headers=worker).status_code == 200
        expect(phone.get_by_test_id("phone-done")).to_be_visible()
        phone.screenshot(path=str(ARTIFACTS / "tasks-5-phone-done.png"))
        expect(body).to_have_attribute("data-remaining", "0")
        command.screenshot(path=str(ARTIFACTS / "tasks-6-command-all-moved.png"))

        yihe = headers("yihe")
        assert client.post(f"/api/incidents/{iid}/stand-down", json={"reason": "降雨停止"}, headers=yihe).status_code == 200
        assert client.post(f"/api/incidents/{iid}/close", json={"note": "险情解除"}, headers=yihe).status_code == 200
        expect(command.get_by_test_id("incident-status")).to_contain_text("已关闭")
        expect(command.get_by_test_id("tasks-timeline")).to_contain_text("事件关闭")
        command.screenshot(path=str(ARTIFACTS / "tasks-7-command-closed.png"))
        foreign = [u for u in requested if not u.startswith(base + "/")]
        assert not foreign, foreign
    finally:
        browser.close()
        pw.stop()
        client.close()

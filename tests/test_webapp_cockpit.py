"""The cockpit (数字驾驶舱) in real headless Chromium (Playwright, Debian's Chromium, SwiftShader WebGL): a leader opens
it from the top bar, reads the district's sectors, runways and red list, drills down district → township → village
and back, sees a value change live when a case is reported, looks at an earlier day and switches to English; a
township operator gets the township's cockpit and nothing outside it. A screenshot per step into
test-artifacts/cockpit-<role>-<n>-<step>.png. The district: the small demo on SQLite with the 老沟湾 landslide response
active, the demo's 30 days of indicator history and today's values computed again."""

from __future__ import annotations

import httpx
import pytest
from shapely.geometry import Point

from cityops.app import create_app
from cityops.core.spatial import buffer_m
from cityops.demo.generator import build_demo
from cityops.tasks.plans import on_warning_level
from tests.browser import (chromium, Steps, assert_local_only, assert_no_internal_codes, assert_no_page_errors, login,
                           new_page, require_browser, token, wait_map_idle)
from tests.bus_helpers import deliver, outbox_head
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread

pytestmark = pytest.mark.browser

WALL = {"width": 1920, "height": 1080}
MAP = "window.cityopsCockpitMap"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_browser()
    store, close = make_store("sqlite", tmp_path_factory.mktemp("webapp-cockpit"))
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-webapp-cockpit") as url:
        admin = token(url, "admin")
        client = httpx.Client(base_url=url, timeout=120)
        place = client.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
        with store.sessions() as session:
            on_warning_level(session, risk_point_code="RP-LGW-001", hazard_type="landslide", level="orange",
                             unit_code=place["unit_code"], geometry=buffer_m(Point(place["lon"], place["lat"]), 30, "EPSG:4545"),
                             evidence={"rain_24h_mm": 182})
            session.commit()
        # The demo has computed 30 days of history; now again with the response active, acting on breaches (the red
        # risk point's opens its case, through the consumer of its indicator.breached: delivered here, the app
        # running its capabilities apart).
        since = outbox_head(store)
        r = client.post("/api/indicators/compute", headers=admin, json={})
        assert r.status_code == 200, r.text
        assert deliver(store, "indicators.breach_case", since)
        units = client.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]
        yield {"url": url, "client": client, "admin": admin, "place": place, "townships": units}
        client.close()
    close()


@pytest.fixture(scope="module")
def browser(world):
    with chromium() as b:
        yield b


def board(world, user: str, **params) -> dict:
    r = world["client"].get("/api/indicators/board", params=params, headers=token(world["url"], user))
    assert r.status_code == 200, r.text
    return r.json()


def open_cockpit(page, base: str, steps: Steps, user: str) -> None:
    from playwright.sync_api import expect

    login(page, base, user)
    page.get_by_test_id("nav-cockpit").click()
    page.wait_for_url("**/cockpit**")
    page.wait_for_function("document.body.dataset.cockpitReady === '1'", timeout=60_000)
    wait_map_idle(page, MAP)
    steps.shot(page, "cockpit")
    expect(page.get_by_test_id("live-state")).to_have_text("实时", timeout=20_000)


def indicator_value(page, code: str) -> str:
    return page.get_by_test_id(f"indicator-{code}").get_attribute("data-value")


def report_case(world, lon: float, lat: float, text: str) -> str:
    r = world["client"].post("/api/events/cases", headers=world["admin"],
                             json={"class_code": "06010", "description": text, "lon": lon, "lat": lat})
    assert r.status_code == 201, r.text
    return r.json()["number"]


def test_leader_reads_the_district_drills_down_and_sees_a_case_arrive(world, browser):
    from playwright.sync_api import expect

    base, steps = world["url"], Steps("cockpit-leader")
    page = new_page(browser, base, viewport=WALL)
    open_cockpit(page, base, steps, "leader")
    expected = board(world, "leader")
    district = expected["unit"]
    expect(page.get_by_test_id("unit-name")).to_have_text(district["name"])
    # Sector tabs by name, red items first; the chosen sector's runways worst first, each card's indicators too.
    tabs = page.get_by_test_id("sector-tabs")
    sectors = [s for s in expected["sectors"] if any(r["cards"] for r in s["runways"])]
    for s in sectors:
        expect(tabs).to_contain_text(s["name_zh"])
    rank = {"red": 0, "orange": 1, "yellow": 2, "green": 3, "": 4}
    bands = page.locator("[data-testid=runway-cards] [data-band]").evaluate_all("els => els.map(e => e.dataset.band)")
    cards = page.locator("[data-testid=runway-cards] article").evaluate_all("els => els.map(e => e.className)")
    assert bands, "no indicator on the cards"
    runway_bands = [next((b for b in ("red", "orange", "yellow", "green") if f"band-{b}" in c), "") for c in cards]
    assert [rank[b] for b in runway_bands] == sorted(rank[b] for b in runway_bands), runway_bands
    # The ranking names the townships (names, never codes), as many as the board's children.
    ranking = page.get_by_test_id("ranking")
    for child in expected["children"]:
        expect(ranking).to_contain_text(child["name"])
    # The red list holds the 老沟湾 response (it opens the command view) and the orange risk point.
    red = page.get_by_test_id("red-list")
    expect(red).to_contain_text("老沟湾")
    steps.shot(page, "district")

    # Live: a case reported in 义和镇 raises the district's open cases on the screen without a reload.
    sector_of = {c["indicator"]: s["code"] for s in expected["sectors"] for r in s["runways"] for c in r["cards"]}
    page.get_by_test_id(f"sector-{sector_of['cases_open']}").click()
    page.get_by_test_id("indicator-cases_open").click()
    before = float(indicator_value(page, "cases_open"))
    key_before = page.get_by_test_id("key-cases_open").inner_text()
    report_case(world, world["place"]["lon"] + 0.002, world["place"]["lat"], "驾驶舱实时测试：路边垃圾")
    page.wait_for_function("([sel, v]) => Number(document.querySelector(sel).dataset.value) === v",
                           arg=["[data-testid=indicator-cases_open]", before + 1], timeout=30_000)
    expect(page.get_by_test_id("key-cases_open")).not_to_have_text(key_before)
    steps.shot(page, "live-case-arrived")

    # Drill down: 义和镇 from the ranking; the map, cards and ranking follow (its villages).
    yihe = next(t for t in world["townships"] if t["name"] == "义和镇")
    page.get_by_test_id(f"rank-{yihe['code']}").click()
    expect(page.get_by_test_id("unit-name")).to_have_text("义和镇")
    expect(page.get_by_test_id("crumb-0")).to_have_text(district["name"])
    page.wait_for_function(f"{MAP}.getLayer('cockpit-units-fill') && {MAP}.getLayer('cockpit-units-fill').sourceLayer === 'village'")
    township = board(world, "leader", unit=yihe["code"])
    villages = township["children"]
    assert villages
    for v in villages[:5]:
        expect(page.get_by_test_id("ranking")).to_contain_text(v["name"])
    expect(page.get_by_test_id("indicator-cases_open")).to_have_attribute(
        "data-value", fmt_value(next(c for s in township["sectors"] for r in s["runways"] for c in r["cards"]
                                     if c["indicator"] == "cases_open")["value"]))
    wait_map_idle(page, MAP)
    steps.shot(page, "township")

    # … then a village, and back to the district by the breadcrumb.
    village = page.locator("[data-testid=ranking] tbody tr").first
    village_name = village.locator("td").nth(1).inner_text().strip()
    village.click()
    expect(page.get_by_test_id("unit-name")).to_have_text(village_name)
    expect(page.get_by_test_id("crumb-1")).to_have_text("义和镇")
    wait_map_idle(page, MAP)
    steps.shot(page, "village")
    page.get_by_test_id("crumb-0").click()
    expect(page.get_by_test_id("unit-name")).to_have_text(district["name"])

    # An earlier day on the slider: the board of that day; back to live.
    slider = page.get_by_test_id("time-slider").locator(".el-slider__button-wrapper")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    expect(page.get_by_test_id("time-slider")).not_to_contain_text("今天")
    page.wait_for_function("document.body.dataset.cockpitAt && document.body.dataset.cockpitAt !== 'live'")
    at = page.evaluate("document.body.dataset.cockpitAt")
    assert at.endswith("T23:59:59+08:00"), at
    then = board(world, "leader", at=at)
    shown = next(c for s in then["sectors"] for r in s["runways"] for c in r["cards"] if c["indicator"] == "cases_open")
    expect(page.get_by_test_id("indicator-cases_open")).to_have_attribute("data-value", fmt_value(shown["value"]))
    steps.shot(page, "three-days-ago")
    page.keyboard.press("End")
    expect(page.get_by_test_id("time-slider")).to_contain_text("今天")

    # A red indicator whose breach opened a case: the red list opens the case.
    red_items = expected["red_list"]
    with_case = [r for r in red_items if r["case_number"]]
    assert with_case, red_items
    page.get_by_test_id(f"open-ind-{with_case[0]['indicator']}").click()
    page.wait_for_url(f"**/workbench/cases/{with_case[0]['case_number']}")
    steps.shot(page, "red-item-case")
    page.go_back()
    page.wait_for_function("document.body.dataset.cockpitReady === '1'", timeout=60_000)

    # The response in the red list opens the command view.
    page.get_by_test_id("red-list").get_by_role("button", name="指挥调度").first.click()
    page.wait_for_url("**/command?incident=*")
    page.go_back()
    page.wait_for_function("document.body.dataset.cockpitReady === '1'", timeout=60_000)

    # English: sector and indicator names in English.
    page.get_by_test_id("language-select").select_option("en")
    english = [s["name_en"] for s in sectors]
    for name in english[:3]:
        expect(page.get_by_test_id("sector-tabs")).to_contain_text(name)
    steps.shot(page, "english")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


def fmt_value(value) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def test_township_operator_sees_only_the_township(world, browser):
    from playwright.sync_api import expect

    base, steps = world["url"], Steps("cockpit-township")
    page = new_page(browser, base, viewport={"width": 1440, "height": 900})
    open_cockpit(page, base, steps, "yihe")
    yihe = next(t for t in world["townships"] if t["name"] == "义和镇")
    expect(page.get_by_test_id("unit-name")).to_have_text("义和镇")
    expect(page.get_by_test_id("crumb-0")).to_have_count(0)  # nothing above the township to go up to
    mine = board(world, "yihe")
    assert mine["unit"]["code"] == yihe["code"]
    for v in mine["children"]:
        expect(page.get_by_test_id("ranking")).to_contain_text(v["name"])
    for other in (t for t in world["townships"] if t["code"] != yihe["code"]):
        expect(page.get_by_test_id("ranking")).not_to_contain_text(other["name"])
    steps.shot(page, "township")

    # Another township's cockpit by its address: the township's own is shown instead; the API refuses it.
    other = next(t for t in world["townships"] if t["code"] != yihe["code"])
    page.goto(f"{base}/cockpit?unit={other['code']}")
    page.wait_for_function("document.body.dataset.cockpitReady === '1'", timeout=60_000)
    expect(page.get_by_test_id("unit-name")).to_have_text("义和镇")
    r = world["client"].get("/api/indicators/board", params={"unit": other["code"]}, headers=token(base, "yihe"))
    assert r.status_code in (403, 404), r.text

    # Live at the township's scope: a case in 义和镇 moves its open cases.
    expect(page.get_by_test_id("live-state")).to_have_text("实时", timeout=20_000)
    before = float(page.get_by_test_id("key-cases_open").get_attribute("data-value"))
    report_case(world, world["place"]["lon"] - 0.002, world["place"]["lat"], "驾驶舱实时测试：镇街")
    page.wait_for_function("([sel, v]) => Number(document.querySelector(sel).dataset.value) === v",
                           arg=["[data-testid=key-cases_open]", before + 1], timeout=30_000)
    steps.shot(page, "live-case-arrived")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()

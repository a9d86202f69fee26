"""The web app as each role uses it, in real headless Chromium (Playwright, Debian's Chromium, SwiftShader WebGL):
log in, do the role's main job end to end, check what is on the screen, a screenshot per step into
test-artifacts/<role>-<n>-<step>.png. Every page refuses requests to any other host and the test fails if one
was attempted. The district: the small demo on SQLite with the 老沟湾 landslide response active."""

from __future__ import annotations

import base64
import io
import re
import time

import httpx
import pytest
from shapely.geometry import Point, shape

from cityops.app import create_app
from cityops.core.spatial import buffer_m
from cityops.demo.generator import DEMO_PASSWORD, build_demo
from cityops.tasks.plans import on_warning_level
from tests.browser import (chromium, DESK, PHONE, Steps, assert_local_only, assert_no_internal_codes, assert_no_page_errors, launch,
                           login, new_page, pixel, require_browser, token, wait_map_idle)
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread

pytestmark = pytest.mark.browser

#: The demo's own login of 老沟湾's grid worker (README): the zone's households are theirs.
LGW_WORKER = ("laogouwan", DEMO_PASSWORD)


def _jpeg(browser) -> bytes:
    """A real (decodable) JPEG photo, drawn by the browser."""
    page = browser.new_page()
    data = page.evaluate("""() => { const c = document.createElement('canvas'); c.width = 320; c.height = 240;
        const g = c.getContext('2d'); g.fillStyle = '#6b8e23'; g.fillRect(0, 0, 320, 240); g.fillStyle = '#8b4513';
        g.fillRect(60, 90, 200, 90); return c.toDataURL('image/jpeg', 0.8).split(',')[1]; }""")
    page.close()
    return base64.b64decode(data)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The served demo and its 老沟湾 incident (for the demo's grid worker of 老沟湾), and cases for each desk role."""
    require_browser()
    store, close = make_store("sqlite", tmp_path_factory.mktemp("webapp-roles"))
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-webapp-roles") as url:
        admin = token(url, "admin")
        client = httpx.Client(base_url=url, timeout=30)
        place = client.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
        with store.sessions() as session:
            incident = on_warning_level(session, risk_point_code="RP-LGW-001", hazard_type="landslide", level="orange",
                                        unit_code=place["unit_code"],
                                        geometry=buffer_m(Point(place["lon"], place["lat"]), 30, "EPSG:4545"),
                                        evidence={"rain_24h_mm": 182})
            session.commit()
            iid = incident.id
        # Cases: two reported in 义和镇 (to accept), one 施工扰民 (routed to 区住房城乡建委 once filed).
        cases = []
        for n, (cls, text) in enumerate((("06010", "村口垃圾堆积"), ("06010", "河边暴露垃圾"), ("08001", "夜间施工扰民"))):
            r = client.post("/api/events/cases", headers=admin, json={"class_code": cls, "description": text,
                                                                      "lon": place["lon"] + 0.001 * (n + 1), "lat": place["lat"]})
            assert r.status_code == 201, r.text
            cases.append(r.json()["number"])
        for action in ("accept", "file"):
            assert client.post(f"/api/events/cases/{cases[2]}/actions/{action}", headers=admin, json={}).status_code == 200
        assert client.get(f"/api/events/cases/{cases[2]}", headers=admin).json()["department_code"] == "zjw"
        # A task of the township for the village of 老沟湾 (one sub-task per village).
        village = place["unit_code"][:12]
        r = client.post("/api/tasks", headers=token(url, "yihe"), json={"title": "巡查老沟湾裂缝并每小时报告",
                                                                        "unit_code": village[:9], "target_units": [village]})
        assert r.status_code == 201, r.text
        yield {"url": url, "store": store, "client": client, "admin": admin, "place": place, "incident": iid, "cases": cases}
        client.close()
    close()


@pytest.fixture(scope="module")
def browser(world):
    with chromium() as b:
        yield b


def test_leader_watches_the_district_and_opens_the_command_view(world, browser):
    from playwright.sync_api import expect

    base, steps = world["url"], Steps("leader")
    page = new_page(browser, base)
    login(page, base, "leader")
    expect(page).to_have_url(base + "/")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    expect(page.get_by_test_id("user-name")).to_have_text("区领导")
    expect(page.get_by_test_id("kpi-incidents")).to_contain_text("1", timeout=30_000)  # live layers follow the base map
    wait_map_idle(page)
    steps.shot(page, "operations-map")
    # The live layers are listed with what each shows now; the base map's parts can be switched.
    page.get_by_test_id("layers-toggle").click()
    panel = page.get_by_test_id("layers-panel")
    for key in ("incidents", "risk_points", "alarms", "sensors", "cases", "shelters", "relief", "water", "roads"):
        expect(panel.get_by_test_id(f"layer-{key}")).to_be_checked()
    expect(panel).to_contain_text("风险点位")
    steps.shot(page, "layers")
    page.get_by_test_id("layers-toggle").click()
    # The incident on the map: its card, then the command view.
    inc = world["client"].get(f"/api/incidents/{world['incident']}", headers=world["admin"]).json()
    minx, miny, maxx, maxy = shape(inc["zone"]["geometry"]).bounds
    centre = [(minx + maxx) / 2, (miny + maxy) / 2]
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 15})", [centre])
    wait_map_idle(page)
    inside = [minx + (maxx - minx) * 0.2, centre[1]]  # in the zone, clear of the risk point at its centre
    page.wait_for_function("""([ll]) => { const m = window.cityopsMap;
        return m.queryRenderedFeatures(m.project(ll), {layers: ['incidents-fill']}).length > 0; }""", arg=[inside])
    page.mouse.click(*pixel(page, inside))
    card = page.get_by_test_id("feature-card")
    expect(card.get_by_test_id("card-title")).to_have_text(inc["title"])
    steps.shot(page, "incident-card")
    card.get_by_test_id("card-command").click()
    expect(page).to_have_url(f"{base}/command?incident={world['incident']}")
    body = page.locator("#totals-body")
    expect(body).to_have_attribute("data-households", str(inc["totals"]["district"]["households"]), timeout=30_000)
    expect(page.get_by_test_id("tasks-board")).to_contain_text("逐户转移")
    expect(page.get_by_test_id("tasks-timeline")).to_contain_text("风险区第1版")
    page.wait_for_function("window.cityopsCommandMap && window.cityopsCommandMap.loaded()")
    steps.shot(page, "command-view")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


def test_district_operator_finds_a_place_reads_a_warning_and_files_a_case(world, browser):
    from playwright.sync_api import expect

    base, steps, place = world["url"], Steps("district"), world["place"]
    page = new_page(browser, base)
    login(page, base, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    # The search box finds units, places and cases at once; a place flies the map there.
    page.locator(".map-search input").fill("老沟")
    hit = page.locator(".map-search-popper [data-testid=search-hit-place]").first
    expect(hit).to_contain_text("老沟湾")
    steps.shot(page, "search")
    hit.click()
    page.wait_for_function("window.cityopsMap.getZoom() > 14 && !window.cityopsMap.isMoving()")
    wait_map_idle(page)
    # The risk point of 老沟湾 (its warning level, why, and the response it started).
    rp = world["client"].get("/api/risk-points/RP-LGW-001", headers=world["admin"]).json()
    page.wait_for_function("""([ll]) => { const m = window.cityopsMap;
        return m.queryRenderedFeatures(m.project(ll), {layers: ['risk_points']}).length > 0; }""", arg=[[rp["lon"], rp["lat"]]])
    page.mouse.click(*pixel(page, [rp["lon"], rp["lat"]]))
    card = page.get_by_test_id("feature-card")
    expect(card.get_by_test_id("card-title")).to_have_text(rp["name"])
    expect(card.get_by_test_id("card-level")).to_have_text(rp["level_name_zh"])
    expect(card.get_by_test_id("card-command")).to_be_visible()
    steps.shot(page, "risk-point-card")
    # The workbench: the reported case is accepted and filed; the history names who did it.
    page.get_by_test_id("nav-workbench").click()
    number = world["cases"][0]
    row = page.locator(f"[data-testid=ev-case][data-number='{number}']")
    expect(row).to_be_visible()
    steps.shot(page, "workbench")
    row.click()
    expect(page.get_by_test_id("ev-detail-title")).to_contain_text("暴露垃圾")
    page.get_by_test_id("action-accept").click()
    expect(page.get_by_test_id("ev-history")).to_contain_text("受理")
    page.get_by_test_id("action-file").click()
    history = page.get_by_test_id("ev-history")
    expect(history).to_contain_text("立案")
    expect(history).to_contain_text("区值班员")
    page.wait_for_function("window.cityopsCaseMap && window.cityopsCaseMap.loaded()")
    steps.shot(page, "case-filed")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


def test_township_operator_bulk_accepts_exports_and_reads_a_patrol_photo(world, browser):
    from openpyxl import load_workbook
    from playwright.sync_api import expect

    base, steps, place = world["url"], Steps("township"), world["place"]
    photo = _jpeg(browser)
    r = world["client"].post("/api/events/patrol", headers=token(base, *LGW_WORKER),
                             data={"class_code": "06010", "lon": str(place["lon"]), "lat": str(place["lat"]),
                                   "description": "路边垃圾（带照片）"}, files={"photo": ("p.jpg", photo, "image/jpeg")})
    assert r.status_code == 201, r.text
    patrol = r.json()["number"]
    page = new_page(browser, base, accept_downloads=True)
    login(page, base, "yihe")
    page.get_by_test_id("nav-workbench").click()
    expect(page.get_by_test_id("queue-to_accept")).to_contain_text("待受理")
    rows = page.locator("[data-testid=ev-cases] .el-table__body tr")
    expect(rows.first).to_be_visible()
    waiting = {n: page.locator(f"[data-testid=ev-case][data-number='{n}']") for n in (world["cases"][1], patrol)}
    for locator in waiting.values():
        expect(locator).to_be_visible()
    # Exports of what the queue shows: CSV and Excel.
    with page.expect_download() as got:
        page.get_by_test_id("ev-export-csv").click()
    text = got.value.path().read_bytes().decode("utf-8-sig")
    assert text.startswith("number,") and patrol in text
    with page.expect_download() as got:
        page.get_by_test_id("ev-export-xlsx").click()
    sheet = load_workbook(io.BytesIO(got.value.path().read_bytes()), read_only=True).active
    assert patrol in [row[0] for row in sheet.iter_rows(values_only=True)]
    # Bulk: accept the other reported case and leave the patrol report for its detail.
    row = page.locator(".el-table__body tr", has=waiting[world["cases"][1]])
    row.locator(".el-checkbox").click()
    expect(page.get_by_test_id("ev-bulk")).to_contain_text("批量受理")
    steps.shot(page, "selected")
    page.get_by_test_id("ev-bulk").click()
    page.locator(".el-message-box__btns .el-button--primary").click()
    expect(waiting[world["cases"][1]]).to_have_count(0)
    state = world["client"].get(f"/api/events/cases/{world['cases'][1]}", headers=world["admin"]).json()["state"]
    assert state == "accepted"
    steps.shot(page, "bulk-accepted")
    # The patrol report: its photo, its place on the map, its history.
    waiting[patrol].click()
    expect(page.get_by_test_id("ev-detail-title")).to_contain_text("暴露垃圾")
    image = page.get_by_test_id("case-photo")
    expect(image).to_have_count(1)
    page.wait_for_function("() => { const i = document.querySelector('[data-testid=case-photo]'); return i && i.naturalWidth === 320; }")
    expect(page.get_by_test_id("case-grid")).to_contain_text("网格")
    expect(page.get_by_test_id("ev-history")).to_contain_text("老沟湾网格员")
    page.wait_for_function("window.cityopsCaseMap && window.cityopsCaseMap.loaded()")
    steps.shot(page, "patrol-case")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


def test_the_queue_reloads_live_without_a_mask_and_its_tags_keep_their_size(world, browser):
    """A case reported while the workbench is open comes into the queue by itself; that live reload neither covers
    the table with the loading mask nor shrinks or moves the state and deadline tags of the rows already shown."""
    from playwright.sync_api import expect

    base, place = world["url"], world["place"]
    page = new_page(browser, base)
    steps = Steps("workbench-live")
    login(page, base, "yihe", path="/workbench")
    expect(page.locator("[data-testid=ev-cases] .el-table__body tr").first).to_be_visible()
    page.wait_for_timeout(800)
    # From now on, every frame: is the loading mask over the table, and how far is each tag shown now from its size
    # now (tags of the rows already there, found by their case number; a new row may move them down, not shrink them).
    page.evaluate("""() => {
        const rects = () => { const out = {};
            for (const tr of document.querySelectorAll('[data-testid=ev-cases] .el-table__body tr')) {
              const n = tr.querySelector('[data-testid=ev-case]'); if (!n) continue;
              tr.querySelectorAll('.el-tag').forEach((t, i) => { const r = t.getBoundingClientRect();
                out[n.dataset.number + '/' + i] = [r.width, r.height]; }); }
            return out; };
        const start = rects();
        window.__live = {mask: 0, moved: 0, tags: Object.keys(start).length, frames: 0};
        (function watch() {
          const w = window.__live; w.frames++;
          const mask = document.querySelector('[data-testid=ev-cases] .el-loading-mask');
          if (mask && getComputedStyle(mask).display !== 'none' && getComputedStyle(mask).opacity !== '0') w.mask++;
          const now = rects();
          for (const [k, r] of Object.entries(start)) {
            const s = now[k]; if (!s) continue;
            const d = Math.max(...s.map((v, i) => Math.abs(v - r[i])));
            if (d > w.moved) w.moved = d;
          }
          requestAnimationFrame(watch);
        })();
    }""")
    r = world["client"].post("/api/events/cases", headers=world["admin"], json={
        "class_code": "06010", "description": "老沟湾桥头垃圾（实时刷新）", "lon": place["lon"] + 0.0005, "lat": place["lat"]})
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    expect(page.locator(f"[data-testid=ev-case][data-number='{number}']")).to_be_visible(timeout=30_000)
    page.wait_for_timeout(600)
    live = page.evaluate("window.__live")
    assert live["tags"] > 0 and live["frames"] > 10, live
    assert live["mask"] == 0, f"the loading mask covered the table during a live reload: {live}"
    assert live["moved"] < 1, f"a tag already shown changed size during a live reload: {live}"
    steps.shot(page, "after-live-reload")
    assert_no_page_errors(page)
    page.context.close()


def test_department_staff_handles_the_case_dispatched_to_them(world, browser):
    from playwright.sync_api import expect

    base, steps = world["url"], Steps("department")
    number = world["cases"][2]
    page = new_page(browser, base)
    login(page, base, "zhujian")
    expect(page).to_have_url(base + "/workbench")
    expect(page.get_by_test_id("queue-to_handle")).to_have_class(re.compile("active"))
    row = page.locator(f"[data-testid=ev-case][data-number='{number}']")
    expect(row).to_be_visible()
    expect(page.locator("[data-testid=ev-cases]")).to_contain_text("区住房城乡建委")
    steps.shot(page, "queue")
    row.click()
    # The department by name, with its number to call (tel:) and the call log's button beside it.
    expect(page.get_by_test_id("case-department")).to_contain_text("区住房城乡建委")
    expect(page.get_by_test_id("ev-history")).to_contain_text("系统自动派遣")
    page.get_by_test_id("action-start").click()
    expect(page.get_by_test_id("ev-history")).to_contain_text("开始处置")
    page.locator("textarea[data-testid=ev-note]").fill("已责令施工单位停止夜间施工")
    page.get_by_test_id("action-feedback").click()
    expect(page.get_by_test_id("ev-history")).to_contain_text("已责令施工单位停止夜间施工")
    steps.shot(page, "handled")
    assert world["client"].get(f"/api/events/cases/{number}", headers=world["admin"]).json()["state"] == "handled"
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


def _phone(browser, base, place):
    return new_page(browser, base, viewport=PHONE, is_mobile=True, has_touch=True, permissions=["geolocation"],
                    geolocation={"longitude": place["lon"], "latitude": place["lat"], "accuracy": 8})


def test_village_cadre_moves_households_from_the_phone(world, browser):
    from playwright.sync_api import expect

    base, steps, place = world["url"], Steps("cadre"), world["place"]
    page = _phone(browser, base, place)
    login(page, base, "taikang")
    expect(page).to_have_url(base + "/phone")
    page.wait_for_function("document.body.dataset.ready === '1'")
    cadre = token(base, "taikang")
    mine = world["client"].get(f"/api/incidents/{world['incident']}/evacuations",
                               params={"state": "to_move,refused,not_home", "lon": place["lon"], "lat": place["lat"]}, headers=cadre).json()
    cards = page.get_by_test_id("household")
    expect(cards).to_have_count(len(mine["items"]))
    assert cards.first.get_attribute("data-id") == str(mine["items"][0]["id"])  # nearest first
    first = mine["items"][0]
    expect(cards.first).to_contain_text(first["head_name"])
    expect(page.get_by_test_id("phone-summary")).to_contain_text(f"待转移 {mine['total']} 户")
    steps.shot(page, "households")
    cards.first.locator("button.moved").click()
    expect(cards).to_have_count(len(mine["items"]) - 1)
    expect(page.get_by_test_id("phone-summary")).to_contain_text(f"待转移 {mine['total'] - 1} 户")
    history = world["client"].get(f"/api/evacuations/{first['id']}/history", headers=cadre).json()
    assert [h["to"] for h in history] == ["moved"] and history[0]["lon"] == pytest.approx(place["lon"])
    steps.shot(page, "one-moved")
    page.get_by_test_id("phone-tab-tasks").click()
    expect(page.get_by_test_id("phone-task").first).to_contain_text("巡查老沟湾裂缝")
    steps.shot(page, "tasks")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


def test_the_phone_shows_the_servers_households_before_its_script_then_its_own(world, browser):
    """The login sets the session cookie (HttpOnly, SameSite=Strict); /phone then carries the worker's households,
    shown before any script answer — here with the app's own request for them held — and replaced by the app's list
    once that answer comes. An incident other than the one drawn (the one the app will show) hides it at once."""
    from playwright.sync_api import expect

    base, steps, place = world["url"], Steps("firstview"), world["place"]
    worker = token(base, *LGW_WORKER)
    near = {"lon": place["lon"], "lat": place["lat"]}
    # Without the service worker: a repeat visit is answered from its cache (the app shell) and is not this path.
    page = new_page(browser, base, viewport=PHONE, is_mobile=True, has_touch=True, service_workers="block")
    login(page, base, *LGW_WORKER)
    cookie = next(c for c in page.context.cookies() if c["name"] == "cityops_page")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    mine = world["client"].get("/api/evacuations/mine", headers=worker,
                               params={"state": "to_move,refused,not_home", **near}).json()
    items, totals = mine["evacuations"]["items"], mine["totals"]["district"]
    assert items
    held, hold = [], [True]
    page.route("**/api/evacuations/mine*", lambda route: held.append(route) if hold[0] else route.continue_())

    def release():
        hold[0] = False
        while held:
            held.pop().continue_()

    page.goto(f"{base}/phone?lon={place['lon']}&lat={place['lat']}", wait_until="commit")
    view = page.locator("#first-view")
    expect(view).to_be_visible()
    rows = view.locator(".fv-hh")
    expect(rows).to_have_count(min(len(items), 30))
    assert rows.first.get_attribute("data-id") == str(items[0]["id"])  # nearest first, as the app lists them
    expect(rows.first).to_contain_text(items[0]["head_name"])
    expect(view.locator(".fv-counts")).to_contain_text(f"待转移 {totals['remaining_households']} 户")
    expect(view.locator(".fv-title")).to_have_text(next(i["title"] for i in mine["incidents"] if i["id"] == mine["incident_id"]))
    assert held and page.get_by_test_id("household").count() == 0  # the app has not listed them: the server's list
    steps.shot(page, "servers-list")
    assert_no_internal_codes(page)
    release()
    expect(page.get_by_test_id("household").first).to_be_visible()
    expect(view).to_have_count(0)
    assert page.get_by_test_id("household").first.get_attribute("data-id") == str(items[0]["id"])
    steps.shot(page, "apps-list")
    # The app will show another incident (the one of the last visit): the server's drawing is never shown.
    page.evaluate("""([key, id]) => { const c = JSON.parse(localStorage.getItem(key) || '{}');
        localStorage.setItem(key, JSON.stringify({ ...c, incidentId: id })); }""", [f"cityops.phone.{LGW_WORKER[0]}", 987654])
    hold[0] = True
    page.goto(f"{base}/phone?lon={place['lon']}&lat={place['lat']}", wait_until="domcontentloaded")
    for _ in range(100):  # the held request reaches its handler at the next turn of Playwright's events
        if held:
            break
        page.wait_for_timeout(100)
    assert held and "incident_id=987654" in held[0].request.url
    assert view.count() == 0 and page.get_by_test_id("household").count() == 0
    release()
    expect(page.get_by_test_id("household").first).to_be_visible()
    # The worker switches the app to English: the next visit's drawing is in English, shown before the app's list.
    page.evaluate("key => localStorage.removeItem(key)", f"cityops.phone.{LGW_WORKER[0]}")
    page.get_by_test_id("language-select").select_option("en")
    expect(page.locator("html")).to_have_attribute("lang", "en")  # the English messages loaded, the choice stored
    hold[0] = True
    page.goto(f"{base}/phone?lon={place['lon']}&lat={place['lat']}", wait_until="commit")
    expect(view).to_be_visible()
    expect(view.locator(".fv-counts")).to_contain_text(f"{totals['remaining_households']} to move")
    assert page.get_by_test_id("household").count() == 0
    steps.shot(page, "servers-list-english")
    release()
    expect(page.get_by_test_id("household").first).to_be_visible()
    expect(view).to_have_count(0)
    page.get_by_test_id("language-select").select_option("zh-CN")
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()


def test_grid_worker_on_a_poor_connection_loses_nothing_and_counts_once(world, browser):
    from playwright.sync_api import expect

    base, steps, place = world["url"], Steps("gridworker"), world["place"]
    worker = token(base, *LGW_WORKER)
    page = _phone(browser, base, place)
    login(page, base, *LGW_WORKER)
    expect(page).to_have_url(base + "/phone")
    page.wait_for_function("document.body.dataset.ready === '1'")
    cards = page.get_by_test_id("household")
    expect(cards.first).to_be_visible()
    n = cards.count()
    steps.shot(page, "households")
    # They are this worker's own: every household the phone lists is assigned to the person behind the login.
    me = world["client"].get("/api/auth/me", headers=worker).json()
    mine = world["client"].get(f"/api/incidents/{world['incident']}/evacuations", headers=worker).json()["items"]
    assert 0 < n <= len(mine) and all(i["assignee_name"] and i["assignee_name"] in me["display_name"] for i in mine), \
        (me["display_name"], {i["assignee_name"] for i in mine})
    # Installed for offline use: the service worker holds the app shell.
    assert page.evaluate("navigator.serviceWorker.ready.then((r) => r.active.scriptURL)").endswith("/sw.js")
    page.wait_for_function("navigator.serviceWorker.controller !== null || true")
    # No connection: two taps wait in the outbox, shown as waiting; nothing is lost.
    page.context.set_offline(True)
    ids = [cards.nth(0).get_attribute("data-id"), cards.nth(1).get_attribute("data-id")]
    cards.nth(0).locator("button.moved").click()
    expect(page.get_by_test_id("phone-waiting")).to_contain_text("1 条待同步")
    cards.nth(1).locator("button.with_relatives").click()
    expect(page.get_by_test_id("phone-waiting")).to_contain_text("2 条待同步")
    expect(page.get_by_test_id("phone-offline")).to_be_visible()
    expect(page.get_by_test_id("household-pending")).to_have_count(2)
    steps.shot(page, "offline-waiting")
    # The page is closed and opened again while offline: the taps are still there.
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'")
    expect(page.get_by_test_id("phone-waiting")).to_contain_text("2 条待同步")
    page.context.set_offline(False)
    expect(page.get_by_test_id("phone-waiting")).to_have_count(0, timeout=40_000)
    expect(cards).to_have_count(n - 2)
    for evac_id, state in zip(ids, ("moved", "with_relatives"), strict=True):
        history = world["client"].get(f"/api/evacuations/{evac_id}/history", headers=worker).json()
        assert [h["to"] for h in history] == [state], history
    steps.shot(page, "synced")
    # An answer lost on the way back: the server stored the change, the phone retries with the same key.
    lost = {"n": 0}

    def drop_answer(route):
        if lost["n"] == 0:
            lost["n"] += 1
            route.fetch()  # the server applies it …
            route.abort()  # … and the phone never hears so
        else:
            route.continue_()

    page.route("**/api/evacuations/*/state", drop_answer)
    target = cards.nth(0).get_attribute("data-id")
    cards.nth(0).locator("button.moved").click()
    expect(page.get_by_test_id("phone-waiting")).to_contain_text("1 条待同步")  # the answer was lost: it waits
    expect(page.get_by_test_id("phone-waiting")).to_have_count(0, timeout=40_000)
    history = world["client"].get(f"/api/evacuations/{target}/history", headers=worker).json()
    assert [h["to"] for h in history] == ["moved"], history
    assert lost["n"] == 1
    page.unroute("**/api/evacuations/*/state")
    # Patrol report with a photo and the GPS position.
    page.get_by_test_id("phone-tab-report").click()
    page.get_by_test_id("ev-class").select_option("matter:06010")
    page.get_by_test_id("ev-desc").fill("老沟湾路口垃圾堆积")
    page.get_by_test_id("ev-locate").click()
    expect(page.get_by_test_id("ev-position")).to_contain_text(f"{place['lon']:.6f}")
    page.get_by_test_id("ev-photo").set_input_files(files=[{"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": _jpeg(browser)}])
    steps.shot(page, "report-form")
    page.get_by_test_id("ev-submit").click()
    expect(page.get_by_test_id("ev-result")).to_contain_text("上报成功")
    number = page.get_by_test_id("ev-result").inner_text().split()[-1]
    case = world["client"].get(f"/api/events/cases/{number}", headers=world["admin"]).json()
    assert case["source"] == "patrol" and len(case["attachments"]) == 1 and case["lon"] == pytest.approx(place["lon"])
    steps.shot(page, "reported")
    # Installable: the manifest and the service worker.
    assert page.evaluate("document.querySelector('link[rel=manifest]').href").endswith("/manifest.webmanifest")
    assert page.evaluate("navigator.serviceWorker.ready.then((r) => r.active.scriptURL)").endswith("/sw.js")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page, allow=("ERR_INTERNET_DISCONNECTED", "ERR_FAILED"))
    page.context.close()


def test_login_failures_are_said_in_the_users_language(world, browser):
    from playwright.sync_api import expect

    base, steps = world["url"], Steps("login")
    page = new_page(browser, base)
    page.goto(base + "/login")
    error = page.get_by_test_id("login-error")
    page.get_by_test_id("login-submit").click()
    expect(error).to_have_text("请输入用户名和密码")
    page.get_by_test_id("login-username").fill("yihe")
    page.get_by_test_id("login-password").fill("not-the-password")
    page.get_by_test_id("login-submit").click()
    expect(error).to_contain_text("用户名或密码错误")
    steps.shot(page, "wrong-password")
    # The server failing (as the embedded store under load once did) and no connection at all.
    page.route("**/api/auth/login", lambda r: r.fulfill(status=500, content_type="application/json",
                                                        body='{"error": "internal", "message": "Internal Server Error"}'))
    page.get_by_test_id("login-submit").click()
    expect(error).to_have_text("服务器暂时无法处理（500），请稍后重试")
    steps.shot(page, "server-error")
    page.unroute("**/api/auth/login")
    page.route("**/api/auth/login", lambda r: r.abort())
    page.get_by_test_id("login-submit").click()
    expect(error).to_have_text("无法连接服务器，请检查网络后重试")
    page.get_by_test_id("language-select").select_option("en")
    expect(error).to_have_text("Cannot reach the server; check the connection and try again")
    expect(page.get_by_test_id("login-submit")).to_have_text("Sign in")
    steps.shot(page, "network-error-en")
    page.get_by_test_id("language-select").select_option("zh-CN")
    page.unroute("**/api/auth/login")
    assert_local_only(page)
    page.context.close()


def _contrast(fg: str, bg: str) -> float:
    def lum(rgb: str) -> float:
        parts = [float(x) for x in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]
        out = [(c / 255) / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in parts]
        return 0.2126 * out[0] + 0.7152 * out[1] + 0.0722 * out[2]

    a, b = sorted((lum(fg), lum(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def test_accessibility_basics(world, browser):
    """Every form control has a name, the top bar's links are legible (WCAG AA contrast), the keyboard reaches the
    pages in order with a visible focus, a session survives a reload and a second tab, and ends in both."""
    base = world["url"]
    page = new_page(browser, base)
    page.goto(base + "/login")
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, button, textarea')].filter((el) => {
        const label = el.labels && el.labels.length ? el.labels[0].innerText.trim() : '';
        return !(label || el.getAttribute('aria-label') || (el.innerText || '').trim());
    }).map((el) => el.outerHTML)""")
    assert unnamed == []
    login(page, base, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    links = page.locator(".topbar a, .topbar .user, .topbar .role, .topbar button")
    bar_bg = page.evaluate("getComputedStyle(document.querySelector('.topbar')).backgroundColor")
    for i in range(links.count()):
        fg = links.nth(i).evaluate("(el) => getComputedStyle(el).color")
        own = links.nth(i).evaluate("(el) => getComputedStyle(el).backgroundColor")
        bg = own if not own.endswith(", 0)") and own != "rgba(0, 0, 0, 0)" else bar_bg
        assert _contrast(fg, bg) >= 4.5, (links.nth(i).inner_text(), fg, bg, _contrast(fg, bg))
    # Keyboard: from the top, Tab reaches the product link then each page of the top bar, with a visible focus.
    page.locator("body").focus()
    page.keyboard.press("Tab")
    order = []
    for _ in range(9):
        order.append(page.evaluate("document.activeElement.dataset.testid || document.activeElement.tagName"))
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", f"no visible focus on {order[-1]}"
        page.keyboard.press("Tab")
    assert order[:8] == ["brand", "nav-map", "nav-cockpit", "nav-workbench", "nav-command", "nav-duty", "nav-directives",
                         "nav-phone"], order
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(base + "/phone")
    # The session survives a reload and opens in a second tab; logging out in one ends both.
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'")
    second = page.context.new_page()
    second.goto(base + "/workbench")
    second.get_by_test_id("ev-queues").wait_for()
    page.get_by_test_id("logout").click()
    page.wait_for_url("**/login")
    second.wait_for_url("**/login**")
    assert second.get_by_test_id("login-notice").inner_text() == "您已在其他窗口退出登录"
    assert_local_only(page)
    page.context.close()


def test_no_page_of_the_app_reaches_another_host(world, browser):
    """Every page, as the district operator, with the network to other hosts cut: none tries it (fonts, glyphs,
    tiles, scripts, the API reference pages included)."""
    base = world["url"]
    page = new_page(browser, base)
    login(page, base, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'")
    wait_map_idle(page)
    page.evaluate("window.cityopsMap.jumpTo({center: [%f, %f], zoom: 15.5})" % (world["place"]["lon"], world["place"]["lat"]))
    wait_map_idle(page)  # labels (Chinese and Latin) and 3D buildings drawn without a glyph server
    for path in ("/workbench", f"/workbench/cases/{world['cases'][0]}", f"/command?incident={world['incident']}",
                 "/phone", "/phone/report", "/api/docs", "/api/redoc"):
        page.goto(base + path)  # the live streams never let the network go idle: wait for the page, then a while
        page.wait_for_load_state("load")
        time.sleep(2)
    assert page.locator("#swagger-ui, redoc, .redoc-wrap").count() >= 1
    assert_local_only(page)
    page.context.close()


def test_township_operator_acknowledges_a_red_message_and_the_grid_worker_gets_one_live(world, browser):
    """The inbox on every page: 义和镇's operator on duty sees a red message in the top bar, acknowledges it, and
    reads its timeline; 老沟湾's grid worker, on the phone page, gets a message while the page is open (the live
    inbox stream) and acknowledges it there."""
    from playwright.sync_api import expect

    base, steps, client, admin = world["url"], Steps("inbox"), world["client"], world["admin"]
    yihe_code = client.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]
    yihe_code = next(u["code"] for u in yihe_code if u["name"] == "义和镇")
    r = client.post("/api/notify/messages", headers=admin, json={
        "kind": "notice.red", "severity": "red", "title": "老沟湾红色预警：请立即组织转移", "body": "累计雨量超过红色阈值，裂缝扩展。",
        "unit_code": yihe_code, "to": ["post:operator@unit"], "channels": ["inapp"], "policy": ""})
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    page = new_page(browser, base)
    login(page, base, "yihe")
    bell = page.get_by_test_id("inbox-bell")
    expect(page.get_by_test_id("inbox-count")).to_have_text("1")
    steps.shot(page, "bell")
    bell.click()
    item = page.get_by_test_id("inbox-item").filter(has_text="老沟湾红色预警")
    expect(item).to_be_visible()
    expect(item).to_have_class(re.compile(r"sev-red"))
    page.wait_for_timeout(500)  # the drawer's slide
    steps.shot(page, "drawer")
    item.get_by_test_id("inbox-ack").click()
    expect(item.get_by_test_id("inbox-acked")).to_be_visible()
    expect(page.get_by_test_id("inbox-count")).to_have_count(0)
    yihe = token(base, "yihe")
    assert client.get("/api/notify/inbox/count", headers=yihe).json()["unacknowledged"] == 0
    item.get_by_test_id("inbox-timeline").click()
    expect(page).to_have_url(f"{base}/messages/{mid}")
    expect(page.get_by_test_id("message-status")).to_have_text("已确认")
    expect(page.get_by_test_id("message-timeline")).to_contain_text("确认收到")
    steps.shot(page, "timeline")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)
    page.context.close()

    # The phone: the message arrives while the page is open.
    place = world["place"]
    phone = _phone(browser, base, place)
    login(phone, base, *LGW_WORKER)
    phone.wait_for_function("document.body.dataset.ready === '1'")
    expect(phone.get_by_test_id("inbox-bell")).to_be_visible()
    before = client.get("/api/notify/inbox/count", headers=token(base, *LGW_WORKER)).json()["unacknowledged"]
    r = client.post("/api/notify/messages", headers=admin, json={
        "kind": "notice", "severity": "orange", "title": "请到老沟湾3号房核实人员", "unit_code": place["unit_code"],
        "to": ["post:grid_worker@unit"], "channels": ["inapp", "webpush"], "policy": ""})
    assert r.status_code == 201, r.text
    expect(phone.get_by_test_id("inbox-count")).to_have_text(str(before + 1), timeout=10_000)
    phone.get_by_test_id("inbox-bell").click()
    item = phone.get_by_test_id("inbox-item").filter(has_text="老沟湾3号房")
    expect(item).to_be_visible()
    expect(phone.get_by_test_id("push-subscribe")).to_be_visible()
    phone.wait_for_timeout(500)  # the drawer's slide
    steps.shot(phone, "phone-inbox")
    item.get_by_test_id("inbox-ack").click()
    expect(item.get_by_test_id("inbox-acked")).to_be_visible()
    steps.shot(phone, "phone-acked")
    assert_local_only(phone)
    assert_no_page_errors(phone)
    phone.context.close()

"""The July storm changes the command view while it is watched, in a real browser: the capabilities wired as in
production, the storm simulator feeding the sensors in the background; the district operator's command view
shows the 老沟湾 response appear and grow (timeline, zone, households, totals) and households turn safe as
workers confirm them — without a reload. Screenshots: test-artifacts/storm-*.png."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cityops.app import create_app
from cityops.demo.generator import build_demo
from cityops.sensing.simulate import simulate_storm
from cityops.warning.demo import SCENARIO_CODE
from tests.browser import Steps, assert_local_only, assert_no_page_errors, launch, login, new_page, require_browser, token
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread

pytestmark = pytest.mark.browser
#: 24 storm hours in about 30 seconds.
SPEED = 2880


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require_browser()
    store, close = make_store("sqlite", tmp_path_factory.mktemp("webapp-storm"), wiring=True)
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-webapp-storm") as url:
        yield url, store
    close()


def _snapshot(page) -> dict:
    return page.evaluate("""() => ({
        options: document.querySelectorAll('.el-select-dropdown__item').length,
        timeline: document.querySelectorAll('[data-testid=tasks-timeline] li').length,
        households: Number(document.querySelector('#totals-body')?.dataset.households || 0),
        safe: Number(document.querySelector('#totals-body')?.dataset.safe || 0),
        level: document.querySelector('[data-testid=incident-level]')?.innerText || '',
        marker: window.__sameDocument === true,
    })""")


def test_the_storm_unfolds_on_the_command_view_live(served):
    from playwright.sync_api import expect, sync_playwright

    base, store = served
    steps = Steps("storm")
    # Tokens first: logging in while the storm writes is another matter (the embedded store's write lock).
    district, yihe = token(base, "district"), token(base, "yihe")
    client = httpx.Client(base_url=base, timeout=30)
    pw = sync_playwright().start()
    browser = launch(pw)
    try:
        page = new_page(browser, base, viewport={"width": 1920, "height": 1080})
        login(page, base, "district", path="/command")
        page.wait_for_function("document.body.dataset.ready === '1'")
        page.evaluate("window.__sameDocument = true")  # gone if the page reloads
        before = _snapshot(page)
        before_incidents = {i["id"] for i in client.get("/api/incidents", headers=district).json()}
        steps.shot(page, "before")
        storm = threading.Thread(target=simulate_storm, args=(store.sessions,), kwargs={"hours": 24, "speed": SPEED},
                                 name="storm-test", daemon=True)
        storm.start()
        # The response to 老沟湾's rising warning appears on the open page (other slopes of the town may respond
        # too, some with no household in their zone: the story is 老沟湾's).
        deadline = time.monotonic() + 150
        seen, incidents = None, []
        while time.monotonic() < deadline:
            incidents = [i for i in client.get("/api/incidents", headers=district).json() if i["id"] not in before_incidents]
            seen = next((i for i in incidents if i["risk_point_code"] == SCENARIO_CODE and i["status"] == "active"), None)
            if seen:
                break
            time.sleep(1)
        assert seen, f"the storm opened no response at 老沟湾: {[(i['title'], i['status']) for i in incidents]}"
        page.get_by_test_id("incident-select").click()
        page.locator(".el-select-dropdown__item", has_text=seen["title"]).first.click()
        body = page.locator("#totals-body")
        page.wait_for_function("Number(document.querySelector('#totals-body').dataset.households) > 0", timeout=60_000)
        middle = _snapshot(page)
        steps.shot(page, "response")
        # Workers confirm households: the totals follow, the map's households turn safe.
        worker_view = client.get(f"/api/incidents/{seen['id']}/evacuations", params={"state": "to_move"}, headers=district).json()
        for item in worker_view["items"][:3]:
            r = client.post(f"/api/evacuations/{item['id']}/state", headers=yihe, json={"state": "moved"})
            assert r.status_code == 200, r.text
        expect(body).to_have_attribute("data-safe", str(middle["safe"] + 3), timeout=30_000)
        # The map follows too, while the storm goes on: its households layer draws them as moved (a map whose
        # sources are busy with the storm's updates must still take the next ones).
        moved_ids = [item["id"] for item in worker_view["items"][:3]]
        page.wait_for_function("""(ids) => {
            const m = window.cityopsCommandMap;
            const drawn = m.queryRenderedFeatures({layers: ['households']});
            return ids.every((id) => drawn.some((f) => f.properties.id === id && f.properties.state === 'moved'));
        }""", arg=moved_ids, timeout=90_000)
        storm.join(120)
        page.wait_for_function(f"Number(document.querySelector('#totals-body').dataset.safe) >= {middle['safe'] + 3}")
        after = _snapshot(page)
        steps.shot(page, "after")
        assert after["marker"], "the command view was reloaded"
        assert after["timeline"] > before["timeline"] and after["timeline"] >= middle["timeline"]
        assert after["households"] > 0 and after["safe"] >= 3
        # Every time the storm caused lies on the clock the visitor reads, none in the future.
        now = datetime.now(UTC) + timedelta(seconds=5)
        rp = client.get(f"/api/risk-points/{SCENARIO_CODE}", headers=district).json()
        times = [w["issued_at"] for w in rp["history"]]
        alarms = client.get("/api/sensing/alarms", params={"risk_point": SCENARIO_CODE}, headers=district).json()["items"]
        times += [a[k] for a in alarms for k in ("first_at", "last_at")]
        # The incident's case reference arrives after its activation (its consumer on the bus): read it now.
        case_ref = client.get(f"/api/incidents/{seen['id']}", headers=district).json()["case_ref"]
        case = client.get(f"/api/events/cases/{case_ref}", headers=district).json()
        times += [seen["created_at"], case["reported_at"]] if "reported_at" in case else [seen["created_at"]]
        assert alarms and all(datetime.fromisoformat(t) <= now for t in times), sorted(times)[-3:]
        assert_local_only(page)
        assert_no_page_errors(page)
    finally:
        browser.close()
        pw.stop()
        client.close()

"""The July storm's warnings carry their evidence to every place a person reads them: the API, the CAP message and
the risk point's card on the operations map — the deciding rule, each indicator's level and figures, the reasons,
and for every past warning of the history the evidence that decided it then (real Chromium, screenshots in
test-artifacts/evidence-*.png)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
import pytest

from cityops.app import create_app
from cityops.demo.generator import build_demo
from cityops.sensing.simulate import simulate_storm
from tests.browser import (Steps, assert_local_only, assert_no_page_errors, launch, login, new_page, pixel, require_browser,
                           token, wait_map_idle)
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread

pytestmark = pytest.mark.browser

CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"


@pytest.fixture(scope="module")
def stormed(tmp_path_factory):
    """The small demo after the 24 hours of the July storm, served."""
    require_browser()
    store, close = make_store("sqlite", tmp_path_factory.mktemp("webapp-evidence"))
    build_demo(store.sessions, store.org, SMALL_DEMO)
    simulate_storm(store.sessions, hours=24)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-webapp-evidence") as url:
        yield url
    close()


def test_every_storm_warning_shows_its_evidence_in_api_cap_and_card(stormed):
    from playwright.sync_api import expect, sync_playwright

    base = stormed
    district = token(base, "district")
    client = httpx.Client(base_url=base, timeout=30)
    warnings = client.get("/api/warnings", params={"limit": 500}, headers=district).json()
    items = warnings["items"] if isinstance(warnings, dict) else warnings
    assert items, "the storm raised no warning"
    for w in items:
        # The API: every stored warning, current or past, names its rule, its indicators and its reasons.
        assert w["reasons"] and w["reasons_en"], w
        assert w["evidence"]["decision"] and w["evidence"]["indicators"], w
        # The CAP message carries the same reasons.
        cap = client.get(w["cap_url"], headers=district)
        assert cap.status_code == 200, cap.text
        description = ET.fromstring(cap.content).find(f"{CAP}info/{CAP}description").text
        assert all(reason in description for reason in w["reasons"]), (w["identifier"], description)

    rp_code = next(w["risk_point_code"] for w in items if w["level"] == "red")
    rp = client.get(f"/api/risk-points/{rp_code}", headers=district).json()
    assert len(rp["history"]) >= 2, "the storm's risk point rose through more than one level"

    pw = sync_playwright().start()
    browser = launch(pw)
    try:
        steps = Steps("evidence")
        page = new_page(browser, base)
        login(page, base, "district")
        page.wait_for_function("document.body.dataset.mapReady === '1'")
        page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 15})", [[rp["lon"], rp["lat"]]])
        wait_map_idle(page)
        page.wait_for_function("""([ll]) => { const m = window.cityopsMap;
            return m.queryRenderedFeatures(m.project(ll), {layers: ['risk_points']}).length > 0; }""", arg=[[rp["lon"], rp["lat"]]])
        page.mouse.click(*pixel(page, [rp["lon"], rp["lat"]]))
        card = page.get_by_test_id("feature-card")
        expect(card.get_by_test_id("card-title")).to_have_text(rp["name"])
        # The current warning: its rule, one row per indicator, every reason.
        expect(card.get_by_test_id("card-rule")).to_have_text(rp["assessment"]["decision"]["rule_zh"])
        expect(card.locator("[data-testid=card-evidence] tr")).to_have_count(len(rp["assessment"]["indicators"]))
        expect(card.locator("[data-testid=card-reasons] li")).to_have_text(rp["assessment"]["reasons"])
        steps.shot(page, "current")
        # A past warning of the history opens to the evidence that decided it then.
        entries = card.get_by_test_id("card-history-entry")
        expect(entries).to_have_count(min(5, len(rp["history"])))
        past = rp["history"][1]
        entries.nth(1).locator("summary").click()
        expect(entries.nth(1).locator(".reasons li")).to_have_text(past["reasons"])
        steps.shot(page, "history")
        assert_local_only(page)
        assert_no_page_errors(page)
    finally:
        browser.close()
        pw.stop()

"""Duty and directives in real headless Chromium: the district's operator sees the roster (names, holidays, who is
on duty now), composes a directive to every township and their villages, and watches the receipt board while
义和镇's operator confirms in another browser — the board changes live, without a reload. Screenshots per step in
test-artifacts/directives-<n>-<step>.png."""

from __future__ import annotations

import re

import pytest

from cityops.app import create_app
from cityops.demo.generator import build_demo
from tests.browser import (Steps, assert_local_only, assert_no_internal_codes, assert_no_page_errors, launch, login, new_page,
                           require_browser, token)
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require_browser()
    store, close = make_store("sqlite", tmp_path_factory.mktemp("webapp-directives"))
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-webapp-directives") as url:
        yield url
    close()


def test_roster_then_composer_to_live_board(served):
    import httpx
    from playwright.sync_api import expect, sync_playwright

    url = served
    steps = Steps("directives")
    yihe_code = httpx.get(f"{url}/api/auth/me", headers=token(url, "yihe"), timeout=30).json()["scope_units"][0]
    with sync_playwright() as pw:
        browser = launch(pw)
        page = new_page(browser, url)
        login(page, url, "district", path="/duty")
        page.wait_for_url("**/duty")
        table = page.get_by_test_id("roster-table")
        expect(table).to_contain_text("带班领导", timeout=20_000)
        expect(page.get_by_test_id("on-duty-now")).to_contain_text("带班领导")
        expect(table.locator(".assignee").first).to_be_visible(timeout=20_000)
        steps.shot(page, "roster")
        assert_no_internal_codes(page)

        page.goto(url + "/directives")
        page.get_by_test_id("compose").click()
        page.get_by_test_id("draft-title").fill("关于做好强降雨防范的紧急通知")
        page.get_by_test_id("draft-body").fill("各镇街立即转发至村社区，组织隐患点巡查，落实转移避险。")
        steps.shot(page, "composer")
        page.get_by_test_id("send").click()
        totals = page.get_by_test_id("board-totals")
        expect(totals).to_be_visible(timeout=20_000)
        expect(page.get_by_test_id("live-state")).to_have_text("实时", timeout=20_000)
        total = int(totals.get_attribute("data-total"))
        assert total > 3 and totals.get_attribute("data-confirmed") == "0"
        expect(page.get_by_test_id("level-township")).to_be_visible()
        expect(page.get_by_test_id("level-village")).to_be_visible()
        chip = page.get_by_test_id(f"receipt-{yihe_code}")
        expect(chip).to_have_attribute("data-state", "sent")
        steps.shot(page, "board-issued")

        # 义和镇's operator confirms in a browser of their own; the district's board changes without a reload.
        other = new_page(browser, url)
        login(other, url, "yihe", path="/directives")
        own = other.get_by_test_id(f"receipt-{yihe_code}")
        expect(own).to_be_visible(timeout=20_000)
        own.get_by_test_id("confirm").click()
        expect(own).to_have_attribute("data-state", "confirmed", timeout=10_000)
        steps.shot(other, "township-confirmed")
        expect(chip).to_have_attribute("data-state", "confirmed", timeout=10_000)
        expect(totals).to_have_attribute("data-confirmed", "1", timeout=10_000)
        steps.shot(page, "board-live")
        # The township sees only its own subtree.
        expect(other.get_by_test_id("board-totals")).not_to_have_attribute("data-total", str(total))
        assert "大德镇" not in other.get_by_test_id("directives").inner_text()
        for p in (page, other):
            assert_local_only(p)
            assert_no_page_errors(p)
            assert_no_internal_codes(p)
        browser.close()


def test_notification_settings_page_saves_channels_and_quiet_hours(served):
    """The inbox links to the notification settings; a grid worker turns phone push off and sets quiet hours, is
    told that a red warning overrides them, saves, and finds them again after a reload (and in the API)."""
    import httpx
    from playwright.sync_api import expect, sync_playwright

    url = served
    steps = Steps("notify-settings")
    with sync_playwright() as pw:
        browser = launch(pw)
        page = new_page(browser, url)
        login(page, url, "district", path="/duty")
        page.get_by_test_id("inbox-bell").click()
        page.get_by_test_id("inbox-settings").click()
        page.wait_for_url("**/settings/notifications")
        expect(page.get_by_test_id("notify-settings")).to_contain_text("通知设置")

        worker = new_page(browser, url)
        login(worker, url, "laogouwan", path="/settings/notifications")
        worker.wait_for_url("**/settings/notifications")
        expect(worker.get_by_test_id("prefs-red-note")).to_contain_text("红色预警")
        push = worker.get_by_test_id("prefs-channel-webpush")
        expect(push).to_have_class(re.compile("is-checked"), timeout=20_000)
        push.click()
        expect(push).not_to_have_class(re.compile("is-checked"))
        worker.get_by_test_id("prefs-quiet").click()
        expect(worker.get_by_test_id("prefs-quiet-start")).to_be_visible()
        steps.shot(worker, "edited")
        worker.get_by_test_id("prefs-save").click()
        expect(worker.get_by_test_id("prefs-saved")).to_be_visible(timeout=20_000)
        saved = httpx.get(f"{url}/api/notify/preferences", headers=token(url, "laogouwan"), timeout=30).json()
        assert saved["channels"] == ["inapp"] and (saved["quiet_start"], saved["quiet_end"]) == ("22:00", "07:00"), saved
        worker.reload()
        expect(worker.get_by_test_id("prefs-quiet-start")).to_be_visible(timeout=20_000)
        expect(worker.get_by_test_id("prefs-channel-webpush")).not_to_have_class(re.compile("is-checked"))
        steps.shot(worker, "saved")
        for p in (page, worker):
            assert_local_only(p)
            assert_no_page_errors(p)
            assert_no_internal_codes(p)
        browser.close()

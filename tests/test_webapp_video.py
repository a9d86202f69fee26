"""Video at the scene in a real browser (Playwright + Debian's Chromium): the command view of the 老沟湾 incident
lists the cameras nearest it and plays the best one live through hls.js — an HLS stream this test makes with
ffmpeg and the server plays from its media directory (the picture advances and has a size); the operations map
draws the camera layer with view cones; a click-to-call on the command view's contacts opens the call log, and
the logged call joins the incident's timeline. Screenshots go to test-artifacts/video-*.png."""

from __future__ import annotations

import shutil

import httpx
import pytest
from shapely.geometry import Point

from cityops.app import create_app
from cityops.core.spatial import buffer_m
from cityops.demo.generator import build_demo
from cityops.tasks.plans import on_warning_level
from cityops.video import media
from tests.browser import (chromium, Steps, assert_local_only, assert_no_internal_codes, assert_no_page_errors, login, new_page,
                           require_browser, token, wait_map_idle)
from tests.conftest import SMALL_DEMO, make_store, serve_in_thread

pytestmark = pytest.mark.browser
FFMPEG = shutil.which("ffmpeg")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_browser()
    if FFMPEG is None:
        pytest.skip("ffmpeg is absent (apt-get install ffmpeg; scripts/install-system-deps.sh)")
    store, close = make_store("sqlite", tmp_path_factory.mktemp("webapp-video"))
    build_demo(store.sessions, store.org, SMALL_DEMO)
    with serve_in_thread(create_app(store.settings, run_migrations=False), "uvicorn-webapp-video") as url:
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
        near = client.get(f"/api/video/nearest/incident/{iid}", params={"radius_m": 3000, "limit": 6}, headers=admin).json()["items"]
        assert near, "the demo has cameras near 老沟湾"
        # One stream (made by ffmpeg here), served for every camera near the incident from the server's media directory.
        root = media.media_dir(store.settings)
        source = media.test_pattern(root / "_pattern", seconds=12, size="320x180")
        assert (source / "index.m3u8").read_text().count("#EXTINF") == 12
        assert media.publish(source, root, [c["code"] for c in near]) == len(near)
        yield {"url": url, "client": client, "admin": admin, "incident": iid, "near": near, "place": place}
        client.close()
    close()


@pytest.fixture(scope="module")
def browser(world):
    with chromium() as b:
        yield b


def test_the_command_view_plays_the_nearest_camera(world, browser):
    from playwright.sync_api import expect

    url, iid = world["url"], world["incident"]
    page = new_page(browser, url)
    steps = Steps("video")
    login(page, url, "district", path=f"/command?incident={iid}")
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
    panel = page.get_by_test_id("command-cameras")
    expect(panel).to_be_visible()
    expect(panel.get_by_test_id("cameras-list").locator("li")).to_have_count(len(world["near"]))
    first = next(c for c in world["near"] if c["status"] == "online")
    expect(panel.get_by_test_id("camera-playing-name")).to_have_text(first["name"])
    # The picture plays: time advances and the frames have a size.
    page.wait_for_function("""() => { const v = document.querySelector('[data-testid=command-cameras] video');
        return v && v.currentTime > 1.5 && v.videoWidth > 0 && !v.paused; }""", timeout=60_000)
    size = page.evaluate("() => { const v = document.querySelector('[data-testid=command-cameras] video'); "
                         "return [v.videoWidth, v.videoHeight, v.currentTime]; }")
    assert size[:2] == [320, 180], size
    expect(panel.get_by_test_id("camera-state")).to_have_text("实时")
    # The segments came from this server with the login token (hls.js), nothing from another host.
    assert any(f"/api/video/cameras/{first['code']}/stream/seg" in u for u in page.requested)
    page.evaluate("() => window.cityopsCommandMap.jumpTo({zoom: 16})")
    wait_map_idle(page, "window.cityopsCommandMap")
    cones = page.evaluate("() => window.cityopsCommandMap.queryRenderedFeatures({layers: ['camera-cones']}).length")
    assert cones > 0, "the cameras' view cones are on the command map"
    steps.shot(page, "command-playing")

    # Another camera: the player switches to it.
    others = [c for c in world["near"] if c["code"] != first["code"] and c["status"] == "online"]
    if others:
        panel.get_by_test_id(f"camera-{others[0]['code']}").click()
        expect(panel.get_by_test_id("camera-playing-name")).to_have_text(others[0]["name"])
        page.wait_for_function("""() => { const v = document.querySelector('[data-testid=command-cameras] video');
            return v && v.currentTime > 0.5 && v.videoWidth > 0; }""", timeout=60_000)

    # Click-to-call: a contact's tel: link, then the call log, which joins the incident's timeline.
    contacts = page.get_by_test_id("command-contacts")
    expect(contacts.get_by_test_id("tel-link").first).to_have_attribute("href", __import__("re").compile(r"^tel:[0-9+\-]+$"))
    contacts.get_by_test_id("call-log-open").first.click()
    dialog = page.get_by_test_id("call-dialog")
    page.get_by_test_id("call-outcome-no_answer").click()
    page.get_by_test_id("call-note").fill("未接，稍后再拨")
    page.get_by_test_id("call-save").click()
    call = page.get_by_test_id("timeline-call").first
    expect(call).to_contain_text("无人接听", timeout=30_000)
    expect(call).to_contain_text("未接，稍后再拨")
    expect(dialog).to_be_hidden()
    logged = world["client"].get("/api/calls", params={"incident_id": iid}, headers=world["admin"]).json()["items"]
    assert len(logged) == 1 and logged[0]["outcome"] == "no_answer" and logged[0]["operator"] == "district"
    steps.shot(page, "command-call-logged")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)


def test_the_operations_map_draws_cameras_with_cones(world, browser):
    from playwright.sync_api import expect

    url, place = world["url"], world["place"]
    page = new_page(browser, url)
    steps = Steps("video-map")
    login(page, url, "district")
    page.wait_for_function("document.body.dataset.mapReady === '1'", timeout=60_000)
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 15})", [[place["lon"], place["lat"]]])
    page.wait_for_function("() => window.cityopsMap.getSource('cameras') && "
                           "window.cityopsMap.querySourceFeatures('cameras').length > 0", timeout=60_000)
    wait_map_idle(page)
    drawn = page.evaluate("""() => ({cones: window.cityopsMap.queryRenderedFeatures({layers: ['cameras-cone']}).length,
        cameras: window.cityopsMap.queryRenderedFeatures({layers: ['cameras']}).length})""")
    assert drawn["cones"] > 0 and drawn["cameras"] > 0, drawn
    # A camera's card plays it.
    cam = world["near"][0]
    page.evaluate("([ll]) => window.cityopsMap.jumpTo({center: ll, zoom: 17})", [[cam["lon"], cam["lat"]]])
    wait_map_idle(page)
    xy = page.evaluate("([ll]) => { const p = window.cityopsMap.project(ll); return [p.x, p.y]; }", [[cam["lon"], cam["lat"]]])
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + xy[0], box["y"] + xy[1])
    card = page.get_by_test_id("feature-card")
    expect(card.get_by_test_id("card-title")).to_have_text(cam["name"])
    page.wait_for_function("""() => { const v = document.querySelector('[data-testid=feature-card] [data-testid=camera-player] video');
        return v && v.currentTime > 1 && v.videoWidth > 0; }""", timeout=60_000)
    steps.shot(page, "camera-card")
    assert_local_only(page)
    assert_no_page_errors(page)


def test_the_case_page_lists_its_calls_and_the_cameras_that_see_it(world, browser):
    from playwright.sync_api import expect

    url, client, admin, place = world["url"], world["client"], world["admin"], world["place"]
    r = client.post("/api/events/cases", headers=admin, json={"class_code": "06010", "description": "老沟湾路口垃圾堆积",
                                                               "lon": place["lon"], "lat": place["lat"]})
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    person = client.get("/api/people", params={"unit": place["unit_code"], "limit": 1}, headers=admin).json()["items"][0]
    r = client.post("/api/calls", headers=admin, json={"person_id": person["id"], "outcome": "answered", "case": number,
                                                       "note": "已到场核实"})
    assert r.status_code == 201, r.text
    page = new_page(browser, url)
    steps = Steps("video-case")
    login(page, url, "district", path=f"/workbench/cases/{number}")
    expect(page.get_by_test_id("case-calls")).to_contain_text(f"致电 {person['name']}（已接通）")
    expect(page.get_by_test_id("case-calls")).to_contain_text("已到场核实")
    near = page.get_by_test_id("cameras-near")
    expect(near.get_by_test_id("cameras-list").locator("li").first).to_be_visible()
    page.wait_for_function("""() => { const v = document.querySelector('[data-testid=cameras-near] video');
        return v && v.currentTime > 1 && v.videoWidth > 0; }""", timeout=60_000)
    steps.shot(page, "case")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)


def test_a_camera_without_a_picture_says_no_signal_with_its_name(world, browser):
    """On the case page, a camera whose stream never comes, or that is offline, shows 无信号 with the camera's name
    and why, never a black box. (Last in the module: it adds a camera beside the incident.)"""
    from playwright.sync_api import expect

    url, client, admin, place = world["url"], world["client"], world["admin"], world["place"]
    code = world["near"][0]["code"][:13] + "0990001"  # the same center and type, a serial of its own
    r = client.post("/api/video/cameras", headers=admin, json={
        "code": code, "name": "老沟湾村口（无信号测试）", "unit_code": place["unit_code"], "direction_deg": 90,
        "geometry": {"type": "Point", "coordinates": [place["lon"], place["lat"]]}, "status": "online"})
    assert r.status_code == 201, r.text
    r = client.post("/api/events/cases", headers=admin, json={"class_code": "06010", "description": "老沟湾村口积水",
                                                               "lon": place["lon"], "lat": place["lat"]})
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    page = new_page(browser, url)
    steps = Steps("video-no-signal")
    login(page, url, "district", path=f"/workbench/cases/{number}")
    near = page.get_by_test_id("cameras-near")
    near.get_by_test_id(f"camera-{code}").click()
    player = near.get_by_test_id("camera-player")
    expect(player.get_by_test_id("camera-playing-name")).to_have_text("老沟湾村口（无信号测试）")
    # No stream on the server for it: the player gives up and says so over the picture.
    no_signal = player.get_by_test_id("camera-no-signal")
    expect(no_signal).to_be_visible(timeout=30_000)
    expect(no_signal).to_contain_text("无信号")
    expect(no_signal).to_contain_text("老沟湾村口（无信号测试）")
    expect(no_signal).to_contain_text("未收到视频流")
    box, video = no_signal.bounding_box(), player.get_by_test_id("camera-video").bounding_box()
    assert box["width"] >= video["width"] - 2 and box["height"] >= video["height"] - 2, (box, video)
    steps.shot(page, "no-stream")
    # Marked offline: the same panel, with the camera's status.
    assert client.patch(f"/api/video/cameras/{code}", headers=admin, json={"status": "offline"}).status_code == 200
    page.reload()
    near.get_by_test_id(f"camera-{code}").click()
    expect(player.get_by_test_id("camera-no-signal")).to_contain_text("离线")
    expect(player.get_by_test_id("camera-no-signal")).to_contain_text("老沟湾村口（无信号测试）")
    steps.shot(page, "offline")
    assert_no_internal_codes(page)
    assert_local_only(page)
    assert_no_page_errors(page)

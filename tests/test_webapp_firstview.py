"""The phone command room's households written into its HTML for the session cookie's user, on both backends: the
login sets the cookie (HttpOnly, SameSite=Strict) beside the token; the page then carries exactly what
``/api/evacuations/mine`` answers that user (scope and personal-data masking included), an outsider's page none of
it, a page without a valid cookie (none, unknown, after logout) the page as built; the API never takes the cookie."""

from __future__ import annotations

import re
from html import unescape

import pytest
from shapely.geometry import Point, mapping

from cityops.core.spatial import buffer_m
from cityops.core.web import LANGUAGE_COOKIE, PAGE_COOKIE
from cityops.web.routes import DIST_DIR

METRIC = "EPSG:4545"
STATES = "to_move,refused,not_home"

pytestmark = pytest.mark.skipif(not (DIST_DIR / "phone.html").is_file(), reason="web app not built (make assets)")


@pytest.fixture(scope="module")
def scene(api):
    """An active incident at 老沟湾 with households; a grid worker of its grid, one of another township's village."""
    admin = api.login("admin")
    place = api.get("/api/places", params={"q": "老沟湾"}, headers=admin).json()[0]
    grid = place["unit_code"]
    township = api.get(f"/api/units/{api.get(f'/api/units/{grid}', headers=admin).json()['parent_code']}",
                       headers=admin).json()["parent_code"]
    other_township = next(u["code"] for u in api.get("/api/units", params={"level": "township", "limit": 50},
                                                     headers=admin).json()["items"] if u["code"] != township)
    other_village = api.get("/api/units", params={"parent": other_township, "limit": 1}, headers=admin).json()["items"][0]["code"]
    for username, unit in (("fv_worker", grid), ("fv_outsider", other_village)):
        r = api.post("/api/users", headers=admin, json={"username": username, "password": "first-view-pw",
                                                         "role": "grid_worker", "scope_units": [unit]})
        assert r.status_code in (201, 409), r.text
    yihe = api.login("yihe")
    r = api.post("/api/incidents", headers=yihe, json={
        "hazard_type": "landslide", "level": "orange", "unit_code": grid, "drill": True,
        "geometry": mapping(buffer_m(Point(place["lon"], place["lat"]), 25, METRIC))})
    assert r.status_code == 201, r.text
    yield {"place": place, "incident": r.json()["id"]}
    api.cookies.clear()
    assert api.delete(f"/api/incidents/{r.json()['id']}", headers=yihe).status_code == 200


def _login(api, username, password="first-view-pw"):
    """(bearer headers, the page cookie's value) of a fresh login; the client keeps no cookie of its own."""
    api.cookies.clear()
    r = api.post("/api/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    header = r.headers["set-cookie"]
    assert header.startswith(f"{PAGE_COOKIE}=") and "HttpOnly" in header and "samesite=strict" in header.lower()
    assert "Path=/" in header and "Max-Age=" in header
    value = r.cookies[PAGE_COOKIE]
    api.cookies.clear()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}, value


def _with_cookie(api, cookie, method="get", *args, **kwargs):
    """A request carrying only the page cookie ``cookie`` (or no cookie)."""
    api.cookies.clear()
    if cookie:
        api.cookies.set(PAGE_COOKIE, cookie)
    try:
        return getattr(api, method)(*args, **kwargs)
    finally:
        api.cookies.clear()


def _page(api, cookie, params=None, path="/phone"):
    r = _with_cookie(api, cookie, "get", path, params=params or {})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    return r


def _view(html):
    """The first view's summary and households (names) as the page carries them, or None."""
    m = re.search(r'<div id="first-view"[^>]*data-user="([^"]*)"[^>]*data-incident="(\d+)"', html)
    if not m:
        return None
    counts = re.search(r'class="fv-counts" data-remaining="(\d+)" data-safe="(\d+)" data-total="(\d+)"', html)
    rows = re.findall(r'<article class="fv-hh" data-id="(\d+)">.*?<span class="fv-name">([^<]*)</span>', html)
    return {"user": m.group(1), "incident": int(m.group(2)), "counts": tuple(map(int, counts.groups())),
            "rows": [(int(i), unescape(n)) for i, n in rows]}


def test_the_phone_page_carries_the_cookie_users_households_as_the_api_answers_them(api, scene):
    near = {"lon": scene["place"]["lon"], "lat": scene["place"]["lat"]}
    headers, cookie = _login(api, "fv_worker")
    r = _page(api, cookie, near)
    assert r.headers["cache-control"] == "private, no-store" and "Cookie" in r.headers["vary"]
    view = _view(r.text)
    mine = api.get("/api/evacuations/mine", headers=headers, params={"state": STATES, **near}).json()
    assert view is not None and view["user"] == "fv_worker" and view["incident"] == mine["incident_id"] == scene["incident"]
    totals = mine["totals"]["district"]
    assert view["counts"] == (totals["remaining_households"], totals["safe_households"], totals["households"])
    assert totals["households"] > 0
    expected = [(h["id"], h["head_name"]) for h in mine["evacuations"]["items"]][:30]
    assert view["rows"] == expected and expected  # nearest first, the worker's own names unmasked
    # Before the inlined app: painted from the page's first kilobytes.
    assert r.text.index('id="first-view"') < r.text.index('<script type="module">')
    # /phone/households is the same list; the other tabs and the desk's pages carry none.
    assert _view(_page(api, cookie, near, "/phone/households").text)["rows"] == expected
    for path in ("/phone/report", "/phone/tasks", "/", "/workbench"):
        assert 'id="first-view"' not in _page(api, cookie, near, path).text, path
    # A role without personal.read sees the names masked, as the API masks them.
    leader_headers, leader_cookie = _login(api, "leader", "cityops-demo")
    leader_view = _view(_page(api, leader_cookie, {**near, "incident": scene["incident"]}).text)
    leader_mine = api.get("/api/evacuations/mine", headers=leader_headers,
                          params={"state": STATES, "incident_id": scene["incident"], **near}).json()
    assert leader_view["rows"] == [(h["id"], h["head_name"]) for h in leader_mine["evacuations"]["items"]][:30]
    assert all(name.endswith("**") for _, name in leader_view["rows"])


def test_an_outsider_or_a_page_without_a_valid_cookie_gets_no_households(api, scene):
    near = {"lon": scene["place"]["lon"], "lat": scene["place"]["lat"]}
    worker_headers, worker_cookie = _login(api, "fv_worker")
    names = [n for _, n in _view(_page(api, worker_cookie, near).text)["rows"]]
    assert names
    # Another township's grid worker, even asking for the incident by its id: none of 老沟湾's households.
    _, outsider_cookie = _login(api, "fv_outsider")
    page = _page(api, outsider_cookie, {**near, "incident": scene["incident"]}).text
    view = _view(page)
    assert view is None or view["incident"] != scene["incident"]
    assert not any(name in page for name in names)
    # No cookie, an unknown one, an overlong one: the page as built, still 200.
    built = (DIST_DIR / "phone.html").read_text(encoding="utf-8")
    for cookie in (None, "not-a-token", "x" * 5000):
        r = _page(api, cookie, near)
        assert r.text == built and 'id="first-view"' not in r.text
    # The API never takes the cookie: only the bearer token.
    r = _with_cookie(api, worker_cookie, "get", "/api/evacuations/mine")
    assert r.status_code == 401
    # Logout clears the cookie and revokes its token: replayed, it draws nothing.
    api.cookies.clear()
    r = api.post("/api/auth/logout", headers=worker_headers)
    assert r.status_code == 204
    assert f'{PAGE_COOKIE}=""' in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    assert _view(_page(api, worker_cookie, near).text) is None


def test_the_page_with_a_first_view_is_valid_gzip_of_the_whole_page(api, scene):
    """The page is joined from compressed parts (cityops/web/routes.py, _PageParts): it must decode to the page."""
    _, cookie = _login(api, "fv_worker")
    raw = _with_cookie(api, cookie, "get", "/phone", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    text = raw.text  # decoded by the client
    assert _view(text) is not None
    built = (DIST_DIR / "phone.html").read_text(encoding="utf-8")
    start, end = text.index("<style>\n#first-view"), text.index("</script>", text.index('id="first-view"')) + len("</script>")
    assert text[:start] + "<!--cityops-first-view-->" + text[end:] == built
    plain = _with_cookie(api, cookie, "get", "/phone", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and _view(plain.text) == _view(text)
    api.cookies.clear()


def test_the_first_view_is_written_in_the_language_the_user_chose(api, scene):
    """The app's language choice travels as a cookie (src/i18n.js setLanguage); an unknown one means 简体中文."""
    _, cookie = _login(api, "fv_worker")

    def page(language):
        api.cookies.clear()
        api.cookies.set(PAGE_COOKIE, cookie)
        if language is not None:
            api.cookies.set(LANGUAGE_COOKIE, language)
        try:
            r = api.get("/phone")
        finally:
            api.cookies.clear()
        assert r.status_code == 200
        return r.text

    chinese, english = page(None), page("en")
    assert 'data-lang="zh-CN"' in chinese and "掌上指挥室" in chinese and "待转移" in chinese
    assert 'data-lang="en"' in english and "Field phone" in english and " to move · " in english
    drawn = english[english.index('<div id="first-view"'):english.index("</main></div>")]
    assert "掌上指挥室" not in drawn and "待转移" not in drawn and "户" not in drawn
    assert _view(english)["rows"] == _view(chinese)["rows"]
    for unknown in ("fr", "<script>", "x" * 300):
        assert 'data-lang="zh-CN"' in page(unknown) and "掌上指挥室" in page(unknown)

"""Risk-point routes and the CAP 1.2 feed over the demo district (both backends). CAP messages are checked
with independent tools: the OASIS XSD through ``xmlschema`` and ``lxml``, and the ``capparselib`` reader."""

from __future__ import annotations

import pytest
import xmlschema
from capparselib.parsers import CAPParser
from lxml import etree
from shapely.geometry import mapping, shape

from cityops.warning.cap import XSD
from tests.conftest import table_counts

ATOM = "{http://www.w3.org/2005/Atom}"
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
RANKS = {"none": 0, "blue": 1, "yellow": 2, "orange": 3, "red": 4}


@pytest.fixture(scope="module")
def admin(api):
    return api.login("admin")


@pytest.fixture(scope="module")
def schema():
    return xmlschema.XMLSchema(str(XSD))


def test_list_shows_levels_most_severe_first(api, admin):
    r = api.get("/api/risk-points", headers=admin, params={"limit": 500})
    assert r.status_code == 200, r.text
    body = r.json()
    items = body["items"]
    assert body["total"] == len(items) >= 8
    ranks = [RANKS[i["level"]] for i in items]
    assert ranks == sorted(ranks, reverse=True)
    lgw = next(i for i in items if i["code"] == "RP-LGW-001")
    assert lgw["level"] == "red" and lgw["level_name_zh"] == "一级(红色)" and lgw["colour"].startswith("#")
    assert lgw["reasons"] and "老沟湾" in lgw["name"] and len(lgw["building_codes"]) >= 20
    assert all(RANKS[i["level"]] >= 3 for i in api.get("/api/risk-points", headers=admin, params={"min_level": "orange"}).json()["items"])
    landslides = api.get("/api/risk-points", headers=admin, params={"hazard_type": "landslide"}).json()["items"]
    assert landslides and {i["hazard_type"] for i in landslides} == {"landslide"}
    for params, word in (({"level": "purple"}, "purple"), ({"hazard_type": "meteor"}, "meteor"), ({"min_level": "x"}, "min_level")):
        r = api.get("/api/risk-points", headers=admin, params=params)
        assert r.status_code == 422 and word in r.json()["message"]


def test_detail_gives_level_reasons_and_history(api, admin):
    r = api.get("/api/risk-points/RP-LGW-001", headers=admin)
    assert r.status_code == 200, r.text
    rp = r.json()
    assert [h["level"] for h in rp["history"]] == ["red", "orange", "yellow", "blue"]
    assert [h["msg_type"] for h in rp["history"]] == ["Update", "Update", "Update", "Alert"]
    indicators = {i["indicator"] for i in rp["assessment"]["indicators"]}
    assert indicators == {"rainfall", "displacement", "tilt"}
    rain = next(i for i in rp["assessment"]["indicators"] if i["indicator"] == "rainfall")
    assert rain["observations"]["count"] > 0 and rain["output"]["thresholds_mm"]["red"] > 0
    assert rp["model"]["threshold_set"] == "kaizhou_demo" and rp["history"][0]["cap_url"].endswith(".xml")
    assert api.get("/api/risk-points/RP-NOPE", headers=admin).status_code == 404
    warnings = api.get("/api/warnings", headers=admin, params={"level": "red"}).json()
    assert any(w["risk_point_code"] == "RP-LGW-001" for w in warnings["items"])


def test_every_july_storm_warning_carries_its_evidence(api, admin):
    """The history endpoint and the warning list return, for every stored level change of 老沟湾, the reasons
    (Chinese and English) and the evidence behind them: the decision, and per indicator its readings, model,
    output, notes and labelled figures — what a card shows."""
    from tests.test_warning_service import _assert_full_evidence

    history = api.get("/api/risk-points/RP-LGW-001", headers=admin).json()["history"]
    listed = {w["identifier"]: w for w in api.get("/api/warnings", headers=admin, params={"limit": 500}).json()["items"]}
    assert [h["level"] for h in history] == ["red", "orange", "yellow", "blue"]
    for h in history:
        assert h["level_name_en"] and h["colour"].startswith("#")
        _assert_full_evidence({"reasons": h["reasons"], "reasons_en": h["reasons_en"], **h["evidence"]}, h["level"])
        assert listed[h["identifier"]]["evidence"] == h["evidence"] and listed[h["identifier"]]["reasons"] == h["reasons"]
        for i in h["evidence"]["indicators"]:
            assert i["level_name_zh"] and all({"key", "label_zh", "label_en", "value", "unit"} <= set(f) for f in i["figures"])
    red = history[0]["evidence"]
    assert red["decision"]["confirmed_by"] and red["decision"]["held_at"] is None
    tilt = next(i for i in red["indicators"] if i["indicator"] == "tilt")
    assert 0 < tilt["output"]["share_of_limit"] < 1 and "达到限值" in tilt["summary_zh"]


def test_cap_message_carries_the_evidence(api, admin, schema):
    """Each CAP message holds every reason in its description (in the info's language) and the evidence as
    parameters: the rule, and per indicator its level, model, readings and figures; still valid CAP 1.2."""
    history = api.get("/api/risk-points/RP-LGW-001", headers=admin).json()["history"]
    for h in history:
        r = api.get(h["cap_url"], headers=admin)
        assert r.status_code == 200
        schema.validate(r.text)
        root = etree.fromstring(r.content)
        infos = {i.findtext(f"{CAP}language"): i for i in root.findall(f"{CAP}info")}
        zh, en = infos["zh-CN"], infos["en-US"]
        assert all(reason in zh.findtext(f"{CAP}description") for reason in h["reasons"])
        assert all(reason in en.findtext(f"{CAP}description") for reason in h["reasons_en"])
        params = {p.findtext(f"{CAP}valueName"): p.findtext(f"{CAP}value") for p in en.findall(f"{CAP}parameter")}
        assert params["CityOps-level"] == h["level"] and params["CityOps-rule"].startswith("the highest indicator level")
        for n, i in enumerate(h["evidence"]["indicators"], start=1):
            assert params[f"CityOps-indicator-{n}"].endswith(f"{i['level']} [ok]")
            assert i["model"]["source"] in params[f"CityOps-indicator-{n}-model"]
            assert params[f"CityOps-indicator-{n}-observations"].startswith(f"{i['observations']['count']} readings")
            for f in i["figures"]:
                if f["value"] is not None:
                    name = f"CityOps-indicator-{n}-{f['key']}" + (f"-{f['unit']}" if f["unit"] else "")
                    assert params[name] == str(f["value"])
    red = etree.fromstring(api.get(history[0]["cap_url"], headers=admin).content)
    names = [p.findtext(f"{CAP}valueName") for p in red.find(f"{CAP}info").findall(f"{CAP}parameter")]
    assert any(n.endswith("share_of_limit-%") for n in names)


def test_create_risk_point_and_bad_input(api, admin):
    yihe = next(u for u in api.get("/api/units", headers=admin, params={"level": "township"}).json()["items"] if u["name"] == "义和镇")
    grid = api.get("/api/units", headers=admin, params={"root": yihe["code"], "level": "grid", "limit": 1}).json()["items"][0]
    grid = api.get(f"/api/units/{grid['code']}", headers=admin, params={"geometry": True}).json()
    point = shape(grid["geometry"]).representative_point()
    body = {"code": "RP-API-1", "name": "接口测试斜坡", "hazard_type": "unstable_slope", "unit_code": grid["code"],
            "geometry": mapping(point), "datastreams": {"rainfall": 900101}, "radius_m": 120}
    before = table_counts(api.store)
    bad = [({"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}, "Point"),
           ({"geometry": {"type": "Point", "coordinates": ["x"]}}, "GeoJSON"),
           ({"hazard_type": "meteor"}, "meteor"), ({"radius_m": -5}, "radius_m"),
           ({"model": {"threshold_set": "nowhere"}}, "nowhere"), ({"datastreams": {"rainfall": "abc"}}, "positive integers")]
    for change, word in bad:
        r = api.post("/api/risk-points", headers=admin, json={**body, **change})
        assert r.status_code == 422, (change, r.text)
        assert word in r.text
    assert table_counts(api.store) == before
    r = api.post("/api/risk-points", headers=admin, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["level"] == "none" and r.json()["history"] == []
    assert api.post("/api/risk-points", headers=admin, json=body).status_code == 409
    viewer = api.login("leader")
    assert api.post("/api/risk-points", headers=viewer, json={**body, "code": "RP-API-2"}).status_code == 403
    assert api.get("/api/risk-points/RP-API-1", headers=viewer).status_code == 200


def test_model_catalogue(api, admin):
    body = api.get("/api/warning-models", headers=admin).json()
    assert {c["key"] for c in body["curves"]} >= {"caine1980", "guzzetti2008"}
    assert body["threshold_sets"][0]["parameters"]["alpha"]["red"] == pytest.approx(14.734)
    assert body["defaults"]["antecedent"]["K"] == 0.8


def _feed(api, headers=None, **params):
    r = api.get("/cap", headers=headers or {}, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/atom+xml")
    return r


def _entry_ids(response) -> set[str]:
    root = etree.fromstring(response.content)
    return {e.findtext(f"{ATOM}id").rsplit(":", 1)[-1] for e in root.findall(f"{ATOM}entry")}


def test_cap_feed_and_every_message_validate(api, schema):
    # By default: current alerts (whatever their age) and the last 30 days; the demo storm was in July.
    current = _entry_ids(_feed(api))
    assert "500154-RP-LGW-001-0004" in current and "500154-RP-LGW-001-0003" not in current
    feed = _feed(api, days=3650)
    root = etree.fromstring(feed.content)
    entries = root.findall(f"{ATOM}entry")
    assert entries, "the demo storm must publish alerts"
    parsed = CAPParser(feed.text).as_dict()  # independent reader over the whole feed
    assert len(parsed) == len(entries)
    identifiers = set()
    for entry in entries:
        href = entry.find(f"{ATOM}link[@rel='alternate']").get("href")
        r = api.get(href.replace("http://testserver", ""))
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/cap+xml")
        schema.validate(r.text)  # raises on any violation of the OASIS schema
        message = CAPParser(r.text).as_dict()[0]
        identifiers.add(str(message["cap_id"]))
        assert str(message["cap_scope"]) == "Public" and str(message["cap_sent"]).endswith("+08:00")
        inline = entry.find(f"{ATOM}content/{CAP}alert")
        assert inline.findtext(f"{CAP}identifier") == str(message["cap_id"])
    lgw = [i for i in identifiers if "RP-LGW-001" in i]
    # 蓝 is internal: the public feed starts the 老沟湾 story at 黄 (its Update references the internal Alert).
    assert sorted(lgw) == [f"500154-RP-LGW-001-000{n}" for n in (2, 3, 4)]
    red = etree.fromstring(api.get("/cap/alerts/500154-RP-LGW-001-0004.xml").content)
    assert red.findtext(f"{CAP}msgType") == "Update"
    assert red.findtext(f"{CAP}references").split(",")[1] == "500154-RP-LGW-001-0003"
    info = red.find(f"{CAP}info")
    assert info.findtext(f"{CAP}severity") == "Extreme" and info.findtext(f"{CAP}language") == "zh-CN"
    assert info.find(f"{CAP}area/{CAP}circle").text.count(",") == 1


def test_cap_internal_blue_alerts_follow_scope(api, admin, schema):
    blue = "/cap/alerts/500154-RP-LGW-001-0001.xml"
    assert api.get(blue).status_code == 404  # anonymous: internal level
    r = api.get(blue, headers=admin)
    assert r.status_code == 200
    schema.validate(r.text)
    message = etree.fromstring(r.content)
    assert message.findtext(f"{CAP}scope") == "Restricted" and message.findtext(f"{CAP}restriction")
    assert "500154-RP-LGW-001-0001" in _entry_ids(_feed(api, admin, days=3650))
    assert "500154-RP-LGW-001-0001" not in _entry_ids(_feed(api, days=3650))
    # A user of another township sees public alerts only.
    dade = next(u for u in api.get("/api/units", headers=admin, params={"level": "township"}).json()["items"] if u["name"] == "大德镇")
    r = api.post("/api/users", headers=admin, json={"username": "dade_watch", "password": "dade-watch-pass",
                                                     "role": "township_operator", "scope_units": [dade["code"]]})
    assert r.status_code == 201, r.text
    other = api.login("dade_watch", "dade-watch-pass")
    assert api.get(blue, headers=other).status_code == 404
    assert "500154-RP-LGW-001-0001" not in _entry_ids(_feed(api, other, days=3650))
    assert "500154-RP-LGW-001-0004" in _entry_ids(_feed(api, other))
    # Bad credentials are refused rather than silently treated as anonymous.
    assert api.get("/cap", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert api.get("/cap/alerts/does-not-exist.xml").status_code == 404
    assert api.get("/cap", params={"days": 0}).status_code == 422


def test_evaluate_route_and_building_levels(api, admin):
    from cityops.identity.scope import Scope
    from cityops.warning import demo, service

    # Re-evaluating at the end of the replay finds the same red and stores nothing new.
    before = table_counts(api.store)
    r = api.post("/api/risk-points/RP-LGW-001/evaluate", headers=admin, json={"at": demo.REPLAY_END.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json()["level"] == "red" and not r.json()["changed"]
    assert table_counts(api.store)["risk_warnings"] == before["risk_warnings"]
    # Months later the demo gauges are silent: silence holds the level, it never cancels a warning.
    r = api.post("/api/risk-points/RP-LGW-001/evaluate", headers=admin, json={})
    assert r.status_code == 200 and r.json()["level"] == "red" and "level held" in r.json()["reasons"][0]
    assert api.post("/api/risk-points/RP-LGW-001/evaluate", headers=admin, json={"at": "2026-07-09T06:00:00"}).status_code == 422
    assert api.post("/api/risk-points/RP-NOPE/evaluate", headers=admin, json={}).status_code == 404
    assert api.post("/api/risk-points/RP-LGW-001/evaluate", headers=api.login("leader"), json={}).status_code == 403
    # Buildings on the slope take its level.
    houses = api.get("/api/risk-points/RP-LGW-001", headers=admin).json()["building_codes"]
    with api.store.sessions() as s:
        levels = service.building_levels(s, Scope(all_units=True), houses + ["no-such-building"])
    assert set(levels) == set(houses) and {v["level"] for v in levels.values()} == {"red"}

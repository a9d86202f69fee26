"""Scope rows of the indicators capability for tests/test_api_scope.py: the outsider (义和镇) sees its township's
values, its villages' and the district's (read-only), never 大德镇's; it cannot recompute the district."""

from __future__ import annotations

import json
from datetime import UTC, datetime


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def _refused(r):
    assert r.status_code == 422 and "outside your scope" in r.text, r.text


def _clean(dade: str):
    def check(r):
        assert r.status_code == 200, r.text
        text = json.dumps(r.json(), ensure_ascii=False)
        assert "大德镇" not in text and dade not in text, f"foreign record leaked: {text[:300]}"
    return check


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    r = api.post("/api/indicators/compute", headers=admin, json={})
    assert r.status_code == 200, r.text
    dade, yihe = world["dade"], world["yihe"]
    clean = _clean(dade)
    district = dade[:6]

    def own_board(r):
        clean(r)
        assert r.json()["unit"]["code"] == yihe and r.json()["unit"]["read_only"] is False

    def district_read_only(r):
        clean(r)
        body = r.json()
        assert body["unit"]["code"] == district and body["unit"]["read_only"] is True
        assert [c["code"] for c in body["children"]] == [yihe]

    def values_of_district(r):
        clean(r)
        assert r.json()["unit_code"] == district and r.json()["items"]

    def only_yihe_rank(r):
        clean(r)
        body = r.json()
        assert [i["unit_code"] for i in body["items"]] == [yihe] and body["of"] >= 2

    def only_yihe_children(r):
        clean(r)
        assert {i["unit_code"] for i in r.json()["items"]} <= {yihe}

    month = datetime.now(UTC).date().isoformat()
    csv_dade = f"indicator,unit_code,period,value\nvolunteer_hours,{dade},{month},5\n".encode()
    return {
        ("POST", "/api/indicators/reports"): [
            dict(json={"entries": [{"indicator": "volunteer_hours", "unit_code": dade, "period": month, "value": 5}]}, check=_refused),
            dict(json={"entries": [{"indicator": "volunteer_hours", "unit_code": yihe, "period": month, "value": 5},
                                   {"indicator": "volunteer_hours", "unit_code": dade, "period": month, "value": 5}]}, check=_refused)],
        ("POST", "/api/indicators/reports/upload"): [dict(files={"file": ("r.csv", csv_dade)}, check=_refused)],
        ("GET", "/api/indicators/reports/due"): [dict(check=clean)],
        ("GET", "/api/indicators/scorecards"): [dict(check=clean)],
        ("GET", "/api/indicators/scorecards/{key}"): [dict(path={"key": "township_safety"}, check=only_yihe_rank),
                                                      dict(path={"key": "event_center"}, params={"period": "quarter"}, check=only_yihe_rank)],
        ("GET", "/api/indicators/report"): [dict(params={"unit": dade}, check=_denied), dict(params={"unit": dade, "format": "pdf"}, check=_denied),
                                            dict(params={"format": "xlsx"}, check=lambda r: r.status_code == 200 and r.content[:2] == b"PK")],
        ("GET", "/api/indicators/catalogue"): [dict(check=clean), dict(params={"unit": dade}, check=_denied)],
        ("GET", "/api/indicators/metrics"): [dict(check=lambda r: r.status_code == 200 and len(r.json()) >= 5)],
        ("GET", "/api/indicators/board"): [dict(check=own_board), dict(params={"unit": district}, check=district_read_only),
                                           dict(params={"unit": dade}, check=_denied),
                                           dict(params={"unit": world["dade_village"]}, check=_denied)],
        ("GET", "/api/indicators/values"): [dict(params={"unit": district}, check=values_of_district),
                                            dict(params={"unit": dade}, check=_denied),
                                            dict(params={"unit": world["dade_grid"]["code"]}, check=_denied)],
        ("GET", "/api/indicators/breaches"): [dict(check=clean), dict(params={"unit": dade}, check=_denied)],
        ("POST", "/api/indicators/compute"): [dict(json={}, check=_denied), dict(json={"period": "day"}, check=_denied)],
        ("GET", "/api/indicators/stream"): [dict(params={"timeout": 0, "after": 0}, check=clean_stream(dade)),
                                            dict(params={"timeout": 0, "after": 1}, check=clean_stream(dade))],
        ("GET", "/api/indicators/{code}"): [dict(path={"code": "cases_open"}, check=clean)],
        ("GET", "/api/indicators/{code}/series"): [dict(path={"code": "cases_open"}, params={"unit": dade}, check=_denied),
                                                   dict(path={"code": "cases_open"}, params={"unit": district}, check=clean)],
        ("GET", "/api/indicators/{code}/children"): [
            dict(path={"code": "cases_open"}, params={"unit": district}, check=only_yihe_children),
            dict(path={"code": "cases_open"}, params={"unit": dade}, check=_denied)],
    }


def clean_stream(dade: str):
    def check(r):
        assert r.status_code == 200, r.text
        assert "大德镇" not in r.text and dade not in r.text, r.text[:300]
    return check

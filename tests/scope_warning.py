"""Scope rows of the early-warning routes (risk points, warnings, model catalogue) for tests/test_api_scope.py."""

from __future__ import annotations

from shapely.geometry import mapping, shape


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def scope_cases(api, world) -> dict:
    from tests.test_api_scope import _in_scope

    admin = api.login("admin")
    grid = world["dade_grid"]
    point = shape(grid["geometry"]).representative_point()
    body = {"code": "RP-DADE-SCOPE", "name": "大德镇测试滑坡", "hazard_type": "landslide", "unit_code": grid["code"],
            "geometry": mapping(point)}
    r = api.post("/api/risk-points", headers=admin, json=body)
    assert r.status_code == 201, r.text
    inside = _in_scope(world["yihe"])
    spy = {**body, "code": "RP-SPY"}
    return {
        ("GET", "/api/risk-points"): [dict(check=inside), dict(params={"root": world["dade"]}, check=_denied),
                                      dict(params={"min_level": "none"}, check=inside)],
        ("POST", "/api/risk-points"): [dict(json=spy, check=_denied)],
        ("GET", "/api/risk-points/{code}"): [dict(path={"code": "RP-DADE-SCOPE"}, check=_denied)],
        ("POST", "/api/risk-points/{code}/evaluate"): [dict(path={"code": "RP-DADE-SCOPE"}, json={}, check=_denied)],
        ("GET", "/api/warnings"): [dict(check=inside)],
        ("GET", "/api/warning-models"): [dict(check=lambda r: r.status_code == 200 and len(r.json()["levels"]) == 5)],
    }

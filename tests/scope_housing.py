"""Scope rows for the housing registry's write and export routes (see tests/test_api_scope.py).

The outsider (``yihe_ops``, district operator scoped to 义和镇) must not create, change or export 大德镇's
buildings, households or residents; exports hold only 义和镇's records."""

from __future__ import annotations

import io
import json

import shapely
from shapely.geometry import mapping, shape


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def _only_own(yihe: str):
    def check(r):
        assert r.status_code == 200, r.text
        features = json.load(io.BytesIO(r.content))["features"]
        assert features, "the export of the outsider's own township is empty"
        for f in features:
            props = f["properties"]
            assert props["grid_code"].startswith(yihe), f"foreign record exported: {props}"
            assert "大德镇" not in json.dumps(props, ensure_ascii=False)
    return check


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    dade, yihe = world["dade"], world["yihe"]
    grid = shape(world["dade_grid"]["geometry"])
    p = grid.representative_point()
    footprint = mapping(shapely.box(p.x - 0.00005, p.y - 0.00005, p.x + 0.00005, p.y + 0.00005))
    household = api.get(f"/api/households/{world['dade_household']}", headers=admin).json()
    resident = household["residents"][0]["id"]
    return {
        ("POST", "/api/buildings"): [dict(json={"geometry": footprint}, check=_denied),
                                     dict(json={"geometry": footprint, "grid_code": world["dade_grid"]["code"]}, check=_denied)],
        ("PATCH", "/api/buildings/{code}"): [dict(path={"code": world["dade_building"]}, json={"floors": 3}, check=_denied)],
        ("POST", "/api/households"): [dict(json={"building_code": world["dade_building"], "head_name": "张三"}, check=_denied)],
        ("PATCH", "/api/households/{code}"): [dict(path={"code": world["dade_household"]}, json={"room": "2单元"},
                                                   check=_denied)],
        ("POST", "/api/households/{code}/residents"): [dict(path={"code": world["dade_household"]}, json={"name": "李四"},
                                                            check=_denied)],
        ("PATCH", "/api/residents/{resident_id}"): [dict(path={"resident_id": resident}, json={"disabled": True},
                                                         check=_denied)],
        ("GET", "/api/buildings/export"): [dict(check=_only_own(yihe)), dict(params={"root": dade}, check=_denied)],
        ("GET", "/api/households/export"): [dict(check=_only_own(yihe)), dict(params={"root": dade}, check=_denied)],
    }

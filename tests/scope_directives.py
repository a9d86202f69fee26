"""Scope rows of the directive routes (issue, list, inbox, board, timeline, acknowledge, pass down, live board)
for tests/test_api_scope.py: 大德镇's directive and receipts stay unseen by 义和镇's operator."""

from __future__ import annotations


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


def scope_cases(api, world) -> dict:
    admin = api.login("admin")
    dade = world["dade"]
    r = api.post("/api/directives", headers=admin, json={"title": "大德镇专项通知", "body": "大德镇内部事项",
                                                        "targets": [{"kind": "units", "codes": [dade]}], "cascade": "village"})
    assert r.status_code == 201, r.text
    did = r.json()["directive"]["id"]
    rid = r.json()["levels"][0]["receipts"][0]["id"]

    def nothing_foreign(r):
        assert r.status_code == 200, r.text
        assert "大德镇" not in r.text and all(d["id"] != did for d in (x.get("directive", x) for x in r.json()))

    path = {"directive_id": did, "receipt_id": rid}
    return {
        ("POST", "/api/directives"): [dict(json={"title": "x", "body": "x", "targets": [{"kind": "units", "codes": [dade]}]}, check=_denied),
                                      dict(json={"title": "x", "body": "x", "targets": [{"kind": "departments", "codes": ["zjw"]}]},
                                           check=_denied)],
        ("GET", "/api/directives"): [dict(check=nothing_foreign)],
        ("GET", "/api/directives/inbox"): [dict(check=nothing_foreign)],
        ("GET", "/api/directives/{directive_id}"): [dict(path={"directive_id": did}, check=_denied)],
        ("GET", "/api/directives/{directive_id}/timeline"): [dict(path={"directive_id": did}, check=_denied)],
        ("GET", "/api/directives/{directive_id}/stream"): [dict(path={"directive_id": did}, params={"timeout": 1}, check=_denied)],
        ("POST", "/api/directives/{directive_id}/receipts/{receipt_id}/read"): [dict(path=path, check=_denied)],
        ("POST", "/api/directives/{directive_id}/receipts/{receipt_id}/confirm"): [dict(path=path, check=_denied)],
        ("POST", "/api/directives/{directive_id}/receipts/{receipt_id}/report"): [dict(path=path, json={"text": "x"}, check=_denied)],
        ("POST", "/api/directives/{directive_id}/receipts/{receipt_id}/forward"): [dict(path=path, json={"level": "village"}, check=_denied)],
    }

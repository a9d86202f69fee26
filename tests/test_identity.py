"""Identity: password login, bearer tokens, API keys, user management and its audit trail.

Runs on both backends through the ``api`` fixture (the small demo district per backend). Tests create
their own users for anything that changes state, so the demo users stay as they are.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from cityops.identity import service
from cityops.identity.models import Token, User
from tests.conftest import table_counts

PASSWORD = "correct-horse-9"


def _login(api, username: str, password: str):
    return api.post("/api/auth/login", json={"username": username, "password": password})


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def codes(api):
    """Codes of the district, 义和镇 and a 义和镇 grid, plus the lon/lat of 老沟湾 (inside 义和镇)."""
    admin = api.login("admin")
    townships = {u["name"]: u["code"] for u in
                 api.get("/api/units", params={"level": "township"}, headers=admin).json()["items"]}
    district = api.get("/api/units", params={"level": "district"}, headers=admin).json()["items"][0]["code"]
    grid = api.get("/api/units", params={"root": townships["义和镇"], "level": "grid", "limit": 1},
                   headers=admin).json()["items"][0]["code"]
    place = [p for p in api.get("/api/places", params={"q": "老沟湾"}, headers=admin).json() if p["name"] == "老沟湾"][0]
    return {"district": district, "yihe": townships["义和镇"], "dade": townships["大德镇"], "grid": grid,
            "point": (place["lon"], place["lat"])}


def _create(api, headers, **body):
    return api.post("/api/users", headers=headers, json=body)


# ------------------------------------------------------------------------------------------- login

def test_login_returns_expiring_token_and_me_describes_the_principal(api, codes):
    before = datetime.now(UTC)
    r = _login(api, "yihe", "cityops-demo")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["access_token"].startswith("cot_")
    assert body["token_type"] == "bearer"
    assert body["user"]["username"] == "yihe" and body["user"]["role"] == "township_operator"
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    if expires.tzinfo is None:  # serialised without an offset means UTC
        expires = expires.replace(tzinfo=UTC)
    ttl = timedelta(minutes=api.store.settings.token_ttl_minutes)
    assert before + ttl - timedelta(seconds=5) <= expires <= datetime.now(UTC) + ttl + timedelta(seconds=5)

    me = api.get("/api/auth/me", headers=_bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    me = me.json()
    assert me["username"] == "yihe"
    assert me["role"] == "township_operator"
    assert me["role_name"]["zh-CN"] == "镇街值班员"
    assert "locate" in me["permissions"] and "users.manage" not in me["permissions"]
    assert me["all_units"] is False
    assert me["scope_units"] == [codes["yihe"]]
    assert len(me["scope_paths"]) == 1 and me["scope_paths"][0].endswith(f"/{codes['yihe']}/")

    admin_me = api.get("/api/auth/me", headers=api.login("admin")).json()
    assert admin_me["all_units"] is True and "*" in admin_me["permissions"]


def test_wrong_password_and_unknown_user_look_the_same(api):
    wrong = _login(api, "yihe", "not-the-password")
    unknown = _login(api, "nobody-here", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"] == unknown.json()["error"] == "unauthenticated"
    assert wrong.json()["message"] == unknown.json()["message"]
    assert wrong.headers.get("www-authenticate") == "Bearer"


def test_user_without_password_cannot_log_in(api, codes):
    admin = api.login("admin")
    r = _create(api, admin, username="nopass-device", role="integration", scope_units=[codes["district"]])
    assert r.status_code == 201, r.text
    r = _login(api, "nopass-device", "anything-at-all")
    assert r.status_code == 401
    assert r.json()["message"] == _login(api, "nobody-here", "anything-at-all").json()["message"]


def test_missing_and_garbage_credentials_are_401(api):
    assert api.get("/api/auth/me").status_code == 401
    r = api.get("/api/auth/me", headers=_bearer("cot_not-a-real-token"))
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    assert api.get("/api/auth/me", headers={"X-API-Key": "cok_nope"}).status_code == 401


def test_disabled_user_cannot_log_in_and_loses_their_tokens(api, codes):
    admin = api.login("admin")
    r = _create(api, admin, username="soon-disabled", password=PASSWORD, role="village_cadre",
                scope_units=[codes["yihe"]])
    assert r.status_code == 201, r.text
    token = _login(api, "soon-disabled", PASSWORD).json()["access_token"]
    assert api.get("/api/auth/me", headers=_bearer(token)).status_code == 200

    r = api.patch("/api/users/soon-disabled", headers=admin, json={"active": False})
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False

    wrong = _login(api, "soon-disabled", "not-the-password")
    disabled = _login(api, "soon-disabled", PASSWORD)
    assert disabled.status_code == 401
    # A disabled account is indistinguishable from a wrong password.
    assert disabled.json()["message"] == wrong.json()["message"]
    assert api.get("/api/auth/me", headers=_bearer(token)).status_code == 401

    # Re-enabling does not resurrect the revoked token.
    assert api.patch("/api/users/soon-disabled", headers=admin, json={"active": True}).status_code == 200
    assert api.get("/api/auth/me", headers=_bearer(token)).status_code == 401
    assert _login(api, "soon-disabled", PASSWORD).status_code == 200


def test_expired_token_is_refused(api):
    with api.store.sessions() as session:
        user = session.scalar(select(User).where(User.username == "leader"))
        raw, _ = service.issue_token(session, api.store.settings.resolved_secret, user, ttl=timedelta(seconds=-1))
        session.commit()
    assert raw.startswith("cot_")
    r = api.get("/api/auth/me", headers=_bearer(raw))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"
    assert "expired" in r.json()["message"]


def test_token_signed_with_another_secret_is_refused(api):
    with api.store.sessions() as session:
        user = session.scalar(select(User).where(User.username == "leader"))
        raw, _ = service.issue_token(session, "some-other-secret", user, ttl=timedelta(hours=1))
        session.commit()
    assert api.get("/api/auth/me", headers=_bearer(raw)).status_code == 401


def test_logout_revokes_the_token(api):
    token = _login(api, "leader", "cityops-demo").json()["access_token"]
    headers = _bearer(token)
    assert api.get("/api/auth/me", headers=headers).status_code == 200
    r = api.post("/api/auth/logout", headers=headers)
    assert r.status_code == 204
    r = api.get("/api/auth/me", headers=headers)
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    assert api.post("/api/auth/logout", headers=headers).status_code == 401
    # Other sessions of the same user are untouched.
    assert api.get("/api/auth/me", headers=api.login("leader")).status_code == 200



def test_revocation_by_another_process_takes_effect_within_the_cache_window(api, codes, monkeypatch):
    """Resolved tokens are cached for TOKEN_CACHE_SECONDS. A revocation written straight to the database (as
    another server process would) is honoured once that window has passed; one through this process, at once."""
    clock = [1000.0]
    monkeypatch.setattr(service, "_clock", lambda: clock[0])
    service.forget_principals()
    token = _login(api, "leader", "cityops-demo").json()["access_token"]
    headers = _bearer(token)
    assert api.get("/api/auth/me", headers=headers).status_code == 200
    with api.store.sessions() as session:
        session.execute(update(Token).where(Token.token_hash == service._token_hash(api.store.settings.resolved_secret, token))
                        .values(revoked_at=datetime.now(UTC)))
        session.commit()
    clock[0] += service.TOKEN_CACHE_SECONDS / 2
    assert api.get("/api/auth/me", headers=headers).status_code == 200  # still inside the documented window
    clock[0] += service.TOKEN_CACHE_SECONDS
    r = api.get("/api/auth/me", headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["message"]

    # A role change through this process applies to the very next request.
    admin = api.login("admin")
    assert _create(api, admin, username="cache-role", password=PASSWORD, role="township_operator",
                   scope_units=[codes["yihe"]]).status_code == 201
    own = _bearer(_login(api, "cache-role", PASSWORD).json()["access_token"])
    assert api.get("/api/auth/me", headers=own).json()["role"] == "township_operator"
    assert api.patch("/api/users/cache-role", headers=admin, json={"role": "village_cadre"}).status_code == 200
    assert api.get("/api/auth/me", headers=own).json()["role"] == "village_cadre"

# ------------------------------------------------------------------------------------------ API keys

def test_api_key_for_an_integration_user(api, codes):
    admin = api.login("admin")
    r = _create(api, admin, username="gate-sensor", role="integration", display_name="卡口设备",
                scope_units=[codes["district"]])
    assert r.status_code == 201, r.text

    r = api.post("/api/users/gate-sensor/api-keys", headers=admin, json={"name": "卡口 #1"})
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    assert key.startswith("cok_")
    assert r.json()["name"] == "卡口 #1" and r.json()["expires_at"] is None

    # Shown once: only a hash is stored.
    with api.store.sessions() as session:
        from cityops.identity.models import Token

        hashes = list(session.scalars(select(Token.token_hash)))
    assert key not in hashes and all(key not in h for h in hashes)

    lon, lat = codes["point"]
    for headers in ({"X-API-Key": key}, _bearer(key)):
        r = api.get("/api/locate", params={"lon": lon, "lat": lat}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["township"]["code"] == codes["yihe"]
        r = api.get("/api/people", headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "forbidden"
    me = api.get("/api/auth/me", headers={"X-API-Key": key}).json()
    assert me["username"] == "gate-sensor" and me["role"] == "integration"


def test_api_key_with_expiry_and_for_unknown_user(api, codes):
    admin = api.login("admin")
    r = api.post("/api/users/gridworker/api-keys", headers=admin, json={"name": "phone", "expires_in_days": 30})
    assert r.status_code == 201, r.text
    expires = datetime.fromisoformat(r.json()["expires_at"].replace("Z", "+00:00"))
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    assert api.get("/api/auth/me", headers={"X-API-Key": r.json()["api_key"]}).json()["username"] == "gridworker"
    assert api.post("/api/users/nobody-here/api-keys", headers=admin, json={"name": "x"}).status_code == 404
    # Issuing keys needs users.manage.
    r = api.post("/api/users/gridworker/api-keys", headers=api.login("yihe"), json={"name": "x"})
    assert r.status_code == 403


# ------------------------------------------------------------------------------------- user creation

def test_password_is_hashed_with_argon2(api, codes):
    admin = api.login("admin")
    r = _create(api, admin, username="hashed-one", password=PASSWORD, role="grid_worker", scope_units=[codes["grid"]])
    assert r.status_code == 201, r.text
    assert "password" not in r.json() and "password_hash" not in r.json()
    with api.store.sessions() as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "hashed-one"))
    assert stored.startswith("$argon2")
    assert PASSWORD not in stored


def test_short_password_is_rejected(api, codes):
    admin = api.login("admin")
    before = table_counts(api.store)
    r = _create(api, admin, username="shorty", password="1234567", role="grid_worker", scope_units=[codes["grid"]])
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input"
    assert "password" in r.json()["message"]
    assert table_counts(api.store) == before
    r = _create(api, admin, username="pw-target", password=PASSWORD, role="grid_worker", scope_units=[codes["grid"]])
    assert r.status_code == 201, r.text
    before = table_counts(api.store)
    r = api.patch("/api/users/pw-target", headers=admin, json={"password": "short"})
    assert r.status_code == 422, r.text
    assert table_counts(api.store) == before
    assert _login(api, "pw-target", PASSWORD).status_code == 200
    # The service enforces it too, whatever the caller.
    with pytest.raises(Exception, match="at least 8"):
        service.hash_password("1234567")


def test_township_operator_cannot_create_an_administrator(api, codes):
    before = table_counts(api.store)
    r = _create(api, api.login("yihe"), username="evil-admin", password=PASSWORD, role="administrator")
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden"
    assert table_counts(api.store) == before


def test_scoped_user_manager_cannot_create_an_administrator(api, codes):
    """A user manager whose scope is one town: no administrators, nothing outside the town."""
    admin = api.login("admin")
    r = _create(api, admin, username="yihe-manager", password=PASSWORD, role="district_operator",
                scope_units=[codes["yihe"]])
    assert r.status_code == 201, r.text
    manager = api.login("yihe-manager", PASSWORD)
    before = table_counts(api.store)
    r = _create(api, manager, username="evil-admin", password=PASSWORD, role="administrator")
    assert r.status_code == 403, r.text
    assert "administrator" in r.json()["message"]
    r = _create(api, manager, username="evil-outside", password=PASSWORD, role="grid_worker",
                scope_units=[codes["dade"]])
    assert r.status_code == 403, r.text
    assert table_counts(api.store) == before
    # Nor promote a user they can see.
    r = _create(api, manager, username="yihe-cadre", password=PASSWORD, role="village_cadre", scope_units=[codes["yihe"]])
    assert r.status_code == 201, r.text
    before = table_counts(api.store)
    r = api.patch("/api/users/yihe-cadre", headers=manager, json={"role": "administrator"})
    assert r.status_code == 403
    r = api.patch("/api/users/yihe-cadre", headers=manager, json={"scope_units": [codes["district"]]})
    assert r.status_code == 403
    assert table_counts(api.store) == before


def test_scoped_user_manager_cannot_grant_a_district_department(api, codes):
    admin = api.login("admin")
    r = _create(api, admin, username="yihe-manager2", password=PASSWORD, role="district_operator",
                scope_units=[codes["yihe"]])
    assert r.status_code == 201, r.text
    manager = api.login("yihe-manager2", PASSWORD)
    r = _create(api, manager, username="escalated", password=PASSWORD, role="department_staff",
                scope_departments=["zjw"])
    assert r.status_code == 403, f"created {r.json()}; its scope: " + json.dumps(
        api.get("/api/auth/me", headers=api.login("escalated", PASSWORD)).json()["scope_paths"])


def test_unknown_unit_and_unknown_role_are_named(api, codes):
    admin = api.login("admin")
    before = table_counts(api.store)
    r = _create(api, admin, username="ghost", password=PASSWORD, role="grid_worker", scope_units=["500154999999999"])
    assert r.status_code == 422, r.text
    assert "500154999999999" in r.json()["message"]
    r = _create(api, admin, username="ghost", password=PASSWORD, role="wizard", scope_units=[codes["grid"]])
    assert r.status_code == 422, r.text
    assert "wizard" in r.json()["message"]
    r = _create(api, admin, username="ghost", password=PASSWORD, role="department_staff", scope_departments=["nope"])
    assert r.status_code == 422, r.text
    assert "nope" in r.json()["message"]
    r = _create(api, admin, username="ghost", password=PASSWORD, role="grid_worker")
    assert r.status_code == 422, r.text  # a scoped role without any scope
    assert table_counts(api.store) == before


def test_duplicate_username_is_a_conflict(api, codes):
    admin = api.login("admin")
    before = table_counts(api.store)
    r = _create(api, admin, username="yihe", password=PASSWORD, role="grid_worker", scope_units=[codes["grid"]])
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "conflict" and "yihe" in r.json()["message"]
    r = _create(api, admin, username="  yihe ", password=PASSWORD, role="grid_worker", scope_units=[codes["grid"]])
    assert r.status_code == 409, r.text  # names are trimmed before the check
    assert table_counts(api.store) == before


def test_every_user_write_is_audited(api, codes):
    admin = api.login("admin")
    r = _create(api, admin, username="audited", password=PASSWORD, role="grid_worker", scope_units=[codes["grid"]],
                display_name="审计对象")
    assert r.status_code == 201, r.text
    assert api.patch("/api/users/audited", headers=admin, json={"display_name": "改名了", "password": "another-pass-1"}
                     ).status_code == 200
    assert api.post("/api/users/audited/api-keys", headers=admin, json={"name": "k"}).status_code == 201

    entries = api.get("/api/audit", params={"entity_key": "audited"}, headers=admin).json()
    by_action = {e["action"]: e for e in entries}
    assert {"user.create", "user.update", "api_key.create"} <= set(by_action)
    created, updated = by_action["user.create"], by_action["user.update"]
    assert created["actor"] == "admin" and created["entity"] == "user"
    assert created["before"] is None
    assert created["after"]["display_name"] == "审计对象" and created["after"]["role"] == "grid_worker"
    assert updated["before"]["display_name"] == "审计对象"
    assert updated["after"]["display_name"] == "改名了"
    assert all(e["request_id"] for e in (created, updated))
    # Neither passwords nor their hashes reach the audit log.
    dumped = json.dumps(entries, ensure_ascii=False)
    assert PASSWORD not in dumped and "another-pass-1" not in dumped and "$argon2" not in dumped
    assert by_action["api_key.create"]["after"]["name"] == "k"
    assert "cok_" not in dumped


def test_login_and_logout_are_audited(api):
    r = api.post("/api/auth/login", json={"username": "taikang", "password": "cityops-demo"})
    token = r.json()["access_token"]
    assert api.post("/api/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204
    entries = api.get("/api/audit", params={"entity_key": "taikang"}, headers=api.login("admin")).json()
    actions = [e["action"] for e in entries]
    assert actions[:2] == ["auth.logout", "auth.login"]
    assert token not in str(entries), "the audit log must never hold a token"

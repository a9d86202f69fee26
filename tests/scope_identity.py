"""Privilege rules of identity (run from tests/test_api_scope.py, on its demo store and world).

The grant rule: a role gives users only roles whose permission set is a subset of its own (within its scope);
acting as another user — an API key for them, resetting their password — is an administrator's act, audited.
"""

from __future__ import annotations

import itertools

from cityops.identity.roles import load_roles, may_grant
from tests.conftest import table_counts

ROLES = ("administrator", "district_operator", "township_operator", "village_cadre", "grid_worker", "department_staff",
         "leader", "integration")
#: Who may grant what under identity/roles.toml, written out (not computed) so a change of the catalogue or of
#: the rule shows here. The leader holds approvals (events.approve_long) no operator holds, so only the
#: administrator grants it; operators hold no sensing.catalogue below the district.
GRANTS = {
    "administrator": set(ROLES),
    "district_operator": {"district_operator", "township_operator", "village_cadre", "grid_worker", "department_staff",
                          "integration"},
    "township_operator": {"township_operator", "village_cadre", "grid_worker", "department_staff"},
    "village_cadre": {"village_cadre"},
    "grid_worker": {"grid_worker"},
    "department_staff": {"department_staff"},
    "leader": {"leader"},
    "integration": {"integration"},
}


def scope_cases(api, world) -> dict:
    return {}  # the user routes are rows of tests/test_api_scope.py; the rules are tested below


def test_grant_rule_for_every_role_pair():
    roles = load_roles()
    assert set(roles) == set(ROLES), "identity/roles.toml changed: update GRANTS"
    for granter, role in itertools.product(ROLES, ROLES):
        assert may_grant(roles[granter], roles[role]) == (role in GRANTS[granter]), f"{granter} → {role}"


def _user(api, admin, username: str, role: str, login: bool = True) -> dict | None:
    """A district-wide user of ``role`` (the administrator: everywhere); its login headers if ``login``."""
    body = {"username": username, "role": role, **({"password": f"{username}-pass"} if login else {})}
    if role != "administrator":
        body["scope_units"] = ["500154"]
    r = api.post("/api/users", headers=admin, json=body)
    assert r.status_code == 201, r.text
    return api.login(username, f"{username}-pass") if login else None


def _granters(api, prefix: str) -> dict:
    """One user per role, district-wide (the administrator everywhere): role → login headers."""
    admin = api.login("admin")
    return {role: _user(api, admin, f"{prefix}_{role}", role) for role in ROLES}


def test_grant_rule_on_user_creation_for_every_role_pair(api):
    """POST /api/users: 201 exactly when the granter's role may grant the role (and the granter manages users)."""
    granters = _granters(api, "creator")
    before, created = table_counts(api.store), 0
    for granter, role in itertools.product(ROLES, ROLES):
        manages = load_roles()[granter].allows("users.manage")
        body = {"username": f"made_{granter}_{role}", "role": role}
        if role != "administrator":
            body["scope_units"] = ["500154"]
        r = api.post("/api/users", headers=granters[granter], json=body)
        if manages and role in GRANTS[granter]:
            assert r.status_code == 201, f"{granter} → {role}: {r.text}"
            created += 1
        else:
            assert r.status_code == 403, f"{granter} → {role}: {r.status_code} {r.text}"
    # The refusals wrote nothing: only the allowed users and their audit entries were added.
    expected = {**before, "users": before["users"] + created, "audit_log": before["audit_log"] + created}
    assert table_counts(api.store) == expected


def test_grant_rule_on_role_changes_for_every_role_pair(api):
    """PATCH /api/users/{u} {role}: the new role and the user's present role must both be grantable."""
    admin, granters = api.login("admin"), _granters(api, "changer")
    for granter, role in itertools.product(ROLES, ROLES):
        if not load_roles()[granter].allows("users.manage"):
            continue  # 403 for any change (tested on creation above)
        # A user the granter may change (grid worker) given the role, and one who already has it changed.
        target = f"change_{granter}_{role}"
        _user(api, admin, target, "grid_worker", login=False)
        r = api.patch(f"/api/users/{target}", headers=granters[granter], json={"role": role})
        assert r.status_code == (200 if role in GRANTS[granter] else 403), f"{granter}: grid_worker → {role}: {r.text}"
        holder = f"holder_{granter}_{role}"
        _user(api, admin, holder, role, login=False)
        r = api.patch(f"/api/users/{holder}", headers=granters[granter], json={"display_name": "改名", "active": False})
        if role == "administrator" and granter != "administrator":
            assert r.status_code == 404, r.text  # administrators are not in a scoped manager's user list
        else:
            assert r.status_code == (200 if role in GRANTS[granter] else 403), f"{granter} changes a {role}: {r.text}"


def test_nobody_raises_their_own_role(api, world):
    admin = api.login("admin")
    own = _user(api, admin, "self_raiser", "district_operator")
    before = table_counts(api.store)
    for role in ("leader", "administrator"):
        r = api.patch("/api/users/self_raiser", headers=own, json={"role": role})
        assert r.status_code == 403, f"raised itself to {role}: {r.text}"
    # Nor widen its own scope beyond it (the outsider, scoped to 义和镇, to the district).
    r = api.patch("/api/users/yihe_ops", headers=world["headers"], json={"scope_units": ["500154"]})
    assert r.status_code == 403, r.text
    assert table_counts(api.store) == before
    assert api.get("/api/auth/me", headers=own).json()["role"] == "district_operator"
    # Lowering one's own role stays possible.
    assert api.patch("/api/users/self_raiser", headers=own, json={"role": "township_operator"}).status_code == 200


def test_acting_as_another_user_is_an_administrators_act(api):
    """API keys for another user and password resets need users.credentials (the administrator); the
    district operator may do both for itself only. Each is audited with who did it."""
    admin = api.login("admin")
    operator = _user(api, admin, "key_minter", "district_operator")
    _user(api, admin, "key_target", "grid_worker")
    before = table_counts(api.store)
    r = api.post("/api/users/key_target/api-keys", headers=operator, json={"name": "stolen"})
    assert r.status_code == 403, r.text
    r = api.patch("/api/users/key_target", headers=operator, json={"password": "taken-over-1"})
    assert r.status_code == 403, r.text
    assert table_counts(api.store) == before
    assert api.post("/api/auth/login", json={"username": "key_target", "password": "taken-over-1"}).status_code == 401
    # For itself: allowed.
    assert api.post("/api/users/key_minter/api-keys", headers=operator, json={"name": "own"}).status_code == 201
    assert api.patch("/api/users/key_minter", headers=operator, json={"password": "own-new-pass"}).status_code == 200
    # The administrator may, and the audit log says who acted as whom.
    r = api.post("/api/users/key_target/api-keys", headers=admin, json={"name": "phone"})
    assert r.status_code == 201, r.text
    assert api.get("/api/auth/me", headers={"X-API-Key": r.json()["api_key"]}).json()["username"] == "key_target"
    assert api.patch("/api/users/key_target", headers=admin, json={"password": "reset-by-admin"}).status_code == 200
    log = api.get("/api/audit", params={"entity_key": "key_target", "limit": 50}, headers=admin).json()
    actions = {(e["action"], e["actor"]) for e in log}
    assert ("api_key.create", "admin") in actions and ("user.password_reset", "admin") in actions
    key_entry = next(e for e in log if e["action"] == "api_key.create")
    assert key_entry["after"]["acts_as"] == "key_target" and key_entry["after"]["issued_by"] == "admin"
    own_log = api.get("/api/audit", params={"entity_key": "key_minter", "limit": 50}, headers=admin).json()
    assert "user.password_change" in {e["action"] for e in own_log}

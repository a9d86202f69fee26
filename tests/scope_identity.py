"""Privilege rules of identity (run from tests/test_api_scope.py, on its demo store and world).

The grant rule: a role gives users only roles whose permission set is a subset of its own (within its scope);
acting as another user — an API key for them, resetting their password — is an administrator's act, audited.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

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
    """The lockout routes (the user routes are rows of tests/test_api_scope.py): a 大德镇 user's lockout is
    neither listed nor lifted for the 义和镇 outsider; nor is a client address's."""
    from cityops.identity import throttle

    admin = api.login("admin")
    r = api.post("/api/users", headers=admin, json={"username": "dade_locked", "role": "grid_worker", "scope_units": [world["dade"]]})
    assert r.status_code == 201, r.text
    with api.store.sessions() as session:
        limits = throttle.Limits(1, 1, timedelta(minutes=10), timedelta(minutes=10))
        throttle.failed(session, limits, "dade_locked", "192.0.2.7", channel="test", reason="wrong username or password")
        session.commit()

    def nothing_foreign(r):
        assert r.status_code == 200, r.text
        assert {x["key"] for x in r.json()}.isdisjoint({"dade_locked", "192.0.2.7"}), r.text

    return {
        ("GET", "/api/auth/lockouts"): [dict(check=nothing_foreign)],
        ("DELETE", "/api/auth/lockouts/{kind}/{key}"): [dict(path={"kind": "account", "key": "dade_locked"}, check=_denied),
                                                        dict(path={"kind": "address", "key": "192.0.2.7"}, check=_denied)],
    }


def _denied(r):
    assert r.status_code in (403, 404), f"expected 403/404, got {r.status_code}: {r.text}"


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


SERVE = """
import sys, uvicorn
from cityops.app import create_app
from cityops.core.settings import Settings
data_dir, url, secret, port = sys.argv[1:5]
app = create_app(Settings(data_dir=data_dir, database_url=url, secret_key=secret, log_json=False, wiring=False),
                 run_migrations=False)
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", lifespan="off")
"""
#: Small limits for the test servers (Settings from the environment).
LIMITS = {"CITYOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT": "4", "CITYOPS_LOGIN_MAX_FAILURES_PER_ADDRESS": "8",
          "CITYOPS_LOGIN_FAILURE_WINDOW_S": "600", "CITYOPS_LOGIN_LOCKOUT_S": "600"}


def _env(settings) -> dict:
    import os

    env = {**os.environ, **LIMITS, "CITYOPS_DATA_DIR": str(settings.data_dir), "CITYOPS_SECRET_KEY": settings.secret_key,
           "CITYOPS_LOG_JSON": "false"}
    if settings.database_url:
        env["CITYOPS_DATABASE_URL"] = settings.database_url
    return env


def test_login_lockout_holds_across_server_processes(api, world):
    """Failed logins are counted per account and per client address in the database: failures spread over two
    server processes lock the account on both (even for the right password, and for HTTP Basic on /sta), are
    audited, and an operator lifts the lock (API for the account, CLI for the address)."""
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    from tests.conftest import free_port, wait_for_port

    admin = api.login("admin")
    for name in ("lock_victim", "lock_bystander"):
        _user(api, admin, name, "grid_worker", login=False)
        r = api.patch(f"/api/users/{name}", headers=admin, json={"password": f"{name}-pass"})
        assert r.status_code == 200, r.text
    settings, root = api.store.settings, Path(__file__).resolve().parents[1]
    procs, clients = [], []
    try:
        for _ in range(2):
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-c", SERVE, str(settings.data_dir), settings.database_url,
                                     settings.secret_key, str(port)], cwd=root, env=_env(settings))
            procs.append(proc)
            wait_for_port(proc, port, seconds=60)
            clients.append(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30))
        a, b = clients

        def login(http, username, password):
            return http.post("/api/auth/login", json={"username": username, "password": password})

        for http in (a, b, a, b):
            assert login(http, "lock_victim", "wrong-password").status_code == 401
        for http in (a, b):  # locked on both processes, even with the right password
            r = login(http, "lock_victim", "lock_victim-pass")
            assert r.status_code == 429, f"the 5th attempt, with the right password, answered {r.status_code}"
            assert 0 < int(r.headers["Retry-After"]) <= 600 and r.json()["error"] == "locked_out"
        assert b.get("/sta/v1.1", auth=("lock_victim", "lock_victim-pass")).status_code == 429
        log = api.get("/api/audit", params={"action": "auth.login_failed", "entity_key": "lock_victim", "limit": 50},
                      headers=admin).json()
        reasons = [e["after"]["reason"] for e in log]
        assert reasons.count("locked") == 3 and len(reasons) == 7, reasons
        assert {e["after"]["address"] for e in log} == {"127.0.0.1"} and {e["after"]["channel"] for e in log} == {"api", "sta"}
        locks = {(x["kind"], x["key"]): x for x in api.get("/api/auth/lockouts", headers=admin).json()}
        assert locks[("account", "lock_victim")]["locked_until"] and locks[("address", "127.0.0.1")]["failures"] == 4
        # The 义和镇 outsider neither sees nor lifts locks of users or addresses it does not manage.
        assert api.get("/api/auth/lockouts", headers=world["headers"]).json() == []
        assert api.delete("/api/auth/lockouts/account/lock_victim", headers=world["headers"]).status_code == 404
        assert api.delete("/api/auth/lockouts/address/127.0.0.1", headers=world["headers"]).status_code == 404
        # An operator lifts the account's lock.
        assert api.delete("/api/auth/lockouts/account/lock_victim", headers=admin).status_code == 204
        assert login(b, "lock_victim", "lock_victim-pass").status_code == 200
        # Per address: failures on other (unknown) usernames from the same address lock the address for everyone.
        for i, http in enumerate((a, b, a, b)):
            assert login(http, f"guess{i}", "wrong-password").status_code == 401
        assert login(a, "lock_bystander", "lock_bystander-pass").status_code == 429
        cli = subprocess.run([sys.executable, "-m", "cityops.cli", "users", "unlock", "--address", "127.0.0.1"], cwd=root,
                             env=_env(settings), capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert login(b, "lock_bystander", "lock_bystander-pass").status_code == 200
    finally:
        for http in clients:
            http.close()
        for proc in procs:
            proc.terminate()
            proc.wait(10)

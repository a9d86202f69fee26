"""Operations: health, readiness, metrics, the API description, the message catalogue, request ids,
the request-size limit — and the settings that drive them.

The HTTP tests run on both backends over an *empty* migrated store (none of them needs the demo
district); the settings tests need no database at all.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from cityops.app import create_app
from cityops.core.db import head_revision
from cityops.core.settings import DATABASE_FILE, DEFAULT_DATA_DIR, Settings
from tests.conftest import BACKENDS, make_store, table_counts


@pytest.fixture(scope="module", params=BACKENDS)
def ops(request, tmp_path_factory):
    """A TestClient over an empty, migrated store (one per backend)."""
    store, close = make_store(request.param, tmp_path_factory.mktemp(f"ops-{request.param}"))
    client = TestClient(create_app(store.settings, run_migrations=False))
    client.store = store
    yield client
    client.close()
    close()


def _fresh_app(store) -> TestClient:
    return TestClient(create_app(store.settings, run_migrations=False))


# --------------------------------------------------------------------------------- health, readiness

def test_health(ops):
    r = ops.get("/api/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_ready_when_schema_is_current(ops):
    r = ops.get("/api/ready")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready"
    assert r.json()["checks"] == {"database": "ok", "schema": "ok"}


def test_ready_is_503_when_the_schema_is_behind(store):
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '000000000000'"))
    with _fresh_app(store) as client:
        r = client.get("/api/ready")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "not ready"
        assert body["checks"]["database"] == "ok"
        assert "000000000000" in body["checks"]["schema"]
        assert head_revision(store.engine) in body["checks"]["schema"]
        assert "cityops init" in body["checks"]["schema"]
        # Liveness does not depend on the schema.
        assert client.get("/api/health").status_code == 200


def test_ready_is_503_when_the_schema_version_is_wiped(tmp_path):
    store, close = make_store("sqlite", tmp_path / "data")
    try:
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
        with _fresh_app(store) as client:
            r = client.get("/api/ready")
            assert r.status_code == 503, r.text
            assert r.json()["checks"]["schema"] != "ok"
    finally:
        close()


def test_ready_is_503_when_the_database_is_unreachable(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:9/none",
                        secret_key="x", log_json=False)
    with TestClient(create_app(settings, run_migrations=False)) as client:
        r = client.get("/api/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["database"].startswith("unavailable")
        assert client.get("/api/health").status_code == 200


# ------------------------------------------------------------------------------------------ metrics

def test_metrics_count_requests_by_route_template(ops):
    ops.get("/api/health")
    ops.get("/api/i18n/en")
    ops.get("/api/i18n/zh-CN")
    r = ops.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    body = r.text
    assert "cityops_http_requests_total" in body
    assert re.search(r'cityops_http_requests_total\{method="GET",route="/api/health",status="200"\} [1-9]', body)
    # Labelled by the route template, never the raw path (bounded cardinality).
    assert 'route="/api/i18n/{language}"' in body
    assert 'route="/api/i18n/en"' not in body
    assert "cityops_http_request_seconds" in body


# ------------------------------------------------------------------------------------------ API docs

def test_openapi_document(ops):
    r = ops.get("/api/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] == "CityOps"
    assert "/api/locate" in doc["paths"]
    assert "/api/auth/login" in doc["paths"]
    assert "/metrics" not in doc["paths"]


def test_docs_page_is_html(ops):
    r = ops.get("/api/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/api/openapi.json" in r.text


# --------------------------------------------------------------------------------------------- i18n

def test_message_catalogues_have_identical_keys(ops):
    zh, en = ops.get("/api/i18n/zh-CN"), ops.get("/api/i18n/en")
    assert zh.status_code == en.status_code == 200
    assert set(zh.json()) == set(en.json())
    assert len(zh.json()) > 10
    assert all(isinstance(v, str) and v for v in zh.json().values())
    assert all(isinstance(v, str) and v for v in en.json().values())
    assert zh.json() != en.json()


def test_unknown_language_is_404(ops):
    r = ops.get("/api/i18n/fr")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert "fr" in r.json()["message"]


# --------------------------------------------------------------------------------------- request ids

@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", "/api/health", {}),
    ("GET", "/api/ready", {}),
    ("GET", "/metrics", {}),
    ("GET", "/api/i18n/xx", {}),
    ("GET", "/api/no-such-route", {}),
    ("GET", "/api/auth/me", {}),
    ("POST", "/api/auth/login", {"json": {"username": "nobody", "password": "whatever-123"}}),
    ("POST", "/api/auth/login", {"json": {"username": ""}}),
])
def test_every_response_carries_a_request_id(ops, method, path, kwargs):
    r = ops.request(method, path, **kwargs)
    rid = r.headers.get("x-request-id")
    assert rid and len(rid) >= 16
    if r.status_code >= 400:
        assert r.json()["request_id"] == rid
    # A caller's own request id is kept and echoed.
    r = ops.request(method, path, headers={"X-Request-ID": "trace-abc-123"}, **kwargs)
    assert r.headers["x-request-id"] == "trace-abc-123"


def test_request_ids_differ_between_requests(ops):
    ids = {ops.get("/api/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_request_ids_are_32_hex_digits_and_unique_per_process(ops):
    ids = [ops.get("/api/health").headers["x-request-id"] for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids)


def test_a_request_does_not_consult_the_opentelemetry_providers(ops, monkeypatch):
    """The server's metrics are Prometheus; FastAPI's OpenTelemetry hooks are off, so a request does not look up the
    global tracer, meter or logger provider (FastAPI's default looked each up on every request)."""
    from opentelemetry import _logs, metrics, trace

    calls = []
    for module, name in ((trace, "get_tracer_provider"), (metrics, "get_meter_provider"), (_logs, "get_logger_provider")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda real=real, name=name: calls.append(name) or real())
    assert ops.get("/api/health").status_code == 200
    assert ops.post("/api/auth/login", json={"username": "nobody", "password": "whatever-123"}).status_code == 401
    assert calls == []


def test_a_server_process_hands_the_gil_on_at_its_setting(tmp_path):
    """A server process's threads keep the GIL at most ``gil_switch_interval_ms`` while another waits: a write
    transaction's thread back from each statement waited Python's default 5 ms, holding the embedded store's one
    writer lock all the while."""
    import sys

    before = sys.getswitchinterval()
    store, close = make_store("sqlite", tmp_path / "data", gil_switch_interval_ms=2.0)
    try:
        create_app(store.settings, run_migrations=False)
        assert sys.getswitchinterval() == pytest.approx(0.002)
        create_app(store.settings.model_copy(update={"gil_switch_interval_ms": 0.5}), run_migrations=False)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)
        close()


# ------------------------------------------------------------------------------------- request size

@pytest.fixture
def small_limit(tmp_path):
    """An app whose uploads are limited to 2 KiB, with an administrator to upload as."""
    from cityops.core import audit
    from cityops.identity import service

    store, close = make_store("sqlite", tmp_path / "data", max_upload_bytes=2048)
    with store.sessions() as session:
        service.create_user(session, audit.SYSTEM, username="admin", password="admin-pass-1", role="administrator")
        session.commit()
    client = TestClient(create_app(store.settings, run_migrations=False))
    client.store = store
    yield client
    client.close()
    close()


def test_oversized_body_is_refused_before_it_is_read(small_limit):
    before = table_counts(small_limit.store)
    big = b"x" * (2048 + 64 * 1024 + 1)
    # No credentials: the size check comes first, so the body never reaches auth, parsing or the route.
    r = small_limit.post("/api/units/import", content=big, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    assert r.headers.get("x-request-id")
    r = small_limit.post("/api/auth/login", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"
    assert table_counts(small_limit.store) == before


def test_upload_over_the_limit_is_refused_by_the_import(small_limit):
    """A multipart upload larger than max_upload_bytes but within the envelope allowance → 413 too."""
    token = small_limit.post("/api/auth/login", json={"username": "admin", "password": "admin-pass-1"}).json()["access_token"]
    before = table_counts(small_limit.store)
    payload = b'{"type": "FeatureCollection", "features": []}' + b" " * 4000
    r = small_limit.post("/api/units/import", headers={"Authorization": f"Bearer {token}"},
                         files={"file": ("units.geojson", payload, "application/geo+json")})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    assert table_counts(small_limit.store) == before


def test_small_body_passes_the_limit(small_limit):
    r = small_limit.post("/api/auth/login", json={"username": "admin", "password": "admin-pass-1"})
    assert r.status_code == 200


# ------------------------------------------------------------------------------------------ settings

@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No CITYOPS_* variables from the outside, and a neutral working directory."""
    import os

    for key in list(os.environ):
        if key.startswith("CITYOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_settings_defaults(clean_env, tmp_path):
    s = Settings()
    assert s.data_dir == DEFAULT_DATA_DIR
    assert s.log_level == "INFO"
    assert s.token_ttl_minutes == 12 * 60
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / DEFAULT_DATA_DIR / DATABASE_FILE).resolve()}"
    assert DATABASE_FILE == "cityops.gpkg"
    assert s.is_sqlite


def test_default_database_is_the_gpkg_in_the_data_dir(clean_env, tmp_path):
    s = Settings(data_dir=tmp_path / "somewhere")
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'somewhere' / 'cityops.gpkg').resolve()}"
    clean_env.setenv("CITYOPS_DATA_DIR", str(tmp_path / "elsewhere"))
    assert Settings().resolved_database_url.endswith(f"{tmp_path / 'elsewhere' / 'cityops.gpkg'}")
    assert Settings(database_url="postgresql://u@h/db").resolved_database_url == "postgresql://u@h/db"
    assert not Settings(database_url="postgresql://u@h/db").is_sqlite


def test_environment_overrides_defaults(clean_env):
    clean_env.setenv("CITYOPS_LOG_LEVEL", "debug")
    clean_env.setenv("CITYOPS_TOKEN_TTL_MINUTES", "30")
    clean_env.setenv("CITYOPS_LOG_JSON", "false")
    s = Settings()
    assert s.log_level == "DEBUG"
    assert s.token_ttl_minutes == 30
    assert s.log_json is False
    # Explicit arguments beat the environment.
    assert Settings(log_level="error").log_level == "ERROR"


def test_invalid_setting_values_are_refused(clean_env):
    from pydantic import ValidationError

    clean_env.setenv("CITYOPS_LOG_LEVEL", "chatty")
    with pytest.raises(ValidationError, match="chatty"):
        Settings()
    clean_env.delenv("CITYOPS_LOG_LEVEL")
    with pytest.raises(ValidationError):
        Settings(max_upload_bytes=10)


def test_toml_file_named_by_cityops_config(clean_env, tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('log_level = "WARNING"\ntoken_ttl_minutes = 15\nmetric_crs = "EPSG:4546"\n', encoding="utf-8")
    clean_env.setenv("CITYOPS_CONFIG", str(config))
    s = Settings()
    assert s.log_level == "WARNING"
    assert s.token_ttl_minutes == 15
    assert s.metric_crs == "EPSG:4546"
    # The environment beats the file, explicit arguments beat both.
    clean_env.setenv("CITYOPS_LOG_LEVEL", "error")
    assert Settings().log_level == "ERROR"
    assert Settings().token_ttl_minutes == 15
    assert Settings(token_ttl_minutes=60).token_ttl_minutes == 60


def test_missing_toml_file_named_by_cityops_config_raises(clean_env, tmp_path):
    missing = tmp_path / "nope.toml"
    clean_env.setenv("CITYOPS_CONFIG", str(missing))
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        Settings()


def test_cityops_toml_in_the_data_dir_from_the_environment(clean_env, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "cityops.toml").write_text("token_ttl_minutes = 42\n", encoding="utf-8")
    clean_env.setenv("CITYOPS_DATA_DIR", str(data_dir))
    assert Settings().token_ttl_minutes == 42


def test_cityops_toml_in_an_explicit_data_dir(clean_env, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "cityops.toml").write_text("token_ttl_minutes = 42\n", encoding="utf-8")
    assert Settings(data_dir=data_dir).token_ttl_minutes == 42


def test_resolved_secret_is_generated_once_and_kept(clean_env, tmp_path):
    s = Settings(data_dir=tmp_path / "d")
    secret = s.resolved_secret
    assert len(secret) >= 32
    key_file = tmp_path / "d" / "secret.key"
    assert key_file.read_text().strip() == secret
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert Settings(data_dir=tmp_path / "d").resolved_secret == secret
    assert Settings(data_dir=tmp_path / "d", secret_key="given").resolved_secret == "given"

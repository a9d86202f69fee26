"""The layer catalogue behind /ogc is held in memory by each worker and dropped by the catalogue's events on
the bus: a change made in another process (here the CLI) reaches the collection documents of a running
server, on both backends; a change made through the server itself is seen by its next request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from shapely.geometry import Point, mapping

from cityops.app import create_app
from cityops.base import service
from cityops.core import audit
from cityops.identity.scope import Scope
from cityops.identity.service import create_user
from cityops.org.models import Unit

ALL = Scope(all_units=True)


def _geojson(tmp_path, name: str, points, extra: dict | None = None):
    path = tmp_path / f"{name}.geojson"
    features = [{"type": "Feature", "properties": {"name": f"p{i}", **(extra or {})}, "geometry": mapping(Point(x, y))}
                for i, (x, y) in enumerate(points)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


def _env(store) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env.update(CITYOPS_SECRET_KEY="test-secret", PYTHONIOENCODING="utf-8", NO_COLOR="1", COLUMNS="200")
    if store.backend == "postgis":
        env["CITYOPS_DATABASE_URL"] = store.settings.database_url
    return env


def _extent(client, headers) -> list[float]:
    r = client.get("/ogc/collections/parcels", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["extent"]["spatial"]["bbox"][0]


@pytest.mark.slow
def test_a_change_made_elsewhere_reaches_the_served_collection(store, tmp_path):
    small = [(108.40, 31.20), (108.41, 31.21)]
    large = [(108.30, 31.10), (108.50, 31.30), (108.45, 31.25)]
    with store.sessions() as s:
        s.add(Unit(code="500154", name="开州区", level="district", path="/500154/"))
        create_user(s, audit.SYSTEM, username="reader", password="Reader-2026!", role="administrator")
        service.create_layer(s, audit.SYSTEM, ALL, {"key": "parcels", "title_zh": "地块", "category": "0701",
                                                    "geometry_type": "POINT"})
        s.commit()
        service.import_file(s, audit.SYSTEM, ALL, "parcels", _geojson(tmp_path, "v1", small))
        s.commit()
        service.import_file(s, audit.SYSTEM, ALL, "parcels", _geojson(tmp_path, "v2", large, {"height": 3.5}))
        s.commit()

    app = create_app(store.settings, run_migrations=False)
    app.state.ctx.bus.ensure_started()  # as in a server: the bus runs, so the worker keeps its catalogue
    try:
        with TestClient(app) as client:
            token = client.post("/api/auth/login", json={"username": "reader", "password": "Reader-2026!"}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            assert _extent(client, headers) == pytest.approx([108.30, 31.10, 108.50, 31.30])
            queryables = client.get("/ogc/collections/parcels/queryables", headers=headers).json()["properties"]
            assert "height" in queryables
            assert app.state.layer_catalogue.all(), "the read routes keep the catalogue in memory"

            # Another process rolls the layer back to version 1 (its smaller extent, its schema kept).
            r = subprocess.run([sys.executable, "-m", "cityops.cli", "layers", "rollback", "parcels", "1",
                                *(["--data-dir", str(store.settings.data_dir)] if store.backend == "sqlite" else [])],
                               capture_output=True, text=True, env=_env(store), timeout=180)
            assert r.returncode == 0, r.stderr
            deadline = time.monotonic() + 10
            while _extent(client, headers) != pytest.approx([108.40, 31.20, 108.41, 31.21]):
                assert time.monotonic() < deadline, "the server kept the catalogue of before the rollback"
                time.sleep(0.1)

            # A change through this server is seen by its very next request: access withdrawn from anonymous
            # readers the moment the layer stops being public.
            assert client.get("/ogc/collections/parcels").status_code == 401
            r = client.patch("/api/layers/parcels", headers=headers, json={"public_read": True})
            assert r.status_code == 200, r.text
            assert client.get("/ogc/collections/parcels/items").json()["numberMatched"] == 2
            r = client.patch("/api/layers/parcels", headers=headers, json={"public_read": False})
            assert r.status_code == 200, r.text
            assert client.get("/ogc/collections/parcels/items").status_code == 401
            # Deleted: an unknown collection at once.
            assert client.delete("/api/layers/parcels", headers=headers).status_code == 204
            assert client.get("/ogc/collections/parcels", headers=headers).status_code == 404
    finally:
        app.state.ctx.bus.stop()

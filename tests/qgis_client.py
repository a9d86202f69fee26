"""QGIS (PyQGIS, Debian's QGIS 3.22) as an unchanged client of /ogc, run by tests/test_qgis_client.py with the
system python3 (PyQGIS is not in the virtual environment) and QT_QPA_PLATFORM=offscreen.

    python3 tests/qgis_client.py <OGC root URL> <username> <password> <collection> <filter expression>

It stores a Basic authentication configuration in a new QGIS auth database (as a user would in Settings →
Authentication), lists the collections with QGIS's network request and that configuration, opens the collection
with the OAPIF provider, reads its features, and reads them again filtered (a feature request expression and a
subset string). It prints one JSON document with what QGIS saw.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import tempfile


def main() -> None:
    faulthandler.enable()  # a crash inside QGIS shows where it happened
    root, username, password, collection, expression = sys.argv[1:6]
    home = tempfile.mkdtemp(prefix="qgis-profile-")
    os.environ["QGIS_AUTH_DB_DIR_PATH"] = home
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import (QgsApplication, QgsAuthMethodConfig, QgsDataSourceUri, QgsFeatureRequest, QgsVectorLayer)

    app = QgsApplication([], False, home)
    app.initQgis()
    out: dict = {"qgis": app.QGIS_VERSION if hasattr(app, "QGIS_VERSION") else None}
    try:
        from qgis.core import Qgis

        out["qgis"] = Qgis.QGIS_VERSION
        auth = QgsApplication.authManager()
        auth.setMasterPassword("cityops-test-master", True)
        config = QgsAuthMethodConfig("Basic")
        config.setName("cityops")
        config.setConfig("username", username)
        config.setConfig("password", password)
        if not auth.storeAuthenticationConfig(config)[0]:
            raise SystemExit("QGIS did not store the authentication configuration")
        authcfg = config.id()

        out["collections"] = collections(root, authcfg)

        uri = QgsDataSourceUri()
        uri.setParam("url", root)
        uri.setParam("typename", collection)
        uri.setAuthConfigId(authcfg)
        layer = QgsVectorLayer(uri.uri(False), collection, "OAPIF")
        out["valid"] = layer.isValid()
        if layer.isValid():
            out["fields"] = [f.name() for f in layer.fields()]
            out["features"] = [feature_json(f) for f in layer.getFeatures()]
            out["crs"] = layer.crs().authid()
            out["filtered_request"] = [feature_json(f) for f in
                                       layer.getFeatures(QgsFeatureRequest().setFilterExpression(expression))]
            out["subset_accepted"] = layer.setSubsetString(expression)
            out["subset"] = [feature_json(f) for f in layer.getFeatures()]
        else:
            out["error"] = layer.error().summary()
        del layer
    finally:
        print(json.dumps(out, ensure_ascii=False), flush=True)
        app.exitQgis()
    # PyQGIS 3.22 can crash while the interpreter tears its wrappers down after exitQgis; everything is said.
    os._exit(0)


def collections(root: str, authcfg: str) -> list[str]:
    """The collection ids, fetched as QGIS's OGC API provider fetches them: its blocking network request with the
    authentication configuration applied (QGIS's browser item for a connection does the same in a dialog)."""
    from qgis.core import QgsBlockingNetworkRequest
    from qgis.PyQt.QtCore import QUrl
    from qgis.PyQt.QtNetwork import QNetworkRequest

    request = QgsBlockingNetworkRequest()
    request.setAuthCfg(authcfg)
    http = QNetworkRequest(QUrl(root + "/collections"))
    http.setRawHeader(b"Accept", b"application/json")
    if request.get(http) != QgsBlockingNetworkRequest.NoError:
        raise SystemExit(f"QGIS could not list the collections: {request.errorMessage()}")
    return [c["id"] for c in json.loads(bytes(request.reply().content()))["collections"]]


def feature_json(f) -> dict:
    g = f.geometry()
    return {"attributes": {name: to_json(f[name]) for name in f.fields().names()},
            "wkt": g.asWkt(12) if not g.isNull() else None}


def to_json(value):
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    try:
        from qgis.PyQt.QtCore import QVariant

        if isinstance(value, QVariant) and value.isNull():
            return None
    except ImportError:
        pass
    return str(value)


if __name__ == "__main__":
    main()

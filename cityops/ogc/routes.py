"""Routes: OGC API – Features Part 1 (Core) and Part 2 (CRS by Reference) at ``/ogc``; every layer of the
catalogue is a collection whose id is the layer key.

Access: the landing page ``/ogc``, ``/ogc/conformance`` and the API definition ``/ogc/api`` are public, so
that clients can discover the service (they hold no records). Everything under ``/ogc/collections`` needs
an authenticated principal with ``layers.read`` (``Authorization: Bearer <token>`` or ``X-API-Key``), and a
layer outside the principal's scope is an unknown collection (404).

``limit``: default 10, maximum 10000; a larger value is capped to 10000 (``numberReturned`` and the paging
links show the cap); 0, negative or non-numeric → 400. Unknown query parameters → 400 naming them. Errors are
JSON with ``code``/``description`` (the standard's example) plus the API-wide ``error``/``message``.
These routes are left out of ``/api/openapi.json`` (OpenAPI 3.1); ``/ogc/api`` is their OpenAPI 3.0 document.
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from shapely.geometry import mapping

from cityops.base import service as layers
from cityops.core.errors import CityOpsError, InvalidInput, NotFound
from cityops.core.web import DB, request_id, require
from cityops.ogc import service
from cityops.ogc.service import CRS84, CRS_URIS, MAX_LIMIT, STORAGE_CRS

router = APIRouter(prefix="/ogc", tags=["OGC API – Features"], include_in_schema=False)

GEOJSON = "application/geo+json"
JSON = "application/json"
OPENAPI_TYPE = "application/vnd.oai.openapi+json;version=3.0"
_SPEC = "http://www.opengis.net/spec/"
CONFORMANCE = [
    _SPEC + "ogcapi-features-1/1.0/conf/core",
    _SPEC + "ogcapi-features-1/1.0/conf/geojson",
    _SPEC + "ogcapi-features-1/1.0/conf/oas30",
    _SPEC + "ogcapi-features-2/1.0/conf/crs",
    _SPEC + "ogcapi-common-1/1.0/conf/core",
    _SPEC + "ogcapi-common-1/1.0/conf/landing-page",
    _SPEC + "ogcapi-common-1/1.0/conf/json",
    _SPEC + "ogcapi-common-1/1.0/conf/oas30",
    _SPEC + "ogcapi-common-2/1.0/conf/collections",
]


def _root(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/ogc"


def _error(request: Request, exc: CityOpsError) -> JSONResponse:
    status = 400 if isinstance(exc, InvalidInput) else exc.status_code
    code = {400: "InvalidParameterValue", 404: "NotFound"}.get(status, exc.code)
    return JSONResponse({"code": code, "description": exc.message, "error": exc.code, "message": exc.message,
                         "request_id": request_id(request)}, status_code=status)


def _link(href: str, rel: str, type_: str = JSON, title: str | None = None) -> dict:
    link = {"href": href, "rel": rel, "type": type_}
    if title:
        link["title"] = title
    return link


@router.get("")
def landing(request: Request) -> JSONResponse:
    root = _root(request)
    return JSONResponse({
        "title": "CityOps OGC API – Features",
        "description": "城市运行和治理中心 数字底座图层 — the digital base layer catalogue as OGC API – Features "
                       "(Part 1 Core, Part 2 CRS). Collections need 'Authorization: Bearer <token>' or 'X-API-Key'.",
        "links": [
            _link(root, "self", title="this document"),
            _link(f"{root}/api", "service-desc", OPENAPI_TYPE, "the API definition (OpenAPI 3.0)"),
            _link(f"{root}/conformance", "conformance", title="conformance classes"),
            _link(f"{root}/conformance", "http://www.opengis.net/def/rel/ogc/1.0/conformance", title="conformance classes"),
            _link(f"{root}/collections", "data", title="collections"),
            _link(f"{root}/collections", "http://www.opengis.net/def/rel/ogc/1.0/data", title="collections"),
        ],
    })


@router.get("/conformance")
def conformance() -> JSONResponse:
    return JSONResponse({"conformsTo": CONFORMANCE})


@router.get("/api")
def api_definition(request: Request) -> JSONResponse:
    return JSONResponse(_openapi(_root(request)), media_type=OPENAPI_TYPE)


def _collection(layer, root: str) -> dict:
    base = f"{root}/collections/{layer.key}"
    out = {
        "id": layer.key,
        "title": layer.title_zh,
        "description": layer.description_zh or layer.description_en or layer.title_en or layer.title_zh,
        "links": [
            _link(base, "self", title="this collection"),
            _link(f"{base}/items", "items", GEOJSON, "features"),
        ],
        "extent": {"temporal": {"interval": [[None, None]]}},
        "itemType": "feature",
        "crs": CRS_URIS,
        "storageCrs": STORAGE_CRS,
    }
    if layer.bounds:
        out["extent"]["spatial"] = {"bbox": [[float(v) for v in layer.bounds]], "crs": CRS84}
    return out


@router.get("/collections")
def collections(request: Request, session: DB, principal=Depends(require("layers.read"))) -> JSONResponse:
    try:
        service.check_params(request.query_params, ("f",), request.query_params.multi_items())
    except CityOpsError as exc:
        return _error(request, exc)
    root = _root(request)
    return JSONResponse({
        "links": [_link(f"{root}/collections", "self", title="collections")],
        "crs": CRS_URIS,
        "collections": [_collection(layer, root) for layer in layers.list_layers(session, principal.scope)],
    })


@router.get("/collections/{collection_id}")
def collection(collection_id: str, request: Request, session: DB, principal=Depends(require("layers.read"))) -> JSONResponse:
    try:
        service.check_params(request.query_params, ("f",), request.query_params.multi_items())
        layer = layers.get_layer(session, collection_id, principal.scope)
    except CityOpsError as exc:
        return _error(request, exc)
    return JSONResponse(_collection(layer, _root(request)))


def _feature(fid: str, props: dict, geom, base: str | None = None) -> dict:
    out = {"type": "Feature", "id": fid, "geometry": mapping(geom) if geom is not None else None, "properties": props}
    if base is not None:
        out["links"] = [_link(f"{base}/items/{fid}", "self", GEOJSON), _link(base, "collection", title="the collection")]
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@router.get("/collections/{collection_id}/items")
def items(collection_id: str, request: Request, session: DB, principal=Depends(require("layers.read"))) -> JSONResponse:
    params = request.query_params
    try:
        service.check_params(params, service.ITEMS_PARAMS, params.multi_items())
        layer = layers.get_layer(session, collection_id, principal.scope)
        limit = service.parse_limit(params.get("limit"))
        offset = service.parse_offset(params.get("offset"))
        out_crs = service.served_crs(params.get("crs"), "crs")
        area = service.parse_bbox(params.get("bbox"), service.served_crs(params.get("bbox-crs"), "bbox-crs"))
        service.check_datetime(params.get("datetime"))
        page = service.items(session, layer, area=area, limit=limit, offset=offset)
        geoms = service.to_output(page.geometries, out_crs)
    except CityOpsError as exc:
        return _error(request, exc)
    base = f"{_root(request)}/collections/{layer.key}"
    kept = [(k, v) for k, v in params.multi_items() if k not in ("limit", "offset")]

    def page_url(start: int) -> str:
        return f"{base}/items?" + urlencode(kept + [("limit", str(limit)), ("offset", str(start))])

    links = [_link(page_url(offset), "self", GEOJSON, "this page"), _link(base, "collection", title="the collection")]
    if offset + len(page.fids) < page.number_matched:
        links.append(_link(page_url(offset + limit), "next", GEOJSON, "next page"))
    if offset > 0:
        links.append(_link(page_url(max(0, offset - limit)), "prev", GEOJSON, "previous page"))
    body = {
        "type": "FeatureCollection",
        "features": [_feature(f, p, g) for f, p, g in zip(page.fids, page.properties, geoms)],
        "numberMatched": page.number_matched,
        "numberReturned": len(page.fids),
        "timeStamp": _now(),
        "links": links,
    }
    return JSONResponse(body, media_type=GEOJSON, headers={"Content-Crs": f"<{out_crs.uri}>"})


@router.get("/collections/{collection_id}/items/{feature_id}")
def item(collection_id: str, feature_id: str, request: Request, session: DB,
         principal=Depends(require("layers.read"))) -> JSONResponse:
    params = request.query_params
    try:
        service.check_params(params, service.ITEM_PARAMS, params.multi_items())
        layer = layers.get_layer(session, collection_id, principal.scope)
        out_crs = service.served_crs(params.get("crs"), "crs")
        found = service.feature(session, layer, feature_id)
        if found is None:
            raise NotFound(f"feature {feature_id!r} not found in collection {collection_id!r}")
    except CityOpsError as exc:
        return _error(request, exc)
    fid, props, geom = found
    geom = service.to_output([geom], out_crs)[0] if geom is not None else None
    body = _feature(fid, props, geom, f"{_root(request)}/collections/{layer.key}")
    return JSONResponse(body, media_type=GEOJSON, headers={"Content-Crs": f"<{out_crs.uri}>"})


# --------------------------------------------------------------------------------------------------
# OpenAPI 3.0 definition (service-desc)
# --------------------------------------------------------------------------------------------------

def _param(name: str, description: str, schema: dict, location: str = "query", required: bool = False, **extra) -> dict:
    return {"name": name, "in": location, "description": description, "required": required, "schema": schema, **extra}


def _openapi(root: str) -> dict:
    error = {"description": "error", "content": {JSON: {"schema": {"$ref": "#/components/schemas/exception"}}}}
    crs_schema = {"type": "string", "format": "uri", "enum": CRS_URIS, "default": CRS84}
    collection_id = _param("collectionId", "a layer key", {"type": "string"}, "path", True)
    fmt = _param("f", "response format (GeoJSON only)", {"type": "string", "enum": ["json", "geojson"]})
    crs = _param("crs", "CRS of the response geometries, in the authority's axis order: EPSG:4326 and 4490 are "
                   "latitude, longitude; EPSG:4545 is northing, easting", crs_schema)
    secured = [{"bearer": []}, {"apiKey": []}]

    def op(op_id: str, summary: str, params: list, media: str = JSON, secure: bool = True, extra: dict | None = None) -> dict:
        out = {"operationId": op_id, "summary": summary, "parameters": params,
               "responses": {"200": {"description": "success", "content": {media: {"schema": {"type": "object"}}}},
                             "400": error, **(extra or {})}}
        if secure:
            out["security"] = secured
            out["responses"].update({"401": error, "404": error})
        return out

    return {
        "openapi": "3.0.3",
        "info": {"title": "CityOps OGC API – Features", "version": "1.0.0",
                 "description": "Layers of the digital base as OGC API – Features Part 1 and Part 2. limit is capped "
                                f"at {MAX_LIMIT}; unknown query parameters are rejected (400)."},
        "servers": [{"url": root}],
        "paths": {
            "/": {"get": op("getLandingPage", "landing page", [fmt], secure=False)},
            "/conformance": {"get": op("getConformance", "conformance classes", [fmt], secure=False)},
            "/api": {"get": op("getApi", "this document", [fmt], OPENAPI_TYPE, secure=False)},
            "/collections": {"get": op("getCollections", "the layers visible to the caller", [fmt])},
            "/collections/{collectionId}": {"get": op("describeCollection", "one layer", [collection_id, fmt])},
            "/collections/{collectionId}/items": {"get": op("getFeatures", "features of a layer", [
                collection_id,
                _param("limit", f"page size; values above {MAX_LIMIT} are capped to {MAX_LIMIT}",
                       {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 10}, style="form", explode=False),
                _param("offset", "number of matching features to skip", {"type": "integer", "minimum": 0, "default": 0}),
                _param("bbox", "lower and upper corner (4 or 6 numbers) in bbox-crs axis order; features intersecting it",
                       {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
                       style="form", explode=False),
                _param("bbox-crs", "CRS of bbox, in its axis order (EPSG:4326/4490: latitude first; 4545: northing first)",
                       crs_schema),
                crs,
                _param("datetime", "RFC 3339 instant or interval; layers carry no time, so every feature matches",
                       {"type": "string"}, style="form", explode=False),
                fmt,
            ], GEOJSON)},
            "/collections/{collectionId}/items/{featureId}": {"get": op("getFeature", "one feature", [
                collection_id, _param("featureId", "feature id", {"type": "string"}, "path", True), crs, fmt,
            ], GEOJSON)},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {"exception": {"type": "object", "required": ["code"],
                                      "properties": {"code": {"type": "string"}, "description": {"type": "string"}}}},
        },
    }

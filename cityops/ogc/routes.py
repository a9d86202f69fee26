"""Routes: OGC API – Features Part 1 (Core), Part 2 (CRS by Reference), Part 3 (Filtering, CQL2 text and
JSON) and Part 4 (Create, Replace, Update, Delete) at ``/ogc``; every layer of the catalogue is a collection
whose id is the layer key, and the buildings registry is the read-only collection ``buildings``
(``cityops.housing.collection``: no personal data; ``housing.read``, in the reader's scope).

Access: the landing page ``/ogc``, ``/ogc/conformance`` and the API definition ``/ogc/api`` are public, so
that clients can discover the service (they hold no records). Layers marked public-read (open data) are
served to anyone; every other collection needs a principal with ``layers.read`` (``Authorization: Bearer
<token>``, ``X-API-Key``, or HTTP Basic with a password or an API key as the password — what QGIS 3.22 can
send), and a layer outside the principal's scope is an unknown collection (404; 401 without credentials).

``limit``: default 10, maximum 10000 (declared in ``/ogc/api``); anything else → 400. Paging links are keyset
(``cursor=a<id>``/``b<id>``), never deep OFFSET. Unknown query parameters → 400 naming them. Edits need
``ogc.edit`` and an editable layer; ``OPTIONS`` answers ``Allow`` for the caller (what QGIS reads). Errors are
JSON with ``code``/``description`` (the standard's example) plus the API-wide ``error``/``message``.
These routes are left out of ``/api/openapi.json`` (OpenAPI 3.1); ``/ogc/api`` is their OpenAPI 3.0 document.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import urlencode

import numpy as np
import orjson
import shapely
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from cityops.base import service as layers
from cityops.base.catalogue import LayerCatalogue
from cityops.base.models import Layer
from cityops.core.errors import CityOpsError, InvalidInput, NotFound, PayloadTooLarge, Unauthenticated
from cityops.core.params import INT64_MAX, INT64_MIN
from cityops.core.db import read_sessionmaker
from cityops.core.storage import storage_of
from cityops.core.web import DB, ReadDB, add_plain_route, interface_principal, loads_json, per_app, request_id
from cityops.housing.collection import KEY as BUILDINGS, BuildingsCollection
from cityops.ogc import edit, filtering, service
from cityops.ogc.service import CRS84, MAX_LIMIT, STORAGE_CRS

#: Largest feature body accepted by POST/PUT/PATCH (bytes).
MAX_FEATURE_BYTES = 5 * 1024 * 1024
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
#: OGC API – Tiles relations: the tile sets are served by cityops.tiles under the same /ogc root.
TILESETS_REL = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
TILING_SCHEMES_REL = "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"
SCHEMA_JSON = "application/schema+json"

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
    # Part 3: QGIS filters on the server once filter, features-filter, cql2-text and basic-cql2 are declared.
    _SPEC + "ogcapi-features-3/1.0/conf/queryables",
    _SPEC + "ogcapi-features-3/1.0/conf/queryables-query-parameters",
    _SPEC + "ogcapi-features-3/1.0/conf/filter",
    _SPEC + "ogcapi-features-3/1.0/conf/features-filter",
    _SPEC + "cql2/1.0/conf/cql2-text",
    _SPEC + "cql2/1.0/conf/cql2-json",
    _SPEC + "cql2/1.0/conf/basic-cql2",
    _SPEC + "cql2/1.0/conf/advanced-comparison-operators",
    _SPEC + "cql2/1.0/conf/case-insensitive-comparison",
    _SPEC + "cql2/1.0/conf/basic-spatial-functions",
    _SPEC + "cql2/1.0/conf/basic-spatial-functions-plus",
    _SPEC + "cql2/1.0/conf/spatial-functions",
    _SPEC + "cql2/1.0/conf/temporal-functions",  # only while a temporal queryable exists (conformance())
    # Part 4 (draft OGC 20-002)
    _SPEC + "ogcapi-features-4/1.0/conf/create-replace-delete",
    _SPEC + "ogcapi-features-4/1.0/conf/update",
    _SPEC + "ogcapi-features-4/1.0/conf/features",
    _SPEC + "ogcapi-common-1/1.0/conf/core",
    _SPEC + "ogcapi-common-1/1.0/conf/landing-page",
    _SPEC + "ogcapi-common-1/1.0/conf/json",
    _SPEC + "ogcapi-common-1/1.0/conf/oas30",
    _SPEC + "ogcapi-common-2/1.0/conf/collections",
]


def _metric(request: Request) -> str:
    return request.app.state.ctx.settings.metric_crs


def _crs_uris(request: Request) -> list[str]:
    return service.crs_uris(_metric(request))


def _root(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/ogc"


#: The caller: a principal (token, API key or HTTP Basic), or None without credentials (public-read layers only).
Reader = Depends(interface_principal("ogc", optional=True))
Editor = Depends(interface_principal("ogc"))


def _scope(principal):
    """What the caller reads: its scope (it must hold ``layers.read``), or the public-read layers alone."""
    if principal is None:
        return layers.PUBLIC
    principal.require("layers.read")
    return principal.scope


def _buildings(principal):
    """The buildings registry as a collection, for a reader holding ``housing.read`` (else None)."""
    if principal is None or not principal.role.allows("housing.read"):
        return None
    return BuildingsCollection(_scope(principal))


def _catalogue(request: Request) -> LayerCatalogue | None:
    """The worker's layer catalogue in memory, when the bus tells this worker of every change (a wired server:
    ``layer.version_created`` and ``layer.changed`` reach every worker); else None, and each request reads the
    layer's row. Only the read routes use it: edits read and change the row in their own transaction."""
    ctx = request.app.state.ctx
    if ctx.bus is None or not ctx.bus.started:
        return None
    return per_app(request.app.state, "layer_catalogue", lambda c: LayerCatalogue(read_sessionmaker(c.engine)))


def _visible(session, principal, catalogue: LayerCatalogue | None = None) -> list:
    """The collections the caller reads: the layers its scope sees and the public ones, then the buildings."""
    scope = _scope(principal)
    found = catalogue.visible(scope) if catalogue is not None else layers.list_layers(session, scope)
    found = [layer for layer in found if layer.key != BUILDINGS]
    buildings = _buildings(principal)
    return found + ([buildings] if buildings is not None else [])


def _readable(session, key: str, principal, catalogue: LayerCatalogue | None = None):
    """The collection ``key`` if the caller may read it; without credentials a non-public one is 401."""
    if key == BUILDINGS and (buildings := _buildings(principal)) is not None:
        return buildings
    try:
        scope = _scope(principal)
        return catalogue.get(key, scope) if catalogue is not None else layers.get_layer(session, key, scope)
    except NotFound:
        if principal is None:
            raise Unauthenticated(f"collection {key!r} needs credentials (Bearer token, X-API-Key or HTTP Basic), "
                                  "or does not exist") from None
        raise


def _error(request: Request, exc: CityOpsError, headers: dict | None = None) -> JSONResponse:
    status = 400 if isinstance(exc, InvalidInput) else exc.status_code
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer, Basic realm="CityOps", charset="UTF-8"'}
    code = {400: "InvalidParameterValue", 404: "NotFound"}.get(status, exc.code)
    body = {"code": code, "description": exc.message, "error": exc.code, "message": exc.message,
            "request_id": request_id(request)}
    if exc.details is not None:
        body["details"] = exc.details
    return JSONResponse(body, status_code=status, headers=headers)


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
                       "(Part 1 Core, Part 2 CRS, Part 3 CQL2 filtering, Part 4 editing). Public-read layers are open; the others need 'Authorization: Bearer <token>', 'X-API-Key' or HTTP Basic.",
        "links": [
            _link(root, "self", title="this document"),
            _link(f"{root}/api", "service-desc", OPENAPI_TYPE, "the API definition (OpenAPI 3.0)"),
            _link(f"{root}/conformance", "conformance", title="conformance classes"),
            _link(f"{root}/conformance", "http://www.opengis.net/def/rel/ogc/1.0/conformance", title="conformance classes"),
            _link(f"{root}/collections", "data", title="collections"),
            _link(f"{root}/collections", "http://www.opengis.net/def/rel/ogc/1.0/data", title="collections"),
            _link(f"{root}/tiles", TILESETS_REL, title="vector tile sets (the base map)"),
            _link(f"{root}/tileMatrixSets", TILING_SCHEMES_REL, title="tiling schemes"),
        ],
    })


TEMPORAL = _SPEC + "cql2/1.0/conf/temporal-functions"


@router.get("/conformance")
def conformance(request: Request, session: ReadDB) -> JSONResponse:
    """Temporal functions are declared only while some collection has a temporal queryable: a client that sees
    the class offers temporal filters, which no collection without one could answer."""
    catalogue = _catalogue(request)
    schemas = [layer.attribute_schema for layer in catalogue.all()] if catalogue is not None else \
        session.scalars(select(Layer.attribute_schema))
    temporal = any(filtering.has_temporal(schema) for schema in schemas)
    return JSONResponse({"conformsTo": [c for c in CONFORMANCE if temporal or c != TEMPORAL]})


@router.get("/api")
def api_definition(request: Request, session: ReadDB, principal=Reader) -> JSONResponse:
    """Public; it also lists, per collection the caller sees (public-read ones without credentials), its
    queryables as query parameters (clients such as GDAL read them there)."""
    if principal is not None and not principal.role.allows("layers.read"):
        visible = []
    else:
        visible = _visible(session, principal, _catalogue(request))
    return JSONResponse(_openapi(_root(request), _crs_uris(request), visible), media_type=OPENAPI_TYPE)


def _collection(layer, root: str, crs_uris: list[str]) -> dict:
    base = f"{root}/collections/{layer.key}"
    out = {
        "id": layer.key,
        "title": layer.title_zh,
        "description": layer.description_zh or layer.description_en or layer.title_en or layer.title_zh,
        "links": [
            _link(base, "self", title="this collection"),
            _link(f"{base}/items", "items", GEOJSON, "features"),
            _link(f"{base}/queryables", QUERYABLES_REL, SCHEMA_JSON, "queryables (CQL2 filter properties)"),
        ],
        "extent": {"temporal": {"interval": [[None, None]]}},
        "itemType": "feature",
        "crs": crs_uris,
        "storageCrs": STORAGE_CRS,
    }
    if not isinstance(layer, BuildingsCollection):  # buildings are drawn in the base map's tiles
        out["links"].append(_link(f"{base}/tiles", TILESETS_REL, title="vector tile sets of this collection"))
    if layer.bounds:
        out["extent"]["spatial"] = {"bbox": [[float(v) for v in layer.bounds]], "crs": CRS84}
    return out


@router.get("/collections")
def collections(request: Request, session: ReadDB, principal=Reader) -> JSONResponse:
    try:
        service.check_params(request.query_params, ("f",), request.query_params.multi_items())
        visible = _visible(session, principal, _catalogue(request))
    except CityOpsError as exc:
        return _error(request, exc)
    root = _root(request)
    return JSONResponse({
        "links": [_link(f"{root}/collections", "self", title="collections")],
        "crs": _crs_uris(request),
        "collections": [_collection(layer, root, _crs_uris(request)) for layer in visible],
    })


@router.get("/collections/{collection_id}")
def collection(collection_id: str, request: Request, session: ReadDB, principal=Reader) -> JSONResponse:
    try:
        service.check_params(request.query_params, ("f",), request.query_params.multi_items())
        layer = _readable(session, collection_id, principal, _catalogue(request))
    except CityOpsError as exc:
        return _error(request, exc)
    return JSONResponse(_collection(layer, _root(request), _crs_uris(request)))


@router.get("/collections/{collection_id}/queryables")
def queryables(collection_id: str, request: Request, session: ReadDB, principal=Reader) -> JSONResponse:
    try:
        service.check_params(request.query_params, ("f",), request.query_params.multi_items())
        layer = _readable(session, collection_id, principal, _catalogue(request))
    except CityOpsError as exc:
        return _error(request, exc)
    url = f"{_root(request)}/collections/{layer.key}/queryables"
    return JSONResponse(filtering.queryables(layer, url), media_type=SCHEMA_JSON)


def _geojson(geoms) -> list:
    """Geometries as ready GeoJSON fragments, written by GEOS in one vectorised call (full precision)."""
    return [None if g is None else orjson.Fragment(g) for g in shapely.to_geojson(np.asarray(geoms, dtype=object))]


class GeoJSONResponse(Response):
    """orjson, so that the pre-written geometry fragments are embedded as they are."""

    media_type = "application/geo+json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def _feature(fid: str, props: dict, geom, base: str | None = None) -> dict:
    out = {"type": "Feature", "id": fid, "geometry": geom, "properties": props}
    if base is not None:
        out["links"] = [_link(f"{base}/items/{fid}", "self", GEOJSON), _link(base, "collection", title="the collection")]
    return out


def _stored_json(text: str):
    """Stored properties as a ready JSON fragment. Python's json writes non-finite numbers as NaN/Infinity,
    which are not JSON: such text is parsed and written again (orjson makes them null, as before)."""
    if "NaN" in text or "Infinity" in text:
        return json.loads(text)
    return orjson.Fragment(text)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


#: The reader of ``items``, resolved by the route itself (``Reader`` as a plain call).
_read_principal = interface_principal("ogc", optional=True)


ITEMS_PATH = "/ogc/collections/{collection_id}/items"


async def items(request: Request) -> Response:
    """The hot path of the interface (a client panning a map asks for page after page): a plain Starlette route
    that the application tries before any other (``install_items``): no route list to walk, no dependencies for
    FastAPI to solve, and one hand-off to a worker thread, in which the database work lives and ends (the
    principal comes from the token cache on the event loop, as ``Reader`` does). Matching through the included
    routers, dependency solving and the session's own exit hand-off were a third of a bbox page's time on the
    event loop."""
    principal = await _read_principal(request, request.app.state.ctx)
    return await run_in_threadpool(_items, request.path_params["collection_id"], request, principal)


def install_items(app) -> None:
    """Register ``GET /ogc/collections/{id}/items`` ahead of every router (called before they are included). Its
    other methods (POST, OPTIONS) stay on ``router``: Starlette prefers their full match to this partial one."""
    add_plain_route(app, ITEMS_PATH, items, methods=["GET"])


def _items(collection_id: str, request: Request, principal) -> Response:
    sessions = read_sessionmaker(request.app.state.ctx.engine)
    catalogue = _catalogue(request)
    if catalogue is not None:
        # The layer from memory and the page on a bare connection: no session, no transaction to begin and end
        # (each statement reads its own snapshot, as the read sessions on PostgreSQL do).
        try:
            layer = _readable(None, collection_id, principal, catalogue)
        except CityOpsError as exc:
            return _error(request, exc)
        with sessions.kw["bind"].connect() as conn:
            page = _bbox_page(request, conn, layer)
        if page is not None:
            return page
    with sessions() as session:
        try:
            layer = _readable(session, collection_id, principal, catalogue)
        except CityOpsError as exc:
            return _error(request, exc)
        page = _bbox_page(request, session.connection(), layer) if catalogue is None else None
        return page if page is not None else _items_page(request, session, layer)


#: The parameters of a page that ``_bbox_page`` answers itself; anything else goes the general way.
_BBOX_PAGE_PARAMS = frozenset(("bbox", "bbox-crs", "crs", "limit", "offset", "cursor", "f", "datetime"))


def _bbox_page(request: Request, conn, layer) -> Response | None:
    """A bbox page of a layer's own table, written as bytes (``service.bbox_page``): the features come ready as
    GeoJSON and are joined as they are, nothing is decoded or encoded again per feature. None when the request
    needs the general path: a filter, a queryable as a parameter, or something to refuse (the general path
    answers it with its 400, checks in the same order)."""
    params = request.query_params
    multi = params.multi_items()
    if params.get("bbox") is None or len(multi) != len(params) or any(k not in _BBOX_PAGE_PARAMS for k, _ in multi):
        return None
    metric = _metric(request)
    try:
        limit = service.parse_limit(params.get("limit"))
        offset = service.parse_offset(params.get("offset"))
        cursor = service.parse_cursor(params.get("cursor"))
        out_crs = service.served_crs(params.get("crs"), "crs", metric)
        bbox_crs = service.served_crs(params.get("bbox-crs"), "bbox-crs", metric)
        area = service.parse_bbox(params["bbox"], bbox_crs)
        service.check_datetime(params.get("datetime"))
    except CityOpsError:
        return None
    if (cursor is not None and offset) or params.get("f", "json") not in service.FORMATS:
        return None
    # A box in a geographic CRS is the rectangle of its bounds in lon/lat (parse_bbox): no need to test it.
    page = service.bbox_page(conn, layer, area=area, limit=limit, offset=offset, cursor=cursor, out_crs=out_crs,
                             rectangle=True if bbox_crs.geographic else None)
    if page is None:
        return None
    links = _page_links(request, layer, params, limit, offset, cursor, page.ids, page.more_after, page.more_before)
    tail = orjson.dumps({"numberMatched": page.number_matched, "numberReturned": len(page.ids),
                         "timeStamp": _now(), "links": links})
    body = b'{"type":"FeatureCollection","features":[' + b",".join(page.features) + b"]," + tail[1:]
    return Response(body, media_type=GEOJSON, headers={"Content-Crs": f"<{out_crs.uri}>"})


def _page_links(request: Request, layer, params, limit: int, offset: int, cursor, ids: list[int], more_after: bool,
                more_before: bool) -> list[dict]:
    base = f"{_root(request)}/collections/{layer.key}"
    kept = [(k, v) for k, v in params.multi_items() if k not in ("limit", "offset", "cursor")]

    def page_url(extra: list[tuple[str, str]]) -> str:
        return f"{base}/items?" + urlencode(kept + [("limit", str(limit))] + extra)

    here = [("cursor", params["cursor"])] if cursor else ([("offset", str(offset))] if offset else [])
    links = [_link(page_url(here), "self", GEOJSON, "this page"), _link(base, "collection", title="the collection")]
    if ids and more_after:
        links.append(_link(page_url([("cursor", f"a{ids[-1]}")]), "next", GEOJSON, "next page"))
    if ids and more_before:
        links.append(_link(page_url([("cursor", f"b{ids[0]}")]), "prev", GEOJSON, "previous page"))
    elif not ids and offset > 0:
        links.append(_link(page_url([("offset", str(max(0, offset - limit)))]), "prev", GEOJSON, "previous page"))
    return links


def _items_page(request: Request, session, layer) -> Response:
    params = request.query_params
    metric = _metric(request)
    try:
        by_value = filtering.query_parameter_names(layer, service.ITEMS_PARAMS)
        service.check_params(params, service.ITEMS_PARAMS + by_value, params.multi_items())
        limit = service.parse_limit(params.get("limit"))
        offset = service.parse_offset(params.get("offset"))
        cursor = service.parse_cursor(params.get("cursor"))
        if cursor is not None and offset:
            raise service.BadRequest("cursor and offset cannot be combined; follow the next/prev links")
        out_crs = service.served_crs(params.get("crs"), "crs", metric)
        area = service.parse_bbox(params.get("bbox"), service.served_crs(params.get("bbox-crs"), "bbox-crs", metric))
        service.check_datetime(params.get("datetime"))
        compiled = None
        tree = filtering.parse(params["filter"], params.get("filter-lang")) if params.get("filter") is not None else None
        if tree is None and (params.get("filter-lang") is not None or params.get("filter-crs") is not None):
            raise service.BadRequest("filter-lang and filter-crs need a filter")
        equal = filtering.equality_filter(layer, params, by_value)
        if equal is not None:
            tree = equal if tree is None else {"op": "and", "args": [tree, equal]}
        if tree is not None:
            storage = storage_of(session)
            compiled = filtering.compile_filter(tree, layer, service.source(layer, storage).table, storage,
                                                service.served_crs(params.get("filter-crs"), "filter-crs", metric))
        page = service.items(session, layer, area=area, limit=limit, offset=offset, cursor=cursor, compiled=compiled,
                             geojson=out_crs.key == "OGC:CRS84")
        if page.geojson is not None:
            geoms = [None if g is None else orjson.Fragment(g) for g in page.geojson]
        else:
            geoms = _geojson(service.to_output(page.geometries, out_crs))
    except CityOpsError as exc:
        return _error(request, exc)
    links = _page_links(request, layer, params, limit, offset, cursor, page.ids, page.more_after, page.more_before)
    body = {
        "type": "FeatureCollection",
        # Properties are the stored JSON text, written as they are (no decode and re-encode per feature).
        "features": [_feature(f, _stored_json(p), g) for f, p, g in zip(page.fids, page.properties, geoms)],
        "numberMatched": page.number_matched,
        "numberReturned": len(page.fids),
        "timeStamp": _now(),
        "links": links,
    }
    return GeoJSONResponse(body, headers={"Content-Crs": f"<{out_crs.uri}>"})


@router.get("/collections/{collection_id}/items/{feature_id}")
def item(collection_id: str, feature_id: str, request: Request, session: ReadDB,
         principal=Reader) -> JSONResponse:
    params = request.query_params
    try:
        service.check_params(params, service.ITEM_PARAMS, params.multi_items())
        layer = _readable(session, collection_id, principal, _catalogue(request))
        out_crs = service.served_crs(params.get("crs"), "crs", _metric(request))
        found = service.feature(session, layer, feature_id)
        if found is None:
            raise NotFound(f"feature {feature_id!r} not found in collection {collection_id!r}")
    except CityOpsError as exc:
        return _error(request, exc)
    geom = _geojson(service.to_output([found.geom], out_crs))[0] if found.geom is not None else None
    body = _feature(found.fid, found.properties, geom, f"{_root(request)}/collections/{layer.key}")
    return GeoJSONResponse(body, headers={"Content-Crs": f"<{out_crs.uri}>", "ETag": found.etag})


# --------------------------------------------------------------------------------------------------
# Part 4: create, replace, update, delete
# --------------------------------------------------------------------------------------------------

def _allowed(layer, principal, item: bool) -> list[str]:
    methods = ["GET", "HEAD", "OPTIONS"]
    if principal is not None and edit.may_edit(layer, principal.scope, principal.role.allows("ogc.edit")):
        methods += ["PUT", "PATCH", "DELETE"] if item else ["POST"]
    return methods


def _locator(request: Request):
    return request.app.state.ctx.locator.get()


def _body(request: Request, raw: bytes):
    if len(raw) > MAX_FEATURE_BYTES:
        raise PayloadTooLarge(f"the feature body of {len(raw)} bytes exceeds the {MAX_FEATURE_BYTES} byte limit")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/geo+json", "application/json", "application/merge-patch+json", ""):
        raise InvalidInput(f"Content-Type {ctype!r} is not accepted; send application/geo+json")
    return loads_json(raw)


def _editing(request: Request, session, principal, collection_id: str, item: bool):
    """The layer, its Allow list, and the Content-Crs of the body, or raise (before anything changes)."""
    layer = _readable(session, collection_id, principal)
    allow = _allowed(layer, principal, item)
    if not layer.editable:
        raise edit.NotEditable(f"collection {layer.key!r} is read-only (not an editable layer)")
    principal.require("ogc.edit")
    if request.query_params:
        service.check_params(request.query_params, (), request.query_params.multi_items())
    raw = request.headers.get("content-crs")
    crs = service.served_crs(raw.strip().strip("<>") if raw else None, "Content-Crs", _metric(request))
    return layer, allow, crs


def _edit_error(request: Request, exc: CityOpsError, session, principal, collection_id: str, item: bool):
    headers = None
    if exc.status_code == 405:
        try:
            headers = {"Allow": ", ".join(_allowed(_readable(session, collection_id, principal),
                                                   principal, item))}
        except CityOpsError:
            pass
    return _error(request, exc, headers)


@router.options("/collections/{collection_id}/items")
def items_options(collection_id: str, request: Request, session: DB, principal=Reader) -> Response:
    try:
        layer = _readable(session, collection_id, principal)
    except CityOpsError as exc:
        return _error(request, exc)
    return Response(status_code=204, headers={"Allow": ", ".join(_allowed(layer, principal, False))})


@router.options("/collections/{collection_id}/items/{feature_id}")
def item_options(collection_id: str, feature_id: str, request: Request, session: DB,
                 principal=Reader) -> Response:
    # QGIS asks with the literal id "unknown_id" when the collection is empty: answer for the collection.
    try:
        layer = _readable(session, collection_id, principal)
    except CityOpsError as exc:
        return _error(request, exc)
    return Response(status_code=204, headers={"Allow": ", ".join(_allowed(layer, principal, True))})


@router.post("/collections/{collection_id}/items")
async def create_item(collection_id: str, request: Request, session: DB,
                      principal=Editor) -> Response:
    # The body is read here; the database work runs in a worker thread, never on the event loop.
    return await run_in_threadpool(_create, collection_id, request, session, principal, await request.body())


def _create(collection_id: str, request: Request, session, principal, raw: bytes) -> Response:
    try:
        principal.require("layers.read")
        layer, _, crs = _editing(request, session, principal, collection_id, False)
        body = _body(request, raw)
        created = edit.create(session, principal.actor(request_id(request)), principal.scope, layer, body, crs,
                              _locator(request))
        session.commit()
    except CityOpsError as exc:
        session.rollback()
        return _edit_error(request, exc, session, principal, collection_id, False)
    location = f"{_root(request)}/collections/{collection_id}/items/{created.fid}"
    return Response(status_code=201, headers={"Location": location, "ETag": created.etag})


async def _change(kind: str, collection_id: str, feature_id: str, request: Request, session, principal) -> Response:
    raw = b"" if kind == "delete" else await request.body()
    return await run_in_threadpool(_changed, kind, collection_id, feature_id, request, session, principal, raw)


def _changed(kind: str, collection_id: str, feature_id: str, request: Request, session, principal, raw: bytes) -> Response:
    try:
        principal.require("layers.read")
        layer, _, crs = _editing(request, session, principal, collection_id, True)
        actor, if_match, locator = principal.actor(request_id(request)), request.headers.get("if-match"), _locator(request)
        if kind == "delete":
            edit.delete(session, actor, principal.scope, layer, feature_id, locator, if_match)
            session.commit()
            return Response(status_code=204)
        body = _body(request, raw)
        change = edit.replace if kind == "replace" else edit.update
        new = change(session, actor, principal.scope, layer, feature_id, body, crs, locator, if_match)
        session.commit()
    except CityOpsError as exc:
        session.rollback()
        return _edit_error(request, exc, session, principal, collection_id, True)
    return Response(status_code=204, headers={"ETag": new.etag})


@router.put("/collections/{collection_id}/items/{feature_id}")
async def replace_item(collection_id: str, feature_id: str, request: Request, session: DB,
                       principal=Editor) -> Response:
    return await _change("replace", collection_id, feature_id, request, session, principal)


@router.patch("/collections/{collection_id}/items/{feature_id}")
async def update_item(collection_id: str, feature_id: str, request: Request, session: DB,
                      principal=Editor) -> Response:
    return await _change("update", collection_id, feature_id, request, session, principal)


@router.delete("/collections/{collection_id}/items/{feature_id}")
async def delete_item(collection_id: str, feature_id: str, request: Request, session: DB,
                      principal=Editor) -> Response:
    return await _change("delete", collection_id, feature_id, request, session, principal)


# --------------------------------------------------------------------------------------------------
# OpenAPI 3.0 definition (service-desc)
# --------------------------------------------------------------------------------------------------

def _param(name: str, description: str, schema: dict, location: str = "query", required: bool = False, **extra) -> dict:
    return {"name": name, "in": location, "description": description, "required": required, "schema": schema, **extra}


def _openapi(root: str, crs_uris: list[str], collections: list | None = None) -> dict:
    error = {"description": "error", "content": {JSON: {"schema": {"$ref": "#/components/schemas/exception"}}}}
    crs_schema = {"type": "string", "format": "uri", "enum": crs_uris, "default": CRS84}
    collection_id = _param("collectionId", "a layer key", {"type": "string"}, "path", True)
    fmt = _param("f", "response format (GeoJSON only)", {"type": "string", "enum": ["json", "geojson"]})
    crs = _param("crs", "CRS of the response geometries, in the authority's axis order: EPSG:4326 and 4490 are "
                   "latitude, longitude; EPSG:4545 is northing, easting", crs_schema)
    secured = [{"bearer": []}, {"apiKey": []}, {"basic": []}]

    def op(op_id: str, summary: str, params: list, media: str = JSON, secure: bool = True, extra: dict | None = None) -> dict:
        out = {"operationId": op_id, "summary": summary, "parameters": params,
               "responses": {"200": {"description": "success", "content": {media: {"schema": {"type": "object"}}}},
                             "400": error, **(extra or {})}}
        if secure:
            out["security"] = secured
            out["responses"].update({"401": error, "404": error})
        return out

    items_params = [
        _param("limit", f"page size, at most {MAX_LIMIT} (a larger value is rejected with 400)",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 10}, style="form", explode=False),
        _param("offset", "number of matching features to skip (prefer the keyset next/prev links)",
            {"type": "integer", "minimum": 0, "maximum": INT64_MAX, "default": 0}),
        _param("cursor", "keyset position from a next/prev link", {"type": "string", "pattern": "^[ab][0-9]+$"}),
        _param("filter", "CQL2 filter expression over the queryables", {"type": "string"}),
        _param("filter-lang", "encoding of filter", {"type": "string", "enum": [*filtering.FILTER_LANGS, *filtering.FILTER_LANG_SYNONYMS],
            "default": "cql2-text"}),
        _param("filter-crs", "CRS of geometry literals in filter, in its axis order", crs_schema),
        _param("bbox", "lower and upper corner (4 or 6 numbers) in bbox-crs axis order; features intersecting it",
            {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
            style="form", explode=False),
        _param("bbox-crs", "CRS of bbox, in its axis order (EPSG:4326/4490: latitude first; 4545: northing first)",
            crs_schema),
        crs,
        _param("datetime", "RFC 3339 instant or interval; layers carry no time, so every feature matches",
            {"type": "string"}, style="form", explode=False),
        fmt,
    ]
    feature_id = _param("featureId", "feature id", {"type": "string"}, "path", True)
    content_crs = _param("Content-Crs", "CRS of the body geometry, e.g. <http://www.opengis.net/def/crs/EPSG/0/4490>; "
                         "default CRS84", {"type": "string"}, "header")
    feature_body = {"required": True, "content": {GEOJSON: {"schema": {"type": "object"}}}}
    patch_body = {"required": True, "content": {"application/merge-patch+json": {"schema": {"type": "object"}},
                                                GEOJSON: {"schema": {"type": "object"}}}}

    def edit_op(op_id: str, summary: str, params: list, body: dict | None = None, created: bool = False) -> dict:
        ok = {"201": {"description": "created; Location names the new feature"}} if created else \
            {"204": {"description": "done"}}
        out = {"operationId": op_id, "summary": summary, "parameters": params + ([content_crs] if body else []),
               "security": secured, "responses": {**ok, "400": error, "401": error, "403": error, "404": error,
                                                  "405": error, "412": error, "413": error}}
        if body:
            out["requestBody"] = body
        return out

    kinds = {"integer": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}, "number": {"type": "number"},
             "boolean": {"type": "boolean"},
             "datetime": {"type": "string", "format": "date-time"}, "date": {"type": "string", "format": "date"}}
    per_collection = {}
    for layer in collections or []:
        types = {f["name"]: f.get("type", "string") for f in layer.attribute_schema or []}
        by_value = [_param(name, f"features whose {name} equals this value (queryable)",
                           kinds.get(types[name], {"type": "string"}))
                    for name in filtering.query_parameter_names(layer, service.ITEMS_PARAMS)]
        per_collection[f"/collections/{layer.key}/items"] = {"get": op(
            f"getFeatures_{layer.key}", f"features of {layer.key}", [*items_params, *by_value], GEOJSON)}

    return {
        "openapi": "3.0.3",
        "info": {"title": "CityOps OGC API – Features", "version": "1.0.0",
                 "description": "Layers of the digital base as OGC API – Features Parts 1–4. limit is at most "
                                f"{MAX_LIMIT}; unknown query parameters are rejected (400)."},
        "servers": [{"url": root}],
        "paths": {
            "/": {"get": op("getLandingPage", "landing page", [fmt], secure=False)},
            "/conformance": {"get": op("getConformance", "conformance classes", [fmt], secure=False)},
            "/api": {"get": op("getApi", "this document", [fmt], OPENAPI_TYPE, secure=False)},
            "/collections": {"get": op("getCollections", "the layers visible to the caller", [fmt])},
            "/collections/{collectionId}": {"get": op("describeCollection", "one layer", [collection_id, fmt])},
            "/collections/{collectionId}/items": {
                "get": op("getFeatures", "features of a layer", [collection_id, *items_params], GEOJSON),
                "post": edit_op("createFeature", "add a feature (editable layers; ogc.edit); 201 + Location",
                                [collection_id], feature_body, created=True),
            },
            "/collections/{collectionId}/queryables": {"get": op("getQueryables", "queryables (JSON Schema)",
                                                                  [collection_id, fmt], SCHEMA_JSON)},
            "/collections/{collectionId}/items/{featureId}": {
                "get": op("getFeature", "one feature", [collection_id, feature_id, crs, fmt], GEOJSON),
                "put": edit_op("replaceFeature", "replace a feature (editable layers; ogc.edit)", [collection_id, feature_id],
                               feature_body),
                "patch": edit_op("updateFeature", "JSON merge patch of a feature (editable layers; ogc.edit)",
                                 [collection_id, feature_id], patch_body),
                "delete": edit_op("deleteFeature", "delete a feature (editable layers; ogc.edit)", [collection_id, feature_id]),
            },
            **per_collection,
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                                "basic": {"type": "http", "scheme": "basic",
                                          "description": "username and password, or an API key as the password"}},
            "schemas": {"exception": {"type": "object", "required": ["code"],
                                      "properties": {"code": {"type": "string"}, "description": {"type": "string"}}}},
        },
    }

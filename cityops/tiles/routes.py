"""Routes: vector tiles as XYZ with TileJSON 3.0 under ``/api/tiles`` and as OGC API – Tiles under ``/ogc``.

Tile sets: ``basemap`` (units, buildings with height for 3D, key layers) and one per catalogue layer (by key).
XYZ: ``/api/tiles/{tileset}/{z}/{x}/{y}.mvt``; OGC: ``/ogc/tiles/WebMercatorQuad/{z}/{row}/{col}`` for the
base map (dataset tiles) and ``/ogc/collections/{key}/tiles/WebMercatorQuad/{z}/{row}/{col}`` per layer —
note the OGC order, row (y) before column (x).

Access: ``layers.read`` for every tile and tile set (``Authorization: Bearer``, ``X-API-Key`` — the browser
sends the header — or HTTP Basic with a password or an API key as the password); without credentials, the
tile sets of public-read layers alone. Buildings appear in the base map only for principals that also hold ``housing.read``, and
only inside their scope. The tile matrix set definitions are public (they hold no records).
An empty tile is 204 with no body; a tile outside the matrix or the zoom range is 404.
"""

from __future__ import annotations

import gzip
import hashlib

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cityops.core.errors import CityOpsError, NotFound, Unauthenticated
from cityops.core.params import Int64
from cityops.base.service import PUBLIC
from cityops.core.web import DB, Ctx, interface_principal, request_id
from cityops.tiles import raster, service
from cityops.tiles.mvt import MEDIA_TYPE
from cityops.tiles.service import BASEMAP, TMS_ID

router = APIRouter(tags=["vector tiles"])
ogc_router = APIRouter(prefix="/ogc", tags=["OGC API – Tiles"], include_in_schema=False)

_SPEC = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/"
CONFORMANCE = [_SPEC + c for c in ("core", "tileset", "tilesets-list", "geodata-tilesets", "dataset-tilesets", "mvt", "oas30")]
TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
CRS_3857 = "http://www.opengis.net/def/crs/EPSG/0/3857"
REL_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
REL_TILESETS = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
#: Tiles change when data changes; the client revalidates after this many seconds (ETag makes that cheap).
MAX_AGE = 60


def _tiles(request: Request) -> service.TileService:
    return request.app.state.tiles


#: The caller: a principal (token, API key or HTTP Basic), or None without credentials (public-read layers only).
Reader = Depends(interface_principal("tiles", optional=True))


async def _tileset_reader(tileset: str, request: Request, ctx: Ctx):
    """The caller of an XYZ tile set: without credentials only a public layer's (401 before the tile address is
    even read, as for every other protected route)."""
    principal = await interface_principal("tiles", optional=True)(request, ctx)
    if principal is None:
        def check():
            with ctx.sessions() as session:
                _scope(None, tileset, session)

        await run_in_threadpool(check)
    return principal


def _scope(principal, tileset: str = BASEMAP, session=None):
    """What the caller's tiles show: its scope (it must hold ``layers.read``); without credentials, the tile set
    of a public-read layer only (the base map, the list and any other tile set: 401)."""
    if principal is None:
        from cityops.base import service as layers

        try:
            if tileset == BASEMAP or session is None:
                raise NotFound(tileset)
            layers.get_layer(session, tileset, PUBLIC)
        except NotFound:
            raise Unauthenticated(f"tile set {tileset!r} needs credentials (Bearer token, X-API-Key or HTTP Basic)") \
                from None
        return PUBLIC
    principal.require("layers.read")
    return principal.scope


def _with_buildings(principal) -> bool:
    return principal is not None and principal.role.allows("housing.read")


def _tile_response(request: Request, data: bytes, cached: bool) -> Response:
    # Vector tiles shrink to about half with gzip: on a slow link the map's first tiles arrive twice as fast. The
    # compressed form is its own representation (its own ETag).
    gz = len(data) > 1024 and "gzip" in request.headers.get("accept-encoding", "")
    etag = '"' + hashlib.sha1(data).hexdigest()[:20] + ('-gz"' if gz else '"')
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={MAX_AGE}", "X-Tile-Cache": "hit" if cached else "miss",
               "Vary": "Authorization, X-API-Key, Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if not data:
        return Response(status_code=204, headers=headers)
    if gz:
        headers["Content-Encoding"] = "gzip"
        return Response(gzip.compress(data, 5), media_type=MEDIA_TYPE, headers=headers)
    return Response(data, media_type=MEDIA_TYPE, headers=headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _tileset_ids(session, principal) -> list[dict]:
    from cityops.base import service as layers

    out = [{"id": BASEMAP, "title": service.load_catalogue().basemap["title_zh"],
            "title_en": service.load_catalogue().basemap["title_en"], "kind": "basemap"}]
    for layer in layers.list_layers(session, _scope(principal)):
        out.append({"id": layer.key, "title": layer.title_zh, "title_en": layer.title_en, "kind": "layer",
                    "category": layer.category, "geometry_type": layer.geometry_type})
    return out


# ------------------------------------------------------------------------------------------ XYZ

@router.get("/api/tiles", summary="Vector tile sets: the base map and one per catalogue layer, with TileJSON links")
def tilesets(request: Request, session: DB, principal=Reader) -> list[dict]:
    base = _base(request)
    out = []
    for t in _tileset_ids(session, principal):
        t["tilejson"] = f"{base}/api/tiles/{t['id']}/tilejson.json"
        t["tiles"] = f"{base}/api/tiles/{t['id']}/{{z}}/{{x}}/{{y}}.mvt"
        out.append(t)
    return out


@router.get("/api/tiles/{tileset}/tilejson.json", summary="TileJSON 3.0.0 of a tile set")
def tilejson(tileset: str, request: Request, session: DB, principal=Depends(_tileset_reader)) -> dict:
    url = f"{_base(request)}/api/tiles/{tileset}/{{z}}/{{x}}/{{y}}.mvt"
    doc = service.tilejson(session, _scope(principal, tileset, session), tileset, url, buildings=_with_buildings(principal))
    return doc


@router.get("/api/tiles/{tileset}/{z}/{x}/{y}.mvt", summary="One Mapbox Vector Tile (XYZ addressing)",
            responses={200: {"content": {MEDIA_TYPE: {}}}, 204: {"description": "empty tile"}})
def xyz_tile(tileset: str, z: Int64, x: Int64, y: Int64, request: Request, session: DB,
             principal=Depends(_tileset_reader)) -> Response:
    data, cached = _tiles(request).tile(session, _scope(principal, tileset, session), tileset, z, x, y, buildings=_with_buildings(principal))
    return _tile_response(request, data, cached)


@router.get("/api/tiles/raster/{style}/{z}/{x}/{y}.png",
            summary="The static base map as a PNG raster tile (relief, contours, water, roads, unit boundaries)",
            responses={200: {"content": {raster.MEDIA_TYPE: {}}}})
def raster_tile(style: str, z: Int64, x: Int64, y: Int64, request: Request, session: DB,
                principal=Depends(interface_principal("tiles")),  # no public raster: 401 before the address is read
                parts: str | None = Query(None, description="comma-separated parts to draw (default: all of the style's): "
                                          + ", ".join(raster.PARTS))) -> Response:
    """What the map draws from the vector tile set ``basemap`` except labels and buildings, drawn by the server:
    for maps whose WebGL is drawn in software (one textured quad per tile instead of the layers' fills and lines).
    Styles: ``base`` (with the unit boundaries, units outside the viewer's scope dimmed), ``terrain`` (without)."""
    chosen = raster.parse_parts(style, parts)
    data, cached = _tiles(request).raster(session, _scope(principal), style, chosen, z, x, y)
    etag = '"' + hashlib.sha1(data).hexdigest()[:20] + '"'
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={MAX_AGE}", "X-Tile-Cache": "hit" if cached else "miss",
               "Vary": "Authorization, X-API-Key"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=raster.MEDIA_TYPE, headers=headers)


# ------------------------------------------------------------------------------------------- OGC

def _error(request: Request, exc: CityOpsError) -> JSONResponse:
    status = 400 if exc.status_code == 422 else exc.status_code
    code = {400: "InvalidParameterValue", 404: "NotFound"}.get(status, exc.code)
    return JSONResponse({"code": code, "description": exc.message, "error": exc.code, "message": exc.message,
                         "request_id": request_id(request)}, status_code=status)


def _link(href: str, rel: str, type_: str = "application/json", **extra) -> dict:
    return {"href": href, "rel": rel, "type": type_, **extra}


def _check_tms(tms_id: str) -> None:
    if tms_id != TMS_ID:
        raise NotFound(f"tile matrix set {tms_id!r} is not offered; use {TMS_ID}")


def _tileset_doc(request: Request, session, principal, tileset: str, path: str) -> dict:
    cat = service.load_catalogue()
    root = f"{_base(request)}/ogc"
    layers = service.vector_layers(session, _scope(principal, tileset, session), tileset, cat, buildings=_with_buildings(principal))
    title = cat.basemap["title_zh"] if tileset == BASEMAP else next(iter(layers), {}).get("description", tileset)
    limits = []
    for z in range(cat.min_zoom, cat.max_zoom + 1):
        n = (1 << z) - 1
        limits.append({"tileMatrix": str(z), "minTileRow": 0, "maxTileRow": n, "minTileCol": 0, "maxTileCol": n})
    doc = {
        "title": title,
        "dataType": "vector",
        "crs": CRS_3857,
        "tileMatrixSetURI": TMS_URI,
        "tileMatrixSetLimits": limits,
        "links": [
            _link(f"{root}{path}/{TMS_ID}", "self"),
            _link(f"{root}/tileMatrixSets/{TMS_ID}", REL_SCHEME, title="WebMercatorQuad"),
            _link(f"{root}{path}/{TMS_ID}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}", "item", MEDIA_TYPE, templated=True,
                  title="Mapbox Vector Tile"),
            _link(f"{_base(request)}/api/tiles/{tileset}/tilejson.json", "describedby", "application/json",
                  title="TileJSON 3.0.0"),
        ],
        "layers": [{"id": l["id"], "dataType": "vector", "description": l.get("description", ""),
                    "minTileMatrix": str(l["minzoom"]), "maxTileMatrix": str(l["maxzoom"]),
                    "propertiesSchema": {"type": "object", "properties": {
                        k: {"type": {"Number": "number", "Boolean": "boolean"}.get(v, "string")} for k, v in l["fields"].items()}}}
                   for l in layers],
    }
    bounds = service.bounds_of(session, _scope(principal, tileset, session), tileset)
    if bounds:
        doc["boundingBox"] = {"lowerLeft": bounds[:2], "upperRight": bounds[2:],
                              "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
    return doc


def _tilesets_list(request: Request, path: str, title: str) -> dict:
    root = f"{_base(request)}/ogc"
    return {"tilesets": [{
        "title": title, "dataType": "vector", "crs": CRS_3857, "tileMatrixSetURI": TMS_URI,
        "links": [_link(f"{root}{path}/{TMS_ID}", "self", title=f"{title} ({TMS_ID})"),
                  _link(f"{root}/tileMatrixSets/{TMS_ID}", REL_SCHEME, title="WebMercatorQuad")],
    }], "links": [_link(f"{root}{path}", "self")]}


@ogc_router.get("/tileMatrixSets")
def tile_matrix_sets(request: Request) -> JSONResponse:
    root = f"{_base(request)}/ogc"
    return JSONResponse({"tileMatrixSets": [{"id": TMS_ID, "title": "Google Maps Compatible for the World",
                                             "uri": TMS_URI,
                                             "links": [_link(f"{root}/tileMatrixSets/{TMS_ID}", "self")]}]})


@ogc_router.get("/tileMatrixSets/{tms_id}")
def tile_matrix_set(tms_id: str, request: Request) -> JSONResponse:
    try:
        _check_tms(tms_id)
    except CityOpsError as exc:
        return _error(request, exc)
    return JSONResponse(service.tms().model_dump(mode="json", exclude_none=True, by_alias=True))


@ogc_router.get("/tiles")
def dataset_tilesets(request: Request, principal=Reader) -> JSONResponse:
    _scope(principal)
    return JSONResponse(_tilesets_list(request, "/tiles", service.load_catalogue().basemap["title_zh"]))


@ogc_router.get("/tiles/{tms_id}")
def dataset_tileset(tms_id: str, request: Request, session: DB, principal=Reader) -> JSONResponse:
    try:
        _check_tms(tms_id)
        return JSONResponse(_tileset_doc(request, session, principal, BASEMAP, "/tiles"))
    except CityOpsError as exc:
        return _error(request, exc)


@ogc_router.get("/tiles/{tms_id}/{tile_matrix}/{tile_row}/{tile_col}")
def dataset_tile(tms_id: str, tile_matrix: str, tile_row: str, tile_col: str, request: Request, session: DB,
                 principal=Reader) -> Response:
    try:
        _check_tms(tms_id)
        z, x, y = service.parse_zxy(tile_matrix, tile_col, tile_row)
        data, cached = _tiles(request).tile(session, _scope(principal), BASEMAP, z, x, y,
                                            buildings=_with_buildings(principal))
    except CityOpsError as exc:
        return _error(request, exc)
    return _tile_response(request, data, cached)


@ogc_router.get("/collections/{collection_id}/tiles")
def collection_tilesets(collection_id: str, request: Request, session: DB, principal=Reader) -> JSONResponse:
    from cityops.base import service as layers

    try:
        layer = layers.get_layer(session, collection_id, _scope(principal, collection_id, session))
    except CityOpsError as exc:
        return _error(request, exc)
    return JSONResponse(_tilesets_list(request, f"/collections/{layer.key}/tiles", layer.title_zh))


@ogc_router.get("/collections/{collection_id}/tiles/{tms_id}")
def collection_tileset(collection_id: str, tms_id: str, request: Request, session: DB,
                       principal=Reader) -> JSONResponse:
    try:
        _check_tms(tms_id)
        return JSONResponse(_tileset_doc(request, session, principal, collection_id, f"/collections/{collection_id}/tiles"))
    except CityOpsError as exc:
        return _error(request, exc)


@ogc_router.get("/collections/{collection_id}/tiles/{tms_id}/{tile_matrix}/{tile_row}/{tile_col}")
def collection_tile(collection_id: str, tms_id: str, tile_matrix: str, tile_row: str, tile_col: str, request: Request,
                    session: DB, principal=Reader) -> Response:
    try:
        _check_tms(tms_id)
        z, x, y = service.parse_zxy(tile_matrix, tile_col, tile_row)
        data, cached = _tiles(request).tile(session, _scope(principal, collection_id, session), collection_id, z, x, y)
    except CityOpsError as exc:
        return _error(request, exc)
    return _tile_response(request, data, cached)


router.include_router(ogc_router)


def install(app) -> None:
    """Wire the tile service into the app: the routers, the cache under <data_dir>/tile-cache, and the Tiles
    conformance classes on the OGC API conformance document."""
    from cityops.ogc import routes as ogc_routes

    app.state.tiles = service.TileService(app.state.ctx.settings.data_dir / "tile-cache")
    for cls in CONFORMANCE:
        if cls not in ogc_routes.CONFORMANCE:
            ogc_routes.CONFORMANCE.append(cls)

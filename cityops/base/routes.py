"""Routes: layer catalogue (图层目录), versioned imports, rollback, features and export."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from shapely.geometry import mapping
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from cityops.base import layerfiles, service
from cityops.base.categories import load_categories
from cityops.core.crs import from_canonical_many, parse_crs
from cityops.core.errors import InvalidInput
from cityops.core.params import Id, NonNegInt64
from cityops.core.web import DB, Ctx, read_upload_limited, request_id, require
from cityops.org.routes import parse_bbox

router = APIRouter(prefix="/api", tags=["digital base"])

MAX_FEATURES_PAGE = 10_000


class LayerIn(BaseModel):
    key: str = Field(min_length=2, max_length=48)
    title_zh: str = Field(min_length=1, max_length=128)
    title_en: str | None = Field(default=None, max_length=128)
    description_zh: str | None = Field(default=None, max_length=2000)
    description_en: str | None = Field(default=None, max_length=2000)
    category: str
    geometry_type: str = "GEOMETRY"
    owner_department: str | None = None
    source: str | None = Field(default=None, max_length=256)
    editable: bool = False
    #: Open data: readable without login through /ogc and the tiles.
    public_read: bool = False
    unit_code: str | None = None


class LayerPatch(BaseModel):
    title_zh: str | None = Field(default=None, min_length=1, max_length=128)
    title_en: str | None = Field(default=None, max_length=128)
    description_zh: str | None = Field(default=None, max_length=2000)
    description_en: str | None = Field(default=None, max_length=2000)
    category: str | None = None
    owner_department: str | None = None
    source: str | None = Field(default=None, max_length=256)
    editable: bool | None = None
    public_read: bool | None = None


class RollbackIn(BaseModel):
    version: Id


@router.get("/layer-categories", summary="The layer category tree (12 major, ~80 minor categories)")
def categories(principal=Depends(require("layers.read")), language: str = "zh-CN") -> list[dict]:
    return load_categories().to_tree(language)


@router.get("/layers", summary="The layer catalogue")
def list_layers(session: DB, principal=Depends(require("layers.read")), category: str | None = None) -> list[dict]:
    return [service.layer_snapshot(layer) for layer in service.list_layers(session, principal.scope, category)]


@router.post("/layers", status_code=201, summary="Register a layer (its feature table is created empty)")
def create_layer(body: LayerIn, request: Request, session: DB, principal=Depends(require("layers.write"))) -> dict:
    layer = service.create_layer(session, principal.actor(request_id(request)), principal.scope, body.model_dump())
    session.commit()
    return service.layer_snapshot(layer)


@router.get("/layers/{key}", summary="One layer's metadata")
def get_layer(key: str, session: DB, principal=Depends(require("layers.read"))) -> dict:
    return service.layer_snapshot(service.get_layer(session, key, principal.scope))


@router.patch("/layers/{key}", summary="Change a layer's metadata")
def patch_layer(key: str, body: LayerPatch, request: Request, session: DB, principal=Depends(require("layers.write"))) -> dict:
    layer = service.update_layer(session, principal.actor(request_id(request)), principal.scope, key,
                                 body.model_dump(exclude_unset=True))
    session.commit()
    return service.layer_snapshot(layer)


@router.delete("/layers/{key}", status_code=204, summary="Delete a layer and all its versions")
def delete_layer(key: str, request: Request, session: DB, principal=Depends(require("layers.write"))) -> None:
    service.delete_layer(session, principal.actor(request_id(request)), principal.scope, key)
    session.commit()


@router.post("/layers/{key}/import", summary="Import a file as the layer's next version (all-or-nothing)")
async def import_layer(key: str, request: Request, ctx: Ctx, session: DB, principal=Depends(require("layers.write")),
                       file: UploadFile = File(...), crs: str | None = Form(None), mode: str = Form("replace"),
                       layer: str | None = Form(None, description="Layer inside a multi-layer file"),
                       dry_run: bool = Form(False)) -> dict:
    fmt = layerfiles.detect_format(file.filename or "")
    content = await read_upload_limited(file, ctx.settings.max_upload_bytes)

    def run():  # reading the file and the database work in a worker thread, never on the event loop
        with tempfile.TemporaryDirectory(prefix="cityops-layer-") as tmp:
            path = Path(tmp) / Path(file.filename or "upload").name
            path.write_bytes(content)
            report = service.import_file(session, principal.actor(request_id(request)), principal.scope, key, path,
                                         fmt=fmt, crs=crs, mode=mode, source_layer=layer, dry_run=dry_run)
        session.commit()
        return report

    return await run_in_threadpool(run)


@router.get("/layers/{key}/versions", summary="The layer's versions, newest first")
def layer_versions(key: str, session: DB, principal=Depends(require("layers.read"))) -> list[dict]:
    return [service.version_snapshot(v) for v in service.versions(session, key, principal.scope)]


@router.post("/layers/{key}/rollback", summary="Restore an earlier version (as a new version)")
def rollback(key: str, body: RollbackIn, request: Request, session: DB, principal=Depends(require("layers.write"))) -> dict:
    entry = service.rollback(session, principal.actor(request_id(request)), principal.scope, key, body.version)
    session.commit()
    return service.version_snapshot(entry)


@router.get("/layers/{key}/features", summary="Current features as GeoJSON (bbox, paging)")
def features(key: str, session: DB, principal=Depends(require("layers.read")), bbox: str | None = None,
             limit: int = Query(100, ge=1, le=MAX_FEATURES_PAGE), offset: NonNegInt64 = 0,
             crs: str | None = None) -> JSONResponse:
    layer = service.get_layer(session, key, principal.scope)
    target = parse_crs(crs) if crs else None
    out = []
    for fids, props, geoms in service.iter_features(session, layer, bbox=parse_bbox(bbox), limit=limit, offset=offset):
        if target is not None:
            geoms = from_canonical_many(geoms, target)
        out.extend({"type": "Feature", "id": f, "properties": p, "geometry": mapping(g)} for f, p, g in zip(fids, props, geoms))
    return JSONResponse({"type": "FeatureCollection", "features": out, "numberReturned": len(out)})


@router.get("/layers/{key}/export", summary="Export current features (GeoJSON, GeoJSON-seq, GPKG, SHP zip, FlatGeobuf, CSV)")
def export(key: str, session: DB, principal=Depends(require("layers.read")), format: str = "geojson",
           crs: str = "EPSG:4490", bbox: str | None = None) -> FileResponse:
    if format not in layerfiles.FORMATS:
        raise InvalidInput(f"unknown format {format!r}; use one of {', '.join(layerfiles.FORMATS)}")
    workdir = Path(tempfile.mkdtemp(prefix="cityops-export-"))
    try:
        suffix = ".shp" if format == "shp" else layerfiles.FORMATS[format][1]
        written = service.export_layer(session, principal.scope, key, workdir / f"{key}{suffix}", format,
                                       crs=crs, bbox=parse_bbox(bbox))
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return FileResponse(written, filename=written.name, background=BackgroundTask(shutil.rmtree, workdir, ignore_errors=True))

"""Routes: units (行政区划·网格), import/export, map GeoJSON, locate, departments, people, places, audit."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from shapely.geometry import mapping
from sqlalchemy import func, select
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from cityops.core import audit as audit_log
from cityops.core.crs import check_lonlat, from_canonical, parse_crs, to_canonical, to_canonical_xy
from cityops.core.errors import Forbidden, InvalidInput, OutsideJurisdiction
from cityops.core.geojson import read_geometry, require_valid
from cityops.core.params import Id, NonNegInt64
from cityops.core.web import DB, Ctx, read_upload_limited, request_id, require
from cityops.org import service, unitfiles
from cityops.org.models import Unit
from cityops.org.schemas import (AuditOut, BatchLocateOut, DepartmentOut, ImportOut, LocatedOut, PersonOut, PersonPage, PlaceOut,
                                 UnitDetail, UnitOut, UnitPage)
from cityops.org.unitfiles import UnitRecord

router = APIRouter(prefix="/api", tags=["org"])

MAX_PAGE = 1000


def parse_bbox(value: str | None) -> tuple[float, float, float, float] | None:
    if not value:
        return None
    try:
        parts = [float(p) for p in value.split(",")]
    except ValueError:
        parts = []
    # float() takes "nan" and "inf": no box has such a corner (NaN compares false everywhere, then failed in GEOS).
    if not parts or not all(math.isfinite(p) for p in parts):
        raise InvalidInput(f"bbox {value!r} must be four finite numbers minx,miny,maxx,maxy")
    if len(parts) != 4 or parts[0] > parts[2] or parts[1] > parts[3]:
        raise InvalidInput(f"bbox {value!r} must be minx,miny,maxx,maxy with min <= max")
    return tuple(parts)


def geometry_from_geojson(value: dict | None, crs: str | None):
    """A GeoJSON geometry in ``crs`` → a valid Shapely geometry in the canonical CRS."""
    if value is None:
        return None
    return require_valid(to_canonical(read_geometry(value, check_valid=False), parse_crs(crs)))


class UnitIn(BaseModel):
    code: str = Field(min_length=6, max_length=20)
    name: str = Field(min_length=1, max_length=128)
    name_en: str | None = Field(default=None, max_length=128)
    level: str | None = None
    parent_code: str | None = None
    geometry: dict | None = None
    crs: str | None = Field(default=None, description="CRS of `geometry` (default EPSG:4490 lon/lat)")
    attributes: dict[str, Any] = {}


class UnitPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=128)
    name_en: str | None = Field(default=None, max_length=128)
    geometry: dict | None = None
    crs: str | None = None
    attributes: dict[str, Any] | None = None


def unit_out(unit: Unit, *, geometry: bool = False, crs: str | None = None) -> dict:
    data = {"code": unit.code, "name": unit.name, "name_en": unit.name_en, "level": unit.level,
            "parent_code": unit.parent_code, "path": unit.path, "area_m2": unit.area_m2,
            "attributes": unit.attributes}
    if geometry and unit.geom is not None:
        data["geometry"] = mapping(from_canonical(unit.geom, parse_crs(crs)))
    return data


# ---------------------------------------------------------------------------------------------- units

@router.get("/units", response_model=UnitPage, response_model_exclude_unset=True,
            summary="List units inside your scope (and the ancestors of your scope)")
def list_units(session: DB, principal=Depends(require("units.read")), level: str | None = None,
               parent: str | None = None, root: str | None = None, q: str | None = Query(None, max_length=64),
               bbox: str | None = None, limit: int = Query(100, ge=1, le=MAX_PAGE), offset: NonNegInt64 = 0) -> dict:
    rows, total = service.list_units(session, principal.scope, level=level, parent=parent, root=root, q=q,
                                     bbox=parse_bbox(bbox), limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": [unit_out(u) for u in rows]}


@router.get("/units/export", summary="Export units (GeoJSON, GeoPackage, zipped Shapefile, CSV with WKT)")
def export_units(session: DB, principal=Depends(require("units.export")), format: str = "geojson",
                 root: str | None = None, level: str | None = None, crs: str | None = None) -> FileResponse:
    if format not in unitfiles.SUPPORTED_FORMATS:
        raise InvalidInput(f"unknown format {format!r}; use one of {', '.join(sorted(unitfiles.SUPPORTED_FORMATS))}")
    target_crs = str(parse_crs(crs)) if crs else "EPSG:4490"
    records = service.export_records(session, principal.scope, root=root, level=level)
    workdir = Path(tempfile.mkdtemp(prefix="cityops-export-"))
    suffix = {"geojson": ".geojson", "gpkg": ".gpkg", "shp": ".shp", "csv": ".csv"}[format]
    written = unitfiles.write_units_file(records, workdir / f"units{suffix}", format, crs=target_crs)
    return FileResponse(written, filename=written.name,
                        background=BackgroundTask(shutil.rmtree, workdir, ignore_errors=True))


@router.post("/units/import", response_model=ImportOut,
             summary="Import units from a file, all-or-nothing, with a validation report")
async def import_units(request: Request, ctx: Ctx, session: DB, principal=Depends(require("units.import")),
                       file: UploadFile = File(...), crs: str | None = Form(None), replace: bool = Form(False),
                       dry_run: bool = Form(False),
                       layer: str | None = Form(None, description="Layer of a multi-layer file (GeoPackage)")) -> dict:
    fmt = unitfiles.detect_format(file.filename or "")
    content = await read_upload_limited(file, ctx.settings.max_upload_bytes)

    def run():  # reading the file and the database work in a worker thread, never on the event loop
        with tempfile.TemporaryDirectory(prefix="cityops-import-") as tmp:
            path = Path(tmp) / Path(file.filename or "upload").name
            path.write_bytes(content)
            records = unitfiles.read_units_file(path, fmt=fmt, crs=crs, layer=layer)
        report = service.import_units(session, ctx.org, principal.actor(request_id(request)), principal.scope, records,
                                      replace=replace, dry_run=dry_run)
        session.commit()
        ctx.locator.invalidate()
        return {"imported": 0 if dry_run else len(records), "dry_run": dry_run, "report": report.to_dict()}

    return await run_in_threadpool(run)


@router.get("/units/{code}", response_model=UnitDetail, response_model_exclude_unset=True,
            summary="One unit with its chain and bounding box; geometry on request")
def get_unit(code: str, session: DB, principal=Depends(require("units.read")), geometry: bool = False,
             crs: str | None = None) -> dict:
    unit = service.get_unit(session, code, principal.scope)
    data = unit_out(unit, geometry=geometry, crs=crs)
    # [west, south, east, north] in WGS 84: enough for a map to fit the unit without its whole outline.
    data["bbox"] = [round(v, 7) for v in unit.geom.bounds] if unit.geom is not None else None
    data["chain"] = [{"code": u.code, "name": u.name, "level": u.level} for u in service.unit_chain(session, unit)]
    data["children"] = session.scalar(select(func.count(Unit.id)).where(Unit.parent_code == code))
    data["responsible"] = [
        {"id": p.id, "name": p.name, "post": p.post, "phone": p.phone}
        for p in service.responsible_people(session, code) if principal.scope.covers(p.unit_path)
    ] if unit.level == "grid" and principal.role.allows("people.read") else []
    return data


@router.post("/units", status_code=201, response_model=UnitOut, response_model_exclude_unset=True,
             summary="Create one unit (validated like an import)")
def create_unit(body: UnitIn, request: Request, ctx: Ctx, session: DB, principal=Depends(require("units.write"))) -> dict:
    record = UnitRecord(code=body.code.strip(), name=body.name.strip(), level=body.level, parent_code=body.parent_code,
                        geometry=geometry_from_geojson(body.geometry, body.crs), name_en=body.name_en,
                        attributes=body.attributes, row=1)
    service.import_units(session, ctx.org, principal.actor(request_id(request)), principal.scope, [record])
    session.commit()
    ctx.locator.invalidate()
    return unit_out(service.get_unit(session, record.code, principal.scope))


@router.patch("/units/{code}", response_model=UnitOut, response_model_exclude_unset=True,
              summary="Rename a unit, change attributes or geometry (validated)")
def patch_unit(code: str, body: UnitPatch, request: Request, ctx: Ctx, session: DB,
               principal=Depends(require("units.write"))) -> dict:
    changes = body.model_dump(exclude_unset=True)
    if "geometry" in changes:
        changes["geometry"] = geometry_from_geojson(body.geometry, body.crs)
    unit = service.update_unit(session, ctx.org, principal.actor(request_id(request)), principal.scope, code, changes)
    session.commit()
    ctx.locator.invalidate()
    return unit_out(unit)


@router.delete("/units/{code}", status_code=204, summary="Delete a leaf unit")
def delete_unit(code: str, request: Request, ctx: Ctx, session: DB, principal=Depends(require("units.write"))) -> None:
    service.delete_unit(session, principal.actor(request_id(request)), principal.scope, code)
    session.commit()
    ctx.locator.invalidate()


@router.get("/map/units", summary="Units of one level as GeoJSON for the map (scoped, bbox-filtered)")
def map_units(session: DB, principal=Depends(require("units.read")), level: str = "township",
              bbox: str | None = None, simplify: float = Query(0.0, ge=0, le=0.01)) -> JSONResponse:
    rows, _ = service.list_units(session, principal.scope, level=level, bbox=parse_bbox(bbox), limit=20000)
    features = []
    for u in rows:
        if u.geom is None:
            continue
        geom = u.geom.simplify(simplify, preserve_topology=True) if simplify else u.geom
        geom = shapely.set_precision(geom, 1e-6)
        features.append({"type": "Feature", "id": u.code, "geometry": mapping(geom),
                         "properties": {"code": u.code, "name": u.name, "name_en": u.name_en, "level": u.level,
                                        "parent_code": u.parent_code, "covered": principal.scope.covers(u.path)}})
    return JSONResponse({"type": "FeatureCollection", "features": features})


# --------------------------------------------------------------------------------------------- locate

class BatchLocateIn(BaseModel):
    crs: str | None = None
    points: list[tuple[float, float]] = Field(description="[[x, y], …] in `crs` (lon, lat for geographic CRSs)")


def _located_out(located, principal) -> dict:
    if located is None:
        return {"status": "outside_jurisdiction"}
    if not principal.scope.covers(located.path):
        return {"status": "outside_scope"}
    return {"status": "ok", **located.to_dict()}


@router.get("/locate", response_model=LocatedOut, summary="Point → district / township / village / grid (定位)")
def locate(ctx: Ctx, principal=Depends(require("locate")), lon: float = Query(..., description="x in `crs`"),
           lat: float = Query(..., description="y in `crs`"), crs: str | None = None) -> dict:
    x, y = to_canonical_xy(np.array([lon]), np.array([lat]), parse_crs(crs))
    located = ctx.locator.get().locate(float(x[0]), float(y[0]))
    if located is None:
        raise OutsideJurisdiction(f"point ({lon}, {lat}) lies outside the jurisdiction")
    if not principal.scope.covers(located.path):
        raise Forbidden(f"point ({lon}, {lat}) lies outside your scope")
    return located.to_dict()


@router.post("/locate/batch", response_model=BatchLocateOut, summary="Locate many points at once")
def locate_batch(body: BatchLocateIn, ctx: Ctx, principal=Depends(require("locate"))) -> dict:
    if len(body.points) > ctx.settings.max_locate_batch:
        raise InvalidInput(f"{len(body.points)} points exceed the batch limit of {ctx.settings.max_locate_batch}")
    if not body.points:
        return {"results": []}
    coords = np.asarray(body.points, dtype=float)
    x, y = to_canonical_xy(coords[:, 0], coords[:, 1], parse_crs(body.crs))
    check_lonlat(x, y)
    return {"results": [_located_out(r, principal) for r in ctx.locator.get().locate_many(x, y)]}


# -------------------------------------------------------------------------------- departments, people

class DepartmentIn(BaseModel):
    code: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_.-]+$")
    name: str = Field(min_length=1, max_length=128)
    name_en: str | None = Field(default=None, max_length=128)
    kind: str = "line"
    unit_code: str
    matter_classes: list[str] = []
    covered_units: list[str] = []
    phone: str | None = Field(default=None, max_length=32)
    attributes: dict[str, Any] = {}


class DepartmentPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=128)
    name_en: str | None = Field(default=None, max_length=128)
    kind: str | None = None
    matter_classes: list[str] | None = None
    covered_units: list[str] | None = None
    phone: str | None = Field(default=None, max_length=32)
    attributes: dict[str, Any] | None = None


@router.get("/departments", response_model=list[DepartmentOut], summary="Departments visible in your scope")
def list_departments(session: DB, principal=Depends(require("departments.read"))) -> list[dict]:
    return [service.department_snapshot(d) for d in service.list_departments(session, principal.scope)]


@router.get("/departments/{code}", response_model=DepartmentOut)
def get_department(code: str, session: DB, principal=Depends(require("departments.read"))) -> dict:
    return service.department_snapshot(service.get_department(session, code, principal.scope))


@router.post("/departments", status_code=201, response_model=DepartmentOut)
def create_department(body: DepartmentIn, request: Request, session: DB,
                      principal=Depends(require("departments.write"))) -> dict:
    d = service.save_department(session, principal.actor(request_id(request)), principal.scope, body.model_dump())
    session.commit()
    return service.department_snapshot(d)


@router.patch("/departments/{code}", response_model=DepartmentOut)
def patch_department(code: str, body: DepartmentPatch, request: Request, session: DB,
                     principal=Depends(require("departments.write"))) -> dict:
    d = service.save_department(session, principal.actor(request_id(request)), principal.scope,
                                body.model_dump(exclude_unset=True), code=code)
    session.commit()
    return service.department_snapshot(d)


@router.delete("/departments/{code}", status_code=204)
def delete_department(code: str, request: Request, session: DB, principal=Depends(require("departments.write"))) -> None:
    service.delete_department(session, principal.actor(request_id(request)), principal.scope, code)
    session.commit()


class PersonIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    post: str
    unit_code: str
    title: str | None = Field(default=None, max_length=64)
    phone: str | None = Field(default=None, max_length=32, pattern=r"^[0-9+\- ]*$")
    email: str | None = Field(default=None, max_length=128)
    units: list[str] = []
    departments: list[str] = []
    attributes: dict[str, Any] = {}


class PersonPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    post: str | None = None
    unit_code: str | None = None
    title: str | None = Field(default=None, max_length=64)
    phone: str | None = Field(default=None, max_length=32, pattern=r"^[0-9+\- ]*$")
    email: str | None = Field(default=None, max_length=128)
    units: list[str] | None = None
    departments: list[str] | None = None
    attributes: dict[str, Any] | None = None


@router.get("/people", response_model=PersonPage, summary="People on duty inside your scope")
def list_people(session: DB, principal=Depends(require("people.read")), unit: str | None = None,
                post: str | None = None, limit: int = Query(100, ge=1, le=MAX_PAGE), offset: NonNegInt64 = 0) -> dict:
    if unit:
        principal.scope.require_covers(service.unit_path(session, unit), f"unit {unit}")
    rows, total = service.list_people(session, principal.scope, unit=unit, post=post, limit=limit, offset=offset)
    return {"total": total, "items": [service.person_snapshot(p) for p in rows]}


@router.get("/people/{person_id}", response_model=PersonOut)
def get_person(person_id: Id, session: DB, principal=Depends(require("people.read"))) -> dict:
    return service.person_snapshot(service.get_person(session, person_id, principal.scope))


@router.post("/people", status_code=201, response_model=PersonOut)
def create_person(body: PersonIn, request: Request, session: DB, principal=Depends(require("people.write"))) -> dict:
    p = service.save_person(session, principal.actor(request_id(request)), principal.scope, body.model_dump())
    session.commit()
    return service.person_snapshot(p)


@router.patch("/people/{person_id}", response_model=PersonOut)
def patch_person(person_id: Id, body: PersonPatch, request: Request, session: DB,
                 principal=Depends(require("people.write"))) -> dict:
    p = service.save_person(session, principal.actor(request_id(request)), principal.scope,
                            body.model_dump(exclude_unset=True), person_id=person_id)
    session.commit()
    return service.person_snapshot(p)


@router.delete("/people/{person_id}", status_code=204)
def delete_person(person_id: Id, request: Request, session: DB, principal=Depends(require("people.write"))) -> None:
    service.delete_person(session, principal.actor(request_id(request)), principal.scope, person_id)
    session.commit()


@router.get("/places", response_model=list[PlaceOut], summary="Named places (地名) inside your scope")
def list_places(session: DB, principal=Depends(require("units.read")), q: str | None = Query(None, max_length=64),
                limit: int = Query(50, ge=1, le=MAX_PAGE)) -> list[dict]:
    return [{"id": p.id, "name": p.name, "kind": p.kind, "unit_code": p.unit_code,
             "lon": p.geom.x, "lat": p.geom.y, "attributes": p.attributes}
            for p in service.list_places(session, principal.scope, q=q, limit=limit)]


@router.get("/audit", response_model=list[AuditOut], summary="Audit log (审计日志) entries inside your scope, newest first")
def audit(session: DB, principal=Depends(require("audit.read")), entity_key: str | None = None,
          action: str | None = None, limit: int = Query(100, ge=1, le=MAX_PAGE), offset: NonNegInt64 = 0) -> list[dict]:
    E = audit_log.AuditEntry
    stmt = select(E)
    if not principal.scope.all_units:
        stmt = stmt.where(E.unit_path.is_not(None), principal.scope.covers_clause(E.unit_path))
    if entity_key:
        stmt = stmt.where(E.entity_key == entity_key)
    if action:
        stmt = stmt.where(E.action == action)
    rows = session.scalars(stmt.order_by(E.id.desc()).limit(limit).offset(offset))
    return [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "entity": e.entity,
             "entity_key": e.entity_key, "before": e.before, "after": e.after, "request_id": e.request_id} for e in rows]


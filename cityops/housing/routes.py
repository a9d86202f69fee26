"""Routes: buildings (房屋), households (住户) and "who is threatened" (受威胁人员) for a zone."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from shapely.geometry import mapping
from starlette.background import BackgroundTask

from cityops.base import layerfiles
from cityops.core.crs import from_canonical, parse_crs
from cityops.core.errors import InvalidInput
from cityops.core.params import Id, Int32, NonNegInt64
from cityops.core.web import DB, request_id, require
from cityops.housing import service
from cityops.housing.schemas import (BuildingDetail, BuildingOut, BuildingPage, HouseholdDetail, ResidentOut,
                                     ThreatOut)
from cityops.org.routes import MAX_PAGE, geometry_from_geojson, parse_bbox

router = APIRouter(prefix="/api", tags=["housing"])


def _personal(principal) -> bool:
    return principal.role.allows("personal.read")


def _with_geometry(data: dict, crs: str | None) -> dict:
    geom = data.pop("geometry", None)
    if geom is not None:
        data["geometry"] = mapping(from_canonical(geom, parse_crs(crs)))
    return data


@router.get("/buildings", response_model=BuildingPage, response_model_exclude_unset=True,
            summary="List buildings in your scope, by bbox, unit subtree and JGJ 125 safety grade")
def list_buildings(session: DB, principal=Depends(require("housing.read")), bbox: str | None = None,
                   root: str | None = None, grade: str | None = Query(None, description="e.g. C,D or none"),
                   q: str | None = Query(None, min_length=2, max_length=64,
                                         description="code prefix or part of the address (search; total is null)"),
                   geometry: bool = False, crs: str | None = None,
                   limit: int = Query(100, ge=1, le=MAX_PAGE), offset: NonNegInt64 = 0) -> dict:
    if crs:
        parse_crs(crs)
    rows, total = service.list_buildings(session, principal.scope, bbox=parse_bbox(bbox), root=root,
                                         grades=service.parse_grades(grade), q=q, limit=limit, offset=offset)
    items = [_with_geometry(service.building_dict(b, geometry=geometry), crs) for b in rows]
    return {"total": total, "limit": limit, "offset": offset, "items": items}


def _export(session, principal, kind: str, fmt: str, crs: str, root: str | None, bbox: str | None) -> FileResponse:
    if fmt not in layerfiles.FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; use one of {', '.join(layerfiles.FORMATS)}")
    workdir = Path(tempfile.mkdtemp(prefix="cityops-export-"))
    try:
        suffix = ".shp" if fmt == "shp" else layerfiles.FORMATS[fmt][1]
        written = service.export(session, principal.scope, _personal(principal), kind, workdir / f"{kind}{suffix}", fmt,
                                 crs=crs, root=root, bbox=parse_bbox(bbox))
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return FileResponse(written, filename=written.name, background=BackgroundTask(shutil.rmtree, workdir, ignore_errors=True))


@router.get("/buildings/export", summary="Export buildings in your scope (GeoJSON, GeoJSON-seq, GPKG, SHP zip, FlatGeobuf, CSV)")
def export_buildings(session: DB, principal=Depends(require("housing.read")), format: str = "geojson",
                     crs: str = "EPSG:4490", root: str | None = None, bbox: str | None = None) -> FileResponse:
    return _export(session, principal, "buildings", format, crs, root, bbox)


@router.get("/households/export", summary="Export households in your scope; personal data masked without personal.read")
def export_households(session: DB, principal=Depends(require("housing.read")), format: str = "geojson",
                      crs: str = "EPSG:4490", root: str | None = None) -> FileResponse:
    return _export(session, principal, "households", format, crs, root, None)


class BuildingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    geometry: dict = Field(description="Footprint: GeoJSON Polygon/MultiPolygon")
    crs: str | None = Field(default=None, description="CRS of `geometry` (default EPSG:4490 lon/lat)")
    code: str | None = Field(default=None, max_length=40, description="Default: the grid's next serial")
    grid_code: str | None = Field(default=None, description="Default: the grid the footprint lies in")
    name: str | None = Field(default=None, max_length=200)
    address: str | None = Field(default=None, max_length=500)
    floors: Int32 = Field(default=1)
    height_m: float | None = None
    structure: str = "其他"
    use: str = "住宅"
    year_built: Int32 | None = None
    safety_grade: str | None = None
    attributes: dict = Field(default_factory=dict)


class BuildingPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    geometry: dict | None = None
    crs: str | None = None
    grid_code: str | None = None
    name: str | None = Field(default=None, max_length=200)
    address: str | None = Field(default=None, max_length=500)
    floors: Int32 | None = None
    height_m: float | None = None
    structure: str | None = None
    use: str | None = None
    year_built: Int32 | None = None
    safety_grade: str | None = None
    attributes: dict | None = None


@router.post("/buildings", status_code=201, response_model=BuildingOut, response_model_exclude_unset=True,
             summary="Register a building (footprint, floors, structure, JGJ 125 grade)")
def create_building(body: BuildingIn, request: Request, session: DB, principal=Depends(require("housing.write"))) -> dict:
    data = body.model_dump(exclude={"geometry", "crs"})
    footprint = geometry_from_geojson(body.geometry, body.crs)
    building = service.create_building(session, principal.actor(request_id(request)), principal.scope, data, footprint)
    session.commit()
    return service.building_dict(building)


@router.patch("/buildings/{code}", response_model=BuildingOut, response_model_exclude_unset=True,
              summary="Change a building's attributes or footprint")
def update_building(code: str, body: BuildingPatch, request: Request, session: DB,
                    principal=Depends(require("housing.write"))) -> dict:
    changes = body.model_dump(exclude_unset=True, exclude={"geometry", "crs"})
    footprint = geometry_from_geojson(body.geometry, body.crs) if body.geometry is not None else None
    building = service.update_building(session, principal.actor(request_id(request)), principal.scope, code, changes, footprint)
    session.commit()
    return service.building_dict(building)


@router.get("/buildings/{code}", response_model=BuildingDetail, response_model_exclude_unset=True,
            summary="A building with its households and residents (personal data masked without personal.read)")
def get_building(code: str, session: DB, principal=Depends(require("housing.read")), crs: str | None = None) -> dict:
    data = service.building_detail(session, principal.scope, _personal(principal), code)
    return _with_geometry(data, crs)


@router.get("/households/{code}", response_model=HouseholdDetail, response_model_exclude_unset=True,
            summary="A household with its residents (personal data masked without personal.read)")
def get_household(code: str, session: DB, principal=Depends(require("housing.read"))) -> dict:
    return service.household_detail(session, principal.scope, _personal(principal), code)


class ThreatIn(BaseModel):
    geometry: dict = Field(description="GeoJSON Polygon/MultiPolygon (or a Feature holding one)")
    crs: str | None = Field(default=None, description="CRS of `geometry` (default EPSG:4490 lon/lat)")
    limit: int = Field(default=service.THREAT_PAGE, ge=0, le=service.THREAT_PAGE_MAX,
                       description="Items per page of each list (buildings, households, vulnerable residents); "
                                   "totals and the by-village/by-grid groups are always exact and complete")
    offset: NonNegInt64 = Field(default=0, description="Offset of the page in each list (see `page.next_offset`)")


@router.post("/threatened", response_model=ThreatOut, response_model_exclude_unset=True,
             summary="Who is threatened: buildings, households, residents and vulnerable people in a zone")
def threatened(body: ThreatIn, session: DB, principal=Depends(require("housing.read"))) -> dict:
    geometry = body.geometry.get("geometry") if body.geometry.get("type") == "Feature" else body.geometry
    zone = geometry_from_geojson(geometry, body.crs)
    return service.threatened(session, principal.scope, _personal(principal), zone, limit=body.limit,
                              offset=body.offset)


class HouseholdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    building_code: str
    head_name: str = Field(max_length=50)
    phone: str | None = Field(default=None, max_length=20)
    address: str | None = Field(default=None, max_length=500)
    room: str | None = Field(default=None, max_length=50)
    members: Int32 = 0


class HouseholdPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    head_name: str | None = Field(default=None, max_length=50)
    phone: str | None = Field(default=None, max_length=20)
    address: str | None = Field(default=None, max_length=500)
    room: str | None = Field(default=None, max_length=50)
    members: Int32 | None = None


class ResidentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=50)
    id_number: str | None = Field(default=None, max_length=18)
    birth_year: Int32 | None = None
    sex: Literal["男", "女"] | None = None
    phone: str | None = Field(default=None, max_length=20)
    relation: str | None = Field(default=None, max_length=20)
    elderly: StrictBool | None = None
    disabled: StrictBool = False
    child: StrictBool | None = None
    bedridden: StrictBool = False


class ResidentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=50)
    id_number: str | None = Field(default=None, max_length=18)
    birth_year: Int32 | None = None
    sex: Literal["男", "女"] | None = None
    phone: str | None = Field(default=None, max_length=20)
    relation: str | None = Field(default=None, max_length=20)
    elderly: StrictBool | None = None
    disabled: StrictBool | None = None
    child: StrictBool | None = None
    bedridden: StrictBool | None = None


def _household_out(session, principal, code: str) -> dict:
    return service.household_detail(session, principal.scope, _personal(principal), code)


@router.post("/households", status_code=201, response_model=HouseholdDetail, response_model_exclude_unset=True,
             summary="Register a household in a building")
def create_household(body: HouseholdIn, request: Request, session: DB, principal=Depends(require("housing.write"))) -> dict:
    household = service.create_household(session, principal.actor(request_id(request)), principal.scope, body.model_dump())
    session.commit()
    return _household_out(session, principal, household.code)


@router.patch("/households/{code}", response_model=HouseholdDetail, response_model_exclude_unset=True,
              summary="Change a household (head, contact, room, members)")
def update_household(code: str, body: HouseholdPatch, request: Request, session: DB,
                     principal=Depends(require("housing.write"))) -> dict:
    service.update_household(session, principal.actor(request_id(request)), principal.scope, code,
                             body.model_dump(exclude_unset=True))
    session.commit()
    return _household_out(session, principal, code)


@router.post("/households/{code}/residents", status_code=201, response_model=ResidentOut, response_model_exclude_unset=True,
             summary="Register a resident of a household")
def create_resident(code: str, body: ResidentIn, request: Request, session: DB,
                    principal=Depends(require("housing.write"))) -> dict:
    data = {k: v for k, v in body.model_dump().items() if v is not None}
    resident = service.create_resident(session, principal.actor(request_id(request)), principal.scope, code, data)
    session.commit()
    return service.resident_dict(resident, principal.scope, _personal(principal))


@router.patch("/residents/{resident_id}", response_model=ResidentOut, response_model_exclude_unset=True,
              summary="Change a resident (vulnerable flags, contact, id number …)")
def update_resident(resident_id: Id, body: ResidentPatch, request: Request, session: DB,
                    principal=Depends(require("housing.write"))) -> dict:
    resident = service.update_resident(session, principal.actor(request_id(request)), principal.scope, resident_id,
                                       body.model_dump(exclude_unset=True))
    session.commit()
    return service.resident_dict(resident, principal.scope, _personal(principal))

"""Routes: buildings (房屋), households (住户) and "who is threatened" (受威胁人员) for a zone."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from shapely.geometry import mapping

from cityops.core.crs import from_canonical, parse_crs
from cityops.core.web import DB, require
from cityops.housing import service
from cityops.org.routes import MAX_PAGE, geometry_from_geojson, parse_bbox

router = APIRouter(prefix="/api", tags=["housing"])


def _personal(principal) -> bool:
    return principal.role.allows("personal.read")


def _with_geometry(data: dict, crs: str | None) -> dict:
    geom = data.pop("geometry", None)
    if geom is not None:
        data["geometry"] = mapping(from_canonical(geom, parse_crs(crs)))
    return data


@router.get("/buildings", summary="List buildings in your scope, by bbox, unit subtree and JGJ 125 safety grade")
def list_buildings(session: DB, principal=Depends(require("housing.read")), bbox: str | None = None,
                   root: str | None = None, grade: str | None = Query(None, description="e.g. C,D or none"),
                   geometry: bool = False, crs: str | None = None,
                   limit: int = Query(100, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0)) -> dict:
    if crs:
        parse_crs(crs)
    rows, total = service.list_buildings(session, principal.scope, bbox=parse_bbox(bbox), root=root,
                                         grades=service.parse_grades(grade), limit=limit, offset=offset)
    items = [_with_geometry(service.building_dict(b, geometry=geometry), crs) for b in rows]
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/buildings/{code}", summary="A building with its households and residents (personal data masked without personal.read)")
def get_building(code: str, session: DB, principal=Depends(require("housing.read")), crs: str | None = None) -> dict:
    data = service.building_detail(session, principal.scope, _personal(principal), code)
    return _with_geometry(data, crs)


@router.get("/households/{code}", summary="A household with its residents (personal data masked without personal.read)")
def get_household(code: str, session: DB, principal=Depends(require("housing.read"))) -> dict:
    return service.household_detail(session, principal.scope, _personal(principal), code)


class ThreatIn(BaseModel):
    geometry: dict = Field(description="GeoJSON Polygon/MultiPolygon (or a Feature holding one)")
    crs: str | None = Field(default=None, description="CRS of `geometry` (default EPSG:4490 lon/lat)")
    limit: int = Field(default=1000, ge=0, le=100_000, description="Most items per list; totals are always exact")


@router.post("/threatened", summary="Who is threatened: buildings, households, residents and vulnerable people in a zone")
def threatened(body: ThreatIn, session: DB, principal=Depends(require("housing.read"))) -> dict:
    geometry = body.geometry.get("geometry") if body.geometry.get("type") == "Feature" else body.geometry
    zone = geometry_from_geojson(geometry, body.crs)
    return service.threatened(session, principal.scope, _personal(principal), zone, limit=body.limit)

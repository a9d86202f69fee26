"""Routes: cameras (视频监控) — register, list, change, the camera map with view cones, the cameras that see a
point, an incident or a case, and the HLS files of cameras this server plays itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry import Point

from cityops.core.crs import check_lonlat
from cityops.core.errors import InvalidGeometry, NotFound
from cityops.core.params import Id, NonNegInt64
from cityops.core.web import DB, Ctx, request_id, require
from cityops.events.actions import get_case
from cityops.org.routes import MAX_PAGE, geometry_from_geojson
from cityops.tasks.incidents import get_incident
from cityops.video import gb28181, service

router = APIRouter(prefix="/api/video", tags=["video"])
#: The files of an HLS stream: the playlists and the segments (MPEG-TS, fMP4 and its init segment).
MEDIA_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".m4s": "video/iso.segment",
               ".mp4": "video/mp4"}


class CameraIn(BaseModel):
    code: str = Field(description="GB/T 28181 20-digit code: 8 center + 2 industry + 3 type (131/132) + 7 serial")
    name: str = Field(min_length=1, max_length=200)
    unit_code: str = Field(description="The unit (township, village, grid) that owns the camera")
    geometry: dict = Field(description="GeoJSON Point")
    crs: str | None = None
    direction_deg: float = Field(description="Azimuth of the view, degrees clockwise from north, [0, 360)")
    fov_deg: float = Field(default=60.0, description="Horizontal field of view, degrees (360 = all round)")
    range_m: float = Field(default=150.0, description="How far it sees, metres")
    hls_url: str | None = Field(default=None, max_length=2000, description="HLS playlist (http(s) URL or a path on this server)")
    rtsp_url: str | None = Field(default=None, max_length=2000)
    status: Literal["online", "offline", "fault"] = "online"
    attributes: dict = Field(default_factory=dict)


class CameraPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    unit_code: str | None = None
    geometry: dict | None = None
    crs: str | None = None
    direction_deg: float | None = None
    fov_deg: float | None = None
    range_m: float | None = None
    hls_url: str | None = Field(default=None, max_length=2000)
    rtsp_url: str | None = Field(default=None, max_length=2000)
    status: Literal["online", "offline", "fault"] | None = None
    attributes: dict | None = None


class CameraOut(BaseModel):
    code: str
    name: str
    type_code: str
    type_name_zh: str | None
    type_name_en: str | None
    lon: float
    lat: float
    direction_deg: float
    fov_deg: float
    range_m: float
    hls_url: str | None
    play_url: str = Field(description="Where the browser plays it: its HLS URL, the media server's, or this server's")
    rtsp_url: str | None
    status: str
    unit_code: str
    unit_path: str
    attributes: dict
    updated_at: str | None


class CameraDetail(CameraOut):
    code_parts: dict = Field(description="The code's parts: center, industry, type, serial and network, with names")


class CameraPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CameraOut]


class SeenBy(CameraOut):
    distance_m: float
    bearing_deg: float = Field(description="Bearing from the camera to the target, degrees from north")
    off_axis_deg: float = Field(description="Angle between the camera's centre line and the target")
    in_view: bool = Field(description="The target is within the camera's range and field of view")


class Nearest(BaseModel):
    target: dict = Field(description="The point looked for: lon, lat (and what it is)")
    radius_m: float
    items: list[SeenBy]


def _stream_base(ctx) -> str:
    return ctx.settings.video_stream_base


def _detail(cam, ctx) -> dict:
    return {**service.camera_dict(cam, _stream_base(ctx)), "code_parts": gb28181.parse(cam.code).describe()}


@router.get("/cameras", response_model=CameraPage, summary="Cameras in your scope (by unit subtree, status)")
def list_cameras(session: DB, ctx: Ctx, principal=Depends(require("video.read")), root: str | None = None,
                 status: Literal["online", "offline", "fault"] | None = None,
                 limit: int = Query(100, ge=1, le=MAX_PAGE), offset: NonNegInt64 = 0) -> dict:
    rows, total = service.list_cameras(session, principal.scope, root=root, status=status, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset,
            "items": [service.camera_dict(c, _stream_base(ctx)) for c in rows]}


@router.post("/cameras", status_code=201, response_model=CameraDetail,
             summary="Register a camera (its GB/T 28181 code checked part by part; inside your scope)")
def create_camera(body: CameraIn, request: Request, session: DB, ctx: Ctx, principal=Depends(require("video.write"))) -> dict:
    data = body.model_dump()
    data["geometry"] = geometry_from_geojson(body.geometry, body.crs)
    cam = service.create_camera(session, principal.actor(request_id(request)), principal.scope, data)
    session.commit()
    return _detail(cam, ctx)


@router.get("/cameras/{code}", response_model=CameraDetail, summary="One camera with the parts of its code")
def get_camera(code: str, session: DB, ctx: Ctx, principal=Depends(require("video.read"))) -> dict:
    return _detail(service.get_camera(session, principal.scope, code), ctx)


@router.patch("/cameras/{code}", response_model=CameraDetail, summary="Change a camera's view, streams, status or place")
def update_camera(code: str, body: CameraPatch, request: Request, session: DB, ctx: Ctx,
                  principal=Depends(require("video.write"))) -> dict:
    changes = body.model_dump(exclude_unset=True)
    changes.pop("crs", None)
    if "geometry" in changes:
        if changes["geometry"] is None:
            raise InvalidGeometry("a camera needs a position")
        changes["geometry"] = geometry_from_geojson(body.geometry, body.crs)
    for key in ("name", "unit_code", "direction_deg", "fov_deg", "range_m", "status", "attributes"):
        if key in changes and changes[key] is None:
            changes.pop(key)
    cam = service.update_camera(session, principal.actor(request_id(request)), principal.scope, code, changes)
    session.commit()
    return _detail(cam, ctx)


class CameraProps(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    name: str
    status: str
    direction_deg: float
    fov_deg: float
    range_m: float
    unit_code: str
    part: Literal["camera", "cone"] = Field(description="the camera's point, or its view cone (视域)")


class CameraFeature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["Feature"]
    id: int = Field(description="the camera's id; its cone's is the negative")
    geometry: dict[str, Any]
    properties: CameraProps


class CameraMap(BaseModel):
    """GeoJSON FeatureCollection of the cameras in your scope."""
    model_config = ConfigDict(extra="forbid")
    type: Literal["FeatureCollection"]
    features: list[CameraFeature]


@router.get("/map", response_model=CameraMap,
            summary="GeoJSON of the cameras in your scope: points (part=camera) and view cones (part=cone)")
def camera_map(session: DB, ctx: Ctx, principal=Depends(require("video.read")),
               bbox: str | None = Query(None, description="minLon,minLat,maxLon,maxLat")) -> dict:
    box = None
    if bbox:
        try:
            box = tuple(float(v) for v in bbox.split(","))
        except ValueError:
            box = ()
        if len(box) != 4 or not (box[0] <= box[2] and box[1] <= box[3]):
            raise InvalidGeometry(f"bbox {bbox[:100]!r} must be minLon,minLat,maxLon,maxLat")
        check_lonlat([box[0], box[2]], [box[1], box[3]])
    return service.map_features(session, principal.scope, metric_crs=ctx.settings.metric_crs, bbox=box)


def _nearest(session, ctx, principal, target: Point, radius_m: float, limit: int, status: str | None, what: dict) -> dict:
    items = service.nearest(session, principal.scope, target, metric_crs=ctx.settings.metric_crs, radius_m=radius_m,
                            limit=limit, status=status, stream_base=_stream_base(ctx))
    return {"target": {"lon": target.x, "lat": target.y, **what}, "radius_m": radius_m, "items": items}


_RADIUS = Query(2000.0, ge=1, le=service.MAX_SEARCH_M, description="search radius, metres")
_LIMIT = Query(5, ge=1, le=50)


@router.get("/nearest", response_model=Nearest,
            summary="Cameras nearest a point: those that see it first, then by distance")
def nearest_point(session: DB, ctx: Ctx, lon: float, lat: float, principal=Depends(require("video.read")),
                  radius_m: float = _RADIUS, limit: int = _LIMIT,
                  status: Literal["online", "offline", "fault"] | None = None) -> dict:
    check_lonlat(lon, lat)
    return _nearest(session, ctx, principal, Point(lon, lat), radius_m, limit, status, {"kind": "point"})


@router.get("/nearest/incident/{incident_id}", response_model=Nearest, summary="Cameras nearest an incident's hazard")
def nearest_incident(incident_id: Id, session: DB, ctx: Ctx, principal=Depends(require("video.read")),
                     radius_m: float = _RADIUS, limit: int = _LIMIT,
                     status: Literal["online", "offline", "fault"] | None = None) -> dict:
    incident = get_incident(session, principal.scope, incident_id)
    if incident.hazard_geom is None:
        raise NotFound(f"incident {incident_id} has no location")
    target = service.target_point(incident.hazard_geom)
    return _nearest(session, ctx, principal, target, radius_m, limit, status,
                    {"kind": "incident", "id": incident.id, "title": incident.title})


@router.get("/nearest/case/{number}", response_model=Nearest, summary="Cameras nearest a case (by its number or id)")
def nearest_case(number: str, session: DB, ctx: Ctx, principal=Depends(require("video.read")),
                 radius_m: float = _RADIUS, limit: int = _LIMIT,
                 status: Literal["online", "offline", "fault"] | None = None) -> dict:
    case = get_case(session, principal.scope, number)
    return _nearest(session, ctx, principal, Point(case.lon, case.lat), radius_m, limit, status,
                    {"kind": "case", "id": case.id, "number": case.number, "title": case.title})


@router.get("/cameras/{code}/stream/{name}", summary="A file of the camera's HLS stream played by this server",
            response_class=FileResponse)
def stream_file(code: str, name: str, session: DB, ctx: Ctx, principal=Depends(require("video.read"))):
    service.get_camera(session, principal.scope, code)  # scope first: 404 outside it
    session.close()  # the file is sent without holding a connection
    suffix = Path(name).suffix.lower()
    if suffix not in MEDIA_TYPES or "/" in name or "\\" in name or name.startswith("."):
        raise NotFound(f"no stream file {name!r}")
    root = (ctx.settings.video_media_dir or ctx.settings.data_dir / "video") / code
    path = root / name
    if not path.is_file():
        raise NotFound(f"no stream file {name!r} for camera {code}")
    # Live playlists change every segment: never cached; segments never change.
    cache = "no-cache" if suffix == ".m3u8" else "max-age=3600"
    return FileResponse(path, media_type=MEDIA_TYPES[suffix], headers={"Cache-Control": cache})

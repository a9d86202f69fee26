"""Cameras (视频监控): registration with a checked GB/T 28181 code, scoped reads, the camera map with view cones,
and "which cameras see this place" — the cameras nearest a point, an incident or a case, ranked by whether the
place lies in their field of view and then by distance.

Distances and bearings are computed in the deployment's metric CRS after the candidates are found with
``core.spatial.spatial_filter`` (``dwithin``), so both backends give the same ranking.
"""

from __future__ import annotations

import math
import re

import numpy as np
import shapely
from shapely.geometry import Point, Polygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.crs import from_metric, to_metric
from cityops.core.errors import Conflict, InvalidGeometry, InvalidInput, NotFound
from cityops.core.spatial import spatial_filter
from cityops.core.types import utcnow
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.video import gb28181
from cityops.video.models import Camera

STATUSES = ("online", "offline", "fault")
#: Bounds of a camera's view, so a typo (a range of 50 km) is refused rather than drawn.
MAX_RANGE_M = 5_000.0
MAX_SEARCH_M = 20_000.0
#: A unit's outline is simplified at the edge: a camera on the boundary line may stand this far outside (degrees, ~10 m).
UNIT_TOLERANCE_DEG = 1e-4
_HLS = re.compile(r"^(https?://[^\s/]+)?/[^\s]*$")
_RTSP = re.compile(r"^rtsps?://[^\s/]+(/[^\s]*)?$")


def _check_view(direction: float | None, fov: float | None, range_m: float | None) -> None:
    if direction is not None and not (math.isfinite(direction) and 0 <= direction < 360):
        raise InvalidInput(f"direction_deg {direction} must be an azimuth in [0, 360) degrees clockwise from north")
    if fov is not None and not (math.isfinite(fov) and 1 <= fov <= 360):
        raise InvalidInput(f"fov_deg {fov} must be between 1 and 360 degrees")
    if range_m is not None and not (math.isfinite(range_m) and 1 <= range_m <= MAX_RANGE_M):
        raise InvalidInput(f"range_m {range_m} must be between 1 and {MAX_RANGE_M:g} metres")


def _check_urls(hls: str | None, rtsp: str | None) -> None:
    if hls is not None and (not _HLS.match(hls) or ".m3u8" not in hls):
        raise InvalidInput(f"hls_url {hls[:200]!r} must be an http(s) URL or a path on this server, of an .m3u8 playlist")
    if rtsp is not None and not _RTSP.match(rtsp):
        raise InvalidInput(f"rtsp_url {rtsp[:200]!r} must be an rtsp:// or rtsps:// URL")


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise InvalidInput(f"status {status!r} must be one of {', '.join(STATUSES)}")


def _unit_for(session: Session, scope: Scope, unit_code: str, geom: Point) -> Unit:
    unit = session.scalar(select(Unit).where(Unit.code == unit_code))
    if unit is None or not scope.covers(unit.path):
        raise NotFound(f"unit {unit_code!r} not found")
    if unit.geom is not None and not unit.geom.buffer(UNIT_TOLERANCE_DEG).covers(geom):
        raise InvalidGeometry(f"the camera's position lies outside unit {unit.code} ({unit.name})")
    return unit


def create_camera(session: Session, actor: audit.Actor, scope: Scope, data: dict) -> Camera:
    """Register a camera inside the caller's scope; validated, all or nothing."""
    code = gb28181.parse(data["code"])
    geom = data["geometry"]
    if not isinstance(geom, Point) or geom.is_empty:
        raise InvalidGeometry("a camera's geometry must be a Point")
    _check_view(data["direction_deg"], data["fov_deg"], data["range_m"])
    _check_urls(data.get("hls_url"), data.get("rtsp_url"))
    _check_status(data.get("status", "online"))
    unit = _unit_for(session, scope, data["unit_code"], geom)
    if code.county != unit.code[:6]:
        raise InvalidInput(f"GB/T 28181 code {code.code}: center code {code.center} (digits 1–6: {code.county}) is not "
                           f"the county of unit {unit.code} ({unit.code[:6]})", details={"part": "center_code"})
    if session.scalar(select(Camera.id).where(Camera.code == code.code)) is not None:
        raise Conflict(f"camera {code.code} already exists")
    cam = Camera(code=code.code, name=data["name"], type_code=code.type_code, geom=geom,
                 direction_deg=float(data["direction_deg"]), fov_deg=float(data["fov_deg"]), range_m=float(data["range_m"]),
                 hls_url=data.get("hls_url"), rtsp_url=data.get("rtsp_url"), status=data.get("status", "online"),
                 unit_code=unit.code, unit_path=unit.path, attributes=dict(data.get("attributes") or {}))
    session.add(cam)
    session.flush()
    audit.record(session, actor, "video.camera.create", "camera", cam.code, after=camera_dict(cam), unit_path=unit.path)
    return cam


def get_camera(session: Session, scope: Scope, code: str) -> Camera:
    cam = session.scalar(select(Camera).where(Camera.code == code))
    if cam is None or not scope.covers(cam.unit_path):
        raise NotFound(f"camera {code!r} not found")
    return cam


def update_camera(session: Session, actor: audit.Actor, scope: Scope, code: str, changes: dict) -> Camera:
    """Change a camera's name, view, streams, status, position or unit (all checked first; nothing on a refusal)."""
    cam = get_camera(session, scope, code)
    before = camera_dict(cam)
    _check_view(changes.get("direction_deg"), changes.get("fov_deg"), changes.get("range_m"))
    _check_urls(changes.get("hls_url"), changes.get("rtsp_url"))
    if "status" in changes:
        _check_status(changes["status"])
    geom = changes.get("geometry", cam.geom)
    if "geometry" in changes and (not isinstance(geom, Point) or geom.is_empty):
        raise InvalidGeometry("a camera's geometry must be a Point")
    if "unit_code" in changes or "geometry" in changes:
        unit = _unit_for(session, scope, changes.get("unit_code", cam.unit_code), geom)
        if unit.code[:6] != cam.code[:6]:
            raise InvalidInput(f"unit {unit.code} is not in the county of the camera's code ({cam.code[:6]})",
                               details={"part": "center_code"})
        cam.unit_code, cam.unit_path, cam.geom = unit.code, unit.path, geom
    for key in ("name", "direction_deg", "fov_deg", "range_m", "hls_url", "rtsp_url", "status", "attributes"):
        if key in changes:
            setattr(cam, key, changes[key])
    cam.updated_at = utcnow()
    session.flush()
    audit.record(session, actor, "video.camera.update", "camera", cam.code, before=before, after=camera_dict(cam),
                 unit_path=cam.unit_path)
    return cam


def play_url(cam: Camera, stream_base: str = "") -> str:
    """Where the browser plays the camera: its own HLS URL, else the configured media server's
    (``<stream_base>/<code>/index.m3u8``, the layout of MediaMTX and SRS), else this server's media route."""
    if cam.hls_url:
        return cam.hls_url
    if stream_base:
        return f"{stream_base.rstrip('/')}/{cam.code}/index.m3u8"
    return f"/api/video/cameras/{cam.code}/stream/index.m3u8"


def camera_dict(cam: Camera, stream_base: str = "") -> dict:
    kind = gb28181.catalogue().types.get(cam.type_code)
    return {"code": cam.code, "name": cam.name, "type_code": cam.type_code,
            "type_name_zh": kind.name_zh if kind else None, "type_name_en": kind.name_en if kind else None,
            "lon": cam.geom.x, "lat": cam.geom.y, "direction_deg": cam.direction_deg, "fov_deg": cam.fov_deg,
            "range_m": cam.range_m, "hls_url": cam.hls_url, "play_url": play_url(cam, stream_base), "rtsp_url": cam.rtsp_url, "status": cam.status,
            "unit_code": cam.unit_code, "unit_path": cam.unit_path, "attributes": cam.attributes,
            "updated_at": cam.updated_at.isoformat() if cam.updated_at else None}


def list_cameras(session: Session, scope: Scope, *, root: str | None = None, status: str | None = None,
                 limit: int = 100, offset: int = 0) -> tuple[list[Camera], int]:
    stmt = select(Camera).where(scope.covers_clause(Camera.unit_path))
    if status:
        _check_status(status)
        stmt = stmt.where(Camera.status == status)
    if root:
        unit = session.scalar(select(Unit).where(Unit.code == root))
        if unit is None or not scope.sees(unit.path):
            raise NotFound(f"unit {root!r} not found")
        stmt = stmt.where(Camera.unit_path.startswith(unit.path, autoescape=True))
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = list(session.scalars(stmt.order_by(Camera.unit_path, Camera.code).limit(limit).offset(offset)))
    return rows, total


# ------------------------------------------------------------------------------------------ view geometry

def cone(cam: Camera, metric_crs: str, steps: int = 12) -> BaseGeometry:
    """The camera's view on the ground: a sector of ``range_m`` around ``direction_deg`` ± ``fov_deg``/2 (a
    circle for 360°), in the canonical CRS."""
    c = to_metric(cam.geom, metric_crs)
    if cam.fov_deg >= 360:
        return from_metric(c.buffer(cam.range_m, quad_segs=16), metric_crs)
    start = cam.direction_deg - cam.fov_deg / 2
    az = np.radians(start + cam.fov_deg * np.arange(steps + 1) / steps)
    ring = [(c.x, c.y)] + list(zip(c.x + cam.range_m * np.sin(az), c.y + cam.range_m * np.cos(az), strict=True))
    return from_metric(Polygon(ring), metric_crs)


def view_of(cam: Camera, target: Point, metric_crs: str) -> dict:
    """Distance (m), bearing from the camera (degrees from north), the angle off its centre line and whether
    ``target`` is in its field of view (within range and the angle)."""
    c, t = to_metric(cam.geom, metric_crs), to_metric(target, metric_crs)
    dx, dy = t.x - c.x, t.y - c.y
    distance = math.hypot(dx, dy)
    bearing = math.degrees(math.atan2(dx, dy)) % 360.0
    off = abs((bearing - cam.direction_deg + 540.0) % 360.0 - 180.0)
    in_view = distance <= cam.range_m and (cam.fov_deg >= 360 or off <= cam.fov_deg / 2 or distance < 1.0)
    return {"distance_m": round(distance, 1), "bearing_deg": round(bearing, 1), "off_axis_deg": round(off, 1),
            "in_view": in_view}


def target_point(geom: BaseGeometry) -> Point:
    """The place a camera should look at: a point as it is, a zone at a point inside it."""
    if geom is None or geom.is_empty:
        raise InvalidGeometry("the target has no location")
    return geom if geom.geom_type == "Point" else shapely.Point(geom.representative_point())


def nearest(session: Session, scope: Scope, target: Point, *, metric_crs: str, radius_m: float = 2_000.0,
            limit: int = 5, status: str | None = None, stream_base: str = "") -> list[dict]:
    """The cameras in scope within ``radius_m`` of ``target``, those that see it first, then by distance."""
    if not (math.isfinite(radius_m) and 1 <= radius_m <= MAX_SEARCH_M):
        raise InvalidInput(f"radius_m {radius_m} must be between 1 and {MAX_SEARCH_M:g} metres")
    stmt = select(Camera).where(scope.covers_clause(Camera.unit_path))
    if status:
        _check_status(status)
        stmt = stmt.where(Camera.status == status)
    rows = spatial_filter(session, Camera, stmt, "dwithin", target, distance_m=radius_m, metric_crs=metric_crs)
    ranked = []
    for cam in rows:
        view = view_of(cam, target, metric_crs)
        ranked.append({**camera_dict(cam, stream_base), **view})
    ranked.sort(key=lambda r: (not r["in_view"], r["status"] != "online", r["distance_m"], r["code"]))
    return ranked[:limit]


def map_features(session: Session, scope: Scope, *, metric_crs: str, bbox: tuple[float, float, float, float] | None = None,
                 limit: int = 5_000) -> dict:
    """GeoJSON of the cameras in scope: each camera as a point and its view cone as a polygon (``part``)."""
    stmt = select(Camera).where(scope.covers_clause(Camera.unit_path))
    if bbox:
        rows = spatial_filter(session, Camera, stmt, "intersects", shapely.box(*bbox), metric_crs=metric_crs)[:limit]
    else:
        rows = list(session.scalars(stmt.order_by(Camera.id).limit(limit)))
    features = []
    for cam in rows:
        props = {"code": cam.code, "name": cam.name, "status": cam.status, "direction_deg": cam.direction_deg,
                 "fov_deg": cam.fov_deg, "range_m": cam.range_m, "unit_code": cam.unit_code}
        features.append({"type": "Feature", "id": cam.id, "geometry": shapely.geometry.mapping(cam.geom),
                         "properties": {**props, "part": "camera"}})
        features.append({"type": "Feature", "id": -cam.id,
                         "geometry": shapely.geometry.mapping(cone(cam, metric_crs)), "properties": {**props, "part": "cone"}})
    return {"type": "FeatureCollection", "features": features}

"""Demo step ``cameras``: a camera at every risk point, looking at it from across the slope, and one at each
village centre, where the valley roads meet, looking down the road to the next village.

Codes follow GB/T 28181: the district's county code and basic access unit 01, industry 08 (城市管理) for the
risk points and 04 (交通路面) for the roads, type 132 (IPC), network 6 (政务网). The cameras carry no HLS URL
of their own: the server plays ``<video_media_dir>/<code>/`` or the configured media server
(``Settings.video_stream_base``); ``rtsp_url`` names the media server's RTSP path.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely.geometry import Point
from shapely.strtree import STRtree
from sqlalchemy import select

from cityops.core import audit
from cityops.core.crs import LocalPlane
from cityops.demo.generator import DemoContext, register_step
from cityops.identity.scope import Scope
from cityops.org.models import Unit
from cityops.video import gb28181, service
from cityops.warning import demo as _warning_demo  # noqa: F401  (the "risk_points" step this one follows)
from cityops.warning.tables import RiskPoint

#: Metres between a risk point and the camera that watches it.
RISK_POINT_STANDOFF_M = 90.0
MAX_ROAD_CAMERAS = 120
RTSP_BASE = "rtsp://127.0.0.1:8554"


def _bearing(a: Point, b: Point) -> float:
    return math.degrees(math.atan2(b.x - a.x, b.y - a.y)) % 360.0


def step_cameras(ctx: DemoContext) -> None:
    rng = np.random.default_rng(ctx.config.seed + 28181)
    actor = audit.Actor("system:demo")
    with ctx.sessions() as session:
        grids = list(session.scalars(select(Unit).where(Unit.level == "grid", Unit.geom.is_not(None)).order_by(Unit.code)))
        villages = list(session.scalars(select(Unit).where(Unit.level == "village", Unit.geom.is_not(None)).order_by(Unit.code)))
        points = list(session.scalars(select(RiskPoint).order_by(RiskPoint.code)))
        if not grids:
            return
        plane = LocalPlane.around([g.geom for g in grids])
        tree = STRtree([g.geom for g in grids])

        def grid_at(p: Point) -> Unit | None:
            hits = tree.query(p, predicate="intersects")
            return grids[int(min(hits))] if len(hits) else None

        serial = 0
        made = 0

        def add(name: str, where: Point, looks_at: Point, industry: str, fov: float, range_m: float, attrs: dict) -> None:
            nonlocal serial, made
            unit = grid_at(where)
            if unit is None:
                return
            serial += 1
            code = gb28181.make(unit.code[:6] + "01", industry, "132", serial)
            offline = rng.random() < 0.05
            service.create_camera(session, actor, Scope(all_units=True), {
                "code": code, "name": name, "unit_code": unit.code, "geometry": where,
                "direction_deg": round(_bearing(plane.forward(where), plane.forward(looks_at)), 1),
                "fov_deg": fov, "range_m": range_m, "hls_url": None, "rtsp_url": f"{RTSP_BASE}/{code}",
                "status": "offline" if offline else "online", "attributes": attrs})
            made += 1

        for rp in points:
            centre = plane.forward(rp.geom)
            angle = rng.uniform(0, 2 * math.pi)
            spot = plane.inverse(Point(centre.x + RISK_POINT_STANDOFF_M * math.sin(angle),
                                       centre.y + RISK_POINT_STANDOFF_M * math.cos(angle)))
            add(f"{rp.name}监控", spot, rp.geom, "08", 55.0, 250.0, {"risk_point_code": rp.code})

        centres = [plane.inverse(plane.forward(v.geom).representative_point()) for v in villages[:MAX_ROAD_CAMERAS]]
        metric = np.array([[plane.forward(c).x, plane.forward(c).y] for c in centres]) if centres else np.zeros((0, 2))
        for i, (village, centre) in enumerate(zip(villages[:MAX_ROAD_CAMERAS], centres, strict=True)):
            if len(centres) < 2:
                break
            d = np.hypot(*(metric - metric[i]).T)
            d[i] = np.inf
            nxt = centres[int(np.argmin(d))]
            add(f"{village.name}路口", centre, nxt, "04", 90.0, 200.0, {"road": f"{village.name}—{_name_of(villages, nxt)}"})
        session.commit()
    ctx.summary["cameras"] = made


def _name_of(villages: list[Unit], centre: Point) -> str:
    for v in villages:
        if v.geom.covers(centre):
            return v.name
    return ""


register_step("cameras", step_cameras, after="risk_points")

"""Routes: risk points (风险点位) with their current level and why, warning history, the model catalogue,
and the public CAP 1.2 feed at ``/cap``."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select

from cityops.core.crs import from_canonical, parse_crs
from cityops.core.errors import InvalidGeometry, InvalidInput, NotFound
from cityops.core.params import NonNegInt64
from cityops.core.types import utcnow
from cityops.core.web import DB, Ctx, bearer_token, request_id, require
from cityops.org.routes import MAX_PAGE, geometry_from_geojson
from cityops.warning import cap, service
from cityops.warning.catalogue import catalogue
from cityops.warning.schemas import AssessmentOut, RiskPointDetail, RiskPointPage, WarningModelsOut, WarningPage
from cityops.warning.tables import RiskPoint, RiskWarning

router = APIRouter(tags=["warning"])
#: Registration bounds of a risk point, from the catalogue ([registry]), so the route and the service agree.
_REGISTRY = catalogue().params["registry"]
CAP_MEDIA = "application/cap+xml; charset=utf-8"
ATOM_MEDIA = "application/atom+xml; charset=utf-8"


class RiskPointIn(BaseModel):
    code: str = Field(min_length=2, max_length=64, description="Unique code (letters, digits, '_', '.', '-')")
    name: str = Field(min_length=1, max_length=200)
    hazard_type: str = Field(description="landslide, unstable_slope, collapse, debris_flow, ground_subsidence, dangerous_house")
    unit_code: str = Field(description="Grid or village the point lies in")
    geometry: dict = Field(description="GeoJSON Point")
    crs: str | None = None
    radius_m: float = Field(default=_REGISTRY["default_radius_m"], ge=_REGISTRY["min_radius_m"], le=_REGISTRY["max_radius_m"],
                            description="Radius of the threatened zone (CAP circle), metres")
    building_codes: list[str] = Field(default_factory=list, max_length=5000)
    datastreams: dict = Field(default_factory=dict, description='{"rainfall": id, "displacement": [ids], "tilt": [{"id": …, "building_code": …}]}')
    model: dict = Field(default_factory=dict, description='{"threshold_set": …, "displacement": {"v_constant_mm_per_day": …}}')
    attributes: dict = Field(default_factory=dict)


def _with_crs(item: dict, crs: str | None) -> dict:
    if crs and item.get("lon") is not None:
        from shapely.geometry import Point

        p = from_canonical(Point(item["lon"], item["lat"]), parse_crs(crs))
        item["x"], item["y"] = p.x, p.y
    return item


@router.get("/api/risk-points", response_model=RiskPointPage, response_model_exclude_unset=True,
            summary="Risk points in your scope with their current warning level (most severe first)")
def list_risk_points(session: DB, principal=Depends(require("warning.read")),
                     level: str | None = Query(None, description="e.g. orange,red"),
                     min_level: str | None = Query(None, description="at or above this level"),
                     hazard_type: str | None = None, root: str | None = None, crs: str | None = None,
                     limit: int = Query(100, ge=1, le=MAX_PAGE), offset: NonNegInt64 = 0) -> dict:
    if crs:
        parse_crs(crs)
    rows, total = service.list_risk_points(session, principal.scope, level=level, min_level=min_level, hazard_type=hazard_type,
                                           root=root, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": [_with_crs(service.risk_point_dict(r), crs) for r in rows]}


@router.post("/api/risk-points", status_code=201, response_model=RiskPointDetail,
             summary="Register a risk point (validated; inside your scope)")
def create_risk_point(body: RiskPointIn, request: Request, session: DB, principal=Depends(require("warning.write"))) -> dict:
    data = body.model_dump()
    geom = geometry_from_geojson(body.geometry, body.crs)
    if geom.geom_type != "Point":
        raise InvalidGeometry(f"a risk point's geometry must be a Point, got {geom.geom_type}")
    data["geometry"] = geom
    rp = service.create_risk_point(session, principal.actor(request_id(request)), principal.scope, data)
    session.commit()
    return service.risk_point_detail(session, principal.scope, rp.code)


@router.get("/api/risk-points/{code}", response_model=RiskPointDetail,
            summary="One risk point: level, the reasons (observations and model output) and history")
def get_risk_point(code: str, session: DB, principal=Depends(require("warning.read")),
                   history: int = Query(50, ge=0, le=1000)) -> dict:
    return service.risk_point_detail(session, principal.scope, code, history=history)


class EvaluateIn(BaseModel):
    at: datetime | None = Field(default=None, description="evaluation time with a UTC offset (default: now)")


@router.post("/api/risk-points/{code}/evaluate", response_model=AssessmentOut,
             summary="Evaluate a risk point now (or at `at`) from its datastreams; stores the level and any change")
def evaluate_risk_point(code: str, session: DB, request: Request, body: EvaluateIn | None = None,
                        principal=Depends(require("warning.write"))) -> dict:
    service.get_risk_point(session, principal.scope, code)  # scope first: 404 outside it
    at = (body.at if body and body.at else utcnow())
    if at.tzinfo is None:
        raise InvalidInput("'at' needs a UTC offset, e.g. 2026-07-09T06:00:00+08:00")
    series = request.app.state.ctx.series_source or service.stored_series
    return service.evaluate_risk_point(session, code, series(session), at).as_dict()


@router.get("/api/warnings", response_model=WarningPage,
            summary="Warning history (level changes) of the risk points in your scope, newest first")
def list_warnings(session: DB, principal=Depends(require("warning.read")), level: str | None = None,
                  since: datetime | None = None, limit: int = Query(100, ge=1, le=MAX_PAGE), offset: NonNegInt64 = 0) -> dict:
    items, total = service.list_warnings(session, principal.scope, level=level, since=since, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/api/warning-models", response_model=WarningModelsOut,
            summary="The warning model catalogue: levels, published curves, threshold sets, defaults")
def warning_models(principal=Depends(require("warning.read"))) -> dict:
    cat = catalogue()
    return {"levels": cat.levels, "curves": [c.metadata() for c in cat.curves.values()],
            "threshold_sets": [t.metadata() for t in cat.threshold_sets.values()], "defaults": cat.params,
            "hazard_types": cat.hazard_types}


# --------------------------------------------------------------------------------------------- CAP

def _optional_principal(request: Request, ctx, session):
    """The caller if credentials are sent (they must then be valid), else None: the feed is public."""
    if not bearer_token(request):
        return None
    from cityops.identity.service import resolve_token

    principal = resolve_token(session, ctx.settings.resolved_secret, bearer_token(request))
    return principal if principal.role.allows("warning.read") else None


def _visible(principal, warning: RiskWarning) -> bool:
    if cap.is_public(warning.level, warning.msg_type, warning.previous_level):
        return True
    return principal is not None and principal.scope.covers(warning.unit_path)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/cap", summary="CAP 1.2 index (Atom): current alerts and those of the last `days`. Public; internal 蓝 alerts need warning.read",
            response_class=Response)
def cap_feed(request: Request, ctx: Ctx, session: DB, days: int | None = Query(None, ge=1, le=3650),
             limit: int | None = Query(None, ge=1, le=1000)):
    principal = _optional_principal(request, ctx, session)
    cfg = catalogue().cap
    since = utcnow() - timedelta(days=days or int(cfg["feed_days"]))
    # Current alerts (the latest message of every risk point still at a level) whatever their age, plus recent ones.
    current = (select(func.max(RiskWarning.id)).join(RiskPoint, RiskPoint.id == RiskWarning.risk_point_id)
               .where(RiskPoint.level != "none").group_by(RiskWarning.risk_point_id))
    stmt = (select(RiskWarning, RiskPoint).join(RiskPoint, RiskPoint.id == RiskWarning.risk_point_id)
            .where(or_(RiskWarning.issued_at >= since, RiskWarning.id.in_(current))))
    public_levels = [k for k, v in catalogue().levels.items() if v.get("public")]
    public = or_(RiskWarning.level.in_(public_levels) & (RiskWarning.msg_type != "Cancel"),
                 RiskWarning.previous_level.in_(public_levels) & (RiskWarning.msg_type == "Cancel"))
    stmt = stmt.where(public | principal.scope.covers_clause(RiskWarning.unit_path)) if principal else stmt.where(public)
    rows = session.execute(stmt.order_by(RiskWarning.issued_at.desc(), RiskWarning.id.desc())
                           .limit(limit or int(cfg["feed_limit"]))).all()
    updated = rows[0][0].issued_at if rows else utcnow()
    return Response(cap.build_feed([(w, rp) for w, rp in rows], _base(request), updated), media_type=ATOM_MEDIA)


@router.get("/cap/alerts/{identifier}.xml", summary="One CAP 1.2 message", response_class=Response)
def cap_alert(identifier: str, request: Request, ctx: Ctx, session: DB):
    principal = _optional_principal(request, ctx, session)
    row = session.execute(select(RiskWarning, RiskPoint).join(RiskPoint, RiskPoint.id == RiskWarning.risk_point_id)
                          .where(RiskWarning.identifier == identifier)).first()
    if row is None or not _visible(principal, row[0]):
        raise NotFound(f"CAP message {identifier!r} not found")
    return Response(cap.build_alert(row[0], row[1], _base(request)), media_type=CAP_MEDIA)

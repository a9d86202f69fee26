"""Routes of the task center: incidents and plans, risk zones, evacuation, shelters, live stream, tasks."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cityops.core.errors import InvalidGeometry, InvalidInput
from cityops.core import sse
from cityops.core.params import Id, Int32, NonNegInt64
from cityops.core.web import DB, Ctx, request_id, require
from cityops.org.routes import geometry_from_geojson
from cityops.tasks import evacuation, incidents, report, response, shelters, work, zones
from cityops.tasks.catalogue import Plan
from cityops.tasks.plans import plans_summary
from cityops.tasks.schemas import (EvacuationOut, EvacuationPage, IncidentDetail, IncidentOut, LogEntry, MyHouseholdsOut,
                                   OverdueOut, RemovedOut, ShelterItem, ShelterOut, StateChange, StatsOut, TaskOut, TaskTree,
                                   TotalsOut, WarningOut, ZoneOut, ZoneThreatOut)

router = APIRouter(prefix="/api", tags=["tasks"])

#: Most features in an imported zone file; how often a live stream looks for new steps.
MAX_ZONE_FEATURES = 1000
STREAM_POLL_SECONDS = 0.25


def _actor(principal, request: Request):
    return principal.actor(request_id(request))


def _prepare(session, ctx) -> None:
    session.info["metric_crs"] = ctx.settings.metric_crs


@contextmanager
def _writer(session):
    """A write transaction for the hot, concurrent writes (household state changes): a fresh one (the
    credentials were read in the request's first), rolled back on any error. It reads before it takes the
    embedded store's writer lock (``evacuation.change_state`` says why and how a change in between is found)."""
    session.commit()
    try:
        yield
    except BaseException:
        session.rollback()
        raise


def _near(lon: float | None, lat: float | None):
    if lon is None and lat is None:
        return None
    if lon is None or lat is None or not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput("near needs both lon (−180…180) and lat (−90…90)")
    return (lon, lat)


# ---------------------------------------------------------------------------------------- plans, incidents

@router.get("/plans", response_model=list[Plan],
            summary="Emergency plan catalogue (应急预案): per hazard type and response level I–IV")
def list_plans(principal=Depends(require("tasks.read"))) -> list[dict]:
    return plans_summary()


class IncidentIn(BaseModel):
    hazard_type: str = Field(min_length=1, max_length=64)
    level: Int32 | str = Field(description="response level 1–4 (I–IV) or a warning colour")
    unit_code: str = Field(min_length=6, max_length=20)
    geometry: dict | None = Field(default=None, description="hazard body (GeoJSON); the zone is computed from it")
    crs: str | None = None
    risk_point_code: str | None = Field(default=None, max_length=64)
    title: str | None = Field(default=None, max_length=200)
    propose: bool = Field(default=False, description="open as a proposal for one-click confirmation")
    drill: bool = False


@router.get("/incidents", response_model=list[IncidentOut], summary="Incidents (应急响应) you see; drills are marked")
def list_incidents(session: DB, principal=Depends(require("tasks.read")), status: str | None = None,
                   drill: bool | None = None) -> list[dict]:
    return [incidents.incident_dict(i) for i in incidents.list_incidents(session, principal.scope, status=status, drill=drill)]


@router.post("/incidents", status_code=201, response_model=IncidentOut,
             summary="Start a response by hand under a plan (or run it as a drill)")
def open_incident(body: IncidentIn, request: Request, ctx: Ctx, session: DB, principal=Depends(require("tasks.command"))) -> dict:
    _prepare(session, ctx)
    geometry = geometry_from_geojson(body.geometry, body.crs) if body.geometry else None
    incident = response.open_incident(session, _actor(principal, request), principal.scope, hazard_type=body.hazard_type,
                                     level=body.level, unit_code=body.unit_code, geometry=geometry,
                                     risk_point_code=body.risk_point_code, title=body.title,
                                     activation="proposed" if body.propose else "manual", drill=body.drill)
    session.commit()
    return incidents.incident_dict(incident)


class WarningIn(BaseModel):
    risk_point_code: str = Field(min_length=1, max_length=64)
    hazard_type: str = Field(min_length=1, max_length=64)
    level: Int32 | str | None
    unit_code: str = Field(min_length=6, max_length=20)
    geometry: dict | None = None
    crs: str | None = None
    evidence: dict[str, Any] = {}
    drill: bool = False


@router.post("/incidents/warning", response_model=WarningOut,
             summary="Deliver a warning level change to the plans (as the warning engine does)")
def warning(body: WarningIn, request: Request, ctx: Ctx, session: DB, principal=Depends(require("tasks.command"))) -> dict:
    _prepare(session, ctx)
    geometry = geometry_from_geojson(body.geometry, body.crs) if body.geometry else None
    from cityops.org import service as org

    unit = org.get_unit(session, body.unit_code, principal.scope)
    principal.scope.require_covers(unit.path, f"unit {body.unit_code}")
    incident = response.on_warning(session, risk_point_code=body.risk_point_code, hazard_type=body.hazard_type, level=body.level,
                                  unit_code=body.unit_code, geometry=geometry, evidence=body.evidence,
                                  actor=_actor(principal, request), drill=body.drill)
    session.commit()
    return {"incident": incidents.incident_dict(incident) if incident else None}


@router.get("/incidents/stats", response_model=StatsOut, summary="Real statistics (drills excluded unless asked)")
def stats(session: DB, principal=Depends(require("tasks.read")), include_drills: bool = False) -> dict:
    return incidents.statistics(session, principal.scope, include_drills=include_drills)


@router.get("/incidents/{incident_id}", response_model=IncidentDetail, response_model_exclude_unset=True,
            summary="An incident with its current zone and totals at your scope")
def get_incident(incident_id: Id, session: DB, principal=Depends(require("tasks.read"))) -> dict:
    incident = incidents.get_incident(session, principal.scope, incident_id)
    data = incidents.incident_dict(incident)
    zone = zones.current_zone(session, incident.id)
    data["zone"] = zones.zone_dict(zone) if zone else None
    data["totals"] = evacuation.totals(session, principal.scope, incident.id)
    return data


class ReasonIn(BaseModel):
    reason: str = Field(default="", max_length=2000)


class LevelIn(ReasonIn):
    level: Int32 | str


class CloseIn(BaseModel):
    note: str = Field(min_length=1, max_length=4000)


def _command(fn, incident_id: int, request: Request, ctx: Ctx, session, principal, *args) -> dict:
    _prepare(session, ctx)
    incident = fn(session, _actor(principal, request), principal.scope, incident_id, *args)
    session.commit()
    return incidents.incident_dict(incident)


@router.post("/incidents/{incident_id}/activate", response_model=IncidentOut, summary="Confirm a proposed response (one click)")
def activate(incident_id: Id, request: Request, ctx: Ctx, session: DB, principal=Depends(require("tasks.command"))) -> dict:
    return _command(response.activate, incident_id, request, ctx, session, principal)


@router.post("/incidents/{incident_id}/dismiss", response_model=IncidentOut, summary="Decline a proposed response")
def dismiss(incident_id: Id, body: ReasonIn, request: Request, ctx: Ctx, session: DB,
            principal=Depends(require("tasks.command"))) -> dict:
    return _command(response.dismiss, incident_id, request, ctx, session, principal, body.reason)


@router.post("/incidents/{incident_id}/level", response_model=IncidentOut, summary="Upgrade or lower the response level")
def change_level(incident_id: Id, body: LevelIn, request: Request, ctx: Ctx, session: DB,
                 principal=Depends(require("tasks.command"))) -> dict:
    return _command(response.change_level, incident_id, request, ctx, session, principal, body.level, body.reason)


@router.post("/incidents/{incident_id}/stand-down", response_model=IncidentOut,
             summary="Stand the response down (解除响应): households may return")
def stand_down(incident_id: Id, body: ReasonIn, request: Request, ctx: Ctx, session: DB,
               principal=Depends(require("tasks.command"))) -> dict:
    return _command(response.stand_down, incident_id, request, ctx, session, principal, body.reason)


@router.post("/incidents/{incident_id}/close", response_model=IncidentOut,
             summary="Close: the note gets the figures, the case is closed")
def close(incident_id: Id, body: CloseIn, request: Request, ctx: Ctx, session: DB,
          principal=Depends(require("tasks.command"))) -> dict:
    return _command(response.close, incident_id, request, ctx, session, principal, body.note)


@router.delete("/incidents/{incident_id}", response_model=RemovedOut,
               summary="Remove a drill and everything it made (real incidents refuse)")
def remove_drill(incident_id: Id, request: Request, session: DB, principal=Depends(require("tasks.command"))) -> dict:
    counts = response.remove_drill(session, _actor(principal, request), principal.scope, incident_id)
    session.commit()
    return {"removed": counts}


# ------------------------------------------------------------------------------------------------ zones

class ZoneIn(BaseModel):
    geometry: dict | None = Field(default=None, description="drawn zone: GeoJSON Polygon/MultiPolygon or Feature")
    features: dict | None = Field(default=None, description="imported zone: a GeoJSON FeatureCollection (polygons unioned)")
    buffer_m: float | None = Field(default=None, gt=0, le=5000, description="computed zone: the hazard body plus this buffer")
    crs: str | None = None
    note: str | None = Field(default=None, max_length=2000)


def _zone_geometry(body: ZoneIn, incident, metric_crs: str):
    import shapely

    given = [x is not None for x in (body.geometry, body.features, body.buffer_m)]
    if sum(given) != 1:
        raise InvalidInput("give exactly one of geometry (drawn), features (imported) or buffer_m (computed)")
    if body.geometry is not None:
        geometry = body.geometry.get("geometry") if body.geometry.get("type") == "Feature" else body.geometry
        return geometry_from_geojson(geometry, body.crs), "drawn"
    if body.features is not None:
        feats = body.features.get("features")
        if body.features.get("type") != "FeatureCollection" or not isinstance(feats, list) or not feats:
            raise InvalidGeometry("features must be a non-empty GeoJSON FeatureCollection")
        if len(feats) > MAX_ZONE_FEATURES:
            raise InvalidInput(f"an imported zone holds at most {MAX_ZONE_FEATURES} features, got {len(feats)}")
        parts = []
        for i, f in enumerate(feats):
            if not isinstance(f, dict) or not isinstance(f.get("geometry"), dict):
                raise InvalidGeometry(f"feature {i} has no geometry")
            try:
                parts.append(geometry_from_geojson(f["geometry"], body.crs))
            except InvalidGeometry as exc:
                raise InvalidGeometry(f"feature {i}: {exc.message}") from None
        return shapely.union_all(parts), "imported"
    if incident.hazard_geom is None:
        raise InvalidInput("this incident has no hazard body to compute a zone from; draw or import one")
    from cityops.core.spatial import buffer_m

    return buffer_m(incident.hazard_geom, body.buffer_m, metric_crs), "computed"


@router.post("/incidents/{incident_id}/zones", status_code=201, response_model=ZoneOut, response_model_exclude_unset=True,
             summary="A new risk-zone version: drawn, imported or computed")
def set_zone(incident_id: Id, body: ZoneIn, request: Request, ctx: Ctx, session: DB,
             principal=Depends(require("tasks.command"))) -> dict:
    _prepare(session, ctx)
    incident = incidents.get_incident(session, principal.scope, incident_id, for_change=True)
    geom, source = _zone_geometry(body, incident, ctx.settings.metric_crs)
    zone = zones.set_zone(session, _actor(principal, request), principal.scope, incident.id, geom, source=source, note=body.note)
    session.commit()
    return zones.zone_dict(zone)


@router.get("/incidents/{incident_id}/zones", response_model=list[ZoneOut], response_model_exclude_unset=True,
            summary="Every version of the incident's risk zone")
def list_zones(incident_id: Id, session: DB, principal=Depends(require("tasks.read")), geometry: bool = True) -> list[dict]:
    from sqlalchemy import select

    from cityops.tasks.models import RiskZone

    incident = incidents.get_incident(session, principal.scope, incident_id)
    return [zones.zone_dict(z, geometry) for z in
            session.scalars(select(RiskZone).where(RiskZone.incident_id == incident.id).order_by(RiskZone.version))]


@router.get("/incidents/{incident_id}/threatened", response_model=ZoneThreatOut, response_model_exclude_unset=True,
            summary="Who is threatened in the current zone, by village and grid, with the event grade")
def threatened(incident_id: Id, session: DB, principal=Depends(require("tasks.read"))) -> dict:
    return zones.zone_threat(session, principal.scope, principal.role.allows("personal.read"), incident_id)


# ------------------------------------------------------------------------------------------- evacuation

@router.get("/incidents/{incident_id}/evacuations", response_model=EvacuationPage, response_model_exclude_unset=True,
            summary="Household evacuation tasks at your scope; nearest first with lon/lat")
def list_evacuations(incident_id: Id, session: DB, principal=Depends(require("tasks.read")), state: str | None = None,
                     grid: str | None = None, lon: float | None = None, lat: float | None = None,
                     limit: int = Query(500, ge=1, le=5000), offset: NonNegInt64 = 0) -> dict:
    states = [s.strip() for s in state.split(",")] if state else None
    return evacuation.list_evacuations(session, principal.scope, incident_id, states=states, grid=grid, near=_near(lon, lat),
                                    limit=limit, offset=offset, personal=principal.role.allows("personal.read"))


@router.get("/evacuations/mine", response_model=MyHouseholdsOut, response_model_exclude_unset=True,
            summary="Your households to move: your active incidents, the chosen one's households nearest first and its totals, in one answer")
def my_households(session: DB, principal=Depends(require("tasks.read")), incident_id: Id | None = None,
                  state: str | None = None, lon: float | None = None, lat: float | None = None) -> dict:
    states = [s.strip() for s in state.split(",")] if state else None
    return evacuation.my_households(session, principal.scope, incident_id=incident_id, states=states, near=_near(lon, lat),
                                    personal=principal.role.allows("personal.read"))


@router.get("/incidents/{incident_id}/totals", response_model=TotalsOut,
            summary="Live totals: district, townships, villages, grids (they always agree)")
def totals(incident_id: Id, session: DB, principal=Depends(require("tasks.read"))) -> dict:
    return evacuation.totals(session, principal.scope, incident_id)


@router.get("/incidents/{incident_id}/timeline", response_model=list[LogEntry], summary="The decision timeline (决策时间线)")
def timeline(incident_id: Id, session: DB, principal=Depends(require("tasks.read")), after: Id = 0,
             decisions_only: bool = True, limit: int = Query(1000, ge=1, le=10000)) -> list[dict]:
    return incidents.timeline(session, principal.scope, incident_id, after=after, decisions_only=decisions_only, limit=limit)


@router.get("/incidents/{incident_id}/stream",
            summary="Live stream (SSE) of the incident's steps at your scope; resumes from Last-Event-ID")
async def stream(incident_id: Id, request: Request, ctx: Ctx, principal=Depends(require("tasks.read")),
                 after: Id = 0, seconds: float = Query(sse.MAX_SECONDS, ge=0, le=sse.MAX_SECONDS)):
    def fetch(since: int) -> list[sse.Event]:
        with ctx.sessions() as session:
            return [sse.Event(entry, entry["kind"], entry["id"])
                    for entry in incidents.timeline(session, principal.scope, incident_id, after=since, limit=2000)]

    start = sse.resume_point(request, after)
    first = await run_in_threadpool(fetch, start)  # 404 before the stream starts, as a normal error
    since = first[-1].id if first else start
    return sse.stream(request, sse.polled(fetch, since, interval=STREAM_POLL_SECONDS), seconds=seconds, first=first)


class StateIn(BaseModel):
    state: str = Field(min_length=1, max_length=32)
    shelter_id: Id | None = None
    lon: float | None = None
    lat: float | None = None
    note: str | None = Field(default=None, max_length=1000)
    expected_version: Int32 | None = None
    request_key: str | None = Field(default=None, max_length=100, description="idempotency key: a retry changes nothing")


@router.post("/evacuations/{evacuation_id}/state", response_model=EvacuationOut,
             summary="Record a household's new state, with time and position")
def change_state(evacuation_id: Id, body: StateIn, request: Request, session: DB,
                 principal=Depends(require("tasks.evacuate"))) -> dict:
    with _writer(session):
        ev = evacuation.change_state(session, _actor(principal, request), principal.scope, evacuation_id, state=body.state,
                                  shelter_id=body.shelter_id, lon=body.lon, lat=body.lat, note=body.note,
                                  expected_version=body.expected_version, request_key=body.request_key)
        session.commit()
        data = evacuation.evacuation_dict(ev)
    return data


@router.get("/evacuations/{evacuation_id}/history", response_model=list[StateChange],
            summary="Every state change of a household: when, who, where")
def evacuation_history(evacuation_id: Id, session: DB, principal=Depends(require("tasks.read"))) -> list[dict]:
    return evacuation.history(session, principal.scope, evacuation_id)


@router.get("/incidents/{incident_id}/report",
            summary="After-action report (总结报告) as an HTML document", response_class=HTMLResponse)
def after_action_report(incident_id: Id, session: DB, principal=Depends(require("tasks.read"))) -> HTMLResponse:
    html = report.render_html(session, principal.scope, incident_id)
    return HTMLResponse(html, headers={"Content-Disposition": f'attachment; filename="incident-{incident_id}-report.html"'})


# --------------------------------------------------------------------------------------------- shelters

class ShelterIn(BaseModel):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    name: str = Field(min_length=1, max_length=200)
    capacity: int = Field(ge=1, le=100_000)
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    unit_code: str = Field(min_length=6, max_length=20)
    attributes: dict[str, Any] = {}


@router.get("/shelters", response_model=list[ShelterItem], response_model_exclude_unset=True,
            summary="Shelters (安置点) you see, with capacity and occupancy; nearest first with lon/lat")
def list_shelters(session: DB, principal=Depends(require("tasks.read")), lon: float | None = None, lat: float | None = None,
                  incident_id: Id | None = Query(None, description="nearest first from this incident's risk zone")) -> list[dict]:
    return shelters.list_shelters(session, principal.scope, _near(lon, lat), incident_id=incident_id)


@router.post("/shelters", status_code=201, response_model=ShelterOut, summary="Register a shelter")
def create_shelter(body: ShelterIn, request: Request, session: DB, principal=Depends(require("tasks.shelter"))) -> dict:
    shelter = shelters.create_shelter(session, _actor(principal, request), principal.scope, **body.model_dump())
    session.commit()
    return shelters.shelter_dict(shelter)


# ------------------------------------------------------------------------------------------------ tasks

class Attachment(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2000)


class TaskIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    goal: str | None = Field(default=None, max_length=4000)
    deadline: datetime | None = None
    unit_code: str = Field(min_length=6, max_length=20, description="the publishing unit, owner of the task")
    target_units: list[str] = Field(default=[], max_length=500, description="one sub-task per unit")
    attachments: list[Attachment] = Field(default=[], max_length=50)
    assignee_person_id: Id | None = None
    source_kind: Literal["case", "alarm"] | None = None
    source_ref: str | None = Field(default=None, max_length=100)
    drill: bool = False


class SubtaskIn(BaseModel):
    unit_code: str = Field(min_length=6, max_length=20)
    title: str | None = Field(default=None, max_length=200)
    goal: str | None = Field(default=None, max_length=4000)
    deadline: datetime | None = None
    assignee_person_id: Id | None = None
    attachments: list[Attachment] = Field(default=[], max_length=50)


class SubtasksIn(BaseModel):
    items: list[SubtaskIn] = Field(min_length=1, max_length=500)


class ProgressIn(BaseModel):
    status: Literal["open", "done", "cancelled"]
    note: str | None = Field(default=None, max_length=4000)


@router.get("/tasks", response_model=list[TaskOut], summary="Tasks in your scope, with rolled-up progress")
def list_tasks(session: DB, principal=Depends(require("tasks.read")), incident_id: Id | None = None, status: str | None = None,
               overdue: bool = False, source_ref: str | None = None, include_drills: bool = True,
               limit: int = Query(200, ge=1, le=1000)) -> list[dict]:
    return work.list_tasks(session, principal.scope, incident_id=incident_id, status=status, overdue=overdue,
                              source_ref=source_ref, include_drills=include_drills, limit=limit)


@router.post("/tasks", status_code=201, response_model=TaskTree,
             summary="Publish a task (goal, deadline, attachments, target units)")
def publish(body: TaskIn, request: Request, session: DB, principal=Depends(require("tasks.write"))) -> dict:
    task = work.publish_task(session, _actor(principal, request), principal.scope, title=body.title, goal=body.goal,
                                deadline=body.deadline, unit_code=body.unit_code, target_units=body.target_units,
                                attachments=[a.model_dump() for a in body.attachments], assignee_person_id=body.assignee_person_id,
                                source_kind=body.source_kind, source_ref=body.source_ref, drill=body.drill)
    session.commit()
    return work.task_tree(session, principal.scope, task.id)


@router.post("/tasks/check-overdue", response_model=OverdueOut,
             summary="Remind overdue tasks and escalate those long overdue (run by a timer)")
def check_overdue(request: Request, session: DB, principal=Depends(require("tasks.write"))) -> dict:
    result = work.check_overdue(session, _actor(principal, request), principal.scope)
    session.commit()
    return result


@router.get("/tasks/{task_id}", response_model=TaskTree, summary="A task with its sub-tasks and rolled-up progress")
def get_task(task_id: Id, session: DB, principal=Depends(require("tasks.read"))) -> dict:
    return work.task_tree(session, principal.scope, task_id)


@router.post("/tasks/{task_id}/subtasks", status_code=201, response_model=TaskTree,
             summary="Decompose a task for the next level down")
def decompose(task_id: Id, body: SubtasksIn, request: Request, session: DB, principal=Depends(require("tasks.write"))) -> dict:
    items = [{**i.model_dump(), "attachments": [a.model_dump() for a in i.attachments]} for i in body.items]
    work.decompose(session, _actor(principal, request), principal.scope, task_id, items)
    session.commit()
    return work.task_tree(session, principal.scope, task_id)


@router.post("/tasks/{task_id}/progress", response_model=TaskTree, summary="Report progress (done rolls up to the parent)")
def report_progress(task_id: Id, body: ProgressIn, request: Request, session: DB,
                    principal=Depends(require("tasks.progress"))) -> dict:
    task = work.report_progress(session, _actor(principal, request), principal.scope, task_id, status=body.status, note=body.note)
    session.commit()
    return work.task_tree(session, principal.scope, task.id)

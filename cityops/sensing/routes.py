"""/api/sensing: bulk ingest, device catalogue, devices, series and CSV export, rules, alarms and their
live stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from cityops.core import audit, sse
from cityops.core.errors import InvalidInput, NotFound
from cityops.core.params import Id, NonNegInt64
from cityops.core.web import DB, json_body_schema, require
from cityops.sensing import alarms, catalog, timeseries
from cityops.sensing.models import Datastream, Location, Thing, ThingLocation
from cityops.sensing.service import runtime
from cityops.sensing.timeutil import iso, now_ms, parse_instant

router = APIRouter(prefix="/api/sensing", tags=["sensing"])
MAX_BULK = 100_000


def _actor(request: Request, principal) -> audit.Actor:
    return audit.Actor(principal.username, principal.user_id, getattr(request.state, "request_id", None))


class BulkIn(BaseModel):
    observations: list[dict] = Field(description="[{datastream_id, phenomenonTime, result, unit?}, …]", max_length=MAX_BULK)


def decode_bulk(body: bytes) -> list:
    """The observations of a bulk body. Decoded once with orjson and handed to ``Ingestor.validate`` as they are:
    a pydantic model of ``list[dict]`` copied every one of 10,000 dicts only for validate to check them again."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    observations = data.get("observations") if isinstance(data, dict) else None
    if not isinstance(observations, list):
        raise InvalidInput('the body must be an object {"observations": [...]}')
    if not observations:
        raise InvalidInput("no observations")
    if len(observations) > MAX_BULK:
        raise InvalidInput(f"a bulk holds at most {MAX_BULK} observations, this one {len(observations)}")
    return observations


@router.post("/observations", status_code=201,
             summary="Bulk ingest: all-or-nothing validation, idempotent, answered after commit (503 + Retry-After when busy)",
             openapi_extra=json_body_schema(BulkIn))
async def ingest_bulk(request: Request, principal=Depends(require("sensing.ingest"))) -> dict:
    ing = runtime(request.app.state)
    body = await request.body()

    def decode_and_validate():
        return ing.validate(decode_bulk(body), principal.scope)

    rows, metas = await asyncio.to_thread(decode_and_validate)
    future = ing.submit(rows, metas)  # a full queue raises Backpressure: 503 with Retry-After
    await asyncio.wrap_future(future)
    return {"accepted": len(rows), "pending": ing.pending}


@router.get("/device-types", summary="The device type catalogue (data: device_types.toml)")
def device_types(principal=Depends(require("sensing.read"))) -> list[dict]:
    return [t.model_dump() for t in catalog.device_types().values()]


@router.get("/rules", summary="The alarm rule book (data: rules.toml)")
def rules(principal=Depends(require("sensing.read"))) -> dict:
    return catalog.rulebook().model_dump()


@router.get("/devices", summary="Devices (Things) in your scope with their datastreams' latest values and alarm status")
def devices(session: DB, principal=Depends(require("sensing.read")), device_type: str | None = None,
            risk_point: str | None = None, limit: int = Query(200, ge=1, le=5000), offset: NonNegInt64 = 0) -> dict:
    q = select(Thing).where(principal.scope.covers_clause(Thing.unit_path))
    if device_type:
        q = q.where(Thing.device_type == device_type)
    if risk_point:
        q = q.where(Thing.risk_point_code == risk_point)
    total = session.scalar(select(func.count()).select_from(q.subquery()))
    things = list(session.scalars(q.order_by(Thing.id).limit(limit).offset(offset)))
    streams, where = {}, {}
    if things:
        ids = [t.id for t in things]
        for ds in session.scalars(select(Datastream).where(Datastream.thing_id.in_(ids))):
            streams.setdefault(ds.thing_id, []).append(ds)
        # Where each device stands (its current Location, a GeoJSON point): the map draws it there.
        for thing_id, location in session.execute(select(ThingLocation.thing_id, Location.location)
                                                  .join(Location, Location.id == ThingLocation.location_id)
                                                  .where(ThingLocation.thing_id.in_(ids))):
            if isinstance(location, dict) and location.get("type") == "Point" and len(location.get("coordinates", [])) >= 2:
                where.setdefault(thing_id, location["coordinates"][:2])
    open_alarms = dict(session.execute(select(alarms.Alarm.datastream_id, func.max(alarms.Alarm.severity))
                                       .where(alarms.Alarm.status.in_(alarms.OPEN)).group_by(alarms.Alarm.datastream_id)).all())
    items = []
    for t in things:
        items.append({"id": t.id, "name": t.name, "device_type": t.device_type, "unit_code": t.unit_code, "unit_path": t.unit_path,
                      "building_code": t.building_code, "risk_point_code": t.risk_point_code, "properties": t.properties,
                      "lon": where[t.id][0] if t.id in where else None, "lat": where[t.id][1] if t.id in where else None,
                      "datastreams": [{"id": d.id, "name": d.name, "unit": d.unit_of_measurement.get("symbol"),
                                       "last_value": d.last_value, "last_time": iso(d.last_ms),
                                       "alarm": open_alarms.get(d.id)} for d in streams.get(t.id, [])]})
    return {"total": total, "items": items}


def _datastream(session, principal, ds_id: int) -> Datastream:
    ds = session.get(Datastream, ds_id)
    if ds is None or not principal.scope.covers(ds.unit_path):
        raise NotFound(f"datastream {ds_id} does not exist")
    return ds


def _period(start: str | None, end: str | None) -> tuple[int, int]:
    e = parse_instant(end, "end") if end else now_ms()
    s = parse_instant(start, "start") if start else e - 24 * 3_600_000
    if e <= s:
        raise InvalidInput("end must be after start")
    return s, e


@router.get("/datastreams/{ds_id}/series", summary="Range query for charts: raw or 1m/1h/1d rollups, downsampled")
def series(ds_id: Id, session: DB, principal=Depends(require("sensing.read")), start: str | None = None,
           end: str | None = None, tier: str | None = None, max_points: int = Query(2000, ge=10, le=20000)) -> dict:
    ds = _datastream(session, principal, ds_id)
    s, e = _period(start, end)
    return timeseries.series(session, ds.id, s, e, tier=tier, max_points=max_points)


@router.get("/datastreams/{ds_id}/export", summary="CSV export of one datastream's observations over a period")
def export(ds_id: Id, session: DB, principal=Depends(require("sensing.read")), start: str | None = None,
           end: str | None = None) -> StreamingResponse:
    ds = _datastream(session, principal, ds_id)
    s, e = _period(start, end)
    return StreamingResponse(timeseries.export_csv(session, ds, s, e), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="datastream-{ds.id}.csv"'})


@router.get("/alarms", summary="Alarms in your scope, newest first")
def list_alarms(session: DB, principal=Depends(require("sensing.read")), status: str | None = None,
                severity: str | None = None, risk_point: str | None = None,
                limit: int = Query(100, ge=1, le=1000), offset: NonNegInt64 = 0) -> dict:
    rows, total = alarms.list_alarms(session, principal.scope, status=status, severity=severity, risk_point=risk_point,
                                     limit=limit, offset=offset)
    return {"total": total, "items": [alarms.alarm_dict(a) for a in rows]}


@router.get("/alarms/stream", summary="Live alarm changes (Server-Sent Events), scoped")
async def alarm_stream(request: Request, principal=Depends(require("sensing.read")),
                       max_events: Annotated[NonNegInt64 | None, Query(ge=1, description="close after this many events (clients, tests)")] = None,
                       timeout: float = Query(sse.MAX_SECONDS, gt=0, le=sse.MAX_SECONDS,
                                              description="close after this many seconds (the client then reconnects)")):
    ctx = request.app.state.ctx
    ctx.bus.ensure_started()  # alarm changes reach this worker's hub through the bus (alarm.changed)
    hub = request.app.state.alarm_hub
    sub = hub.subscribe(principal.scope)

    def event(data: dict) -> sse.Event:
        return sse.Event(data, "overflow" if data.get("event") == "overflow" else "alarm")

    # An overflow (this client fell behind) ends the stream: the client reloads the list when it reconnects.
    return sse.stream(request, sse.queued(sub[1], event), seconds=timeout, max_events=max_events,
                      last=lambda e: e.event == "overflow", on_close=lambda: hub.unsubscribe(sub))


@router.get("/alarms/{alarm_id}", summary="One alarm with its comments")
def get_alarm(alarm_id: Id, session: DB, principal=Depends(require("sensing.read"))) -> dict:
    a = alarms.get_alarm(session, principal.scope, alarm_id)
    return {**alarms.alarm_dict(a), "comments": alarms.comments(session, a.id)}


class NoteIn(BaseModel):
    note: str | None = Field(default=None, max_length=4000)


class ClearIn(BaseModel):
    reason: str = Field(min_length=1, max_length=4000)


class AssignIn(BaseModel):
    assignee: str = Field(min_length=1, max_length=200)


class CommentIn(BaseModel):
    text: str = Field(min_length=1, max_length=4000)


@router.post("/alarms/{alarm_id}/acknowledge", summary="Acknowledge an active alarm")
def acknowledge(alarm_id: Id, request: Request, session: DB, body: NoteIn | None = None,
                principal=Depends(require("sensing.alarms"))) -> dict:
    a = alarms.acknowledge(session, principal.scope, _actor(request, principal), alarm_id, body.note if body else None)
    session.commit()
    return alarms.alarm_dict(a)


@router.post("/alarms/{alarm_id}/clear", summary="Clear an alarm (with a reason)")
def clear(alarm_id: Id, body: ClearIn, request: Request, session: DB, principal=Depends(require("sensing.alarms"))) -> dict:
    a = alarms.clear(session, principal.scope, _actor(request, principal), alarm_id, body.reason)
    session.commit()
    return alarms.alarm_dict(a)


@router.post("/alarms/{alarm_id}/assign", summary="Assign an alarm to a user")
def assign(alarm_id: Id, body: AssignIn, request: Request, session: DB, principal=Depends(require("sensing.alarms"))) -> dict:
    a = alarms.assign(session, principal.scope, _actor(request, principal), alarm_id, body.assignee)
    session.commit()
    return alarms.alarm_dict(a)


@router.post("/alarms/{alarm_id}/comments", status_code=201, summary="Comment on an alarm")
def comment(alarm_id: Id, body: CommentIn, request: Request, session: DB, principal=Depends(require("sensing.alarms"))) -> dict:
    c = alarms.add_comment(session, principal.scope, _actor(request, principal), alarm_id, body.text)
    session.commit()
    return {"id": c.id, "author": c.author, "text": c.text, "at": c.at.isoformat()}

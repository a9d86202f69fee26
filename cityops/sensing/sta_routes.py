"""OGC SensorThings API 1.1 at /sta/v1.1 (resource paths, query options, create/update/delete, dataArray).

Access control is a CityOps extension (the standard does not address it): Bearer tokens, API keys, or
HTTP Basic (username + password, or username ``apikey`` + an API key) for clients such as frost-sta-client.
Reads need ``sensing.read`` and show only what the principal's scope covers; writes need ``sensing.write``,
and the shared Sensors and ObservedProperties need a district-wide principal with ``sensing.catalogue``.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from cityops.core.errors import InvalidInput, NotFound
from cityops.core.web import DB, Ctx, loads_json
from cityops.sensing import ingest, sta
from cityops.sensing.models import Observation
from cityops.sensing.service import runtime

router = APIRouter(tags=["sensorthings"])
ROOT = "/sta/v1.1"
CONF = "http://www.opengis.net/spec/iot_sensing/1.1/req/"
MQTT_CREATE = CONF + "create-observations-via-mqtt/observations-creation"
MAX_BODY = 20 * 1024 * 1024


def _principal(request: Request, ctx, session):
    from cityops.core.web import principal_from_request

    return principal_from_request(request, ctx, session, basic_channel="sta")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + ROOT


def _json_body(raw: bytes):
    if len(raw) > MAX_BODY:
        from cityops.core.errors import PayloadTooLarge

        raise PayloadTooLarge(f"body exceeds {MAX_BODY} bytes")
    try:
        return loads_json(raw)
    except InvalidInput as exc:
        raise sta.StaBadRequest(exc.message) from None


@router.get(ROOT, summary="SensorThings service root")
def service_root(request: Request, ctx: Ctx, session: DB) -> dict:
    _principal(request, ctx, session).require("sensing.read")
    base = _base(request)
    conformance = [CONF + c for c in ("datamodel", "resource-path/resource-path-to-entities", "request-data",
                                      "create-update-delete", "data-array/data-array")]
    settings = {"conformance": conformance}
    bridge = getattr(request.app.state, "sensing_mqtt", None)
    if bridge is not None:
        conformance += [MQTT_CREATE, CONF + "receive-updates-via-mqtt/receive-updates"]
        settings[MQTT_CREATE] = {"endpoints": [bridge.url]}
    return {"value": [{"name": n, "url": f"{base}/{n}"} for n in sta.SETS], "serverSettings": settings}


@router.post(ROOT + "/CreateObservations", summary="dataArray bulk creation of Observations", status_code=201)
async def create_observations(request: Request, ctx: Ctx, session: DB):
    # The body is read here; the database work runs in a worker thread, never on the event loop.
    return await run_in_threadpool(_create_observations, request, ctx, session, await request.body())


def _create_observations(request: Request, ctx, session, raw: bytes):
    principal = _principal(request, ctx, session)
    principal.require("sensing.write")
    body = _json_body(raw)
    if not isinstance(body, list):
        raise sta.StaBadRequest("CreateObservations takes a JSON array of dataArray documents")
    c = sta.Ctx(session, principal.scope, _base(request), catalogue=sta.keeps_catalogue(principal))
    writer = sta.Writer(c, principal.username)
    links: list = []
    for doc in body:
        if not isinstance(doc, dict) or "components" not in doc or "dataArray" not in doc:
            raise sta.StaBadRequest("each document needs Datastream, components and dataArray")
        ds_id = sta._link_id(doc.get("Datastream") or {})
        if ds_id is None:
            raise sta.StaBadRequest("each document needs Datastream {\"@iot.id\": …}")
        comps = doc["components"]
        for values in doc["dataArray"]:
            if not isinstance(values, list) or len(values) != len(comps):
                links.append("error")
                continue
            data = dict(zip(comps, values))
            if "FeatureOfInterest/id" in data:
                data["FeatureOfInterest"] = {"@iot.id": data.pop("FeatureOfInterest/id")}
            try:
                with session.begin_nested():
                    obs = writer.observation(data, datastream_id=ds_id)
                links.append(sta.self_link(c.base, "Observations", obs.id))
            except (InvalidInput, sta.StaBadRequest):
                links.append("error")
    _finish(request, session, writer)
    return JSONResponse(links, status_code=201)


def _finish(request: Request, session, writer: "sta.Writer") -> None:
    """Post-process new observations (rollups, datastream state, rules), commit, then notify."""
    ing = runtime(request.app.state)
    if writer.observations:
        rows = [ingest.Row(o.datastream_id, o.t_ms, o.t_end_ms, o.result_time_ms, o.result_num, o.result_json)
                for o in writer.observations]
        metas = {r.datastream_id: ing.metas.get(r.datastream_id) for r in rows}
        ingest.post_process(session, rows, metas)
    session.commit()
    bridge = getattr(request.app.state, "sensing_mqtt", None)
    if bridge is not None:
        c = sta.Ctx(session, writer.ctx.scope, bridge.base_url)
        for set_name, row in writer.created:
            bridge.publish_entity(set_name, sta.entity_json(bridge.base_url, set_name, row), row, session)


@router.api_route(ROOT + "/{path:path}", methods=["GET", "POST", "PATCH", "PUT", "DELETE"], summary="SensorThings resources",
                  include_in_schema=False)  # one handler for the whole STA grammar; OpenAPI cannot describe it
async def resources(path: str, request: Request, ctx: Ctx, session: DB):
    raw = await request.body() if request.method in ("POST", "PATCH", "PUT") else b""
    return await run_in_threadpool(_resources, path, request, ctx, session, raw)


def _resources(path: str, request: Request, ctx, session, raw: bytes):
    principal = _principal(request, ctx, session)
    principal.require("sensing.read" if request.method == "GET" else "sensing.write")
    c = sta.Ctx(session, principal.scope, _base(request), catalogue=sta.keeps_catalogue(principal))
    segments = [s for s in path.split("/") if s]
    if not segments:
        if request.method == "GET":  # /sta/v1.1/ — the service root, with the trailing slash clients add
            return service_root(request, ctx, session)
        raise NotFound("no resource")
    resolved, tail = sta.resolve_path(c, segments)
    if request.method == "GET":
        return _read(request, c, resolved, tail)
    if tail:
        raise sta.StaBadRequest(f"cannot {request.method} {'/'.join(tail)}")
    if request.method == "POST":
        body = _json_body(raw)
        if resolved.one:
            raise sta.StaBadRequest("POST to a collection")
        parent = None
        if len(segments) > 1:
            parent, _ = sta.resolve_path(c, segments[:-1])
        writer = sta.Writer(c, principal.username)
        row = sta.create(writer, resolved.set_name, body, parent)
        session.flush()
        out = sta.entity_json(c.base, resolved.set_name, row)
        _finish(request, session, writer)
        if resolved.set_name == "Things" or resolved.set_name == "Datastreams":
            runtime(request.app.state).metas.forget()
        return JSONResponse(out, status_code=201, headers={"Location": out["@iot.selfLink"]})
    if not resolved.one:
        raise sta.StaBadRequest(f"{request.method} needs one entity: {resolved.set_name}(id)")
    row = sta.get_one(c, resolved.set_name, resolved.entity_id)
    if request.method == "DELETE":
        sta.delete_entity(c, resolved.set_name, row, principal.username)
        session.commit()
        runtime(request.app.state).metas.forget()
        return Response(status_code=200)
    body = _json_body(raw)
    if request.method == "PATCH" and (isinstance(body, list) or "json-patch" in request.headers.get("content-type", "")):
        body = sta.json_patch(resolved.set_name, row, body)
    sta.update(c, resolved.set_name, row, body, replace=request.method == "PUT", actor=principal.username)
    out = sta.entity_json(c.base, resolved.set_name, row)
    if resolved.set_name == "Observations":
        ds = {row.datastream_id}
        sta.datastream_time_bounds(session, ds)
    session.commit()
    runtime(request.app.state).metas.forget()
    bridge = getattr(request.app.state, "sensing_mqtt", None)
    if bridge is not None:
        bridge.publish_entity(resolved.set_name, sta.entity_json(bridge.base_url, resolved.set_name, row), row, session,
                              changed=set(body))
    return JSONResponse(out)


def _read(request: Request, c: "sta.Ctx", resolved, tail: list[str]):
    params = dict(request.query_params)
    entity = sta.SETS[resolved.set_name]
    if resolved.one:
        row = sta.get_one(c, resolved.set_name, resolved.entity_id)
        if not tail:
            opts = sta.parse_options(params, entity)
            return JSONResponse(sta.render(c, resolved.set_name, row, opts))
        prop = tail[0]
        if prop not in entity.columns or prop == "id":
            raise NotFound(f"{entity.singular} has no property {prop!r}")
        value = sta.value_of(resolved.set_name, row, prop)
        if len(tail) > 1 and tail[1] == "$value":
            return PlainTextResponse("" if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else str(value)))
        return JSONResponse({prop: value})
    if tail == ["$ref"]:
        opts = sta.parse_options(params, entity)
        res = sta.query_collection(c, resolved.set_name, opts, resolved.where, next_base=str(request.url).split("?")[0],
                                   raw_params=params)
        res["value"] = [{"@iot.selfLink": v["@iot.selfLink"]} for v in res["value"]]
        return JSONResponse(res)
    if tail:
        raise NotFound(f"no resource {'/'.join(tail)}")
    opts = sta.parse_options(params, entity)
    return JSONResponse(sta.query_collection(c, resolved.set_name, opts, resolved.where,
                                             next_base=str(request.url).split("?")[0], raw_params=params))


__all__ = ["router", "Observation"]

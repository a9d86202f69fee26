"""Routes of the event center at /api/events: cases, actions, patrol reports with photos, 12345 import,
duplicates and merge, SLA sweep, evaluation export and a live stream (SSE) of case changes in scope."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field, RootModel, TypeAdapter, ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from cityops.core.errors import CityOpsError, InvalidInput, NotFound, PayloadTooLarge
from cityops.core import sse
from cityops.core.params import Id, Int32, NonNegInt64
from cityops.core.web import (DB, AppContext, Ctx, add_plain_route, current_principal, json_body_schema, loads_json,
                              parse_body, read_upload_limited, request_id, require)
from cityops.events import actions, attachments, catalogue, creation, evaluation, hotline, intake, queries, routing, sla
from cityops.events.models import Attachment, Case
from cityops.events.workflow import ACTIVE

router = APIRouter(prefix="/api/events", tags=["events"])


def _may(principal):
    return principal.role.allows


class CaseIn(BaseModel):
    class_code: str = Field(description="5-digit class code (e.g. 06010), 'kind:code', or a legacy alias")
    kind: str | None = Field(default=None, description="component or matter (default: matter, then component)")
    title: str | None = None
    description: str | None = None
    lon: float | None = None
    lat: float | None = None
    address: str | None = None
    address_id: str | None = Field(default=None, description="building (门楼牌) code")
    unit_code: str | None = None
    urgency: str = "normal"
    source: str = Field(default="rest", description="rest, patrol, public, hotline, task")
    reporter: dict = Field(default_factory=dict)
    attributes: dict = Field(default_factory=dict)
    external_key: str | None = Field(default=None, max_length=200, description="idempotency key: a retry returns the same case")


@router.get("/classes", summary="Taxonomy (部件/事项) with filing condition, time limits, closing condition")
def classes(principal=Depends(require("events.read"))) -> list[dict]:
    return [c.to_dict() for c in catalogue.taxonomy().classes.values()]


#: Columns of the case list export (CSV and XLSX), with their headings.
EXPORT_COLUMNS = [("number", "案卷编号"), ("state_name", "状态"), ("class_code", "类别代码"), ("class_name", "类别"),
                  ("title", "标题"), ("urgency", "紧急程度"), ("source", "来源"), ("address", "地址"),
                  ("grid_code", "网格"), ("department_code", "处置部门"), ("assigned_unit_code", "处置单位"),
                  ("reported_at", "上报时间"), ("filed_at", "立案时间"), ("deadline_at", "处置时限"),
                  ("closed_at", "结案时间"), ("sla", "时限状态")]


def _export(items: list[dict], fmt: str) -> Response:
    """The list as a file: CSV (UTF-8 with a BOM, as spreadsheet programs in China expect) or XLSX."""
    keys = [k for k, _ in EXPORT_COLUMNS]
    if fmt == "csv":
        import io

        from cityops.core import csvexport

        buf = io.StringIO()
        w = csvexport.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(items)
        return Response(("\ufeff" + buf.getvalue()).encode(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="cases.csv"'})
    import io

    from openpyxl import Workbook

    from cityops.core.csvexport import safe_cell

    book = Workbook(write_only=True)
    sheet = book.create_sheet("案卷")
    sheet.append([title for _, title in EXPORT_COLUMNS])
    for item in items:  # text that a spreadsheet would run as a formula is made inert, as in the CSV
        sheet.append([safe_cell(item.get(k)) for k in keys])
    out = io.BytesIO()
    book.save(out)
    return Response(out.getvalue(), media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": 'attachment; filename="cases.xlsx"'})


@router.get("/cases", summary="Cases in your scope: queue by role, state, class, unit subtree, department, search")
def list_cases(session: DB, principal=Depends(require("events.read")), queue: str | None = None,
               state: str | None = None, class_code: str | None = None, root: str | None = None,
               department: str | None = None, q: str | None = Query(None, max_length=100), overdue: bool | None = None,
               source: str | None = None, format: str = Query("json", pattern="^(json|csv|xlsx)$"),
               limit: int = Query(100, ge=1, le=5000), offset: NonNegInt64 = 0):
    rows, total = queries.list_cases(session, principal.scope, queue=queue, state=state, class_code=class_code, root=root,
                                     department=department, q=q, overdue=overdue, source=source, limit=limit, offset=offset)
    items = queries.with_names(session, [queries.case_dict(c) for c in rows])
    if format != "json":
        return _export(items, format)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


class PointGeometry(BaseModel):
    type: Literal["Point"] = "Point"
    coordinates: list[float]


class CasePoint(BaseModel):
    number: str
    title: str | None
    class_name: str | None
    state: str
    state_name: str
    urgency: str
    sla: str
    deadline_at: str | None
    reported_at: str | None
    grid_code: str | None
    department_code: str | None


class CaseFeature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str
    geometry: PointGeometry
    properties: CasePoint


class CaseMap(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[CaseFeature]
    total: int = Field(description="open cases in scope (with a position or not)")
    truncated: bool = Field(description="more open cases than the limit: the newest are shown")


@router.get("/map/cases", response_model=CaseMap,
            summary="Open cases in your scope as GeoJSON points for the map (newest first, located cases only)")
def map_cases(session: DB, principal=Depends(require("events.read")),
              limit: int = Query(5000, ge=1, le=20000)) -> CaseMap:
    rows, total = queries.list_cases(session, principal.scope, state=",".join(ACTIVE), limit=limit)
    features = []
    for c in rows:
        if c.lon is None or c.lat is None:
            continue
        d = queries.case_dict(c)
        features.append(CaseFeature(id=c.number, geometry=PointGeometry(coordinates=[c.lon, c.lat]),
                                    properties=CasePoint(**{k: d[k] for k in CasePoint.model_fields})))
    return CaseMap(features=features, total=total, truncated=total > limit)


def _report(body: CaseIn, principal, request: Request) -> dict:
    """``creation.draft_case``'s arguments for a report of the REST routes (one case or a batch): the same checks,
    and the client's ``external_key`` under the caller's name, so a report retried alone or in a batch is one case."""
    if body.source in ("sensor", "open311"):
        raise InvalidInput(f"source {body.source!r} has its own entry point", {"field": "source"})
    return dict(source=body.source, class_code=body.class_code, kind=body.kind, title=body.title,
                description=body.description, lon=body.lon, lat=body.lat, address=body.address,
                address_id=body.address_id, unit_code=body.unit_code, urgency=body.urgency, reporter=body.reporter,
                attributes=body.attributes,
                external_key=f"rest:{principal.username}:{body.external_key}" if body.external_key else None,
                actor=principal.actor(request_id(request)), scope=principal.scope)


def _has_point(report: dict) -> bool:
    return report["lon"] is not None and report["lat"] is not None


@router.post("/cases", status_code=201,
             summary="Report a case (REST intake): located, routed, logged; answered after commit (503 + Retry-After when busy)",
             openapi_extra=json_body_schema(CaseIn))
async def create_case(request: Request) -> Response:
    # The highest-rate route: no parameters for FastAPI to solve. Its dependency solving and body validation
    # cost ~13 % of the intake rate; the same checks are made here directly (the caller first, so a request
    # without credentials is 401 whatever its body).
    ctx: AppContext = request.app.state.ctx
    principal = await current_principal(request, ctx)
    principal.require("events.report")
    report = _report(parse_body(CaseIn, await request.body()), principal, request)

    def draft() -> creation.CaseDraft:
        with ctx.sessions() as session:  # an address, building or unit code is looked up in the database
            return creation.draft_case(session, **report, locator=routing.FixedLocator(ctx.locator))

    def stored(case_id: int) -> dict:
        with ctx.sessions() as session:
            return queries.case_dict(session.get(Case, case_id))

    # With a point, the report goes to the case writer as it is: the writer locates and routes its whole group
    # at once (a vectorised Locator pass, cached routing rules) before the transaction, so the event loop only
    # authenticates, parses and answers. An address, building or unit code is drafted here, in a thread.
    item = creation.PointReport(report) if _has_point(report) else await asyncio.to_thread(draft)
    case_id, created = await intake.writer(request.app.state).submit_async(item)
    d = item.draft if isinstance(item, creation.PointReport) else item
    # An idempotent retry (not created) answers with the case stored the first time.
    out = creation.draft_view(d, case_id) if created else await asyncio.to_thread(stored, case_id)
    # orjson directly: the dict is JSON-ready, and FastAPI's generic encoder was a visible share of an intake request.
    return Response(orjson.dumps(out), status_code=201, media_type="application/json")


def install_intake(app) -> None:
    """``POST /api/events/cases`` and ``/cases/batch`` as plain Starlette routes ahead of every router (called before
    they are included), the way ``ogc.routes.install_items`` registers the OGC bbox page. The routes take nothing
    from FastAPI (no parameters, the body parsed and the answer written by the route), yet an API route cost every
    request the walk through the included routers before it, an exit stack pair and the dependency solver: ~12 %
    of the event loop's time a case. The API routes of ``router`` stay for the OpenAPI document; a request never
    reaches them (the plain route matches first; the other methods of the path stay on ``router``)."""
    add_plain_route(app, "/api/events/cases", create_case, ["POST"])
    add_plain_route(app, "/api/events/cases/batch", create_cases, ["POST"])


class CaseBatchIn(RootModel[list[CaseIn]]):
    """A JSON array of case reports, each as ``POST /api/events/cases`` takes it (at most ``events_batch_max``)."""


_BATCH = TypeAdapter(list[CaseIn])


class BatchCase(BaseModel):
    index: int = Field(description="position of the report in the request's array")
    number: str = Field(description="the case number")
    created: bool = Field(description="false: a report with this external_key was stored before (a retry)")


class CaseBatchOut(BaseModel):
    created: int = Field(description="cases made by this request")
    existing: int = Field(description="reports answered with a case stored before (same external_key)")
    cases: list[BatchCase]


def _item_error(index: int, exc: Exception) -> Exception:
    """A report's error, as the batch's answer: the same status, naming the report's position and field."""
    if not isinstance(exc, CityOpsError):
        return exc
    details = exc.details if isinstance(exc.details, dict) else {}
    field = details.get("field")
    err = type(exc)(f"item {index}{f' ({field})' if field else ''}: {exc.message}; nothing of the batch stored",
                    {**details, "index": index})
    return err


@router.post("/cases/batch", status_code=201, response_model=CaseBatchOut,
             summary="Report several cases at once (12345 platforms, IoT gateways, upstream systems): all or nothing; "
                     "idempotent per external_key; answered after commit",
             openapi_extra=json_body_schema(CaseBatchIn))
async def create_cases(request: Request) -> Response:
    """A batch goes through the case writer as one unit (``intake.Batch``): every report is validated, located,
    routed and scope-checked before any is stored, and the first refused one answers for the batch (its status,
    ``item N (field): …``) with nothing stored. Reports with a point are drafted by the writer with the rest of its
    group; the others here, in a thread."""
    ctx: AppContext = request.app.state.ctx
    principal = await current_principal(request, ctx)
    principal.require("events.report")
    data = loads_json(await request.body())
    if not isinstance(data, list):
        raise InvalidInput("the body must be a JSON array of case reports", {"field": "body"})
    limit = min(ctx.settings.events_batch_max, ctx.settings.events_queue)
    if len(data) > limit:
        raise PayloadTooLarge(f"{len(data)} case reports in one batch; at most {limit} per request",
                              {"limit": limit, "count": len(data)})
    if not data:
        raise InvalidInput("the batch is empty: send at least one case report", {"field": "body"})
    try:
        bodies = _BATCH.validate_python(data)
    except ValidationError as exc:  # the standard 422: body.<index>.<field>: …
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    reports = []
    for i, body in enumerate(bodies):
        try:
            reports.append(_report(body, principal, request))
        except CityOpsError as exc:
            raise _item_error(i, exc) from None
    items: list = [creation.PointReport(r) if _has_point(r) else None for r in reports]
    others = [i for i, item in enumerate(items) if item is None]

    def draft() -> None:
        with ctx.sessions() as session:  # addresses, building or unit codes are looked up in the database
            locator = routing.FixedLocator(ctx.locator)
            for i in others:
                try:
                    items[i] = creation.draft_case(session, **reports[i], locator=locator)
                except CityOpsError as exc:
                    raise _item_error(i, exc) from None

    if others:
        await asyncio.to_thread(draft)
    try:
        results = await intake.writer(request.app.state).submit_async(intake.Batch(items))
    except creation.BatchRefused as exc:
        raise _item_error(exc.index, exc.error) from None
    drafts = [item.draft if isinstance(item, creation.PointReport) else item for item in items]
    numbers = {i: d.values["number"] for i, (d, (_, created)) in enumerate(zip(drafts, results)) if created}
    if len(numbers) < len(results):  # retries: the numbers of the cases stored the first time

        def stored() -> dict[int, str]:
            ids = {cid for cid, created in results if not created}
            with ctx.sessions() as session:
                return dict(session.execute(select(Case.id, Case.number).where(Case.id.in_(ids))).all())

        known = await asyncio.to_thread(stored)
        numbers.update({i: known[cid] for i, (cid, created) in enumerate(results) if not created})
    out = CaseBatchOut(created=sum(1 for _, c in results if c), existing=sum(1 for _, c in results if not c),
                       cases=[BatchCase(index=i, number=numbers[i], created=c) for i, (_, c) in enumerate(results)])
    return Response(out.model_dump_json(), status_code=201, media_type="application/json")


@router.get("/cases/{number}", summary="A case with its full history, photos, children and the actions allowed now")
def get_case(number: str, session: DB, principal=Depends(require("events.read"))) -> dict:
    case = actions.get_case(session, principal.scope, number)
    return queries.case_detail(session, case, _may(principal))


class ActionIn(BaseModel):
    note: str | None = Field(default=None, max_length=4000)
    department_code: str | None = None
    unit_code: str | None = None
    extension: str | None = Field(default=None, description="延期 amount, e.g. '4h' or '2d'")
    rating: Int32 | None = None
    lon: float | None = None
    lat: float | None = None


@router.post("/cases/{number}/actions/{action}", summary="Take a workflow action; 409 lists the actions allowed now")
def take_action(number: str, action: str, body: ActionIn, request: Request, session: DB,
                principal=Depends(require("events.read"))) -> dict:
    data = {k: v for k, v in body.model_dump().items() if k in ("department_code", "unit_code", "extension", "rating") and v is not None}
    with routing.write_section(session):
        case = actions.get_case(session, principal.scope, number, lock=True)
        t = actions.act(session, case, action, principal.actor(request_id(request)), note=body.note, data=data, lon=body.lon,
                        lat=body.lat, may=_may(principal))
        session.commit()
    detail = queries.case_detail(session, case, _may(principal))
    detail["transition"] = {"seq": t.seq, "action": t.action, "from": t.from_state, "to": t.to_state}
    return detail


async def _read_photos(photos: list[UploadFile] | None) -> list[tuple[str, str, bytes]]:
    settings = catalogue.settings()
    photos = [p for p in (photos or []) if p is not None and p.filename]
    if len(photos) > settings.attachments_per_request:
        raise InvalidInput(f"at most {settings.attachments_per_request} photos per request", {"field": "photo"})
    out = []
    for p in photos:
        try:
            data = await read_upload_limited(p, settings.attachment_max_bytes)
        except PayloadTooLarge:
            raise PayloadTooLarge(f"photo {p.filename!r} exceeds the {settings.attachment_max_bytes} byte limit") from None
        attachments.check_attachment(p.filename, p.content_type or "", data)
        out.append((p.filename, p.content_type or "", data))
    return out


@router.post("/cases/{number}/attachments", status_code=201, summary="Add photos (JPEG/PNG/WebP, size-checked) to a case")
async def add_attachments(number: str, request: Request, ctx: Ctx, session: DB,
                          photo: Annotated[list[UploadFile], File(description="one or more photos")],
                          principal=Depends(require("events.report"))) -> dict:
    await run_in_threadpool(actions.get_case, session, principal.scope, number)
    photos = await _read_photos(photo)
    if not photos:
        raise InvalidInput("no photo sent", {"field": "photo"})

    def save():  # in a worker thread, as all database work: never on the event loop
        with routing.write_section(session):
            case = actions.get_case(session, principal.scope, number)
            saved = [attachments.save_attachment(session, ctx.settings.data_dir, case, n, t, d, case.seq) for n, t, d in photos]
            session.commit()
        return {"attachments": [{"id": a.id, "filename": a.filename, "size": a.size} for a in saved]}

    return await run_in_threadpool(save)


@router.get("/cases/{number}/attachments/{attachment_id}", summary="A case photo")
def get_attachment(number: str, attachment_id: Id, ctx: Ctx, session: DB, principal=Depends(require("events.read"))):
    case = actions.get_case(session, principal.scope, number)
    a = session.scalar(select(Attachment).where(Attachment.id == attachment_id, Attachment.case_id == case.id))
    if a is None:
        raise NotFound(f"no attachment {attachment_id} on case {number}")
    return FileResponse(ctx.settings.data_dir / a.path, media_type=a.content_type)


@router.post("/patrol", status_code=201, summary="Grid-worker patrol report (巡查上报) with GPS position and photos")
async def patrol(request: Request, ctx: Ctx, session: DB, class_code: Annotated[str, Form()],
                 lon: Annotated[float | None, Form()] = None, lat: Annotated[float | None, Form()] = None,
                 description: Annotated[str | None, Form()] = None, title: Annotated[str | None, Form()] = None,
                 address: Annotated[str | None, Form()] = None, urgency: Annotated[str, Form()] = "normal",
                 client_key: Annotated[str | None, Form(max_length=200)] = None,
                 photo: Annotated[list[UploadFile] | None, File()] = None,
                 principal=Depends(require("events.report"))) -> dict:
    photos = await _read_photos(photo)  # checked before anything is written
    key = f"patrol:{principal.username}:{client_key}" if client_key else None

    def report():
        with routing.write_section(session, ctx.locator) as locator:
            case = creation.create_case(session, source="patrol", class_code=class_code, title=title, description=description,
                                       lon=lon, lat=lat, address=address, urgency=urgency, external_key=key,
                                       actor=principal.actor(request_id(request)), scope=principal.scope, locator=locator)
            if not session.scalar(select(Attachment.id).where(Attachment.case_id == case.id).limit(1)):
                for n, t, d in photos:
                    attachments.save_attachment(session, ctx.settings.data_dir, case, n, t, d, 1)
            session.commit()
        return queries.case_detail(session, case, _may(principal))

    return await run_in_threadpool(report)


@router.post("/import/hotline", summary="Import 12345 hotline tickets from CSV (all or nothing; re-import skips known tickets)")
async def import_hotline(request: Request, ctx: Ctx, session: DB, file: Annotated[UploadFile, File()],
                         principal=Depends(require("events.import"))) -> dict:
    raw = await read_upload_limited(file, ctx.settings.max_upload_bytes)

    def run():
        with routing.write_section(session, ctx.locator) as locator:
            result = hotline.import_hotline_csv(session, raw, principal.actor(request_id(request)), principal.scope, locator)
            session.commit()
        return result

    return await run_in_threadpool(run)


@router.get("/cases/{number}/duplicates", summary="Duplicate candidates: same class, near in space and time")
def duplicates(number: str, session: DB, principal=Depends(require("events.read")),
               distance_m: float | None = Query(None, gt=0, le=5000), window_hours: float | None = Query(None, gt=0, le=24 * 90)) -> list[dict]:
    case = actions.get_case(session, principal.scope, number)
    found = queries.duplicate_candidates(session, principal.scope, case, distance_m=distance_m, window_hours=window_hours)
    return queries.with_names(session, [dict(queries.case_dict(c), distance_m=round(d, 1)) for c, d in found])


class MergeIn(BaseModel):
    children: list[str] = Field(min_length=1, max_length=100)


@router.post("/cases/{number}/merge", summary="Merge duplicates into this case; their reporters are informed")
def merge(number: str, body: MergeIn, request: Request, session: DB, principal=Depends(require("events.intake"))) -> dict:
    with routing.write_section(session):
        master = actions.merge(session, principal.scope, number, body.children, principal.actor(request_id(request)), _may(principal))
        session.commit()
    return queries.case_detail(session, master, _may(principal))


class SweepIn(BaseModel):
    now: datetime | None = Field(default=None, description="evaluate deadlines as of this time (default: now)")


@router.post("/sweep", summary="Run the SLA sweep now: due-soon warnings and escalation of overdue cases in your scope")
def sweep(body: SweepIn, session: DB, principal=Depends(require("events.sweep"))) -> dict:
    if body.now is not None and body.now.tzinfo is None:
        raise InvalidInput("now needs a time zone", {"field": "now"})
    with routing.write_section(session):
        counts = sla.sweep(session, body.now, scope=principal.scope)
        session.commit()
    return counts


@router.get("/evaluation", summary="Evaluation (绩效评价) by area, department or post over a period; JSON, CSV or XLSX")
def evaluate(session: DB, start: datetime, end: datetime, group: str = "township",
             format: str = Query("json", pattern="^(json|csv|xlsx)$"), principal=Depends(require("events.evaluate"))):
    rows = evaluation.evaluate(session, principal.scope, start, end, group)
    if format == "csv":
        return Response(evaluation.to_csv(rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="evaluation-{group}.csv"'})
    if format == "xlsx":
        return Response(evaluation.to_xlsx(rows),
                        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        headers={"Content-Disposition": f'attachment; filename="evaluation-{group}.xlsx"'})
    return {"start": start.isoformat(), "end": end.isoformat(), "group": group, "items": rows}


@router.get("/stream", summary="Live stream (SSE) of case changes in your scope, from the transactional outbox")
async def stream(request: Request, ctx: Ctx, principal=Depends(require("events.read")),
                 after: Annotated[Id, Query(description="last outbox id seen (Last-Event-ID also works)")] = 0,
                 timeout: float = Query(sse.MAX_SECONDS, ge=0, le=sse.MAX_SECONDS,
                                        description="seconds to keep the stream open (the client then reconnects)")):
    scope = principal.scope

    def fetch(since: int) -> list[sse.Event]:
        with ctx.sessions() as session:
            return [sse.Event(row.payload, row.topic, row.id)
                    for row in queries.outbox_since(session, scope, since, limit=500)]

    return sse.stream(request, sse.polled(fetch, sse.resume_point(request, after), interval=1.0), seconds=timeout)

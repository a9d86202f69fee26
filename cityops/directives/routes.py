"""Routes of directives (一键智达): issue, list, inbox, board, timeline, read/confirm/report, pass down, live board."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cityops.core import sse
from cityops.core.errors import InvalidInput
from cityops.core.params import Id, NonNegInt64
from cityops.core.web import DB, request_id, require
from cityops.directives import service

router = APIRouter(prefix="/api/directives", tags=["directives"])


def _zone_of(value: dict, crs: str | None):
    from cityops.org.routes import geometry_from_geojson

    if not isinstance(value, dict):
        raise InvalidInput("zone must be a GeoJSON geometry")
    return geometry_from_geojson(value, crs)


def _indicators(request: Request):
    from cityops.indicators.service import load_catalogue

    return load_catalogue(request.app.state.ctx.settings)


class Attachment(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2000)


class TargetIn(BaseModel):
    kind: Literal["level", "units", "posts", "departments", "runway"]
    level: str | None = Field(default=None, max_length=32)
    codes: list[Annotated[str, Field(max_length=40)]] | None = Field(default=None, max_length=10000)
    post: str | None = Field(default=None, max_length=64)
    zone: dict | None = Field(default=None, description="GeoJSON geometry (posts inside a zone)")
    crs: str | None = Field(default=None, max_length=80)
    runway: str | None = Field(default=None, max_length=40)


class DirectiveIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=20000)
    targets: list[TargetIn] = Field(min_length=1, max_length=50)
    deadline: datetime | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    cascade: str | None = Field(default=None, max_length=32, description="also pass it down at once to this level")


class ReportIn(BaseModel):
    text: str | None = Field(default=None, min_length=1, max_length=5000, description="what was done (report only)")


class ForwardIn(BaseModel):
    level: str | None = Field(default=None, max_length=32)
    targets: list[TargetIn] | None = Field(default=None, max_length=50)


class DirectiveOut(BaseModel):
    id: int
    title: str
    body: str
    attachments: list[dict]
    deadline: str | None
    targets: list[dict]
    issued_by: str
    issuer_name: str
    unit_code: str
    created_at: str
    status: str


class Progress(BaseModel):
    total: int
    read: int
    confirmed: int
    reported: int
    silent: int


class DirectiveListed(DirectiveOut):
    counts: Progress


class ReceiptOut(BaseModel):
    id: int
    directive_id: int
    parent_id: int | None
    depth: int
    unit_code: str
    department_code: str | None
    unit_path: str
    name: str
    level: str
    recipients: list[dict]
    state: str
    sent_at: str | None
    delivered_at: str | None
    read_at: str | None
    confirmed_at: str | None
    reported_at: str | None
    last_reminded_at: str | None
    escalated_at: str | None
    read_by: str | None
    confirmed_by: str | None
    reported_by: str | None
    report: str | None
    reminders: int
    overdue: bool


class LevelOut(Progress):
    depth: int
    level: str
    name_zh: str
    overdue: int
    escalated: int
    receipts: list[ReceiptOut]


class BoardOut(BaseModel):
    directive: DirectiveOut
    totals: Progress
    levels: list[LevelOut]
    log_id: int


class InboxItem(BaseModel):
    receipt: ReceiptOut
    directive: DirectiveOut


def _actor(principal, request: Request):
    return principal.actor(request_id(request))


@router.post("", status_code=201,
             summary="Issue a directive (一键智达) to levels, units, posts in a zone, departments or a runway's owners")
def issue(body: DirectiveIn, request: Request, session: DB, principal=Depends(require("directives.issue"))) -> BoardOut:
    if body.deadline is not None and body.deadline.tzinfo is None:
        raise InvalidInput("deadline must carry its time zone")
    targets = [t.model_dump(exclude_none=True) for t in body.targets]
    indicators = _indicators(request) if any(t["kind"] == "runway" for t in targets) else None
    d = service.issue(session, _actor(principal, request), principal.scope, title=body.title, body=body.body, targets=targets,
                      issuer_name=principal.display_name or principal.username, attachments=[a.model_dump() for a in body.attachments],
                      deadline=body.deadline, cascade=body.cascade, indicators=indicators, zone_of=_zone_of)
    session.commit()
    return service.board(session, principal.scope, d.id)


@router.get("", summary="Directives you issued or received (in scope), newest first, with their progress")
def list_directives(session: DB, limit: int = Query(50, ge=1, le=500), principal=Depends(require("directives.read"))) -> list[DirectiveListed]:
    return service.list_directives(session, principal.scope, limit)


@router.get("/inbox", summary="Receipts addressed to your own unit or department, newest first")
def inbox(session: DB, limit: int = Query(100, ge=1, le=500), principal=Depends(require("directives.read"))) -> list[InboxItem]:
    return service.inbox(session, principal.scope, limit)


@router.get("/{directive_id}", summary="A directive's receipt board: level by level who has read, confirmed, reported")
def board(directive_id: Id, session: DB, principal=Depends(require("directives.read"))) -> BoardOut:
    return service.board(session, principal.scope, directive_id)


class TimelineOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int
    receipt_id: int | None = Field(description="the receipt the step concerns; null: the directive itself")
    action: str = Field(description="issued, read, confirmed, reminded, escalated …")
    actor: str
    at: str
    data: dict[str, Any]


@router.get("/{directive_id}/timeline", response_model=list[TimelineOut],
            summary="A directive's timeline (issued, read, confirmed, reminded, escalated …)")
def timeline(directive_id: Id, session: DB, limit: int = Query(500, ge=1, le=5000),
             principal=Depends(require("directives.read"))) -> list[dict]:
    return service.timeline(session, principal.scope, directive_id, limit)


def _act(action: str):
    def route(directive_id: Id, receipt_id: Id, request: Request, session: DB, body: ReportIn | None = None,
              principal=Depends(require("directives.receive"))) -> ReceiptOut:
        r = service.act(session, _actor(principal, request), principal.scope, directive_id, receipt_id, action,
                        text=body.text if body else None)
        session.commit()
        d = session.get(service.Directive, directive_id)
        return service.receipt_dict(r, d.deadline)
    return route


for _action, _summary in (("read", "Mark a receipt read (by the receiving unit's own people)"),
                          ("confirm", "Confirm receipt (签收) by the receiving unit's own people; a retry changes nothing"),
                          ("report", "Report execution (反馈落实) with its text, after confirming")):
    router.add_api_route(f"/{{directive_id}}/receipts/{{receipt_id}}/{_action}", _act(_action), methods=["POST"],
                         summary=_summary, response_model=ReceiptOut, name=f"directive_{_action}")


@router.post("/{directive_id}/receipts/{receipt_id}/forward", status_code=201,
             summary="Pass the directive down from a receiving unit to a level or units beneath it")
def forward(directive_id: Id, receipt_id: Id, body: ForwardIn, request: Request, session: DB,
            principal=Depends(require("directives.receive"))) -> list[ReceiptOut]:
    rows = service.forward(session, _actor(principal, request), principal.scope, directive_id, receipt_id, level=body.level,
                           targets=[t.model_dump(exclude_none=True) for t in body.targets] if body.targets is not None else None,
                           zone_of=_zone_of)
    session.commit()
    d = session.get(service.Directive, directive_id)
    return [service.receipt_dict(r, d.deadline) for r in rows]


@router.get("/{directive_id}/stream", summary="The receipt board live (Server-Sent Events): the board, then each change")
async def stream(directive_id: Id, request: Request, principal=Depends(require("directives.read")),
                 max_events: Annotated[NonNegInt64 | None, Query(ge=1, description="close after this many events (clients, tests)")] = None,
                 timeout: float = Query(sse.MAX_SECONDS, gt=0, le=sse.MAX_SECONDS)):
    ctx = request.app.state.ctx
    scope = principal.scope

    def read_board() -> dict:
        with ctx.sessions() as s:
            return service.board(s, scope, directive_id)

    first = await run_in_threadpool(read_board)  # 404 before the stream starts
    ctx.bus.ensure_started()  # changes reach this worker's hub through the bus (directive.changed)
    hub = request.app.state.directive_hub
    sub = hub.subscribe(directive_id, scope)
    queue: asyncio.Queue = sub[1]

    async def source(wait: float) -> list[sse.Event]:
        try:
            item = await asyncio.wait_for(queue.get(), wait)
        except asyncio.TimeoutError:
            return []
        items = [item]
        # Changes that arrive together are sent together; a reload (issued, passed down, swept) replaces them.
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            try:
                items.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.01)
                if queue.empty():
                    break
        if any(i.get("event") == "overflow" or i.get("receipt") is None for i in items):
            fresh = await run_in_threadpool(read_board)
            return [sse.Event(fresh, "board", fresh["log_id"])]
        return [sse.Event(i["receipt"], "receipt", i["log_id"]) for i in items]

    return sse.stream(request, source, seconds=timeout, max_events=max_events,
                      first=[sse.Event(first, "board", first["log_id"])],
                      on_close=lambda: hub.unsubscribe(directive_id, sub))

"""Routes of the indicators capability under /api/indicators (thin: the domain is in ``service``)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cityops.core import sse
from cityops.core.errors import Forbidden, InvalidInput
from cityops.core.params import Id
from cityops.core.types import utcnow
from cityops.core.web import DB, Ctx, per_app, read_upload_limited, request_id, require
from cityops.indicators import catalogue as catalogues
from cityops.indicators import reports, scorecards, service
from cityops.indicators.catalogue import BAND_ZH
from cityops.indicators.compute import PERIOD_KINDS, TZ, period_bounds
from cityops.indicators.live import LiveIndicators
from cityops.indicators.metrics import registry
from cityops.org.levels import active_levels

router = APIRouter(prefix="/api/indicators", tags=["indicators"])
#: A stream reads the stored changes when the live indicators were recomputed, and at least this often (changes
#: stored by others: a computation run, a reported value).
STREAM_READ_SECONDS = 2.0

UnitQ = Annotated[str | None, Query(max_length=32, description="unit code (default: your scope's root, or the district)")]
AtQ = Annotated[datetime | None, Query(description="a time in the period to show (default now; ISO 8601 with time zone)")]


def _at(at: datetime | None) -> datetime:
    if at is None:
        return utcnow()
    if at.tzinfo is None:
        raise InvalidInput("at needs a time zone", {"field": "at"})
    return at


def _cat(ctx):
    return service.load_catalogue(ctx.settings)


# ------------------------------------------------------------------------------------------------ models

class ValueOut(BaseModel):
    indicator: str
    unit_code: str
    level: str
    period: str
    period_start: datetime
    value: float | None
    band: str | None
    band_zh: str | None
    target: float | None
    version: int
    numerator: float | None = None
    denominator: float | None = None


class ChildValueOut(ValueOut):
    unit_name: str


class ValuesOut(BaseModel):
    unit_code: str
    unit_name: str
    at: datetime
    items: list[ValueOut]


class SeriesOut(BaseModel):
    indicator: str
    unit_code: str
    items: list[ValueOut]


class ChildrenOut(BaseModel):
    indicator: str
    unit_code: str
    items: list[ChildValueOut]


class CatalogueOut(BaseModel):
    files: list[str]
    counts: dict[str, int]
    sectors: list[dict[str, Any]]
    scorecards: list[dict[str, Any]]


class IndicatorOut(BaseModel):
    definition: dict[str, Any]
    sector: str
    runway: str
    versions: list[dict[str, Any]]


class ChainUnit(BaseModel):
    code: str
    name: str
    name_en: str | None = None
    level: str


class BoardUnit(BaseModel):
    code: str
    name: str
    level: str
    path: str
    read_only: bool
    #: [west, south, east, north] in WGS 84: the map fits the unit without its outline.
    bbox: list[float] | None = None
    #: The unit's ancestors and itself, top first (the breadcrumb).
    chain: list[ChainUnit] = []


class Card(BaseModel):
    indicator: str
    name_zh: str
    name_en: str
    subrunway: str
    subrunway_zh: str
    subrunway_en: str
    unit: str
    direction: str
    period: str
    target: float | None
    bands: dict[str, float | None]
    value: float | None
    band: str | None
    period_start: datetime | None
    trend: list[tuple[datetime, float | None]]


class RedItem(Card):
    runway: str
    runway_zh: str
    runway_en: str
    sector: str
    breach_id: int | None
    case_id: int | None
    case_number: str | None


class RunwayCards(BaseModel):
    code: str
    name_zh: str
    name_en: str
    owner: str
    band: str | None
    cards: list[Card]


class SectorTab(BaseModel):
    code: str
    name_zh: str
    name_en: str
    red: int
    runways: list[RunwayCards]


class BoardChild(BaseModel):
    code: str
    name: str
    level: str
    band: str | None
    red: int


class BoardOut(BaseModel):
    unit: BoardUnit
    at: datetime
    sectors: list[SectorTab]
    red_list: list[RedItem]
    children: list[BoardChild]


class BreachOut(BaseModel):
    id: int
    indicator: str
    name_zh: str | None
    name_en: str | None
    unit_code: str
    period: str
    period_start: datetime
    value: float | None
    band: str
    opened_at: datetime
    closed_at: datetime | None
    recovered_value: float | None
    case_id: int | None
    case_number: str | None


class BreachesOut(BaseModel):
    items: list[BreachOut]


class RunIn(BaseModel):
    period: str | None = Field(None, description=f"one of {', '.join(PERIOD_KINDS)}; default every period in use")
    at: datetime | None = Field(None, description="a time in the period (default now); recomputes history for a past one")


class RunOut(BaseModel):
    period: str
    period_start: datetime
    indicators: int
    values: int
    inserted: int
    updated: int
    breaches_opened: int
    breaches_closed: int


class RunsOut(BaseModel):
    items: list[RunOut]


# ------------------------------------------------------------------------------------------------ routes

@router.get("/catalogue", response_model=CatalogueOut,
            summary="The indicator catalogue (板块 → 跑道 → 子跑道 → 指标); a township's subset with ?unit=")
def get_catalogue(ctx: Ctx, session: DB, unit: UnitQ = None, principal=Depends(require("indicators.read"))):
    cat = _cat(ctx)
    township = None
    if unit is not None:
        u = service.unit_of(session, principal.scope, unit)
        township = next((c for c in u.path.strip("/").split("/") if active_levels().level_of(c) == "township"), None)
    return {"files": [f.rsplit("/", 1)[-1] for f in cat.files],
            "counts": {"sectors": len(cat.sectors), "runways": len(cat.runways), "subrunways": len(cat.subrunways),
                       "indicators": len(cat.indicators)},
            "sectors": catalogues.tree(cat, township),
            "scorecards": [s.model_dump() for s in cat.scorecards.values()]}


class MetricParamOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description="str, int, float or list")
    choices: list[Any] = Field(description="allowed values (a list parameter takes a subset); empty: any")
    required: bool
    default: Any


class MetricOut(BaseModel):
    """A platform metric an indicator may be defined on."""
    model_config = ConfigDict(extra="forbid")
    name: str
    name_zh: str
    name_en: str
    fold: str = Field(description="how values roll up: sum, max or min")
    ratio: bool = Field(description="a rate: rolls up as the ratio of the sums")
    params: dict[str, MetricParamOut]


@router.get("/metrics", response_model=list[MetricOut],
            summary="Platform metrics an indicator may be defined on (named, parameterised measures)")
def get_metrics(principal=Depends(require("indicators.read"))) -> list[dict[str, Any]]:
    return registry().describe()


@router.get("/board", response_model=BoardOut,
            summary="The cockpit (数字驾驶舱) of a unit: sector tabs, runway cards with trend, red list, children")
def get_board(ctx: Ctx, session: DB, unit: UnitQ = None, at: AtQ = None,
              days: int = Query(30, ge=1, le=92), principal=Depends(require("indicators.read"))):
    u = service.unit_of(session, principal.scope, unit)
    return service.board(session, _cat(ctx), principal.scope, u, _at(at), days)


@router.get("/values", response_model=ValuesOut, summary="Every indicator's value for a unit in the period holding ?at")
def get_values(ctx: Ctx, session: DB, unit: UnitQ = None, at: AtQ = None, principal=Depends(require("indicators.read"))):
    u = service.unit_of(session, principal.scope, unit)
    at = _at(at)
    items = service.values_at(session, _cat(ctx), u, at)
    return {"unit_code": u.code, "unit_name": u.name, "at": at, "items": sorted(items.values(), key=lambda d: d["indicator"])}


@router.get("/breaches", response_model=BreachesOut,
            summary="Breaches (red band entered) in your scope; ?open=true for the open ones")
def get_breaches(ctx: Ctx, session: DB, unit: UnitQ = None, open: bool = False, indicator: str | None = Query(None, max_length=64),
                 limit: int = Query(200, ge=1, le=1000), principal=Depends(require("indicators.read"))):
    cat = _cat(ctx)
    u = service.unit_of(session, principal.scope, unit) if unit else None
    rows = service.breaches(session, principal.scope, unit=u, open_only=open, indicator_code=indicator, limit=limit)
    return {"items": [{"id": b.id, "indicator": b.indicator_code,
                       "name_zh": cat.indicators[b.indicator_code].name_zh if b.indicator_code in cat.indicators else None,
                       "name_en": cat.indicators[b.indicator_code].name_en if b.indicator_code in cat.indicators else None,
                       "unit_code": b.unit_code, "period": b.period, "period_start": b.period_start, "value": b.value,
                       "band": b.band, "opened_at": b.opened_at, "closed_at": b.closed_at,
                       "recovered_value": b.recovered_value, "case_id": b.case_id, "case_number": b.case_number}
                      for b in rows]}


@router.post("/compute", response_model=RunsOut,
             summary="Recompute the indicators of a period for the whole district (and act on breaches)")
def post_compute(request: Request, ctx: Ctx, session: DB, body: RunIn, principal=Depends(require("indicators.compute"))):
    if not principal.scope.district_wide:
        raise Forbidden("recomputing indicators needs a district-wide scope (it computes every unit)")
    if body.period is not None and body.period not in PERIOD_KINDS:
        raise InvalidInput(f"unknown period {body.period!r}; use {', '.join(PERIOD_KINDS)}", {"field": "period"})
    at = _at(body.at)
    cat = _cat(ctx)
    results = service.run_all(session, cat, at, act=True, periods=(body.period,) if body.period else None,
                              actor=principal.actor(request_id(request)))
    session.commit()
    return {"items": [{"period": r.period, "period_start": r.start, "indicators": r.indicators, "values": r.values,
                       "inserted": r.inserted, "updated": r.updated, "breaches_opened": r.breaches_opened,
                       "breaches_closed": r.breaches_closed} for r in results]}


@router.get("/stream", summary="Live stream (SSE) of indicator values that changed, in your scope (and its ancestors, read-only)")
async def stream(request: Request, ctx: Ctx, principal=Depends(require("indicators.read")),
                 after: Annotated[Id, Query(description="last change id seen (Last-Event-ID also works); 0 = from now")] = 0,
                 timeout: float = Query(sse.MAX_SECONDS, ge=0, le=sse.MAX_SECONDS)):
    scope = principal.scope
    live = live_indicators(request.app.state)
    if after == 0 and not request.headers.get("last-event-id"):
        after = await run_in_threadpool(_last, ctx)

    def read(since: int) -> tuple[list[sse.Event], int, bool]:
        """The events of the current periods' changes after ``since``, the last id read and whether more is stored.
        A past period's change (a history being written while the cockpit is open) is not sent: a live view shows
        the current periods, and would draw an old day's value as today's."""
        with ctx.sessions() as session:
            page = service.current_changes_after(session, scope, since)
            return ([sse.Event({"indicator": c.indicator_code, "unit_code": c.unit_code, "period": c.period,
                                "period_start": c.period_start.isoformat(), "value": c.value, "band": c.band,
                                "band_zh": BAND_ZH.get(c.band) if c.band else None, "previous_band": c.previous_band,
                                "at": c.at.isoformat()}, "value", c.id)
                     for c in page.changes], page.last, page.full)

    since = sse.resume_point(request, after)
    # What is there now is read without recomputing; the live thread recomputes and wakes this stream.
    first, since, more = await run_in_threadpool(read, since)
    # A full page means more is stored: the next page is read at once, not at the next wake. One recomputation can
    # store thousands of changes (a new day stores every live value anew); a page per wake (about one a second)
    # kept an open cockpit tens of seconds behind, and the facts that followed waited behind that backlog. A page
    # of past periods only sends nothing but moves ``since`` on all the same (the next read starts after it).
    handle = None

    async def source(timeout: float) -> list[sse.Event]:
        nonlocal since, handle, more
        if handle is None:  # inside the stream's body, so that its end always unwatches
            handle = live.watch()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if not more:
                await live.wait(handle, max(0.0, min(STREAM_READ_SECONDS, remaining)))
            batch, since, more = await run_in_threadpool(read, since)
            if batch:
                return batch
            if deadline - time.monotonic() <= 0:
                return []

    return sse.stream(request, source, seconds=timeout, first=first, on_close=lambda: handle is not None and live.unwatch(handle))


def live_indicators(app_state) -> LiveIndicators:
    """The process's live indicators (one per app); the bus's broadcasts poke it (wiring.py)."""
    return per_app(app_state, "indicators_live", lambda c: LiveIndicators(c.sessions, c.settings))


def _last(ctx) -> int:
    with ctx.sessions() as session:
        return service.last_change_id(session)


class ReportIn(BaseModel):
    indicator: str = Field(max_length=64)
    unit_code: str = Field(max_length=32)
    period: str = Field(max_length=32, description="any day of the period, YYYY-MM-DD (local calendar)")
    value: float
    note: str | None = Field(None, max_length=2000)


class ReportsIn(BaseModel):
    entries: list[ReportIn] = Field(min_length=1, max_length=reports.MAX_ROWS)
    channel: str = Field("api", pattern="^(api|form)$")


class ReportOut(BaseModel):
    indicator: str
    unit_code: str
    period: str
    period_start: datetime
    value: float
    note: str | None
    channel: str
    entered_by: str
    entered_at: datetime


class ReportsOut(BaseModel):
    stored: int
    items: list[ReportOut]


class DueItem(BaseModel):
    indicator: str
    name_zh: str
    name_en: str
    owner: str
    unit_code: str
    unit_name: str
    period_start: datetime
    due_at: datetime
    entered: bool
    value: float | None
    status: str


class DueOut(BaseModel):
    items: list[DueItem]


def _store_reports(request, ctx, session, principal, entries, channel):
    cat = _cat(ctx)
    rows = reports.enter(session, cat, principal.scope, entries, channel, principal.actor(request_id(request)))
    # The new values count at once: their periods are recomputed for the indicators they feed.
    for period, start in {(r.period, r.period_start) for r in rows}:
        codes = {r.indicator_code for r in rows if r.period == period}
        codes |= {c for c, f in cat.formulas.items() if f.inputs & codes}
        service.run(session, cat, period, start, codes=codes, actor=principal.actor(request_id(request)))
    session.commit()
    return {"stored": len(rows), "items": [{"indicator": r.indicator_code, "unit_code": r.unit_code, "period": r.period,
                                            "period_start": r.period_start, "value": r.value, "note": r.note,
                                            "channel": r.channel, "entered_by": r.entered_by, "entered_at": r.entered_at}
                                           for r in rows]}


@router.post("/reports", response_model=ReportsOut, summary="Enter reported values (填报) by form or API; all or nothing")
def post_reports(request: Request, ctx: Ctx, session: DB, body: ReportsIn, principal=Depends(require("indicators.report"))):
    entries = [reports.Entry(e.indicator, e.unit_code, e.period, e.value, e.note) for e in body.entries]
    return _store_reports(request, ctx, session, principal, entries, body.channel)


@router.post("/reports/upload", response_model=ReportsOut,
             summary="Upload reported values as CSV or XLSX (indicator, unit_code, period, value, note); all or nothing")
async def post_reports_upload(request: Request, ctx: Ctx, session: DB, file: UploadFile = File(...),
                              principal=Depends(require("indicators.report"))):
    content = await read_upload_limited(file, ctx.settings.max_upload_bytes)
    entries, channel = reports.parse_file(content, file.filename or "")
    return await run_in_threadpool(_store_reports, request, ctx, session, principal, entries, channel)


@router.get("/reports/due", response_model=DueOut,
            summary="Reported values due for the last period, per unit in scope: entered, reminder, overdue")
def get_reports_due(ctx: Ctx, session: DB, at: AtQ = None, principal=Depends(require("indicators.read"))):
    return {"items": reports.due(session, _cat(ctx), principal.scope, _at(at))}


class ScoreItemOut(BaseModel):
    indicator: str
    name_zh: str
    name_en: str
    weight: float
    value: float | None
    score: float | None
    no_data: bool


class RankRow(BaseModel):
    unit_code: str
    unit_name: str
    score: float
    rank: int
    previous_rank: int | None
    rank_change: int | None
    items: list[ScoreItemOut]


class RankingOut(BaseModel):
    key: str
    name_zh: str
    name_en: str
    level: str
    period: str
    period_start: datetime
    period_end: datetime
    of: int
    items: list[RankRow]


class ScorecardsOut(BaseModel):
    items: list[dict[str, Any]]


@router.get("/scorecards", response_model=ScorecardsOut, summary="Scorecards (监督评价): weighted indicators and scoring rules")
def get_scorecards(ctx: Ctx, principal=Depends(require("indicators.read"))):
    return {"items": [s.model_dump() for s in _cat(ctx).scorecards.values()]}


@router.get("/scorecards/{key}", response_model=RankingOut,
            summary="A scorecard's ranking (赛马比拼) for a month or quarter, with the change of rank; rows in your scope")
def get_ranking(ctx: Ctx, session: DB, key: str, period: str = Query("month", pattern="^(month|quarter)$"), at: AtQ = None,
                principal=Depends(require("indicators.read"))):
    return scorecards.ranking(session, _cat(ctx), principal.scope, key, period, _at(at))


@router.get("/report", summary="A unit's report for a period: its indicators and the scorecards' rankings, as XLSX or PDF",
            response_class=Response, responses={200: {"content": {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {}, "application/pdf": {}}}})
def get_report(ctx: Ctx, session: DB, unit: UnitQ = None, period: str = Query("month", pattern="^(month|quarter)$"),
               at: AtQ = None, format: str = Query("xlsx", pattern="^(xlsx|pdf)$"), principal=Depends(require("indicators.read"))):
    cat = _cat(ctx)
    u = service.unit_of(session, principal.scope, unit)
    at = _at(at)
    start, end = period_bounds(period, at)
    values = service.values_at(session, cat, u, min(end, utcnow()) - timedelta(microseconds=1))
    rankings = [scorecards.ranking(session, cat, principal.scope, k, period, at) for k in cat.scorecards]
    local = start.astimezone(TZ)
    title = f"{u.name} 体征指标报告 {local:%Y-%m}" + (" 季度" if period == "quarter" else "")
    rows = scorecards.report_rows(cat, values)
    if format == "pdf":
        body, media = scorecards.to_pdf(title, rows, rankings), "application/pdf"
    else:
        body, media = scorecards.to_xlsx(title, rows, rankings), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="indicators-{u.code}-{local:%Y%m}.{format}"'})


# Per-indicator routes come last: /{code} would otherwise catch the fixed paths above.

@router.get("/{code}", response_model=IndicatorOut, summary="One indicator: its definition and its versions")
def get_indicator(ctx: Ctx, session: DB, code: str, principal=Depends(require("indicators.read"))):
    from sqlalchemy import select

    from cityops.indicators.models import DefinitionVersion

    cat = _cat(ctx)
    ind = service.indicator(cat, code)
    sub = cat.subrunways[ind.subrunway]
    versions = [{"version": v.version, "valid_from": v.valid_from, "digest": v.digest}
                for v in session.scalars(select(DefinitionVersion).where(DefinitionVersion.code == code)
                                         .order_by(DefinitionVersion.version))]
    return {"definition": catalogues.describe(ind), "runway": sub.runway, "sector": cat.runways[sub.runway].sector,
            "versions": versions}


@router.get("/{code}/series", response_model=SeriesOut, summary="An indicator's values for a unit over a time range")
def get_series(ctx: Ctx, session: DB, code: str, unit: UnitQ = None, start: datetime | None = None,
               end: datetime | None = None, principal=Depends(require("indicators.read"))):
    end = _at(end)
    start = _at(start) if start is not None else end - timedelta(days=30)
    if end <= start or (end - start).days > 3700:
        raise InvalidInput("start must be before end, at most ten years apart", {"field": "start"})
    u = service.unit_of(session, principal.scope, unit)
    return {"indicator": code, "unit_code": u.code, "items": service.series(session, _cat(ctx), code, u, start, end)}


@router.get("/{code}/children", response_model=ChildrenOut,
            summary="An indicator at a unit's children (drill-down), worst first; only children in your scope")
def get_children(ctx: Ctx, session: DB, code: str, unit: UnitQ = None, at: AtQ = None,
                 principal=Depends(require("indicators.read"))):
    u = service.unit_of(session, principal.scope, unit)
    return {"indicator": code, "unit_code": u.code,
            "items": service.children_values(session, _cat(ctx), principal.scope, code, u, _at(at))}

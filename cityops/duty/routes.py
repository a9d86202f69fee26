"""Routes of duty (值班值守): rosters, assignments, generation, swaps, who is on duty now, handovers, XLSX."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from cityops.core.errors import InvalidInput
from cityops.core.params import Id
from cityops.core.web import DB, request_id, require
from cityops.duty import service

router = APIRouter(prefix="/api/duty", tags=["duty"])


def _actor(principal, request: Request):
    return principal.actor(request_id(request))


def _aware(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        raise InvalidInput("at must carry its time zone (e.g. 2026-07-14T20:00:00+08:00)")
    return at


class RosterOut(BaseModel):
    key: str
    unit_code: str
    department_code: str | None
    name: str
    level: str
    writable: bool


class AssignmentOut(BaseModel):
    id: int
    roster: str
    unit_code: str
    department_code: str | None
    person_id: int
    person_name: str | None
    person_phone: str | None
    role: str
    role_name_zh: str
    role_name_en: str
    shift: str
    shift_name_zh: str
    shift_name_en: str
    day: str
    starts_at: str
    ends_at: str
    swapped_from: int | None
    note: str | None


class DayOut(BaseModel):
    day: str
    weekday: int
    kind: str = Field(description="working, weekend, holiday (法定节假日) or workday_adjusted (调休上班)")
    working: bool
    assignments: list[AssignmentOut]


class RosterView(BaseModel):
    roster: dict
    start: str
    end: str
    days: list[DayOut]
    shifts: list[dict]
    roles: list[dict]


class OnDutyOut(BaseModel):
    person_id: int
    name: str
    phone: str | None
    email: str | None
    post: str
    role: str
    unit_code: str
    roster: str | None
    shift: str | None
    starts_at: str | None
    ends_at: str | None
    rostered: bool


class AssignmentIn(BaseModel):
    person_id: Id
    role: str = Field(max_length=32)
    shift: str = Field(max_length=32)
    day: date
    note: str | None = Field(default=None, max_length=500)


class AssignIn(BaseModel):
    roster: str = Field(min_length=1, max_length=80, description="a center's unit code or dept:<department code>")
    items: list[AssignmentIn] = Field(min_length=1, max_length=service.MAX_ITEMS)


class GenerateIn(BaseModel):
    roster: str = Field(min_length=1, max_length=80)
    start: date
    days: int = Field(ge=1, le=service.MAX_DAYS)
    leaders: list[Id] | None = Field(default=None, max_length=200)
    operators: list[Id] | None = Field(default=None, max_length=200)
    replace: bool = False


class SwapIn(BaseModel):
    with_assignment: Id | None = None
    person_id: Id | None = None
    note: str | None = Field(default=None, max_length=500)


class HandoverItem(BaseModel):
    text: str = Field(min_length=1, max_length=500)
    done: bool = False


class HandoverIn(BaseModel):
    roster: str = Field(min_length=1, max_length=80)
    handed_by: Id
    taken_by: Id
    summary: str = Field(default="", max_length=5000)
    items: list[HandoverItem] = Field(default_factory=list, max_length=200)
    at: datetime | None = None


class HandoverOut(BaseModel):
    id: int
    roster: str
    at: str
    handed_by: int
    handed_by_name: str | None
    taken_by: int
    taken_by_name: str | None
    summary: str
    items: list[dict]
    open_items: int
    carried_from: int | None


@router.get("/rosters", summary="Duty rosters you see: every center (district, townships) and department")
def list_rosters(session: DB, principal=Depends(require("duty.read"))) -> list[RosterOut]:
    return service.rosters(session, principal.scope)


@router.get("/roster", summary="A roster over a period (default: this week), each day with its calendar kind")
def get_roster(session: DB, roster: str = Query(min_length=1, max_length=80), start: date | None = None,
               end: date | None = None, principal=Depends(require("duty.read"))) -> RosterView:
    start, end = _period(start, end)
    return service.roster_view(session, principal.scope, roster, start, end)


def _period(start: date | None, end: date | None) -> tuple[date, date]:
    today = datetime.now(service.calendar().tz).date()
    start = start or today - timedelta(days=today.weekday())
    return start, end or start + timedelta(days=6)


@router.get("/roster.xlsx", summary="The roster as a printable workbook (XLSX, A4 landscape)",
            response_class=Response, responses={200: {"content": {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {}}}})
def export_roster(session: DB, roster: str = Query(min_length=1, max_length=80), start: date | None = None,
                  end: date | None = None, language: str = Query("zh", pattern="^(zh|en)$"),
                  principal=Depends(require("duty.read"))) -> Response:
    start, end = _period(start, end)
    view = service.roster_view(session, principal.scope, roster, start, end)
    return Response(service.export_xlsx(view, language),
                    media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="duty-{view["roster"]["unit_code"]}-{start}.xlsx"'})


@router.post("/assignments", status_code=201, summary="Add assignments to a roster (all or nothing)")
def add_assignments(body: AssignIn, request: Request, session: DB, principal=Depends(require("duty.edit"))) -> list[AssignmentOut]:
    rows = service.assign(session, _actor(principal, request), principal.scope, body.roster,
                          [i.model_dump() for i in body.items])
    session.commit()
    return _snapshots(session, rows)


@router.post("/generate", status_code=201, summary="Fill a roster by rotation over the duty calendar (all or nothing)")
def generate(body: GenerateIn, request: Request, session: DB, principal=Depends(require("duty.edit"))) -> list[AssignmentOut]:
    rows = service.generate(session, _actor(principal, request), principal.scope, body.roster, body.start, body.days,
                            leaders=body.leaders, operators=body.operators, replace=body.replace)
    session.commit()
    return _snapshots(session, rows)


def _snapshots(session, rows) -> list[dict]:
    from sqlalchemy import select

    from cityops.org.models import Person

    people = {p.id: p for p in session.scalars(select(Person).where(Person.id.in_({r.person_id for r in rows})))}
    return [service.assignment_snapshot(r, people) for r in rows]


@router.delete("/assignments/{assignment_id}", status_code=204, summary="Remove an assignment")
def remove_assignment(assignment_id: Id, request: Request, session: DB, principal=Depends(require("duty.edit"))) -> Response:
    service.remove(session, _actor(principal, request), principal.scope, assignment_id)
    session.commit()
    return Response(status_code=204)


@router.post("/assignments/{assignment_id}/swap", summary="换班 with another assignment, or 替班 by another person")
def swap(assignment_id: Id, body: SwapIn, request: Request, session: DB, principal=Depends(require("duty.edit"))) -> list[AssignmentOut]:
    rows = service.swap(session, _actor(principal, request), principal.scope, assignment_id,
                        with_assignment=body.with_assignment, person_id=body.person_id, note=body.note)
    session.commit()
    return _snapshots(session, rows)


@router.get("/now", summary="Who is on duty in a unit (or dept:<code>) at a time (default now)")
def now(session: DB, unit: str = Query(min_length=1, max_length=200), at: datetime | None = None,
        principal=Depends(require("duty.read"))) -> list[OnDutyOut]:
    roster = service.roster_of(session, service._key_of(session, unit), principal.scope)
    return [o.as_dict() for o in service.on_duty(session, roster.key, _aware(at))]


@router.get("/handovers", summary="Shift handovers (交接班) of a roster, newest first")
def list_handovers(session: DB, roster: str = Query(min_length=1, max_length=80), limit: int = Query(50, ge=1, le=500),
                   principal=Depends(require("duty.read"))) -> list[HandoverOut]:
    return service.handovers(session, principal.scope, roster, limit)


@router.post("/handovers", status_code=201, summary="Record a handover; the previous one's open items are carried over")
def add_handover(body: HandoverIn, request: Request, session: DB, principal=Depends(require("duty.edit"))) -> HandoverOut:
    h = service.handover(session, _actor(principal, request), principal.scope, body.roster, handed_by=body.handed_by,
                         taken_by=body.taken_by, summary=body.summary, items=[i.model_dump() for i in body.items],
                         at=_aware(body.at) if body.at else None)
    session.commit()
    return service.handover_snapshot(h)

"""Routes: the call log — log a call (to a person, a department or a unit; linked to an incident or a case) and
read the calls in your scope."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cityops.calls import service
from cityops.core.params import Id, NonNegInt64
from cityops.core.web import DB, request_id, require
from cityops.org.routes import MAX_PAGE

router = APIRouter(prefix="/api/calls", tags=["calls"])


class CallIn(BaseModel):
    person_id: Id | None = Field(default=None, description="The person called (their phone on record unless number is given)")
    department_code: str | None = Field(default=None, max_length=64, description="A department called on its duty phone")
    unit_code: str | None = Field(default=None, max_length=32, description="A unit called on the number given")
    number: str | None = Field(default=None, max_length=32, description="The number dialled")
    callee_name: str | None = Field(default=None, max_length=100, description="Who answered, if not the person on record")
    direction: Literal["outgoing", "incoming"] = "outgoing"
    called_at: datetime | None = Field(default=None, description="When, with a UTC offset (default: now)")
    duration_s: int | None = Field(default=None, ge=0, le=86_400)
    outcome: Literal["answered", "no_answer", "busy", "unreachable", "rejected", "wrong_number", "voicemail"]
    note: str | None = Field(default=None, max_length=2000)
    incident_id: Id | None = None
    case: str | None = Field(default=None, max_length=64, description="Case number or id")
    request_key: str | None = Field(default=None, min_length=8, max_length=80,
                                    description="The client's key of this entry: a retry answers the stored one")


class CallOut(BaseModel):
    id: int
    direction: str
    person_id: int | None
    department_code: str | None
    unit_code: str
    callee_name: str
    number: str
    tel: str | None = Field(description="RFC 3966 tel: URI to call back")
    called_at: str
    duration_s: int | None
    outcome: str
    note: str | None
    incident_id: int | None
    case_id: int | None
    operator: str


class CallPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CallOut]


@router.post("", status_code=201, response_model=CallOut, summary="Log a call (who, when, outcome, note; incident or case)",
             responses={200: {"model": CallOut, "description": "a retry: the entry stored under this request_key"}})
def log_call(body: CallIn, request: Request, session: DB, principal=Depends(require("calls.write"))):
    entry, new = service.log_call(session, principal.actor(request_id(request)), principal.scope, body.model_dump())
    session.commit()
    data = service.call_dict(entry)
    return data if new else JSONResponse(CallOut(**data).model_dump(), status_code=200)


@router.get("", response_model=CallPage, summary="Calls in your scope (and your own), newest first")
def list_calls(session: DB, principal=Depends(require("calls.read")), person_id: Id | None = None,
               department_code: str | None = None, unit: str | None = None, incident_id: Id | None = None,
               case: str | None = None, limit: int = Query(100, ge=1, le=MAX_PAGE), offset: NonNegInt64 = 0) -> dict:
    rows, total = service.list_calls(session, principal.scope, principal.user_id, person_id=person_id,
                                     department_code=department_code, unit=unit, incident_id=incident_id, case=case,
                                     limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": [service.call_dict(c) for c in rows]}

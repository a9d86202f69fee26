"""The call log (通话记录): who was called (a person, a department's duty phone, or a unit's number), when, with
what outcome and note, by which operator, and for which incident or case.

Scope: an operator logs calls to anyone it *sees* (its own subtree and the levels above, whom it reports to);
an entry is read by the principals whose scope covers the callee's unit, and always by the operator who wrote
it. A linked incident must be one the operator sees, a linked case one it covers (as the task and event
centers decide). A retried entry with the same ``request_key`` answers the stored one.
"""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cityops.calls.models import CallLog
from cityops.core import audit
from cityops.core.errors import Conflict, InvalidInput, NotFound
from cityops.core.types import utcnow
from cityops.events.actions import get_case
from cityops.identity.scope import Scope
from cityops.org.models import Department, Person, Unit
from cityops.tasks.incidents import get_incident

OUTCOMES = ("answered", "no_answer", "busy", "unreachable", "rejected", "wrong_number", "voicemail")
DIRECTIONS = ("outgoing", "incoming")
NUMBER = re.compile(r"^\+?[0-9][0-9\- ]{2,30}$")
#: Clocks differ: an entry may be stamped this far ahead of the server.
CLOCK_SKEW = timedelta(minutes=5)


def tel_uri(number: str | None) -> str | None:
    """RFC 3966 ``tel:`` URI of a dialable number (spaces dropped; '-' kept as the visual separator it is)."""
    if not number or not NUMBER.match(number.strip()):
        return None
    return "tel:" + number.strip().replace(" ", "")


def log_call(session: Session, actor: audit.Actor, scope: Scope, data: dict) -> tuple[CallLog, bool]:
    """Store one call (checked first; nothing on a refusal). Returns the entry and whether it is new."""
    key = data.get("request_key")
    if key:
        known = session.scalar(select(CallLog).where(CallLog.request_key == key))
        if known is not None:
            if known.operator_id != actor.user_id:
                raise Conflict(f"request_key {key!r} is another operator's entry")
            return known, False
    targets = [k for k in ("person_id", "department_code", "unit_code") if data.get(k) is not None]
    if len(targets) != 1:
        raise InvalidInput("name exactly one callee: person_id, department_code or unit_code (with number)")
    number = data.get("number")
    if number is not None and not NUMBER.match(number):
        raise InvalidInput(f"number {number[:40]!r} is not a phone number (digits, '+', '-', spaces)")
    if data.get("outcome") not in OUTCOMES:
        raise InvalidInput(f"outcome {data.get('outcome')!r} must be one of {', '.join(OUTCOMES)}")
    if data.get("direction", "outgoing") not in DIRECTIONS:
        raise InvalidInput(f"direction {data.get('direction')!r} must be one of {', '.join(DIRECTIONS)}")
    called_at = data.get("called_at") or utcnow()
    if called_at.tzinfo is None:
        raise InvalidInput("called_at needs a UTC offset, e.g. 2026-07-08T21:05:00+08:00")
    if called_at > utcnow() + CLOCK_SKEW:
        raise InvalidInput("called_at lies in the future")
    if data.get("duration_s") is not None and not 0 <= data["duration_s"] <= 86_400:
        raise InvalidInput("duration_s must be between 0 and 86400 seconds")
    person_id = department_code = None
    if data.get("person_id") is not None:
        person = session.get(Person, data["person_id"])
        if person is None or not scope.sees(person.unit_path):
            raise NotFound(f"person {data['person_id']} not found")
        person_id, unit_code, unit_path, name = person.id, person.unit_code, person.unit_path, person.name
        number = number or person.phone
    elif data.get("department_code") is not None:
        dept = session.scalar(select(Department).where(Department.code == data["department_code"]))
        if dept is None or not scope.sees(dept.unit_path):
            raise NotFound(f"department {data['department_code']!r} not found")
        department_code, unit_code, unit_path, name = dept.code, dept.unit_code, dept.unit_path, dept.name
        number = number or dept.phone
    else:
        unit = session.scalar(select(Unit).where(Unit.code == data["unit_code"]))
        if unit is None or not scope.sees(unit.path):
            raise NotFound(f"unit {data['unit_code']!r} not found")
        unit_code, unit_path, name = unit.code, unit.path, unit.name
    if not number:
        raise InvalidInput(f"{name} has no phone number on record: give the number called")
    incident_id = case_id = None
    if data.get("incident_id") is not None:
        incident_id = get_incident(session, scope, data["incident_id"]).id
    if data.get("case") is not None:
        case_id = get_case(session, scope, data["case"]).id
    entry = CallLog(direction=data.get("direction", "outgoing"), person_id=person_id, department_code=department_code,
                    unit_code=unit_code, unit_path=unit_path, callee_name=data.get("callee_name") or name, number=number,
                    called_at=called_at, duration_s=data.get("duration_s"), outcome=data["outcome"],
                    note=(data.get("note") or None), incident_id=incident_id, case_id=case_id, operator=actor.name,
                    operator_id=actor.user_id, request_key=key or None, created_at=utcnow())
    session.add(entry)
    session.flush()
    audit.record(session, actor, "calls.log", "call", str(entry.id), after=call_dict(entry), unit_path=unit_path)
    return entry, True


def visible(scope: Scope, user_id: int | None):
    return or_(scope.covers_clause(CallLog.unit_path), CallLog.operator_id == user_id) if user_id is not None \
        else scope.covers_clause(CallLog.unit_path)


def list_calls(session: Session, scope: Scope, user_id: int | None, *, person_id: int | None = None,
               department_code: str | None = None, unit: str | None = None, incident_id: int | None = None,
               case: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[CallLog], int]:
    """The calls this principal may read, newest first, filtered by callee, unit subtree, incident or case."""
    stmt = select(CallLog).where(visible(scope, user_id))
    if person_id is not None:
        stmt = stmt.where(CallLog.person_id == person_id)
    if department_code is not None:
        stmt = stmt.where(CallLog.department_code == department_code)
    if unit is not None:
        row = session.scalar(select(Unit).where(Unit.code == unit))
        if row is None or not scope.sees(row.path):
            raise NotFound(f"unit {unit!r} not found")
        stmt = stmt.where(CallLog.unit_path.startswith(row.path, autoescape=True))
    if incident_id is not None:
        stmt = stmt.where(CallLog.incident_id == get_incident(session, scope, incident_id).id)
    if case is not None:
        stmt = stmt.where(CallLog.case_id == get_case(session, scope, case).id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = list(session.scalars(stmt.order_by(CallLog.called_at.desc(), CallLog.id.desc()).limit(limit).offset(offset)))
    return rows, total


def call_dict(c: CallLog) -> dict:
    return {"id": c.id, "direction": c.direction, "person_id": c.person_id, "department_code": c.department_code,
            "unit_code": c.unit_code, "callee_name": c.callee_name, "number": c.number, "tel": tel_uri(c.number),
            "called_at": c.called_at.isoformat(), "duration_s": c.duration_s, "outcome": c.outcome, "note": c.note,
            "incident_id": c.incident_id, "case_id": c.case_id, "operator": c.operator}

"""The case workflow (流转): one action at a time against the state derived from the log, each change logged with
its outbox row in the same transaction; closing a case from wherever it stands, and merging duplicates.

Hooks other capabilities call (stable): ``close_case(session, case_id, note, actor) -> Case`` — walks the remaining
steps, each logged. Callers commit."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import publish
from cityops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from cityops.core.storage import storage_of
from cityops.events import catalogue, rollup
from cityops.events.manifest import CaseChanged
from cityops.events.models import Case, Outbox, Transition
from cityops.events.routing import ALL, utcnow
from cityops.events.workflow import ACTIONS, STATES, allowed_actions, next_state, project
from cityops.identity.scope import Scope
from cityops.org.models import Department, Unit


def log_rows(case_id: int | None, seq: int, number: str, unit_path: str, action: str, from_state: str | None,
              to_state: str, actor: audit.Actor, at: datetime, note: str | None, data: dict | None, lon, lat) -> tuple[dict, dict]:
    """A log entry (``event_transitions``) and its outbox row, as column values."""
    entry = dict(case_id=case_id, seq=seq, action=action, from_state=from_state, to_state=to_state, at=at,
                 actor=actor.name, actor_id=actor.user_id, note=note, data=data or {}, lon=lon, lat=lat, unit_path=unit_path)
    notice = dict(case_id=case_id, topic=f"case.{action}", unit_path=unit_path, created_at=at,
                  payload={"number": number, "action": action, "from": from_state, "to": to_state,
                           "at": at.isoformat(), "actor": actor.name})
    return entry, notice


def _log(session: Session, case: Case, action: str, from_state: str | None, to_state: str, actor: audit.Actor,
         at: datetime, note: str | None = None, data: dict | None = None, lon=None, lat=None) -> Transition:
    """Append the log entry and its outbox row."""
    case.seq = (case.seq or 0) + 1
    entry, notice = log_rows(case.id, case.seq, case.number, case.unit_path, action, from_state, to_state, actor, at,
                              note, data, lon, lat)
    t = Transition(**entry)
    session.add(t)
    session.add(Outbox(**notice))
    return t


def close_case(session: Session, case_id: int, note: str, actor: audit.Actor) -> Case:
    """Close a case from wherever it stands (used by the task center: an emergency incident resolved),
    walking the remaining workflow steps; each step is logged under ``actor``."""
    case = get_case(session, ALL, case_id)
    path = {"reported": "accept", "accepted": "file", "filed": "dispatch", "returned": "dispatch",
            "dispatched": "start", "rework": "start", "extension_requested": "approve_extension",
            "backlogged": "resume", "in_handling": "feedback", "handled": "close"}
    for _ in range(12):
        state = current_state(session, case)
        if state == "closed":
            return case
        if state == "void":
            raise Conflict(f"case {case.number} is void and cannot be closed", {"state": state, "allowed": []})
        step = path[state]
        data = None
        if step == "dispatch" and not (case.route or {}).get("department_code"):
            data = {"unit_code": (case.route or {}).get("unit_code") or case.township_code or case.grid_code}
        act(session, case, step, actor, note=note, data=data)
    raise AssertionError("close_case did not converge")  # pragma: no cover


def get_case(session: Session, scope: Scope, key, *, lock: bool = False) -> Case:
    stmt = select(Case)
    # ASCII digits only: str.isdigit() also holds for '³' and other digits int() refuses; a case number otherwise.
    if isinstance(key, int) or (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 18):
        stmt = stmt.where(Case.id == int(key))
    else:
        stmt = stmt.where(Case.number == str(key))
    if lock:
        stmt = storage_of(session).lock_for_update(stmt)
    case = session.scalar(stmt)
    if case is None or not scope.covers(case.unit_path) or not _department_sees(scope, case.department_code):
        raise NotFound(f"no case {key!r}")
    return case


def _department_sees(scope: Scope, department_code: str | None) -> bool:
    """Department staff (a scope with departments) work on the cases dispatched to their departments."""
    return scope.all_units or not scope.department_codes or department_code in scope.department_codes


def current_state(session: Session, case: Case) -> str:
    """The state derived from the log: the last entry's ``to_state``."""
    return session.scalar(select(Transition.to_state).where(Transition.case_id == case.id)
                          .order_by(Transition.seq.desc()).limit(1))


def _apply(case: Case, fields: dict) -> None:
    for k, v in fields.items():
        setattr(case, k, v)


def act(session: Session, case: Case | int | str, action: str, actor: audit.Actor, *, note: str | None = None,
        data: dict | None = None, lon: float | None = None, lat: float | None = None, at: datetime | None = None,
        may=None, scope: Scope = ALL) -> Transition:
    """Perform one workflow action. An action not allowed in the current state raises Conflict (409) listing
    the actions allowed now; a person lacking the action's permission gets Forbidden.

    ``may(permission) -> bool`` is the principal's permission check (None: internal caller, all allowed)."""
    if not isinstance(case, Case):
        case = get_case(session, scope, case, lock=True)
    else:
        storage_of(session).refresh_locked(session, case)
    spec = ACTIONS.get(action)
    if spec is None:
        raise InvalidInput(f"unknown action {action!r}; actions: {', '.join(ACTIONS)}", {"field": "action"})
    state = current_state(session, case)
    if may is not None and (spec.permission is None or not may(spec.permission)):
        raise Forbidden(f"you may not {action} ({spec.zh}) a case")
    if state not in spec.sources:
        allowed = allowed_actions(state, may or (lambda p: True))
        raise Conflict(f"{action} ({spec.zh}) is not allowed on a case that is {state} ({STATES[state][0]}); "
                       f"allowed now: {', '.join(allowed) or 'none'}", {"state": state, "allowed": allowed})
    if spec.note_required and not (note or "").strip():
        raise InvalidInput(f"{action} ({spec.zh}) needs a note saying why", {"field": "note"})
    if lon is not None and lat is not None and not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput("lon/lat out of range", {"field": "lon/lat"})
    at = at or utcnow()
    data = dict(data or {})
    cal, settings = catalogue.calendar(), catalogue.settings()
    cls = catalogue.taxonomy().resolve(case.class_code, case.kind)
    extra: dict = {}
    rating_token = None
    if action == "file":
        deadline = cal.add_limit(at, cls.limit(case.urgency))
        extra = {"deadline_at": deadline.isoformat(), "limit": str(cls.limit(case.urgency)),
                 "dispatch_due_at": cal.add_limit(at, settings.dispatch_within).isoformat()}
    elif action == "dispatch":
        extra = _dispatch_target(session, case, data)
    elif action == "request_extension":
        amount = catalogue.Limit.parse(data.get("extension", ""))
        extra = {"extension": str(amount)}
    elif action == "approve_extension":
        pending = session.scalar(select(Transition).where(Transition.case_id == case.id,
                                                          Transition.action == "request_extension")
                                 .order_by(Transition.seq.desc()).limit(1))
        amount = catalogue.Limit.parse(data.get("extension") or pending.data["extension"])
        long = cal.limit_seconds(amount) > cal.limit_seconds(settings.short_extension_max) or case.extension_count >= 1
        if long and may is not None and not may("events.approve_long"):
            raise Forbidden(f"an extension of {amount} (or a repeated one) needs leadership approval (events.approve_long)")
        extra = {"extension": str(amount), "deadline_at": cal.add_limit(case.deadline_at, amount).isoformat(),
                 "previous_deadline_at": case.deadline_at.isoformat(), "long": long}
    elif action == "backlog":
        extra = {"remaining_s": cal.between(at, case.deadline_at) if case.deadline_at else None}
    elif action == "resume":
        remaining = max(case.paused_remaining_s or 0.0, 0.0)
        extra = {"deadline_at": cal.add(at, remaining).isoformat(), "resumed_with_s": remaining}
    elif action == "merge":
        if not data.get("merged_into"):
            raise InvalidInput("merge needs merged_into", {"field": "merged_into"})
        extra = {"merged_into": int(data["merged_into"])}
    elif action == "close" and ((case.reporter or {}).get("email") or (case.reporter or {}).get("phone")):
        # The reporter rates through a link in the closure message: its token reaches only the message (the
        # event); the case keeps its digest.
        rating_token = secrets.token_urlsafe(18)
        extra = {"rating_key": _digest(rating_token)}
    elif action == "rate":
        rating = data.get("rating")
        if not isinstance(rating, int) or not 1 <= rating <= 5:
            raise InvalidInput("rating must be an integer 1-5", {"field": "rating"})
        extra = {"rating": rating}
    data.update(extra)
    data = {k: v for k, v in data.items() if v is not None}
    to_state = next_state(state, action)
    transition = _log(session, case, action, state, to_state, actor, at, note, data, lon, lat)
    fields = project([transition_view(transition)])
    # Fold the new entry into the projection: only the fields this action sets; and the projection's change into
    # the evaluation rollups.
    before = rollup.values_of(case)
    case.state, case.updated_at = to_state, at
    _fold(case, action, fields, transition)
    rollup.fold_change(session, before, case)
    notices = []
    if action == "close":
        contact = case.reporter or {}
        recipient = contact.get("email") or contact.get("phone")
        if recipient:  # the reporter is told of the closure (notifications, through case.changed)
            notice = Outbox(case_id=case.id, topic="notify.reporter", recipient=recipient, unit_path=case.unit_path,
                            created_at=at, payload={"number": case.number, "closed_at": at.isoformat(),
                                                    "message": f"您反映的问题（案卷 {case.number}）已处理结案"})
            session.add(notice)
            notices.append(notice)
    if action in ("dispatch", "close"):
        announce(session, case, action, data, notices, rating_token=rating_token if action == "close" else None)
    if action == "file" and settings.auto_dispatch and (case.route or {}).get("mode") in ("auto", "fallback"):
        act(session, case, "dispatch", audit.Actor("system:routing"), note="自动派遣", at=at)
    return transition


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def reporter_case(session: Session, number: str, token: str, *, lock: bool = False) -> Case:
    """The closed case whose closure message carried ``token`` (the reporter's rating link). An unknown case is
    NotFound; a token that is not this case's is Forbidden."""
    stmt = select(Case).where(Case.number == str(number))
    if lock:
        stmt = storage_of(session).lock_for_update(stmt)
    case = session.scalar(stmt)
    if case is None:
        raise NotFound(f"no case {number!r}")
    key = session.scalar(select(Transition.data).where(Transition.case_id == case.id, Transition.action == "close")
                         .order_by(Transition.seq.desc()).limit(1))
    expected = (key or {}).get("rating_key")
    if not token or not expected or not hmac.compare_digest(expected, _digest(token)):
        raise Forbidden("this rating link is not the one sent to the reporter of this case")
    return case


def rate_by_reporter(session: Session, number: str, token: str, rating, note: str | None = None,
                     at: datetime | None = None) -> Transition:
    """The reporter rates the closed case (评价, 1–5) once, through the link of the closure message."""
    case = reporter_case(session, number, token, lock=True)
    if case.rating is not None:
        raise Conflict(f"case {case.number} has been rated already ({case.rating})", {"rating": case.rating})
    if note is not None and len(note) > 1000:
        raise InvalidInput("a comment has at most 1000 characters", {"field": "comment"})
    return act(session, case, "rate", audit.Actor("reporter"), note=(note or "").strip() or None,
               data={"rating": rating}, at=at)


def announce(session: Session, case: Case, action: str, data: dict, notices: list, *,
             rating_token: str | None = None) -> None:
    """``case.changed`` for the people the change concerns (notifications), in the change's transaction; the
    ``notices`` (outbox rows of this change) are marked delivered by whoever delivers them."""
    if notices:
        session.flush()
    contact = case.reporter or {}
    publish(session, CaseChanged(
        case_id=case.id, number=case.number, action=action, state=case.state, title=case.title or case.number,
        unit_path=case.unit_path, grid_code=case.grid_code, township_code=case.township_code,
        department_code=data.get("department_code") or case.department_code,
        unit_code=data.get("unit_code") or case.assigned_unit_code, escalation_level=data.get("escalation_level"),
        deadline_at=case.deadline_at.isoformat() if case.deadline_at else None,
        reporter_email=contact.get("email"), reporter_phone=contact.get("phone"), rating_token=rating_token, source=case.source,
        outbox_ids=[n.id for n in notices]))


def transition_view(t: Transition) -> dict:
    return {"action": t.action, "to_state": t.to_state, "at": t.at, "actor": t.actor, "data": t.data, "seq": t.seq}


def _fold(case: Case, action: str, fields: dict, t: Transition) -> None:
    keys = {"accept": ("accepted_at",), "file": ("filed_at", "filed_by", "deadline_at", "dispatch_due_at"),
            "dispatch": ("department_code", "assigned_unit_code"), "feedback": ("handled_at",), "close": ("closed_at",),
            "void": ("voided_at", "merged_into"), "merge": ("voided_at", "merged_into"),
            "approve_extension": ("deadline_at",), "backlog": ("paused_remaining_s", "deadline_at"),
            "resume": ("paused_remaining_s", "deadline_at"), "escalate": ("escalation_level", "escalated_to"),
            "due_soon": ("due_soon_warned",), "rate": ("rating",)}.get(action, ())
    for k in keys:
        setattr(case, k, fields[k])
    if action == "dispatch" and case.dispatched_at is None:
        case.dispatched_at, case.dispatched_by = t.at, t.actor
    counters = {"return": "returned_count", "rework": "rework_count", "approve_extension": "extension_count",
                "supervise": "supervision_count"}
    if action in counters:
        setattr(case, counters[action], getattr(case, counters[action]) + 1)


def _dispatch_target(session: Session, case: Case, data: dict) -> dict:
    dept, unit = data.get("department_code"), data.get("unit_code")
    if not dept and not unit:
        dept, unit = (case.route or {}).get("department_code"), (case.route or {}).get("unit_code")
    if not dept and not unit:
        raise InvalidInput("routing found several candidates; choose department_code or unit_code",
                           {"field": "department_code", "candidates": (case.route or {}).get("candidates", [])})
    if dept:
        d = session.scalar(select(Department).where(Department.code == dept))
        if d is None:
            raise InvalidInput(f"unknown department {dept!r}", {"field": "department_code"})
        return {"department_code": dept, "department_name": d.name}
    u = session.scalar(select(Unit).where(Unit.code == unit))
    if u is None or not case.unit_path.startswith(u.path):
        raise InvalidInput(f"unit {unit!r} does not contain the case's location", {"field": "unit_code"})
    return {"unit_code": unit, "unit_name": u.name}


def verify_projection(session: Session, case: Case) -> dict:
    """Differences between the stored projection and one rebuilt from the log (empty = consistent)."""
    log = session.scalars(select(Transition).where(Transition.case_id == case.id).order_by(Transition.seq)).all()
    rebuilt = project(log)
    return {k: (getattr(case, k), v) for k, v in rebuilt.items() if getattr(case, k) != v}


def merge(session: Session, scope: Scope, master_key, child_keys: list, actor: audit.Actor, may=None) -> Case:
    """Merge duplicate cases into ``master``: each child is voided with ``merged_into`` (linked), the master's
    log records the children, and every child's reporter gets a notice in the outbox."""
    master = get_case(session, scope, master_key, lock=True)
    if master.state in ("void", "closed"):
        raise Conflict(f"case {master.number} is {master.state} and cannot take merged cases",
                       {"state": master.state, "allowed": []})
    if not child_keys:
        raise InvalidInput("name at least one case to merge", {"field": "children"})
    children = []
    for key in child_keys:
        child = get_case(session, scope, key, lock=True)
        if child.id == master.id:
            raise InvalidInput("a case cannot be merged into itself", {"field": "children"})
        if (child.kind, child.class_code) != (master.kind, master.class_code):
            raise InvalidInput(f"case {child.number} has class {child.class_code}, the master {master.class_code}",
                               {"field": "children"})
        children.append(child)
    for child in children:
        act(session, child, "merge", actor, note=f"合并至 {master.number}", data={"merged_into": master.id}, may=may)
        contact = child.reporter or {}
        session.add(Outbox(case_id=child.id, topic="notify.reporter", unit_path=child.unit_path,
                           recipient=contact.get("email") or contact.get("phone") or child.reported_by,
                           payload={"number": child.number, "merged_into": master.number,
                                    "message": f"您反映的问题已与案卷 {master.number} 合并处理"}))
    act(session, master, "merge_children", actor, data={"children": [c.number for c in children]})
    return master

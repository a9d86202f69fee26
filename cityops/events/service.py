"""Domain logic of the event center. No HTTP here.

Hooks other capabilities call (stable):

- ``create_case(session, *, source, class_code, title, lon|address|unit_code, …, actor) -> Case``
- ``create_case_from_alarm(session, *, source, alarm_key, class_code, title, description, lon, lat, level,
  evidence, actor) -> Case`` — idempotent on ``alarm_key``; files and (where routing is unambiguous)
  dispatches at once.
- ``close_case(session, case_id, note, actor) -> Case`` — walks the remaining steps, each logged.

Callers commit. Every change writes its log entry and an outbox row in the same transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import shapely
from sqlalchemy import false, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cityops.core import audit
from cityops.core.db import begin_write
from cityops.core.errors import (Conflict, Forbidden, InvalidInput, NotFound, OutsideJurisdiction, PayloadTooLarge,
                                 ValidationFailed)
from cityops.core.geometry import encode_many
from cityops.events import catalogue
from cityops.events.models import Attachment, Case, Outbox, Transition
from cityops.events.workflow import ACTIONS, CLOCK_RUNNING, STATES, allowed_actions, next_state, project
from cityops.identity import service as identity
from cityops.identity.scope import Scope
from cityops.org import service as org_service
from cityops.org.locate import Located, LocatorCache
from cityops.org.models import Department, Place, Unit

ALL = Scope(all_units=True)
SOURCES = catalogue.SOURCES
#: Code length per level, for the escalation ladder (the unit path holds the chain).
_LEVEL_BY_LENGTH = {6: "district", 9: "township", 12: "village"}
_ALARM_URGENCY = {"red": "urgent", "orange": "urgent", "yellow": "normal", "blue": "normal",
                  "红": "urgent", "橙": "urgent", "黄": "normal", "蓝": "normal", "urgent": "urgent", "normal": "normal"}


def utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def write_section(session: Session, locator: LocatorCache | None = None):
    """A route's write transaction, begun as the embedded store's writer before it reads what it changes
    (``core.db.begin_write``); the caller commits inside the block. Yields a Locator snapshot
    (``FixedLocator``) when ``locator`` is given."""
    # The read transaction ends first (its connection goes back to the pool), then the Locator snapshot is
    # taken: a LocatorCache refresh opens its own connection, and a request holding one while asking for
    # another can exhaust the pool under load.
    session.commit()
    fixed = FixedLocator(locator) if locator is not None else None
    begin_write(session)
    try:
        yield fixed
    except BaseException:
        session.rollback()
        raise


class FixedLocator:
    """A Locator snapshot taken before the write lock, so locating never needs a second connection inside it."""

    def __init__(self, cache: LocatorCache):
        self._locator = cache.get()

    def get(self):
        return self._locator


# ----------------------------------------------------------------------------------------- locating

_LOCATORS: dict[str, LocatorCache] = {}


def use_locator(engine, locator: LocatorCache) -> None:
    """Register the app's LocatorCache for ``engine`` (so hooks called without one reuse it)."""
    _LOCATORS[str(engine.url)] = locator


def _locator(session: Session) -> LocatorCache:
    from cityops.org.levels import load_levels

    engine = session.get_bind()
    key = str(engine.url)
    if key not in _LOCATORS:
        _LOCATORS[key] = LocatorCache(sessionmaker(bind=engine), load_levels())
    return _LOCATORS[key]


@dataclass
class Where:
    lon: float
    lat: float
    located: Located
    how: str


def locate(session: Session, *, lon: float | None = None, lat: float | None = None, address: str | None = None,
           address_id: str | None = None, unit_code: str | None = None, locator: LocatorCache | None = None) -> Where:
    """Point, address (a named place or a building address), building code or unit code → unit chain.
    Outside the district → OutsideJurisdiction; nothing usable → InvalidInput."""
    locator = locator or _locator(session)
    how = "point"
    if lon is None or lat is None:
        if lon is not None or lat is not None:
            raise InvalidInput("give both lon and lat, or neither", {"field": "lon/lat"})
        point = None
        if address_id:
            from cityops.housing.models import Building

            b = session.scalar(select(Building).where(Building.code == address_id))
            if b is None:
                raise InvalidInput(f"unknown address_id {address_id!r}", {"field": "address_id"})
            point, how = b.footprint.representative_point(), "address_id"
        elif address:
            place = None
            for p in session.scalars(select(Place).order_by(func.length(Place.name).desc())):
                if p.name and p.name in address:
                    place = p
                    break
            if place is None:
                from cityops.housing.models import Building

                b = session.scalar(select(Building).where(Building.address == address.strip()).limit(1))
                if b is None:
                    raise InvalidInput(f"address {address!r} names no known place or building; send lon/lat",
                                       {"field": "address"})
                point, how = b.footprint.representative_point(), "address"
            else:
                point, how = place.geom, "address"
        elif unit_code:
            unit = session.scalar(select(Unit).where(Unit.code == unit_code))
            if unit is None or unit.geom is None:
                raise InvalidInput(f"unknown unit code {unit_code!r}", {"field": "unit_code"})
            point, how = unit.geom.representative_point(), "unit_code"
        else:
            raise InvalidInput("a location is required: lon/lat, address, address_id or unit_code", {"field": "location"})
        lon, lat = point.x, point.y
    try:
        lon, lat = float(lon), float(lat)
    except (TypeError, ValueError):
        raise InvalidInput("lon/lat must be numbers", {"field": "lon/lat"}) from None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput(f"lon/lat out of range: {lon}, {lat}", {"field": "lon/lat"})
    located = locator.get().locate(lon, lat)
    if located is None:
        raise OutsideJurisdiction(f"the point {lon:.6f}, {lat:.6f} lies outside the district's jurisdiction",
                                  {"lon": lon, "lat": lat})
    return Where(lon, lat, located, how)


# ------------------------------------------------------------------------------------------ routing

_DEPTS: dict[str, tuple[float, list]] = {}


def _departments(session: Session) -> list[tuple[str, str, str, list, list]]:
    """(code, name, unit_path, matter_classes, covered_units) of every department, cached for 2 s."""
    key = str(session.get_bind().url)
    hit = _DEPTS.get(key)
    if hit and time.monotonic() - hit[0] < 2.0:
        return hit[1]
    rows = [(d.code, d.name, d.unit_path, list(d.matter_classes or []), list(d.covered_units or []))
            for d in session.scalars(select(Department))]
    _DEPTS[key] = (time.monotonic(), rows)
    return rows


def route(session: Session, cls: catalogue.CaseClass, path: str) -> dict:
    """Routing rules as data: each department's ``matter_classes`` ("kind:major" or "kind:code") and its
    area (owning unit, or ``covered_units``). The most specific class match wins, then the most local
    department; a tie goes to the dispatch queue; no match falls back to the territorial unit (属地兜底)."""
    codes = [c for c in path.strip("/").split("/") if c]
    best: list[tuple[tuple[int, int], str, str]] = []
    for code, name, unit_path, classes, covered in _departments(session):
        if covered:
            if not any(c in codes for c in covered):
                continue
        elif not path.startswith(unit_path):
            continue
        spec = 0
        for entry in classes:
            kind, _, value = entry.partition(":")
            if kind != cls.kind:
                continue
            if value == cls.code:
                spec = max(spec, 2)
            elif value == cls.code[:2]:
                spec = max(spec, 1)
        if spec:
            best.append(((spec, unit_path.count("/")), code, name))
    settings = catalogue.settings()
    if best:
        top = max(b[0] for b in best)
        winners = sorted((c, n) for s, c, n in best if s == top)
        if len(winners) == 1:
            return {"mode": "auto" if settings.auto_dispatch else "queue", "department_code": winners[0][0],
                    "department_name": winners[0][1], "unit_code": None, "candidates": [winners[0][0]]}
        return {"mode": "queue", "department_code": None, "unit_code": None,
                "candidates": [c for c, _ in winners], "reason": "several departments answer equally"}
    target = {"district": 6, "township": 9, "village": 12, "grid": 15}.get(settings.fallback_level, 9)
    fallback = next((c for c in codes if len(c) == target), codes[min(1, len(codes) - 1)])
    return {"mode": "fallback", "department_code": None, "unit_code": fallback, "candidates": [],
            "reason": "属地兜底: no department answers for this class here"}


# ----------------------------------------------------------------------------------------- creation

def _number(at: datetime) -> str:
    return f"{at.astimezone(catalogue.calendar().tz):%Y%m%d}-{uuid.uuid4().hex[:10]}"


def _log_rows(case_id: int | None, seq: int, number: str, unit_path: str, action: str, from_state: str | None,
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
    entry, notice = _log_rows(case.id, case.seq, case.number, case.unit_path, action, from_state, to_state, actor, at,
                              note, data, lon, lat)
    t = Transition(**entry)
    session.add(t)
    session.add(Outbox(**notice))
    return t


def _clean_text(value: str | None, field: str, limit: int) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    if len(value) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters", {"field": field, "length": len(value)})
    return value or None


@dataclass
class CaseDraft:
    """A report validated, located and routed, not yet stored: the ``event_cases`` row (without its id, and its
    point as lon/lat only), its first log entry and outbox row (without the case id), and the reporter's scope
    (an idempotent retry answers with the earlier case only inside it)."""

    values: dict
    entry: dict
    notice: dict
    scope: Scope


def draft_case(session: Session, *, source: str, class_code: str, title: str | None = None,
               description: str | None = None, kind: str | None = None, lon: float | None = None,
               lat: float | None = None, address: str | None = None, address_id: str | None = None,
               unit_code: str | None = None, urgency: str = "normal", reporter: dict | None = None,
               external_key: str | None = None, attributes: dict | None = None, reported_at: datetime | None = None,
               actor: audit.Actor, scope: Scope = ALL, locator: LocatorCache | None = None) -> CaseDraft:
    """Everything of a report (信息收集) but its storage: validate, locate, route. Reads only (and, with a
    point and a ``locator``, touches no table), so it runs before the write lock."""
    if source not in SOURCES:
        raise InvalidInput(f"unknown source {source!r}; use one of {', '.join(SOURCES)}", {"field": "source"})
    tax = catalogue.taxonomy()
    cls = tax.resolve(class_code, kind)
    if urgency not in tax.urgencies:
        raise InvalidInput(f"unknown urgency {urgency!r}; use one of {', '.join(tax.urgencies)}", {"field": "urgency"})
    settings = catalogue.settings()
    description = _clean_text(description, "description", settings.max_description)
    title = _clean_text(title, "title", 256) or cls.name
    address = _clean_text(address, "address", 256)
    where = locate(session, lon=lon, lat=lat, address=address, address_id=address_id, unit_code=unit_code, locator=locator)
    path = where.located.path
    if not scope.covers(path):
        # Never name the place: it belongs to someone else's scope.
        raise Forbidden("the location is outside your scope")
    at = reported_at or utcnow()
    if at.tzinfo is None:
        raise InvalidInput("reported_at needs a time zone", {"field": "reported_at"})
    routing = route(session, cls, path)
    chain = {link.level: link.code for link in where.located.chain}
    number = _number(at)
    values = dict(number=number, source=source, external_key=external_key, kind=cls.kind, class_code=cls.code,
                  title=title, description=description, urgency=urgency, state="reported", lon=where.lon, lat=where.lat,
                  address=address, grid_code=where.located.unit.code,
                  township_code=chain.get("township"), unit_path=path, department_code=None, assigned_unit_code=None,
                  route=routing, reporter=reporter or {}, reported_by=actor.name, attributes=attributes or {},
                  reported_at=at, updated_at=at, seq=1, returned_count=0, rework_count=0, extension_count=0,
                  supervision_count=0, escalation_level=0, due_soon_warned=0)
    entry, notice = _log_rows(None, 1, number, path, "report", None, "reported", actor, at, description,
                              {"source": source, "located_by": where.how, "route": routing}, where.lon, where.lat)
    return CaseDraft(values, entry, notice, scope)


_CASE_COLUMNS = dict.fromkeys(Case.__table__.columns.keys())


def draft_view(draft: CaseDraft, case_id: int) -> dict:
    """``case_dict`` of a case just stored from ``draft``, without reading it back (and without building an ORM
    object, whose instrumented attributes cost more than the whole view)."""
    return case_dict(SimpleNamespace(**{**_CASE_COLUMNS, **draft.values, "id": case_id}))


def insert_drafts(session: Session, drafts: list[CaseDraft]) -> list[tuple[int, bool] | Exception]:
    """Store drafts in the session's transaction: per draft ``(case id, created)`` or the error that refused it
    (one draft's failure leaves the others stored). Idempotent on ``external_key``: a key already stored, or
    repeated within ``drafts``, answers with that case (``created`` False).

    All the new cases go in with one multi-row INSERT of each table (a savepoint around it); only if that fails
    are they retried one by one, each in its own savepoint, so the bad one fails alone. The evaluation rollups
    are folded in here (Core inserts bypass the ORM hook that keeps them)."""
    out: list = [None] * len(drafts)
    keys = list({d.values["external_key"] for d in drafts if d.values["external_key"]})
    known = {}
    if keys:
        known = {k: (cid, path) for k, cid, path in
                 session.execute(select(Case.external_key, Case.id, Case.unit_path).where(Case.external_key.in_(keys)))}
    fresh, first_of_key, repeats = [], {}, []
    for i, d in enumerate(drafts):
        key = d.values["external_key"]
        if key in known:
            cid, path = known[key]
            out[i] = (cid, False) if d.scope.covers(path) else Forbidden(f"the case of key {key!r} is outside your scope")
        elif key in first_of_key:
            repeats.append((i, first_of_key[key]))
        else:
            if key:
                first_of_key[key] = i
            fresh.append(i)
    try:
        with session.begin_nested():
            ids = _insert_rows(session, [drafts[i] for i in fresh])
        stored = list(zip(fresh, ids))
    except IntegrityError:  # rare: one of them collides (a key stored meanwhile by another process)
        stored = []
        for i in fresh:
            try:
                with session.begin_nested():
                    stored.append((i, _insert_rows(session, [drafts[i]])[0]))
            except IntegrityError:
                key = drafts[i].values["external_key"]
                cid = key and session.scalar(select(Case.id).where(Case.external_key == key))
                out[i] = (cid, False) if cid else Conflict("the case could not be stored (a unique value collides)")
    for i, cid in stored:
        out[i] = (cid, True)
    for i, first in repeats:
        out[i] = (out[first][0], False) if isinstance(out[first], tuple) else out[first]
    if stored:
        from cityops.events import rollup

        conn = session.connection()
        if conn.dialect.name in rollup.ENABLED_ON:
            rollup.apply_changes(conn, [{f: drafts[i].values.get(f) for f in rollup.FIELDS} for i, _ in stored], {})
    return out


def _insert_rows(session: Session, drafts: list[CaseDraft]) -> list[int]:
    if not drafts:
        return []
    table = Case.__table__
    # The points of the group encoded in one vectorised pass (the geometry is lon/lat until here).
    geoms = encode_many(shapely.points([d.values["lon"] for d in drafts], [d.values["lat"] for d in drafts]),
                        session.get_bind().dialect.name)
    ids = list(session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                               [{**d.values, "geom": g} for d, g in zip(drafts, geoms)]))
    entries, notices = [], []
    for d, cid in zip(drafts, ids):
        entries.append({**d.entry, "case_id": cid})
        notices.append({**d.notice, "case_id": cid})
    session.execute(insert(Transition.__table__), entries)
    session.execute(insert(Outbox.__table__), notices)
    return ids


def create_case(session: Session, *, scope: Scope = ALL, **report) -> Case:
    """Report a case (信息收集): validate, locate, route, persist with its first log entry (``draft_case`` takes
    the arguments). Idempotent on ``external_key``: the same key returns the case made the first time."""
    key = report.get("external_key")
    if key:  # a retry is answered before its report is judged again
        existing = session.scalar(select(Case).where(Case.external_key == key))
        if existing is not None:
            scope.require_covers(existing.unit_path, "the case of this external_key")
            return existing
    result = insert_drafts(session, [draft_case(session, scope=scope, **report)])[0]
    if isinstance(result, Exception):
        raise result
    return session.get(Case, result[0])


def create_case_from_alarm(session: Session, *, source: str, alarm_key: str, class_code: str | None, title: str,
                           description: str, lon: float | None, lat: float | None, level: str, evidence: dict,
                           actor: audit.Actor, unit_code: str | None = None) -> Case:
    """Internal entry point for sensor and warning alarms (传感告警转事件). Idempotent on ``alarm_key``.

    ``level`` is the warning colour (red/orange/yellow/blue or 红/橙/黄/蓝); red and orange are urgent.
    The alarm is machine evidence, so the case is accepted and filed at once (and dispatched where routing
    is unambiguous). ``class_code`` None → 10080 地质灾害隐患点异常."""
    if not alarm_key:
        raise InvalidInput("alarm_key is required", {"field": "alarm_key"})
    key = f"alarm:{alarm_key}"
    existing = session.scalar(select(Case).where(Case.external_key == key))
    if existing is not None:
        return existing
    if alarm_key.startswith("warning:"):  # one danger, one case: a response to the same risk point has one open
        code = alarm_key.removeprefix("warning:")
        for case in session.scalars(select(Case).where(Case.external_key.like("incident:%")).order_by(Case.id.desc()).limit(200)):
            if (case.attributes or {}).get("risk_point_code") == code and current_state(session, case) not in ("closed", "void"):
                return case
    urgency = _ALARM_URGENCY.get(str(level).lower())
    if urgency is None:
        raise InvalidInput(f"unknown alarm level {level!r}", {"field": "level"})
    case = create_case(session, source="sensor", class_code=class_code or "10080", title=title, description=description,
                       lon=lon, lat=lat, unit_code=None if lon is not None else unit_code, urgency=urgency,
                       external_key=key, attributes={"alarm": {"source": source, "level": level, "evidence": evidence}}, actor=actor)
    act(session, case, "accept", actor, note=f"{source} 告警自动受理")
    act(session, case, "file", actor, note="告警立案")
    return case


def adopt_open_case(session: Session, external_key: str, attributes: dict) -> Case | None:
    """The open case filed under ``external_key`` (say a risk point's warning alarm), with ``attributes`` added:
    a response to the same danger joins it instead of opening a second case. None when there is none open."""
    case = session.scalar(select(Case).where(Case.external_key == external_key))
    if case is None or current_state(session, case) in ("closed", "void"):
        return None
    case.attributes = {**(case.attributes or {}), **attributes}
    return case


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


# ------------------------------------------------------------------------------------------- actions

def get_case(session: Session, scope: Scope, key, *, lock: bool = False) -> Case:
    stmt = select(Case)
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        stmt = stmt.where(Case.id == int(key))
    else:
        stmt = stmt.where(Case.number == str(key))
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
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
    elif session.get_bind().dialect.name == "postgresql":
        session.flush()  # refresh would otherwise drop this transaction's unflushed changes to the case
        session.refresh(case, with_for_update=True)
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
    # Fold the new entry into the projection: only the fields this action sets.
    case.state, case.updated_at = to_state, at
    _fold(case, action, fields, transition)
    if action == "close":
        contact = case.reporter or {}
        recipient = contact.get("email") or contact.get("phone")
        if recipient:  # the reporter is told of the closure (delivered by the notifier reading the outbox)
            session.add(Outbox(case_id=case.id, topic="notify.reporter", recipient=recipient, unit_path=case.unit_path,
                               created_at=at, payload={"number": case.number, "closed_at": at.isoformat(),
                                                       "message": f"您反映的问题（案卷 {case.number}）已处理结案"}))
    if action == "file" and settings.auto_dispatch and (case.route or {}).get("mode") in ("auto", "fallback"):
        act(session, case, "dispatch", audit.Actor("system:routing"), note="自动派遣", at=at)
    return transition


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


# ------------------------------------------------------------------------------- SLA and escalation

def sweep(session: Session, now: datetime | None = None, actor: audit.Actor = audit.Actor("system:sla"),
          scope: Scope = ALL) -> dict:
    """Due-soon warnings and escalation of overdue cases one level up per overdue period
    (grid → village → township → district). Returns counts. Idempotent for the same ``now``."""
    now = now or utcnow()
    cal, settings = catalogue.calendar(), catalogue.settings()
    ladder = settings.escalation_levels
    counts = {"due_soon": 0, "escalated": 0}
    stmt = select(Case).where(Case.state.in_(CLOCK_RUNNING), Case.deadline_at.is_not(None),
                              scope.covers_clause(Case.unit_path)).order_by(Case.id)
    for case in session.scalars(stmt).all():
        cls = catalogue.taxonomy().resolve(case.class_code, case.kind)
        limit_s = cal.limit_seconds(cls.limit(case.urgency))
        if case.deadline_at > now:
            # Working time never exceeds wall time; 10 days covers the longest holiday run, so anything
            # further away cannot be due soon and needs no calendar walk.
            near = (case.deadline_at - now).total_seconds() <= settings.due_soon_fraction * limit_s + 10 * 86400
            if near and not case.due_soon_warned and cal.between(now, case.deadline_at) <= settings.due_soon_fraction * limit_s:
                act(session, case, "due_soon", actor, at=now,
                    data={"deadline_at": case.deadline_at.isoformat(), "remaining_s": cal.between(now, case.deadline_at)})
                counts["due_soon"] += 1
            continue
        overdue_s = cal.between(case.deadline_at, now)
        level = min(1 + int(overdue_s // limit_s), len(ladder) - 1)
        if level > (case.escalation_level or 0):
            codes = [c for c in case.unit_path.strip("/").split("/") if c]
            by_level = {_LEVEL_BY_LENGTH.get(len(c), "grid"): c for c in codes}
            target = by_level.get(ladder[level]) or codes[0]
            act(session, case, "escalate", actor, at=now, note=f"超期升级至{ladder[level]}",
                data={"level": level, "unit_code": target, "overdue_working_s": overdue_s})
            session.add(Outbox(case_id=case.id, topic="notify.escalation", recipient=f"unit:{target}",
                               unit_path=case.unit_path, created_at=now,
                               payload={"number": case.number, "level": ladder[level], "unit_code": target}))
            counts["escalated"] += 1
    return counts


def sla_status(case: Case, now: datetime | None = None) -> str:
    """on_time / due_soon / overdue / paused / none, for lists and the workbench."""
    now = now or utcnow()
    if case.state == "backlogged":
        return "paused"
    if case.deadline_at is None:
        return "none"
    if case.closed_at is not None:
        return "closed_on_time" if case.closed_at <= case.deadline_at else "closed_late"
    if case.state == "void":
        return "none"
    if case.deadline_at <= now:
        return "overdue"
    return "due_soon" if case.due_soon_warned else "on_time"


# ------------------------------------------------------------------------------------- duplicates

def duplicate_candidates(session: Session, scope: Scope, case: Case, *, distance_m: float | None = None,
                         window_hours: float | None = None) -> list[tuple[Case, float]]:
    """Open cases of the same class within ``distance_m`` and ``window_hours`` of ``case`` (nearest first)."""
    settings = catalogue.settings()
    distance_m = distance_m or settings.duplicate_distance_m
    window = timedelta(hours=window_hours or settings.duplicate_window_hours)
    dlat = distance_m / 111_320.0
    dlon = distance_m / (111_320.0 * max(math.cos(math.radians(case.lat)), 0.01))
    stmt = (select(Case).where(Case.id != case.id, Case.class_code == case.class_code, Case.kind == case.kind,
                               Case.state.not_in(("void", "closed")), Case.merged_into.is_(None),
                               Case.lon.between(case.lon - dlon, case.lon + dlon), Case.lat.between(case.lat - dlat, case.lat + dlat),
                               Case.reported_at.between(case.reported_at - window, case.reported_at + window),
                               scope.covers_clause(Case.unit_path)))
    found = session.scalars(stmt).all()
    if not found:
        return []
    from pyproj import Geod

    _, _, dist = Geod(ellps="GRS80").inv([case.lon] * len(found), [case.lat] * len(found),
                                         [c.lon for c in found], [c.lat for c in found])
    pairs = [(c, float(d)) for c, d in zip(found, np.atleast_1d(dist), strict=True) if d <= distance_m]
    return sorted(pairs, key=lambda p: p[1])


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


# ------------------------------------------------------------------------------------- attachments

_MAGIC = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",), "image/webp": (b"RIFF",)}
_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def check_attachment(filename: str, content_type: str, data: bytes) -> str:
    """The checked content type of an upload: declared type allowed, bytes match it, size within limit."""
    settings = catalogue.settings()
    if len(data) > settings.attachment_max_bytes:
        raise PayloadTooLarge(f"attachment {filename!r} has {len(data)} bytes; the limit is {settings.attachment_max_bytes}")
    if not data:
        raise InvalidInput(f"attachment {filename!r} is empty", {"field": "photo"})
    content_type = (content_type or "").split(";")[0].strip().lower()
    if content_type not in settings.attachment_types:
        raise InvalidInput(f"attachment {filename!r} has type {content_type or 'unknown'}; allowed: "
                           f"{', '.join(settings.attachment_types)}", {"field": "photo"})
    ok = any(data.startswith(m) for m in _MAGIC[content_type])
    if content_type == "image/webp":
        ok = ok and data[8:12] == b"WEBP"
    if not ok:
        raise InvalidInput(f"attachment {filename!r} is not a valid {content_type} file", {"field": "photo"})
    return content_type


def save_attachment(session: Session, data_dir: Path, case: Case, filename: str, content_type: str, data: bytes,
                    transition_seq: int | None = None) -> Attachment:
    """Store a checked photo under ``<data_dir>/events/attachments/<case number>/<sha256>.<ext>``."""
    content_type = check_attachment(filename, content_type, data)
    digest = hashlib.sha256(data).hexdigest()
    rel = Path("events") / "attachments" / case.number / f"{digest}.{_EXT[content_type]}"
    target = Path(data_dir) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic: a crash never leaves half a photo under the final name
    a = Attachment(case_id=case.id, transition_seq=transition_seq, filename=Path(filename or "photo").name[:200],
                   content_type=content_type, size=len(data), sha256=digest, path=str(rel), unit_path=case.unit_path)
    session.add(a)
    return a


# ------------------------------------------------------------------------------------------ reading

QUEUES = {
    "to_accept": ("reported",), "to_file": ("accepted",), "to_dispatch": ("filed", "returned"),
    "to_handle": ("dispatched", "in_handling", "rework"), "to_approve": ("extension_requested",),
    "to_verify": ("handled",), "backlog": ("backlogged",), "closed": ("closed",), "void": ("void",),
}


def scope_clause(scope: Scope):
    """SQL filter: the cases ``scope`` sees (its subtrees; department staff only their departments' cases)."""
    clause = scope.covers_clause(Case.unit_path)
    if scope.department_codes and not scope.all_units:
        clause = clause & Case.department_code.in_(scope.department_codes)
    return clause


def public_clause():
    """SQL filter: the cases published to everyone — reported through a public citizen channel
    (events.toml ``[open311] public_sources``) and of a class marked public in the taxonomy."""
    classes = [(c.kind, c.code) for c in catalogue.taxonomy().classes.values() if c.public]
    if not classes:
        return false()
    return Case.source.in_(catalogue.settings().open311_public_sources) & or_(
        *[(Case.kind == kind) & (Case.class_code == code) for kind, code in classes])


def list_cases(session: Session, scope: Scope, *, queue: str | None = None, state: str | None = None,
               class_code: str | None = None, root: str | None = None, department: str | None = None,
               q: str | None = None, overdue: bool | None = None, source: str | None = None,
               limit: int = 100, offset: int = 0) -> tuple[list[Case], int]:
    stmt = select(Case).where(scope_clause(scope))
    if queue:
        if queue not in QUEUES:
            raise InvalidInput(f"unknown queue {queue!r}; queues: {', '.join(QUEUES)}", {"field": "queue"})
        stmt = stmt.where(Case.state.in_(QUEUES[queue]))
    if state:
        states = state.split(",")
        unknown = [s for s in states if s not in STATES]
        if unknown:
            raise InvalidInput(f"unknown state(s) {unknown}", {"field": "state"})
        stmt = stmt.where(Case.state.in_(states))
    if class_code:
        stmt = stmt.where(Case.class_code == catalogue.taxonomy().resolve(class_code).code)
    if source:
        stmt = stmt.where(Case.source == source)
    if root:
        unit = session.scalar(select(Unit).where(Unit.code == root))
        if unit is None or not scope.covers(unit.path):
            raise NotFound(f"no unit {root!r} in your scope")
        stmt = stmt.where(Case.unit_path.startswith(unit.path, autoescape=True))
    if department:
        stmt = stmt.where(Case.department_code == department)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(or_(Case.title.like(like), Case.number.like(like), Case.description.like(like),
                              Case.address.like(like)))
    if overdue is not None:
        now = utcnow()
        cond = (Case.deadline_at <= now) & Case.state.in_(CLOCK_RUNNING)
        stmt = stmt.where(cond if overdue else ~cond)
    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = session.scalars(stmt.order_by(Case.reported_at.desc(), Case.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), int(total or 0)


def _iso(v):
    return v.isoformat() if v else None


def case_dict(case: Case, now: datetime | None = None) -> dict:
    cls = catalogue.taxonomy().classes.get((case.kind, case.class_code))
    return {"id": case.id, "number": case.number, "source": case.source, "kind": case.kind, "class_code": case.class_code,
            "class_name": cls.name if cls else None, "title": case.title, "description": case.description,
            "urgency": case.urgency, "state": case.state, "state_name": STATES[case.state][0], "lon": case.lon,
            "lat": case.lat, "address": case.address, "grid_code": case.grid_code, "township_code": case.township_code,
            "unit_path": case.unit_path, "department_code": case.department_code,
            "assigned_unit_code": case.assigned_unit_code, "route": case.route, "reported_by": case.reported_by,
            "reported_at": _iso(case.reported_at), "filed_at": _iso(case.filed_at), "dispatched_at": _iso(case.dispatched_at),
            "handled_at": _iso(case.handled_at), "closed_at": _iso(case.closed_at), "deadline_at": _iso(case.deadline_at),
            "sla": sla_status(case, now), "returned_count": case.returned_count, "rework_count": case.rework_count,
            "extension_count": case.extension_count, "supervision_count": case.supervision_count,
            "escalation_level": case.escalation_level, "escalated_to": case.escalated_to,
            "merged_into": case.merged_into, "rating": case.rating, "attributes": case.attributes}


def with_names(session: Session, items: list[dict]) -> list[dict]:
    """Cases as people read them: the grid, the department and the handling unit by name (``*_name``)."""
    units, depts = org_service.names_of(session, [c for i in items for c in (i.get("grid_code"), i.get("assigned_unit_code"))],
                                        [i.get("department_code") for i in items])
    for i in items:
        i.update(grid_name=units.get(i.get("grid_code")), department_name=depts.get(i.get("department_code")),
                 assigned_unit_name=units.get(i.get("assigned_unit_code")))
    return items


def case_detail(session: Session, case: Case, may=None) -> dict:
    data = with_names(session, [case_dict(case)])[0]
    log = session.scalars(select(Transition).where(Transition.case_id == case.id).order_by(Transition.seq)).all()
    names = identity.display_names(session, [t.actor for t in log] + [case.reported_by])
    data["reported_by_name"] = names.get(case.reported_by)
    data["history"] = [{"seq": t.seq, "action": t.action, "action_name": ACTIONS[t.action].zh if t.action in ACTIONS else "上报",
                        "from": t.from_state, "to": t.to_state, "at": t.at.isoformat(), "actor": t.actor,
                        "actor_name": names.get(t.actor), "note": t.note,
                        "data": t.data, "lon": t.lon, "lat": t.lat} for t in log]
    data["attachments"] = [{"id": a.id, "filename": a.filename, "content_type": a.content_type, "size": a.size,
                            "seq": a.transition_seq, "url": f"/api/events/cases/{case.number}/attachments/{a.id}"}
                           for a in session.scalars(select(Attachment).where(Attachment.case_id == case.id).order_by(Attachment.id))]
    data["children"] = [c for c in session.scalars(select(Case.number).where(Case.merged_into == case.id))]
    data["allowed_actions"] = allowed_actions(log[-1].to_state, may or (lambda p: True)) if log else []
    return data


# --------------------------------------------------------------------------------- 12345 CSV import

HOTLINE_COLUMNS = ("ticket_id", "received_at", "class_code", "title", "description", "address", "lon", "lat",
                   "unit_code", "caller_name", "caller_phone", "urgency")


def hotline_key(township_code: str | None, ticket: str) -> str:
    """The idempotency key of a 12345 ticket: its id within the township it lies in.

    12345 tickets reach the district through each township's work-order system (属地: the township is the unit
    that answers for a ticket, domain.md 1.1 and 3), and ticket ids are only unique there. Keyed by township,
    one township's ticket can neither block nor reveal another's with the same id, while the same ticket
    imported by the township and by the district (two importers) is still one case — which keying by the
    importing unit would have duplicated."""
    return f"12345:{township_code or ''}:{ticket}"


def import_hotline_csv(session: Session, raw: bytes, actor: audit.Actor, scope: Scope,
                       locator: LocatorCache | None = None) -> dict:
    """Import 12345 hotline tickets (CSV, UTF-8 with or without BOM; columns ``HOTLINE_COLUMNS``, ticket_id,
    received_at and class_code required, plus a location). All or nothing: any bad row rejects the file with
    every problem listed. Tickets already imported (same ticket_id in the same township, ``hotline_key``) are
    skipped, so a re-import is safe."""
    settings = catalogue.settings()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the CSV file is not UTF-8 text", {"field": "file"}) from None
    # newline="": the csv module reads line ends itself (a bare \r inside a field is data, or a row end), as its
    # documentation requires; split on \n first, such a field raised csv.Error (a 500).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
        missing = [c for c in ("ticket_id", "received_at", "class_code") if c not in header]
        if missing:
            raise ValidationFailed(f"the CSV header lacks column(s) {', '.join(missing)}",
                                   [{"row": 1, "problem": f"missing {missing}"}])
        rows = list(reader)
    except csv.Error as exc:
        raise ValidationFailed(f"the CSV file cannot be read at line {reader.line_num}: {exc}; nothing imported",
                               [{"row": reader.line_num, "problem": str(exc)}]) from None
    if len(rows) > settings.max_import_rows:
        raise PayloadTooLarge(f"{len(rows)} rows; at most {settings.max_import_rows} per file")
    problems, forbidden, drafts, tickets = [], [], [], []
    for n, row in enumerate(rows, start=2):
        ticket = (row.get("ticket_id") or "").strip()
        try:
            if not ticket:
                raise InvalidInput("ticket_id is empty")
            try:
                received = datetime.fromisoformat((row.get("received_at") or "").strip())
            except ValueError:
                raise InvalidInput(f"received_at {row.get('received_at')!r} is not an ISO 8601 time") from None
            if received.tzinfo is None:
                received = received.replace(tzinfo=catalogue.calendar().tz)
            lon, lat = row.get("lon") or None, row.get("lat") or None
            draft = draft_case(session, source="hotline", class_code=(row.get("class_code") or "").strip(),
                               title=row.get("title") or None, description=row.get("description") or None,
                               lon=float(lon) if lon else None, lat=float(lat) if lat else None,
                               address=row.get("address") or None, unit_code=(row.get("unit_code") or "").strip() or None,
                               urgency=(row.get("urgency") or "normal").strip(),
                               reporter={"name": row.get("caller_name"), "phone": row.get("caller_phone"), "channel": "12345"},
                               reported_at=received.astimezone(UTC), actor=actor, scope=scope, locator=locator)
            # The key needs the township, known once the ticket is located (and found in the caller's scope).
            draft.values["external_key"] = hotline_key(draft.values["township_code"], ticket)
            drafts.append(draft)
            tickets.append(ticket)
        except ValueError as exc:
            problems.append({"row": n, "ticket_id": ticket, "problem": str(exc)})
        except Forbidden as exc:
            forbidden.append({"row": n, "ticket_id": ticket, "problem": exc.message})
        except (InvalidInput, OutsideJurisdiction) as exc:
            problems.append({"row": n, "ticket_id": ticket, "problem": exc.message})
    if forbidden:  # rows outside the importer's scope: refuse the file as a whole (403)
        raise Forbidden(f"{len(forbidden)} row(s) lie outside your scope; nothing imported", forbidden)
    if problems:
        raise ValidationFailed(f"{len(problems)} of {len(rows)} row(s) rejected; nothing imported: "
                               f"row {problems[0]['row']}: {problems[0]['problem']}", problems)
    made, skipped = [], 0
    with session.begin_nested():
        for ticket, draft, result in zip(tickets, drafts, insert_drafts(session, drafts)):
            if isinstance(result, Exception):  # raised inside the savepoint: every row of this file is undone
                raise ValidationFailed(f"ticket {ticket}: {result}; nothing imported")
            if result[1]:
                made.append(draft.values["number"])
            else:  # imported before (in this township), or twice in the file
                skipped += 1
    audit.record(session, actor, "events.import_hotline", "event_case", "12345", after={"created": len(made), "skipped": skipped})
    return {"created": len(made), "skipped": skipped, "numbers": made}


def outbox_since(session: Session, scope: Scope, after_id: int, limit: int = 200) -> list[Outbox]:
    return list(session.scalars(select(Outbox).where(Outbox.id > after_id, scope.covers_clause(Outbox.unit_path))
                                .order_by(Outbox.id).limit(limit)))

"""Case intake (信息收集): a report validated, located and routed into a draft, drafts stored in groups, and the
entry points other capabilities call (stable):

- ``create_case(session, *, source, class_code, title, lon|address|unit_code, …, actor) -> Case``
- ``create_case_from_alarm(session, *, source, alarm_key, class_code, title, description, lon, lat, level,
  evidence, actor) -> Case`` — idempotent on ``alarm_key``; files and (where routing is unambiguous)
  dispatches at once.

Callers commit. Every case is stored with its first log entry and an outbox row in the same transaction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace

import shapely
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cityops.core import audit, ladder
from cityops.core.errors import Conflict, Forbidden, InvalidInput
from cityops.core.storage import storage_of
from cityops.core.types import LocalPeriodLabel
from cityops.events import catalogue
from cityops.events.actions import log_rows, act, current_state
from cityops.events.models import Case, Outbox, Transition
from cityops.events.queries import case_dict
from cityops.events.routing import ALL, SOURCES, Where, locate, locate_points, route, utcnow
from cityops.identity.scope import Scope
from cityops.org.locate import LocatorCache


def _alarm_urgency(level) -> str | None:
    """A warning colour's case urgency (orange and red are urgent); an urgency passes as it is; None: neither."""
    if level in ("urgent", "normal"):
        return level
    try:
        key = ladder.parse(level)
    except ValueError:
        return None
    return None if key == "none" else ("urgent" if ladder.urgent(key) else "normal")


_DAY = LocalPeriodLabel.DAY("%Y%m%d")


def _number(at: datetime) -> str:
    """The case number: the report's day in the duty calendar's time zone and 40 random bits (as many as the first
    ten hex digits of a version-4 UUID, without building one)."""
    return f"{_DAY(at, catalogue.calendar().tz)}-{os.urandom(5).hex()}"


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
               actor: audit.Actor, scope: Scope = ALL, locator: LocatorCache | None = None,
               where: Where | Exception | None = None) -> CaseDraft:
    """Everything of a report (信息收集) but its storage: validate, locate, route. Reads only (and, with a
    point and a ``locator``, touches no table), so it runs before the write lock. ``where``: the point located
    already (``draft_reports``), or the error locating it gave."""
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
    if where is None:
        where = locate(session, lon=lon, lat=lat, address=address, address_id=address_id, unit_code=unit_code, locator=locator)
    elif isinstance(where, Exception):
        raise where
    path = where.located.path
    if not scope.covers(path):
        # Never name the place: it belongs to someone else's scope.
        raise Forbidden("the location is outside your scope", {"field": "location"})
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
    entry, notice = log_rows(None, 1, number, path, "report", None, "reported", actor, at, description,
                              {"source": source, "located_by": where.how, "route": routing}, where.lon, where.lat)
    return CaseDraft(values, entry, notice, scope)


@dataclass
class PointReport:
    """A report with lon/lat, not yet drafted: ``draft_case``'s keyword arguments. The case writer drafts its
    whole group together (``draft_reports``), locating every point in one pass; ``draft`` holds the result."""

    report: dict
    draft: CaseDraft | None = None


def draft_reports(session: Session, reports: list[PointReport], locator: LocatorCache | None = None) -> list[CaseDraft | Exception]:
    """``draft_case`` of each point report, their points located at once (``routing.locate_points``); per report
    its draft or the error that refuses it (the others go on)."""
    found = locate_points(session, [(r.report["lon"], r.report["lat"]) for r in reports], locator)
    out: list[CaseDraft | Exception] = []
    for r, where in zip(reports, found, strict=True):
        try:
            r.draft = draft_case(session, **r.report, where=where)
            out.append(r.draft)
        except Exception as exc:  # this report alone is refused; its request hears why
            out.append(exc)
    return out


_CASE_COLUMNS = dict.fromkeys(Case.__table__.columns.keys())


def draft_view(draft: CaseDraft, case_id: int) -> dict:
    """``case_dict`` of a case just stored from ``draft``, without reading it back (and without building an ORM
    object, whose instrumented attributes cost more than the whole view)."""
    return case_dict(SimpleNamespace(**{**_CASE_COLUMNS, **draft.values, "id": case_id}))


def insert_drafts(session: Session, drafts: list[CaseDraft], *, savepoint: bool = True,
                  units: list[list[int]] | None = None) -> list[tuple[int, bool] | Exception]:
    """Store drafts in the session's transaction: per draft ``(case id, created)`` or the error that refused it
    (one draft's failure leaves the others stored). Idempotent on ``external_key``: a key already stored, or
    repeated within ``drafts``, answers with that case (``created`` False).

    ``units``: lists of indexes into ``drafts`` that are stored all or nothing (a batch of the batch intake route);
    a draft in no unit stands alone. If one draft of a unit is refused, every draft of the unit is answered with
    that error (a ``BatchRefused``) and none of them is stored.

    All the new cases go in with one multi-row INSERT of each table (a savepoint around it); only if that fails
    are they retried unit by unit, each in its own savepoint, so the bad one fails alone. ``savepoint=False``: no
    savepoint, and a collision raises IntegrityError with the transaction lost — for a caller that owns the whole
    transaction and writes the drafts again with savepoints then (the case writer). The evaluation rollups
    are folded in here (Core inserts bypass the ORM hook that keeps them)."""
    out: list = [None] * len(drafts)
    unit_of = {}
    for u, members in enumerate(units or ()):
        for i in members:
            unit_of[i] = u
    keys = list({d.values["external_key"] for d in drafts if d.values["external_key"]})
    known = {}
    if keys:
        known = {k: (cid, path) for k, cid, path in
                 session.execute(select(Case.external_key, Case.id, Case.unit_path).where(Case.external_key.in_(keys)))}
    # A stored key outside the reporter's scope refuses its draft, and with it the draft's unit, before anything
    # is written: the whole transaction may be one statement that commits as it returns.
    for i, d in enumerate(drafts):
        key = d.values["external_key"]
        if key in known and not d.scope.covers(known[key][1]):
            out[i] = Forbidden(f"the case of key {key!r} is outside your scope", {"field": "external_key"})
    refuse_units(out, units)
    fresh, first_of_key, repeats = [], {}, []
    for i, d in enumerate(drafts):
        if out[i] is not None:
            continue
        key = d.values["external_key"]
        if key in known:
            out[i] = (known[key][0], False)
        elif key in first_of_key:
            repeats.append((i, first_of_key[key]))
        else:
            if key:
                first_of_key[key] = i
            fresh.append(i)
    if not savepoint:
        stored = list(zip(fresh, _insert_rows(session, [drafts[i] for i in fresh])))
    else:
        stored = _insert_guarded(session, drafts, fresh, out, unit_of, repeats)
    for i, cid in stored:
        out[i] = (cid, True)
    for i, first in repeats:
        out[i] = (out[first][0], False) if isinstance(out[first], tuple) else out[first]
    # A repeat whose first draft failed refuses its unit; _insert_guarded kept such a unit in the savepoint of the
    # first draft's, so none of it was stored.
    refuse_units(out, units)
    if stored:
        from cityops.events import rollup

        conn = session.connection()
        if rollup.enabled(conn):
            rollup.add_new_cases(conn, [drafts[i].values for i, _ in stored])
    return out


class BatchRefused(Exception):
    """Marks the drafts of a unit refused because one of them was: ``index`` is the unit's refused draft (its
    position in the unit), ``error`` what refused it."""

    def __init__(self, index: int, error: Exception):
        super().__init__(f"item {index}: {error}")
        self.index, self.error = index, error


def refuse_units(out: list, units: list[list[int]] | None) -> None:
    """Every item of a unit with a refused item (an exception in ``out``) answered with a ``BatchRefused`` naming
    the first refused one."""
    for members in units or ():
        bad = next((k for k, i in enumerate(members) if isinstance(out[i], Exception)), None)
        if bad is None:
            continue
        err = out[members[bad]]
        refused = err if isinstance(err, BatchRefused) else BatchRefused(bad, err)
        for i in members:
            out[i] = refused


def one_statement(bind) -> bool:
    """Whether ``insert_drafts(…, savepoint=False)`` writes with one statement on this store (the three tables by
    ``insert_family`` in one statement, no rollups to fold in): the case writer then runs it in a session of
    ``core.db.statement_sessionmaker``, the statement its own transaction."""
    from cityops.events import rollup

    return storage_of(bind).family_statement and not rollup.enabled(bind)


def _insert_guarded(session: Session, drafts: list[CaseDraft], fresh: list[int], out: list,
                    unit_of: dict | None = None, repeats: list[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """``fresh`` drafts in one savepoint; on a collision each alone (a unit's drafts together, and with the unit of
    the first draft of a key a unit repeats) in its own, the colliding one answered in ``out`` (a unit's drafts all
    with its error)."""
    try:
        with session.begin_nested():
            ids = _insert_rows(session, [drafts[i] for i in fresh])
        return list(zip(fresh, ids))
    except IntegrityError:  # rare: one of them collides (a key stored meanwhile by another process)
        pass
    unit_of = unit_of or {}
    part_of = {i: ("unit", unit_of[i]) if i in unit_of else ("one", i) for i in range(len(drafts))}
    joined: dict = {}  # part → the part it is stored with

    def root(p):
        while p in joined:
            p = joined[p]
        return p

    for i, first in repeats:  # a unit with a repeat stands or falls with its first draft's part
        a, b = root(part_of[i]), root(part_of[first])
        if a != b:
            joined[a] = b
    parts: dict = {}
    for i in fresh:
        parts.setdefault(root(part_of[i]), []).append(i)
    stored = []
    for part in parts.values():
        try:
            with session.begin_nested():
                stored.extend(zip(part, _insert_rows(session, [drafts[i] for i in part])))
        except IntegrityError:
            if len(part) == 1 and part[0] not in unit_of:
                i = part[0]
                key = drafts[i].values["external_key"]
                cid = key and session.scalar(select(Case.id).where(Case.external_key == key))
                out[i] = (cid, False) if cid else Conflict("the case could not be stored (a unique value collides)")
                continue
            # A unit: none of it stored; a retry is idempotent on the keys stored meanwhile.
            conflict = Conflict("a unique value collides (a key stored meanwhile); nothing of the batch stored, retry")
            for i in part:
                out[i] = conflict
    return stored


def _insert_rows(session: Session, drafts: list[CaseDraft]) -> list[int]:
    """The drafts' cases, first log entries and outbox rows through the storage strategy's ``insert_family``
    (one statement for the three tables on PostgreSQL; the driver's executemany per table on SQLite).
    SQLAlchemy's multi-row INSERT … RETURNING built and bound a parameter set per row and column, the largest
    share of a group's write."""
    if not drafts:
        return []
    storage = storage_of(session)
    # The points of the group encoded in one vectorised pass (the geometry is lon/lat until here).
    geoms = storage.bulk_geometries(shapely.points([d.values["lon"] for d in drafts], [d.values["lat"] for d in drafts]))
    return storage.insert_family(session, Case, [{**_CASE_DEFAULTS, **d.values, "geom": g} for d, g in zip(drafts, geoms)], [
        (Transition, "case_id", [{**_ENTRY_DEFAULTS, **d.entry} for d in drafts]),
        (Outbox, "case_id", [{**_NOTICE_DEFAULTS, **d.notice} for d in drafts])])


#: Every column a draft may leave out, so each group's rows carry the same keys (the driver's executemany and COPY
#: take one column list).
_CASE_DEFAULTS = {c: None for c in Case.__table__.columns.keys() if c != "id"}
_ENTRY_DEFAULTS = {c: None for c in Transition.__table__.columns.keys() if c != "id"}
_NOTICE_DEFAULTS = {c: None for c in Outbox.__table__.columns.keys() if c != "id"}


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
    if alarm_key.startswith("warning:"):
        # One danger, one case: the plan's consumer may be deciding the same in another transaction
        # (adopt_open_case serialises on the same key), and neither would see the other's new case.
        storage_of(session).serialize(session, key)
    existing = session.scalar(select(Case).where(Case.external_key == key))
    if existing is not None:
        return existing
    if alarm_key.startswith("warning:"):  # one danger, one case: a response to the same risk point has one open
        code = alarm_key.removeprefix("warning:")
        for case in session.scalars(select(Case).where(Case.external_key.like("incident:%")).order_by(Case.id.desc()).limit(200)):
            if (case.attributes or {}).get("risk_point_code") == code and current_state(session, case) not in ("closed", "void"):
                return case
    urgency = _alarm_urgency(str(level).lower())
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
    a response to the same danger joins it instead of opening a second case. None when there is none open. Holds
    ``external_key`` until the caller's transaction ends, so a warning alarm deciding at the same time
    (create_case_from_alarm) sees the response's case once it is committed."""
    storage_of(session).serialize(session, external_key)
    case = session.scalar(select(Case).where(Case.external_key == external_key))
    if case is None or current_state(session, case) in ("closed", "void"):
        return None
    case.attributes = {**(case.attributes or {}), **attributes}
    return case

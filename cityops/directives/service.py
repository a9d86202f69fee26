"""Directives (一键智达 · 一贯到底): issue, deliver, read, confirm (签收), report (反馈), pass down, remind, escalate,
and the receipt board (一览无余).

A directive goes to a set of receiving units chosen by selectors (``targets``):

- ``{"kind": "level", "level": "township"}`` — every unit of a level inside the sender's scope ("all townships");
- ``{"kind": "units", "codes": [...]}`` — named units;
- ``{"kind": "posts", "post": "village_cadre", "zone": <GeoJSON>}`` — the people of a post whose unit lies in
  (intersects) a zone ("all village cadres inside this zone"); one receipt per unit, recipients that post only;
- ``{"kind": "departments", "codes": [...]}`` — named departments;
- ``{"kind": "runway", "runway": "S5R01"}`` — the departments that own the runway, its sub-runways and
  indicators in the indicators catalogue ("departments on the geohazard runway").

Every receiving unit gets one receipt whose recipients are the people on duty there now
(``cityops.duty.service.on_duty_many``), or the selected post's people. ``cascade`` (a level) also passes the
directive down at once, unit by unit, to that level; otherwise a receiving unit passes it down itself
(``forward``). Only a unit's own people read, confirm and report for it (a principal with that unit as a scope
root, or the department among its departments): an acknowledgement by someone else is refused.

Every target must lie inside the sender's scope, else nothing is written (403). Everything a directive does is
one ``directive_log`` row and one ``directive.changed`` event in the same transaction; the receipt board's live
stream hears the events (``DirectiveHub``, a broadcast subscription in every worker).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

from shapely.geometry.base import BaseGeometry
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import publish
from cityops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from cityops.core.spatial import spatial_filter
from cityops.core.storage import storage_of
from cityops.directives import catalogue as cat
from cityops.directives.manifest import DirectiveChanged
from cityops.directives.models import STATES, Directive, LogEntry, Receipt
from cityops.duty.service import on_duty_many
from cityops.identity.scope import Scope
from cityops.org.models import Department, Person, Unit

log = logging.getLogger("cityops.directives")

_LEVEL_ZH = {"district": "区", "township": "镇街", "village": "村社区", "grid": "网格", "department": "部门"}


# ------------------------------------------------------------------------------------------ targets

class Target:
    __slots__ = ("unit_code", "department_code", "path", "name", "level", "post")

    def __init__(self, unit_code, department_code, path, name, level, post=None):
        self.unit_code, self.department_code, self.path, self.name, self.level, self.post = (
            unit_code, department_code or "", path, name, level, post)

    @property
    def key(self) -> tuple[str, str]:
        return (self.unit_code, self.department_code)


def _runway_owners(indicators, runway: str) -> set[str]:
    if indicators is None or runway not in indicators.runways:
        raise InvalidInput(f"unknown runway {runway!r}")
    owners = {indicators.runways[runway].owner}
    subs = {code for code, s in indicators.subrunways.items() if s.runway == runway}
    owners |= {indicators.subrunways[c].owner for c in subs}
    owners |= {i.owner for i in indicators.indicators.values() if i.subrunway in subs}
    return owners


def resolve_targets(session: Session, scope: Scope, targets: list[dict], *, indicators=None,
                    zone_of=None) -> list[Target]:
    """The receiving units of ``targets`` (deduplicated, in path order). A named unit or department outside the
    scope raises Forbidden; selectors over levels, zones and runways take what lies inside the scope, and one
    that finds nothing there is refused (422)."""
    if not targets:
        raise InvalidInput("a directive needs at least one target")
    c = cat.load()
    out: dict[tuple[str, str], Target] = {}
    for n, t in enumerate(targets):
        kind = t.get("kind")
        where = f"target {n + 1}"
        found: list[Target] = []
        if kind == "level":
            level = t.get("level")
            if level not in c.levels.order:
                raise InvalidInput(f"{where}: unknown level {level!r} (one of {', '.join(c.levels.order)})")
            rows = session.execute(select(Unit.code, Unit.path, Unit.name, Unit.level)
                                   .where(Unit.level == level, scope.covers_clause(Unit.path))).all()
            found = [Target(r.code, "", r.path, r.name, r.level) for r in rows]
        elif kind == "units":
            codes = [str(x) for x in (t.get("codes") or [])]
            if not codes:
                raise InvalidInput(f"{where}: codes is empty")
            rows = {r.code: r for r in session.execute(select(Unit.code, Unit.path, Unit.name, Unit.level)
                                                       .where(Unit.code.in_(codes))).all()}
            unknown = [x for x in codes if x not in rows]
            if unknown:
                raise InvalidInput(f"{where}: unknown units {', '.join(unknown[:10])}")
            outside = [x for x in codes if not scope.covers(rows[x].path)]
            if outside:
                raise Forbidden(f"{where}: units {', '.join(outside[:10])} are outside your scope")
            found = [Target(r.code, "", r.path, r.name, r.level) for r in (rows[x] for x in codes)]
        elif kind == "posts":
            post = t.get("post")
            if not post:
                raise InvalidInput(f"{where}: post is missing")
            posted = (scope.covers_clause(Unit.path), Unit.code.in_(select(Person.unit_code).where(Person.post == post)))
            if t.get("zone") is not None:
                if zone_of is None:
                    raise InvalidInput(f"{where}: zone given but no geometry reader")
                zone: BaseGeometry = zone_of(t["zone"], t.get("crs"))
                units = spatial_filter(session, Unit, select(Unit).where(*posted), "intersects", zone)
            else:  # columns: the units of every grid worker are thousands, their outlines not needed
                units = session.execute(select(Unit.code, Unit.path, Unit.name, Unit.level).where(*posted)).all()
            found = [Target(u.code, "", u.path, u.name, u.level, post) for u in units]
        elif kind in ("departments", "runway"):
            if kind == "runway":
                codes = sorted(_runway_owners(indicators, str(t.get("runway"))))
                depts = {d.code: d for d in session.scalars(select(Department).where(Department.code.in_(codes)))}
                codes = [x for x in codes if x in depts and (scope.covers(depts[x].unit_path))]
            else:
                codes = [str(x) for x in (t.get("codes") or [])]
                if not codes:
                    raise InvalidInput(f"{where}: codes is empty")
                depts = {d.code: d for d in session.scalars(select(Department).where(Department.code.in_(codes)))}
                unknown = [x for x in codes if x not in depts]
                if unknown:
                    raise InvalidInput(f"{where}: unknown departments {', '.join(unknown[:10])}")
                outside = [x for x in codes if not scope.covers(depts[x].unit_path)]
                if outside:
                    raise Forbidden(f"{where}: departments {', '.join(outside[:10])} are outside your scope")
            found = [Target(depts[x].unit_code, x, depts[x].unit_path, depts[x].name, "department") for x in codes]
        else:
            raise InvalidInput(f"{where}: unknown kind {kind!r} (level, units, posts, departments, runway)")
        if not found:
            raise InvalidInput(f"{where}: selects no unit inside your scope")
        for f in found:
            out.setdefault(f.key, f)
    if len(out) > c.max_receipts:
        raise InvalidInput(f"a directive reaches at most {c.max_receipts} units; this one would reach {len(out)}")
    return sorted(out.values(), key=lambda x: (x.path, x.department_code))


def _children(session: Session, parents: list[Target | Receipt], level: str) -> dict[str, list[Target]]:
    """Units of ``level`` beneath each parent (by path)."""
    out: dict[str, list[Target]] = defaultdict(list)
    paths = sorted({p.path if isinstance(p, Target) else p.unit_path for p in parents if not (p.department_code or "")})
    if not paths:
        return out
    rows = session.execute(select(Unit.code, Unit.path, Unit.name, Unit.level).where(Unit.level == level)).all()
    roots = set(paths)
    for r in rows:
        # The parent is the nearest listed ancestor path.
        parts = r.path.strip("/").split("/")
        for i in range(len(parts) - 1, 0, -1):
            anc = "/" + "/".join(parts[:i]) + "/"
            if anc in roots:
                out[anc].append(Target(r.code, "", r.path, r.name, r.level))
                break
    return out


# ------------------------------------------------------------------------------------------ issuing

def _recipients(session: Session, targets: list[Target], at: datetime) -> dict[tuple[str, str], list[dict]]:
    keys = [f"dept:{t.department_code}" if t.department_code else t.unit_code for t in targets if not t.post]
    duty = on_duty_many(session, keys, at) if keys else {}
    out: dict[tuple[str, str], list[dict]] = {}
    for t in targets:
        if t.post:
            continue
        key = f"dept:{t.department_code}" if t.department_code else t.unit_code
        out[t.key] = [{"person_id": o.person_id, "name": o.name, "phone": o.phone, "post": o.post, "role": o.role,
                       "rostered": o.rostered} for o in duty.get(key, [])]
    posted = [t for t in targets if t.post]
    if posted:
        by_unit = defaultdict(list)
        codes = {t.unit_code for t in posted}
        # Columns, not ORM objects: a directive to every grid worker reads ~4,500 people here. Many units: every
        # person of the posts, kept by unit here (thousands of unit codes as placeholders cost more than the rows).
        stmt = select(Person.id, Person.name, Person.phone, Person.post, Person.unit_code).where(
            Person.post.in_({t.post for t in posted}))
        if len(codes) <= 200:
            stmt = stmt.where(Person.unit_code.in_(sorted(codes)))
        for p in session.execute(stmt.order_by(Person.id)):
            if p.unit_code in codes:
                by_unit[(p.unit_code, p.post)].append({"person_id": p.id, "name": p.name, "phone": p.phone, "post": p.post,
                                                       "role": "recipient", "rostered": False})
        for t in posted:
            out[t.key] = by_unit.get((t.unit_code, t.post), [])
    return out


def _issuer_unit(session: Session, scope: Scope) -> tuple[str, str]:
    if scope.unit_paths:
        path = scope.unit_paths[0]
    else:
        path = session.scalar(select(Unit.path).where(Unit.parent_code.is_(None)).order_by(Unit.path).limit(1)) or "/"
        path = session.scalar(select(Unit.path).where(Unit.level == "district").order_by(Unit.path).limit(1)) or path
    return path.rstrip("/").rsplit("/", 1)[-1], path


def _insert_receipts(session: Session, directive: Directive, targets: list[Target], parent_of: dict, depth_of: dict,
                     now: datetime) -> list[int]:
    recipients = _recipients(session, targets, now)
    rows = [dict(directive_id=directive.id, parent_id=parent_of.get(t.key), depth=depth_of.get(t.key, 1), unit_code=t.unit_code,
                 department_code=t.department_code, unit_path=t.path, name=t.name, level=t.level,
                 recipients=recipients.get(t.key, []), state="sent", sent_at=now, reminders=0) for t in targets]
    if not rows:
        return []
    return storage_of(session).insert_rows(session, Receipt, rows, returning_ids=True)


def issue(session: Session, actor: audit.Actor, scope: Scope, *, title: str, body: str, targets: list[dict],
          issuer_name: str, attachments: list[dict] | None = None, deadline: datetime | None = None,
          cascade: str | None = None, indicators=None, zone_of=None, now: datetime | None = None) -> Directive:
    """Issue a directive: its receipts (and, with ``cascade``, their descendants down to that level), delivered
    in the same transaction. The caller commits."""
    now = now or datetime.now(UTC)
    title, body = (title or "").strip(), (body or "").strip()
    if not title or not body:
        raise InvalidInput("a directive needs a title and a text")
    if deadline is not None and deadline <= now:
        raise InvalidInput("the deadline has passed already")
    c = cat.load()
    if cascade is not None and cascade not in c.levels.order:
        raise InvalidInput(f"unknown cascade level {cascade!r} (one of {', '.join(c.levels.order)})")
    first = resolve_targets(session, scope, targets, indicators=indicators, zone_of=zone_of)
    unit_code, unit_path = _issuer_unit(session, scope)
    d = Directive(title=title[:200], body=body[:20000], attachments=list(attachments or []), deadline=deadline, targets=targets,
                  issued_by=actor.name, issuer_name=issuer_name, unit_code=unit_code, unit_path=unit_path, created_at=now)
    session.add(d)
    session.flush()
    ids = _insert_receipts(session, d, first, {}, {}, now)
    total = len(ids)
    if cascade is not None:
        total += _cascade(session, d, list(zip(first, ids, strict=True)), cascade, now)
    if total > c.max_receipts:
        raise InvalidInput(f"a directive reaches at most {c.max_receipts} units; this one would reach {total}")
    reached = _delivered(session, d, now, actor)
    entry = _log(session, d, None, d.unit_path, "issued", actor, now,
                 {"receipts": total, "people": reached, "targets": targets, "cascade": cascade})
    audit.record(session, actor, "directive.issue", "directive", str(d.id), after={"title": d.title, "receipts": total},
                 unit_path=d.unit_path)
    publish(session, DirectiveChanged(directive_id=d.id, change="issued", unit_path=d.unit_path, log_id=entry.id,
                                      receipts=total))
    return d


def _cascade(session: Session, d: Directive, parents: list[tuple[Target, int]], level: str, now: datetime) -> int:
    """Pass the directive down from ``parents`` level by level to ``level``; returns the receipts made."""
    c = cat.load()
    order = c.levels.order
    made = 0
    frontier = parents
    depth = 1
    while frontier:
        depth += 1
        by_level = defaultdict(list)
        for t, rid in frontier:
            if t.department_code or t.level not in order:
                continue
            nxt = order.index(t.level) + 1
            if nxt < len(order) and order.index(level) >= nxt:
                by_level[order[nxt]].append((t, rid))
        new: list[tuple[Target, int]] = []
        for lvl, group in by_level.items():
            kids = _children(session, [t for t, _ in group], lvl)
            parent_of, depth_of, targets = {}, {}, []
            existing = set(session.execute(select(Receipt.unit_code, Receipt.department_code).where(Receipt.directive_id == d.id)).all())
            for t, rid in group:
                for k in kids.get(t.path, []):
                    if k.key in existing or k.key in parent_of:
                        continue
                    parent_of[k.key], depth_of[k.key] = rid, depth
                    targets.append(k)
            ids = _insert_receipts(session, d, targets, parent_of, depth_of, now)
            made += len(ids)
            new += list(zip(targets, ids, strict=True))
        frontier = new
    return made


#: Most addresses in one notification (the notification service's limit).
_NOTIFY_BATCH = 500


def _delivered(session: Session, d: Directive, now: datetime, actor: audit.Actor | str = "system", *, what: str = "issued",
               severity: str = "orange") -> int:
    """Hand the directive's new receipts to the notification service (cityops.notify): their recipients get the
    directive in their inbox and on the channels of their preferences; the service's dispatcher hands them to
    the channels after the commit. The receipts are marked delivered in the same transaction. Returns the
    number of people reached. Escalation is the directive's own (``sweep``), not a notification policy."""
    from cityops.notify.service import Message, send

    rows = session.execute(select(Receipt.id, Receipt.recipients).where(Receipt.directive_id == d.id, Receipt.delivered_at.is_(None))).all()
    if not rows:
        return 0
    people = sorted({p["person_id"] for _, recipients in rows for p in recipients if p.get("person_id") is not None})
    first_id = rows[0][0]
    for k in range(0, len(people), _NOTIFY_BATCH):
        # The service reads a batch of person:<id> addresses in one query, as columns (notify.resolve.people_by_id).
        send(session, Message(kind=f"directive.{what}", severity=severity, title=d.title, body=d.body[:8000], subject_kind="directive",
                              subject_id=str(d.id), link=f"/directives?id={d.id}", unit_code=d.unit_code,
                              to=[f"person:{pid}" for pid in people[k:k + _NOTIFY_BATCH]], policy="",
                              dedup_key=f"directive:{d.id}:{first_id}:{k}", data={"directive_id": d.id}),
             actor=actor if isinstance(actor, str) else actor.name, strict=False, now=now)
    session.execute(update(Receipt).where(storage_of(session).in_ids(Receipt.id, [r[0] for r in rows])).values(delivered_at=now)
                    .execution_options(synchronize_session=False))
    return len(people)


def _log(session: Session, d: Directive, receipt: Receipt | None, path: str, action: str, actor: audit.Actor | str,
         at: datetime, data: dict | None = None) -> LogEntry:
    entry = LogEntry(directive_id=d.id, receipt_id=receipt.id if receipt else None, unit_path=path, action=action,
                     actor=actor if isinstance(actor, str) else actor.name, at=at, data=data or {})
    session.add(entry)
    session.flush()
    return entry


# ------------------------------------------------------------------------------------------ reading

def _visible(session: Session, scope: Scope, d: Directive) -> bool:
    if scope.covers(d.unit_path):
        return True
    stmt = select(Receipt.id).where(Receipt.directive_id == d.id)
    if scope.department_codes:
        stmt = stmt.where(scope.covers_clause(Receipt.unit_path) | Receipt.department_code.in_(scope.department_codes))
    else:
        stmt = stmt.where(scope.covers_clause(Receipt.unit_path))
    return session.scalar(stmt.limit(1)) is not None


def get_directive(session: Session, scope: Scope, directive_id: int) -> Directive:
    d = session.get(Directive, directive_id)
    if d is None or not _visible(session, scope, d):
        raise NotFound(f"directive {directive_id} not found")
    return d


def _receipt_clause(scope: Scope):
    if scope.department_codes and not scope.all_units:
        return scope.covers_clause(Receipt.unit_path) | Receipt.department_code.in_(scope.department_codes)
    return scope.covers_clause(Receipt.unit_path)


def directive_dict(d: Directive) -> dict:
    return {"id": d.id, "title": d.title, "body": d.body, "attachments": d.attachments,
            "deadline": d.deadline.isoformat() if d.deadline else None, "targets": d.targets, "issued_by": d.issued_by,
            "issuer_name": d.issuer_name, "unit_code": d.unit_code, "created_at": d.created_at.isoformat(), "status": d.status}


def receipt_dict(r: Receipt, deadline: datetime | None = None, now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    return {"id": r.id, "directive_id": r.directive_id, "parent_id": r.parent_id, "depth": r.depth, "unit_code": r.unit_code,
            "department_code": r.department_code or None, "unit_path": r.unit_path, "name": r.name, "level": r.level,
            "recipients": r.recipients, "state": r.state,
            **{k: (getattr(r, k).isoformat() if getattr(r, k) else None)
               for k in ("sent_at", "delivered_at", "read_at", "confirmed_at", "reported_at", "last_reminded_at", "escalated_at")},
            "read_by": r.read_by, "confirmed_by": r.confirmed_by, "reported_by": r.reported_by, "report": r.report,
            "reminders": r.reminders,
            "overdue": bool(deadline and now > deadline and r.state != "reported")}


def list_directives(session: Session, scope: Scope, limit: int = 50) -> list[dict]:
    """Directives the caller issued in scope or whose receipts lie in scope, newest first, with counts of its
    receipts in scope by state."""
    ids_issued = select(Directive.id).where(scope.covers_clause(Directive.unit_path))
    ids_received = select(Receipt.directive_id).where(_receipt_clause(scope))
    rows = session.scalars(select(Directive).where(Directive.id.in_(ids_issued) | Directive.id.in_(ids_received))
                           .order_by(Directive.id.desc()).limit(limit)).all()
    counts: dict[int, Counter] = defaultdict(Counter)
    if rows:
        for did, state, n in session.execute(select(Receipt.directive_id, Receipt.state, func.count())
                                              .where(Receipt.directive_id.in_([d.id for d in rows]), _receipt_clause(scope))
                                              .group_by(Receipt.directive_id, Receipt.state)):
            counts[did][state] = n
    return [{**directive_dict(d), "counts": _progress(counts[d.id])} for d in rows]


def _progress(c: Counter) -> dict:
    total = sum(c.values())
    # Each state counts the receipts at it or beyond: "read" includes the confirmed and reported.
    reached = {s: sum(c[x] for x in STATES[i:]) for i, s in enumerate(STATES)}
    return {"total": total, "read": reached["read"], "confirmed": reached["confirmed"], "reported": reached["reported"],
            "silent": c["sent"]}


def board(session: Session, scope: Scope, directive_id: int, now: datetime | None = None) -> dict:
    """The receipt board (一览无余): the directive, and level by level (depth, then level) the counts of its
    receipts in the caller's scope — read, confirmed, reported, silent, overdue — and every receipt."""
    now = now or datetime.now(UTC)
    d = get_directive(session, scope, directive_id)
    rows = session.scalars(select(Receipt).where(Receipt.directive_id == d.id, _receipt_clause(scope))
                           .order_by(Receipt.depth, Receipt.unit_path, Receipt.department_code)).all()
    groups: dict[tuple[int, str], list[Receipt]] = defaultdict(list)
    for r in rows:
        groups[(r.depth, r.level)].append(r)
    levels = []
    for (depth, level), items in sorted(groups.items()):
        counts = _progress(Counter(r.state for r in items))
        counts["overdue"] = sum(1 for r in items if d.deadline and now > d.deadline and r.state != "reported")
        counts["escalated"] = sum(1 for r in items if r.escalated_at)
        levels.append({"depth": depth, "level": level, "name_zh": _LEVEL_ZH.get(level, level), **counts,
                       "receipts": [receipt_dict(r, d.deadline, now) for r in items]})
    totals = _progress(Counter(r.state for r in rows))
    last = session.scalar(select(func.max(LogEntry.id)).where(LogEntry.directive_id == d.id)) or 0
    return {"directive": directive_dict(d), "totals": totals, "levels": levels, "log_id": last}


def timeline(session: Session, scope: Scope, directive_id: int, limit: int = 500) -> list[dict]:
    d = get_directive(session, scope, directive_id)
    rows = session.scalars(select(LogEntry).where(LogEntry.directive_id == d.id, scope.sees_clause(LogEntry.unit_path))
                           .order_by(LogEntry.id.desc()).limit(limit)).all()
    return [{"id": e.id, "receipt_id": e.receipt_id, "action": e.action, "actor": e.actor, "at": e.at.isoformat(),
             "data": e.data} for e in rows]


def inbox(session: Session, scope: Scope, limit: int = 100) -> list[dict]:
    """The receipts addressed to the caller's own units (its scope roots) or departments, newest first."""
    own = [p.rstrip("/").rsplit("/", 1)[-1] for p in scope.unit_paths]
    clause = Receipt.unit_code.in_(own) & (Receipt.department_code == "")
    if scope.department_codes:
        clause = clause | Receipt.department_code.in_(scope.department_codes)
    rows = session.execute(select(Receipt, Directive).join(Directive, Directive.id == Receipt.directive_id).where(clause)
                           .order_by(Receipt.id.desc()).limit(limit)).all()
    return [{"receipt": receipt_dict(r, d.deadline), "directive": directive_dict(d)} for r, d in rows]


# ------------------------------------------------------------------------------------------ acting

def _own(scope: Scope, r: Receipt) -> bool:
    """The receipt's unit is one of the caller's own units (a scope root), or its department one of the caller's."""
    if r.department_code:
        return r.department_code in scope.department_codes
    return r.unit_path in scope.unit_paths


def _receipt(session: Session, scope: Scope, directive_id: int, receipt_id: int, *, for_update: bool = True) -> tuple[Directive, Receipt]:
    d = get_directive(session, scope, directive_id)
    stmt = select(Receipt).where(Receipt.id == receipt_id, Receipt.directive_id == d.id)
    if for_update:
        stmt = stmt.with_for_update()
    r = session.scalar(stmt)
    if r is None or not (scope.covers(r.unit_path) or (r.department_code and r.department_code in scope.department_codes)):
        raise NotFound(f"receipt {receipt_id} of directive {directive_id} not found")
    return d, r


def act(session: Session, actor: audit.Actor, scope: Scope, directive_id: int, receipt_id: int, action: str, *,
        text: str | None = None, now: datetime | None = None) -> Receipt:
    """``read``, ``confirm`` (签收) or ``report`` (反馈落实, with ``text``) for a receipt, by its own unit's people.
    Read and confirm are idempotent (a retry changes nothing); a second report is a conflict."""
    now = now or datetime.now(UTC)
    if action not in ("read", "confirm", "report"):
        raise InvalidInput(f"unknown action {action!r} (read, confirm, report)")
    d, r = _receipt(session, scope, directive_id, receipt_id)
    if not _own(scope, r):
        raise Forbidden(f"only the people of {r.name} acknowledge its receipt")
    rank = STATES.index(r.state)
    if action == "read":
        if rank >= 1:
            return r
        r.state, r.read_at, r.read_by = "read", now, actor.name
    elif action == "confirm":
        if rank >= 2:
            return r
        if r.read_at is None:
            r.read_at, r.read_by = now, actor.name
        r.state, r.confirmed_at, r.confirmed_by = "confirmed", now, actor.name
    else:
        text = (text or "").strip()
        if not text:
            raise InvalidInput("a report needs its text (what was done)")
        if rank >= 3:
            raise Conflict(f"{r.name} has reported already", {"state": r.state})
        if rank < 2:
            raise Conflict("confirm receipt before reporting", {"state": r.state})
        r.state, r.reported_at, r.reported_by, r.report = "reported", now, actor.name, text[:5000]
    session.flush()
    entry = _log(session, d, r, r.unit_path, {"read": "read", "confirm": "confirmed", "report": "reported"}[action], actor, now,
                 {"text": r.report} if action == "report" else {})
    audit.record(session, actor, f"directive.{action}", "directive_receipt", str(r.id), after={"state": r.state},
                 unit_path=r.unit_path)
    publish(session, DirectiveChanged(directive_id=d.id, change=r.state, unit_path=r.unit_path, log_id=entry.id,
                                      receipt=receipt_dict(r, d.deadline, now)))
    return r


def forward(session: Session, actor: audit.Actor, scope: Scope, directive_id: int, receipt_id: int, *,
            targets: list[dict] | None = None, level: str | None = None, zone_of=None, now: datetime | None = None) -> list[Receipt]:
    """Pass the directive down from a receiving unit: to every unit of ``level`` beneath it, or to ``targets``
    (which must all lie beneath it). Units that have it already are skipped. By the unit's own people or anyone
    whose scope covers it (a township passes on for a village that has no operator)."""
    now = now or datetime.now(UTC)
    d, r = _receipt(session, scope, directive_id, receipt_id)
    if r.department_code:
        raise InvalidInput("a department's receipt is not passed down")
    c = cat.load()
    if (targets is None) == (level is None):
        raise InvalidInput("name either level or targets to pass down to")
    below = Scope(unit_paths=(r.unit_path,))
    if level is not None:
        if level not in c.levels.order or r.level not in c.levels.order or c.levels.order.index(level) <= c.levels.order.index(r.level):
            raise InvalidInput(f"level {level!r} is not below {r.level!r}")
        chosen = resolve_targets(session, below, [{"kind": "level", "level": level}], zone_of=zone_of)
    else:
        for t in targets:
            if t.get("kind") in ("departments", "runway"):
                raise InvalidInput("a unit passes a directive down to its own units")
        try:
            chosen = resolve_targets(session, below, targets, zone_of=zone_of)
        except Forbidden as exc:
            raise Forbidden(f"passing down reaches only units beneath {r.name}: {exc.message}") from None
    chosen = [t for t in chosen if t.path != r.unit_path]
    existing = set(session.execute(select(Receipt.unit_code, Receipt.department_code).where(Receipt.directive_id == d.id)).all())
    chosen = [t for t in chosen if t.key not in existing]
    if not chosen:
        raise Conflict("every unit selected has this directive already")
    count = session.scalar(select(func.count()).select_from(Receipt).where(Receipt.directive_id == d.id)) or 0
    if count + len(chosen) > c.max_receipts:
        raise InvalidInput(f"a directive reaches at most {c.max_receipts} units")
    ids = _insert_receipts(session, d, chosen, {t.key: r.id for t in chosen}, {t.key: r.depth + 1 for t in chosen}, now)
    _delivered(session, d, now, actor, what="passed_down")
    if r.state == "sent":
        r.state, r.read_at, r.read_by = "read", now, actor.name
    entry = _log(session, d, r, r.unit_path, "passed_down", actor, now, {"receipts": len(ids), "units": [t.unit_code for t in chosen][:50]})
    audit.record(session, actor, "directive.forward", "directive_receipt", str(r.id), after={"receipts": len(ids)}, unit_path=r.unit_path)
    publish(session, DirectiveChanged(directive_id=d.id, change="passed_down", unit_path=r.unit_path, log_id=entry.id,
                                      receipts=len(ids)))
    return list(session.scalars(select(Receipt).where(Receipt.id.in_(ids)).order_by(Receipt.unit_path)))


# ------------------------------------------------------------------------------------------ the silent

def _notify_escalations(session: Session, escalations, now: datetime) -> None:
    """Tell the leader on duty above the silent units (one notification per directive and unit above)."""
    from cityops.notify.service import Message, send

    for d, above, names, told in escalations:
        if not told:
            continue
        send(session, Message(kind="directive.escalated", severity="red", title=f"督办：{d.title}",
                              body=f"以下单位尚未签收或反馈：{'、'.join(names[:50])}{' 等' if len(names) > 50 else ''}（共 {len(names)} 个）",
                              subject_kind="directive", subject_id=str(d.id), link=f"/directives?id={d.id}", unit_code=above,
                              to=[f"person:{t['person_id']}" for t in told], policy="",
                              dedup_key=f"directive:{d.id}:escalated:{above}:{now.isoformat()}", data={"directive_id": d.id}),
             actor="system:directives", strict=False, now=now)


def _notify_reminders(session: Session, reminders, now: datetime) -> None:
    """Remind the people of the silent units through the notification service (their inbox and channels, each
    message with its own timeline): one message per directive and what is awaited (receipt or report), in
    batches of the service's limit; the reminder's log entries name the message."""
    from cityops.notify.service import Message, send

    for (d, awaited), items in reminders.items():
        people = sorted({p["person_id"] for r, _ in items for p in r.recipients if p.get("person_id") is not None})
        if not people:
            continue
        names = [r.name for r, _ in items]
        ask = "签收" if awaited == "confirm" else "反馈落实情况"
        mids = []
        for k in range(0, len(people), _NOTIFY_BATCH):
            mids.append(send(session, Message(
                kind="directive.reminded", severity="orange", title=f"催办：请{ask}——{d.title}",
                body=f"指令「{d.title}」尚待贵单位{ask}（{'、'.join(names[:20])}{' 等' if len(names) > 20 else ''}）。请尽快办理。",
                subject_kind="directive", subject_id=str(d.id), link=f"/directives?id={d.id}", unit_code=d.unit_code,
                to=[f"person:{pid}" for pid in people[k:k + _NOTIFY_BATCH]], policy="",
                dedup_key=f"directive:{d.id}:reminded:{awaited}:{now.isoformat()}:{k}",
                data={"directive_id": d.id, "receipts": [r.id for r, _ in items][:500]}),
                actor="system:directives", strict=False, now=now))
        for r, entry in items:
            mine = {p["person_id"] for p in r.recipients}
            entry.data = {**entry.data, "messages": [m for m, k in zip(mids, range(0, len(people), _NOTIFY_BATCH))
                                                     if mine & set(people[k:k + _NOTIFY_BATCH])]}


def sweep(session: Session, now: datetime | None = None) -> dict:
    """Remind the silent and escalate those still silent after ``escalate_after_reminders`` reminders: receipts
    not confirmed ``remind_after_minutes`` after they were sent, and receipts confirmed but not reported when
    the deadline has passed. Each reminder and escalation is on the timeline and goes out as a notification
    (cityops.notify: the silent units' people, then the leader on duty of the level above). Run once per deployment by the directives timer (or the CLI). The caller commits."""
    now = now or datetime.now(UTC)
    c = cat.load()
    first = now - timedelta(minutes=c.remind_after_minutes)
    again = now - timedelta(minutes=c.remind_every_minutes)
    silent = session.execute(
        select(Receipt, Directive).join(Directive, Directive.id == Receipt.directive_id)
        .where(Directive.status == "open", Receipt.escalated_at.is_(None),
               ((Receipt.state.in_(("sent", "read")) & (Receipt.sent_at <= first))
                | ((Receipt.state == "confirmed") & Directive.deadline.is_not(None) & (Directive.deadline < now))),
               (Receipt.last_reminded_at.is_(None) | (Receipt.last_reminded_at <= again)))
        .order_by(Receipt.id).limit(5000)).all()
    if not silent:
        return {"reminded": 0, "escalated": 0}
    to_escalate = [(r, d) for r, d in silent if r.reminders >= c.escalate_after_reminders]
    parents = {r.parent_id for r, _ in to_escalate if r.parent_id}
    parent_units = dict(session.execute(select(Receipt.id, Receipt.unit_code).where(Receipt.id.in_(parents))).all()) if parents else {}
    above_keys = {parent_units.get(r.parent_id) or d.unit_code for r, d in to_escalate}
    leaders = on_duty_many(session, sorted(above_keys), now) if above_keys else {}
    reminded = escalated = 0
    escalations: dict[tuple[int, str], tuple] = {}
    reminders: dict[tuple[Directive, str], list[tuple[Receipt, LogEntry]]] = defaultdict(list)
    by_directive: dict[int, tuple[Directive, list[LogEntry]]] = {}
    for r, d in silent:
        if r.reminders >= c.escalate_after_reminders:
            above = parent_units.get(r.parent_id) or d.unit_code
            told = [{"person_id": o.person_id, "name": o.name, "role": o.role} for o in leaders.get(above, []) if o.role == "leader"]
            r.escalated_at = now
            entry = _log(session, d, r, r.unit_path, "escalated", "system:directives", now,
                         {"to_unit": above, "to": told, "state": r.state})
            escalations.setdefault((d.id, above), (d, above, [], told))[2].append(r.name)
            escalated += 1
        else:
            r.reminders += 1
            r.last_reminded_at = now
            entry = _log(session, d, r, r.unit_path, "reminded", "system:directives", now,
                         {"n": r.reminders, "to": [x["name"] for x in r.recipients], "state": r.state})
            reminders[(d, "report" if r.state == "confirmed" else "confirm")].append((r, entry))
            reminded += 1
        by_directive.setdefault(d.id, (d, []))[1].append(entry)
    session.flush()
    _notify_reminders(session, reminders, now)
    _notify_escalations(session, escalations.values(), now)
    for d, entries in by_directive.values():
        publish(session, DirectiveChanged(directive_id=d.id, change="swept", unit_path=d.unit_path, log_id=entries[-1].id,
                                          receipts=len(entries)))
    return {"reminded": reminded, "escalated": escalated}

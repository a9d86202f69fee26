"""Duty (值班值守): rosters, who is on duty now, swaps, handovers, the printed roster.

The one call other capabilities make is ``on_duty(session, unit, at)`` (and ``on_duty_many`` for many units
in two queries): the people on duty in a unit at a time, each with a role (``leader`` 带班领导 / ``operator``
值班员) and the shift. A unit's roster answers first; a role the roster leaves empty at that time (a gap, or a
unit that keeps no roster: villages, grids) is answered by the unit's own people by post
(``shifts.toml [standing]``), marked ``rostered = False``.

Rosters are written all-or-nothing: an unknown person or shift, a person outside the roster's unit or
department, a person on two overlapping shifts, more people in a role at once than the catalogue allows, or a
roster outside the caller's scope is refused with the problem named and nothing written.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.bus import publish
from cityops.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from cityops.duty import catalogue as cat
from cityops.duty.manifest import RosterChanged
from cityops.duty.models import DutyAssignment, DutyHandover
from cityops.identity.scope import Scope
from cityops.org.models import Department, Person, Unit, person_departments

#: Longest roster span one request may write or read (a year and a bit).
MAX_DAYS = 400
#: Most assignments one request may write.
MAX_ITEMS = 5000
#: Levels whose units keep a duty center roster.
CENTER_LEVELS = ("district", "township")


def calendar():
    """The duty calendar (工作日历) of the event center: working days, weekends, holidays, 调休."""
    from cityops.events.catalogue import calendar as events_calendar

    return events_calendar()


# ------------------------------------------------------------------------------------------ rosters

@dataclass(frozen=True)
class Roster:
    key: str  # unit code, or "dept:<code>"
    unit_code: str
    unit_path: str
    name: str
    department_code: str | None = None

    def snapshot(self) -> dict:
        return {"key": self.key, "unit_code": self.unit_code, "department_code": self.department_code, "name": self.name}


def roster_of(session: Session, key: str, scope: Scope | None = None, *, write: bool = False) -> Roster:
    """The roster named ``key``: a unit code (a center) or ``dept:<code>``. Unknown or unseen → 404; a write
    outside the scope → 403."""
    key = (key or "").strip()
    if key.startswith("dept:"):
        d = session.scalar(select(Department).where(Department.code == key[5:]))
        if d is None or (scope is not None and not (scope.sees(d.unit_path) or d.code in scope.department_codes)):
            raise NotFound(f"department {key[5:]!r} not found")
        if write and scope is not None and d.code not in scope.department_codes:
            scope.require_covers(d.unit_path, f"the roster of department {d.code}")
        return Roster(key, d.unit_code, d.unit_path, d.name, d.code)
    unit = session.scalar(select(Unit).where(Unit.code == key))
    if unit is None or (scope is not None and not scope.sees(unit.path)):
        raise NotFound(f"unit {key!r} not found")
    if write and scope is not None:
        scope.require_covers(unit.path, f"the roster of unit {key}")
    return Roster(unit.code, unit.code, unit.path, unit.name)


def shift_window(shift: cat.Shift, day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, shift.start, calendar().tz)
    return start.astimezone(UTC), (start + timedelta(hours=shift.hours)).astimezone(UTC)


def _person_belongs(person: Person, roster: Roster) -> bool:
    if roster.department_code is not None:
        return any(d.code == roster.department_code for d in person.departments)
    return person.unit_path.startswith(roster.unit_path)


def _overlaps(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _check_and_build(session: Session, roster: Roster, items: list[dict], actor: audit.Actor,
                     replace_ids: set[int] = frozenset()) -> list[DutyAssignment]:
    """Validate ``items`` (each: person_id, role, shift, day, note?) against the catalogue, the people and every
    stored assignment (less ``replace_ids``); raise on the first kind of problem with all of its instances."""
    c = cat.load()
    if not items:
        raise InvalidInput("no assignments given")
    if len(items) > MAX_ITEMS:
        raise InvalidInput(f"at most {MAX_ITEMS} assignments in one request")
    problems: list[str] = []
    ids = {int(i["person_id"]) for i in items}
    people = {p.id: p for p in session.scalars(select(Person).where(Person.id.in_(ids)))}
    rows: list[DutyAssignment] = []
    for n, item in enumerate(items):
        pid = int(item["person_id"])
        shift = c.shifts.get(item.get("shift"))
        role = c.roles.get(item.get("role"))
        day = item.get("day")
        where = f"assignment {n + 1}"
        if shift is None:
            problems.append(f"{where}: unknown shift {item.get('shift')!r} (known: {', '.join(c.shifts)})")
        if role is None:
            problems.append(f"{where}: unknown role {item.get('role')!r} (leader or operator)")
        if not isinstance(day, date):
            problems.append(f"{where}: day must be a date")
        person = people.get(pid)
        if person is None:
            problems.append(f"{where}: unknown person {pid}")
        elif not _person_belongs(person, roster):
            problems.append(f"{where}: person {pid} ({person.name}) is not of {roster.name}")
        elif role is not None and person.post not in role.posts:
            problems.append(f"{where}: person {pid} ({person.name}) has post {person.post!r}, which cannot be {role.name_en.lower()}")
        if shift is None or role is None or person is None or not isinstance(day, date):
            continue
        start, end = shift_window(shift, day)
        rows.append(DutyAssignment(roster=roster.key, unit_code=roster.unit_code, department_code=roster.department_code,
                                   unit_path=roster.unit_path, person_id=pid, role=role.code, shift=shift.code, day=day,
                                   starts_at=start, ends_at=end, note=(item.get("note") or None), created_by=actor.name))
    if problems:
        raise InvalidInput("the roster has problems; nothing was changed", {"problems": problems})
    # Overlaps: a person on two shifts at once (any roster), and more than at_once in a role of this roster.
    lo, hi = min(r.starts_at for r in rows), max(r.ends_at for r in rows)
    stored = session.scalars(select(DutyAssignment).where(
        DutyAssignment.starts_at < hi, DutyAssignment.ends_at > lo,
        or_(DutyAssignment.person_id.in_(ids), DutyAssignment.roster == roster.key))).all()
    stored = [s for s in stored if s.id not in replace_ids]
    by_person: dict[int, list] = defaultdict(list)
    by_role: dict[str, list] = defaultdict(list)
    for s in stored:
        by_person[s.person_id].append((s.starts_at, s.ends_at, f"{s.roster} {s.day} {s.shift}"))
        if s.roster == roster.key:
            by_role[s.role].append((s.starts_at, s.ends_at))
    for r in rows:
        window = (r.starts_at, r.ends_at)
        for other in by_person[r.person_id]:
            if _overlaps(window, other[:2]):
                problems.append(f"person {r.person_id} ({people[r.person_id].name}) would be on two shifts at once: "
                                f"{r.day} {r.shift} and {other[2]}")
                break
        at_once = sum(1 for w in by_role[r.role] if _overlaps(window, w)) + 1
        if at_once > c.roles[r.role].at_once:
            problems.append(f"{r.day} {r.shift}: {at_once} people as {c.roles[r.role].name_en.lower()} at once "
                            f"(at most {c.roles[r.role].at_once})")
        by_person[r.person_id].append((r.starts_at, r.ends_at, f"{r.roster} {r.day} {r.shift}"))
        by_role[r.role].append(window)
    if problems:
        raise Conflict("overlapping shifts; nothing was changed", {"problems": sorted(set(problems))})
    return rows


def assign(session: Session, actor: audit.Actor, scope: Scope, roster_key: str, items: list[dict]) -> list[DutyAssignment]:
    """Add assignments to a roster, all or nothing. The caller commits."""
    roster = roster_of(session, roster_key, scope, write=True)
    rows = _check_and_build(session, roster, items, actor)
    session.add_all(rows)
    session.flush()
    audit.record(session, actor, "duty.assign", "duty_roster", roster.key, after={"count": len(rows), "ids": [r.id for r in rows][:50]},
                 unit_path=roster.unit_path)
    _changed(session, roster, "assigned", rows)
    return rows


def generate(session: Session, actor: audit.Actor, scope: Scope, roster_key: str, start: date, days: int, *,
             leaders: list[int] | None = None, operators: list[int] | None = None, replace: bool = False) -> list[DutyAssignment]:
    """Fill ``days`` days from ``start`` by rotation (轮班): working days get the catalogue's working-day shifts,
    weekends and holidays (duty calendar) its rest-day shifts; one leader and one operator per shift, taken in
    turn from ``leaders``/``operators`` (default: the roster's own people of the role's first post).
    ``replace`` removes what the roster had in those days first (in the same transaction)."""
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"days must be 1…{MAX_DAYS}")
    roster = roster_of(session, roster_key, scope, write=True)
    c = cat.load()
    pools = {}
    for role, given in (("leader", leaders), ("operator", operators)):
        if given:
            pools[role] = list(given)
        else:
            pools[role] = _default_pool(session, roster, c.roles[role].posts[0])
        if not pools[role]:
            raise InvalidInput(f"{roster.name} has nobody with post {c.roles[role].posts[0]!r} to be {role}: name them")
    cal = calendar()
    items, turn = [], {"leader": 0, "operator": 0}
    for k in range(days):
        day = start + timedelta(days=k)
        shifts = c.working_day_shifts if cal.is_working_day(day) else c.rest_day_shifts
        for shift in shifts:
            for role in ("leader", "operator"):
                pool = pools[role]
                items.append({"person_id": pool[turn[role] % len(pool)], "role": role, "shift": shift, "day": day})
                turn[role] += 1
    replaced: set[int] = set()
    if replace:
        replaced = set(session.scalars(select(DutyAssignment.id).where(DutyAssignment.roster == roster.key,
                                                                       DutyAssignment.day >= start,
                                                                       DutyAssignment.day < start + timedelta(days=days))))
    rows = _check_and_build(session, roster, items, actor, replace_ids=replaced)
    if replaced:
        session.execute(delete(DutyAssignment).where(DutyAssignment.id.in_(replaced)))
    session.add_all(rows)
    session.flush()
    audit.record(session, actor, "duty.generate", "duty_roster", roster.key,
                 after={"start": start.isoformat(), "days": days, "count": len(rows), "replaced": len(replaced)},
                 unit_path=roster.unit_path)
    _changed(session, roster, "generated", rows)
    return rows


def _default_pool(session: Session, roster: Roster, post: str) -> list[int]:
    stmt = select(Person.id).where(Person.post == post).order_by(Person.id)
    if roster.department_code is not None:
        stmt = stmt.join(person_departments, person_departments.c.person_id == Person.id).join(
            Department, Department.id == person_departments.c.department_id).where(Department.code == roster.department_code)
    else:
        stmt = stmt.where(Person.unit_code == roster.unit_code)
    return list(session.scalars(stmt))


def get_assignment(session: Session, assignment_id: int, scope: Scope) -> DutyAssignment:
    a = session.get(DutyAssignment, assignment_id)
    if a is None or not (scope.sees(a.unit_path) or (a.department_code and a.department_code in scope.department_codes)):
        raise NotFound(f"assignment {assignment_id} not found")
    return a


def _require_write(scope: Scope, a: DutyAssignment) -> None:
    if a.department_code and a.department_code in scope.department_codes:
        return
    if not scope.covers(a.unit_path):
        raise Forbidden(f"assignment {a.id} is outside your scope")


def remove(session: Session, actor: audit.Actor, scope: Scope, assignment_id: int) -> None:
    a = get_assignment(session, assignment_id, scope)
    _require_write(scope, a)
    before = assignment_snapshot(a)
    roster = roster_of(session, a.roster)
    session.delete(a)
    session.flush()
    audit.record(session, actor, "duty.remove", "duty_assignment", str(assignment_id), before=before, unit_path=a.unit_path)
    _changed(session, roster, "removed", [])


def swap(session: Session, actor: audit.Actor, scope: Scope, assignment_id: int, *, with_assignment: int | None = None,
         person_id: int | None = None, note: str | None = None) -> list[DutyAssignment]:
    """换班: two assignments exchange their people; 替班: another person takes this assignment. Checked as a new
    roster would be (post, belonging, overlaps); nothing changes on a refusal."""
    if (with_assignment is None) == (person_id is None):
        raise InvalidInput("name either with_assignment (换班) or person_id (替班)")
    a = get_assignment(session, assignment_id, scope)
    _require_write(scope, a)
    roster = roster_of(session, a.roster)
    if with_assignment is not None:
        b = get_assignment(session, with_assignment, scope)
        _require_write(scope, b)
        if b.id == a.id or b.roster != a.roster:
            raise InvalidInput("a swap is between two different assignments of one roster")
        if b.role != a.role:
            raise InvalidInput("a swap is between two assignments of the same role")
        items = [dict(person_id=b.person_id, role=a.role, shift=a.shift, day=a.day, note=note),
                 dict(person_id=a.person_id, role=b.role, shift=b.shift, day=b.day, note=note)]
        targets = [a, b]
    else:
        items = [dict(person_id=person_id, role=a.role, shift=a.shift, day=a.day, note=note)]
        targets = [a]
    rows = _check_and_build(session, roster, items, actor, replace_ids={t.id for t in targets})
    before = [assignment_snapshot(t) for t in targets]
    for t, row in zip(targets, rows, strict=True):
        if t.person_id != row.person_id:
            t.swapped_from, t.person_id = t.person_id, row.person_id
        t.note = note or t.note
    session.flush()
    audit.record(session, actor, "duty.swap", "duty_assignment", str(a.id), before=before,
                 after=[assignment_snapshot(t) for t in targets], unit_path=a.unit_path)
    _changed(session, roster, "swapped", targets)
    return targets


def _changed(session: Session, roster: Roster, change: str, rows: list[DutyAssignment]) -> None:
    days = sorted({r.day.isoformat() for r in rows})
    publish(session, RosterChanged(roster=roster.key, unit_path=roster.unit_path, change=change,
                                   first_day=days[0] if days else None, last_day=days[-1] if days else None))


def assignment_snapshot(a: DutyAssignment, people: dict[int, Person] | None = None) -> dict:
    p = (people or {}).get(a.person_id)
    c = cat.load()
    return {"id": a.id, "roster": a.roster, "unit_code": a.unit_code, "department_code": a.department_code,
            "person_id": a.person_id, "person_name": p.name if p else None, "person_phone": p.phone if p else None,
            "role": a.role, "role_name_zh": c.roles[a.role].name_zh, "role_name_en": c.roles[a.role].name_en,
            "shift": a.shift, "shift_name_zh": c.shifts[a.shift].name_zh, "shift_name_en": c.shifts[a.shift].name_en,
            "day": a.day.isoformat(), "starts_at": a.starts_at.isoformat(), "ends_at": a.ends_at.isoformat(),
            "swapped_from": a.swapped_from, "note": a.note}


def roster_view(session: Session, scope: Scope, roster_key: str, start: date, end: date) -> dict:
    """The roster from ``start`` to ``end`` (inclusive): each day with its calendar kind and its assignments."""
    if end < start or (end - start).days >= MAX_DAYS:
        raise InvalidInput(f"the period must run forwards and span at most {MAX_DAYS} days")
    roster = roster_of(session, roster_key, scope)
    rows = session.scalars(select(DutyAssignment).where(DutyAssignment.roster == roster.key, DutyAssignment.day >= start,
                                                        DutyAssignment.day <= end)
                           .order_by(DutyAssignment.day, DutyAssignment.starts_at, DutyAssignment.role)).all()
    people = {p.id: p for p in session.scalars(select(Person).where(Person.id.in_({r.person_id for r in rows})))} if rows else {}
    cal = calendar()
    by_day: dict[date, list] = defaultdict(list)
    for r in rows:
        by_day[r.day].append(assignment_snapshot(r, people))
    days = []
    for k in range((end - start).days + 1):
        d = start + timedelta(days=k)
        kind = "workday_adjusted" if d in cal.workdays else "holiday" if d in cal.holidays else \
            "working" if cal.is_working_day(d) else "weekend"
        days.append({"day": d.isoformat(), "weekday": d.isoweekday(), "kind": kind, "working": cal.is_working_day(d),
                     "assignments": by_day.get(d, [])})
    c = cat.load()
    return {"roster": roster.snapshot(), "start": start.isoformat(), "end": end.isoformat(), "days": days,
            "shifts": [{"code": s.code, "name_zh": s.name_zh, "name_en": s.name_en, "start": s.start.strftime("%H:%M"),
                        "hours": s.hours} for s in c.shifts.values()],
            "roles": [{"code": r.code, "name_zh": r.name_zh, "name_en": r.name_en, "at_once": r.at_once} for r in c.roles.values()]}


def rosters(session: Session, scope: Scope) -> list[dict]:
    """The rosters the caller sees: every center (district, townships) and department in scope."""
    units = session.scalars(select(Unit).where(Unit.level.in_(CENTER_LEVELS), scope.sees_clause(Unit.path)).order_by(Unit.path)).all()
    out = [{"key": u.code, "unit_code": u.code, "department_code": None, "name": u.name, "level": u.level,
            "writable": scope.covers(u.path)} for u in units]
    for d in session.scalars(select(Department).order_by(Department.code)):
        if scope.sees(d.unit_path) or d.code in scope.department_codes:
            out.append({"key": f"dept:{d.code}", "unit_code": d.unit_code, "department_code": d.code, "name": d.name,
                        "level": "department", "writable": scope.covers(d.unit_path) or d.code in scope.department_codes})
    return out


_KIND_ZH = {"working": "工作日", "weekend": "休息日", "holiday": "节假日", "workday_adjusted": "调休上班"}


def export_xlsx(view: dict, language: str = "zh") -> bytes:
    """The roster as a printable workbook: one row per day and shift, leader and operators with their phones;
    holidays shaded; A4 landscape, the title repeated on every page."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side

    zh = language.startswith("zh")
    wb = Workbook()
    ws = wb.active
    ws.title = "值班表" if zh else "Duty roster"
    title = f"{view['roster']['name']} {'值班表' if zh else 'duty roster'} {view['start']} — {view['end']}"
    ws.append([title])
    ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=6)
    ws["A1"].font = Font(bold=True, size=14)
    ws["A1"].alignment = Alignment(horizontal="center")
    head = ["日期", "星期", "类别", "班次", "带班领导", "值班员"] if zh else ["Date", "Weekday", "Day", "Shift", "Leader on duty", "Operator on duty"]
    ws.append(head)
    for cell in ws[2]:
        cell.font = Font(bold=True)
    weekdays = "一二三四五六日" if zh else ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    shade = PatternFill("solid", fgColor="FDE9D9")
    thin = Side(style="thin", color="999999")
    shifts = {s["code"]: s for s in view["shifts"]}
    for day in view["days"]:
        by_shift: dict[str, dict[str, list[str]]] = {}
        for a in day["assignments"]:
            slot = by_shift.setdefault(a["shift"], {"leader": [], "operator": []})
            slot[a["role"]].append(f"{a['person_name']} {a['person_phone'] or ''}".strip())
        if not by_shift:
            by_shift = {"": {"leader": [], "operator": []}}
        for code, slot in by_shift.items():
            shift = shifts.get(code)
            shift_name = (f"{shift['name_zh'] if zh else shift['name_en']} {shift['start']}" if shift else "")
            ws.append([day["day"], (("周" if zh else "") + weekdays[day["weekday"] - 1]),
                       _KIND_ZH[day["kind"]] if zh else day["kind"].replace("_", " "), shift_name,
                       "、".join(slot["leader"]) if zh else ", ".join(slot["leader"]),
                       "、".join(slot["operator"]) if zh else ", ".join(slot["operator"])])
            row = ws.max_row
            for cell in ws[row]:
                if cell.data_type == "f":  # openpyxl stores text beginning with "=" as a formula; ours is data
                    cell.data_type = "s"
                cell.border = Border(top=thin, bottom=thin, left=thin, right=thin)
                if day["kind"] in ("holiday", "weekend"):
                    cell.fill = shade
    for col, width in zip("ABCDEF", (12, 7, 10, 16, 28, 40), strict=True):
        ws.column_dimensions[col].width = width
    ws.print_title_rows = "1:2"
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ on duty now

@dataclass(frozen=True)
class OnDuty:
    person_id: int
    name: str
    phone: str | None
    email: str | None
    post: str
    role: str  # leader / operator
    unit_code: str  # the unit (or department's unit) asked about
    roster: str | None  # the roster that put them on duty; None for standing people
    shift: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    rostered: bool

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("starts_at", "ends_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


def _key_of(session: Session, unit: str) -> str:
    """A roster key from a unit code, a unit path or ``dept:<code>``."""
    unit = (unit or "").strip()
    if unit.startswith("/"):
        return unit.rstrip("/").rsplit("/", 1)[-1]
    return unit


def on_duty(session: Session, unit: str, at: datetime | None = None) -> list[OnDuty]:
    """Who is on duty in ``unit`` (a unit code or path, or ``dept:<code>``) at ``at`` (default now): leaders first.
    Unknown unit → NotFound."""
    key = _key_of(session, unit)
    result = on_duty_many(session, [key], at)
    if key not in result:
        raise NotFound(f"unit {unit!r} not found")
    return result[key]


def on_duty_many(session: Session, units: list[str], at: datetime | None = None) -> dict[str, list[OnDuty]]:
    """``on_duty`` for many units (codes or ``dept:<code>``) in a few queries: {key: [OnDuty, …]} for every key
    that names a unit or department (unknown keys are left out)."""
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        raise InvalidInput("the time must carry its time zone")
    keys = list(dict.fromkeys(_key_of(session, u) for u in units))
    c = cat.load()
    unit_keys = [k for k in keys if not k.startswith("dept:")]
    dept_codes = [k[5:] for k in keys if k.startswith("dept:")]
    known_units = {code: code for code in _chunked_scalars(session, lambda chunk: select(Unit.code).where(Unit.code.in_(chunk)), unit_keys)}
    depts = {d.code: d for d in _chunked_scalars(session, lambda chunk: select(Department).where(Department.code.in_(chunk)), dept_codes)}
    out: dict[str, list[OnDuty]] = {k: [] for k in keys if k in known_units or (k.startswith("dept:") and k[5:] in depts)}
    if not out:
        return out
    live_keys = list(out)
    rostered = _chunked_rows(session, lambda chunk: select(DutyAssignment, Person).join(Person, Person.id == DutyAssignment.person_id)
                             .where(DutyAssignment.roster.in_(chunk), DutyAssignment.starts_at <= at, DutyAssignment.ends_at > at)
                             .order_by(DutyAssignment.roster, DutyAssignment.role, DutyAssignment.id), live_keys)
    roles_held: dict[str, set[str]] = defaultdict(set)
    for a, p in rostered:
        unit_code = a.unit_code
        out[a.roster].append(OnDuty(p.id, p.name, p.phone, p.email, p.post, a.role, unit_code, a.roster, a.shift,
                                    a.starts_at, a.ends_at, True))
        roles_held[a.roster].add(a.role)
    # Standing people for the roles nobody holds by roster.
    posts = list(c.standing)
    needing_units = [k for k in live_keys if not k.startswith("dept:") and len(roles_held[k]) < len(c.roles)]
    for p in _chunked_scalars(session, lambda chunk: select(Person).where(Person.unit_code.in_(chunk), Person.post.in_(posts))
                              .order_by(Person.id), needing_units):
        role = c.standing[p.post]
        if role not in roles_held[p.unit_code]:
            out[p.unit_code].append(OnDuty(p.id, p.name, p.phone, p.email, p.post, role, p.unit_code, None, None, None, None, False))
    needing_depts = [k[5:] for k in live_keys if k.startswith("dept:") and len(roles_held[k]) < len(c.roles)]
    if needing_depts:
        rows = _chunked_rows(session, lambda chunk: select(Person, Department.code).join(
            person_departments, person_departments.c.person_id == Person.id).join(
            Department, Department.id == person_departments.c.department_id).where(Department.code.in_(chunk), Person.post.in_(posts))
            .order_by(Person.id), needing_depts)
        for p, code in rows:
            key, role = f"dept:{code}", c.standing[p.post]
            if role not in roles_held[key]:
                out[key].append(OnDuty(p.id, p.name, p.phone, p.email, p.post, role, depts[code].unit_code, None, None, None, None, False))
    for key in out:
        out[key].sort(key=lambda o: (o.role != "leader", not o.rostered, o.person_id))
    return out


_CHUNK = 500


def _chunked_scalars(session, make, values):
    values = list(values)
    for i in range(0, len(values), _CHUNK):
        yield from session.scalars(make(values[i:i + _CHUNK]))


def _chunked_rows(session, make, values):
    values = list(values)
    rows = []
    for i in range(0, len(values), _CHUNK):
        rows.extend(session.execute(make(values[i:i + _CHUNK])).all())
    return rows


# ------------------------------------------------------------------------------------------ handovers

def handover(session: Session, actor: audit.Actor, scope: Scope, roster_key: str, *, handed_by: int, taken_by: int,
             summary: str = "", items: list[dict] | None = None, at: datetime | None = None) -> DutyHandover:
    """交接班: record a handover; the open items of the roster's previous handover are carried over (those the
    outgoing shift marks done in ``items`` by the same text are closed)."""
    roster = roster_of(session, roster_key, scope, write=True)
    at = at or datetime.now(UTC)
    people = {p.id: p for p in session.scalars(select(Person).where(Person.id.in_({handed_by, taken_by})))}
    problems = [f"unknown person {pid}" for pid in (handed_by, taken_by) if pid not in people]
    problems += [f"person {pid} ({people[pid].name}) is not of {roster.name}" for pid in (handed_by, taken_by)
                 if pid in people and not _person_belongs(people[pid], roster)]
    if handed_by == taken_by:
        problems.append("a handover is between two people")
    if problems:
        raise InvalidInput("the handover has problems; nothing was changed", {"problems": problems})
    previous = session.scalar(select(DutyHandover).where(DutyHandover.roster == roster.key).order_by(DutyHandover.at.desc(),
                                                                                                     DutyHandover.id.desc()).limit(1))
    given = []
    for n, item in enumerate(items or []):
        text = str(item.get("text") or "").strip()
        if not text:
            raise InvalidInput(f"item {n + 1}: text is empty")
        given.append({"text": text[:500], "done": bool(item.get("done")), "since": at.isoformat()})
    merged: list[dict] = []
    texts = {g["text"]: g for g in given}
    if previous is not None:
        for old in previous.items or []:
            if old.get("done"):
                continue
            if old["text"] in texts:
                merged.append({**old, "done": texts.pop(old["text"])["done"], "carried": True})
            else:
                merged.append({**old, "carried": True})
    merged += list(texts.values())
    h = DutyHandover(roster=roster.key, unit_path=roster.unit_path, handed_by=handed_by, taken_by=taken_by, at=at,
                     summary=summary[:5000], items=merged, carried_from=previous.id if previous else None, created_by=actor.name)
    session.add(h)
    session.flush()
    audit.record(session, actor, "duty.handover", "duty_handover", str(h.id), after={"roster": roster.key, "items": len(merged)},
                 unit_path=roster.unit_path)
    return h


def handovers(session: Session, scope: Scope, roster_key: str, limit: int = 50) -> list[dict]:
    roster = roster_of(session, roster_key, scope)
    rows = session.scalars(select(DutyHandover).where(DutyHandover.roster == roster.key)
                           .order_by(DutyHandover.at.desc(), DutyHandover.id.desc()).limit(limit)).all()
    ids = {r.handed_by for r in rows} | {r.taken_by for r in rows}
    names = dict(session.execute(select(Person.id, Person.name).where(Person.id.in_(ids))).all()) if ids else {}
    return [handover_snapshot(h, names) for h in rows]


def handover_snapshot(h: DutyHandover, names: dict[int, str] | None = None) -> dict:
    names = names or {}
    return {"id": h.id, "roster": h.roster, "at": h.at.isoformat(), "handed_by": h.handed_by, "handed_by_name": names.get(h.handed_by),
            "taken_by": h.taken_by, "taken_by_name": names.get(h.taken_by), "summary": h.summary, "items": h.items,
            "open_items": sum(1 for i in h.items if not i.get("done")), "carried_from": h.carried_from}


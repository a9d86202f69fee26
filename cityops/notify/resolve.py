"""Addresses → people (解析收件人): through the org tree (units, posts, titles, departments), the users' roles and
the duty roster.

An address names people relative to the message's unit (see policies/default.toml for the forms). ``resolve``
returns, for each address, the recipients it names (possibly none: the caller decides whether that is an error).

``duty:leader@…`` / ``duty:operator@…`` ask the duty roster (``cityops.duty.service.on_duty``, a declared dependency)
who is rostered in that role now; where it names nobody, the unit's post ``leader`` / ``operator`` answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core.errors import NotFound
from cityops.core.storage import storage_of
from cityops.duty.service import on_duty
from cityops.identity.models import User
from cityops.notify.catalogue import Catalogue
from cityops.org.models import Department, Person, Unit, person_departments


def rostered(session: Session, unit_code: str, role: str, at: datetime) -> list[int] | None:
    """The people the duty roster puts in ``role`` in ``unit_code`` at ``at``; None when the roster names nobody
    there (the unit's posts answer instead)."""
    try:
        people = on_duty(session, unit_code, at)
    except NotFound:
        return None
    ids = [o.person_id for o in people if o.role == role and o.rostered]
    return ids or None


@dataclass(frozen=True)
class Target:
    key: str  # person:<id> | user:<id>
    person_id: int | None
    user_id: int | None
    name: str
    unit_path: str
    phone: str | None = None
    email: str | None = None


def person_target(p: Person) -> Target:
    return Target(f"person:{p.id}", p.id, None, p.name, p.unit_path, p.phone, p.email)


def units_at(session: Session, unit: Unit, where: str) -> list[Unit]:
    """The units ``where`` names relative to ``unit``."""
    if where == "unit":
        return [unit]
    if where == "parent":
        parent = session.scalar(select(Unit).where(Unit.code == unit.parent_code)) if unit.parent_code else None
        return [parent] if parent is not None else []
    if where.isdigit():
        u = session.scalar(select(Unit).where(Unit.code == where))
        return [u] if u is not None else []
    codes = [c for c in unit.path.strip("/").split("/") if c]
    above = list(session.scalars(select(Unit).where(Unit.code.in_(codes), Unit.level == where)))
    if above:
        return above
    return list(session.scalars(select(Unit).where(Unit.path.startswith(unit.path, autoescape=True), Unit.level == where)
                                .order_by(Unit.code)))


def resolve(session: Session, catalogue: Catalogue, address: str, unit: Unit, at: datetime,
            _depth: int = 0) -> list[Target]:
    kind, _, rest = address.partition(":")
    if kind == "email":  # someone outside the org (a reporter): reached by e-mail only
        return [Target(address, None, None, rest, unit.path, None, rest)]
    if kind == "phone":  # … or by SMS
        return [Target(address, None, None, rest, unit.path, rest, None)]
    what, _, where = rest.partition("@")
    if kind == "person":
        p = session.get(Person, int(rest))
        return [person_target(p)] if p is not None else []
    if kind == "user":
        u = session.get(User, int(rest))
        if u is None or not u.active:
            return []
        if u.person_id is not None and (p := session.get(Person, u.person_id)) is not None:
            return [person_target(p)]
        return [Target(f"user:{u.id}", None, u.id, u.display_name, _user_path(session, u))]
    if kind == "department":
        dept = session.scalar(select(Department).where((Department.code == rest) | (Department.name == rest)))
        return _people(session, select(Person).join(person_departments, person_departments.c.person_id == Person.id)
                       .where(person_departments.c.department_id == dept.id)) if dept is not None else []
    if kind == "notify":
        if rest in catalogue.aliases and _depth < 3:
            out: list[Target] = []
            for a in catalogue.aliases[rest]:
                out += resolve(session, catalogue, a, unit, at, _depth + 1)
            return _unique(out)
        return resolve(session, catalogue, f"department:{rest}", unit, at, _depth + 1)
    targets = units_at(session, unit, where if kind != "unit" else rest)
    codes = [u.code for u in targets]
    if not codes:
        return []
    if kind == "unit":
        return _people(session, select(Person).where(Person.unit_code.in_(codes)))
    if kind == "post":
        return _people(session, select(Person).where(Person.unit_code.in_(codes), Person.post == what))
    if kind == "title":
        return _people(session, select(Person).where(Person.unit_code.in_(codes), Person.title == what))
    if kind == "role":
        out = []
        for u in session.scalars(select(User).where(User.role == what, User.active.is_(True)).order_by(User.id)):
            if set(u.scope_units or []) & set(codes):
                out += resolve(session, catalogue, f"user:{u.id}", unit, at, _depth + 1)
        return _unique(out)
    if kind == "duty":
        ids: list[int] = []
        fell_back = []
        for code in codes:
            people = rostered(session, code, what, at)
            if people is None:
                fell_back.append(code)
            else:
                ids += people
        out = _people(session, select(Person).where(Person.id.in_(ids))) if ids else []
        if fell_back:
            out += _people(session, select(Person).where(Person.unit_code.in_(fell_back), Person.post == what))
        return _unique(out)
    return []


def people_by_id(session: Session, ids: list[int]) -> dict[int, Target]:
    """``person:<id>`` for many ids at once, as columns (the ORM's Person loads its units and departments too: three
    queries per person when a directive names thousands)."""
    out: dict[int, Target] = {}
    ids = sorted(set(ids))
    if ids:  # the ids as one bound value: compiling thousands of placeholders cost more than the query
        for r in session.execute(select(Person.id, Person.name, Person.unit_path, Person.phone, Person.email)
                                 .where(storage_of(session).in_ids(Person.id, ids))):
            out[r.id] = Target(f"person:{r.id}", r.id, None, r.name, r.unit_path, r.phone, r.email)
    return out


def _people(session: Session, stmt) -> list[Target]:
    return [person_target(p) for p in session.scalars(stmt.order_by(Person.id))]


def _unique(targets: Iterable[Target]) -> list[Target]:
    seen, out = set(), []
    for t in targets:
        if t.key not in seen:
            seen.add(t.key)
            out.append(t)
    return out


def _user_path(session: Session, user: User) -> str:
    if user.scope_units:
        u = session.scalar(select(Unit).where(Unit.code == user.scope_units[0]))
        if u is not None:
            return u.path
    return "/"

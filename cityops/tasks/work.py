"""Tasks (任务): published down the unit tree, decomposed, progress reported and rolled up, overdue reminders and
escalation."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import Conflict, InvalidInput, NotFound
from cityops.core.types import utcnow
from cityops.identity.scope import Scope
from cityops.org import service as org
from cityops.org.models import Person, Unit
from cityops.tasks import links
from cityops.tasks.evacuation import totals
from cityops.tasks.incidents import _unit, log_step
from cityops.tasks.models import Incident, Task


def task_dict(t: Task) -> dict:
    now = utcnow()
    return {"id": t.id, "parent_id": t.parent_id, "incident_id": t.incident_id, "title": t.title, "goal": t.goal,
            "deadline": t.deadline.isoformat() if t.deadline else None, "status": t.status, "unit_code": t.unit_code,
            "unit_path": t.unit_path, "level": t.level, "assignee_role": t.assignee_role,
            "assignee_person_id": t.assignee_person_id, "assignee_name": t.assignee_name, "attachments": t.attachments,
            "source_kind": t.source_kind, "source_ref": t.source_ref,
            "source_link": links.case_link(t.source_ref) if t.source_kind == "case" else None,
            "action_key": t.action_key, "drill": t.drill, "progress_note": t.progress_note, "created_by": t.created_by,
            "created_at": t.created_at.isoformat(), "completed_at": t.completed_at.isoformat() if t.completed_at else None,
            "overdue": t.status == "open" and t.deadline is not None and t.deadline < now,
            "reminded_at": t.reminded_at.isoformat() if t.reminded_at else None,
            "escalated_at": t.escalated_at.isoformat() if t.escalated_at else None}


def _check_attachments(attachments: list) -> list[dict]:
    out = []
    for i, a in enumerate(attachments or []):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not isinstance(a.get("url"), str) or not a["name"]:
            raise InvalidInput(f"attachment {i} needs a name and a url")
        if not (a["url"].startswith(("http://", "https://", "/"))):
            raise InvalidInput(f"attachment {a['name']!r}: url must be http(s) or a path on this server")
        out.append({"name": a["name"][:200], "url": a["url"][:2000]})
    return out


def _person_in(session: Session, person_id: int, unit: Unit) -> Person:
    person = session.get(Person, person_id)
    if person is None or not (person.unit_path.startswith(unit.path) or any(u.path.startswith(unit.path) for u in person.units)):
        raise InvalidInput(f"person {person_id} does not work in {unit.name} ({unit.code})")
    return person


def publish_task(session: Session, actor: audit.Actor, scope: Scope, *, title: str, goal: str | None, deadline: datetime | None,
                 unit_code: str, target_units: list[str] | None = None, attachments: list | None = None,
                 assignee_person_id: int | None = None, source_kind: str | None = None, source_ref: str | None = None,
                 drill: bool = False, parent: Task | None = None) -> Task:
    """Publish a task owned by ``unit_code``; one sub-task per target unit (the next level down)."""
    if not title or not title.strip():
        raise InvalidInput("a task needs a title")
    now = utcnow()
    if deadline is not None:
        if deadline.tzinfo is None:
            raise InvalidInput("deadline needs a time zone (e.g. 2026-07-23T18:00:00+08:00)")
        if deadline <= now and parent is None:
            raise InvalidInput("the deadline is in the past")
        if parent is not None and parent.deadline is not None and deadline > parent.deadline:
            raise InvalidInput(f"a sub-task's deadline cannot be later than its parent's ({parent.deadline.isoformat()})")
    if source_kind not in (None, "case", "alarm", "plan"):
        raise InvalidInput(f"source_kind {source_kind!r} is not case, alarm or plan")
    if (source_kind is None) != (source_ref is None):
        raise InvalidInput("source_kind and source_ref go together")
    unit = _unit(session, unit_code)
    scope.require_covers(unit.path, f"unit {unit_code}")
    if parent is not None:
        if not unit.path.startswith(parent.unit_path) or (unit.path == parent.unit_path and assignee_person_id is None):
            raise InvalidInput(f"a sub-task goes to a unit below {parent.unit_code} (or to a person of it)")
    person = _person_in(session, assignee_person_id, unit) if assignee_person_id is not None else None
    task = Task(parent_id=parent.id if parent else None, incident_id=parent.incident_id if parent else None, title=title.strip(),
                goal=goal, deadline=deadline if deadline is not None else (parent.deadline if parent else None), status="open",
                unit_code=unit.code, unit_path=unit.path, level=unit.level, assignee_person_id=person.id if person else None,
                assignee_name=person.name if person else None, attachments=_check_attachments(attachments or []),
                source_kind=source_kind if parent is None else parent.source_kind,
                source_ref=source_ref if parent is None else parent.source_ref,
                drill=drill if parent is None else parent.drill, created_by=actor.name, created_at=now)
    session.add(task)
    session.flush()
    audit.record(session, actor, "task.publish", "task", str(task.id), after=task_dict(task), unit_path=unit.path)
    for code in target_units or []:
        publish_task(session, actor, scope, title=title, goal=goal, deadline=task.deadline, unit_code=code, parent=task)
    return task


def get_task(session: Session, scope: Scope, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None or not (scope.covers(task.unit_path) or _sees_as_ancestor(session, scope, task)):
        raise NotFound(f"task {task_id} not found")
    return task


def _sees_as_ancestor(session: Session, scope: Scope, task: Task) -> bool:
    """A unit sees a task above it when some descendant of that task lies in its scope (its own part of it)."""
    if not scope.sees(task.unit_path):
        return False
    return any(scope.covers(t.unit_path) for t in _descendants(session, task))


def _descendants(session: Session, task: Task) -> list[Task]:
    out, frontier = [], [task.id]
    while frontier:
        children = list(session.scalars(select(Task).where(Task.parent_id.in_(frontier))))
        out.extend(children)
        frontier = [c.id for c in children]
    return out


def decompose(session: Session, actor: audit.Actor, scope: Scope, task_id: int, items: list[dict]) -> list[Task]:
    """The level owning ``task_id`` splits it: sub-tasks for its sub-units or its own people."""
    parent = get_task(session, scope, task_id)
    scope.require_covers(parent.unit_path, f"task {task_id}")
    if parent.status != "open":
        raise Conflict(f"task {task_id} is {parent.status}; it can no longer be split")
    if not items:
        raise InvalidInput("no sub-tasks given")
    made = []
    for item in items:
        made.append(publish_task(session, actor, scope, title=item.get("title") or parent.title, goal=item.get("goal") or parent.goal,
                                 deadline=item.get("deadline"), unit_code=item["unit_code"], attachments=item.get("attachments"),
                                 assignee_person_id=item.get("assignee_person_id"), parent=parent))
    return made


def report_progress(session: Session, actor: audit.Actor, scope: Scope, task_id: int, *, status: str, note: str | None) -> Task:
    task = get_task(session, scope, task_id)
    scope.require_covers(task.unit_path, f"task {task_id}")
    if status not in ("open", "done", "cancelled"):
        raise InvalidInput(f"status {status!r} is not open, done or cancelled")
    if task.status != "open" and status != "open":
        raise Conflict(f"task {task_id} is already {task.status}")
    if status == "done":
        children = session.scalar(select(func.count(Task.id)).where(Task.parent_id == task.id, Task.status == "open"))
        if children:
            raise Conflict(f"task {task_id} still has {children} open sub-task(s); their progress rolls up to it")
    before = task_dict(task)
    task.status = status
    task.progress_note = note
    task.completed_at = utcnow() if status == "done" else None
    # A parent whose sub-tasks are all done is done too (reported upward).
    parent_id = task.parent_id
    session.flush()
    while parent_id is not None and status == "done":
        parent = session.get(Task, parent_id)
        if session.scalar(select(func.count(Task.id)).where(Task.parent_id == parent.id, Task.status == "open")):
            break
        if parent.status == "open":
            parent.status, parent.completed_at = "done", utcnow()
        parent_id = parent.parent_id
    audit.record(session, actor, "task.progress", "task", str(task.id), before=before, after=task_dict(task), unit_path=task.unit_path)
    if task.incident_id:
        incident = session.get(Incident, task.incident_id)
        log_step(session, incident, actor.name, "task.progress", f"任务「{task.title}」{ {'done': '完成', 'open': '重开', 'cancelled': '取消'}[status] }"
                 + (f":{note}" if note else ""), {"task_id": task.id, "status": status}, unit_path=task.unit_path)
    return task


def progress(session: Session, scope: Scope, task: Task) -> dict:
    """Rolled-up progress of a task: its leaf sub-tasks (in the caller's scope) done, %, overdue; an evacuation
    action counts its households instead."""
    now = utcnow()
    if task.action_key == "evacuate" and task.incident_id:
        t = totals(session, scope, task.incident_id)["district"]
        return {"total": t["households"], "done": t["safe_households"], "percent": t["percent_safe"], "overdue":
                t["remaining_households"] if task.deadline and task.deadline < now else 0, "unit": "households"}
    nodes = [task, *_descendants(session, task)]
    parents = {n.parent_id for n in nodes}
    leaves = [n for n in nodes if n.id not in parents and scope.covers(n.unit_path) and n.status != "cancelled"]
    done = sum(1 for n in leaves if n.status == "done")
    overdue = sum(1 for n in leaves if n.status == "open" and n.deadline is not None and n.deadline < now)
    return {"total": len(leaves), "done": done, "percent": round(100.0 * done / len(leaves), 1) if leaves else 0.0,
            "overdue": overdue, "unit": "tasks"}


def task_tree(session: Session, scope: Scope, task_id: int) -> dict:
    task = get_task(session, scope, task_id)
    data = task_dict(task)
    data["unit_name"] = org.names_of(session, [task.unit_code])[0].get(task.unit_code)
    data["progress"] = progress(session, scope, task)
    data["children"] = []
    for child in session.scalars(select(Task).where(Task.parent_id == task.id).order_by(Task.id)):
        if scope.covers(child.unit_path) or _sees_as_ancestor(session, scope, child):
            data["children"].append(task_tree(session, scope, child.id))
    return data


def list_tasks(session: Session, scope: Scope, *, incident_id: int | None = None, status: str | None = None,
               overdue: bool = False, source_ref: str | None = None, include_drills: bool = True, limit: int = 200) -> list[dict]:
    stmt = select(Task).where(scope.covers_clause(Task.unit_path))
    if incident_id is not None:
        stmt = stmt.where(Task.incident_id == incident_id)
    if status:
        stmt = stmt.where(Task.status == status)
    if overdue:
        stmt = stmt.where(Task.status == "open", Task.deadline < utcnow())
    if source_ref:
        stmt = stmt.where(Task.source_ref == source_ref)
    if not include_drills:
        stmt = stmt.where(Task.drill.is_(False))
    out = []
    for t in session.scalars(stmt.order_by(Task.id).limit(limit)):
        d = task_dict(t)
        d["progress"] = progress(session, scope, t)
        out.append(d)
    units, _ = org.names_of(session, [d["unit_code"] for d in out])
    for d in out:
        d["unit_name"] = units.get(d["unit_code"])
    return out


def check_overdue(session: Session, actor: audit.Actor, scope: Scope, *, now: datetime | None = None,
                  escalate_after: timedelta = timedelta(minutes=30)) -> dict:
    """Remind the assignees of overdue open tasks (once), and escalate to the level above those still open
    ``escalate_after`` past the deadline (once). Returns what was done."""
    now = now or utcnow()
    reminded, escalated = [], []
    stmt = select(Task).where(Task.status == "open", Task.deadline < now, scope.covers_clause(Task.unit_path)).order_by(Task.id)
    for task in session.scalars(stmt):
        if task.reminded_at is None:
            task.reminded_at = now
            reminded.append(task.id)
            audit.record(session, actor, "task.remind", "task", str(task.id), after={"deadline": task.deadline.isoformat()},
                         unit_path=task.unit_path)
            if task.incident_id:
                log_step(session, session.get(Incident, task.incident_id), actor.name, "task.reminder",
                         f"催办:任务「{task.title}」已超期", {"task_id": task.id}, unit_path=task.unit_path)
        if task.escalated_at is None and now - task.deadline >= escalate_after:
            task.escalated_at = now
            unit = session.scalar(select(Unit).where(Unit.code == task.unit_code))
            above = unit.parent_code if unit is not None else None
            escalated.append({"task_id": task.id, "to_unit": above})
            audit.record(session, actor, "task.escalate", "task", str(task.id), after={"to_unit": above}, unit_path=task.unit_path)
            if task.incident_id:
                log_step(session, session.get(Incident, task.incident_id), actor.name, "task.escalated",
                         f"督办:任务「{task.title}」超期未完成,已报上级", {"task_id": task.id, "to_unit": above},
                         unit_path=task.unit_path)
    return {"reminded": reminded, "escalated": escalated, "at": now.isoformat()}

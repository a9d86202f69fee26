"""The case workflow (数字城管 7 steps + side states) as an explicit state machine.

Steps: 信息收集 (report) → 受理/立案 (accept, file) → 任务派遣 (dispatch) → 任务处理 (start) → 处理反馈 (feedback)
→ 核查结案 (close) → 综合评价 (evaluation, computed from the log). Side states: 回退 (return), 延期
(request/approve/reject extension), 挂账 (backlog/resume), 返工 (rework), 作废 (void, merge), and the
orthogonal 督办 flag (supervise). Every action is one immutable ``Transition``; ``project`` derives the
case's state and step timestamps from the log alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


def _dt(value):
    """Deadlines travel in the log's JSON as ISO 8601 text."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value

STATES = {
    "reported": ("待受理", "Reported"),
    "accepted": ("已受理", "Accepted"),
    "filed": ("已立案", "Filed"),
    "dispatched": ("已派遣", "Dispatched"),
    "returned": ("回退", "Returned"),
    "in_handling": ("处置中", "In handling"),
    "extension_requested": ("延期申请", "Extension requested"),
    "backlogged": ("挂账", "Backlogged"),
    "handled": ("已反馈", "Handled"),
    "rework": ("返工", "Rework"),
    "closed": ("已结案", "Closed"),
    "void": ("作废", "Void"),
}
#: What the public is told of a case's progress (Open311 status_notes): the step of the workflow (domain.md
#: section 3.2), never the internal side states (回退, 延期申请, 挂账, 返工) or anyone's notes.
PUBLIC_STEP = {"reported": "信息收集", "accepted": "案卷建立", "filed": "案卷建立", "dispatched": "任务派遣",
               "returned": "任务派遣", "in_handling": "任务处理", "extension_requested": "任务处理",
               "backlogged": "任务处理", "rework": "任务处理", "handled": "处理反馈", "closed": "核查结案",
               "void": "作废"}
TERMINAL = frozenset({"closed", "void"})
ACTIVE = tuple(s for s in STATES if s not in TERMINAL)
#: States whose deadline clock runs (挂账 pauses it; before filing there is no deadline).
CLOCK_RUNNING = ("filed", "dispatched", "returned", "in_handling", "extension_requested", "handled", "rework")


@dataclass(frozen=True)
class Action:
    name: str
    zh: str
    sources: tuple[str, ...]
    #: None: the state does not change (督办, escalation, notes).
    target: str | None
    #: Permission a person needs; None: system only (sweeps, hooks).
    permission: str | None
    note_required: bool = False


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("accept", "受理", ("reported",), "accepted", "events.intake"),
    Action("file", "立案", ("accepted",), "filed", "events.file"),
    Action("void", "作废", ("reported", "accepted"), "void", "events.file", note_required=True),
    Action("merge", "合并", ("reported", "accepted", "filed"), "void", "events.intake"),
    Action("dispatch", "派遣", ("filed", "returned"), "dispatched", "events.dispatch"),
    Action("return", "回退", ("dispatched",), "returned", "events.handle", note_required=True),
    Action("start", "开始处置", ("dispatched", "rework"), "in_handling", "events.handle"),
    Action("request_extension", "申请延期", ("in_handling",), "extension_requested", "events.handle", note_required=True),
    Action("approve_extension", "批准延期", ("extension_requested",), "in_handling", "events.approve"),
    Action("reject_extension", "驳回延期", ("extension_requested",), "in_handling", "events.approve", note_required=True),
    Action("backlog", "挂账", ("in_handling",), "backlogged", "events.approve", note_required=True),
    Action("resume", "恢复处置", ("backlogged",), "in_handling", "events.approve"),
    Action("feedback", "处理反馈", ("in_handling",), "handled", "events.handle"),
    Action("close", "核查结案", ("handled",), "closed", "events.verify"),
    Action("rework", "返工", ("handled",), "rework", "events.verify", note_required=True),
    Action("supervise", "督办", ACTIVE, None, "events.supervise", note_required=True),
    Action("comment", "备注", ACTIVE, None, "events.read", note_required=True),
    Action("merge_children", "合并子案卷", ACTIVE, None, None),
    Action("escalate", "超期升级", ACTIVE, None, None),
    Action("due_soon", "即将超期", ACTIVE, None, None),
    Action("rate", "评价", ("closed",), None, None),
)}
#: Actions a person may take through the API (the rest are taken by the system).
USER_ACTIONS = tuple(name for name, a in ACTIONS.items() if a.permission)


def allowed_actions(state: str, may=lambda permission: True) -> list[str]:
    """User actions allowed in ``state`` (and, with ``may``, for a principal's permissions)."""
    return [name for name in USER_ACTIONS if state in ACTIONS[name].sources and may(ACTIONS[name].permission)]


def next_state(state: str | None, action: str) -> str:
    """The state after ``action``; raises KeyError/ValueError for an unknown or illegal action."""
    if action == "report":
        if state is not None:
            raise ValueError("a case is reported once")
        return "reported"
    spec = ACTIONS[action]
    if state not in spec.sources:
        raise ValueError(f"{action} is not allowed in state {state}")
    return spec.target or state


def project(transitions) -> dict:
    """The case fields that follow from its log (transitions in ``seq`` order, objects or dicts with
    action, to_state, at, actor, data). Used to build the projection and to check it."""
    out = {"state": None, "accepted_at": None, "filed_at": None, "filed_by": None, "dispatched_at": None,
           "dispatched_by": None, "dispatch_due_at": None, "handled_at": None, "closed_at": None, "voided_at": None,
           "deadline_at": None, "paused_remaining_s": None, "returned_count": 0, "rework_count": 0,
           "extension_count": 0, "supervision_count": 0, "escalation_level": 0, "escalated_to": None,
           "due_soon_warned": 0, "merged_into": None, "department_code": None, "assigned_unit_code": None,
           "rating": None, "seq": 0}
    get = (lambda t, k: t[k]) if transitions and isinstance(transitions[0], dict) else getattr
    for t in transitions:
        action, at, data = get(t, "action"), get(t, "at"), get(t, "data") or {}
        out["state"] = get(t, "to_state")
        out["seq"] = get(t, "seq")
        if action == "accept":
            out["accepted_at"] = at
        elif action == "file":
            out["filed_at"], out["filed_by"] = at, get(t, "actor")
            out["deadline_at"], out["dispatch_due_at"] = _dt(data.get("deadline_at")), _dt(data.get("dispatch_due_at"))
        elif action == "dispatch":
            if out["dispatched_at"] is None:
                out["dispatched_at"], out["dispatched_by"] = at, get(t, "actor")
            out["department_code"], out["assigned_unit_code"] = data.get("department_code"), data.get("unit_code")
        elif action == "return":
            out["returned_count"] += 1
        elif action == "feedback":
            out["handled_at"] = at
        elif action == "close":
            out["closed_at"] = at
        elif action in ("void", "merge"):
            out["voided_at"] = at
            out["merged_into"] = data.get("merged_into")
        elif action == "rework":
            out["rework_count"] += 1
        elif action == "approve_extension":
            out["extension_count"] += 1
            out["deadline_at"] = _dt(data.get("deadline_at"))
        elif action == "backlog":
            out["paused_remaining_s"], out["deadline_at"] = data.get("remaining_s"), None
        elif action == "resume":
            out["paused_remaining_s"], out["deadline_at"] = None, _dt(data.get("deadline_at"))
        elif action == "supervise":
            out["supervision_count"] += 1
        elif action == "escalate":
            out["escalation_level"], out["escalated_to"] = data.get("level"), data.get("unit_code")
        elif action == "due_soon":
            out["due_soon_warned"] = 1
        elif action == "rate":
            out["rating"] = data.get("rating")
    return out

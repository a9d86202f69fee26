"""Notifications' own bus consumer: the live inbox of every worker and the dispatcher's wake-up (broadcast)."""

from __future__ import annotations

from cityops.core import ladder
from cityops.core.bus import Envelope


def inbox_stream(hub, wake):
    """``notification.queued`` / ``notification.changed`` → this worker's inbox streams; a queued message also
    wakes the dispatcher (which works only in the lease holder)."""

    def handler(env: Envelope) -> None:
        hub.publish(env)
        if env.name == "notification.queued":
            wake()

    return handler


# ---------------------------------------------------------------------- every capability speaks (durable)
# Each handler runs in the bus consumer's transaction (durable subscriptions in cityops/wiring.py) and queues its
# messages with the event id's dedup key, so a redelivered event sends nothing twice. Addresses that name nobody
# go on the message's timeline (strict=False) rather than failing the consumer.

#: A task's assignee role → who that is, relative to the task's unit.
ROLE_ADDRESS = {"grid_worker": "post:grid_worker@grid", "village_cadre": "post:village_cadre@village",
                "township_operator": "duty:operator@township", "district_operator": "duty:operator@district"}


def warning_level(session, env: Envelope) -> int | None:
    """``warning.level_changed`` up to yellow or above → the risk point's own people, the village cadre, the grid
    workers of its area, the township's operator on duty (orange: also its leader on duty); red escalates by policy
    (policies/default.toml red_warning: the township's leader on duty, then the district's)."""
    from cityops.notify.service import Message, send

    p = env.payload
    if ladder.RANK.get(p.level, 0) < ladder.RANK["yellow"] or ladder.RANK.get(p.level, 0) <= ladder.RANK.get(p.previous_level, 0):
        return None
    to = ["unit:unit", "post:village_cadre@village", "post:grid_worker@grid"]
    if p.level == "orange":
        to += ["duty:leader@township", "duty:operator@township"]
    elif p.level == "red":  # the township's leader on duty comes by the red-warning policy if nobody answers first
        to += ["duty:operator@township"]
    reasons = "；".join(p.reasons[:5])
    return send(session, Message(
        kind=f"warning.{p.level}", severity=p.level, title=f"{p.risk_point_name} {ladder.ZH[p.level]}色预警",
        body=f"{p.risk_point_name}（{p.hazard_type}）预警升至{ladder.ZH[p.level]}色。{reasons}".strip(),
        subject_kind="warning", subject_id=str(p.warning_id), link=f"/warning?risk_point={p.risk_point_code}",
        unit_code=p.unit_code, to=to, dedup_key=f"warning:{p.warning_id}",
        data={"risk_point_code": p.risk_point_code, "level": p.level, "event": env.id}), actor="system:warning", strict=False)


def plan_activated(session, env: Envelope) -> list[int]:
    """``plan.activated`` → the plan level's notification list, and each new task's assignees."""
    from cityops.notify.service import Message, send

    p = env.payload
    ids = []
    drill = "【演练】" if p.drill else ""
    roman = {1: "I", 2: "II", 3: "III", 4: "IV"}.get(p.response_level, str(p.response_level))
    if p.notify:
        ids.append(send(session, Message(
            kind="plan.activated", severity="red" if p.response_level <= 2 else "orange",
            title=f"{drill}{p.plan_name} {roman}级响应启动：{p.title}",
            body=f"{p.title}：{p.plan_name}{roman}级响应已启动，请按预案履职并确认收到。",
            subject_kind="incident", subject_id=str(p.incident_id), link=f"/incidents/{p.incident_id}",
            unit_code=p.unit_code, to=[f"notify:{n}" for n in p.notify], policy=None if not p.drill else "",
            dedup_key=f"plan:{p.incident_id}:{p.response_level}", data={"event": env.id}),
            actor="system:tasks", strict=False))
    for t in p.tasks:
        address = ROLE_ADDRESS.get(t.get("role") or "")
        if not address:
            continue
        ids.append(send(session, Message(
            kind="task.assigned", severity="info", title=f"{drill}新任务：{t['title']}",
            body=f"{p.title}：{t['title']}，完成时限 {t['deadline'][:16].replace('T', ' ')}",
            subject_kind="task", subject_id=str(t["id"]), link=f"/incidents/{p.incident_id}",
            unit_code=t["unit_code"], to=[address], policy="", dedup_key=f"task:{t['id']}", data={"event": env.id}),
            actor="system:tasks", strict=False))
    return ids


def case_changed(session, env: Envelope) -> int | None:
    """``case.changed``: dispatched → the handling department's or unit's people; overdue-escalated → the unit it
    went to, escalating by policy; closed → the reporter (e-mail or SMS), who may rate it. The case's outbox
    notices of the change are marked delivered (handed to the notification service)."""
    from sqlalchemy import update as sql_update

    from cityops.core.types import utcnow
    from cityops.notify.service import Message, send

    p = env.payload
    mid = None
    if p.action == "dispatch":
        to = [f"department:{p.department_code}"] if p.department_code else [f"unit:{p.unit_code}"] if p.unit_code else []
        if to:
            mid = send(session, Message(
                kind="case.dispatched", severity="info", title=f"新派遣案卷 {p.number}：{p.title}",
                body=f"案卷 {p.number}（{p.title}）已派遣给你处置" + (f"，处置时限 {p.deadline_at[:16].replace('T', ' ')}" if p.deadline_at else ""),
                subject_kind="case", subject_id=str(p.case_id), link=f"/events/cases/{p.case_id}",
                unit_code=p.unit_code or _unit_of(p.unit_path), to=to, policy="",
                dedup_key=f"case:{p.case_id}:dispatch:{env.id}", data={"event": env.id}), actor="system:events", strict=False)
    elif p.action == "escalate" and p.unit_code:
        mid = send(session, Message(
            kind="case.overdue", severity="orange", title=f"案卷超期升级 {p.number}：{p.title}",
            body=f"案卷 {p.number} 已超期，升级至{p.escalation_level or '上一级'}督办。",
            subject_kind="case", subject_id=str(p.case_id), link=f"/events/cases/{p.case_id}",
            unit_code=p.unit_code, to=["post:leader@unit", "post:operator@unit"],
            dedup_key=f"case:{p.case_id}:escalate:{env.id}", data={"event": env.id}), actor="system:events", strict=False)
    elif p.action == "close" and (p.reporter_email or p.reporter_phone):
        to = [f"email:{p.reporter_email}"] if p.reporter_email else [f"phone:{p.reporter_phone}"]
        mid = send(session, Message(
            kind="case.closed", severity="info", title=f"您反映的问题已办结（{p.number}）",
            body=f"您反映的问题（案卷 {p.number}：{p.title}）已处理结案。欢迎对办理结果评价（1–5 分），请打开本消息的链接。",
            subject_kind="case", subject_id=str(p.case_id),
            link=(f"/open311/v2/requests/{p.number}/rating.json?token={p.rating_token}" if p.rating_token
                  else f"/open311/v2/requests/{p.number}.json"),
            unit_code=_unit_of(p.unit_path), to=to, policy="",
            dedup_key=f"case:{p.case_id}:close", data={"event": env.id}), actor="system:events", strict=False)
    if p.outbox_ids:
        from cityops.events.models import Outbox

        session.execute(sql_update(Outbox).where(Outbox.id.in_(p.outbox_ids), Outbox.delivered_at.is_(None))
                        .values(delivered_at=utcnow()))
    return mid


def _unit_of(path: str) -> str:
    return [c for c in path.split("/") if c][-1]


def indicator_breached(session, env: Envelope) -> int:
    """``indicator.breached`` → the indicator's owner (a department), escalating by policy."""
    from cityops.notify.service import Message, send

    p = env.payload
    return send(session, Message(
        kind="indicator.breach", severity="red", title=f"指标越红线：{p.indicator_name}",
        body=f"{p.indicator_name} 在本单元进入红色区间（{p.value:g}{p.unit or ''}，{p.period}）。",
        subject_kind="indicator", subject_id=p.indicator_code, link=f"/indicators?code={p.indicator_code}&unit={p.unit_code}",
        unit_code=p.unit_code, to=[f"notify:{p.owner}"], dedup_key=f"breach:{p.breach_id}", data={"event": env.id}),
        actor="system:indicators", strict=False)

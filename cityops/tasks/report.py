"""The after-action report (总结报告) of an incident: timeline, figures, zone versions, tasks, and who did
what and when. Rendered as a standalone HTML document with Jinja2 (autoescaped: every value from the
database is escaped), so it prints and archives without the app."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.identity.scope import Scope
from cityops.tasks import evacuation, incidents, work, zones
from cityops.tasks.catalogue import ROMAN, catalogue
from cityops.tasks.models import EvacuationEvent, RiskZone, Task

_ENV = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=select_autoescape(["html"]))


def report_data(session: Session, scope: Scope, incident_id: int) -> dict:
    incident = incidents.get_incident(session, scope, incident_id)
    totals = evacuation.totals(session, scope, incident.id)
    zone_views = [zones.zone_dict(z, geometry=False) for z in
             session.scalars(select(RiskZone).where(RiskZone.incident_id == incident.id).order_by(RiskZone.version))]
    who = defaultdict(lambda: {"changes": 0, "first": None, "last": None, "to": defaultdict(int)})
    ids = {e["id"] for e in evacuation.list_evacuations(session, scope, incident.id, limit=10**6)["items"]}
    stmt = (select(EvacuationEvent).where(EvacuationEvent.incident_id == incident.id).order_by(EvacuationEvent.id))
    for e in session.scalars(stmt):
        if e.evacuation_id not in ids:
            continue
        w = who[e.actor]
        w["changes"] += 1
        w["first"] = w["first"] or e.at
        w["last"] = e.at
        w["to"][e.to_state] += 1
    tasks = [work.task_dict(t) for t in session.scalars(select(Task).where(Task.incident_id == incident.id).order_by(Task.id))
             if scope.covers(t.unit_path) or scope.sees(t.unit_path)]
    return {"incident": incidents.incident_dict(incident), "totals": totals, "zones": zone_views,
            "timeline": incidents.timeline(session, scope, incident.id, decisions_only=True),
            "who": [{"actor": k, **v, "to": dict(v["to"])} for k, v in sorted(who.items())], "tasks": tasks,
            "states": {k: v.zh for k, v in catalogue().evacuation.states.items()}, "roman": ROMAN,
            "changes": session.scalar(select(func.count(EvacuationEvent.id)).where(EvacuationEvent.incident_id == incident.id))}


def render_html(session: Session, scope: Scope, incident_id: int) -> str:
    return _ENV.get_template("report.html").render(**report_data(session, scope, incident_id))

"""Platform metrics of the housing registry (for the indicators capability): buildings, households, residents
and vulnerable residents by JGJ 125 safety grade (the registry as it stands)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.housing.models import Building
from cityops.core.metrics import Metric, Param, Window

GRADES = ("A", "B", "C", "D")
MEASURES = ("buildings", "households", "residents", "vulnerable")


def _buildings(session: Session, window: Window, param_sets: list[dict]):
    rows = session.execute(
        select(Building.unit_path, Building.safety_grade, func.count(), func.sum(Building.households),
               func.sum(Building.residents), func.sum(Building.vulnerable))
        .group_by(Building.unit_path, Building.safety_grade)).all()
    out = []
    for params in param_sets:
        grades, column = params.get("grades"), MEASURES.index(params.get("measure", "buildings"))
        acc: dict[str, float] = defaultdict(float)
        for path, grade, *values in rows:
            if grades is None or grade in grades:
                acc[path] += float(values[column] or 0)
        out.append({p: (n, None) for p, n in acc.items() if n})
    return out


METRICS = [
    Metric("housing.buildings", "房屋(按安全等级)", "Buildings by safety grade", _buildings,
           {"grades": Param(kind="list", choices=GRADES), "measure": Param(choices=MEASURES, default="buildings")}),
]

"""Platform metrics of early warning (for the indicators capability): risk points by warning level, as of a time
(the level in force then: the last level change issued by then)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from cityops.core import ladder
from cityops.core.metrics import Metric, Param, Window
from cityops.warning.tables import RiskPoint, RiskWarning

LEVELS, RANK = ladder.LEVELS, ladder.RANK


def _risk_points(session: Session, window: Window, param_sets: list[dict]):
    last = (select(RiskWarning.risk_point_id, func.max(RiskWarning.id).label("wid"))
            .where(RiskWarning.issued_at < window.end).group_by(RiskWarning.risk_point_id).subquery())
    warning = aliased(RiskWarning)
    level = func.coalesce(warning.level, "none")
    rows = session.execute(
        select(RiskPoint.unit_path, RiskPoint.hazard_type, level, func.count())
        .outerjoin(last, last.c.risk_point_id == RiskPoint.id)
        .outerjoin(warning, warning.id == last.c.wid)
        .group_by(RiskPoint.unit_path, RiskPoint.hazard_type, level)).all()
    out = []
    for params in param_sets:
        floor, hazard = RANK[params.get("min_level", "none")], params.get("hazard_type")
        acc: dict[str, float] = defaultdict(float)
        for path, hazard_type, lv, n in rows:
            if RANK.get(lv, 0) >= floor and (hazard is None or hazard_type == hazard):
                acc[path] += n
        out.append({p: (n, None) for p, n in acc.items()})
    return out


METRICS = [
    Metric("warning.risk_points", "风险点数(按预警等级)", "Risk points by warning level", _risk_points,
           {"min_level": Param(choices=LEVELS, default="none"), "hazard_type": Param()},
           moved_by=("warning.level_changed",)),
]

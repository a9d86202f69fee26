"""Platform metrics of the event center (for the indicators capability): counts of cases by class, source and
state, and the GB/T 30428.4 evaluation rates (the same definitions as ``evaluation``, per grid)."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from cityops.events import catalogue
from cityops.events.evaluation import per_case_counts
from cityops.events.models import Case
from cityops.identity.scope import Scope
from cityops.core.metrics import Metric, Param, Window

COUNTS = ("reported", "filed", "closed", "open", "overdue")


def _cases(session: Session, window: Window, param_sets: list[dict]):
    """One grouped query for every parameter set: counts per (unit path, class, source), then each set sums its
    classes and sources. Open/overdue are as of the window's end: reported by then, not yet closed or voided."""
    start, end = window.start, window.end
    in_window = lambda col: and_(col >= start, col < end)  # noqa: E731
    open_at = and_(Case.reported_at < end, or_(Case.closed_at.is_(None), Case.closed_at >= end),
                   or_(Case.voided_at.is_(None), Case.voided_at >= end), Case.merged_into.is_(None))
    count = lambda cond: func.count().filter(cond)  # noqa: E731
    stmt = (select(Case.unit_path, Case.class_code, Case.source,
                   count(in_window(Case.reported_at)).label("reported"), count(in_window(Case.filed_at)).label("filed"),
                   count(in_window(Case.closed_at)).label("closed"), count(open_at).label("open"),
                   count(and_(open_at, Case.deadline_at < end)).label("overdue"))
            .where(Case.reported_at < end)
            .group_by(Case.unit_path, Case.class_code, Case.source))
    rows = session.execute(stmt).all()
    out = []
    for params in param_sets:
        measure, prefix, source = params.get("count", "open"), params.get("class_prefix", ""), params.get("source")
        acc: dict[str, float] = defaultdict(float)
        for r in rows:
            if r.class_code.startswith(prefix) and (source is None or r.source == source):
                acc[r.unit_path] += getattr(r, measure)
        out.append({path: (n, None) for path, n in acc.items() if n})
    return out


#: Evaluation measures: numerator and denominator columns of ``evaluation.per_case_counts`` (domain.md §5).
RATES = {
    "closure_rate": ("closed", "due"), "ontime_closure_rate": ("closed_on_time", "due"),
    "rework_rate": ("reworks", "handled"), "ontime_dispatch_rate": ("dispatched_on_time", "dispatched"),
    "accurate_dispatch_rate": ("dispatched_ok", "dispatched"), "valid_report_rate": ("valid_reports", "reported"),
    "public_report_rate": ("public_filed", "filed"), "accurate_filing_rate": ("filed_ok", "filed"),
}


def _evaluation(session: Session, window: Window, param_sets: list[dict]):
    counts = per_case_counts(session, Scope(all_units=True), window.start, window.end, "grid")
    out = []
    for params in param_sets:
        num, den = RATES[params["measure"]]
        result = {}
        for grid, c in counts.items():
            c = {**c, "dispatched_ok": c["dispatched"] - c["dispatch_returned"], "filed_ok": c["filed"] - c["voided"]}
            if c[den]:
                result[grid] = (float(c[num]), float(c[den]))
        out.append(result)
    return out


METRICS = [
    Metric("events.cases", "案件数", "Cases", _cases,
           {"count": Param(choices=COUNTS, default="open"), "class_prefix": Param(),
            "source": Param(choices=catalogue.SOURCES)}, moved_by=("case.changed",)),
    Metric("events.evaluation", "事件处置评价率", "Event handling evaluation rate", _evaluation,
           {"measure": Param(choices=tuple(RATES), required=True)}, ratio=True),
]

"""Evaluation (绩效评价) for areas, departments and posts over a period, from the transition log.

The counts come from the case projection (``event_cases``), which is rebuilt from the log by
``workflow.project`` and kept in the same transaction as every log entry: whole calendar months from its
monthly rollups (``rollup``, kept with every change of a case), partial months with one aggregate query over
the cases (``per_case_counts``, also the reference the rollups are tested against: ``per_case=True``).

Definitions (domain.md section 5; pinned by tests with hand-computed examples), period P = [start, end):

- 立案数 filed: cases filed in P. 公众举报立案数: those from public channels (public, open311, hotline).
- 应结案数 due: cases whose deadline in force falls in P, closed or not (挂账 and 作废 excluded) — open-but-
  overdue cases count in the denominator (denominator rule 5.1). 结案数: due and closed. 按期结案数: due
  and closed at or before the deadline.
- 结案率 = 结案数 / 应结案数; 按期结案率 = 按期结案数 / 应结案数.
- 返工率 = 返工数 / 处置数, over cases fed back in P (返工数 = their 返工 entries).
- 按时派遣率 = dispatched by the dispatch deadline / dispatched in P; 准确派遣率 = (派遣数 − cases
  returned as mis-dispatched) / 派遣数.
- 有效上报率 = reports in P that were filed / reports in P.
- 监督举报率 (public-report rate, lower is better) = 公众举报立案数 / 立案数; the supervisor's 漏报率 is the same
  ratio over the supervisor's grids, so it is reported as missed_report_rate for areas.
- 准确立案率 = (立案数 − 作废数) / 立案数.
- composite (area) = Σ weight × score, scores: (1 − 监督举报率)·100, 立案数 band score, 结案率·100, 按期结案率·100.
"""

from __future__ import annotations

import io
from datetime import datetime

from sqlalchemy import and_, func, select, union_all
from sqlalchemy.orm import Session

from cityops.core import csvexport
from cityops.core.errors import InvalidInput
from cityops.events import catalogue, rollup
from cityops.events.models import Case
from cityops.identity.scope import Scope

PUBLIC_SOURCES = rollup.PUBLIC_SOURCES
GROUPS = ("district", "township", "village", "grid", "department", "reporter", "filer", "dispatcher")
COLUMNS = ("key", "reported", "valid_reports", "filed", "public_filed", "voided", "due", "closed", "closed_on_time",
           "handled", "reworks", "dispatched", "dispatched_on_time", "dispatch_returned", "supervised",
           "closure_rate", "ontime_closure_rate", "rework_rate", "ontime_dispatch_rate", "accurate_dispatch_rate",
           "valid_report_rate", "public_report_rate", "missed_report_rate", "accurate_filing_rate", "composite")


def _group_expr(group: str):
    return {"district": func.substr(Case.grid_code, 1, 6), "township": func.substr(Case.grid_code, 1, 9),
            "village": func.substr(Case.grid_code, 1, 12), "grid": Case.grid_code,
            "department": func.coalesce(Case.department_code, Case.assigned_unit_code),
            "reporter": Case.reported_by, "filer": Case.filed_by, "dispatcher": Case.dispatched_by}[group]


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def filed_band_score(filed: int) -> float:
    settings = catalogue.settings()
    for bound, score in settings.filed_bands:
        if filed < bound:
            return score
    return settings.filed_band_rest


def composite(row: dict) -> float | None:
    """Area composite with the configured weights; None when a needed rate is undefined."""
    w = catalogue.settings().weights
    scores = {"public_report_rate": None if row["public_report_rate"] is None else (1 - row["public_report_rate"]) * 100,
              "filed_count": filed_band_score(row["filed"]),
              "closure_rate": None if row["closure_rate"] is None else row["closure_rate"] * 100,
              "ontime_closure_rate": None if row["ontime_closure_rate"] is None else row["ontime_closure_rate"] * 100}
    if any(scores[k] is None for k in w):
        # No filed cases: nothing to hold against the area on the report rate; no due cases: full marks.
        scores = {k: (100.0 if v is None else v) for k, v in scores.items()}
    return round(sum(w[k] * scores[k] for k in w), 4)


def evaluate(session: Session, scope: Scope, start: datetime, end: datetime, group: str = "township",
             *, per_case: bool = False) -> list[dict]:
    """The evaluation rows of ``group`` over [start, end), sorted by key.

    On SQLite, whole calendar months come from the monthly rollups (``rollup``); the partial months at either
    end, scopes the rollups cannot answer exactly, and PostgreSQL (fast enough per case) use the per-case query. ``per_case=True`` computes everything
    with the per-case query: the reference the rollups are tested against."""
    if group not in GROUPS:
        raise InvalidInput(f"unknown group {group!r}; use one of {', '.join(GROUPS)}", {"field": "group"})
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput("start and end need a time zone", {"field": "start/end"})
    if end <= start:
        raise InvalidInput("end must be after start", {"field": "end"})
    if (end - start).days > 3700:
        raise InvalidInput("the period may span at most ten years", {"field": "end"})
    fast = not per_case and rollup.enabled(session) and rollup.scope_fits(scope, group)
    months = rollup.full_months(start, end) if fast else None
    if months is None:
        totals = per_case_counts(session, scope, start, end, group)
    else:
        keys, first, last = months
        totals = rollup.counts(session, scope, keys, group)
        for a, b in ((start, first), (last, end)):
            if a < b:
                for key, counts in per_case_counts(session, scope, a, b, group, narrow=True).items():
                    acc = totals.setdefault(key, dict.fromkeys(rollup.METRICS, 0))
                    for m, n in counts.items():
                        acc[m] += n
    out = []
    for key in sorted(totals):
        row = {"key": key, **totals[key]}
        if not any(totals[key].values()):
            continue  # a rollup bucket whose cases all moved away, as the per-case query would not list it
        row.update(closure_rate=_ratio(row["closed"], row["due"]), ontime_closure_rate=_ratio(row["closed_on_time"], row["due"]),
                   rework_rate=_ratio(row["reworks"], row["handled"]),
                   ontime_dispatch_rate=_ratio(row["dispatched_on_time"], row["dispatched"]),
                   accurate_dispatch_rate=_ratio(row["dispatched"] - row["dispatch_returned"], row["dispatched"]),
                   valid_report_rate=_ratio(row["valid_reports"], row["reported"]),
                   public_report_rate=_ratio(row["public_filed"], row["filed"]),
                   accurate_filing_rate=_ratio(row["filed"] - row["voided"], row["filed"]))
        row["missed_report_rate"] = row["public_report_rate"]
        row["composite"] = composite(row) if group in ("district", "township", "village", "grid") else None
        out.append(row)
    return out


def per_case_counts(session: Session, scope: Scope, start: datetime, end: datetime, group: str,
                    narrow: bool = False) -> dict[str, dict[str, int]]:
    """The counts per group key over [start, end) from the case projection, one aggregate query.

    ``narrow``: only read cases with one of the counted timestamps in the period (through their indexes);
    the same result, cheaper for a short period far from the first case."""

    def within(col):
        return and_(col >= start, col < end)

    def count(cond):
        # COUNT(*) FILTER (WHERE …): SQL standard, on PostgreSQL and SQLite ≥ 3.30; cheaper than SUM(CASE …).
        return func.count().filter(cond)

    filed = within(Case.filed_at)
    due = and_(within(Case.deadline_at), Case.state.not_in(("backlogged", "void")))
    handled = within(Case.handled_at)
    dispatched = within(Case.dispatched_at)
    reported = within(Case.reported_at)
    key = _group_expr(group).label("key")
    stmt = (select(key,
                   count(reported).label("reported"),
                   count(and_(reported, Case.filed_at.is_not(None))).label("valid_reports"),
                   count(filed).label("filed"),
                   count(and_(filed, Case.source.in_(PUBLIC_SOURCES))).label("public_filed"),
                   count(and_(filed, Case.voided_at.is_not(None))).label("voided"),
                   count(due).label("due"),
                   count(and_(due, Case.closed_at.is_not(None))).label("closed"),
                   count(and_(due, Case.closed_at <= Case.deadline_at)).label("closed_on_time"),
                   count(handled).label("handled"),
                   func.coalesce(func.sum(Case.rework_count).filter(handled), 0).label("reworks"),
                   count(dispatched).label("dispatched"),
                   count(and_(dispatched, Case.dispatched_at <= Case.dispatch_due_at)).label("dispatched_on_time"),
                   count(and_(dispatched, Case.returned_count > 0)).label("dispatch_returned"),
                   count(and_(Case.supervision_count > 0, reported)).label("supervised"))
            # Every step follows the report, so a case reported after the period has nothing in it.
            .where(scope.covers_clause(Case.unit_path), key.is_not(None), Case.reported_at < end)
            .group_by(key))
    if narrow:
        # The cases with a counted timestamp in the period, found from the five timestamp indexes alone (each
        # scan covering) and then read by id. Written as an OR, SQLite read the rows through each index in turn
        # (2–3× slower), or for the grid group walked the whole grid_code index to skip the sort.
        stamps = (Case.reported_at, Case.filed_at, Case.deadline_at, Case.handled_at, Case.dispatched_at)
        stmt = stmt.where(Case.id.in_(union_all(*(select(Case.id).where(within(col)) for col in stamps))))
    return {r.key: {m: int(getattr(r, m) or 0) for m in rollup.METRICS} for r in session.execute(stmt)}


def to_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csvexport.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")  # BOM: Excel opens Chinese CSV correctly


HEADINGS_ZH = {"key": "对象", "reported": "上报数", "valid_reports": "有效上报数", "filed": "立案数", "public_filed": "公众举报立案数",
               "voided": "作废数", "due": "应结案数", "closed": "结案数", "closed_on_time": "按期结案数", "handled": "处置数",
               "reworks": "返工数", "dispatched": "派遣数", "dispatched_on_time": "按时派遣数", "dispatch_returned": "回退数",
               "supervised": "督办数", "closure_rate": "结案率", "ontime_closure_rate": "按期结案率", "rework_rate": "返工率",
               "ontime_dispatch_rate": "按时派遣率", "accurate_dispatch_rate": "准确派遣率", "valid_report_rate": "有效上报率",
               "public_report_rate": "监督举报率", "missed_report_rate": "漏报率", "accurate_filing_rate": "准确立案率",
               "composite": "综合得分"}


def to_xlsx(rows: list[dict], title: str = "绩效评价") -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = title[:31]
    ws.append([HEADINGS_ZH[c] for c in COLUMNS])
    for row in rows:
        ws.append([row.get(c) for c in COLUMNS])
        for cell in ws[ws.max_row]:
            if cell.data_type == "f":  # openpyxl stores text beginning with "=" as a formula; ours is data
                cell.data_type = "s"
    for col, name in enumerate(COLUMNS, start=1):
        if name.endswith("_rate"):
            for cell in ws.iter_cols(min_col=col, max_col=col, min_row=2):
                for c in cell:
                    c.number_format = "0.00%"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()

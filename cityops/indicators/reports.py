"""Reported values (填报): entered by the owner for a unit and a period — by form or API one at a time, or a CSV/XLSX
file all or nothing — each entry and revision in the audit log; due dates, reminders and overdue flags."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import InvalidInput, ValidationFailed
from cityops.core.types import utcnow
from cityops.identity.scope import Scope
from cityops.indicators.catalogue import Catalogue
from cityops.indicators.compute import TZ, period_bounds
from cityops.indicators.models import Report
from cityops.org.models import Unit

CHANNELS = ("form", "api", "csv", "xlsx")
MAX_ROWS = 10_000
COLUMNS = ("indicator", "unit_code", "period", "value", "note")


@dataclass
class Entry:
    indicator: str
    unit_code: str
    period: str  # a day in the period, YYYY-MM-DD (local calendar)
    value: float
    note: str | None = None


def _period_start(ind, text: str, where: str) -> datetime:
    try:
        day = date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise InvalidInput(f"{where}: period {text!r} is not a date (YYYY-MM-DD, any day of the period)",
                           {"field": "period"}) from None
    start, _ = period_bounds(ind.stored_period, datetime.combine(day, time(12), TZ))
    return start


def validate(session: Session, cat: Catalogue, scope: Scope, entries: list[Entry]) -> list[tuple[Entry, object, Unit, datetime]]:
    """Check every entry (all problems at once: ValidationFailed lists them with their row numbers)."""
    problems, ok = [], []
    units = {u.code: u for u in session.scalars(select(Unit).where(Unit.code.in_({e.unit_code for e in entries})))}
    for n, e in enumerate(entries, start=1):
        where = f"row {n}"
        ind = cat.indicators.get(e.indicator)
        if ind is None:
            problems.append({"row": n, "field": "indicator", "message": f"unknown indicator {e.indicator!r}"})
            continue
        if ind.source.kind != "reported":
            problems.append({"row": n, "field": "indicator", "message": f"{e.indicator} is computed, not reported"})
            continue
        unit = units.get(e.unit_code)
        if unit is None or not scope.covers(unit.path):
            # A unit the caller cannot change is named as unknown: no foreign unit is confirmed to exist.
            problems.append({"row": n, "field": "unit_code", "message": f"unknown unit {e.unit_code!r} (or outside your scope)"})
            continue
        if unit.level not in ind.levels:
            problems.append({"row": n, "field": "unit_code",
                             "message": f"{e.indicator} is kept at {', '.join(ind.levels)}, not at {unit.level}"})
            continue
        if not isinstance(e.value, (int, float)) or isinstance(e.value, bool) or not math.isfinite(e.value):
            problems.append({"row": n, "field": "value", "message": "value must be a finite number"})
            continue
        try:
            start = _period_start(ind, e.period, where)
        except InvalidInput as exc:
            problems.append({"row": n, "field": "period", "message": exc.message})
            continue
        if start > utcnow():
            problems.append({"row": n, "field": "period", "message": "a period that has not begun cannot be reported"})
            continue
        ok.append((e, ind, unit, start))
    if problems:
        raise ValidationFailed(f"{len(problems)} problem(s) in the reported values; nothing was stored", {"problems": problems})
    return ok


def enter(session: Session, cat: Catalogue, scope: Scope, entries: list[Entry], channel: str, actor: audit.Actor) -> list[Report]:
    """Store the entries (a revision replaces the value and is audited with before/after); the caller commits."""
    if channel not in CHANNELS:
        raise InvalidInput(f"unknown channel {channel!r}", {"field": "channel"})
    checked = validate(session, cat, scope, entries)
    out = []
    for e, ind, unit, start in checked:
        row = session.scalar(select(Report).where(Report.indicator_code == ind.code, Report.unit_code == unit.code,
                                                  Report.period == ind.stored_period, Report.period_start == start))
        before = None if row is None else {"value": row.value, "note": row.note, "by": row.entered_by}
        if row is None:
            row = Report(indicator_code=ind.code, unit_code=unit.code, unit_path=unit.path, period=ind.stored_period,
                         period_start=start, value=float(e.value), note=e.note, channel=channel, entered_by=actor.name,
                         entered_at=utcnow(), attributes={})
            session.add(row)
        else:
            row.value, row.note, row.channel, row.entered_by, row.entered_at = float(e.value), e.note, channel, actor.name, utcnow()
        session.flush()
        audit.record(session, actor, "indicator.report" if before is None else "indicator.report.revise", "indicator_report",
                     f"{ind.code}/{unit.code}/{start.date().isoformat()}", before=before,
                     after={"value": row.value, "note": row.note, "channel": channel}, unit_path=unit.path)
        out.append(row)
    return out


def parse_file(content: bytes, filename: str) -> tuple[list[Entry], str]:
    """Rows of a CSV (UTF-8, with a header) or XLSX (first sheet, with a header): indicator, unit_code, period, value,
    note. A malformed file is refused whole."""
    name = filename.lower()
    if name.endswith(".xlsx"):
        rows, channel = _xlsx_rows(content), "xlsx"
    elif name.endswith(".csv"):
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("the CSV file is not UTF-8", {"field": "file"}) from None
        rows, channel = list(csv.reader(io.StringIO(text))), "csv"
    else:
        raise InvalidInput("send a .csv or .xlsx file", {"field": "file"})
    if not rows:
        raise InvalidInput("the file is empty", {"field": "file"})
    header = [str(h or "").strip().lower() for h in rows[0]]
    missing = [c for c in COLUMNS[:4] if c not in header]
    if missing:
        raise InvalidInput(f"the header lacks column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})", {"field": "file"})
    if len(rows) - 1 > MAX_ROWS:
        raise InvalidInput(f"at most {MAX_ROWS} rows per file", {"field": "file"})
    col = {c: header.index(c) for c in COLUMNS if c in header}
    entries, problems = [], []
    for n, row in enumerate(rows[1:], start=1):
        if not any(str(v or "").strip() for v in row):
            continue
        cell = lambda c: (row[col[c]] if c in col and col[c] < len(row) else None)  # noqa: E731
        raw = cell("value")
        try:
            value = float(raw) if not isinstance(raw, (int, float)) else float(raw)
        except (TypeError, ValueError):
            problems.append({"row": n, "field": "value", "message": f"{raw!r} is not a number"})
            continue
        period = cell("period")
        period = period.date().isoformat() if isinstance(period, datetime) else period.isoformat() if isinstance(period, date) else str(period or "")
        entries.append(Entry(str(cell("indicator") or "").strip(), str(cell("unit_code") or "").strip(), period, value,
                             (str(cell("note")).strip() or None) if cell("note") is not None else None))
    if problems:
        raise ValidationFailed(f"{len(problems)} problem(s) in the file; nothing was stored", {"problems": problems})
    return entries, channel


def _xlsx_rows(content: bytes) -> list[list]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception:  # openpyxl raises many kinds for a file that is not a workbook
        raise InvalidInput("the file is not a readable XLSX workbook", {"field": "file"}) from None
    sheet = book.worksheets[0]
    return [list(r) for r in sheet.iter_rows(values_only=True, max_row=MAX_ROWS + 2)]


def due(session: Session, cat: Catalogue, scope: Scope, at: datetime) -> list[dict]:
    """Reported indicators of the period before ``at`` (the one now due) per unit in scope: due date, reminder,
    entered or not, overdue."""
    out = []
    units = list(session.scalars(select(Unit).where(scope.covers_clause(Unit.path), Unit.level.in_(("district", "township")))))
    for ind in cat.indicators.values():
        if ind.source.kind != "reported":
            continue
        this_start, _ = period_bounds(ind.stored_period, at)
        prev_start, _ = period_bounds(ind.stored_period, this_start - timedelta(seconds=1))
        due_at = (this_start.astimezone(TZ) + timedelta(days=ind.source.due_day - 1)).replace(hour=23, minute=59).astimezone(UTC)
        remind_at = due_at - timedelta(days=ind.source.remind_days)
        entered = {r.unit_code: r for r in session.scalars(select(Report).where(
            Report.indicator_code == ind.code, Report.period == ind.stored_period, Report.period_start == prev_start))}
        for u in units:
            if u.level not in ind.levels:
                continue
            r = entered.get(u.code)
            out.append({"indicator": ind.code, "name_zh": ind.name_zh, "name_en": ind.name_en, "owner": ind.owner,
                        "unit_code": u.code, "unit_name": u.name, "period_start": prev_start, "due_at": due_at,
                        "entered": r is not None, "value": r.value if r else None,
                        "status": "entered" if r else ("overdue" if at > due_at else "reminder" if at >= remind_at else "open")})
    return out

"""Scorecards and ranking (监督评价 · 赛马比拼): weighted indicators per township (or village) for a month or a
quarter, total score, rank and the change of rank since the previous period; the period's report as XLSX or PDF.

Scores per item: ``linear`` — 0 at ``floor``, 100 at ``target`` (either may be the higher), clamped; ``bands`` —
the band's points (绿 100, 黄 80, 橙 60, 红 30). An item without a value (a rate over nothing) scores full marks
and is flagged, as the event center's composite does. An item's value for a period is the indicator's value of its
own period that holds the period's last moment (the month itself for monthly indicators, the last day for daily).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core.errors import InvalidInput, NotFound
from cityops.core.types import utcnow
from cityops.identity.scope import Scope
from cityops.indicators.catalogue import BAND_ZH, Catalogue, Scorecard, ScoreItem
from cityops.indicators.compute import period_bounds
from cityops.indicators.models import Value
from cityops.org.models import Unit

PERIODS = ("month", "quarter")
BAND_POINTS = {"green": 100.0, "yellow": 80.0, "orange": 60.0, "red": 30.0}


def item_score(cat: Catalogue, item: ScoreItem, value: float | None) -> float | None:
    if value is None:
        return None
    ind = cat.indicators[item.indicator]
    if item.rule == "bands":
        return BAND_POINTS[ind.band(value)]
    floor = item.floor if item.floor is not None else (ind.bands.red)
    target = item.target if item.target is not None else (ind.target if ind.target is not None else ind.bands.yellow or ind.bands.red)
    if target == floor:
        return 100.0 if value == target else 0.0
    return round(max(0.0, min(1.0, (value - floor) / (target - floor))) * 100, 4)


def _values(session: Session, cat: Catalogue, card: Scorecard, end: datetime, level: str) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    last = min(end, utcnow()) - timedelta(microseconds=1)
    for item in card.items:
        ind = cat.indicators[item.indicator]
        start, _ = period_bounds(ind.stored_period, last)
        for v in session.scalars(select(Value).where(Value.indicator_code == item.indicator, Value.level == level,
                                                     Value.period == ind.stored_period, Value.period_start == start)):
            out.setdefault(v.unit_code, {})[item.indicator] = v.value
    return out


def _rank(session: Session, cat: Catalogue, card: Scorecard, start: datetime, end: datetime) -> list[dict]:
    units = list(session.scalars(select(Unit).where(Unit.level == card.level).order_by(Unit.code)))
    values = _values(session, cat, card, end, card.level)
    weight = sum(i.weight for i in card.items)
    rows = []
    for u in units:
        items, total = [], 0.0
        for item in card.items:
            v = values.get(u.code, {}).get(item.indicator)
            s = item_score(cat, item, v)
            total += item.weight * (100.0 if s is None else s)
            items.append({"indicator": item.indicator, "name_zh": cat.indicators[item.indicator].name_zh,
                          "name_en": cat.indicators[item.indicator].name_en, "weight": item.weight, "value": v,
                          "score": s, "no_data": s is None})
        rows.append({"unit_code": u.code, "unit_name": u.name, "unit_path": u.path, "score": round(total / weight, 2), "items": items})
    rows.sort(key=lambda r: (-r["score"], r["unit_code"]))
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    return rows


def ranking(session: Session, cat: Catalogue, scope: Scope, key: str, period: str, at: datetime) -> dict:
    """The scorecard ``key`` for the period holding ``at``: rows of the units the scope covers (a rank is over all
    units of the level, so a township learns its place, not the others' figures)."""
    card = cat.scorecards.get(key)
    if card is None:
        raise NotFound(f"scorecard {key!r} not found")
    if period not in PERIODS:
        raise InvalidInput(f"unknown period {period!r}; use {', '.join(PERIODS)}", {"field": "period"})
    start, end = period_bounds(period, at)
    prev_start, prev_end = period_bounds(period, start - timedelta(seconds=1))
    rows = _rank(session, cat, card, start, end)
    before = {r["unit_code"]: r["rank"] for r in _rank(session, cat, card, prev_start, prev_end)}
    for r in rows:
        r["previous_rank"] = before.get(r["unit_code"])
        r["rank_change"] = None if r["previous_rank"] is None else r["previous_rank"] - r["rank"]
    return {"key": card.key, "name_zh": card.name_zh, "name_en": card.name_en, "level": card.level, "period": period,
            "period_start": start, "period_end": end, "of": len(rows),
            "items": [{k: v for k, v in r.items() if k != "unit_path"} for r in rows if scope.covers(r["unit_path"])]}


# ------------------------------------------------------------------------------------------------ the report

def report_rows(cat: Catalogue, values: dict[str, dict]) -> list[list]:
    rows = []
    for code, ind in cat.indicators.items():
        sub = cat.subrunways[ind.subrunway]
        runway = cat.runways[sub.runway]
        sector = cat.sectors[runway.sector]
        v = values.get(code)
        rows.append([sector.name_zh, runway.name_zh, sub.name_zh, ind.name_zh, None if v is None else v["value"], ind.unit,
                     ind.target, BAND_ZH.get(v["band"]) if v and v["band"] else "", ind.owner])
    return rows


HEAD = ["板块", "跑道", "子跑道", "指标", "值", "单位", "目标", "区间", "责任单位"]
RANK_HEAD = ["排名", "单位", "得分", "上期排名", "名次变化"]


def to_xlsx(title: str, rows: list[list], rankings: list[dict]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "指标"
    sheet.append([title])
    sheet.append(HEAD)
    for row in rows:
        sheet.append(row)
    for r in rankings:
        ws = book.create_sheet(r["name_zh"][:28].replace("/", "-").replace("(", "").replace(")", ""))
        ws.append([r["name_zh"]])
        ws.append(RANK_HEAD)
        for item in r["items"]:
            ws.append([item["rank"], item["unit_name"], item["score"], item["previous_rank"], item["rank_change"]])
    for ws in book.worksheets:
        for line in ws.iter_rows():
            for cell in line:
                if cell.data_type == "f":  # text starting with "=" is data here, never a formula
                    cell.data_type = "s"
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def to_pdf(title: str, rows: list[list], rankings: list[dict]) -> bytes:
    """The report as PDF (ReportLab; Chinese in the Adobe CID font STSong-Light, which PDF readers supply, so no
    font file is embedded or needed on the server)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    style = ParagraphStyle("zh", fontName="STSong-Light", fontSize=14, leading=18)
    cell = ParagraphStyle("cell", fontName="STSong-Light", fontSize=8, leading=10)

    def table(head, data):
        t = Table([[Paragraph(str(h), cell) for h in head]] +
                  [[Paragraph("" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)), cell) for v in r] for r in data],
                  repeatRows=1)
        t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef7"))]))
        return t

    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=landscape(A4), title=title)
    story = [Paragraph(title, style), Spacer(1, 8), table(HEAD, rows)]
    for r in rankings:
        story += [Spacer(1, 14), Paragraph(r["name_zh"], style), Spacer(1, 6),
                  table(RANK_HEAD, [[i["rank"], i["unit_name"], i["score"], i["previous_rank"], i["rank_change"]] for i in r["items"]])]
    doc.build(story)
    return buf.getvalue()

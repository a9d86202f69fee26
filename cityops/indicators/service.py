"""Indicators as the rest of the platform and the API use them: run a period (compute, store, judge, act on
breaches), read values, series, the cockpit board, breaches, scorecards and rankings, and enter reported values.
Plain functions over a session; no HTTP here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.core.errors import NotFound
from cityops.core.types import utcnow
from cityops.identity.scope import Scope
from cityops.indicators import catalogue as catalogues
from cityops.indicators.catalogue import BAND_ZH, Catalogue, Indicator
from cityops.core.bus import publish
from cityops.indicators.manifest import IndicatorBreached, IndicatorRecovered
from cityops.indicators.compute import PERIOD_KINDS, bands_matrix, compute, period_bounds, store, sync_versions
from cityops.indicators.models import Breach, Change, Value
from cityops.org.levels import active_levels
from cityops.org.models import Unit

log = logging.getLogger("cityops.indicators")
SYSTEM = audit.Actor("system:indicators")
BAND_RANK = {"green": 0, "yellow": 1, "orange": 2, "red": 3}


@lru_cache(maxsize=8)
def _load(pack: str, extra_dir: str | None) -> Catalogue:
    return catalogues.load(Path(extra_dir) if extra_dir else None, pack=catalogues.pack_path(pack))


def load_catalogue(settings) -> Catalogue:
    """The catalogue of a deployment: its pack plus ``settings.indicators_dir`` (validated once per process)."""
    return _load(settings.indicators_pack, str(settings.indicators_dir) if settings.indicators_dir else None)


# ------------------------------------------------------------------------------------------------ running

@dataclass
class RunResult:
    period: str
    start: datetime
    indicators: int
    values: int
    inserted: int
    updated: int
    breaches_opened: int
    breaches_closed: int


def run(session: Session, cat: Catalogue, period: str, at: datetime | None = None, *, act: bool = True,
        codes: set[str] | None = None, actor: audit.Actor = SYSTEM, tree=None, metrics=None) -> RunResult:
    """Compute, store and judge one period; with ``act`` a unit entering red opens a breach (and its case where
    the definition asks) and a recovered one closes it. ``tree``: the unit tree when the caller keeps one
    (``compute.unit_tree``); ``metrics``: a registry other than the platform's. The caller commits."""
    at = at or utcnow()
    computed = compute(session, cat, period, at, codes=codes, tree=tree, metrics=metrics)
    versions = sync_versions(session, cat)
    stored = store(session, cat, computed, versions)
    opened = closed = 0
    if act:
        opened, closed = judge(session, cat, computed, actor)
    n = sum(int((~np.isnan(v)).sum()) for v in computed.values.values())
    return RunResult(period, computed.start, len(computed.values), n, stored.inserted, stored.updated, opened, closed)


def run_all(session: Session, cat: Catalogue, at: datetime | None = None, *, act: bool = True,
            periods: tuple[str, ...] | None = None, actor: audit.Actor = SYSTEM) -> list[RunResult]:
    used = sorted({i.stored_period for i in cat.indicators.values()}, key=PERIOD_KINDS.index)
    return [run(session, cat, p, at, act=act, actor=actor) for p in used if periods is None or p in periods]


def judge(session: Session, cat: Catalogue, computed, actor: audit.Actor) -> tuple[int, int]:
    """Open a breach for every unit newly in red, close those that recovered; each publishes its fact, whose
    consumer opens or closes the breach's case (cityops.indicators.subscriptions)."""
    tree = computed.tree
    codes = [c for c in computed.values if cat.indicators[c].stored_period == computed.period]
    open_rows = {(b.indicator_code, b.unit_code): b for b in session.scalars(
        select(Breach).where(Breach.closed_at.is_(None), Breach.indicator_code.in_(codes)))} if codes else {}
    now = utcnow()
    opened = closed = 0
    bands = bands_matrix([cat.indicators[c] for c in codes], np.vstack([computed.values[c] for c in codes])) if codes else None
    for k, code in enumerate(codes):
        ind = cat.indicators[code]
        v = computed.values[code]
        red = bands[k] == 3
        watched = set(np.flatnonzero(red)) | {tree.index[u] for (c, u) in open_rows if c == code and u in tree.index}
        for i in sorted(watched):
            if np.isnan(v[i]):
                continue  # no value is no recovery: the breach stays open until a value says so
            value = float(v[i])
            key = (code, tree.codes[i])
            current = open_rows.get(key)
            if red[i] and current is None:
                b = Breach(indicator_code=code, unit_code=tree.codes[i], unit_path=tree.paths[i], period=computed.period,
                           period_start=computed.start, value=value, band="red", opened_at=now)
                session.add(b)
                session.flush()
                publish(session, IndicatorBreached(breach_id=b.id, indicator_code=code, indicator_name=ind.name_zh,
                                                   owner=ind.owner, unit_code=b.unit_code, unit_path=b.unit_path,
                                                   period=computed.period, value=value, unit=getattr(ind, "unit", None),
                                                   case_class=ind.breach.case_class if ind.breach.open_case else None,
                                                   red=ind.bands.red, actor=actor.name))
                opened += 1
            elif not red[i] and current is not None:
                current.closed_at, current.recovered_value = now, value
                publish(session, IndicatorRecovered(breach_id=current.id, indicator_code=code, indicator_name=ind.name_zh,
                                                    unit_code=current.unit_code, unit_path=current.unit_path, value=value,
                                                    unit=getattr(ind, "unit", None), actor=actor.name))
                closed += 1
    return opened, closed


# ------------------------------------------------------------------------------------------------ reading

def unit_of(session: Session, scope: Scope, code: str | None) -> Unit:
    """The unit asked for (default: the scope's first root, else the district); seen by the scope or refused."""
    if code is None:
        if scope.all_units or not scope.unit_paths:
            unit = session.scalar(select(Unit).where(Unit.level == "district").order_by(Unit.code).limit(1))
        else:
            root = scope.unit_paths[0].strip("/").split("/")[-1]
            unit = session.scalar(select(Unit).where(Unit.code == root))
    else:
        unit = session.scalar(select(Unit).where(Unit.code == code))
    if unit is None or not scope.sees(unit.path):
        raise NotFound(f"unit {code!r} not found" if code else "no unit to show")
    return unit


def indicator(cat: Catalogue, code: str) -> Indicator:
    ind = cat.indicators.get(code)
    if ind is None:
        raise NotFound(f"indicator {code!r} not found")
    return ind


def _value_dict(cat: Catalogue, row) -> dict:
    ind = cat.indicators.get(row.indicator_code)
    return {"indicator": row.indicator_code, "unit_code": row.unit_code, "level": row.level, "period": row.period,
            "period_start": row.period_start, "value": row.value, "band": row.band,
            "band_zh": BAND_ZH.get(row.band) if row.band else None, "target": ind.target if ind else None,
            "version": row.version, "numerator": row.numerator, "denominator": row.denominator}


def values_at(session: Session, cat: Catalogue, unit: Unit, at: datetime, codes: list[str] | None = None) -> dict[str, dict]:
    """Each indicator's value for ``unit`` in the period of its own kind holding ``at``."""
    codes = codes or list(cat.indicators)
    by_period: dict[str, list[str]] = {}
    for c in codes:
        by_period.setdefault(cat.indicators[c].stored_period, []).append(c)
    out = {}
    for period, cs in by_period.items():
        start, _ = period_bounds(period, at)
        for row in session.scalars(select(Value).where(Value.unit_code == unit.code, Value.period == period,
                                                       Value.period_start == start, Value.indicator_code.in_(cs))):
            out[row.indicator_code] = _value_dict(cat, row)
    return out


def series(session: Session, cat: Catalogue, code: str, unit: Unit, start: datetime, end: datetime) -> list[dict]:
    ind = indicator(cat, code)
    rows = session.scalars(select(Value).where(Value.indicator_code == code, Value.unit_code == unit.code,
                                               Value.period == ind.stored_period, Value.period_start >= start,
                                               Value.period_start < end).order_by(Value.period_start))
    return [_value_dict(cat, r) for r in rows]


def children_values(session: Session, cat: Catalogue, scope: Scope, code: str, unit: Unit, at: datetime) -> list[dict]:
    """The indicator at the unit's children (drill-down), those the scope covers, worst first."""
    ind = indicator(cat, code)
    start, _ = period_bounds(ind.stored_period, at)
    rows = session.execute(select(Value, Unit.name).join(Unit, Unit.code == Value.unit_code)
                           .where(Value.indicator_code == code, Unit.parent_code == unit.code,
                                  Value.period == ind.stored_period, Value.period_start == start,
                                  scope.covers_clause(Value.unit_path))).all()
    items = [{**_value_dict(cat, v), "unit_name": name} for v, name in rows]
    return sorted(items, key=lambda d: (-BAND_RANK.get(d["band"] or "green", 0), _worse_key(ind, d["value"])))


def _worse_key(ind: Indicator, value):
    if value is None:
        return float("inf")
    return -value if ind.direction == "lower" else value


def board(session: Session, cat: Catalogue, scope: Scope, unit: Unit, at: datetime, days: int = 30) -> dict:
    """The cockpit's data for one unit: sector tabs → runway cards → indicators (value, band, target, trend of the
    last ``days`` days), the red list (red first, then orange) and the unit's children for drill-down; with the
    unit's bounding box and ancestors, so the first screen needs this one answer."""
    township = next((c for c in unit.path.strip("/").split("/") if active_levels().level_of(c) == "township"), None)
    current = values_at(session, cat, unit, at)
    since = at - timedelta(days=days)
    trend: dict[str, list] = {}
    for row in session.execute(select(Value.indicator_code, Value.period_start, Value.value)
                               .where(Value.unit_code == unit.code, Value.period == "day", Value.period_start >= since,
                                      Value.period_start <= at).order_by(Value.period_start)):
        trend.setdefault(row.indicator_code, []).append([row.period_start, row.value])
    sectors, red_list = [], []
    for sector in catalogues.tree(cat, township):
        runways = []
        for runway in sector["runways"]:
            cards = []
            for sub in runway["subrunways"]:
                for ind in sub["indicators"]:
                    if unit.level not in ind["levels"]:
                        continue
                    v = current.get(ind["code"])
                    card = {"indicator": ind["code"], "name_zh": ind["name_zh"], "name_en": ind["name_en"],
                            "subrunway": sub["code"], "subrunway_zh": sub["name_zh"], "subrunway_en": sub["name_en"],
                            "unit": ind["unit"], "direction": ind["direction"], "period": ind["period"],
                            "target": ind["target"], "bands": ind["bands"],
                            "value": v["value"] if v else None, "band": v["band"] if v else None,
                            "period_start": v["period_start"] if v else None,
                            "trend": trend.get(ind["code"], [])}
                    cards.append(card)
                    if card["band"] in ("red", "orange"):
                        red_list.append({**card, "runway": runway["code"], "runway_zh": runway["name_zh"],
                                         "runway_en": runway["name_en"], "sector": sector["code"]})
            worst = max((BAND_RANK.get(c["band"] or "green", 0) for c in cards), default=0)
            cards.sort(key=lambda c: -BAND_RANK.get(c["band"] or "green", 0))
            runways.append({"code": runway["code"], "name_zh": runway["name_zh"], "name_en": runway["name_en"],
                            "owner": runway["owner"], "band": [k for k, r in BAND_RANK.items() if r == worst][0] if cards else None,
                            "cards": cards})
        runways.sort(key=lambda r: -BAND_RANK.get(r["band"] or "green", 0))
        sectors.append({"code": sector["code"], "name_zh": sector["name_zh"], "name_en": sector["name_en"],
                        "red": sum(1 for r in runways for c in r["cards"] if c["band"] == "red"), "runways": runways})
    red_list.sort(key=lambda c: -BAND_RANK[c["band"]])
    breaches = {(b.indicator_code): b for b in session.scalars(
        select(Breach).where(Breach.unit_code == unit.code, Breach.closed_at.is_(None)))}
    for item in red_list:
        b = breaches.get(item["indicator"])
        item["breach_id"], item["case_id"], item["case_number"] = (b.id, b.case_id, b.case_number) if b else (None, None, None)
    children = session.execute(select(Unit.code, Unit.name, Unit.level).where(Unit.parent_code == unit.code,
                                                                              scope.covers_clause(Unit.path))
                               .order_by(Unit.code)).all()
    # Each child's worst band and red count now (the map colours the units it drills into).
    worst: dict[str, list[int]] = {c.code: [-1, 0] for c in children}
    for period in sorted({i.stored_period for i in cat.indicators.values()}):
        start, _ = period_bounds(period, at)
        for code, band in session.execute(select(Value.unit_code, Value.band).where(
                Value.unit_code.in_(list(worst)), Value.period == period, Value.period_start == start)):
            rank = BAND_RANK.get(band or "", -1)
            w = worst[code]
            w[0], w[1] = max(w[0], rank), w[1] + (rank == 3)
    names = {r: b for b, r in BAND_RANK.items()}
    codes = [c for c in unit.path.strip("/").split("/") if c]
    chain = {r.code: r for r in session.execute(select(Unit.code, Unit.name, Unit.name_en, Unit.level)
                                                .where(Unit.code.in_(codes)))}
    return {"unit": {"code": unit.code, "name": unit.name, "level": unit.level, "path": unit.path,
                     "read_only": not scope.covers(unit.path),
                     "bbox": [round(v, 7) for v in unit.geom.bounds] if unit.geom is not None else None,
                     "chain": [chain[c]._asdict() for c in codes if c in chain]},
            "at": at, "sectors": sectors, "red_list": red_list,
            "children": [{"code": c.code, "name": c.name, "level": c.level, "band": names.get(worst[c.code][0]),
                          "red": worst[c.code][1]} for c in children]}


def breaches(session: Session, scope: Scope, *, unit: Unit | None = None, open_only: bool = False,
             indicator_code: str | None = None, limit: int = 200) -> list[Breach]:
    stmt = select(Breach).where(scope.covers_clause(Breach.unit_path))
    if unit is not None:
        stmt = stmt.where(Breach.unit_path.startswith(unit.path, autoescape=True))
    if open_only:
        stmt = stmt.where(Breach.closed_at.is_(None))
    if indicator_code:
        stmt = stmt.where(Breach.indicator_code == indicator_code)
    return list(session.scalars(stmt.order_by(Breach.opened_at.desc(), Breach.id.desc()).limit(limit)))


#: Changes read at most at once (a stream's page).
CHANGES_PAGE = 500


def changes_after(session: Session, scope: Scope, after: int, limit: int | None = None) -> list[Change]:
    return list(session.scalars(select(Change).where(Change.id > after, scope.sees_clause(Change.unit_path))
                                .order_by(Change.id).limit(limit or CHANGES_PAGE)))


@dataclass
class CurrentChanges:
    """A page of the change feed, of which only the current periods' changes are kept: ``last`` is the last id
    read (kept or not), where the next page starts; ``full``: the page was full, so more may be stored."""

    changes: list[Change]
    last: int
    full: bool


def current_changes_after(session: Session, scope: Scope, after: int, now: datetime | None = None,
                          limit: int | None = None) -> CurrentChanges:
    """The changes after id ``after`` of each indicator's current period (the day, month … holding ``now`` on the
    district's calendar): what a live view shows. A past period's value written meanwhile (a history being
    filled, a recomputed day) is passed over, not shown as today's. The page is cut before filtering, so a
    page of past periods only still moves the reader on (``last``) instead of being read again and again."""
    now = now or utcnow()
    page = changes_after(session, scope, after, limit)
    current = {kind: period_bounds(kind, now)[0] for kind in PERIOD_KINDS}
    kept = [c for c in page if current.get(c.period) == c.period_start]
    return CurrentChanges(kept, page[-1].id if page else after, len(page) >= (limit or CHANGES_PAGE))


def last_change_id(session: Session) -> int:
    return session.scalar(select(func.max(Change.id))) or 0

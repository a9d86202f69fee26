"""Every source kind of an indicator on both backends, against values computed by hand from a small world:
district D → townships T1, T2 → one village each → grids. Also the breach → case → recovery loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from shapely.geometry import MultiPolygon, Point, box
from sqlalchemy import func, select

from cityops.core import audit
from cityops.events.models import Case
from cityops.housing.models import Building
from cityops.identity.scope import Scope
from cityops.indicators import catalogue as catalogues
from cityops.indicators import reports, service
from cityops.indicators.compute import compute, period_bounds
from cityops.indicators.models import Breach, DefinitionVersion, Value
from cityops.org.models import Unit
from cityops.sensing.models import Alarm
from cityops.tasks.models import Shelter
from cityops.warning.tables import RiskPoint, RiskWarning
from tests.bus_helpers import deliver, handle_again, outbox_head

D, T1, T2 = "500154", "500154001", "500154002"
V1, V2 = T1 + "001", T2 + "001"
G1a, G1b, G2a = V1 + "001", V1 + "002", V2 + "001"
NOW = datetime.now(UTC)
ADMIN = audit.Actor("tester")

CATALOGUE = """
version = 1
[[sector]]
code = "S"
name_zh = "测试"
name_en = "Test"
owner = "t"
[[runway]]
code = "R"
sector = "S"
name_zh = "跑道"
name_en = "Runway"
owner = "t"
[[subrunway]]
code = "SR"
runway = "R"
name_zh = "子跑道"
name_en = "Sub-runway"
owner = "t"
levels = ["district", "township", "village", "grid"]
issued = "local"
{indicators}
"""

INDICATOR = """
[[indicator]]
code = "{code}"
subrunway = "SR"
name_zh = "{code}"
name_en = "{code}"
unit = "n"
direction = "{direction}"
period = "{period}"
bands = {bands}
levels = {levels}
rollup = "{rollup}"
scale = {scale}
owner = "t"
source = {source}
breach = {breach}
"""

ALL = '["district", "township", "village", "grid"]'
SPECS = [
    dict(code="open_cases", source='{ kind = "metric", metric = "events.cases", params = { count = "open" } }'),
    dict(code="open_water_cases", source='{ kind = "metric", metric = "events.cases", params = { count = "open", class_prefix = "10081" } }'),
    dict(code="reported_today", source='{ kind = "metric", metric = "events.cases", params = { count = "reported" } }'),
    dict(code="alarms_orange", source='{ kind = "metric", metric = "sensing.alarms", params = { min_severity = "orange" } }'),
    dict(code="risk_red", source='{ kind = "metric", metric = "warning.risk_points", params = { min_level = "red" } }',
         breach='{ open_case = true, case_class = "10080" }', bands="{ red = 1 }"),
    dict(code="risk_warned", source='{ kind = "metric", metric = "warning.risk_points", params = { min_level = "blue" } }'),
    dict(code="grade_d_residents", source='{ kind = "metric", metric = "housing.buildings", params = { grades = ["D"], measure = "residents" } }'),
    dict(code="shelter_use", rollup="ratio", scale=100, levels='["district", "township"]',
         source='{ kind = "metric", metric = "tasks.shelter_occupancy" }'),
    dict(code="worst_open_cases", rollup="worst",
         source='{ kind = "metric", metric = "events.cases", params = { count = "open" } }'),
    dict(code="volunteers", period="monthly", levels='["district", "township"]', source='{ kind = "reported" }'),
    dict(code="satisfaction", period="monthly", rollup="mean", levels='["district", "township"]', source='{ kind = "reported" }',
         direction="higher", bands="{ red = 60 }"),
    dict(code="per_volunteer", period="monthly", rollup="formula", levels='["district", "township"]',
         source='{ kind = "formula", expr = "volunteers / max(satisfaction, 1) * 2 - 1" }'),
]


def _catalogue(tmp_path):
    text = "".join(INDICATOR.format(**{"direction": "lower", "period": "live", "bands": "{ red = 1000 }", "levels": ALL,
                                       "rollup": "sum", "scale": 1, "breach": "{ open_case = false }", **s}) for s in SPECS)
    path = tmp_path / "test.toml"
    path.write_text(CATALOGUE.format(indicators=text), encoding="utf-8")
    return catalogues.load_files([path])


def _units(session):
    def unit(code, name, level, parent, x):
        path = "/" + "/".join(code[:n] for n in (6, 9, 12, 15) if n <= len(code)) + "/"
        session.add(Unit(code=code, name=name, level=level, parent_code=parent, path=path,
                         geom=MultiPolygon([box(108 + x, 31, 108.01 + x, 31.01)])))
        session.flush()
    unit(D, "区", "district", None, 0)
    unit(T1, "一镇", "township", D, 0)
    unit(T2, "二镇", "township", D, 0.02)
    unit(V1, "一村", "village", T1, 0)
    unit(V2, "二村", "village", T2, 0.02)
    unit(G1a, "一村一格", "grid", V1, 0)
    unit(G1b, "一村二格", "grid", V1, 0.005)
    unit(G2a, "二村一格", "grid", V2, 0.02)


def _path(code):
    return "/" + "/".join(code[:n] for n in (6, 9, 12, 15) if n <= len(code)) + "/"


def _case(session, n, grid, *, class_code="06010", reported=NOW - timedelta(days=3), closed=None, voided=None):
    session.add(Case(number=f"C{n}", source="rest", kind="matter", class_code=class_code, title="t", urgency="normal",
                     state="closed" if closed else "reported", lon=108, lat=31, geom=Point(108, 31), grid_code=grid, township_code=grid[:9],
                     unit_path=_path(grid), route={}, reporter={}, attributes={}, reported_at=reported,
                     closed_at=closed, voided_at=voided, updated_at=NOW))


def _facts(session):
    # Cases: open now = reported, not closed/voided/merged. G1a: 2 open (one 10081), 1 closed; G1b: 1 open, 1 voided;
    # G2a: 1 open reported today, 1 open 10081.
    _case(session, 1, G1a)
    _case(session, 2, G1a, class_code="10081")
    _case(session, 3, G1a, closed=NOW - timedelta(days=1))
    _case(session, 4, G1b)
    _case(session, 5, G1b, voided=NOW - timedelta(days=1))
    _case(session, 6, G2a, reported=NOW - timedelta(minutes=1))
    _case(session, 7, G2a, class_code="10081")
    _case(session, 8, G2a, reported=NOW + timedelta(days=1))  # not yet reported at the period's end: never counted
    # Alarms open now at orange or above: G1a red open, G1b orange cleared yesterday, G2a orange open + blue open.
    for key, sev, unit, cleared in (("a1", "red", G1a, None), ("a2", "orange", G1b, NOW - timedelta(days=1)),
                                    ("a3", "orange", G2a, None), ("a4", "blue", G2a, None)):
        session.add(Alarm(key=key, status="cleared" if cleared else "open", severity=sev, peak_severity=sev, title=key,
                          unit_path=_path(unit), first_at=NOW - timedelta(days=2), last_at=NOW - timedelta(days=2),
                          cleared_at=cleared, history=[], evidence={}))
    # Risk points: P1 (V1) red since 2 days, P2 (V2) yellow then red only tomorrow (future: not counted), P3 none.
    points = {}
    for code, unit in (("P1", V1), ("P2", V2), ("P3", V2)):
        p = RiskPoint(code=code, name=code, hazard_type="landslide", unit_code=unit, unit_path=_path(unit),
                      geom=Point(108, 31), building_codes=[], datastreams={}, model={}, attributes={})
        session.add(p)
        session.flush()
        points[code] = p
    for i, (code, level, at) in enumerate((("P1", "yellow", NOW - timedelta(days=5)), ("P1", "red", NOW - timedelta(days=2)),
                                           ("P2", "yellow", NOW - timedelta(days=1)), ("P2", "red", NOW + timedelta(days=1)))):
        session.add(RiskWarning(risk_point_id=points[code].id, identifier=f"w{i}", msg_type="Alert", level=level,
                                previous_level="none", issued_at=at, reasons={}, unit_path=points[code].unit_path))
    # Buildings: residents of grade D: G1a 5 + 3, G1b 0 (grade C, 7 residents), G2a 4.
    for i, (grid, grade, residents) in enumerate(((G1a, "D", 5), (G1a, "D", 3), (G1b, "C", 7), (G2a, "D", 4))):
        session.add(Building(code=f"B{i}", footprint=MultiPolygon([box(108, 31, 108.0001, 31.0001)]), grid_code=grid,
                             unit_path=_path(grid), safety_grade=grade, residents=residents, attributes={}))
    # Shelters: T1 (own unit) 30/100, V1 10/50; T2 none → T1 = 40/150, district = 40/150.
    for code, unit, occ, cap in (("S1", T1, 30, 100), ("S2", V1, 10, 50)):
        session.add(Shelter(code=code, name=code, capacity=cap, occupancy=occ, geom=Point(108, 31), unit_code=unit,
                            unit_path=_path(unit), attributes={}))
    session.flush()


def _values(session, code, period):
    start, _ = period_bounds(period, NOW)
    return {r.unit_code: r.value for r in session.scalars(select(Value).where(Value.indicator_code == code,
                                                                               Value.period == period, Value.period_start == start))}


def test_every_source_kind_against_hand_computed_values(store, tmp_path):
    cat = _catalogue(tmp_path)
    with store.sessions() as session:
        _units(session)
        _facts(session)
        reports.enter(session, cat, Scope(all_units=True), [
            reports.Entry("volunteers", T1, NOW.date().isoformat(), 12),
            reports.Entry("volunteers", T2, NOW.date().isoformat(), 8),
            reports.Entry("satisfaction", T1, NOW.date().isoformat(), 90),
            reports.Entry("satisfaction", T2, NOW.date().isoformat(), 70),
        ], "api", ADMIN)
        service.run_all(session, cat, NOW)
        session.commit()
        v = lambda code, period="day": _values(session, code, period)  # noqa: E731
        assert v("open_cases") == {D: 5, T1: 3, T2: 2, V1: 3, V2: 2, G1a: 2, G1b: 1, G2a: 2}
        assert v("open_water_cases") == {D: 2, T1: 1, T2: 1, V1: 1, V2: 1, G1a: 1, G1b: 0, G2a: 1}
        assert v("reported_today")[G2a] == 1 and v("reported_today")[T1] == 0
        assert v("alarms_orange") == {D: 2, T1: 1, T2: 1, V1: 1, V2: 1, G1a: 1, G1b: 0, G2a: 1}
        assert v("risk_red") == {D: 1, T1: 1, T2: 0, V1: 1, V2: 0, G1a: 0, G1b: 0, G2a: 0}
        assert v("risk_warned") == {D: 2, T1: 1, T2: 1, V1: 1, V2: 1, G1a: 0, G1b: 0, G2a: 0}
        assert v("grade_d_residents") == {D: 12, T1: 8, T2: 4, V1: 8, V2: 4, G1a: 8, G1b: 0, G2a: 4}
        assert v("shelter_use") == {D: pytest.approx(40 / 150 * 100), T1: pytest.approx(40 / 150 * 100)}  # T2: no shelter, no value
        # worst-of (lower is better: the highest) from the lowest level up: grids 2, 1, 2 → villages 2, 2 → district 2.
        assert v("worst_open_cases") == {D: 2, T1: 2, T2: 2, V1: 2, V2: 2, G1a: 2, G1b: 1, G2a: 2}
        assert v("volunteers", "month") == {D: 20, T1: 12, T2: 8}
        assert v("satisfaction", "month") == {D: 80, T1: 90, T2: 70}
        # Formula at each unit from that unit's inputs: 20 / 80 * 2 − 1, 12 / 90 * 2 − 1, 8 / 70 * 2 − 1.
        assert v("per_volunteer", "month") == {D: pytest.approx(-0.5), T1: pytest.approx(12 / 90 * 2 - 1),
                                               T2: pytest.approx(8 / 70 * 2 - 1)}
        # Bands: satisfaction is higher-better with red at ≤ 60; risk_red is red at ≥ 1.
        assert {r.unit_code: r.band for r in session.scalars(select(Value).where(Value.indicator_code == "risk_red",
                                                                                  Value.band == "red"))} == {D: "red", T1: "red", V1: "red"}


def test_history_as_of_a_past_day(store, tmp_path):
    """Four days ago (the day ends at most three days ago): P1 was yellow (red came two days ago), P2 had no warning
    yet, and no case had been reported."""
    cat = _catalogue(tmp_path)
    with store.sessions() as session:
        _units(session)
        _facts(session)
        c = compute(session, cat, "day", NOW - timedelta(days=4))
        d = c.tree.index[D]
        assert (c.values["risk_red"][d], c.values["risk_warned"][d], c.values["open_cases"][d]) == (0, 1, 0)
        assert c.values["alarms_orange"][d] == 0  # raised two days ago


def test_breach_opens_its_case_and_recovery_closes_it(store, tmp_path):
    """Through the bus: the computation commits the breaches and their ``indicator.breached``; the consumer of those
    has the event center open each case (once, whatever the redeliveries), and ``indicator.recovered`` closes it."""
    cat = _catalogue(tmp_path)
    since = outbox_head(store)
    with store.sessions() as session:
        _units(session)
        _facts(session)
        session.commit()
        service.run(session, cat, "day", NOW, codes={"risk_red"})
        session.commit()
        open_ = {b.unit_code: b for b in session.scalars(select(Breach).where(Breach.closed_at.is_(None)))}
        assert set(open_) == {D, T1, V1}
        assert all(b.case_id is None for b in open_.values()), "not in the computation's transaction"
    envs = deliver(store, "indicators.breach_case", since, twice=True)
    handle_again(store, "indicators.breach_case", envs)
    with store.sessions() as session:
        open_ = {b.unit_code: b for b in session.scalars(select(Breach).where(Breach.closed_at.is_(None)))}
        for b in open_.values():
            case = session.get(Case, b.case_id)
            assert case is not None and case.external_key == f"indicator-breach:{b.id}" and case.source == "indicator"
            assert case.attributes["indicator"] == "risk_red" and case.closed_at is None and b.case_number == case.number
        assert session.scalar(select(func.count()).select_from(Case).where(Case.source == "indicator")) == 3
        # Running again opens nothing new.
        again = service.run(session, cat, "day", NOW, codes={"risk_red"})
        assert again.breaches_opened == 0
        # P1 back to none: every breach closes with its case.
        p1 = session.scalar(select(RiskPoint).where(RiskPoint.code == "P1"))
        session.add(RiskWarning(risk_point_id=p1.id, identifier="w-clear", msg_type="Update", level="none",
                                previous_level="red", issued_at=NOW + timedelta(seconds=1), reasons={}, unit_path=p1.unit_path))
        session.commit()
        since = outbox_head(store)
        closed = service.run(session, cat, "day", NOW + timedelta(seconds=2), codes={"risk_red"})
        session.commit()
        assert closed.breaches_closed == 3
    envs = deliver(store, "indicators.breach_case", since, twice=True)
    handle_again(store, "indicators.breach_case", envs)
    with store.sessions() as session:
        for old in open_.values():
            b = session.get(Breach, old.id)
            assert b.closed_at is not None and b.recovered_value == 0
            assert session.get(Case, b.case_id).closed_at is not None


def test_a_changed_definition_is_a_new_version_and_history_is_recomputed_with_it(store, tmp_path):
    cat = _catalogue(tmp_path)
    past = NOW - timedelta(days=1)
    with store.sessions() as session:
        _units(session)
        _facts(session)
        service.run(session, cat, "day", past, act=False, codes={"open_cases"})
        session.commit()
        start, _ = period_bounds("day", past)
        row = lambda: session.scalar(select(Value).where(Value.indicator_code == "open_cases", Value.unit_code == D,  # noqa: E731
                                                         Value.period == "day", Value.period_start == start))
        assert (row().version, row().band) == (1, "green")
        # The owner tightens the bands: the same file, red from 3.
        path = tmp_path / "test.toml"
        text = path.read_text(encoding="utf-8")
        first = text.index('code = "open_cases"')
        path.write_text(text[:first] + text[first:].replace("bands = { red = 1000 }", "bands = { red = 3 }", 1), encoding="utf-8")
        changed = catalogues.load_files([path])
        assert changed.indicators["open_cases"].digest() != cat.indicators["open_cases"].digest()
        again = service.run(session, changed, "day", past, act=False, codes={"open_cases"})
        session.commit()
        session.expire_all()
        assert again.updated >= 1 and (row().version, row().band) == (2, "red")
        versions = session.scalars(select(DefinitionVersion.version).where(DefinitionVersion.code == "open_cases")).all()
        assert sorted(versions) == [1, 2]

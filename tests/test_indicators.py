"""Indicators on the demo district, both backends: every value stored, roll-ups that agree at every level, values
equal to the facts they count, the cockpit's board and scope."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, or_, select

from cityops.events.models import Case
from cityops.indicators import catalogue as catalogues
from cityops.indicators import service
from cityops.indicators.compute import compute, period_bounds
from cityops.indicators.models import Value
from cityops.org.models import Unit


@pytest.fixture(scope="module")
def computed(demo_store):
    cat = catalogues.load()
    with demo_store.sessions() as session:
        results = service.run_all(session, cat, act=False)
        session.commit()
    return cat, results


def test_every_period_in_use_is_computed_and_stored(demo_store, computed):
    cat, results = computed
    assert {r.period for r in results} == {i.stored_period for i in cat.indicators.values()}
    with demo_store.sessions() as session:
        stored = set(session.scalars(select(Value.indicator_code).distinct()))
    metric_codes = {c for c, i in cat.indicators.items() if i.source.kind != "reported"}
    # A count of nothing is 0, stored; only a rate over nothing (or a reading never made) has no value.
    assert {"cases_open", "cases_reported", "houses_grade_d", "alarms_open", "risk_points_warned"} <= stored
    assert stored <= set(cat.indicators) and stored & metric_codes


def test_sums_and_ratios_agree_at_every_level(demo_store, computed):
    cat, _ = computed
    with demo_store.sessions() as session:
        units = {u.code: u for u in session.scalars(select(Unit))}
        rows = session.scalars(select(Value)).all()
    by = {(r.indicator_code, r.unit_code, r.period, r.period_start): r for r in rows}
    checked = 0
    for r in rows:
        ind = cat.indicators[r.indicator_code]
        kids = [by.get((r.indicator_code, c, r.period, r.period_start)) for c, u in units.items() if u.parent_code == r.unit_code]
        kids = [k for k in kids if k is not None]
        # Records held by a township itself (a rain gauge of the town) count for it and not for any village: the
        # exact agreement is the district's with its townships'.
        if not kids or ind.rollup not in ("sum", "ratio") or units[r.unit_code].level != "district":
            continue
        if ind.rollup == "sum":
            assert r.value == pytest.approx(sum(k.value for k in kids)), (r.indicator_code, r.unit_code)
        else:
            num, den = sum(k.numerator for k in kids), sum(k.denominator for k in kids)
            assert (r.numerator, r.denominator) == (pytest.approx(num), pytest.approx(den)), (r.indicator_code, r.unit_code)
            assert r.value == pytest.approx(num / den * ind.scale)
        checked += 1
    assert checked >= 15


def test_open_cases_equal_the_cases_open_now(demo_store, computed):
    with demo_store.sessions() as session:
        district = session.scalar(select(Unit).where(Unit.level == "district"))
        start, _ = period_bounds("day", datetime.now(UTC))
        value = session.scalar(select(Value.value).where(Value.indicator_code == "cases_open", Value.unit_code == district.code,
                                                         Value.period == "day", Value.period_start == start))
        open_now = session.scalar(select(func.count()).select_from(Case).where(
            Case.closed_at.is_(None), Case.voided_at.is_(None), Case.merged_into.is_(None)))
    assert open_now > 0 and value == open_now


def test_rerun_writes_nothing_new(demo_store, computed):
    cat, _ = computed
    with demo_store.sessions() as session:
        again = service.run(session, cat, "month", act=False)
        session.rollback()
    assert again.inserted == 0 and again.updated == 0

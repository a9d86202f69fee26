"""Event center catalogues as data: taxonomy validation, legacy aliases, the duty calendar and
working-time deadline arithmetic across weekends, public holidays and adjusted working days (调休)."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from cityops.core.errors import InvalidInput, ValidationFailed
from cityops.events import catalogue
from cityops.events.catalogue import Limit, parse_calendar_data, parse_settings, parse_taxonomy
from cityops.events.workcal import WorkCalendar

CST = ZoneInfo("Asia/Shanghai")


def local(*args) -> datetime:
    return datetime(*args, tzinfo=CST)


@pytest.fixture(scope="module")
def raw_taxonomy():
    return tomllib.loads((catalogue.HERE / "taxonomy.toml").read_text(encoding="utf-8"))


def test_default_taxonomy_loads_with_both_kinds_aliases_and_local_range():
    tax = catalogue.taxonomy()
    assert len(tax.classes) >= 35
    garbage = tax.resolve("06010")
    assert (garbage.kind, garbage.name, str(garbage.limit("normal")), garbage.department_type) == ("matter", "暴露垃圾", "4h", "城管")
    assert garbage.filing and garbage.closing
    # The same digits in both kinds: (kind, code) is the key.
    assert tax.resolve("component:01001").name == "供水井盖"
    # Legacy 4-digit codes resolve through the alias table.
    assert tax.resolve("0101", "component").code == "01001"
    assert tax.resolve("0102", "matter").code == "06010"
    local_class = tax.resolve("10080")
    assert local_class.local and 80 <= int(local_class.code[2:]) <= 999
    # A class without an urgent limit falls back to the normal one.
    assert tax.resolve("06027").limit("urgent") == tax.resolve("06027").limit("normal")


def test_unknown_class_names_the_code():
    with pytest.raises(InvalidInput, match="99999"):
        catalogue.taxonomy().resolve("99999")
    with pytest.raises(InvalidInput, match="kind"):
        catalogue.taxonomy().resolve("06010", "gadget")


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d["classes"][0].update(code="0101"), "5 digits"),
    (lambda d: d["classes"][0].update(code="99001"), "major 99"),
    (lambda d: d["classes"][0].update(code="01085"), "001-079"),
    (lambda d: d["classes"][-1].update(code="10050"), "080-999"),
    (lambda d: d["classes"][0].update(limits={"normal": "4 hours"}), "4h"),
    (lambda d: d["classes"][0].update(limits={"urgent": "2h"}), "limits.normal"),
    (lambda d: d["classes"][0].update(limits={"normal": "4h", "asap": "1h"}), "unknown urgency"),
    (lambda d: d["classes"][0].update(department_type="外星办"), "department_type"),
    (lambda d: d["classes"][0].pop("filing"), "filing is required"),
    (lambda d: d["classes"].append(dict(d["classes"][0])), "listed twice"),
    (lambda d: d["aliases"][0].update(code="01999"), "not a class"),
])
def test_taxonomy_validation_names_each_problem(raw_taxonomy, mutate, problem):
    data = copy.deepcopy(raw_taxonomy)
    mutate(data)
    with pytest.raises(ValidationFailed) as err:
        parse_taxonomy(data)
    assert any(problem in p for p in err.value.details), err.value.details


def test_limit_parsing():
    assert Limit.parse("4h") == Limit(4, "h") and Limit.parse("2d") == Limit(2, "d") and str(Limit.parse("1.5h")) == "1.5h"
    for bad in ("", "4", "h", "-1h", "0d", "2w"):
        with pytest.raises(InvalidInput):
            Limit.parse(bad)


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return catalogue.calendar()


def test_calendar_days(cal):
    assert cal.day_seconds == 7 * 3600  # 08:30-12:00 + 14:00-17:30
    assert cal.is_working_day(local(2026, 11, 23).date())  # Monday
    assert not cal.is_working_day(local(2026, 11, 22).date())  # Sunday
    assert not cal.is_working_day(local(2026, 10, 1).date())  # 国庆
    assert cal.is_working_day(local(2026, 9, 20).date())  # Sunday made a working day (调休)
    assert cal.is_working_day(local(2026, 2, 14).date())  # Saturday before 春节 (调休)
    assert not cal.is_working_day(local(2026, 2, 16).date())  # 春节


@pytest.mark.parametrize("start, limit, expected", [
    # Same day, across the lunch break: 09:00 + 4h = 12:00 (3h) then 14:00-15:00.
    (local(2026, 11, 23, 9, 0), "4h", local(2026, 11, 23, 15, 0)),
    # Friday 16:30 + 4h: 1h on Friday, Saturday off, Sunday 20 Sep is a 调休 working day: 08:30 + 3h.
    (local(2026, 9, 18, 16, 30), "4h", local(2026, 9, 20, 11, 30)),
    # 30 Sep 16:00 + 1 working day (7h): 1.5h, then 国庆 1-7 Oct, then 8 Oct 08:30 + 5.5h = 16:00.
    (local(2026, 9, 30, 16, 0), "1d", local(2026, 10, 8, 16, 0)),
    # Reported on a Saturday: the clock starts on Monday morning.
    (local(2026, 11, 21, 10, 0), "2h", local(2026, 11, 23, 10, 30)),
    # Reported at night: next morning.
    (local(2026, 11, 23, 22, 0), "1h", local(2026, 11, 24, 9, 30)),
    # Ending exactly at the end of a period stays there.
    (local(2026, 11, 23, 8, 30), "3.5h", local(2026, 11, 23, 12, 0)),
    # 13 Feb 2026 (Fri) 17:00 + 2d (14h): 0.5h Fri, Sat 14 Feb is 调休 (7h), 15-23 Feb 春节,
    # 24 Feb 08:30 + 6.5h = 17:00.
    (local(2026, 2, 13, 17, 0), "2d", local(2026, 2, 24, 17, 0)),
])
def test_working_time_deadlines(cal, start, limit, expected):
    deadline = cal.add_limit(start, Limit.parse(limit))
    assert deadline == expected.astimezone(UTC)
    assert cal.between(start, deadline) == pytest.approx(cal.limit_seconds(Limit.parse(limit)))


def test_pause_and_resume_keep_the_remaining_working_time(cal):
    filed = local(2026, 11, 23, 9, 0)
    deadline = cal.add_limit(filed, Limit.parse("4h"))  # 15:00
    paused = local(2026, 11, 23, 10, 0)
    remaining = cal.between(paused, deadline)
    assert remaining == 3 * 3600
    resumed = local(2026, 11, 25, 16, 0)  # two days later
    # 16:00-17:30 on Wednesday (1.5h), then Thursday 08:30 + 1.5h.
    assert cal.add(resumed, remaining) == local(2026, 11, 26, 10, 0).astimezone(UTC)


def test_calendar_rejects_bad_data():
    good = tomllib.loads((catalogue.HERE / "calendar.toml").read_text(encoding="utf-8"))
    for mutate, problem in [
        (lambda d: d.update(timezone="Mars/Olympus"), "timezone"),
        (lambda d: d.update(periods=[["12:00", "08:30"]]), "increasing"),
        (lambda d: d["years"]["2026"]["holidays"].append("2026-02-30"), "not a date"),
        (lambda d: d["years"]["2026"]["workdays"].append("2025-02-08"), "not in 2026"),
        (lambda d: d["years"]["2026"]["workdays"].append("2026-10-01"), "both holiday and workday"),
    ]:
        data = copy.deepcopy(good)
        mutate(data)
        with pytest.raises(ValidationFailed) as err:
            parse_calendar_data(data)
        assert any(problem in p for p in err.value.details), (problem, err.value.details)
    with pytest.raises(InvalidInput):
        catalogue.calendar().add(datetime(2026, 1, 5, 9), 60)  # naive


def test_settings_validation():
    good = tomllib.loads((catalogue.HERE / "events.toml").read_text(encoding="utf-8"))
    assert parse_settings(good).weights["ontime_closure_rate"] == 0.4
    bad = copy.deepcopy(good)
    bad["evaluation"]["weights"]["closure_rate"] = 0.5
    with pytest.raises(ValidationFailed, match="sum to 1"):
        parse_settings(bad)
    bad = copy.deepcopy(good)
    del bad["sla"]
    with pytest.raises(ValidationFailed, match="sla"):
        parse_settings(bad)


def test_between_over_rest_days_and_long_spans(cal):
    assert cal.between(local(2026, 11, 21, 9, 0), local(2026, 11, 22, 18, 0)) == 0  # a weekend holds no working time
    # Reversed: 09:00-12:00 and 14:00-17:30 = 6.5h, negative.
    assert cal.between(local(2026, 11, 23, 18, 0), local(2026, 11, 23, 9, 0)) == -6.5 * 3600
    # Decades apart still answers (no calendar walk limit for a bounded span).
    assert cal.between(local(2000, 1, 3), local(2026, 1, 5)) > 6000 * cal.day_seconds

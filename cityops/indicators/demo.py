"""Demo step ``indicators``: 30 days of history for every indicator of the default catalogue, computed from the
demo's own cases, alarms, warnings, sensors, evacuations and buildings (day by day, as of each day's end), the
current and last month, and a month of reported values entered by their owners. History is not acted upon (no
breach cases for the past); the live refresh does that from now on."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from cityops.core import audit
from cityops.core.storage import storage_of
from cityops.core.types import utcnow
from cityops.demo.generator import DemoContext, register_step
from cityops.indicators import catalogue as catalogues
from cityops.indicators import reports, service
from cityops.indicators.compute import period_bounds, unit_tree
from cityops.indicators.metrics import Registry, registry
from cityops.identity.scope import Scope

HISTORY_DAYS = 30
#: Reported values of the demo: (indicator, district-level value or None, per-township base value).
#: Metrics whose figures do not depend on the period (the registry as it stands): the same in every day of the history.
AS_THEY_STAND = ("housing.buildings",)
REPORTED = (("aqi_good_days", 91.0, None), ("fixed_asset_investment", None, 3.2), ("assistance_on_time", None, 96.0),
            ("party_members_in_grids", None, 40.0), ("volunteer_hours", None, 260.0))


def step_indicators(ctx: DemoContext) -> None:
    cat = catalogues.load()
    now = utcnow()
    actor = audit.Actor("demo:indicators")
    with ctx.sessions() as session:
        tree = unit_tree(session)
        townships = [tree.codes[i] for i in tree.by_level.get("township", [])]
        district = [tree.codes[i] for i in tree.by_level.get("district", [])]
        last_month = period_bounds("month", now)[0] - timedelta(days=1)
        entries = []
        for month in (last_month, now):
            day = month.date().isoformat()
            for code, district_value, base in REPORTED:
                if district_value is not None:
                    entries += [reports.Entry(code, d, day, district_value) for d in district]
                else:
                    entries += [reports.Entry(code, t, day, round(base * (0.7 + 0.6 * ctx.rng.random()), 1)) for t in townships]
        reports.enter(session, cat, Scope(all_units=True), entries, "form", actor)
        values = 0
        metrics = _history_registry()
        # One unit tree for the 33 periods (each run would read it again). ~1.4 million rows go into two tables of
        # four B-trees each: SQLite's default 2 MB page cache would write pages out and read them back throughout.
        with storage_of(session).bulk_cache(session.connection(), 256 * 1024):
            for back in range(HISTORY_DAYS, -1, -1):
                at = now - timedelta(days=back)
                values += service.run(session, cat, "day", at if back else now, act=False, tree=tree, metrics=metrics).values
            for at in (last_month, now):
                values += service.run(session, cat, "month", at, act=False, tree=tree, metrics=metrics).values
        audit.record(session, audit.SYSTEM, "demo.indicators", "indicator_value", "*", after={"values": values})
        session.commit()
    ctx.summary["indicator_values"] = values


def _history_registry() -> Registry:
    """The platform's metrics, those that read their records as they stand (not in the period's window) answering
    each parameter set once: the history's 33 periods would otherwise group the ~100,000 buildings 33 times over
    for the same figures."""
    platform = registry()
    metrics = []
    for metric in platform.metrics.values():
        if metric.name in AS_THEY_STAND:
            metric = replace(metric, compute=_once(metric.compute))
        metrics.append(metric)
    return Registry(metrics)


def _once(compute):
    answers: dict[str, list] = {}

    def cached(session, window, param_sets):
        key = json.dumps(param_sets, sort_keys=True, default=str)
        if key not in answers:
            answers[key] = compute(session, window, param_sets)
        return answers[key]

    return cached


register_step("indicators", step_indicators)

"""Demo steps of the indicators: ``indicators``, the current day and the current and last month of every indicator
of the default catalogue, computed from the demo's own cases, alarms, warnings, sensors, evacuations and buildings,
and a month of reported values entered by their owners; then ``indicators_history``, the 30 days before today (day
by day, as of each day's end). History is not acted upon (no breach cases for the past); the live refresh does that
from now on.

The history is two thirds of the demo's build and nothing needs it to serve (the cockpit's trend shows the days
written so far), so ``cityops demo`` writes it after its server answers: one committed day at a time, so that the
single SQLite writer is free between days for the requests served meanwhile. A day is written whole or not at all,
so a process stopped mid-way leaves whole days, and the next ``cityops demo`` on that directory writes the days
still missing (``pending_history``), for the same 30 days: the ``indicators`` step's audit entry names them."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cityops.core import audit
from cityops.core.storage import storage_of
from cityops.core.types import utcnow
from cityops.demo.generator import DemoContext, register_step
from cityops.indicators import catalogue as catalogues
from cityops.indicators import reports, service
from cityops.indicators.compute import TZ, period_bounds, unit_tree
from cityops.indicators.metrics import Registry, registry
from cityops.indicators.models import Digest
from cityops.identity.scope import Scope

log = logging.getLogger("cityops.demo")
HISTORY_DAYS = 30
#: The audit actions of the two steps: the first names the history's days (``history_until``), the second says
#: the history is whole.
ACTION, HISTORY_ACTION = "demo.indicators", "demo.indicators_history"
#: Page cache of the connection writing the history: ~1.4 million rows go into two tables of four B-trees each, and
#: SQLite's default 2 MB would write pages out and read them back throughout.
CACHE_KIB = 256 * 1024
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
        # The history's registry from here on: its as-they-stand figures are those of the build, whenever the
        # history is written (the simulated grid workers move households once the server answers).
        metrics = _history_registry()
        with storage_of(session).bulk_cache(session.connection(), CACHE_KIB):
            values += service.run(session, cat, "day", now, act=False, tree=tree, metrics=metrics).values
            for at in (last_month, now):
                values += service.run(session, cat, "month", at, act=False, tree=tree, metrics=metrics).values
        audit.record(session, audit.SYSTEM, ACTION, "indicator_value", "*",
                     after={"values": values, "history_days": HISTORY_DAYS, "history_until": now.isoformat()})
        session.commit()
    ctx.summary["indicator_values"] = values
    ctx.carry["indicators_history"] = (metrics, tree)


def step_indicators_history(ctx: DemoContext) -> None:
    metrics, tree = ctx.carry.get("indicators_history", (None, None))
    written = write_history(ctx.sessions, metrics=metrics, tree=tree, progress=ctx.progress)
    ctx.summary["indicator_values"] = ctx.summary.get("indicator_values", 0) + written


def _history_days(session: Session) -> list[datetime]:
    """The history's days still to write (a time in each, oldest first): those of the 30 before the build's day
    without a stored day (its digests are committed with its values)."""
    entry = session.scalar(select(audit.AuditEntry).where(audit.AuditEntry.action == ACTION)
                           .order_by(audit.AuditEntry.id.desc()).limit(1))
    if entry is None or not isinstance(entry.after, dict) or "history_until" not in entry.after:
        return []
    until = datetime.fromisoformat(entry.after["history_until"])
    days = [until - timedelta(days=back) for back in range(int(entry.after.get("history_days", HISTORY_DAYS)), 0, -1)]
    starts = [period_bounds("day", at)[0] for at in days]
    done = set(session.scalars(select(Digest.period_start).where(Digest.period == "day", Digest.period_start.in_(starts))
                               .distinct()))
    return [at for at, start in zip(days, starts) if start not in done]


def pending_history(sessions: sessionmaker[Session]) -> Callable[[], None] | None:
    """What a demo directory's history still needs (a process stopped while writing it): the call that writes the
    missing days, or None when it is whole (or the directory was not built by the demo)."""
    with sessions() as session:
        if not _history_days(session):
            return None
    return lambda: write_history(sessions)


def write_history(sessions: sessionmaker[Session], *, metrics: Registry | None = None, tree=None,
                  progress: Callable[[str], None] | None = None) -> int:
    """Write the history's missing days, one committed day at a time; returns the values stored. Idempotent: a day
    already stored is not written again, and one stopped mid-way was rolled back whole."""
    with sessions() as session:
        todo = _history_days(session)
        if not todo:
            return 0
        tree = tree or unit_tree(session)
    cat = catalogues.load()
    metrics = metrics or _history_registry()
    started = time.perf_counter()
    values = 0
    log.info("indicator history: writing %d days", len(todo), extra={"days": len(todo)})
    with sessions.kw["bind"].connect() as conn, storage_of(conn).bulk_cache(conn, CACHE_KIB):
        conn.commit()  # the pragma's transaction: each day's session begins and commits its own
        for k, at in enumerate(todo, 1):
            with sessions(bind=conn) as session:
                n = service.run(session, cat, "day", at, act=False, tree=tree, metrics=metrics).values
                session.commit()
            values += n
            day = at.astimezone(TZ)
            message = f"indicator history: {day:%Y-%m-%d} written ({k} of {len(todo)} days, {n:,} values)"
            log.info(message, extra={"day": f"{day:%Y-%m-%d}", "done": k, "days": len(todo), "values": n})
            if progress is not None:
                progress(message)
    with sessions() as session:
        audit.record(session, audit.SYSTEM, HISTORY_ACTION, "indicator_value", "*",
                     after={"values": values, "days": len(todo), "seconds": round(time.perf_counter() - started, 1)})
        session.commit()
    log.info("indicator history: whole", extra={"values": values, "seconds": time.perf_counter() - started})
    return values


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
register_step("indicators_history", step_indicators_history, after="indicators", deferrable=True, resume=pending_history)

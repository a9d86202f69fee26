"""Monthly evaluation rollups: the counts of ``evaluation`` per month, kept with every change of a case.

Every evaluation count is "cases whose timestamp X lies in the period and that meet a condition that does not
depend on the period" (filed: ``filed_at``; due, closed, closed on time: ``deadline_at``; handled, reworks:
``handled_at``; dispatched …: ``dispatched_at``; reported, valid, supervised: ``reported_at``). Such counts
add up over disjoint sub-periods, so a period is answered as the sum of the whole months (in the duty
calendar's time zone) it contains, read here, plus the per-case query over the partial months at its ends.

A row is (dimension, month, key, path) → counts. Dimensions: ``grid`` (key grid code, path the case's unit
path: exact for any scope; the area groups are prefixes of the grid code), ``department``, ``reporter``,
``filer``, ``dispatcher`` (path cut at the township, so a year has a few thousand rows, not one per case;
exact for scopes rooted at township level or above — narrower scopes use the per-case query).

Maintenance, by the event center's own writers, in the transaction of the change: ``actions.act`` (every
workflow step, the one writer of a case's progress columns) takes ``values_of(case)`` before it changes the case
and calls ``fold_change`` after, which takes the case's old contributions away and adds the new ones; case
creation adds its new rows (``creation.insert_drafts``). A closure therefore updates the month of the case's
deadline; an extension that moves the deadline moves its due count. Writers that bypass both (bulk loads) call
``rebuild``. There is no session-wide hook: a new writer of those columns calls ``fold_change`` itself, and
``tests/test_events.py`` compares the kept rollups with a rebuild.

Kept on the embedded store only (``enabled``: SQLite). PostgreSQL answers a year of 1,000,000 cases per case in about a second,
and there the rollups cost more than they give: concurrent creations lock the same bucket rows (one
reporter, one month) until they commit, which measurably serialised case intake.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from functools import cache
from operator import itemgetter

from sqlalchemy import Connection, delete, func, select

from cityops.core.storage import Storage, storage_of
from cityops.core.types import LocalPeriodLabel, next_month
from cityops.events import catalogue
from cityops.events.models import Case, EvaluationRollup
from cityops.org.levels import active_levels

PUBLIC_SOURCES = ("public", "open311", "hotline")
METRICS = ("reported", "valid_reports", "filed", "public_filed", "voided", "due", "closed", "closed_on_time",
           "handled", "reworks", "dispatched", "dispatched_on_time", "dispatch_returned", "supervised")
#: Case columns the contributions depend on.
FIELDS = ("source", "state", "grid_code", "unit_path", "department_code", "assigned_unit_code", "reported_by",
          "filed_by", "dispatched_by", "reported_at", "filed_at", "deadline_at", "handled_at", "dispatched_at",
          "dispatch_due_at", "closed_at", "voided_at", "rework_count", "returned_count", "supervision_count")
# The area groups are the levels catalogue's territorial chain (active_levels): unit levels whose codes prefix a
# case's grid code.
DIMENSION_OF = {"department": "department", "reporter": "reporter", "filer": "filer", "dispatcher": "dispatcher"}


def enabled(bind) -> bool:
    """Whether the rollups are kept on the store of ``bind`` (a session or connection): on the embedded one."""
    return storage_of(bind).embedded


def _tz():
    return catalogue.calendar().tz or UTC


_MONTH = LocalPeriodLabel.MONTH("%Y-%m")


def month_key(at: datetime) -> str:
    return _MONTH(at, _tz())


def full_months(start: datetime, end: datetime) -> tuple[list[str], datetime, datetime] | None:
    """The whole calendar months inside [start, end): (keys, first month's start, last month's end), or None."""
    tz = _tz()
    local = start.astimezone(tz)
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if first < start:
        first = next_month(first)
    keys, m = [], first
    while next_month(m) <= end:
        keys.append(m.strftime("%Y-%m"))
        m = next_month(m)
    return (keys, first, m) if keys else None


def _township_path(path: str) -> str:
    codes = [c for c in path.strip("/").split("/") if c]
    township = active_levels().code_length("township")
    for i, code in enumerate(codes):
        if len(code) >= township:
            return "/" + "/".join(codes[: i + 1]) + "/"
    return path


def scope_fits(scope, group: str) -> bool:
    """Whether the rollup answers ``group`` exactly for ``scope`` (see the module docstring)."""
    if group in active_levels().territorial_chain or scope.all_units:
        return True
    township = active_levels().code_length("township")
    return all(len(_last_code(root)) <= township for root in scope.unit_paths)


def _last_code(path: str) -> str:
    codes = [c for c in path.strip("/").split("/") if c]
    return codes[-1] if codes else ""


def contributions(v) -> dict[tuple[str, str, str, str], dict[str, int]]:
    """What one case (a mapping of FIELDS) adds to the rollups: {(dim, month, key, path): {metric: n}}."""
    if v is None or v["reported_at"] is None:
        return {}
    facts: list[tuple[datetime, str, int]] = [(v["reported_at"], "reported", 1)]
    if v["filed_at"] is not None:
        facts.append((v["reported_at"], "valid_reports", 1))
    if (v["supervision_count"] or 0) > 0:
        facts.append((v["reported_at"], "supervised", 1))
    if v["filed_at"] is not None:
        facts.append((v["filed_at"], "filed", 1))
        if v["source"] in PUBLIC_SOURCES:
            facts.append((v["filed_at"], "public_filed", 1))
        if v["voided_at"] is not None:
            facts.append((v["filed_at"], "voided", 1))
    if v["deadline_at"] is not None and v["state"] not in ("backlogged", "void"):
        facts.append((v["deadline_at"], "due", 1))
        if v["closed_at"] is not None:
            facts.append((v["deadline_at"], "closed", 1))
            if v["closed_at"] <= v["deadline_at"]:
                facts.append((v["deadline_at"], "closed_on_time", 1))
    if v["handled_at"] is not None:
        facts.append((v["handled_at"], "handled", 1))
        if v["rework_count"]:
            facts.append((v["handled_at"], "reworks", v["rework_count"]))
    if v["dispatched_at"] is not None:
        facts.append((v["dispatched_at"], "dispatched", 1))
        if v["dispatch_due_at"] is not None and v["dispatched_at"] <= v["dispatch_due_at"]:
            facts.append((v["dispatched_at"], "dispatched_on_time", 1))
        if (v["returned_count"] or 0) > 0:
            facts.append((v["dispatched_at"], "dispatch_returned", 1))
    town = _township_path(v["unit_path"])
    keys = [("grid", v["grid_code"], v["unit_path"]),
            ("department", v["department_code"] or v["assigned_unit_code"], town),
            ("reporter", v["reported_by"], town), ("filer", v["filed_by"], town), ("dispatcher", v["dispatched_by"], town)]
    out: dict = defaultdict(lambda: defaultdict(int))
    months: dict = {}
    for at, metric, n in facts:
        month = months.get(at)
        if month is None:
            month = months[at] = month_key(at)
        for dim, key, path in keys:
            if key is not None:
                out[(dim, month, key, path)][metric] += n
    return out


def _delta(old, new) -> list[dict]:
    rows = []
    for bucket in set(old) | set(new):
        o, n = old.get(bucket, {}), new.get(bucket, {})
        d = {m: n.get(m, 0) - o.get(m, 0) for m in METRICS}
        if any(d.values()):
            rows.append(dict(zip(("dim", "month", "key", "path"), bucket), **d))
    return rows


_BUCKET = ("dim", "month", "key", "path")
_COLUMNS = (*_BUCKET, *METRICS)


def _upsert(conn: Connection, rows: list[dict]) -> None:
    if not rows:
        return
    # One order for every writer: on PostgreSQL concurrent transactions lock the rows they upsert, and two
    # creations taking the same buckets in different orders deadlock.
    rows = sorted(rows, key=lambda r: (r["dim"], r["month"], r["key"], r["path"]))
    sql, order = _upsert_sql(storage_of(conn), conn.dialect)
    # On the driver, the statement compiled once: the values are text and integers (nothing to process), and
    # SQLAlchemy's executemany built a parameter set per row (a tenth of the case writer's time on SQLite); on
    # SQLite multi-row statements (``Storage.execute_rows``).
    if order is None:
        conn.exec_driver_sql(sql, [{c: r[c] for c in _COLUMNS} for r in rows])
    else:
        get = itemgetter(*order)
        storage_of(conn).execute_rows(conn, sql, [get(r) for r in rows])


_UPSERT_SQL: dict = {}  # (dialect name, driver) → _upsert_sql's answer


def _upsert_sql(storage: Storage, dialect) -> tuple[str, tuple | None]:
    """The bucket upsert's SQL for ``dialect`` and, for a driver with positional parameters, their order."""
    key = (dialect.name, dialect.driver)
    found = _UPSERT_SQL.get(key)
    if found is None:
        compiled = _upsert_statement(storage).compile(dialect=dialect, column_keys=list(_COLUMNS), for_executemany=True)
        found = _UPSERT_SQL[key] = (compiled.string, tuple(compiled.positiontup) if compiled.positional else None)
    return found


@cache
def _upsert_statement(storage: Storage):
    """The bucket upsert, built once per backend: building it (14 ``+ excluded`` expressions) took about as long
    as running it, on every case creation."""
    ins = storage.insert(EvaluationRollup)
    return ins.on_conflict_do_update(index_elements=["dim", "month", "key", "path"],
                                     set_={m: getattr(EvaluationRollup, m) + getattr(ins.excluded, m) for m in METRICS})


def apply_changes(conn: Connection, new_cases: list, changed: dict[int, object | None]) -> None:
    """Fold changes in: ``new_cases`` (mappings of at least FIELDS: new rows), ``changed`` {case id: Case object or
    None when deleted}. The stored rows (before this flush) give what the changed cases contributed so far."""
    old_rows = {}
    if changed:
        cols = [getattr(Case, f) for f in FIELDS]
        old_rows = {r.id: r._mapping for r in conn.execute(select(Case.id, *cols).where(Case.id.in_(list(changed))))}
    old: dict = defaultdict(lambda: defaultdict(int))
    new: dict = defaultdict(lambda: defaultdict(int))
    for row in new_cases:
        _add(new, contributions(row))
    for cid, case in changed.items():
        _add(old, contributions(old_rows.get(cid)))
        if case is not None:
            _add(new, contributions({f: getattr(case, f) for f in FIELDS}))
    _upsert(conn, _delta(old, new))


_ZEROS = dict.fromkeys(METRICS, 0)
#: The facts of a case besides its report: a case with none of them (and never supervised) counts "reported" only.
_LATER = ("filed_at", "deadline_at", "handled_at", "dispatched_at")


def new_case_rows(cases: list) -> list[dict]:
    """The rollup rows ``apply_changes(conn, cases, {})`` upserts for new cases (mappings of at least FIELDS), in
    one pass over the group: a case just reported adds 1 to "reported" in its month for each of its dimensions'
    keys, counted per bucket together; any other case goes through ``contributions``. Per case the general path
    built two nested dicts and a township path (a fifth of the case writer's Python per case on SQLite)."""
    acc: dict = defaultdict(lambda: defaultdict(int))
    reported: dict = defaultdict(int)
    towns: dict = {}
    for v in cases:
        at = v.get("reported_at")
        if at is None:
            continue
        if any(v.get(f) is not None for f in _LATER) or (v.get("supervision_count") or 0) > 0:
            _add(acc, contributions({f: v.get(f) for f in FIELDS}))
            continue
        month, path = month_key(at), v["unit_path"]
        town = towns.get(path)
        if town is None:
            town = towns[path] = _township_path(path)
        for dim, key, where in (("grid", v.get("grid_code"), path),
                                ("department", v.get("department_code") or v.get("assigned_unit_code"), town),
                                ("reporter", v.get("reported_by"), town), ("filer", v.get("filed_by"), town),
                                ("dispatcher", v.get("dispatched_by"), town)):
            if key is not None:
                reported[(dim, month, key, where)] += 1
    if not acc:  # only new reports: a row per bucket, "reported" its count (what _delta would give)
        return [{**dict(zip(_BUCKET, bucket)), **_ZEROS, "reported": n} for bucket, n in reported.items()]
    for bucket, n in reported.items():
        acc[bucket]["reported"] += n
    return _delta({}, acc)


def add_new_cases(conn: Connection, cases: list) -> None:
    """``apply_changes(conn, cases, {})`` for new cases, through ``new_case_rows``."""
    _upsert(conn, new_case_rows(cases))


def values_of(case) -> dict:
    """The FIELDS of a case as they are now: take them before changing a case, for ``fold_change``."""
    return {f: getattr(case, f) for f in FIELDS}


def fold_change(session, before: dict, case) -> None:
    """Fold one case's change into the rollups, in the change's transaction: what it contributed with ``before``
    (``values_of`` taken before the change) taken away, what it contributes now added."""
    after = values_of(case)
    if after == before:
        return
    conn = session.connection()
    if enabled(conn):
        _upsert(conn, _delta(contributions(before), contributions(after)))


def _add(acc, contrib) -> None:
    for bucket, counts in contrib.items():
        for m, n in counts.items():
            acc[bucket][m] += n


def rebuild(conn: Connection, batch: int = 20_000) -> int:
    """Recompute every rollup from ``event_cases`` (after bulk loads that bypass the ORM); returns the row count."""
    conn.execute(delete(EvaluationRollup))
    if not enabled(conn):
        return 0
    acc: dict = defaultdict(lambda: defaultdict(int))
    cols = [getattr(Case, f) for f in FIELDS]
    last = 0
    while True:
        rows = conn.execute(select(Case.id, *cols).where(Case.id > last).order_by(Case.id).limit(batch)).all()
        if not rows:
            break
        for r in rows:
            _add(acc, contributions(r._mapping))
        last = rows[-1].id
    out = [dict(zip(("dim", "month", "key", "path"), b), **{m: c.get(m, 0) for m in METRICS}) for b, c in acc.items()]
    for i in range(0, len(out), 10_000):
        _upsert(conn, out[i:i + 10_000])
    return len(out)


def counts(session, scope, months: list[str], group: str) -> dict[str, dict[str, int]]:
    """Sums of the rollups of ``months`` per group key, within ``scope``."""
    r = EvaluationRollup
    if group in active_levels().territorial_chain:
        n = None if group == "grid" else active_levels().code_length(group)
        key, dim = (r.key if n is None else func.substr(r.key, 1, n)), "grid"
    else:
        key, dim = r.key, DIMENSION_OF[group]
    key = key.label("key")
    stmt = (select(key, *[func.sum(getattr(r, m)).label(m) for m in METRICS])
            .where(r.dim == dim, r.month.in_(months), scope.covers_clause(r.path))
            .group_by(key))
    return {row.key: {m: int(getattr(row, m) or 0) for m in METRICS} for row in session.execute(stmt)}

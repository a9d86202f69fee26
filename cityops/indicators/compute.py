"""Computing indicators for every unit of the district and one period, storing values and judging them.

One pass per period: every platform metric is asked once (a metric answers all its parameter sets together,
for every unit at once — one grouped query, not one per unit), each record's figures are added to its unit and
every ancestor of it (a sparse unit × unit matrix), then reported values and formulas follow. So a district's
sum or ratio is by construction the same as its townships' (ratios are rolled up as the ratio of the summed
numerators and denominators, never as a mean of ratios); mean/max/min/worst roll up level by level from the
lowest level an indicator is computed at.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from cityops.core.storage import storage_of
from cityops.core.types import utcnow
from cityops.indicators.catalogue import Catalogue, Indicator, unit_levels
from cityops.core.metrics import Window
from cityops.indicators.metrics import Registry, registry as default_registry
from cityops.indicators.models import Change, DefinitionVersion, Digest, Report, Value
from cityops.org.models import Unit

#: The local calendar of periods (days, months start at local midnight).
TZ = ZoneInfo("Asia/Shanghai")
PERIOD_KINDS = ("hour", "day", "week", "month", "quarter")


def period_bounds(kind: str, at: datetime) -> tuple[datetime, datetime]:
    """The period of ``kind`` holding ``at``: [start, end) in UTC, aligned to the local calendar."""
    if kind not in PERIOD_KINDS:
        raise ValueError(f"unknown period {kind!r}; use {', '.join(PERIOD_KINDS)}")
    local = at.astimezone(TZ)
    if kind == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif kind == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=1, hours=2)).replace(hour=0)
    elif kind == "week":
        start = (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=7, hours=2)).replace(hour=0)
    else:
        months = 1 if kind == "month" else 3
        first_month = local.month if kind == "month" else 3 * ((local.month - 1) // 3) + 1
        start = local.replace(month=first_month, day=1, hour=0, minute=0, second=0, microsecond=0)
        y, m = divmod(first_month - 1 + months, 12)
        end = start.replace(year=start.year + y, month=m + 1)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass
class UnitTree:
    codes: list[str]
    paths: list[str]
    levels: list[str]
    parent: np.ndarray  # index of the parent unit, -1 at the root(s)
    index: dict[str, int]
    #: ancestor-or-self matrix: (A @ own)[i] = the total of unit i's subtree.
    ancestors: sparse.csr_matrix
    by_level: dict[str, list[int]]
    _path_cache: dict[str, int] = field(default_factory=dict)
    _level_arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def locate(self, key: str) -> int | None:
        """The unit a record belongs to: its unit code, or the deepest known unit of its unit path."""
        hit = self._path_cache.get(key)
        if hit is not None or key in self._path_cache:
            return hit
        if key.startswith("/"):
            found = None
            for code in reversed(key.strip("/").split("/")):
                if code in self.index:
                    found = self.index[code]
                    break
        else:
            found = self.index.get(key)
        self._path_cache[key] = found
        return found

    def level_index(self, level: str) -> np.ndarray:
        """The units of ``level`` (indices, read only: shared by every caller)."""
        out = self._level_arrays.get(level)
        if out is None:
            out = np.asarray(self.by_level.get(level, []), dtype=np.int64)
            out.flags.writeable = False
            self._level_arrays[level] = out
        return out


def unit_tree(session: Session) -> UnitTree:
    from scipy import sparse  # here, not at import: the catalogue's check at every start needs none of it

    rows = session.execute(select(Unit.code, Unit.path, Unit.level, Unit.parent_code)
                           .where(Unit.level.in_(unit_levels())).order_by(Unit.path)).all()
    codes = [r.code for r in rows]
    index = {c: i for i, c in enumerate(codes)}
    parent = np.array([index.get(r.parent_code, -1) if r.parent_code else -1 for r in rows], dtype=np.int64)
    # Ancestor-or-self pairs one tree level at a time (a handful of array passes, not a walk per unit).
    n = len(codes)
    rows_i, cols_i = [], []
    own, at = np.arange(n), np.arange(n)
    while len(at):
        rows_i.append(at)
        cols_i.append(own)
        up = parent[at]
        keep = up >= 0
        own, at = own[keep], up[keep]
    rows_i, cols_i = np.concatenate(rows_i), np.concatenate(cols_i)
    ancestors = sparse.csr_matrix((np.ones(len(rows_i)), (rows_i, cols_i)), shape=(n, n))
    by_level: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_level[r.level].append(i)
    return UnitTree(codes, [r.path for r in rows], [r.level for r in rows], parent, index, ancestors, dict(by_level))


@dataclass
class Computed:
    """Values of one period: per indicator an array over the units (NaN = no value), with numerators/denominators."""

    period: str
    start: datetime
    end: datetime
    tree: UnitTree
    values: dict[str, np.ndarray]
    numerators: dict[str, np.ndarray]
    denominators: dict[str, np.ndarray]
    versions: dict[str, int] = field(default_factory=dict)


def _roll(values: np.ndarray, tree: UnitTree, lowest: str, how: str, direction: str, keep_own: bool = False) -> np.ndarray:
    """Fill the levels above ``lowest`` from their children (sum, mean, max, min or worst), level by level, each
    level in one vectorised pass. ``keep_own``: a unit's own value (a reported one) wins over its children's."""
    out = np.full(len(tree.codes), np.nan)
    chain = unit_levels()
    low = chain.index(lowest)
    for level in chain[:low + 1] if keep_own else (lowest,):
        idx = tree.level_index(level)
        out[idx] = values[idx]
    if how == "worst":
        how = "max" if direction == "lower" else "min"
    for child_level in reversed(chain[1:low + 1]):
        kids = tree.level_index(child_level)
        kids = kids[~np.isnan(out[kids]) & (tree.parent[kids] >= 0)]
        if not len(kids):
            continue
        parents, vals = tree.parent[kids], out[kids]
        n = len(tree.codes)
        if how in ("sum", "mean"):
            total, count = np.zeros(n), np.zeros(n)
            np.add.at(total, parents, vals)
            np.add.at(count, parents, 1)
            agg = total if how == "sum" else total / np.where(count > 0, count, 1)
        else:
            agg = np.full(n, -np.inf if how == "max" else np.inf)
            (np.maximum if how == "max" else np.minimum).at(agg, parents, vals)
            count = np.isfinite(agg).astype(float)
        target = np.flatnonzero(count > 0)
        if keep_own:
            target = target[np.isnan(out[target])]
        out[target] = agg[target]
    return out


def compute(session: Session, cat: Catalogue, period: str, at: datetime, *, metrics: Registry | None = None,
            codes: set[str] | None = None, tree: UnitTree | None = None) -> Computed:
    """Every indicator of ``cat`` stored per ``period`` (hour/day/…), for the period holding ``at`` and every
    unit; state measures are taken at the period's end, or now while it runs."""
    metrics = metrics or default_registry()
    tree = tree or unit_tree(session)
    start, end = period_bounds(period, at)
    window = Window(start, min(end, utcnow()))
    n = len(tree.codes)
    wanted = {c: i for c, i in cat.indicators.items() if i.stored_period == period and (codes is None or c in codes)}
    # Formula inputs of another period are read as they stand in this one.
    for code in list(wanted):
        if code in cat.formulas:
            for dep in cat.formulas[code].inputs:
                wanted.setdefault(dep, cat.indicators[dep])
    values: dict[str, np.ndarray] = {}
    nums: dict[str, np.ndarray] = {}
    dens: dict[str, np.ndarray] = {}

    # 1. Platform metrics: each distinct (metric, parameters) once, each metric with all its parameter sets.
    requests: dict[str, dict[str, dict]] = defaultdict(dict)
    key_of: dict[str, str] = {}
    for code, ind in wanted.items():
        if ind.source.kind == "metric":
            key = key_of[code] = json.dumps(ind.source.params, sort_keys=True)
            if key not in requests[ind.source.metric]:
                requests[ind.source.metric][key] = metrics.get(ind.source.metric).resolved(ind.source.params)
    answers: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for name, sets in requests.items():
        metric = metrics.get(name)
        keys = list(sets)
        results = metric.compute(session, window, [sets[k] for k in keys])
        if metric.fold == "sum":
            # Every parameter set's own figures as two columns of one matrix, summed into every ancestor in one
            # sparse product (the records' unit keys are looked up once per distinct key).
            own = np.zeros((n, 2 * len(keys)))
            for k, result in enumerate(results):
                if not result:
                    continue
                idx = np.fromiter((-1 if (i := tree.locate(u)) is None else i for u in result), np.int64, len(result))
                pairs = np.array(list(result.values()), dtype=object).reshape(len(result), 2)
                found = idx >= 0
                np.add.at(own[:, 2 * k], idx[found], pairs[found, 0].astype(float))
                den = pairs[found, 1]
                np.add.at(own[:, 2 * k + 1], idx[found], np.where(den == None, 0.0, den).astype(float))  # noqa: E711
            total = np.asarray(tree.ancestors @ own)
            for k, key in enumerate(keys):
                answers[(name, key)] = (total[:, 2 * k], total[:, 2 * k + 1])
            continue
        for key, result in zip(keys, results):
            own_num = np.full(n, np.nan)
            for unit_key, (num, _den) in result.items():
                i = tree.locate(unit_key)
                if i is not None:
                    own_num[i] = num if np.isnan(own_num[i]) else (max if metric.fold == "max" else min)(own_num[i], num)
            answers[(name, key)] = (_fold_extreme(own_num, tree, metric.fold), np.zeros(n))

    # 2. Reported values: a unit's own entry, else its children's, level by level.
    reported = [c for c, i in wanted.items() if i.source.kind == "reported"]
    entries: dict[str, dict[int, float]] = defaultdict(dict)
    if reported:
        for r in session.execute(select(Report.indicator_code, Report.unit_code, Report.value)
                                 .where(Report.indicator_code.in_(reported), Report.period == period,
                                        Report.period_start == start)):
            i = tree.index.get(r.unit_code)
            if i is not None:
                entries[r.indicator_code][i] = r.value

    for code, ind in wanted.items():
        src = ind.source
        if src.kind == "metric":
            num, den = answers[(src.metric, key_of[code])]
            metric = metrics.get(src.metric)
            if ind.rollup == "ratio":
                with np.errstate(invalid="ignore", divide="ignore"):
                    v = np.where(den > 0, num / np.where(den > 0, den, 1) * ind.scale, np.nan)
            elif metric.fold != "sum":
                v = num * ind.scale
            elif metric.ratio:
                with np.errstate(invalid="ignore", divide="ignore"):
                    v = np.where(den > 0, num / np.where(den > 0, den, 1) * ind.scale, np.nan)
            else:
                v = num * ind.scale
            if ind.rollup in ("mean", "max", "min", "worst"):
                v = _roll(v, tree, _lowest(ind), ind.rollup, ind.direction)
            values[code], nums[code], dens[code] = v, num, den
        elif src.kind == "reported":
            values[code] = _reported(entries.get(code, {}), tree, ind)
    for code in cat.formula_order:
        if code not in wanted:
            continue
        formula = cat.formulas[code]
        env = {dep: values.get(dep, np.full(n, np.nan)) for dep in formula.inputs}
        v = np.asarray(formula.evaluate_array(env), dtype=float) * cat.indicators[code].scale
        v = np.where(np.isinf(v), np.nan, v) if v.shape == (n,) else np.full(n, float(v) if np.ndim(v) == 0 else np.nan)
        values[code] = v
    # Only the levels each indicator is computed at.
    level_of = np.array(tree.levels)
    masks: dict[tuple, np.ndarray] = {}
    for code, ind in wanted.items():
        key = tuple(ind.levels)
        if key not in masks:
            masks[key] = ~np.isin(level_of, key)
        if masks[key].any():
            values[code] = np.where(masks[key], np.nan, values[code])
    return Computed(period, start, end, tree, values, nums, dens)


def _lowest(ind: Indicator) -> str:
    return max(ind.levels, key=unit_levels().index)


def _fold_extreme(own: np.ndarray, tree: UnitTree, fold: str) -> np.ndarray:
    """A unit's highest (lowest) record in its subtree: its own, or its children's, level by level."""
    out = own.copy()
    for child_level in reversed(unit_levels()[1:]):
        kids = tree.level_index(child_level)
        kids = kids[~np.isnan(out[kids]) & (tree.parent[kids] >= 0)]
        if len(kids):
            (np.fmax if fold == "max" else np.fmin).at(out, tree.parent[kids], out[kids])
    return out


def _reported(own: dict[int, float], tree: UnitTree, ind: Indicator) -> np.ndarray:
    v = np.full(len(tree.codes), np.nan)
    for i, value in own.items():
        v[i] = value
    how = ind.rollup if ind.rollup in ("sum", "mean", "max", "min", "worst") else "sum"
    return _roll(v, tree, "grid", how, ind.direction, keep_own=True)


# -------------------------------------------------------------------------------------------------- storing

def sync_versions(session: Session, cat: Catalogue) -> dict[str, int]:
    """The version in force of every indicator; a changed definition gets the next version (from now)."""
    latest: dict[str, DefinitionVersion] = {}
    # Columns, not ORM objects: the stored definitions (JSON) are never needed here.
    for row in session.execute(select(DefinitionVersion.code, DefinitionVersion.version, DefinitionVersion.digest)
                               .order_by(DefinitionVersion.code, DefinitionVersion.version)):
        latest[row.code] = row
    out = {}
    for code, ind in cat.indicators.items():
        digest = definition_digest(ind)
        row = latest.get(code)
        if row is None or row.digest != digest:
            version = 1 if row is None else row.version + 1
            session.add(DefinitionVersion(code=code, version=version, digest=digest, definition=ind.model_dump()))
            out[code] = version
        else:
            out[code] = row.version
    session.flush()
    return out


#: Definition digests by object: an ``Indicator`` is frozen, so its digest never changes (a changed definition is a
#: new object, checked by identity). Bounded: cleared when it grows past what a few catalogues hold.
_DEFINITION_DIGESTS: dict[int, tuple[Indicator, str]] = {}


def definition_digest(ind: Indicator) -> str:
    hit = _DEFINITION_DIGESTS.get(id(ind))
    if hit is not None and hit[0] is ind:
        return hit[1]
    if len(_DEFINITION_DIGESTS) > 50_000:
        _DEFINITION_DIGESTS.clear()
    digest = ind.digest()
    _DEFINITION_DIGESTS[id(ind)] = (ind, digest)
    return digest


@dataclass
class StoreResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    changes: list[dict] = field(default_factory=list)


BAND_CODES = ("green", "yellow", "orange", "red")


def bands_of(ind: Indicator, v: np.ndarray) -> np.ndarray:
    """``Indicator.band`` over an array: 0 green … 3 red, -1 no value."""
    out = np.where(np.isnan(v), -1, 0)
    for rank, name in ((1, "yellow"), (2, "orange"), (3, "red")):
        t = getattr(ind.bands, name)
        if t is not None:
            with np.errstate(invalid="ignore"):
                reached = v >= t if ind.direction == "lower" else v <= t
            out = np.where(reached & ~np.isnan(v), rank, out)
    return out


def bands_matrix(inds: list[Indicator], v: np.ndarray) -> np.ndarray:
    """``bands_of`` for many indicators at once: ``v`` holds one row per indicator; one pass per band over the whole
    matrix instead of a few NumPy calls per indicator (the catalogue has hundreds)."""
    lower = np.array([ind.direction == "lower" for ind in inds], dtype=bool)[:, None]
    missing = np.isnan(v)
    out = np.where(missing, -1, 0)
    for rank, name in ((1, "yellow"), (2, "orange"), (3, "red")):
        t = np.array([np.nan if getattr(ind.bands, name) is None else getattr(ind.bands, name) for ind in inds])[:, None]
        with np.errstate(invalid="ignore"):
            reached = np.where(lower, v >= t, v <= t)  # a missing threshold (NaN) is never reached
        out = np.where(reached & ~missing, rank, out)
    return out


def _digest(version: int, idx: np.ndarray, v: np.ndarray, band: np.ndarray, num, den, units: bytes) -> str:
    """What a stored period of one indicator holds: version, units, and the values present (``idx``: the units that
    have one; ``v`` and ``band`` at those units), with their bands, numerators and denominators."""
    h = hashlib.blake2b(units, digest_size=16)
    h.update(version.to_bytes(4, "little"))
    h.update(idx.astype(np.int32).tobytes())
    h.update(v.tobytes())
    h.update(band.astype(np.int8).tobytes())
    for arr in (num, den):
        if arr is not None:
            h.update(np.nan_to_num(np.asarray(arr, dtype=float)[idx], nan=-1.5e308).tobytes())
    return h.hexdigest()


def store(session: Session, cat: Catalogue, computed: Computed, versions: dict[str, int]) -> StoreResult:
    """Upsert the period's values and write a change row for each new value or changed number/band. Each
    indicator's whole array has a digest (``indicator_digests``, written with the values): an indicator whose
    digest is unchanged is skipped without reading its rows, and the others are compared over arrays — a recompute
    that changes little reads and writes little. The caller commits."""
    tree, period, start = computed.tree, computed.period, computed.start
    n = len(tree.codes)
    codes = [c for c in computed.values if cat.indicators[c].stored_period == period]
    units_key = hashlib.blake2b("\n".join(tree.codes).encode(), digest_size=16).digest()
    now = utcnow()
    result = StoreResult()
    prepared, digests = {}, {}
    # Only the units of the levels the indicators are computed at (every other unit is NaN by construction): the
    # district, townships and villages, not the thousands of grids, are rounded, banded and hashed, all indicators
    # in one matrix.
    used = sorted({lv for c in codes for lv in cat.indicators[c].levels})
    live = np.flatnonzero(np.isin(np.asarray(tree.levels), used))
    if codes:
        values = np.empty((len(codes), len(live)))
        for k, code in enumerate(codes):
            values[k] = computed.values[code][live]
        values = np.round(values, 6)
        bands = bands_matrix([cat.indicators[c] for c in codes], values)
    for k, code in enumerate(codes):
        v, band = values[k], bands[k]
        num, den = computed.numerators.get(code), computed.denominators.get(code)
        prepared[code] = (v, band, num, den)
        here = np.flatnonzero(~np.isnan(v))
        digests[code] = _digest(versions[code], live[here], v[here], band[here], num, den, units_key)
    stored = dict(session.execute(select(Digest.indicator_code, Digest.digest).where(
        Digest.period == period, Digest.period_start == start)).all()) if codes else {}
    todo = [c for c in codes if stored.get(c) != digests[c]]
    result.unchanged = sum(int((~np.isnan(prepared[c][0])).sum()) for c in codes if c not in todo)
    slot = {c: k for k, c in enumerate(todo)}
    old_value = np.full((len(todo), n), np.nan)
    old_num = np.full((len(todo), n), np.nan)
    old_den = np.full((len(todo), n), np.nan)
    old_band = np.full((len(todo), n), -2)
    old_id = np.zeros((len(todo), n), dtype=np.int64)
    rank = {b: i for i, b in enumerate(BAND_CODES)}
    for chunk in (todo[i:i + 500] for i in range(0, len(todo), 500)):
        # Core rows, not ORM objects: a first-time period of the city-scale catalogue is ~200,000 rows.
        t = Value.__table__.c
        for rid, code, unit, value, band, num, den in session.connection().execute(
                select(t.id, t.indicator_code, t.unit_code, t.value, t.band, t.numerator, t.denominator)
                .where(t.period == period, t.period_start == start, t.indicator_code.in_(chunk))):
            i = tree.index.get(unit)
            if i is None:
                continue
            k = slot[code]
            old_id[k, i] = rid
            old_value[k, i] = np.nan if value is None else value
            old_num[k, i] = np.nan if num is None else num
            old_den[k, i] = np.nan if den is None else den
            old_band[k, i] = rank.get(band, -1)
    inserts, updates, changes = [], [], []

    def same(a, b):
        return (a == b) | (np.isnan(a) & np.isnan(b))

    for code in todo:
        k, (v_live, band_live, num, den) = slot[code], prepared[code]
        v, band = np.full(n, np.nan), np.full(n, -1)
        v[live], band[live] = v_live, band_live
        present = ~np.isnan(v)
        exists = old_id[k] > 0
        unchanged = exists & (band == old_band[k]) & same(v, old_value[k])
        if num is not None:
            unchanged &= same(num, old_num[k]) & same(den, old_den[k])
        changed = present & ~unchanged
        result.unchanged += int((present & unchanged).sum())
        moved = changed & ~(exists & (band == old_band[k]) & same(v, old_value[k]))  # value or band: the stream's
        for i in np.flatnonzero(changed):
            value, b = float(v[i]), BAND_CODES[band[i]]
            row = dict(indicator_code=code, version=versions[code], unit_code=tree.codes[i], unit_path=tree.paths[i],
                       level=tree.levels[i], period=period, period_start=start, value=value,
                       numerator=None if num is None else float(num[i]),
                       denominator=None if den is None else float(den[i]), band=b, computed_at=now)
            if exists[i]:
                updates.append({**row, "id": int(old_id[k, i])})
            else:
                inserts.append(row)
            if moved[i]:
                changes.append(dict(indicator_code=code, unit_code=tree.codes[i], unit_path=tree.paths[i], period=period,
                                    period_start=start, value=value, band=b,
                                    previous_band=BAND_CODES[old_band[k, i]] if old_band[k, i] >= 0 else None, at=now))
    if inserts or updates or changes or todo:
        # The streams read the changes after the last id they sent, so ids must be given in commit order: on
        # PostgreSQL two recomputations (two worker processes) could take ids and commit the other way round, and a
        # stream that had read the later ids would never send the earlier. One writer of values at a time, taken
        # before its first row lock (a writer holding value rows while waiting for it could deadlock with one
        # holding it).
        storage_of(session).serialize(session, "indicator_changes")
    storage = storage_of(session)
    if inserts:
        # On the driver (SQLite: one bind processor per column; PostgreSQL: COPY): SQLAlchemy's executemany built a
        # parameter set per row, most of a first-time period's time (the demo's 30 days: ~700,000 rows each table).
        storage.insert_rows(session, Value, inserts)
    if updates:
        session.execute(update(Value.__table__).where(Value.__table__.c.id == bindparam("b_id")).values(
            {c: bindparam(c) for c in ("version", "value", "numerator", "denominator", "band", "computed_at")}),
            [{**{c: u[c] for c in ("version", "value", "numerator", "denominator", "band", "computed_at")}, "b_id": u["id"]}
             for u in updates])
    if changes:
        storage.insert_rows(session, Change, changes)
    if todo:
        session.execute(delete(Digest).where(Digest.period == period, Digest.period_start == start,
                                             Digest.indicator_code.in_(todo)))
        session.execute(Digest.__table__.insert(), [dict(indicator_code=c, period=period, period_start=start,
                                                         digest=digests[c], computed_at=now) for c in todo])
    result.inserted, result.updated, result.changes = len(inserts), len(updates), changes
    return result

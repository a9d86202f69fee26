"""The indicator catalogue (指标体系): sectors (板块) → runways (跑道) → sub-runways (子跑道) → indicators, as data.

The shipped pack (``catalogues/default.toml``) is read first, then every ``*.toml`` of the deployment's directory
(Settings ``indicators_dir``) in name order: a district adds its own sectors, runways, sub-runways, indicators and
scorecards, and names the subset each township runs (``[[township]]``). Everything is validated together at
start-up; every problem names its file, line and field, and one bad file stops the start (all or nothing).

File format (one or more of each table array, any order):

    version = 1
    [[sector]]     code, name_zh, name_en, owner
    [[runway]]     code, sector, name_zh, name_en, owner, leader?
    [[subrunway]]  code, runway, name_zh, name_en, owner, levels, issued = "city" | "local"
    [[indicator]]  code (an identifier: formulas name it), subrunway, name_zh, name_en, definition, unit,
                   direction = "lower" | "higher", period = live|hourly|daily|weekly|monthly|quarterly, target?,
                   bands = {yellow?, orange?, red} (thresholds entered at: ≥ for lower-better, ≤ for higher-better),
                   levels, rollup = sum|ratio|mean|max|min|worst|formula, scale?, owner,
                   source = {kind = "metric", metric, params} | {kind = "reported", due_day?, remind_days?}
                          | {kind = "formula", expr},
                   breach? = {open_case = true, case_class = "10082"}
    [[scorecard]]  key, name_zh, name_en, level, items = [{indicator, weight, rule = linear|bands, floor?, target?}]
    [[township]]   code (unit code), subrunways = [...]
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cityops.indicators import formula as formulas
from cityops.indicators.metrics import Registry, registry as default_registry
from cityops.org.levels import active_levels

PACKAGE_DIR = Path(__file__).with_name("catalogues")
DEFAULT_PACK = PACKAGE_DIR / "default.toml"
def unit_levels() -> tuple[str, ...]:
    """The unit levels indicators are computed at, top down: the levels catalogue's territorial chain."""
    return tuple(active_levels().territorial_chain)


PERIODS = ("live", "hourly", "daily", "weekly", "monthly", "quarterly")
#: Where each period's values are stored: live indicators keep one value per day, refreshed while the day runs.
STORED_PERIOD = {"live": "day", "hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "quarterly": "quarter"}
BANDS = ("green", "yellow", "orange", "red")
BAND_ZH = {"green": "绿", "yellow": "黄", "orange": "橙", "red": "红"}
CODE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
IDENT = r"^[a-z][a-z0-9_]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sector(_Model):
    code: str = Field(pattern=CODE)
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    owner: str = Field(min_length=1)


class Runway(Sector):
    sector: str
    leader: str | None = None


class SubRunway(Sector):
    runway: str
    levels: list[str] = Field(min_length=1)
    issued: Literal["city", "local"]


class Bands(_Model):
    yellow: float | None = None
    orange: float | None = None
    red: float


class Source(_Model):
    kind: Literal["metric", "reported", "formula"]
    metric: str | None = None
    params: dict = {}
    expr: str | None = None
    due_day: int = Field(default=5, ge=1, le=28)
    remind_days: int = Field(default=3, ge=0, le=28)

    @model_validator(mode="after")
    def _fields(self):
        if self.kind == "metric" and not self.metric:
            raise ValueError("a metric source names its metric")
        if self.kind == "formula" and not self.expr:
            raise ValueError("a formula source has an expr")
        return self


class BreachAction(_Model):
    open_case: bool = False
    case_class: str = Field(default="10080", pattern=r"^\d{5}$")


class Indicator(_Model):
    code: str = Field(pattern=IDENT)
    subrunway: str
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    definition: str = ""
    unit: str
    direction: Literal["lower", "higher"]
    period: Literal["live", "hourly", "daily", "weekly", "monthly", "quarterly"]
    target: float | None = None
    bands: Bands
    levels: list[str] = Field(min_length=1)
    rollup: Literal["sum", "ratio", "mean", "max", "min", "worst", "formula"]
    scale: float = 1.0
    owner: str = Field(min_length=1)
    source: Source
    breach: BreachAction = BreachAction()

    @property
    def stored_period(self) -> str:
        return STORED_PERIOD[self.period]

    def band(self, value: float | None) -> str | None:
        """绿/黄/橙/红 of a value: the worst band whose threshold it reaches (≥ lower-better, ≤ higher-better)."""
        if value is None:
            return None
        reached = (lambda t: value >= t) if self.direction == "lower" else (lambda t: value <= t)
        for name in ("red", "orange", "yellow"):
            threshold = getattr(self.bands, name)
            if threshold is not None and reached(threshold):
                return name
        return "green"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


class ScoreItem(_Model):
    indicator: str
    weight: float = Field(gt=0)
    rule: Literal["linear", "bands"] = "linear"
    floor: float | None = None
    target: float | None = None


class Scorecard(_Model):
    key: str = Field(pattern=IDENT)
    name_zh: str
    name_en: str
    level: Literal["township", "village"] = "township"
    items: list[ScoreItem] = Field(min_length=1)


class Township(_Model):
    code: str = Field(pattern=r"^\d{9}$")
    subrunways: list[str] = Field(min_length=1)


@dataclass
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class CatalogueError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("indicator catalogue rejected:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class Catalogue:
    sectors: dict[str, Sector] = field(default_factory=dict)
    runways: dict[str, Runway] = field(default_factory=dict)
    subrunways: dict[str, SubRunway] = field(default_factory=dict)
    indicators: dict[str, Indicator] = field(default_factory=dict)
    scorecards: dict[str, Scorecard] = field(default_factory=dict)
    townships: dict[str, Township] = field(default_factory=dict)
    formulas: dict[str, formulas.Formula] = field(default_factory=dict)
    #: Formula indicators in an order where every input comes first.
    formula_order: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def runs(self, township_code: str | None, subrunway: str) -> bool:
        """Does the township run this sub-runway (every one, unless its subset is declared)?"""
        t = self.townships.get(township_code or "")
        return t is None or subrunway in t.subrunways


KINDS = (("sector", Sector, "sectors"), ("runway", Runway, "runways"), ("subrunway", SubRunway, "subrunways"),
         ("indicator", Indicator, "indicators"), ("scorecard", Scorecard, "scorecards"), ("township", Township, "townships"))


class _Lines:
    """Line numbers of a TOML file's array-of-tables entries and their keys (tomllib keeps none)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.headers: dict[str, list[int]] = {}
        for i, line in enumerate(self.lines, start=1):
            m = re.match(r"\s*\[\[\s*([A-Za-z_]+)\s*\]\]", line)
            if m:
                self.headers.setdefault(m.group(1), []).append(i)

    def of(self, kind: str, index: int, key: str | None = None) -> int:
        starts = self.headers.get(kind, [])
        if index >= len(starts):
            return 1
        start = starts[index]
        if key:
            for i in range(start, len(self.lines)):
                text = self.lines[i]
                if re.match(r"\s*\[", text):
                    break
                if re.match(rf"\s*{re.escape(key)}\s*[=.]", text):
                    return i + 1
        return start


def pack_path(name: str) -> Path:
    """A shipped pack by name ("default", "iso37120") or a pack file's path."""
    shipped = PACKAGE_DIR / f"{name}.toml"
    if shipped.exists():
        return shipped
    path = Path(name)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PACKAGE_DIR.glob("*.toml")))
        raise CatalogueError([Problem(name, 0, "indicators_pack", f"no such pack (shipped: {known}) nor file")])
    return path


def load(extra_dir: Path | None = None, *, pack: Path = DEFAULT_PACK, metrics: Registry | None = None) -> Catalogue:
    """The pack plus the deployment's files, validated; raises CatalogueError naming every problem."""
    files = [pack]
    if extra_dir is not None:
        extra_dir = Path(extra_dir)
        if not extra_dir.is_dir():
            raise CatalogueError([Problem(str(extra_dir), 0, "indicators_dir", "is not a directory")])
        files += sorted(extra_dir.glob("*.toml"))
    return load_files(files, metrics=metrics)


def load_files(files: list[Path], *, metrics: Registry | None = None) -> Catalogue:
    metrics = metrics or default_registry()
    cat = Catalogue(files=[str(f) for f in files])
    problems: list[Problem] = []
    where: dict[tuple[str, str], tuple[str, _Lines, int]] = {}  # (kind, code) → file, lines, index
    for path in files:
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(name, 0, "file", f"cannot be read: {exc}"))
            continue
        except tomllib.TOMLDecodeError as exc:
            line = int(m.group(1)) if (m := re.search(r"line (\d+)", str(exc))) else 0
            problems.append(Problem(name, line, "toml", str(exc)))
            continue
        lines = _Lines(text)
        if data.get("version") != 1:
            problems.append(Problem(name, 1, "version", "must be 1"))
        unknown = set(data) - {"version", *(k for k, _, _ in KINDS)}
        for key in sorted(unknown):
            problems.append(Problem(name, 1, key, f"unknown table; use {', '.join(k for k, _, _ in KINDS)}"))
        for kind, model, attr in KINDS:
            entries = data.get(kind, [])
            if not isinstance(entries, list):
                problems.append(Problem(name, 1, kind, f"must be an array of tables ([[{kind}]])"))
                continue
            for index, raw in enumerate(entries):
                ident = raw.get("code", raw.get("key")) if isinstance(raw, dict) else None
                label = f"{kind} {ident}" if ident else f"{kind} #{index + 1}"
                if kind == "indicator" and isinstance(raw, dict) and "bands" not in raw:
                    problems.append(Problem(name, lines.of(kind, index), f"{label}: bands", "missing bands (at least red)"))
                    continue
                try:
                    item = model.model_validate(raw)
                except ValidationError as exc:
                    for err in exc.errors():
                        loc = ".".join(str(p) for p in err["loc"])
                        problems.append(Problem(name, lines.of(kind, index, str(err["loc"][0]) if err["loc"] else None),
                                                f"{label}: {loc or kind}", err["msg"]))
                    continue
                code = getattr(item, "code", None) or getattr(item, "key")
                table = getattr(cat, attr)
                if code in table:
                    first = where[(kind, code)]
                    problems.append(Problem(name, lines.of(kind, index, "code" if kind != "scorecard" else "key"),
                                            f"{label}: code", f"duplicate code {code!r} (first at {first[0]}:{first[1].of(kind, first[2])})"))
                    continue
                table[code] = item
                where[(kind, code)] = (name, lines, index)
    problems += _references(cat, where, metrics)
    if problems:
        raise CatalogueError(problems)
    return cat


def _references(cat: Catalogue, where, metrics: Registry) -> list[Problem]:
    problems: list[Problem] = []

    def bad(kind: str, code: str, key: str, message: str):
        name, lines, index = where[(kind, code)]
        problems.append(Problem(name, lines.of(kind, index, key.split(".")[0]), f"{kind} {code}: {key}", message))

    def levels(kind: str, code: str, values: list[str]):
        chain = unit_levels()
        for lv in values:
            if lv not in chain:
                bad(kind, code, "levels", f"unknown unit level {lv!r}; use {', '.join(chain)}")

    for code, r in cat.runways.items():
        if r.sector not in cat.sectors:
            bad("runway", code, "sector", f"unknown sector {r.sector!r}")
    for code, s in cat.subrunways.items():
        if s.runway not in cat.runways:
            bad("subrunway", code, "runway", f"unknown runway {s.runway!r}")
        levels("subrunway", code, s.levels)
    for code, ind in cat.indicators.items():
        if ind.subrunway not in cat.subrunways:
            bad("indicator", code, "subrunway", f"unknown sub-runway {ind.subrunway!r}")
        levels("indicator", code, ind.levels)
        b = ind.bands
        order = [t for t in (b.yellow, b.orange, b.red) if t is not None]
        ascending = ind.direction == "lower"
        if order != sorted(order, reverse=not ascending):
            bad("indicator", code, "bands", "thresholds must run yellow → orange → red in the direction of worse "
                f"({'rising' if ascending else 'falling'} for {ind.direction}-is-better)")
        src = ind.source
        if src.kind == "metric":
            metric = metrics.get(src.metric)
            if metric is None:
                bad("indicator", code, "source.metric", f"unknown source: no platform metric {src.metric!r}")
            else:
                for param, message in metric.check(src.params):
                    bad("indicator", code, f"source.params.{param}", message)
                if ind.rollup == "formula":
                    bad("indicator", code, "rollup", "a metric indicator rolls up by sum, ratio, mean, max, min or worst")
                if ind.rollup == "ratio" and not metric.ratio:
                    bad("indicator", code, "rollup", f"metric {src.metric} has no denominator; ratio needs one")
        elif src.kind == "formula":
            try:
                parsed = formulas.parse(src.expr)
            except formulas.FormulaError as exc:
                bad("indicator", code, "source.expr", str(exc))
                continue
            unknown = sorted(parsed.inputs - set(cat.indicators))
            if unknown:
                bad("indicator", code, "source.expr", f"unknown source: no indicator {', '.join(unknown)}")
                continue
            cat.formulas[code] = parsed
        elif ind.rollup in ("ratio", "formula"):
            bad("indicator", code, "rollup", "a reported value rolls up by sum, mean, max, min or worst")
    problems += _formula_cycles(cat, where)
    for key, card in cat.scorecards.items():
        for i, item in enumerate(card.items):
            if item.indicator not in cat.indicators:
                bad("scorecard", key, "items", f"item {i + 1}: unknown indicator {item.indicator!r}")
    for code, t in cat.townships.items():
        unknown = [s for s in t.subrunways if s not in cat.subrunways]
        if unknown:
            bad("township", code, "subrunways", f"unknown sub-runways {unknown}")
    return problems


def _formula_cycles(cat: Catalogue, where) -> list[Problem]:
    """Order the formulas so that inputs come first; a cycle is a problem named on each formula in it."""
    problems: list[Problem] = []
    state: dict[str, int] = {}
    order: list[str] = []

    def visit(code: str, trail: list[str]) -> None:
        if state.get(code) == 2 or code not in cat.formulas:
            return
        if state.get(code) == 1:
            cycle = trail[trail.index(code):] + [code]
            name, lines, index = where[("indicator", code)]
            problems.append(Problem(name, lines.of("indicator", index, "source"), f"indicator {code}: source.expr",
                                    f"formula cycle: {' → '.join(cycle)}"))
            return
        state[code] = 1
        for dep in sorted(cat.formulas[code].inputs):
            visit(dep, trail + [code])
        state[code] = 2
        order.append(code)

    for code in sorted(cat.formulas):
        visit(code, [])
    cat.formula_order = order
    return problems


def tree(cat: Catalogue, township_code: str | None = None) -> list[dict]:
    """The catalogue as nested sectors → runways → sub-runways → indicators (a township's subset when it has one)."""
    out = []
    for s in cat.sectors.values():
        runways = []
        for r in (r for r in cat.runways.values() if r.sector == s.code):
            subs = []
            for sr in (x for x in cat.subrunways.values() if x.runway == r.code):
                if township_code and not cat.runs(township_code, sr.code):
                    continue
                inds = [describe(i) for i in cat.indicators.values() if i.subrunway == sr.code]
                subs.append({**sr.model_dump(), "indicators": inds})
            if subs or not township_code:
                runways.append({**r.model_dump(), "subrunways": subs})
        out.append({**s.model_dump(), "runways": runways})
    return out


def describe(ind: Indicator) -> dict:
    d = ind.model_dump(exclude={"source"})
    d["source"] = {"kind": ind.source.kind, **({"metric": ind.source.metric, "params": ind.source.params}
                                              if ind.source.kind == "metric" else {}),
                   **({"expr": ind.source.expr} if ind.source.kind == "formula" else {}),
                   **({"due_day": ind.source.due_day} if ind.source.kind == "reported" else {})}
    return d

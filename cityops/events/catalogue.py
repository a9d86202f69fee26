"""The event center's catalogues as data: taxonomy (部件/事项), duty calendar and settings, validated on load.

Every file is TOML; a deployment may point the ``events_dir`` setting (``CITYOPS_EVENTS_DIR``) at a directory
holding its own ``taxonomy.toml``, ``calendar.toml`` or ``events.toml``; the files are loaded and validated at
start-up (``load_taxonomy`` …, declared in the manifest). A file that fails validation raises
``ValidationFailed`` listing every problem, and nothing is loaded.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, time
from functools import lru_cache
from pathlib import Path

from cityops.core.errors import InvalidInput, NotFound, ValidationFailed

HERE = Path(__file__).parent
_CODE = re.compile(r"^\d{5}$")
_LIMIT = re.compile(r"^(\d+(?:\.\d+)?)([hd])$")
KINDS = ("component", "matter")
#: The channels a case comes in by (``event_cases.source``).
SOURCES = ("rest", "patrol", "public", "open311", "hotline", "sensor", "task", "indicator")


#: The deployment's directory of catalogue files (``use_settings``); None: the shipped files.
_DIR: list[Path | None] = [None]


def use_settings(config) -> None:
    """Read the catalogues from ``config.events_dir`` (the shipped files where it has none)."""
    custom = Path(config.events_dir) if config.events_dir else None
    if _DIR[0] != custom:
        _DIR[0] = custom
        taxonomy.cache_clear()
        calendar.cache_clear()
        settings.cache_clear()


def load_taxonomy(config) -> Taxonomy:
    use_settings(config)
    return taxonomy()


def load_calendar(config):
    use_settings(config)
    return calendar()


def load_settings(config) -> EventSettings:
    use_settings(config)
    return settings()


def _file(name: str) -> Path:
    custom = _DIR[0]
    if custom and (custom / name).exists():
        return Path(custom) / name
    return HERE / name


@dataclass(frozen=True)
class Limit:
    """A time limit in working time: ``amount`` working hours (unit "h") or working days (unit "d")."""

    amount: float
    unit: str

    @classmethod
    def parse(cls, text: str) -> "Limit":
        m = _LIMIT.match(str(text).strip())
        if not m or float(m.group(1)) <= 0:
            raise InvalidInput(f"time limit {text!r} must look like '4h' (working hours) or '2d' (working days)")
        return cls(float(m.group(1)), m.group(2))

    def __str__(self) -> str:
        amount = int(self.amount) if self.amount == int(self.amount) else self.amount
        return f"{amount}{self.unit}"


@dataclass(frozen=True)
class CaseClass:
    kind: str
    code: str
    name: str
    major_name: str
    filing: str
    closing: str
    department_type: str
    limits: dict[str, Limit]
    keywords: tuple[str, ...] = ()
    local: bool = False
    #: Citizen reports of this class are published (Open311 without credentials).
    public: bool = False

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.code}"

    def limit(self, urgency: str) -> Limit:
        return self.limits.get(urgency) or self.limits["normal"]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "code": self.code, "name": self.name, "major": self.code[:2], "major_name": self.major_name,
                "filing_condition": self.filing, "closing_condition": self.closing, "department_type": self.department_type,
                "limits": {k: str(v) for k, v in self.limits.items()}, "keywords": list(self.keywords), "local": self.local,
                "public": self.public}


@dataclass
class Taxonomy:
    version: int
    urgencies: tuple[str, ...]
    classes: dict[tuple[str, str], CaseClass]
    majors: dict[tuple[str, str], str]
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)

    def resolve(self, code: str, kind: str | None = None) -> CaseClass:
        """A class by its code ("06010"), "kind:code", or a legacy alias; kind defaults to matter, then component.

        Raises InvalidInput naming the code when it is unknown."""
        code = (code or "").strip()
        if ":" in code:
            kind, code = code.split(":", 1)
        kinds = (kind,) if kind else ("matter", "component")
        if kind and kind not in KINDS:
            raise InvalidInput(f"unknown class kind {kind!r}; use one of {', '.join(KINDS)}", {"field": "kind"})
        for k in kinds:
            if (k, code) in self.classes:
                return self.classes[(k, code)]
            if (k, code) in self.aliases:
                return self.classes[(k, self.aliases[(k, code)])]
        raise InvalidInput(f"unknown case class {code!r}" + (f" of kind {kind}" if kind else ""),
                           {"field": "class_code", "value": code})


def _load_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValidationFailed(f"{path.name}: not valid TOML: {exc}", [str(exc)]) from None


def parse_taxonomy(data: dict, name: str = "taxonomy.toml") -> Taxonomy:
    problems: list[str] = []
    if data.get("version") != 1:
        problems.append("version must be 1")
    urgencies = tuple(data.get("urgencies") or ())
    if "normal" not in urgencies:
        problems.append("urgencies must include 'normal'")
    dept_types = set(data.get("department_types") or ())
    majors: dict[tuple[str, str], str] = {}
    for m in data.get("majors", []):
        key = (m.get("kind"), str(m.get("code")))
        if key[0] not in KINDS or not re.fullmatch(r"\d{2}", key[1]):
            problems.append(f"major {m!r}: kind must be component/matter and code two digits")
        elif key in majors:
            problems.append(f"major {key[0]}:{key[1]} listed twice")
        majors[key] = m.get("name", "")
    classes: dict[tuple[str, str], CaseClass] = {}
    for c in data.get("classes", []):
        kind, code = c.get("kind"), str(c.get("code", ""))
        where = f"class {kind}:{code}"
        if kind not in KINDS:
            problems.append(f"{where}: kind must be one of {KINDS}")
            continue
        if not _CODE.match(code):
            problems.append(f"{where}: code must be 5 digits (major 2 + minor 3)")
            continue
        if (kind, code) in classes:
            problems.append(f"{where}: listed twice")
        if (kind, code[:2]) not in majors:
            problems.append(f"{where}: major {code[:2]} is not in the catalogue")
        minor = int(code[2:])
        local = bool(c.get("local", False))
        if local and not 80 <= minor <= 999:
            problems.append(f"{where}: local classes use minor codes 080-999")
        if not local and not 1 <= minor <= 79:
            problems.append(f"{where}: standard classes use minor codes 001-079 (mark local = true for 080-999)")
        if not isinstance(c.get("public", False), bool):
            problems.append(f"{where}: public must be true or false")
        for req in ("name", "filing", "closing", "department_type"):
            if not c.get(req):
                problems.append(f"{where}: {req} is required")
        if dept_types and c.get("department_type") and c["department_type"] not in dept_types:
            problems.append(f"{where}: department_type {c['department_type']!r} is not in department_types")
        limits: dict[str, Limit] = {}
        raw = c.get("limits") or {}
        if "normal" not in raw:
            problems.append(f"{where}: limits.normal is required")
        for urgency, text in raw.items():
            if urgency not in urgencies:
                problems.append(f"{where}: unknown urgency {urgency!r}")
                continue
            try:
                limits[urgency] = Limit.parse(text)
            except InvalidInput as exc:
                problems.append(f"{where}: {exc.message}")
        classes[(kind, code)] = CaseClass(kind, code, c.get("name", ""), majors.get((kind, code[:2]), ""),
                                          c.get("filing", ""), c.get("closing", ""), c.get("department_type", ""),
                                          limits, tuple(c.get("keywords", ())), local, c.get("public") is True)
    aliases: dict[tuple[str, str], str] = {}
    for a in data.get("aliases", []):
        kind, legacy, target = a.get("kind"), str(a.get("legacy", "")), str(a.get("code", ""))
        if not re.fullmatch(r"\d{4}", legacy):
            problems.append(f"alias {kind}:{legacy}: legacy codes are 4 digits")
        if (kind, target) not in classes:
            problems.append(f"alias {kind}:{legacy}: target {target} is not a class")
        if (kind, legacy) in aliases:
            problems.append(f"alias {kind}:{legacy}: listed twice")
        aliases[(kind, legacy)] = target
    if problems:
        raise ValidationFailed(f"{name}: {len(problems)} problem(s): {problems[0]}", problems)
    return Taxonomy(1, urgencies, classes, majors, aliases)


@lru_cache(maxsize=1)
def taxonomy() -> Taxonomy:
    path = _file("taxonomy.toml")
    return parse_taxonomy(_load_toml(path), path.name)


# ------------------------------------------------------------------------------------------- calendar

def _time(text: str) -> time:
    try:
        return time.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidInput(f"{text!r} is not a HH:MM time") from None


def parse_calendar_data(data: dict, name: str = "calendar.toml") -> dict:
    """Validated calendar fields: timezone, periods [(time, time)], weekend {int}, holidays, workdays."""
    from zoneinfo import ZoneInfo

    problems: list[str] = []
    if data.get("version") != 1:
        problems.append("version must be 1")
    try:
        tz = ZoneInfo(data.get("timezone", ""))
    except Exception:  # noqa: BLE001 - any lookup failure is an unknown zone
        problems.append(f"unknown timezone {data.get('timezone')!r}")
        tz = None
    periods = []
    for p in data.get("periods", []):
        try:
            start, end = _time(p[0]), _time(p[1])
        except (InvalidInput, IndexError, TypeError) as exc:
            problems.append(f"period {p!r}: {getattr(exc, 'message', exc)}")
            continue
        if end <= start or (periods and start < periods[-1][1]):
            problems.append(f"period {p!r}: periods must be increasing and non-overlapping")
        periods.append((start, end))
    if not periods:
        problems.append("at least one working period is required")
    weekend = set(data.get("weekend", []))
    if not weekend <= set(range(1, 8)):
        problems.append("weekend days are ISO weekdays 1-7")
    holidays: set[date] = set()
    workdays: set[date] = set()
    for year, spec in (data.get("years") or {}).items():
        for key, target in (("holidays", holidays), ("workdays", workdays)):
            for d in spec.get(key, []):
                try:
                    day = date.fromisoformat(d)
                except (TypeError, ValueError):
                    problems.append(f"years.{year}.{key}: {d!r} is not a date")
                    continue
                if str(day.year) != str(year):
                    problems.append(f"years.{year}.{key}: {d} is not in {year}")
                target.add(day)
    if holidays & workdays:
        problems.append(f"days both holiday and workday: {sorted(str(d) for d in holidays & workdays)}")
    if problems:
        raise ValidationFailed(f"{name}: {len(problems)} problem(s): {problems[0]}", problems)
    return {"tz": tz, "periods": periods, "weekend": weekend, "holidays": holidays, "workdays": workdays,
            "years": sorted(int(y) for y in (data.get("years") or {}))}


@lru_cache(maxsize=1)
def calendar():
    from cityops.events.workcal import WorkCalendar

    path = _file("calendar.toml")
    return WorkCalendar(**parse_calendar_data(_load_toml(path), path.name))


# ------------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class EventSettings:
    auto_dispatch: bool
    fallback_level: str
    file_within: Limit
    dispatch_within: Limit
    verify_within: Limit
    due_soon_fraction: float
    escalation_levels: tuple[str, ...]
    short_extension_max: Limit
    duplicate_distance_m: float
    duplicate_window_hours: float
    attachment_max_bytes: int
    attachment_types: tuple[str, ...]
    attachments_per_request: int
    max_description: int
    max_import_rows: int
    weights: dict[str, float]
    filed_bands: tuple[tuple[int, float], ...]
    filed_band_rest: float
    #: Channels whose reports (of public classes) Open311 publishes to everyone.
    open311_public_sources: tuple[str, ...] = ("open311", "public")


def parse_settings(data: dict, name: str = "events.toml") -> EventSettings:
    problems: list[str] = []
    try:
        r, s, d, a, i, e = (data[k] for k in ("routing", "sla", "duplicates", "attachments", "intake", "evaluation"))
    except KeyError as exc:
        raise ValidationFailed(f"{name}: section {exc.args[0]!r} is missing", [f"missing section {exc.args[0]}"]) from None
    limits = {}
    for key in ("file_within", "dispatch_within", "verify_within", "short_extension_max"):
        try:
            limits[key] = Limit.parse(s.get(key, ""))
        except InvalidInput as exc:
            problems.append(f"sla.{key}: {exc.message}")
    if not 0 < float(s.get("due_soon_fraction", 0)) < 1:
        problems.append("sla.due_soon_fraction must be between 0 and 1")
    weights = {k: float(v) for k, v in (e.get("weights") or {}).items()}
    known = {"public_report_rate", "filed_count", "closure_rate", "ontime_closure_rate"}
    if set(weights) - known:
        problems.append(f"evaluation.weights: unknown indicators {sorted(set(weights) - known)}")
    if abs(sum(weights.values()) - 1) > 1e-9:
        problems.append(f"evaluation.weights must sum to 1 (they sum to {sum(weights.values()):g})")
    if float(d.get("distance_m", 0)) <= 0 or float(d.get("window_hours", 0)) <= 0:
        problems.append("duplicates.distance_m and window_hours must be positive")
    public_sources = tuple((data.get("open311") or {}).get("public_sources", ("open311", "public")))
    if set(public_sources) - set(SOURCES):
        problems.append(f"open311.public_sources: unknown channels {sorted(set(public_sources) - set(SOURCES))}")
    if problems:
        raise ValidationFailed(f"{name}: {len(problems)} problem(s): {problems[0]}", problems)
    return EventSettings(
        auto_dispatch=bool(r.get("auto_dispatch", True)), fallback_level=r.get("fallback_level", "township"),
        file_within=limits["file_within"], dispatch_within=limits["dispatch_within"], verify_within=limits["verify_within"],
        due_soon_fraction=float(s["due_soon_fraction"]), escalation_levels=tuple(s.get("escalation_levels", ())),
        short_extension_max=limits["short_extension_max"],
        duplicate_distance_m=float(d["distance_m"]), duplicate_window_hours=float(d["window_hours"]),
        attachment_max_bytes=int(a["max_bytes"]), attachment_types=tuple(a["types"]),
        attachments_per_request=int(a.get("max_per_request", 6)),
        max_description=int(i.get("max_description", 4000)), max_import_rows=int(i.get("max_import_rows", 20000)),
        weights=weights, filed_bands=tuple((int(b), float(v)) for b, v in e.get("filed_bands", [])),
        filed_band_rest=float(e.get("filed_band_rest", 0)), open311_public_sources=public_sources)


@lru_cache(maxsize=1)
def settings() -> EventSettings:
    path = _file("events.toml")
    return parse_settings(_load_toml(path), path.name)


def require_class(code: str, kind: str | None = None) -> CaseClass:
    try:
        return taxonomy().resolve(code, kind)
    except InvalidInput:
        raise
    except KeyError:  # pragma: no cover - resolve raises InvalidInput
        raise NotFound(f"unknown class {code!r}") from None

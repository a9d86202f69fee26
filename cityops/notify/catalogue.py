"""The escalation policies and addressing aliases (policies/*.toml), validated on load.

The shipped file is ``policies/default.toml``; a deployment adds files in ``Settings.notify_policies_dir`` (a
policy or alias of the same key replaces the shipped one). Every problem is reported with its file and key, and
a bad file stops the start-up (``load_catalogue`` is called by the app factory).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from cityops.core import ladder
from cityops.core.errors import ValidationFailed

SHIPPED = Path(__file__).with_name("policies") / "default.toml"
CHANNELS = ("inapp", "webpush", "email", "sms", "dingtalk", "wecom", "feishu")
#: The channels delivered through Apprise (their URL templates are in Settings.notify_apprise_urls).
APPRISE_CHANNELS = ("sms", "dingtalk", "wecom", "feishu")
#: A message's severity: information, or a colour of the one warning ladder.
SEVERITIES = ("info", *ladder.COLOURS)
WHERE = ("unit", "parent", "grid", "village", "township", "district")
ADDRESS = re.compile(
    r"^(?:message"
    r"|person:\d{1,9}"
    r"|user:\d{1,9}"
    r"|(?:post|title|role|duty):[^@\s]{1,64}@[A-Za-z0-9_]{1,32}"
    r"|unit:[A-Za-z0-9_]{1,32}"
    r"|department:\S{1,64}"
    r"|notify:\S{1,64}"
    r"|email:[^@\s]{1,64}@[^@\s]{1,190}"
    r"|phone:\+?[0-9-]{5,20})$")


def address_problem(address: str) -> str | None:
    """Why ``address`` is not an address, or None."""
    if not isinstance(address, str) or not ADDRESS.match(address):
        return (f"{address!r} is not an address (person:<id>, user:<id>, post:<post>@<where>, title:<title>@<where>, "
                "unit:<where>, department:<code or name>, role:<role>@<where>, duty:leader|operator@<where>, notify:<name>, "
                "email:<address>, phone:<number>)")
    kind, _, rest = address.partition(":")
    if kind in ("email", "phone"):
        return None
    where = rest.rpartition("@")[2] if "@" in rest else (rest if kind == "unit" else None)
    if where is not None and where not in WHERE and not where.isdigit():
        return f"{address!r}: where {where!r} must be one of {', '.join(WHERE)} or a unit code"
    if kind == "duty" and rest.partition("@")[0] not in ("leader", "operator"):
        return f"{address!r}: duty is leader or operator"
    return None


class Step(BaseModel):
    to: list[str] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)
    wait_minutes: float = Field(gt=0, le=7 * 24 * 60)

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        problems = [p for a in value if (p := address_problem(a))]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in CHANNELS]
        if unknown:
            raise ValueError(f"unknown channels {unknown}; known: {', '.join(CHANNELS)}")
        return value


class Policy(BaseModel):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    kinds: list[str] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)
    version: int = 1
    source: str = ""


@dataclass
class Catalogue:
    policies: dict[str, Policy] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def policy_for(self, kind: str) -> Policy | None:
        for p in self.policies.values():
            if kind in p.kinds:
                return p
        return None


def load(directory: Path | None = None) -> Catalogue:
    """The shipped file, then every ``*.toml`` of ``directory`` in name order; ValidationFailed lists every
    problem (file: key: message) and nothing is loaded."""
    files = [SHIPPED]
    if directory is not None:
        directory = Path(directory)
        if not directory.is_dir():
            raise ValidationFailed(f"notify_policies_dir {directory} is not a directory", {"problems": [str(directory)]})
        files += sorted(directory.glob("*.toml"))
    cat = Catalogue()
    problems: list[str] = []
    for path in files:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        version = data.get("version", 1)
        if not isinstance(version, int) or version < 1:
            problems.append(f"{path}: version must be a positive integer")
            version = 1
        unknown = set(data) - {"version", "aliases", "policies"}
        if unknown:
            problems.append(f"{path}: unknown sections {sorted(unknown)}")
        for name, targets in (data.get("aliases") or {}).items():
            if not isinstance(targets, list) or not targets:
                problems.append(f"{path}: aliases.{name}: a list of addresses")
                continue
            bad = [p for a in targets if (p := address_problem(a)) or a == "message"]
            if bad:
                problems.append(f"{path}: aliases.{name}: " + "; ".join(str(b) for b in bad))
                continue
            cat.aliases[name] = targets
        for key, body in (data.get("policies") or {}).items():
            try:
                cat.policies[key] = Policy(key=key, version=version, source=str(path), **body)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(x) for x in err["loc"])
                    problems.append(f"{path}: policies.{key}.{loc}: {err['msg']}")
            except TypeError as exc:
                problems.append(f"{path}: policies.{key}: {exc}")
        cat.files.append(str(path))
    seen: dict[str, str] = {}
    for p in cat.policies.values():
        for kind in p.kinds:
            if kind in seen:
                problems.append(f"message kind {kind!r} has two policies: {seen[kind]} and {p.key}")
            seen[kind] = p.key
    if problems:
        raise ValidationFailed(f"notification policies: {len(problems)} problem(s)", {"problems": problems})
    return cat


_CACHE: dict[str, Catalogue] = {}


def catalogue(directory: Path | None = None) -> Catalogue:
    key = str(directory or "")
    if key not in _CACHE:
        _CACHE[key] = load(directory)
    return _CACHE[key]

"""The role catalogue (``roles.toml``), validated on load."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROLES_FILE = Path(__file__).with_name("roles.toml")

#: Every permission a route may require; the catalogue is checked against it on load.
PERMISSIONS = frozenset(
    {
        "units.read", "units.write", "units.import", "units.export", "locate",
        "departments.read", "departments.write", "people.read", "people.write",
        "users.read", "users.manage", "users.credentials", "audit.read", "layers.read", "layers.write",
        "housing.read", "housing.write", "personal.read",
        "warning.read", "warning.write", "ogc.edit",
        "tasks.read", "tasks.write", "tasks.progress", "tasks.command", "tasks.evacuate", "tasks.shelter",
        "events.read", "events.report", "events.intake", "events.file", "events.dispatch", "events.handle", "events.approve", "events.approve_long", "events.verify", "events.supervise", "events.import", "events.evaluate", "events.sweep",
        "sensing.read", "sensing.write", "sensing.ingest", "sensing.alarms", "sensing.catalogue",
        "indicators.read", "indicators.report", "indicators.compute",
        "notify.inbox", "notify.read", "notify.send",
        "video.read", "video.write", "calls.read", "calls.write",
        "duty.read", "duty.edit", "directives.read", "directives.issue", "directives.receive",
    }
)


@dataclass(frozen=True)
class Role:
    key: str
    name_zh: str
    name_en: str
    permissions: frozenset[str]
    all_units: bool

    def allows(self, permission: str) -> bool:
        return "*" in self.permissions or permission in self.permissions

    @property
    def effective_permissions(self) -> frozenset[str]:
        return PERMISSIONS if "*" in self.permissions else self.permissions


def may_grant(granter: Role, role: Role) -> bool:
    """The grant rule: nobody grants a permission they do not hold. A role may give users (by creating them or
    changing them) only roles whose permission set is a subset of its own, and a role that reaches every unit
    only if it reaches every unit itself. Scope is checked apart: granted scope lies within the granter's."""
    return role.effective_permissions <= granter.effective_permissions and (granter.all_units or not role.all_units)


@lru_cache(maxsize=4)
def load_roles(path: Path = ROLES_FILE) -> dict[str, Role]:
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("version") != 1:
        raise ValueError(f"{path}: unsupported roles catalogue version {data.get('version')!r}")
    roles = {}
    for key, entry in data["roles"].items():
        perms = frozenset(entry["permissions"])
        unknown = perms - PERMISSIONS - {"*"}
        if unknown:
            raise ValueError(f"{path}: role {key!r} names unknown permissions {sorted(unknown)}")
        roles[key] = Role(key, entry["name_zh"], entry["name_en"], perms, bool(entry.get("all_units", False)))
    return roles


def get_role(key: str) -> Role:
    from cityops.core.errors import InvalidInput

    roles = load_roles()
    if key not in roles:
        raise InvalidInput(f"unknown role {key!r}; known roles: {', '.join(roles)}")
    return roles[key]

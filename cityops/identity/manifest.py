"""What users, roles and scope (身份 · 权限) publish on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue


@event_type
class AccessChanged(DomainEvent):
    """A user's access changed (tokens revoked, role, scope or activity changed): every worker drops the
    token resolutions it holds."""

    name = "access.changed"
    version = 1
    usernames: list[str] = []
    change: str


MANIFEST = Manifest("identity", publishes=(AccessChanged,), depends_on=("org",),
                    catalogues=(Catalogue("roles.toml", "cityops.identity.roles:load_roles"),))

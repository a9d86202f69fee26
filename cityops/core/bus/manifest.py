"""One manifest per capability (``cityops/<capability>/manifest.py``): the events it publishes, the events it
consumes, and the capabilities whose code it may import (``depends_on``). ``tests/test_dependencies.py`` holds
every capability to its manifest: an import of another capability that is neither declared in ``depends_on``
nor one of the event modules (manifests) of what it consumes fails the test, and so does a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cityops.core.bus.events import DomainEvent
from cityops.core.catalogues import Catalogue

#: Every capability package under cityops/ (web, demo and the app assembly are not capabilities).
CAPABILITIES = ("org", "identity", "base", "housing", "ogc", "tiles", "sensing", "warning", "events", "tasks",
                "indicators", "notify", "video", "calls", "duty", "directives")


@dataclass(frozen=True)
class Manifest:
    capability: str
    publishes: tuple[type[DomainEvent], ...] = ()
    consumes: tuple[type[DomainEvent], ...] = ()
    #: Capabilities whose modules this one imports (tables, domain functions). Consuming an event needs no entry.
    depends_on: tuple[str, ...] = ()
    #: The capability's catalogue files, each validated at start-up (``cityops.core.catalogues``).
    catalogues: tuple[Catalogue, ...] = ()
    description: str = field(default="", compare=False)

    def __post_init__(self):
        if self.capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {self.capability!r}")
        for dep in self.depends_on:
            if dep not in CAPABILITIES or dep == self.capability:
                raise ValueError(f"{self.capability}: depends_on names {dep!r}, not another capability")

    @property
    def published_names(self) -> set[str]:
        return {e.name for e in self.publishes}

    @property
    def consumed_names(self) -> set[str]:
        return {e.name for e in self.consumes}


def manifests() -> dict[str, Manifest]:
    """Every capability's manifest (importing them registers every event type)."""
    import importlib

    out = {}
    for cap in CAPABILITIES:
        module = importlib.import_module(f"cityops.{cap}.manifest")
        out[cap] = module.MANIFEST
    return out

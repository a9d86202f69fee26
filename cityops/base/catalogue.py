"""The layer catalogue of a worker, held in memory for the read paths (OGC API – Features, tiles).

A bbox page of ``/ogc/collections/{key}/items`` read the layer's catalogue row on every request: a round trip
that, on PostgreSQL, waited about as long as the page's own query. Readers now take the catalogue from here:
every layer row, loaded in one query at the first use after a change, as frozen ``LayerEntry`` values (the
columns of ``Layer``; never attached to a session, so nothing can write through them — writes keep reading the
row in their own transaction).

Invalidation is by the catalogue's events: a change (``layer.version_created``, ``layer.changed``) drops this
process's catalogues at once, in the writer's transaction (``announce``), and is published on the bus, whose
broadcast listener (``base.layer_catalogue``, wired in every worker) drops them again after the commit — in
this process and in every other. The second drop is the one that counts for concurrent readers: a reader that
reloaded between the first drop and the commit read the old rows, and a load that started before a drop never
stores its result (the generation check in ``LayerCatalogue._load``).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cityops.base.manifest import LayerChanged, LayerVersionCreated
from cityops.base.models import Layer
from cityops.core.bus import publish
from cityops.core.errors import NotFound
from cityops.identity.scope import Scope


@dataclass(frozen=True)
class LayerEntry:
    """One layer's catalogue row, read only (the attributes readers use of ``Layer``)."""

    id: int
    key: str
    title_zh: str
    title_en: str
    description_zh: str
    description_en: str
    category: str
    owner_department: str | None
    source: str
    geometry_type: str
    attribute_schema: tuple
    source_crs: str | None
    editable: bool
    public_read: bool
    current_version: int
    feature_count: int
    bounds: tuple | None
    unit_code: str
    unit_path: str
    created_at: datetime
    updated_at: datetime

    @property
    def table_name(self) -> str:
        return f"layer_{self.key}"

    def seen_by(self, scope: Scope) -> bool:
        return self.public_read or scope.sees(self.unit_path)


_NAMES = tuple(f.name for f in fields(LayerEntry))
_COLUMNS = tuple(getattr(Layer, name) for name in _NAMES)

#: Every catalogue of this process (one per app, so per database), dropped together by ``forget``.
_CATALOGUES: "weakref.WeakSet[LayerCatalogue]" = weakref.WeakSet()
_CATALOGUES_LOCK = threading.Lock()


def _entry(row) -> LayerEntry:
    values = dict(zip(_NAMES, row))
    # Frozen all the way down: the schema's fields stay dicts, but the lists become tuples.
    values["attribute_schema"] = tuple(values["attribute_schema"] or ())
    values["bounds"] = tuple(values["bounds"]) if values["bounds"] is not None else None
    return LayerEntry(**values)


class LayerCatalogue:
    """The layers of one database, read once per change (see the module's docstring)."""

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions
        self._lock = threading.Lock()
        self._generation = 0
        self._layers: dict[str, LayerEntry] | None = None
        with _CATALOGUES_LOCK:
            _CATALOGUES.add(self)

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._layers = None

    def _load(self) -> dict[str, LayerEntry]:
        layers = self._layers
        if layers is not None:
            return layers
        with self._lock:
            generation = self._generation
        with self._sessions() as session:
            rows = session.execute(select(*_COLUMNS).order_by(Layer.category, Layer.key)).all()
        layers = {row.key: _entry(row) for row in rows}
        with self._lock:
            if self._generation == generation:  # no change was announced while we read
                self._layers = layers
        return layers

    def get(self, key: str, scope: Scope) -> LayerEntry:
        """The layer ``key`` if ``scope`` sees it (or it is public-read), else ``NotFound`` — as
        ``service.get_layer``."""
        layer = self._load().get(key)
        if layer is None or not layer.seen_by(scope):
            raise NotFound(f"layer {key!r} not found")
        return layer

    def visible(self, scope: Scope) -> list[LayerEntry]:
        """The layers ``scope`` sees and the public-read ones, by category and key — as ``service.list_layers``."""
        return [layer for layer in self._load().values() if layer.seen_by(scope)]

    def all(self) -> list[LayerEntry]:
        return list(self._load().values())


def forget() -> None:
    """Drop every layer catalogue of this process (the broadcast listener, and ``announce``)."""
    with _CATALOGUES_LOCK:
        catalogues = list(_CATALOGUES)
    for catalogue in catalogues:
        catalogue.invalidate()


def announce(session: Session, event: LayerVersionCreated | LayerChanged) -> None:
    """A change of the catalogue, in ``session``'s transaction: this process's catalogues are dropped now and
    the event goes to the outbox, so every worker drops its own after the commit."""
    forget()
    publish(session, event)


def version_created(session: Session, layer: Layer, action: str) -> None:
    announce(session, LayerVersionCreated(key=layer.key, layer_version=layer.current_version, action=action))


def changed(session: Session, key: str, change: str) -> None:
    announce(session, LayerChanged(key=key, change=change))


def listener(_env) -> None:
    """``layer.version_created``, ``layer.changed`` (broadcast, every worker): the cached catalogues are stale."""
    forget()

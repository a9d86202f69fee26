"""What the layer catalogue (数字底座) publishes on the bus (cityops.core.bus)."""

from __future__ import annotations

from cityops.core.bus import DomainEvent, Manifest, event_type
from cityops.core.catalogues import Catalogue


@event_type
class LayerVersionCreated(DomainEvent):
    """A layer has a new version (an import, an edit through OGC API – Features Part 4, a rollback): its
    features, schema, bounds and counts changed. Every worker's cached layer catalogue is stale."""

    name = "layer.version_created"
    version = 1
    key: str
    layer_version: int
    action: str


@event_type
class LayerChanged(DomainEvent):
    """A layer's catalogue entry was created, described again (titles, access, category) or deleted: every
    worker's cached layer catalogue is stale."""

    name = "layer.changed"
    version = 1
    key: str
    change: str


MANIFEST = Manifest("base", publishes=(LayerVersionCreated, LayerChanged), depends_on=("org", "identity"), catalogues=(
    Catalogue("categories.toml", "cityops.base.categories:load_categories"),
    Catalogue("demo_layers.toml", "cityops.base.demo:load_catalogue"),
    Catalogue("demo_basemap.toml", "cityops.base.basemap:load_catalogue"),
))

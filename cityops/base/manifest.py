"""The layer catalogue (数字底座): nothing on the bus yet (cityops.core.bus)."""

from cityops.core.bus import Manifest
from cityops.core.catalogues import Catalogue

MANIFEST = Manifest("base", depends_on=("org", "identity"), catalogues=(
    Catalogue("categories.toml", "cityops.base.categories:load_categories"),
    Catalogue("demo_layers.toml", "cityops.base.demo:load_catalogue"),
    Catalogue("demo_basemap.toml", "cityops.base.basemap:load_catalogue"),
))

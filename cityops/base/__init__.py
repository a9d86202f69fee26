"""Digital base (数字底座): the layer catalogue and its versioned feature tables."""

from cityops.base import demo as _demo  # noqa: E402,F401  (registers the "base_layers" demo step)
from cityops.base import basemap as _basemap  # noqa: E402,F401  (registers the "basemap" demo step)

"""What the video capability (视频监控) publishes and consumes on the bus (cityops.core.bus): nothing yet — its
cameras are read where an incident or a case is looked at."""

from cityops.core.bus import Manifest
from cityops.core.catalogues import Catalogue

MANIFEST = Manifest(
    "video",
    # tasks and events: the place of an incident or a case whose nearest cameras are asked for (video/routes.py).
    depends_on=("org", "identity", "tasks", "events"),
    # The GB/T 28181 code catalogue (regions, industries, device types), validated at start-up like every other.
    catalogues=(Catalogue("gb28181.toml", "cityops.video.gb28181:catalogue"),),
)

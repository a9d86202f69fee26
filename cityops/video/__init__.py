"""视频监控 video surveillance: cameras with their GB/T 28181 codes, views and streams; the cameras that see a place."""

from cityops.video import demo as _demo  # noqa: E402,F401  (registers the "cameras" demo step)

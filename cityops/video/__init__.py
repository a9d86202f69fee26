"""视频监控 video surveillance: cameras with their GB/T 28181 codes, views and streams; the cameras that see a place."""

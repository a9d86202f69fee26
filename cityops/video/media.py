"""The files this server plays for cameras without a media server of their own: ``<media dir>/<code>/``, an HLS
playlist and its segments. ``test_pattern`` makes a moving test picture with ffmpeg (Debian package ``ffmpeg``)
for the demo and the browser test, so the player can be seen and checked without a real camera."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from cityops.core.errors import InvalidInput


def media_dir(settings) -> Path:
    return Path(settings.video_media_dir or Path(settings.data_dir) / "video")


def test_pattern(folder: Path, *, seconds: int = 30, size: str = "640x360", rate: int = 15) -> Path:
    """A test picture (ffmpeg's testsrc2 with its running clock) as H.264 in MPEG-TS, 1 s segments, VOD playlist."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InvalidInput("ffmpeg is not installed (apt-get install ffmpeg)")
    if not 1 <= seconds <= 3600:
        raise InvalidInput("seconds must be between 1 and 3600")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-g", str(rate),
                    "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
                    "-hls_segment_filename", str(folder / "seg%03d.ts"), str(folder / "index.m3u8")],
                   check=True, timeout=600)
    return folder


def publish(source: Path, root: Path, codes: list[str]) -> int:
    """Copy one stream's files to each camera's folder (replacing what was there, atomically per camera)."""
    for code in codes:
        target = root / code
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            staged = Path(tmp) / code
            shutil.copytree(source, staged)
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)
    return len(codes)

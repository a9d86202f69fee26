"""Case photos: checked (type, bytes, size) and stored by content hash under the data directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy.orm import Session

from cityops.core.errors import InvalidInput, PayloadTooLarge
from cityops.events import catalogue
from cityops.events.models import Attachment, Case


_MAGIC = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",), "image/webp": (b"RIFF",)}


_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def check_attachment(filename: str, content_type: str, data: bytes) -> str:
    """The checked content type of an upload: declared type allowed, bytes match it, size within limit."""
    settings = catalogue.settings()
    if len(data) > settings.attachment_max_bytes:
        raise PayloadTooLarge(f"attachment {filename!r} has {len(data)} bytes; the limit is {settings.attachment_max_bytes}")
    if not data:
        raise InvalidInput(f"attachment {filename!r} is empty", {"field": "photo"})
    content_type = (content_type or "").split(";")[0].strip().lower()
    if content_type not in settings.attachment_types:
        raise InvalidInput(f"attachment {filename!r} has type {content_type or 'unknown'}; allowed: "
                           f"{', '.join(settings.attachment_types)}", {"field": "photo"})
    ok = any(data.startswith(m) for m in _MAGIC[content_type])
    if content_type == "image/webp":
        ok = ok and data[8:12] == b"WEBP"
    if not ok:
        raise InvalidInput(f"attachment {filename!r} is not a valid {content_type} file", {"field": "photo"})
    return content_type


def save_attachment(session: Session, data_dir: Path, case: Case, filename: str, content_type: str, data: bytes,
                    transition_seq: int | None = None) -> Attachment:
    """Store a checked photo under ``<data_dir>/events/attachments/<case number>/<sha256>.<ext>``."""
    content_type = check_attachment(filename, content_type, data)
    digest = hashlib.sha256(data).hexdigest()
    rel = Path("events") / "attachments" / case.number / f"{digest}.{_EXT[content_type]}"
    target = Path(data_dir) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic: a crash never leaves half a photo under the final name
    a = Attachment(case_id=case.id, transition_seq=transition_seq, filename=Path(filename or "photo").name[:200],
                   content_type=content_type, size=len(data), sha256=digest, path=str(rel), unit_path=case.unit_path)
    session.add(a)
    return a

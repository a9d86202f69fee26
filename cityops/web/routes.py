"""The web shell: the single-page map app, its static assets and the UI message catalogue."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from cityops.core.errors import NotFound

STATIC_DIR = Path(__file__).with_name("static")
MESSAGES_FILE = Path(__file__).with_name("messages.json")

router = APIRouter(tags=["web"])


@lru_cache(maxsize=1)
def messages() -> dict[str, dict[str, str]]:
    """The one UI message catalogue: {language: {key: text}}; every language has every key."""
    data = json.loads(MESSAGES_FILE.read_text(encoding="utf-8"))
    keys = set(data["zh-CN"])
    for lang, table in data.items():
        if set(table) != keys:
            raise ValueError(f"{MESSAGES_FILE}: language {lang!r} differs in keys: {sorted(keys ^ set(table))}")
    return data


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/api/i18n/{language}", summary="UI message catalogue (简体中文 zh-CN, English en)")
def catalogue(language: str) -> dict[str, str]:
    data = messages()
    if language not in data:
        raise NotFound(f"no messages for language {language!r}; available: {', '.join(data)}")
    return data[language]

"""The web application: the built Vue app (``cityops/web/dist``, made by ``make assets``) served at ``/`` with its
client-side routes, the API reference pages from local npm assets, and the UI message catalogue."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles

from cityops.core.errors import NotFound

#: The Vite build output (gitignored): index.html, assets/ (content-hashed), docs/ (Swagger UI, ReDoc), the
#: service worker, the web manifest and the icons.
DIST_DIR = Path(__file__).with_name("dist")
MESSAGES_FILE = Path(__file__).with_name("messages.json")
#: First path segments that belong to the server, never to the app's client-side routes: an unknown path under
#: them is a 404, not the app's page.
SERVER_PREFIXES = frozenset({"api", "ogc", "sta", "open311", "cap", "metrics", "assets", "docs"})

log = logging.getLogger("cityops.web")
router = APIRouter(tags=["web"])


@lru_cache(maxsize=1)
def messages() -> dict[str, dict[str, str]]:
    """The one UI message catalogue: {language: {key: text}}; every language has every key. The web app is built
    from the same file (``frontend/src/i18n.js`` imports it)."""
    data = json.loads(MESSAGES_FILE.read_text(encoding="utf-8"))
    keys = set(data["zh-CN"])
    for lang, table in data.items():
        if set(table) != keys:
            raise ValueError(f"{MESSAGES_FILE}: language {lang!r} differs in keys: {sorted(keys ^ set(table))}")
        empty = sorted(k for k, v in table.items() if not isinstance(v, str) or not v)
        if empty:
            raise ValueError(f"{MESSAGES_FILE}: language {lang!r} has empty messages: {empty}")
    return data


@router.get("/api/i18n/{language}", summary="UI message catalogue (简体中文 zh-CN, English en)")
def catalogue(language: str) -> dict[str, str]:
    data = messages()
    if language not in data:
        raise NotFound(f"no messages for language {language!r}; available: {', '.join(data)}")
    return data[language]


# The API reference pages load Swagger UI and ReDoc from the app's own build (npm packages swagger-ui-dist and
# redoc), never from a CDN: a government intranet cannot reach one.
@router.get("/api/docs", include_in_schema=False)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/api/openapi.json", title="CityOps API",
                               swagger_js_url="/docs/swagger-ui-bundle.js", swagger_css_url="/docs/swagger-ui.css",
                               swagger_favicon_url="/favicon.svg",
                               # No badge from the online validator service.
                               swagger_ui_parameters={"validatorUrl": None})


@router.get("/api/redoc", include_in_schema=False)
def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/api/openapi.json", title="CityOps API", redoc_js_url="/docs/redoc.standalone.js",
                          redoc_favicon_url="/favicon.svg", with_google_fonts=False)


def _app_page() -> FileResponse:
    index = DIST_DIR / "index.html"
    if not index.is_file():
        raise NotFound("the web app is not built: run 'make assets' (npm ci && npm run build in cityops/web/frontend)")
    # Never cached: it names the current content-hashed assets.
    return FileResponse(index, headers={"Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return _app_page()


class _ClientPath(Convertor):
    """Any path outside the server's own prefixes: an unknown /api/… path stays a 404 for every method."""

    regex = "(?!(?:" + "|".join(sorted(SERVER_PREFIXES)) + ")(?:/|$))[^?#]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("client", _ClientPath())

#: The pages before the web app, so that old bookmarks still land on the same page.
_MOVED = {"static/index.html": "/", "static/events.html": "/workbench", "static/report.html": "/phone/report",
          "static/command.html": "/command", "static/phone.html": "/phone"}


@router.get("/{path:client}", include_in_schema=False)
def app_route(path: str, request: Request) -> Response:
    """A file at the root of the build (service worker, manifest, icons), else the app's page for its client-side
    routes (/workbench, /command, /phone …): the router in the browser decides what to show, so a new page needs
    no change here."""
    if path in _MOVED:
        query = request.url.query
        return RedirectResponse(_MOVED[path] + (f"?{query}" if query else ""), status_code=301)
    candidate = (DIST_DIR / path).resolve()
    if path and candidate.is_file() and DIST_DIR.resolve() in candidate.parents:
        no_cache = candidate.name in ("sw.js", "manifest.webmanifest", "registerSW.js")
        return FileResponse(candidate, headers={"Cache-Control": "no-cache"} if no_cache else None)
    if "." in path.rsplit("/", 1)[-1]:
        raise NotFound(f"no such file: /{path}")
    return _app_page()


class _ImmutableAssets(StaticFiles):
    """Content-hashed build assets: a new build gets new names, so browsers may keep these for a year."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def install(app: FastAPI) -> None:
    """Mount the built assets (gzip on the fly: fetched once per browser, then cached) and the app's catch-all
    route, which must come after every other router."""
    app.mount("/assets", GZipMiddleware(_ImmutableAssets(directory=DIST_DIR / "assets", check_dir=False), minimum_size=1024))
    app.mount("/docs", GZipMiddleware(StaticFiles(directory=DIST_DIR / "docs", check_dir=False), minimum_size=1024))
    app.include_router(router)
    if not (DIST_DIR / "index.html").is_file():
        log.warning("web app missing: run 'make assets' (npm ci && npm run build in cityops/web/frontend)")

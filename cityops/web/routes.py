"""The web application: the built Vue app (``cityops/web/dist``, made by ``make assets``) served at ``/`` with its
client-side routes, the API reference pages from local npm assets, and the UI message catalogue."""

from __future__ import annotations

import json
import logging
import mimetypes
import stat
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from cityops.core.db import read_sessionmaker
from cityops.core.errors import NotFound
from cityops.core.web import LANGUAGE_COOKIE, PAGE_COOKIE, Ctx, ReadDB, page_principal, require
from cityops.web import firstview, overview

#: The Vite build output (gitignored): index.html, assets/ (content-hashed), docs/ (Swagger UI, ReDoc), the
#: service worker, the web manifest and the icons.
DIST_DIR = Path(__file__).with_name("dist")
MESSAGES_FILE = Path(__file__).with_name("messages.json")
#: First path segments that belong to the server, never to the app's client-side routes: an unknown path under
#: them is a 404, not the app's page.
SERVER_PREFIXES = frozenset({"api", "ogc", "sta", "open311", "cap", "metrics", "assets", "docs"})

#: The compressed copies the build writes beside each compressible file (vite-plugin-compression2), best first.
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))
#: Files that must be asked for again on every visit: they name the current build's other files.
NO_CACHE = frozenset({"index.html", "phone.html", "sw.js", "manifest.webmanifest", "registerSW.js"})
#: The phone command room's own page (its app inlined, for a first visit on a poor connection): its paths.
PHONE_PATHS = frozenset({"phone", "phone/households", "phone/report", "phone/tasks"})
#: Those that open on the households list: the server writes the list into the page for the cookie's user.
PHONE_LIST_PATHS = frozenset({"phone", "phone/households"})

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


@router.get("/api/map/overview", summary="The operations map's first view as one SVG: base map and live things, scoped",
            response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}})
def map_overview(session: ReadDB, principal=Depends(require("layers.read")),
                 width: int = Query(..., ge=overview.MIN_SIDE, le=overview.MAX_SIDE, description="pixels"),
                 height: int = Query(..., ge=overview.MIN_SIDE, le=overview.MAX_SIDE, description="pixels"),
                 bbox: str | None = Query(None, description="w,s,e,n to fit (the map's last view); default: the scope"),
                 padding: int = Query(40, ge=0, le=overview.MAX_PADDING, description="pixels around the box, as the map's fitBounds"),
                 lang: str = Query("zh-CN")) -> Response:
    """Drawn from the current data on every request (live things) over a cached base part; never cached by the
    browser: it is the state of the moment."""
    svg = overview.overview_svg(session, principal, width=width, height=height, bbox=bbox, padding=padding, lang=lang)
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


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


def accepted_encodings(header: str) -> set[str]:
    """The content codings an Accept-Encoding header allows (RFC 9110 §12.5.3; ``q=0`` refuses one)."""
    out = set()
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name and q > 0:
            out.add(name.strip().lower())
    return out


class BuildFiles(StaticFiles):
    """The build's files, each in the best pre-compressed form the client accepts (brotli, then gzip, made at build
    time: no compression per request), with its own ETag per form (the stat of the file sent), ``Vary:
    Accept-Encoding``, and ``Cache-Control`` by kind: content-hashed files (``assets/``) for a year, immutable;
    ``index.html``, the service worker and the manifest never cached, so a new build is seen at once; the
    rest revalidated. Starlette's StaticFiles serves each file as it is on disk, so the choice is added here."""

    def __init__(self, *args, immutable: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.immutable = immutable

    async def get_response(self, path: str, scope: Scope) -> Response:
        accepted = accepted_encodings(Headers(scope=scope).get("accept-encoding", ""))
        for encoding, suffix in ENCODINGS:
            if encoding not in accepted or scope["method"] not in ("GET", "HEAD"):
                continue
            full_path, found = await anyio.to_thread.run_sync(self.lookup_path, path + suffix)
            if found is not None and stat.S_ISREG(found.st_mode):
                response = self.file_response(full_path, found, scope)
                if response.status_code != 304:
                    response.headers["Content-Encoding"] = encoding
                    response.headers["Content-Type"] = _media_type(path)
                return self._cache_headers(path, response)
        return self._cache_headers(path, await super().get_response(path, scope))

    def _cache_headers(self, path: str, response: Response) -> Response:
        if response.status_code in (200, 206, 304):
            response.headers["Vary"] = "Accept-Encoding"
            name = path.rsplit("/", 1)[-1]
            response.headers["Cache-Control"] = ("public, max-age=31536000, immutable" if self.immutable
                                                 else "no-cache" if name in NO_CACHE else "public, max-age=3600, must-revalidate")
        return response


def _media_type(path: str) -> str:
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return f"{media_type}; charset=utf-8" if media_type.startswith("text/") or media_type.endswith("javascript") else media_type


_ROOT_FILES = BuildFiles(directory=DIST_DIR, check_dir=False)


async def _app_page(request: Request, page: str = "index.html") -> Response:
    if not (DIST_DIR / "index.html").is_file():
        raise NotFound("the web app is not built: run 'make assets' (npm ci && npm run build in cityops/web/frontend)")
    # Never cached: it names the current content-hashed assets.
    return await _ROOT_FILES.get_response(page if (DIST_DIR / page).is_file() else "index.html", request.scope)


class _PageParts:
    """phone.html split at the first view's place, each part compressed once as raw deflate (the part before with a
    sync flush, so another deflate stream may follow; the part after finished): a page with a first view is the
    gzip of prefix + view + suffix, made per request by compressing the few kB of the view alone and joining the
    three streams (a fresh compressor's output refers to nothing before it), instead of ~250 kB per request."""

    def __init__(self, text: bytes):
        prefix, _, suffix = text.partition(firstview.MARKER.encode())
        self.prefix, self.suffix = prefix, suffix
        self.prefix_z = self._deflate(prefix, zlib.Z_SYNC_FLUSH)
        self.suffix_z = self._deflate(suffix, zlib.Z_FINISH)
        self.prefix_crc = zlib.crc32(prefix)

    @staticmethod
    def _deflate(data: bytes, mode: int) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        return c.compress(data) + c.flush(mode)

    def page(self, view: bytes, gzip: bool) -> bytes:
        if not gzip:
            return self.prefix + view + self.suffix
        crc = zlib.crc32(self.suffix, zlib.crc32(view, self.prefix_crc))
        size = (len(self.prefix) + len(view) + len(self.suffix)) & 0xFFFFFFFF
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        return (header + self.prefix_z + self._deflate(view, zlib.Z_SYNC_FLUSH) + self.suffix_z
                + struct.pack("<II", crc, size))


@lru_cache(maxsize=2)
def _page_parts(path: Path, mtime_ns: int) -> _PageParts | None:
    text = path.read_bytes()
    return _PageParts(text) if firstview.MARKER.encode() in text else None


def _first_view(ctx, principal, query, language: str | None) -> bytes | None:
    catalogue = messages()
    language = language if language in catalogue else "zh-CN"
    with read_sessionmaker(ctx.engine)() as session:
        view = firstview.phone_first_view(session, principal, query, catalogue[language], language)
    return view.encode() if view else None


async def _phone_page(request: Request, ctx) -> Response | None:
    """phone.html with the households list of the cookie's user written in, or None (no cookie or an invalid one,
    no list to show, no room for it in the build): the page as built then."""
    if not request.cookies.get(PAGE_COOKIE):
        return None
    path = DIST_DIR / "phone.html"
    try:
        parts = _page_parts(path, path.stat().st_mtime_ns)
    except OSError:
        return None
    principal = await page_principal(request, ctx) if parts is not None else None
    if principal is None:
        return None
    view = await anyio.to_thread.run_sync(_first_view, ctx, principal, request.query_params,
                                          request.cookies.get(LANGUAGE_COOKIE))
    if view is None:
        return None
    gzip = "gzip" in accepted_encodings(request.headers.get("accept-encoding", ""))
    # The user's own households: for this user's browser only, never stored by a cache; a page for another
    # cookie (or none) differs.
    headers = {"Cache-Control": "private, no-store", "Vary": "Cookie, Accept-Encoding"}
    if gzip:
        headers["Content-Encoding"] = "gzip"
    return Response(parts.page(view, gzip), media_type="text/html; charset=utf-8", headers=headers)


@router.get("/", include_in_schema=False)
async def index(request: Request) -> Response:
    return await _app_page(request)


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
async def app_route(path: str, request: Request, ctx: Ctx) -> Response:
    """A file at the root of the build (service worker, manifest, icons), else the app's page for its client-side
    routes (/workbench, /command, /phone …): the router in the browser decides what to show, so a new page needs
    no change here."""
    if path in _MOVED:
        query = request.url.query
        return RedirectResponse(_MOVED[path] + (f"?{query}" if query else ""), status_code=301)
    candidate = (DIST_DIR / path).resolve()
    if path and candidate.is_file() and DIST_DIR.resolve() in candidate.parents:
        return await _ROOT_FILES.get_response(path, request.scope)
    if "." in path.rsplit("/", 1)[-1]:
        raise NotFound(f"no such file: /{path}")
    if path.rstrip("/") in PHONE_LIST_PATHS and (page := await _phone_page(request, ctx)) is not None:
        return page
    return await _app_page(request, "phone.html" if path.rstrip("/") in PHONE_PATHS else "index.html")


def install(app: FastAPI) -> None:
    """Mount the built assets (content-hashed, immutable) and the API reference assets, both pre-compressed, and
    the app's catch-all route, which must come after every other router."""
    app.mount("/assets", BuildFiles(directory=DIST_DIR / "assets", check_dir=False, immutable=True))
    app.mount("/docs", BuildFiles(directory=DIST_DIR / "docs", check_dir=False))
    app.include_router(router)
    if not (DIST_DIR / "index.html").is_file():
        log.warning("web app missing: run 'make assets' (npm ci && npm run build in cityops/web/frontend)")

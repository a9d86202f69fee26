"""Shared web plumbing: the application context, dependencies, error mapping, request ids, metrics."""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, AsyncIterator

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, OperationalError, TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Match, Route

from cityops.core.db import read_sessionmaker
from cityops.core.errors import Busy, CityOpsError, InvalidInput, PayloadTooLarge, Unauthenticated
from cityops.core.settings import Settings
from cityops.core.storage import write_conflict

log = logging.getLogger("cityops.web")


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    org: "object"  # cityops.org.service.OrgConfig
    locator: "object"  # cityops.org.locate.LocatorCache
    registry: CollectorRegistry
    #: Where the warning models read observations (a ``session → series`` factory): the warning store alone, or
    #: the sensing time series when the app is wired (cityops.sensing.timeseries.model_series).
    series_source: "object" = None
    #: The database's event bus (cityops.core.bus.Bus): started with the app when wired, else by the first live
    #: stream that needs it (``bus.ensure_started()``).
    bus: "object" = None

    @cached_property
    def database_key(self) -> str:
        """The database's URL as text (password hidden), rendered once: the token cache's key, which rendering the
        URL on every request cost about 2 % of the event loop's time on case intake."""
        return str(self.engine.url)


_PER_APP_LOCK = threading.Lock()


def per_app(app_state, name: str, make):
    """``app_state.<name>``, made by ``make(ctx)`` on first use, once per app (so tests need no lifespan)."""
    obj = getattr(app_state, name, None)
    if obj is None:
        with _PER_APP_LOCK:
            obj = getattr(app_state, name, None)
            if obj is None:
                obj = make(app_state.ctx)
                setattr(app_state, name, obj)
    return obj


async def context(request: Request) -> AppContext:
    # async: FastAPI runs a plain def dependency in the thread pool, a hand-off on every request for one lookup.
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(context)]


#: Ends the requests' sessions (see db_session): a few threads of its own, outside the request thread pool.
_SESSION_ENDER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cityops-session-end")


def _end_session(session: Session) -> None:
    session.rollback()
    session.close()


async def db_session(ctx: Ctx) -> AsyncIterator[Session]:
    """A session per request. Routes commit explicitly before they answer (never after), so an
    acknowledged write is durable; anything uncommitted is rolled back here.

    The session is ended (its connection back in the pool, on SQLite the writer lock handed on) by threads
    of its own, not the request thread pool: a plain def dependency's exit waits for a free worker thread, and
    when every worker waits for a pooled connection, the requests that hold the connections could not give
    them back until the pool timed out (50 simultaneous writes on PostgreSQL: 40 answered 500)."""
    session = ctx.sessions()
    try:
        yield session
    finally:
        await asyncio.get_running_loop().run_in_executor(_SESSION_ENDER, _end_session, session)


DB = Annotated[Session, Depends(db_session)]


async def read_session(ctx: Ctx) -> AsyncIterator[Session]:
    """A session for a read-only route (``cityops.core.db.read_sessionmaker``: no transaction round trips on
    PostgreSQL), ended like ``db_session``'s."""
    session = read_sessionmaker(ctx.engine)()
    try:
        yield session
    finally:
        await asyncio.get_running_loop().run_in_executor(_SESSION_ENDER, _end_session, session)


ReadDB = Annotated[Session, Depends(read_session)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """(username, password) of an ``Authorization: Basic`` header, or None when there is none."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        username, colon, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated("malformed Basic credentials: base64 of 'username:password' expected") from None
    if not colon or not username:
        raise Unauthenticated("malformed Basic credentials: base64 of 'username:password' expected")
    return username, password


def _raw_token(request: Request) -> str:
    raw = bearer_token(request)
    if not raw:
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>' or 'X-API-Key'")
    return raw


def principal_from_request(request: Request, ctx: AppContext, session: Session, *, basic_channel: str | None = None):
    """The caller's principal, resolved in ``session`` (for code that already runs in a worker thread).

    ``basic_channel``: the interface also takes HTTP Basic (a password, or an API key as the password) for clients
    that cannot send a token header (QGIS 3.22, frost-sta-client); the check goes through the brute-force limits
    (``authenticate_limited``), and its name is what failed logins are audited under."""
    from cityops.identity.service import authenticate_limited, principal_for, resolve_token

    credentials = basic_credentials(request) if basic_channel else None
    if credentials is not None:
        user = authenticate_limited(session, ctx.settings, *credentials, address=client_address(request),
                                    channel=basic_channel, api_key=True)
        session.commit()  # the cleared failures of the account, if it had any
        principal = principal_for(session, user)
    else:
        principal = resolve_token(session, ctx.settings.resolved_secret, _raw_token(request))
    request.state.principal = principal
    return principal


async def _token_principal(ctx: AppContext, raw: str):
    """The principal of a bearer token: from the cache on the event loop when resolved in the last few seconds, else
    read in the thread pool with a session of its own (raises ``Unauthenticated`` for an unknown or expired one)."""
    from cityops.identity.service import cached_principal, resolve_token

    principal = cached_principal(ctx.database_key, ctx.settings.resolved_secret, raw)
    if principal is not None:
        return principal

    def lookup():
        with ctx.sessions() as session:
            return resolve_token(session, ctx.settings.resolved_secret, raw)

    return await run_in_threadpool(lookup)


async def current_principal(request: Request, ctx: Ctx):
    """Dependency: the caller's principal (``_token_principal``: a plain def dependency with the request's session
    cost three thread hand-offs on every request)."""
    principal = await _token_principal(ctx, _raw_token(request))
    request.state.principal = principal
    return principal


#: The session cookie set at login beside the bearer token (HttpOnly, SameSite=Strict). A page request (the HTML)
#: carries no Authorization header; the cookie lets the server draw the page's first view into its HTML for that
#: user. Only the pages read it: the API never takes it, so a forged request from another site gains nothing.
PAGE_COOKIE = "cityops_page"
#: The language the user chose in the app (set by the app's script, src/i18n.js setLanguage): the server writes a
#: page's first view in it. Not a secret; an unknown value means the default language.
LANGUAGE_COOKIE = "cityops_language"


def set_page_cookie(response, request: Request, raw: str, max_age_s: int) -> None:
    response.set_cookie(PAGE_COOKIE, raw, max_age=max_age_s, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_page_cookie(response, request: Request) -> None:
    response.delete_cookie(PAGE_COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")


async def page_principal(request: Request, ctx: AppContext):
    """The principal of the page cookie, or None (no cookie, or a token expired, revoked or unknown): a page is
    served without a first view then, never refused."""
    raw = request.cookies.get(PAGE_COOKIE)
    if not raw or len(raw) > 256:
        return None
    try:
        return await _token_principal(ctx, raw)
    except Unauthenticated:
        return None


def interface_principal(channel: str, *, optional: bool = False):
    """Dependency of the standard interfaces (/ogc, the tiles, /sta): the caller's principal from a token, an API
    key or HTTP Basic. ``optional``: a request without credentials is anonymous (None) — it sees public-read
    layers only; wrong credentials are still 401."""

    async def dependency(request: Request, ctx: Ctx):
        if basic_credentials(request) is None:
            if optional and not bearer_token(request):
                return None
            return await current_principal(request, ctx)

        def lookup():
            with ctx.sessions() as session:
                return principal_from_request(request, ctx, session, basic_channel=channel)

        return await run_in_threadpool(lookup)

    dependency.__name__ = f"{channel}_principal"
    return dependency


def require(permission: str):
    """Dependency: an authenticated principal holding ``permission``."""

    async def dependency(principal=Depends(current_principal)):  # async: no thread hand-off for a set lookup
        principal.require(permission)
        return principal

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return dependency


def parse_body(model: type[BaseModel], raw: bytes):
    """A JSON request body read by the route itself, validated as FastAPI would (422, the same error format)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def loads_json(raw: bytes, what: str = "the body"):
    """A JSON document a route reads itself → Python, or InvalidInput naming what is wrong. orjson refuses nesting
    beyond 1,024 levels, integers beyond 64 bits and NaN (json.loads recursed on 50,000 nested arrays until a
    RecursionError, a 500, and took 10^26 or NaN on to the database)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None


def json_body_schema(model: type[BaseModel]) -> dict:
    """``openapi_extra`` documenting a JSON body that the route reads itself (``parse_body``, or its own decoder)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "")


def client_address(request: Request) -> str | None:
    """The client's IP address (behind a trusted proxy, uvicorn has already taken it from X-Forwarded-For)."""
    return request.client.host if request.client else None


async def read_upload_limited(upload, limit: int) -> bytes:
    """Read an uploaded file, refusing (413) anything above ``limit`` bytes without buffering it all."""
    chunks, size = [], 0
    while chunk := await upload.read(1024 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"upload exceeds the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class _RequestIds:
    """Request ids made without a system call: 16 random hex digits drawn once per process, then a counter (32 hex
    digits in all, as a UUID's hex was). ``uuid.uuid4()`` read the kernel's random source on every request: 5–12 %
    of the event loop's time on case intake."""

    def __init__(self):
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked worker draws its own prefix

    def _reset(self) -> None:
        self._prefix, self._counter = secrets.token_hex(8), itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


new_request_id = _RequestIds()


def _error_body(code: str, message: str, details=None, rid: str = "") -> dict:
    body = {"error": code, "message": message, "request_id": rid}
    if details is not None:
        body["details"] = details
    return body


class _BodyTooLarge(Exception):
    """Raised into the application by ``receive`` when the body passes the limit (answered 413 by _Observe)."""


class _Observe:
    """Request id (``x-request-id``, taken from the request or made), the body size limit and the request
    metrics (latency to the response's start, count by status).

    The limit holds for every route whatever the client declares: a ``Content-Length`` above it is answered 413
    before anything reads the body; without one (chunked), ``receive`` counts the bytes as they arrive and
    stops the request at the first chunk past the limit, so no more than the limit is ever buffered. Whatever
    the application made of that interruption (a form parser's 400, an unhandled error), the answer is 413.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` runs every request through an extra task
    and stream wrapper, a fixed cost that showed on the small, frequent requests (case intake)."""

    def __init__(self, app, *, requests: Counter, latency: Histogram, max_body: int):
        self.app, self.requests, self.latency, self.max_body = app, requests, latency, max_body
        # The metrics' children by label values: ``labels()`` checks and joins its values under a lock on each call.
        self._latency_of: dict[tuple, object] = {}
        self._count_of: dict[tuple, object] = {}

    def _observe(self, method: str, route: str, seconds: float) -> None:
        child = self._latency_of.get((method, route))
        if child is None:
            child = self._latency_of[method, route] = self.latency.labels(method, route)
        child.observe(seconds)

    def _count(self, method: str, route: str, status: str) -> None:
        child = self._count_of.get((method, route, status))
        if child is None:
            child = self._count_of[method, route, status] = self.requests.labels(method, route, status)
        child.inc()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        rid = rid or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        too_large = bool(length and length.isdigit() and int(length) > self.max_body)
        start = time.perf_counter()
        status = [500]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode("latin-1"))]
                if not too_large:
                    self._observe(scope["method"], _route(scope), time.perf_counter() - start)
            await send(message)

        received = [0]
        exceeded = started = False

        async def limited_receive():
            nonlocal exceeded
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > self.max_body:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def send_unless_exceeded(message):
            nonlocal started
            if exceeded and not started:
                return  # the application's answer to the interruption; the 413 below replaces it
            started = started or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            if too_large:
                await self._too_large(scope, receive, send_with_id, f"request body of {length} bytes", rid)
                return
            try:
                await self.app(scope, limited_receive if length is None else receive, send_unless_exceeded)
            except Exception:
                if not exceeded:
                    raise
            if exceeded and not started:
                await self._too_large(scope, receive, send_with_id, f"request body (more than {received[0]} bytes)", rid)
        finally:
            self._count(scope["method"], _route(scope), str(status[0]))

    async def _too_large(self, scope, receive, send, what: str, rid: str) -> None:
        body = _error_body("payload_too_large", f"{what} exceeds the {self.max_body} byte limit", rid=rid)
        # Connection: close: the rest of the body is never read, so the connection cannot carry another request.
        await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)


class _CompressApi:
    """The API's answers gzip-compressed for clients that accept it (JSON shrinks 4–10 times: the live layers of
    the map and the phone's household list arrive that much sooner on a slow mobile link). Only under /api/:
    OGC and SensorThings answers carry ETags that name one representation. Event streams and answers that are
    compressed already (tiles) pass through unchanged (Starlette's GZipMiddleware skips them)."""

    def __init__(self, app):
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1024, compresslevel=5)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return await self.app(scope, receive, send)
        if _accepts_gzip(scope["headers"]):
            return await self.gzip(scope, receive, send)

        # A client that takes no gzip gets the answer as it is, with the Vary that Starlette's pass-through would add
        # to a large one (here to every one: the header start goes out before the body's size is known). Its
        # pass-through buffered the start and parsed the headers twice per request: ~2 % of case intake's loop.
        async def send_varied(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"vary", b"Accept-Encoding")]
            await send(message)

        return await self.app(scope, receive, send_varied)


def _accepts_gzip(headers) -> bool:
    return any(name == b"accept-encoding" and b"gzip" in value for name, value in headers)


class PlainRoute(Route):
    """A Starlette route for a hot path that takes nothing from FastAPI (no parameters, its body read and its answer
    written by the endpoint), added ahead of the routers with ``add_plain_route``. It names itself in the scope as
    FastAPI's API routes do (FastAPI's router leaves ``scope["route"]`` unset for plain routes), so the request
    metrics count it under its template, not as "unmatched"."""

    def matches(self, scope):
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def add_plain_route(app: FastAPI, path: str, endpoint, methods: list[str]) -> None:
    """``endpoint`` at ``path`` as a ``PlainRoute`` of the app's own router, matched in the order added (before the
    routers included after it). Left out of the OpenAPI document: the route is documented where it is declared."""
    app.router.routes.append(PlainRoute(path, endpoint, methods=methods, include_in_schema=False))


def _route(scope) -> str:
    """The matched route's template (``/api/events/cases/{number}``), so metrics stay per route, not per URL."""
    return getattr(scope.get("route"), "path", "unmatched")


#: Paths whose interfaces take HTTP Basic (``interface_principal``).
BASIC_PATHS = ("/ogc", "/api/tiles", "/sta")


def install(app: FastAPI, registry: CollectorRegistry, max_body: int) -> None:
    requests = Counter("cityops_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("cityops_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry)

    app.add_middleware(_CompressApi)
    app.add_middleware(_Observe, requests=requests, latency=latency, max_body=max_body)

    @app.exception_handler(CityOpsError)
    async def _domain_error(request: Request, exc: CityOpsError):
        headers = None
        if exc.status_code == 401:
            # The standard interfaces also take HTTP Basic: say so, so that a client may ask its user.
            basic = request.url.path.startswith(BASIC_PATHS)
            headers = {"WWW-Authenticate": 'Bearer, Basic realm="CityOps", charset="UTF-8"' if basic else "Bearer"}
        elif getattr(exc, "retry_after", None) is not None:  # a full queue (Busy), a login lockout
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(
            _error_body(exc.code, exc.message, exc.details, request_id(request)), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout):
        # Every pooled connection stayed taken for POOL_WAIT_S: the server is overloaded, the request not wrong.
        return JSONResponse(_error_body("busy", "the server is busy (no database connection came free); try again",
                                        rid=request_id(request)), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(OperationalError)
    async def _write_conflict(request: Request, exc: OperationalError):
        # PostgreSQL rolled the request's transaction back because it crossed a concurrent one (a deadlock's victim,
        # a serialization failure): nothing of it was stored and the same request sent again may succeed.
        if not write_conflict(exc):
            raise exc
        return JSONResponse(_error_body("busy", "the request crossed a concurrent change and nothing was stored; try again",
                                        rid=request_id(request)), status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError):
        # The database refused a value as data (PostgreSQL: text with NUL, a number out of its column's range):
        # the request's fault, and nothing was stored. Request types bound what they can (core.params); this
        # answers the rest with a 422 instead of a 500.
        reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        return JSONResponse(_error_body("invalid_input", f"a value cannot be stored: {reason}", rid=request_id(request)),
                            status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            problems.append(f"{where}: {err.get('msg')}")
        return JSONResponse(
            _error_body("invalid_input", "; ".join(problems) or "invalid request",
                        [{"loc": e.get("loc"), "msg": e.get("msg")} for e in exc.errors()], request_id(request)),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(_error_body("http_error", str(exc.detail), rid=request_id(request)), status_code=exc.status_code)

"""The application factory: assembles every capability package's routes on one FastAPI app."""

from __future__ import annotations

import gc
import inspect
import logging
import sys
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

import cityops
from cityops import wiring
from cityops.base import routes as base_routes
from cityops.core import catalogues, ops_routes, web
from cityops.core.db import make_engine, make_sessionmaker, migrate
from cityops.core.settings import Settings, worker_settings
from cityops.events import open311 as events_open311
from cityops.events import routes as events_routes
from cityops.events import routing as events_routing
from cityops.housing import routes as housing_routes
from cityops.identity import routes as identity_routes
from cityops.indicators import routes as indicators_routes
from cityops.duty import routes as duty_routes
from cityops.directives import routes as directives_routes
from cityops.directives.hub import DirectiveHub
from cityops.notify import routes as notify_routes
from cityops.notify.dispatch import Dispatcher, InboxHub
from cityops.ogc import routes as ogc_routes
from cityops.org import routes as org_routes
from cityops.org.levels import load_levels
from cityops.org.locate import LocatorCache
from cityops.org.service import OrgConfig
from cityops.sensing import routes as sensing_routes
from cityops.sensing import sta_routes as sensing_sta_routes
from cityops.sensing import timeseries
from cityops.indicators.live import LiveIndicators
from cityops.sensing.alarms import AlarmHub
from cityops.sensing.service import start_mqtt
from cityops.tasks import routes as tasks_routes
from cityops.tiles import routes as tiles_routes
from cityops.video import routes as video_routes
from cityops.calls import routes as calls_routes
from cityops.warning import routes as warning_routes
from cityops.web import routes as web_routes

log = logging.getLogger("cityops")


def create_app(settings: Settings | None = None, *, run_migrations: bool = True) -> FastAPI:
    settings = settings or worker_settings()
    catalogues.load_all(settings)  # every capability's catalogue files, validated: a bad file stops the start
    engine = make_engine(settings)
    if run_migrations:
        migrate(engine)
    sessions = make_sessionmaker(engine)
    levels = load_levels(settings.grid_code_length)
    registry = CollectorRegistry()
    app = FastAPI(
        title="CityOps",
        version=cityops.__version__,
        description="城市运行和治理中心 — city operation and governance center API",
        openapi_url="/api/openapi.json",
        # Served by cityops.web from local assets (FastAPI's own pages load them from a CDN).
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
        **_NO_TELEMETRY,
    )
    app.state.ctx = web.AppContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        org=OrgConfig(levels, settings.grid_code_length, settings.topology_tolerance_m2, settings.metric_crs),
        locator=LocatorCache(sessions, levels),
        registry=registry,
    )
    events_routing.use_locator(engine, app.state.ctx.locator)
    web.install(app, registry, max_body=settings.max_upload_bytes + 64 * 1024)
    # FastAPI tries the routes one by one in this order (every router has its own prefix, so the order decides
    # nothing else): the high-rate paths — case intake, sensor ingest, map tiles, OGC feature pages — come first.
    ogc_routes.install_items(app)  # the OGC bbox page first: a plain route, no included router walked
    events_routes.install_intake(app)  # case intake, one case or a batch: plain routes too
    for module in (ops_routes, events_routes, events_open311, sensing_routes, sensing_sta_routes, tiles_routes,
                   ogc_routes, identity_routes, org_routes, base_routes, housing_routes, warning_routes, tasks_routes,
                   indicators_routes, notify_routes, video_routes, calls_routes, duty_routes, directives_routes):
        app.include_router(module.router)
    tiles_routes.install(app)
    # Live streams are fed from the bus in every worker; wired, the bus also carries the capabilities' chain.
    app.state.alarm_hub = AlarmHub()
    app.state.inbox_hub = InboxHub(settings.notify_stream_queue)
    ctx = app.state.ctx
    app.state.directive_hub = DirectiveHub()
    app.state.indicators_live = LiveIndicators(ctx.sessions, settings)
    ctx.bus = wiring.make_bus(engine, settings, registry, alarm_hub=app.state.alarm_hub, inbox_hub=app.state.inbox_hub,
                              directive_hub=app.state.directive_hub,
                              notify_wake=lambda: app.state.notify_dispatcher.wake(), tile_service=app.state.tiles,
                              locator=ctx.locator, with_timers=True, indicators_live=app.state.indicators_live)
    # Notifications are handed to their channels by the bus lease holder (started with the bus when wired, else by
    # the first message sent through the API).
    app.state.notify_dispatcher = Dispatcher(ctx.bus, settings)
    if settings.wiring:
        ctx.series_source = timeseries.model_series
        _start_bus(ctx.bus)
        if ctx.bus.started:
            app.state.notify_dispatcher.start()
    start_mqtt(app.state)  # SensorThings over MQTT when CITYOPS_MQTT_URL is set
    web_routes.install(app)  # last: the web app's client-side routes catch what no other route answers
    log.info("app ready", extra={"database": engine.url.render_as_string(hide_password=True)})
    _freeze_once()
    # The GIL's switch interval of this server process (``Settings.gil_switch_interval_ms``, why there).
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    return app


#: The server's metrics are Prometheus (/metrics, web._Observe). FastAPI's own OpenTelemetry hooks (FastAPI 0.16x,
#: on by default; older releases have none) looked up the global tracer, meter and logger providers on every request
#: to find them unconfigured: 3–4 % of the event loop's time on the smallest requests.
_NO_TELEMETRY = ({"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
                 if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


def _start_bus(bus) -> None:
    """Start the bus; while the database is unreachable the server still starts (``/api/ready`` says 503) and
    the bus starts as soon as the database answers."""
    try:
        bus.start()
    except OperationalError:
        log.warning("database unreachable: the event bus starts when it answers")

        def retry() -> None:
            while not bus.started and not bus._stop.wait(5):  # stopped meanwhile: give up
                try:
                    bus.ensure_started()
                except OperationalError:
                    continue

        threading.Thread(target=retry, name="bus-start", daemon=True).start()


@asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    app.state.notify_dispatcher.stop()
    app.state.ctx.bus.stop()
    app.state.indicators_live.stop()


_frozen = False


def _freeze_once() -> None:
    """What a server process is built from (modules, mappers, routes, catalogues) lives as long as it: frozen, the
    collector's full passes skip it. Each such pass otherwise walked ~250,000 objects, pausing the server for
    20–150 ms every few seconds under load: the tail of the request latency. Once per process: a process that
    builds many apps (the tests) would otherwise keep every discarded one."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()

"""The server of ``events_intake.py``: the CityOps app as deployed (``cityops.app:create_app``), settings from the
environment, plus one route of the benchmark's own, ``POST /bench/floor``.

The floor route does the intake route's work up to the case writer — the caller's principal (the token cache),
the ``events.report`` permission, the same body parsed and checked with the same model — and answers 201 at once.
Measured on the same server processes by the same client, its rate is what the HTTP stack (uvicorn, Starlette,
the middleware) and the per-request work leave for intake at all: the part of the gap to the raw insert that is
the framework's, not the storage's.

    python benchmarks/intake_server.py --port PORT --workers N

served as ``cityops serve --workers N`` serves: a process per worker, each with its own listening socket
(``core.serving``, ``SO_REUSEPORT``).
"""

from __future__ import annotations

import argparse

import orjson
from fastapi import Request
from fastapi.responses import Response

from cityops.app import create_app as create_cityops_app
from cityops.core.web import add_plain_route, current_principal, parse_body
from cityops.events.routes import CaseIn


def create_app():
    app = create_cityops_app()

    async def floor(request: Request) -> Response:
        principal = await current_principal(request, request.app.state.ctx)
        principal.require("events.report")
        body = parse_body(CaseIn, await request.body())
        return Response(orjson.dumps({"class_code": body.class_code, "lon": body.lon, "lat": body.lat}),
                        status_code=201, media_type="application/json")

    # First in the route table, a plain route as the intake routes are (``events.routes.install_intake``): the web
    # application's catch-all is matched in order and would take it otherwise.
    add_plain_route(app, "/bench/floor", floor, ["POST"])
    app.router.routes.insert(0, app.router.routes.pop())
    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    from cityops.core import serving

    serving.serve("intake_server:create_app", a.host, a.port, a.workers, factory=True, access_log=False,
                  log_level="warning")

"""Health (liveness), readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text

from cityops.core.db import current_revision, head_revision
from cityops.core.web import Ctx

router = APIRouter(tags=["operations"])


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description="database, schema: ok or what is wrong")


@router.get("/api/health", response_model=HealthOut, summary="Liveness: the process answers")
def health() -> dict:
    return {"status": "ok"}


@router.get("/api/ready", response_model=ReadyOut, summary="Readiness: the database answers and its schema is current")
def ready(ctx: Ctx, response: Response) -> dict:
    checks: dict[str, str] = {}
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current, head = current_revision(ctx.engine), head_revision(ctx.engine)
        checks["schema"] = "ok" if current == head else f"at {current}, expected {head}: run 'cityops init'"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"unavailable: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    response.status_code = 200 if ok else 503
    return {"status": "ready" if ok else "not ready", "checks": checks}


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

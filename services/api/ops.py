"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from services.api.access import ViewerDep
from services.api.context import Ctx
from services.api.problems import problem
from services.connectors_registry import (
    as_json,
    connectors,
    delivery_health,
    outbox_health,
    recent_runs,
)

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(ctx: Ctx) -> Response | dict[str, str]:
    try:
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; the reason is reported, not hidden
        return problem(503, "not_ready", f"Database unreachable: {type(exc).__name__}", "数据库不可用")
    return {"status": "ready"}


@router.get("/metrics")
async def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/connectors")
async def list_connectors(ctx: Ctx, _viewer: ViewerDep) -> dict[str, object]:
    """Every connector with its configuration, and delivery health per outbound target."""
    return {
        "items": [as_json(c) for c in connectors(ctx.settings)],
        "deliveries": await delivery_health(ctx.engine),
        "outbox": await outbox_health(ctx.settings),
        "runs": await recent_runs(ctx.engine),
    }

"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.api.access import ViewerDep
from services.api.context import ApiContext, Ctx
from services.api.problems import PROBLEM_JSON
from services.connectors_registry import (
    as_json,
    connectors,
    delivery_health,
    outbox_health,
    recent_runs,
)
from services.health import Health, dependency_names, problem_body, store_probes
from services.metrics import HealthMetrics

router = APIRouter()


def _health(request: Request, ctx: ApiContext) -> Health:
    """Built on first use, inside the app's loop, with its gauges in the app's registry."""
    health: Health | None = getattr(request.app.state, "health", None)
    if health is None:
        url = ctx.settings.schema_registry_url
        metrics = HealthMetrics.create(ctx.registry, dependency_names(ctx.settings.database_url, url))
        health = Health(store_probes(ctx.engine, ctx.publisher.bootstrap, url, metrics), metrics)
        request.app.state.health = health
    return health


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request, ctx: Ctx) -> Response | dict[str, object]:
    readiness = await _health(request, ctx).readiness()
    if not readiness.ready:
        return JSONResponse(dict(problem_body(readiness)), status_code=503, media_type=PROBLEM_JSON)
    return readiness.body()


@router.get("/metrics")
async def metrics(request: Request, ctx: Ctx) -> Response:
    # The API has no timer of its own: the dependency gauges are refreshed when Prometheus scrapes
    # (cached, so a busy scraper costs one probe run per second at most).
    await _health(request, ctx).readiness()
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

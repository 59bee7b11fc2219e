"""POST /v1/events: authenticate the unit, validate, encode, publish, answer after acks=all."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from connectors.http_gateway.ingest import (
    BATCH,
    FORBIDDEN_TITLES,
    FieldProblem,
    IngestRejected,
    media_type,
    parse_request,
)
from connectors.kafka.publisher import BrokerUnavailable
from events.catalog import topic_for
from services.api.auth import authenticate, unauthenticated
from services.api.context import ApiContext, Ctx
from services.api.problems import problem
from services.api.scope import out_of_scope

router = APIRouter()
GATEWAY = "http-gateway"


async def _read_body(request: Request, limit: int) -> bytes | None:
    """Read at most `limit` bytes; None if the body is larger, without buffering all of it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/events", status_code=202, responses={202: {"description": "Acknowledged by the broker"}})
async def ingest(
    request: Request,
    ctx: Ctx,
    authorization: Annotated[str | None, Header()] = None,
    content_type: Annotated[str | None, Header()] = None,
) -> Response:
    unit = await authenticate(ctx, authorization)
    if unit is None:
        ctx.metrics.rejected.labels(type="unknown", reason="unauthenticated").inc()
        return unauthenticated()
    body = await _read_body(request, ctx.limits.max_body_bytes)
    try:
        if body is None:
            raise IngestRejected(
                413,
                "too_large",
                "The request is too large",
                "请求过大",
                [FieldProblem("body", f"over {ctx.limits.max_body_bytes} bytes")],
            )
        events = parse_request(
            content_type, body, unit, ctx.catalog, ctx.directory, ctx.limits, dict(request.headers)
        )
    except IngestRejected as exc:
        ctx.metrics.rejected.labels(type=_label(ctx, exc.event_type), reason=exc.reason).inc()
        ctx.metrics.connector.count(GATEWAY, "rejected")
        return problem(exc.status, exc.reason, exc.title, exc.title_zh, exc.problems)
    scope = await out_of_scope(
        ctx.engine, ctx.catalog, ctx.directory, events, media_type(content_type) == BATCH
    )
    if scope:
        ctx.metrics.rejected.labels(type=events[0].type, reason="township_not_permitted").inc()
        title, title_zh = FORBIDDEN_TITLES["township_not_permitted"]
        return problem(403, "township_not_permitted", title, title_zh, scope)
    records = [(topic_for(kind_family(ctx, e.type), ctx.topic_prefix), ctx.codec.encode(e)) for e in events]
    try:
        await ctx.publisher.publish(records)
    except BrokerUnavailable as exc:
        for e in events:
            ctx.metrics.rejected.labels(type=e.type, reason="broker_unavailable").inc()
        return problem(
            503,
            "broker_unavailable",
            "The event broker did not acknowledge; nothing was accepted",
            "消息中间件未确认，事件未被接收，请稍后重试",
            [FieldProblem("broker", str(exc)[:200])],
            headers={"Retry-After": "5"},
        )
    for e in events:
        ctx.metrics.accepted.labels(type=e.type).inc()
    ctx.metrics.connector.count(GATEWAY, "read", len(events))
    ctx.metrics.connector.count(GATEWAY, "published", len(events))
    return Response(content=f'{{"accepted": {len(events)}}}', status_code=202, media_type="application/json")


def kind_family(ctx: ApiContext, event_type: str) -> str:
    return ctx.catalog.get(event_type).family


def _label(ctx: ApiContext, event_type: str) -> str:
    """Bound the label set: only catalog types are used as label values."""
    return event_type if event_type in ctx.catalog.kinds else "unknown"

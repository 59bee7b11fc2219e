"""POST /v1/events: authenticate the unit, validate, encode, publish, answer after acks=all.

Publishing needs the unit's API key (a machine credential): a person's token or a browser session
is refused with 403 `publishing_needs_unit_key`. Each request spends one from the unit's rate limit.
"""

from __future__ import annotations

import logging
import time
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
from services.api.access import VIA_COOKIE, spend
from services.api.auth import (
    Rejected,
    auth_state,
    identify,
    needs_unit_key,
    record_rejection,
    unauthenticated,
)
from services.api.context import ApiContext, Ctx
from services.api.listing import ProblemError
from services.api.problems import problem
from services.api.scope import out_of_scope

router = APIRouter()
GATEWAY = "http-gateway"
# The gateway's refusals that are authorization failures, counted with the other auth rejections.
AUTHORIZATION_REASONS = frozenset({"forged_source", "type_not_permitted", "township_not_permitted"})

log = logging.getLogger(__name__)


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
    received = time.monotonic()
    state = auth_state(request.app)
    try:
        identity = await identify(ctx, state, authorization, via_cookie=bool(request.scope.get(VIA_COOKIE)))
    except Rejected as exc:
        ctx.metrics.rejected.labels(type="unknown", reason="unauthenticated").inc()
        record_rejection(ctx, request.scope, exc.reason, exc.who)
        return unauthenticated(exc.reason)
    if identity.credential != "key":
        ctx.metrics.rejected.labels(type="unknown", reason="publishing_needs_unit_key").inc()
        record_rejection(ctx, request.scope, "needs_unit_key", identity.who, unit=identity.unit)
        return needs_unit_key()
    try:
        spend(ctx, state, request, identity)
    except ProblemError as exc:
        ctx.metrics.rejected.labels(type="unknown", reason="rate_limited").inc()
        return exc.response
    unit = identity.unit
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
        if exc.reason in AUTHORIZATION_REASONS:
            record_rejection(ctx, request.scope, exc.reason, identity.who, unit=unit)
        else:
            log.info("gateway refused the request: %d %s", exc.status, exc.reason, extra={"unit": unit})
        ctx.metrics.connector.count(GATEWAY, "rejected")
        return problem(exc.status, exc.reason, exc.title, exc.title_zh, exc.problems)
    scope = await out_of_scope(
        ctx.engine, ctx.catalog, ctx.directory, events, media_type(content_type) == BATCH
    )
    if scope:
        ctx.metrics.rejected.labels(type=events[0].type, reason="township_not_permitted").inc()
        record_rejection(ctx, request.scope, "township_not_permitted", identity.who, unit=unit)
        title, title_zh = FORBIDDEN_TITLES["township_not_permitted"]
        return problem(403, "township_not_permitted", title, title_zh, scope)
    records = [(topic_for(kind_family(ctx, e.type), ctx.topic_prefix), ctx.codec.encode(e)) for e in events]
    try:
        await ctx.publisher.publish(records)
    except BrokerUnavailable as exc:
        # The cause names the broker's address: for the operator's log, not for the publisher.
        log.warning("publish failed, answering 503: %s", exc, extra={"unit": unit})
        for e in events:
            ctx.metrics.rejected.labels(type=e.type, reason="broker_unavailable").inc()
        return problem(
            503,
            "broker_unavailable",
            # Not "nothing was stored": the broker may still store what it was sent after the
            # deadline. A resend with the same ids is safe, as duplicates count once.
            "The event broker did not acknowledge in time; send the same events again later",
            "消息中间件未及时确认，事件未被接收，请稍后以相同事件ID重新发送",
            [FieldProblem("broker", "not acknowledged within the deadline")],
            headers={"Retry-After": "5"},
        )
    # Receipt to acknowledgement: authentication, validation, encoding and the acks=all round trip,
    # the wait a publisher sees before its 202.
    ctx.metrics.publish_latency.labels(connector=GATEWAY).observe(time.monotonic() - received)
    ctx.metrics.last_success.labels(connector=GATEWAY).set_to_current_time()
    for e in events:
        ctx.metrics.accepted.labels(type=e.type).inc()
        log.debug("accepted %s", e.type, extra={"event_id": e.id, "subject": e.subject, "unit": e.source})
    ctx.metrics.connector.count(GATEWAY, "read", len(events))
    ctx.metrics.connector.count(GATEWAY, "published", len(events))
    return Response(content=f'{{"accepted": {len(events)}}}', status_code=202, media_type="application/json")


def kind_family(ctx: ApiContext, event_type: str) -> str:
    return ctx.catalog.get(event_type).family


def _label(ctx: ApiContext, event_type: str) -> str:
    """Bound the label set: only catalog types are used as label values."""
    return event_type if event_type in ctx.catalog.kinds else "unknown"

"""GET /v1/live: Server-Sent Events telling a dashboard that the store changed, so it refetches.

The store is shared by processes (workers project, the API reads), so the stream polls it: the
latest projection checkpoint and the latest change to the alerts. It carries no data of its own,
only a version, so it needs no township scoping beyond a valid viewer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.schema import alerts, projection_checkpoints
from services.api.access import ViewerDep
from services.api.context import Ctx
from services.api.listing import PROBLEMS

router = APIRouter()
KEEPALIVE_S = 15.0
RETRY_MS = 3000


async def store_version(engine: AsyncEngine) -> str:
    """A short digest of what moves when the store changes."""
    a = alerts.c
    async with engine.connect() as conn:
        checkpoint = await conn.scalar(select(func.max(projection_checkpoints.c.updated_at)))
        latest = (
            await conn.execute(
                select(
                    func.count(), func.max(a.raised_at), func.max(a.withdrawn_at), func.max(a.acknowledged_at)
                )
            )
        ).one()
    text = json.dumps([str(checkpoint), *(str(v) for v in latest)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _event(name: str, version: str) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'version': version})}\n\n".encode()


@router.get(
    "/v1/live",
    responses={
        **PROBLEMS,
        200: {
            "description": "text/event-stream: `ready` once with the current version, then `change` "
            'with {"version": "..."} whenever the store changes; a comment line every 15 s',
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
)
async def live(
    request: Request,
    ctx: Ctx,
    viewer: ViewerDep,
    poll_ms: Annotated[int, Query(ge=100, le=10_000, description="How often the store is polled")] = 1000,
) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        version = await store_version(ctx.engine)
        yield f"retry: {RETRY_MS}\n".encode() + _event("ready", version)
        quiet_since = loop.time()
        while not await request.is_disconnected():
            await asyncio.sleep(poll_ms / 1000)  # the store is shared by processes; poll it
            current = await store_version(ctx.engine)
            if current != version:
                version = current
                quiet_since = loop.time()
                yield _event("change", version)
            elif loop.time() - quiet_since >= KEEPALIVE_S:
                quiet_since = loop.time()
                # A comment keeps proxies from closing an idle connection; EventSource ignores it.
                yield b": keep-alive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

"""What the API's routes need, built once in the composition root and injected per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.http_gateway.ingest import Limits
from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog
from events.directory import Directory
from events.serde import EventCodec
from services.metrics import GatewayMetrics
from services.settings import Settings


@dataclass(slots=True)
class ApiContext:
    engine: AsyncEngine
    catalog: Catalog
    directory: Directory
    codec: EventCodec
    publisher: KafkaPublisher
    registry: CollectorRegistry
    metrics: GatewayMetrics
    limits: Limits
    settings: Settings
    topic_prefix: str = "liandong"


async def _context(request: Request) -> ApiContext:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per
    # request for a dictionary lookup.
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(_context)]

"""Composition root of the API process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from connectors.http_gateway.ingest import Limits
from connectors.kafka.publisher import GATEWAY_ACK_TIMEOUT_S, KafkaPublisher
from events.catalog import Catalog
from events.directory import Directory
from events.serde import EventCodec
from projections.db import make_engine
from services.api import (
    access,
    alerts,
    analysis,
    audit,
    breakdowns,
    cases,
    ingest,
    live,
    matters,
    ops,
    publications,
    registers,
    stats,
    tracking,
    trend,
)
from services.api.context import ApiContext
from services.dashboard import router as dashboard
from services.metrics import GatewayMetrics
from services.registry import make_registry
from services.settings import Settings


def create_app(settings: Settings, bootstrap: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        catalog = Catalog.load()
        registry = make_registry(settings)
        codec = EventCodec(catalog, registry)
        await codec.prepare()
        metrics_registry = CollectorRegistry()
        ctx = ApiContext(
            engine=make_engine(settings.database_url),
            catalog=catalog,
            directory=Directory.load(),
            codec=codec,
            publisher=KafkaPublisher(
                bootstrap,
                ack_timeout_s=GATEWAY_ACK_TIMEOUT_S,
                partitions=settings.topic_partitions,
                replication=settings.topic_replication,
            ),
            registry=metrics_registry,
            metrics=GatewayMetrics.create(metrics_registry),
            limits=Limits(),
            settings=settings,
        )
        app.state.ctx = ctx
        try:
            yield
        finally:
            await ctx.publisher.close()
            await ctx.engine.dispose()

    app = FastAPI(
        title="Liandong 联动",
        summary="Integration hub for township comprehensive administrative enforcement",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN, which a district network
        # may not reach; the schema itself is served at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    access.install(app)
    app.include_router(ingest.router, tags=["ingest"])
    app.include_router(cases.router, tags=["cases"])
    app.include_router(matters.router, tags=["matters"])
    app.include_router(alerts.router, tags=["closed loop"])
    app.include_router(publications.router, tags=["publication"])
    app.include_router(stats.router, tags=["analysis"])
    app.include_router(analysis.router, tags=["analysis"])
    app.include_router(trend.router, tags=["analysis"])
    app.include_router(breakdowns.router, tags=["analysis"])
    app.include_router(registers.router, tags=["registers"])
    app.include_router(tracking.router, tags=["registers"])
    app.include_router(live.router, tags=["live"])
    app.include_router(ops.router, tags=["ops"])
    app.include_router(audit.router, tags=["audit"])
    app.include_router(dashboard.router)
    return app

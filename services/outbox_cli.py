"""`liandong outbox-relay`: run the outbox relay until SIGINT or SIGTERM, serving /metrics, /healthz
and /readyz on LIANDONG_RELAY_WEB_HOST:LIANDONG_RELAY_WEB_PORT.

Readiness here is the broker and the agency's outbox database: the relay reads neither the hub's
store nor its projections, so a rebuild does not concern it (docs/operations.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal

import asyncpg  # type: ignore[import-untyped]
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from connectors.framework import Health
from connectors.outbox.relay import CONNECTOR, OutboxRelay
from services.health import PROBE_TIMEOUT_S, Probe, kafka_probe, problem_body
from services.health import Health as Readiness
from services.metrics import HealthMetrics, RelayMetrics
from services.settings import Settings, SettingsError

log = logging.getLogger(__name__)
OUTBOX_DATABASE = "outbox_database"


def run_relay(settings: Settings, bootstrap: str, interval_s: float = 1.0) -> int:
    if not settings.outbox_dsn:
        raise SettingsError("LIANDONG_OUTBOX_DSN is required: the agency database holding the outbox table")
    registry = CollectorRegistry()
    metrics = RelayMetrics.create(registry, f"{CONNECTOR}:{settings.outbox_table}")
    health = Health(name=f"{CONNECTOR}:{settings.outbox_table}", kind="inbound", metrics=metrics.connector)
    asyncio.run(_run(settings, bootstrap, health, metrics, registry, interval_s))
    log.info("outbox relay stopped: %s", health.as_json())
    return 0


def outbox_probe(dsn: str) -> Probe:
    async def run() -> str:
        conn = await asyncpg.connect(dsn, timeout=PROBE_TIMEOUT_S)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        return "SELECT 1"

    return Probe(OUTBOX_DATABASE, run)


def web_app(
    health: Health, metrics: RelayMetrics, registry: CollectorRegistry, readiness: Readiness
) -> web.Application:
    def connector_gauges() -> None:
        metrics.up.labels(connector=health.name).set(1 if health.ok else 0)
        if health.ok and health.last_run_at is not None:
            metrics.last_success.labels(connector=health.name).set(health.last_run_at.timestamp())

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        answer = await readiness.readiness()
        if answer.ready:
            return web.json_response(answer.body())
        body = json.dumps(problem_body(answer), ensure_ascii=False)
        return web.Response(text=body, status=503, content_type="application/problem+json")

    async def metrics_page(_request: web.Request) -> web.Response:
        await readiness.readiness()  # the dependency gauges, fresh at every scrape (cached for 1 s)
        connector_gauges()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def _run(
    settings: Settings,
    bootstrap: str,
    health: Health,
    metrics: RelayMetrics,
    registry: CollectorRegistry,
    interval_s: float,
) -> None:
    assert settings.outbox_dsn is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    probes = [kafka_probe(bootstrap), outbox_probe(settings.outbox_dsn)]
    health_metrics = HealthMetrics.create(registry, [p.name for p in probes])
    runner = web.AppRunner(
        web_app(health, metrics, registry, Readiness(probes, health_metrics)), access_log=None
    )
    await runner.setup()
    await web.TCPSite(runner, settings.relay_web_host, settings.relay_web_port).start()
    try:
        latency = metrics.publish_latency.labels(connector=health.name)

        def published(seconds: float, events: int) -> None:
            for _ in range(events):
                latency.observe(seconds)

        async with OutboxRelay(
            settings.outbox_dsn, bootstrap, table=settings.outbox_table, health=health, on_published=published
        ) as relay:
            backlog = asyncio.create_task(_watch_backlog(relay, stop, interval_s * 5))
            try:
                await relay.run(stop, interval_s)
            finally:
                backlog.cancel()
    finally:
        await runner.cleanup()


async def _watch_backlog(relay: OutboxRelay, stop: asyncio.Event, every_s: float) -> None:
    # The backlog count reads the whole outbox, so it runs less often than the relay itself.
    while not stop.is_set():
        try:
            await relay.backlog()
        except Exception as exc:  # a failed count must not stop the relay; the next one retries
            log.warning("outbox backlog count failed: %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)

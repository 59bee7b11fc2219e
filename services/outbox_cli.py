"""`liandong outbox-relay`: run the outbox relay until SIGINT or SIGTERM, with metrics on a port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from prometheus_client import CollectorRegistry, start_http_server

from connectors.framework import ConnectorMetrics, Health
from connectors.outbox.relay import CONNECTOR, OutboxRelay
from services.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def run_relay(settings: Settings, bootstrap: str, interval_s: float = 1.0) -> int:
    if not settings.outbox_dsn:
        raise SettingsError("LIANDONG_OUTBOX_DSN is required: the agency database holding the outbox table")
    registry = CollectorRegistry()
    metrics = ConnectorMetrics.create(registry)
    start_http_server(settings.connector_metrics_port, addr="127.0.0.1", registry=registry)
    health = Health(name=f"{CONNECTOR}:{settings.outbox_table}", kind="inbound", metrics=metrics)
    asyncio.run(_run(settings.outbox_dsn, bootstrap, settings.outbox_table, health, interval_s))
    log.info("outbox relay stopped: %s", health.as_json())
    return 0


async def _run(dsn: str, bootstrap: str, table: str, health: Health, interval_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with OutboxRelay(dsn, bootstrap, table=table, health=health) as relay:
        backlog = asyncio.create_task(_watch_backlog(relay, stop, interval_s * 5))
        try:
            await relay.run(stop, interval_s)
        finally:
            backlog.cancel()


async def _watch_backlog(relay: OutboxRelay, stop: asyncio.Event, every_s: float) -> None:
    # The backlog count reads the whole outbox, so it runs less often than the relay itself.
    while not stop.is_set():
        try:
            await relay.backlog()
        except Exception as exc:  # a failed count must not stop the relay; the next one retries
            log.warning("outbox backlog count failed: %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)

"""/healthz and /readyz of the api, the worker and the outbox relay, as real processes, while their
dependencies come and go: a rebuild marker held, the store's PostgreSQL stopped (a private cluster,
never the machine's), the broker frozen (SIGSTOP: it accepts connections and answers nothing, the
worst case for a probe) and the broker stopped. Readiness must follow within seconds, answer within
the probe timeout even while a dependency hangs, and come back once the dependency does.

One hub is shared by the module's tests, which run in order and each leave it ready."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from events.catalog import Catalog
from projections.db import make_engine
from projections.migrate import upgrade
from services.embedded_broker import EmbeddedBroker
from services.health import PROBE_TIMEOUT_S
from services.rebuild import catalog_topics
from services.rebuilding import mark_rebuilding
from tests.ops_processes import OUTBOX_DDL, Hub, readyz
from tests.pgcluster import PgCluster
from tests.support import wait_for

pytestmark = pytest.mark.integration

STORE_PROCESSES = ("api", "worker")
ALL = ("api", "worker", "relay")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("health")


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with PgCluster() as pg:
        yield pg


@pytest.fixture(scope="module")
def own_broker(module_tmp: Path) -> Iterator[EmbeddedBroker]:
    instance = EmbeddedBroker(log_path=module_tmp / "tansu.log")
    instance.start()
    yield instance
    if instance.pid is not None:
        os.kill(instance.pid, signal.SIGCONT)  # never leave it frozen
    instance.stop()


@pytest.fixture(scope="module")
async def store(cluster: PgCluster) -> str:
    url = await cluster.create_database("liandong")
    engine = make_engine(url)
    await upgrade(engine)
    await engine.dispose()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(OUTBOX_DDL)
    finally:
        await conn.close()
    return url


@pytest.fixture(scope="module")
async def hub(own_broker: EmbeddedBroker, store: str, module_tmp: Path) -> AsyncIterator[Hub]:
    hub = Hub(
        module_tmp,
        {
            "LIANDONG_KAFKA_BOOTSTRAP": own_broker.bootstrap,
            "LIANDONG_DATABASE_URL": store,
            "LIANDONG_DATA_DIR": str(module_tmp / "data"),
            "LIANDONG_TOPIC_PARTITIONS": "1",
            "LIANDONG_OUTBOX_DSN": store.replace("postgresql+asyncpg://", "postgresql://"),
        },
    )
    try:
        hub.start("worker", ("worker",), "LIANDONG_WORKER_WEB_PORT")
        hub.start("api", ("api",), "LIANDONG_API_PORT")
        hub.start("relay", ("outbox-relay",), "LIANDONG_RELAY_WEB_PORT")
        for name in ALL:
            await hub.answering(name)
        await all_ready(hub, ALL)
        yield hub
    finally:
        hub.stop_all()


async def all_ready(hub: Hub, names: tuple[str, ...], timeout_s: float = 60) -> None:
    async def ready(name: str) -> None:
        async def answer() -> bool:
            hub.assert_running()
            status, _body, _ = await readyz(hub.urls[name])
            return status == 200

        await wait_for(answer, timeout_s, f"{name} to be ready")

    await asyncio.gather(*(ready(name) for name in names))


async def all_not_ready(hub: Hub, checks: dict[str, str]) -> list[dict[str, Any]]:
    """Process name -> the check that must fail; the processes are asked concurrently."""
    return list(await asyncio.gather(*(not_ready(hub, name, check) for name, check in checks.items())))


async def not_ready(hub: Hub, name: str, check: str, timeout_s: float = 30) -> dict[str, Any]:
    """Wait for a 503 whose `check` failed; every answer on the way must come within the probe
    timeout plus a margin, however the dependency misbehaves."""

    async def failed() -> dict[str, Any] | None:
        started = time.monotonic()
        status, body, content_type = await readyz(hub.urls[name])
        elapsed = time.monotonic() - started
        assert elapsed < PROBE_TIMEOUT_S + 2.5, f"{name} took {elapsed:.1f} s to answer /readyz"
        if status != 503:
            assert status == 200, (status, body)
            return None
        assert content_type.startswith("application/problem+json"), content_type
        if body["checks"][check]["status"] != "fail":
            return None
        return body

    body: dict[str, Any] = await wait_for(failed, timeout_s, f"{name} to be not ready because of {check}")
    assert body["status"] == 503
    assert body["title_zh"]
    assert check in body["detail"]
    return body


async def test_every_process_is_live_and_ready(hub: Hub) -> None:
    async with httpx.AsyncClient() as client:
        for name in ALL:
            response = await client.get(f"{hub.urls[name]}/healthz", timeout=5)
            assert response.status_code == 200
            assert response.json() == {"status": "ok"}
    for name in STORE_PROCESSES:
        status, body, _ = await readyz(hub.urls[name])
        assert status == 200
        assert body["status"] == "ready"
        assert {
            c: body["checks"][c]["status"] for c in ("kafka", "postgresql", "rebuilding")
        } == dict.fromkeys(("kafka", "postgresql", "rebuilding"), "ok")
    _status, body, _ = await readyz(hub.urls["worker"])
    # One partition per topic, and the one worker of the group holds them all.
    topics = len(catalog_topics(Catalog.load()))
    assert body["checks"]["consumer_group"]["detail"] == f"{topics} partition(s) assigned"
    _status, body, _ = await readyz(hub.urls["api"])
    assert "consumer_group" not in body["checks"]
    status, body, _ = await readyz(hub.urls["relay"])
    assert status == 200
    assert set(body["checks"]) == {"kafka", "outbox_database"}


async def test_a_held_rebuild_marker_makes_the_store_processes_unready(hub: Hub, store: str) -> None:
    engine = make_engine(store)
    try:
        async with mark_rebuilding(engine, "cases"):
            for body in await all_not_ready(hub, dict.fromkeys(STORE_PROCESSES, "rebuilding")):
                assert "cases" in body["checks"]["rebuilding"]["detail"]
            # The relay reads neither the store's projections nor waits for them.
            status, _body, _ = await readyz(hub.urls["relay"])
            assert status == 200
        await all_ready(hub, STORE_PROCESSES, 10)
    finally:
        await engine.dispose()


async def test_the_store_stopped_makes_every_process_unready_until_it_is_back(
    hub: Hub, cluster: PgCluster
) -> None:
    cluster.stop()
    try:
        await all_not_ready(hub, {"api": "postgresql", "worker": "postgresql", "relay": "outbox_database"})
        hub.assert_running()  # liveness is not readiness: nobody exited
    finally:
        cluster.start()
    await all_ready(hub, ALL)


async def test_a_frozen_broker_is_not_ready_within_the_probe_timeout(
    hub: Hub, own_broker: EmbeddedBroker
) -> None:
    assert own_broker.pid is not None
    os.kill(own_broker.pid, signal.SIGSTOP)
    try:
        await all_not_ready(hub, dict.fromkeys(ALL, "kafka"))
    finally:
        os.kill(own_broker.pid, signal.SIGCONT)
    await all_ready(hub, ALL)


async def test_a_stopped_broker_is_not_ready_until_it_is_back(hub: Hub, own_broker: EmbeddedBroker) -> None:
    own_broker.stop()
    try:
        await all_not_ready(hub, dict.fromkeys(ALL, "kafka"))
    finally:
        own_broker.start()
    await all_ready(hub, ALL)

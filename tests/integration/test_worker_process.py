"""The faust worker as a real process, against a real broker and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.envelope import Envelope
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import cases, event_history
from services.embedded_broker import EmbeddedBroker
from services.worker.app import EXIT_FAULT_INJECTED
from tests.processes import Workers
from tests.support import case_event, wait_for

TOPIC = topic_for("case")


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(pg_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def publish(bootstrap: str, events: Sequence[Envelope]) -> None:
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    publisher = KafkaPublisher(bootstrap, partitions=3)
    try:
        await publisher.publish([(TOPIC, codec.encode(e)) for e in events])
    finally:
        await publisher.close()


async def projected(engine: AsyncEngine, prefix: str, workers: Workers | None = None) -> int:
    """Events of this test's cases in the store (the session broker also holds other tests' events)."""
    if workers is not None:
        workers.assert_running()
    query = select(func.count()).select_from(event_history).where(event_history.c.subject.startswith(prefix))
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def metric(port: int, name: str, type_prefix: str = "") -> float:
    """Sum of a metric's samples, optionally only those whose `type` label starts with a prefix."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("type", "").startswith(type_prefix)
    )


async def test_the_worker_projects_published_events(
    fresh_broker: EmbeddedBroker, engine: AsyncEngine, workers: Workers
) -> None:
    broker = fresh_broker.bootstrap
    events = [case_event(kind, f"W-{i}") for i in range(30) for kind in ("filed", "decided")]
    await publish(broker, events)
    _, port = workers.start(broker)

    async def all_projected() -> bool:
        return await projected(engine, "W-", workers) == len(events)

    await wait_for(all_projected, 60, "the worker to project 60 events")
    async with engine.connect() as conn:
        stages = set(
            (await conn.execute(select(cases.c.stage).where(cases.c.case_id.startswith("W-")))).scalars()
        )
    assert stages == {"decided"}

    async def counted() -> float:
        # The worker also projects the directory it publishes at start; count the case events.
        # Wait for the whole count: the counter can trail the database commit it follows.
        value = await metric(port, "liandong_events_projected_total", "cn.gov.liandong.case.")
        return value if value >= len(events) else 0

    assert await wait_for(counted, 20, "the projected counter on /metrics") == len(events)


async def test_a_crash_between_the_database_commit_and_the_offset_commit_changes_nothing(
    fresh_broker: EmbeddedBroker, engine: AsyncEngine, workers: Workers
) -> None:
    broker = fresh_broker.bootstrap
    events = [case_event("filed", f"C-{i}") for i in range(200)]
    await publish(broker, events)
    crashing, _ = workers.start(broker, LIANDONG_FAULT_EXIT_AFTER_BATCHES="1", LIANDONG_BATCH_MAX="50")
    assert crashing.wait(60) == EXIT_FAULT_INJECTED
    # The first batch may mix these cases with the directory the worker published at start.
    committed_before_restart = await projected(engine, "")
    assert 0 < committed_before_restart <= 50
    assert await projected(engine, "C-") < len(events)

    _, port = workers.start(broker, LIANDONG_BATCH_MAX="50")

    async def all_projected() -> bool:
        return await projected(engine, "C-", workers) == len(events)

    await wait_for(all_projected, 60, "the restarted worker to project every event")
    async with engine.connect() as conn:
        total = await conn.scalar(
            select(func.sum(cases.c.event_count)).where(cases.c.case_id.startswith("C-"))
        )
    assert total == len(events)

    # The restarted worker really was handed the already-committed batch again and skipped it.
    async def redelivered() -> float:
        value = await metric(port, "liandong_events_redelivered_total")
        return value if value >= committed_before_restart else 0

    assert await wait_for(redelivered, 20, "redelivered records on /metrics") == committed_before_restart


async def test_a_restarted_memory_broker_does_not_make_old_checkpoints_skip_new_events(
    tmp_path: Path, engine: AsyncEngine, workers: Workers
) -> None:
    first = EmbeddedBroker(log_path=tmp_path / "broker-a.log")
    await publish(first.start(), [case_event("filed", f"A-{i}") for i in range(20)])
    worker, _ = workers.start(first.bootstrap, LIANDONG_TOPIC_PARTITIONS="1")

    async def twenty() -> bool:
        return await projected(engine, "A-", workers) == 20

    await wait_for(twenty, 60, "20 events from the first broker")
    workers.stop(worker)
    first.stop()

    # The same port, an empty log: the new events get offsets 0..4, all below the old checkpoints.
    second = EmbeddedBroker(port=first.port, log_path=tmp_path / "broker-b.log")
    second.start()
    try:
        await publish(second.bootstrap, [case_event("filed", f"B-{i}") for i in range(5)])
        workers.start(second.bootstrap, LIANDONG_TOPIC_PARTITIONS="1")

        async def twenty_five() -> bool:
            return await projected(engine, "B-", workers) == 5

        await wait_for(twenty_five, 60, "the 5 events of the restarted broker")
    finally:
        workers.stop_all()
        second.stop()

"""`liandong rebuild`: replaying the topics into a fresh store gives the projections the worker built."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.envelope import Envelope
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections import schema
from projections.db import make_engine
from projections.migrate import upgrade
from services.embedded_broker import EmbeddedBroker
from services.rebuild import Progress, rebuild
from services.settings import Settings
from tests.processes import Workers
from tests.support import (
    case_event,
    catalog_event,
    create_pg_database,
    drop_pg_database,
    plain,
    replay_settings,
    wait_for,
)

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
# Every clock these events start is days from its first threshold at this moment: the worker's scanner
# raises nothing, and both paths stamp the clock rows with the same `now`.
NOW = T0 + timedelta(days=1)
PROJECTIONS = (
    schema.event_history,
    schema.cases,
    schema.matters,
    schema.matter_parties,
    schema.anomalies,
    schema.directory_units,
    schema.clocks,
    schema.alerts,
    schema.alert_recipients,
    schema.deliveries,
)
# Columns stamped with the wall clock of the transaction that wrote them: when, not what.
PROCESSING_TIME = {"anomalies": {"detected_at", "resolved_at"}, "clocks": {"updated_at"}}


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def archive() -> list[Envelope]:
    """A few hundred events of several areas, with a duplicate id and a decision before its filing."""
    events: list[Envelope] = []
    for i in range(45):
        subject = f"SL-RB-{i:03d}"
        events += [
            case_event("filed", subject, time_=at(i * 0.1)),
            catalog_event("case.investigation_completed.v1", subject, time_=at(i * 0.1 + 1)),
            case_event("decided", subject, time_=at(i * 0.1 + 2)),
            case_event("closed", subject, time_=at(i * 0.1 + 3)),
        ]
    for i in range(25):
        subject = f"TR-RB-{i:03d}"
        receiver = "nancun.police-station"
        events += [
            catalog_event("transfer.requested.v1", subject, time_=at(i * 0.1), to_unit=receiver),
            catalog_event("transfer.received.v1", subject, source=receiver, time_=at(i * 0.1 + 1)),
            catalog_event("transfer.accepted.v1", subject, source=receiver, time_=at(i * 0.1 + 2)),
        ]
    for i in range(20):
        subject = f"CP-RB-{i:03d}"
        events += [
            catalog_event("complaint.received.v1", subject, time_=at(i * 0.1)),
            catalog_event("complaint.answered.v1", subject, time_=at(i * 0.1 + 5)),
        ]
    # The same fact published twice (a client's retry): one copy counts.
    events.append(events[5])
    # A decision that arrives before its filing: nothing is open once the filing is in. And a decision
    # whose filing never comes: an open anomaly.
    events += [
        case_event("decided", "SL-RB-LATE", time_=at(3)),
        case_event("filed", "SL-RB-LATE", time_=at(1)),
        case_event("decided", "SL-RB-ORPHAN", time_=at(3)),
    ]
    return events


async def publish(bootstrap: str, events: Sequence[Envelope]) -> None:
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    publisher = KafkaPublisher(bootstrap, client_id="test-rebuild", partitions=3)
    try:
        for event in events:  # one at a time: the duplicate and the late filing land in this order
            await publisher.publish([(topic_for(event.area), codec.encode(event))])
    finally:
        await publisher.close()


async def end_offsets(bootstrap: str) -> dict[tuple[str, int], int]:
    """The end of every non-empty partition of the catalog topics, from fetch high watermarks: Tansu's
    ListOffsets answer is only the start of the last record batch plus one."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()
        topics = [topic_for(f) for f in Catalog.load().families if topic_for(f) in existing]
        parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)

        async def watermarks() -> dict[TopicPartition, int] | None:
            await consumer.getmany(timeout_ms=100)
            marks = {tp: consumer.highwater(tp) for tp in parts}
            return None if None in marks.values() else {tp: int(m) for tp, m in marks.items() if m}

        ends = await wait_for(watermarks, 20, "a fetch response for every partition")
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}
    finally:
        await consumer.stop()


async def checkpoints(engine: AsyncEngine, consumer: str) -> dict[tuple[str, int], int]:
    t = schema.projection_checkpoints
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(t.c.topic, t.c.partition, t.c.offset).where(t.c.consumer == consumer)
        )
        return {(r.topic, r.partition): int(r.offset) + 1 for r in rows}


async def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_engine(url)
    out: dict[str, list[tuple[Any, ...]]] = {}
    try:
        async with engine.connect() as conn:
            for table in PROJECTIONS:
                skip = PROCESSING_TIME.get(table.name, set())
                columns = [c for c in table.c if c.name not in skip]
                query = select(*columns)
                if table is schema.anomalies:
                    # Open anomalies do not depend on batching; resolved ones do: a decision and its
                    # late filing in one batch never raise one, in two batches they raise and resolve.
                    query = query.where(schema.anomalies.c.resolved_at.is_(None))
                rows = [tuple(plain(v) for v in row) for row in await conn.execute(query)]
                out[table.name] = sorted(rows, key=repr)
    finally:
        await engine.dispose()
    return out


def settings_for(url: str, tmp_path: Path, bootstrap: str, now_file: Path) -> Settings:
    settings: Settings = replay_settings(url, tmp_path / "rebuild-data", bootstrap, now_file)
    return settings


async def test_a_rebuild_into_fresh_stores_gives_the_live_workers_projections_and_a_rerun_changes_nothing(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, workers: Workers
) -> None:
    now_file = tmp_path / "now.txt"
    now_file.write_text(NOW.isoformat(), encoding="utf-8")
    events = archive()
    await publish(fresh_broker.bootstrap, events)

    # The live path: the real worker process projects the topics, then stops.
    live = make_engine(pg_url)
    await upgrade(live)
    process, _ = workers.start(
        fresh_broker.bootstrap,
        LIANDONG_TIME_SOURCE=f"file:{now_file}",
        LIANDONG_CLOCK_SCAN_INTERVAL_MS="3600000",
    )
    try:

        async def directory_projected() -> bool:
            workers.assert_running()
            async with live.connect() as conn:
                units = (await conn.execute(select(schema.directory_units.c.unit_id))).all()
            return len(units) == len(Directory.load().units)

        await wait_for(directory_projected, 90, "the worker to project the directory it publishes")
        ends = await end_offsets(fresh_broker.bootstrap)

        async def caught_up() -> bool:
            workers.assert_running()
            return await checkpoints(live, "hub") == ends

        await wait_for(caught_up, 90, f"the worker's checkpoints to reach {ends}")
    finally:
        await live.dispose()
    workers.stop(process)
    expected = await snapshot(pg_url)
    assert len(expected["event_history"]) == len({e.id for e in events}) + len(Directory.load().units)
    assert len(expected["cases"]) == 47
    assert len(expected["matters"]) == 45
    assert {a[1] for a in expected["anomalies"]} == {"SL-RB-ORPHAN"}

    rebuilt_pg = await create_pg_database()
    rebuilt_sqlite = f"sqlite+aiosqlite:///{tmp_path / 'rebuilt.db'}"
    try:
        for url in (rebuilt_pg, rebuilt_sqlite):
            result = await rebuild(settings_for(url, tmp_path, fresh_broker.bootstrap, now_file), batch=50)
            assert result.records == sum(ends.values())
            assert result.applied == len(expected["event_history"])
            assert result.dead_lettered == {}
            assert await snapshot(url) == expected, url
            engine = make_engine(url)
            try:
                assert await checkpoints(engine, "hub") == ends
            finally:
                await engine.dispose()

        # A rerun resumes after its checkpoints: nothing left to read.
        settings = settings_for(rebuilt_pg, tmp_path, fresh_broker.bootstrap, now_file)
        again = await rebuild(settings)
        assert (again.records, again.applied) == (0, 0)
        # Under another checkpoint name it reads everything again, and the history keeps each id once.
        other = await rebuild(settings, consumer="second-rebuild")
        assert (other.records, other.applied) == (sum(ends.values()), 0)
        assert await snapshot(rebuilt_pg) == expected
    finally:
        await drop_pg_database(rebuilt_pg)


async def test_a_rebuild_stops_at_the_end_offsets_it_saw_at_start(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path
) -> None:
    now_file = tmp_path / "now.txt"
    now_file.write_text(NOW.isoformat(), encoding="utf-8")
    await publish(
        fresh_broker.bootstrap, [case_event("filed", f"SL-END-{i}", time_=at(i)) for i in range(30)]
    )
    late: list[asyncio.Task[None]] = []

    def publish_more_after_the_first_batch(progress: Progress) -> None:
        if not late:
            more = [case_event("filed", f"SL-LATE-{i}", time_=at(i)) for i in range(30)]
            late.append(asyncio.get_running_loop().create_task(publish(fresh_broker.bootstrap, more)))

    settings = settings_for(pg_url, tmp_path, fresh_broker.bootstrap, now_file)
    result = await rebuild(settings, batch=5, progress=publish_more_after_the_first_batch, progress_every=5)
    await late[0]
    assert result.records == 30
    assert sum((await end_offsets(fresh_broker.bootstrap)).values()) == 60

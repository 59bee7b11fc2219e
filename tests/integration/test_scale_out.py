"""Scale-out, for real: workers join and leave a running group, and nothing is lost or counted twice.

One scenario, with real `liandong worker` processes, the embedded broker (Tansu) and PostgreSQL:

1. worker A starts alone: it creates the topics with LIANDONG_TOPIC_PARTITIONS partitions, joins the
   group LIANDONG_CONSUMER_GROUP (plus the store's id), and projects a first batch on every partition;
2. worker B starts while events keep coming: the group rebalances and both project;
3. A stops gracefully (SIGTERM) while events keep coming: B takes every partition;
4. B is SIGKILLed while events keep coming, and C starts: a crash rebalance, C takes every partition.

At the end every acknowledged event is in the history once, applied once (the per-case and
per-matter event counts), archived once in one gapless chain; the checkpoints reach the end of
every partition; and the projections equal a replay of the same records into an empty database
(tests/projection_diff.py). The events are bench/workload.py's mix over the whole catalog, validated
and encoded as the gateway does, so cases, matters, clocks and parties are all exercised.
docs/scaling.md explains why this holds: the checkpoints are written in the projection's own
transaction, and a redelivered record is skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import islice
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.workload import Workload, requests
from connectors.http_gateway.ingest import Limits, validate_event
from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.registry import LocalSchemaRegistry
from events.serde import EncodedRecord, EventCodec
from projections.db import make_engine
from projections.migrate import instance_id, upgrade
from projections.schema import archive, cases, event_history, matters, projection_checkpoints
from services.embedded_broker import EmbeddedBroker
from tests.processes import Workers
from tests.projection_diff import assert_equals_replay
from tests.support import wait_for

PARTITIONS = 4  # neither the default (6) nor tests/processes.py's (3): the setting must take effect
GROUP = "scale-out-test"
CASES = topic_for("case")
# The hub's own areas: not the feed's, and the workers publish to them by themselves (the directory at
# start, alerts and anomalies from their timers), so they are left out of the counts.
HUB_AREAS = ("directory", "alert", "anomaly")
SETTINGS = {
    "LIANDONG_TOPIC_PARTITIONS": str(PARTITIONS),
    "LIANDONG_CONSUMER_GROUP": GROUP,
    # Tansu rebalances after a dead member's session expires: the lowest allowed value makes the
    # crash rebalance as quick as it can be.
    "LIANDONG_BROKER_SESSION_TIMEOUT_S": "6",
}
FIRST_BATCH = 600


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(pg_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def workload(seed: int) -> Iterator[tuple[str, EncodedRecord]]:
    """An endless stream of bench/workload.py's mix, validated and encoded as the gateway does,
    made as it is published: the feed never runs out, however long a phase takes."""
    catalog, directory = Catalog.load(), Directory.load()
    codec = EventCodec(catalog, LocalSchemaRegistry())
    await codec.prepare()
    limits = Limits()

    def records() -> Iterator[tuple[str, EncodedRecord]]:
        for unit, events in requests(Workload(seed).events(), 10**9, 20):
            for item in events:
                event = validate_event(item, unit, catalog, directory, limits)
                yield topic_for(catalog.get(event.type).family), codec.encode(event)

    return records()


class Feed:
    """Publishes the records in chunks at a steady pace in the background, until stopped; keeps
    the ids the broker acknowledged (acks=all), which must all be projected, and their topics."""

    def __init__(self, publisher: KafkaPublisher, records: Iterator[tuple[str, EncodedRecord]]) -> None:
        self.publisher = publisher
        self.records = records
        self.acked: list[str] = []
        self.topics: set[str] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Feed:
        self._task = asyncio.create_task(self._run())
        return self

    async def publish(self, count: int) -> None:
        part = list(islice(self.records, count))
        await self.publisher.publish(part)
        self.acked += [ce_id(r) for _, r in part]
        self.topics |= {topic for topic, _ in part}

    async def stop(self) -> list[str]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.acked

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def check(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()  # a failed feed fails the test here, not at the end

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.publish(40)
            await asyncio.sleep(0.2)  # the feed's pace (~200 events/s), not synchronisation


def ce_id(record: EncodedRecord) -> str:
    return dict(record.headers)["ce_id"].decode()


async def scrape(port: int, name: str) -> float:
    """A counter of one worker's /metrics, summed over its labels, the hub's own event types (the
    directory each worker publishes at start, alerts, anomalies) left out."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    own = tuple(f"cn.gov.liandong.{area}." for area in HUB_AREAS)
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name + "_total" and not s.labels.get("type", "").startswith(own)
    )


async def checkpoints(engine: AsyncEngine, topic: str = CASES) -> dict[int, int]:
    t = projection_checkpoints
    async with engine.connect() as conn:
        rows = await conn.execute(select(t.c.partition, t.c.offset).where(t.c.topic == topic))
        return {int(r.partition): int(r.offset) for r in rows}


async def all_checkpoints(engine: AsyncEngine) -> dict[TopicPartition, int]:
    t = projection_checkpoints
    async with engine.connect() as conn:
        rows = await conn.execute(select(t.c.topic, t.c.partition, t.c.offset))
        return {TopicPartition(r.topic, int(r.partition)): int(r.offset) for r in rows}


async def history_count(engine: AsyncEngine) -> int:
    h = event_history.c
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).where(h.area.not_in(HUB_AREAS))) or 0)


async def topic_partitions(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()  # a metadata refresh
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """Each partition's end: the larger of the listed end offset and a fetch's high watermark, as
    services/rebuild.py takes it (Tansu lists the last batch's base offset plus one)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        listed = {tp: int(end) for tp, end in (await consumer.end_offsets(parts)).items()}
        ends = {tp: 0 for tp, end in listed.items() if end == 0}
        consumer.assign(parts)
        for tp, end in listed.items():
            consumer.seek(tp, max(0, end - 1))

        async def watermarks() -> bool:
            await consumer.getmany(timeout_ms=100)
            for tp in parts:
                highwater = consumer.highwater(tp)
                if tp not in ends and highwater is not None:
                    ends[tp] = max(listed[tp], int(highwater))
            return len(ends) == len(parts)

        await wait_for(watermarks, 20, "a high watermark of every partition")
        return ends
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The offsets `group` has committed on the broker for `topic`'s partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


async def test_workers_join_leave_and_crash_without_loss_or_double_counting(
    fresh_broker: EmbeddedBroker, pg_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap
    topics = sorted(topic_for(f) for f in Catalog.load().families)
    pool = Workers(tmp_path, pg_url)
    publisher = KafkaPublisher(bootstrap, partitions=PARTITIONS)
    feed = Feed(publisher, await workload(seed=9))
    try:
        # 1. A alone: it creates the topics with the configured partition count.
        a, a_port = pool.start(bootstrap, **SETTINGS)

        async def topics_made() -> dict[str, int] | None:
            pool.assert_running()
            made = await topic_partitions(bootstrap, topics)
            return made if all(made.values()) else None

        assert await wait_for(topics_made, 40, "worker A to create the topics") == dict.fromkeys(
            topics, PARTITIONS
        )
        await feed.publish(FIRST_BATCH)  # before the feed's own pace starts

        async def first_batch_in() -> bool:
            pool.assert_running()
            return await history_count(engine) >= FIRST_BATCH

        await wait_for(first_batch_in, 40, "worker A to project the first batch")
        assert set(await checkpoints(engine)) == set(range(PARTITIONS)), "A alone held every partition"

        # The group is the setting plus the store's id, and it is the one that commits offsets.
        store = (await instance_id(engine))[:12]
        group = f"{GROUP}.{store}"

        async def offsets_committed() -> bool:
            return all(o is not None for o in (await committed(bootstrap, group, CASES)).values())

        await wait_for(offsets_committed, 20, f"offsets committed under the group {group}")
        default = await committed(bootstrap, f"liandong-projector.{store}", CASES)
        assert default == dict.fromkeys(range(PARTITIONS)), "nothing committed under the default group"

        # 2. B joins while events keep coming: both get partitions.
        feed.start()
        b, b_port = pool.start(bootstrap, **SETTINGS)

        async def both_project() -> bool:
            pool.assert_running()
            feed.check()
            return await scrape(b_port, "liandong_events_projected") > 0

        await wait_for(both_project, 45, "worker B to join the group and project")
        a_mark = await scrape(a_port, "liandong_events_projected")

        async def a_still_projects() -> bool:
            pool.assert_running()
            return await scrape(a_port, "liandong_events_projected") > a_mark

        await wait_for(a_still_projects, 20, "worker A to go on projecting beside B")

        # 3. A leaves gracefully while events keep coming: B resumes every partition.
        before = await checkpoints(engine)
        left = time.monotonic()
        pool.stop(a)

        async def moved(since: dict[int, int]) -> bool:
            pool.assert_running()
            feed.check()
            now = await checkpoints(engine)
            return all(now.get(p, -1) > offset for p, offset in since.items())

        await wait_for(lambda: moved(before), 30, "worker B to take over A's partitions")
        leave_s = time.monotonic() - left

        # 4. B crashes (SIGKILL: nothing flushed, offsets not committed) and C starts.
        before = await checkpoints(engine)
        killed = time.monotonic()
        pool.kill(b)
        c, c_port = pool.start(bootstrap, **SETTINGS)
        await wait_for(lambda: moved(before), 45, "worker C to take over every partition after the crash")
        crash_s = time.monotonic() - killed
        acked = await feed.stop()
        published = acked

        # C projects to the end of every partition the feed wrote (the hub's own topics are left
        # out: C's timers may publish to them up to the moment it stops).
        ends = await end_offsets(bootstrap, sorted(feed.topics))
        assert sum(ends.values()) == len(published)

        async def at_the_end() -> bool:
            pool.assert_running()
            reached = await all_checkpoints(engine)
            return all(reached.get(tp, -1) == end - 1 for tp, end in ends.items() if end)

        await wait_for(at_the_end, 40, "the checkpoints to reach the end of every partition")
        redelivered = await scrape(c_port, "liandong_events_redelivered")
        pool.stop(c)  # its timers would go on publishing while the replay reads

        h, m = event_history.c, matters.c
        async with engine.connect() as conn:
            stored = list((await conn.execute(select(h.event_id).where(h.area.not_in(HUB_AREAS)))).scalars())
            applied_cases = await conn.scalar(select(func.sum(cases.c.event_count)))
            applied_matters = await conn.scalar(
                select(func.sum(m.event_count)).where(m.area.not_in(HUB_AREAS))
            )
            history_all = await conn.scalar(select(func.count()).select_from(event_history))
            chain = (
                await conn.execute(
                    select(
                        func.count(),
                        func.count(archive.c.event_id.distinct()),
                        func.min(archive.c.seq),
                        func.max(archive.c.seq),
                    )
                )
            ).one()
        assert len(set(published)) == len(published), "the feed published each event once"
        assert not set(published) - set(stored), "acknowledged events lost"
        assert not set(stored) - set(published), "events in the history that nobody published"
        # Each case and matter counts the events applied to it: one applied twice would show here.
        assert int(applied_cases or 0) + int(applied_matters or 0) == len(published)
        assert tuple(chain) == (history_all, history_all, 1, history_all), "one archive record per event"
        # Reported, not asserted: whether C is handed records B projected but never committed to the
        # broker depends on where B's last offset commit fell.
        print(
            f"\nscale-out: {len(published)} events; take-over after SIGTERM {leave_s:.1f} s, after SIGKILL"
            f" (C starting) {crash_s:.1f} s; records redelivered to C and skipped: {redelivered:.0f}"
        )

        # The projections are those of one reader replaying the same records into an empty database.
        await assert_equals_replay(
            engine, bootstrap, tmp_path / "reference", len(published), "a single-reader replay"
        )
    finally:
        await feed.cancel()
        await publisher.close()
        pool.stop_all()

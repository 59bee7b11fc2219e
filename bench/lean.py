"""The lean pipeline, the baseline of the end-to-end, latency and rebuild benchmarks.

Producer: a raw aiokafka producer (acks=all, no idempotence, as the gateway's) sending records that
were encoded before the clock started, straight to the catalog topics.

Consumer: the design notes' fastest honest pipeline, widened from one topic to all catalog topics:
aiokafka `getmany` (group_id=None, every partition assigned) → fastavro decode of every value with
its writer schema → per batch one transaction on PostgreSQL:

- lock and read the checkpoint rows, skip records at or below them (the hub's guard);
- COPY the records into a temporary staging table;
- insert into `lean_history` by event id, ON CONFLICT DO NOTHING, and fold only the new events into
  one row per (area, subject) in `lean_subjects` (last type, last time, event count);
- upsert the checkpoints.

So it does what the hub's projector does at its core (history deduplicated by id, one projection,
checkpoint in the same transaction), and nothing else: no six projections, no clocks, no anomalies.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from fastavro import parse_schema, schemaless_reader

from bench.hub_processes import cpu_seconds
from events.catalog import Catalog
from events.registry import LocalSchemaRegistry
from events.serde import EncodedRecord

_HEADER = struct.Struct(">bI")
BATCH = 10_000

DDL = (
    "CREATE TABLE IF NOT EXISTS lean_history (event_id text PRIMARY KEY, area text NOT NULL, "
    "subject text NOT NULL, type text NOT NULL, source text NOT NULL, occurred_at timestamptz NOT NULL, "
    'topic text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL)',
    "CREATE TABLE IF NOT EXISTS lean_subjects (area text, subject text, last_type text NOT NULL, "
    "last_at timestamptz NOT NULL, event_count int NOT NULL, PRIMARY KEY (area, subject))",
    'CREATE TABLE IF NOT EXISTS lean_checkpoints (topic text, partition int, "offset" bigint NOT NULL, '
    "PRIMARY KEY (topic, partition))",
)
STAGING = (
    "CREATE TEMP TABLE lean_stage (event_id text, area text, subject text, type text, source text, "
    'occurred_at timestamptz, topic text, partition int, "offset" bigint) ON COMMIT DELETE ROWS'
)
STAGE_COLUMNS = [
    "event_id",
    "area",
    "subject",
    "type",
    "source",
    "occurred_at",
    "topic",
    "partition",
    "offset",
]
LOCK = 'SELECT topic, partition, "offset" FROM lean_checkpoints FOR UPDATE'
MERGE = """
WITH new AS (
    INSERT INTO lean_history
    SELECT DISTINCT ON (event_id) * FROM lean_stage ORDER BY event_id, topic, partition, "offset"
    ON CONFLICT (event_id) DO NOTHING
    RETURNING area, subject, type, occurred_at
), folded AS (
    INSERT INTO lean_subjects AS s (area, subject, last_type, last_at, event_count)
    SELECT area, subject, (array_agg(type ORDER BY occurred_at DESC))[1], max(occurred_at), count(*)
    FROM new GROUP BY area, subject
    ON CONFLICT (area, subject) DO UPDATE
    SET last_type = CASE WHEN EXCLUDED.last_at >= s.last_at THEN EXCLUDED.last_type ELSE s.last_type END,
        last_at = GREATEST(s.last_at, EXCLUDED.last_at),
        event_count = s.event_count + EXCLUDED.event_count
)
SELECT count(*) FROM new
"""
CHECKPOINT = """
INSERT INTO lean_checkpoints AS k (topic, partition, "offset")
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])
ON CONFLICT (topic, partition) DO UPDATE SET "offset" = GREATEST(k."offset", EXCLUDED."offset")
"""


async def writer_schemas() -> dict[int, Any]:
    catalog = Catalog.load()
    registry = LocalSchemaRegistry()
    schemas: dict[int, Any] = {}
    for kind in catalog:
        for revision in kind.revisions:
            schemas[await registry.register(kind.subject, revision)] = parse_schema(dict(revision))
    return schemas


async def produce(
    bootstrap: str,
    records: Sequence[tuple[str, EncodedRecord]],
    chunk: int = 500,
    concurrency: int = 4,
    on_acked: Callable[[int, float], None] | None = None,
) -> float:
    """Send every record (acks=all), `concurrency` chunks in flight; return the seconds taken.

    `on_acked(i, t)` is told when chunk i (records i*chunk …) was acknowledged.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="bench-lean-producer",
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        chunks = iter(range(0, len(records), chunk))

        async def sender() -> None:
            for start in chunks:
                part = records[start : start + chunk]
                futures = [
                    await producer.send(t, value=r.value, key=r.key, headers=r.headers) for t, r in part
                ]
                await asyncio.gather(*futures)
                if on_acked is not None:
                    on_acked(start // chunk, time.perf_counter())

        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return time.perf_counter() - started
    finally:
        await producer.stop()


@dataclass(slots=True)
class LeanResult:
    events: int  # new events written to lean_history
    records: int  # records read
    batches: int
    first_fetch: float  # perf_counter of the first fetch that returned records
    last_commit: float  # perf_counter of the commit that wrote the last event


class LeanConsumer:
    """Reads every partition of `topics` from the beginning into the lean tables of `dsn`."""

    def __init__(
        self,
        bootstrap: str,
        dsn: str,
        topics: Sequence[str],
        schemas: dict[int, Any],
        batch: int = BATCH,
        fetch_max_wait_ms: int = 100,
    ) -> None:
        self._bootstrap = bootstrap
        self._dsn = dsn
        self._topics = list(topics)
        self._schemas = schemas
        self._batch = batch
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self.committed_at: list[tuple[float, int]] = []  # (perf_counter, events so far) per commit
        self.backend_cpu_s = 0.0  # CPU time of the PostgreSQL backend that served run()

    async def create_tables(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            for ddl in DDL:
                await conn.execute(ddl)
        finally:
            await conn.close()

    async def run(
        self, target_events: int, timeout_s: float, stop: asyncio.Event | None = None
    ) -> LeanResult:
        """Consume until `target_events` new events are committed, `stop` is set, or the timeout."""
        await self.create_tables()
        conn: asyncpg.Connection = await asyncpg.connect(self._dsn)
        backend = conn.get_server_pid()
        backend_start = cpu_seconds(backend)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            await conn.execute(STAGING)
            partitions = [
                TopicPartition(t, p)
                for t in self._topics
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            deadline = time.monotonic() + timeout_s
            events = records_read = batches = 0
            first_fetch = last_commit = 0.0
            while events < target_events and time.monotonic() < deadline:
                if stop is not None and stop.is_set():
                    break
                fetched = await consumer.getmany(timeout_ms=self._fetch_max_wait_ms, max_records=self._batch)
                batch: list[ConsumerRecord[bytes, bytes]] = [r for rs in fetched.values() for r in rs]
                if not batch:
                    continue
                if not first_fetch:
                    first_fetch = time.perf_counter()
                records_read += len(batch)
                events += await self._write(conn, batch)
                batches += 1
                last_commit = time.perf_counter()
                self.committed_at.append((last_commit, events))
            return LeanResult(events, records_read, batches, first_fetch, last_commit)
        finally:
            self.backend_cpu_s = cpu_seconds(backend) - backend_start
            await consumer.stop()
            await conn.close()

    async def _write(self, conn: asyncpg.Connection, batch: list[ConsumerRecord[bytes, bytes]]) -> int:
        rows: list[tuple[Any, ...]] = []
        for r in batch:
            value = r.value or b""
            _magic, schema_id = _HEADER.unpack_from(value)
            schemaless_reader(io.BytesIO(value[_HEADER.size :]), self._schemas[schema_id], None)
            h = {k: v.decode() for k, v in r.headers if k.startswith("ce_")}
            area = h["ce_type"].rsplit(".", 3)[-3]
            rows.append(
                (
                    h["ce_id"],
                    area,
                    h["ce_subject"],
                    h["ce_type"],
                    h["ce_source"],
                    datetime.fromisoformat(h["ce_time"]),
                    r.topic,
                    r.partition,
                    r.offset,
                )
            )
        async with conn.transaction():
            done = {(t, p): o for t, p, o in await conn.fetch(LOCK)}
            fresh = [row for row in rows if row[8] > done.get((row[6], row[7]), -1)]
            if not fresh:
                return 0
            await conn.copy_records_to_table("lean_stage", records=fresh, columns=STAGE_COLUMNS)
            new = int(await conn.fetchval(MERGE))
            newest: dict[tuple[str, int], int] = {}
            for row in fresh:
                key = (row[6], row[7])
                newest[key] = max(newest.get(key, -1), row[8])
            await conn.execute(
                CHECKPOINT,
                [k[0] for k in newest],
                [k[1] for k in newest],
                list(newest.values()),
            )
            return new

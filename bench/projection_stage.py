"""Throughput of the projection stage: the hub's real `Projector` against a lean batched baseline.

    .venv/bin/python -m bench.projection_stage            # prints Markdown
    .venv/bin/python -m bench.projection_stage --help     # events, runs, time budget

N case events (filed / decided / closed, three per subject, so upserts spread over N/3 cases) are
published once with `KafkaPublisher` to a fresh embedded broker, topic `liandong.case.events`
(6 partitions). Each run then reads the whole topic with a bare aiokafka consumer (group_id=None,
all partitions assigned, seek to beginning) into a fresh, migrated PostgreSQL database:

- baseline: `getmany(max_records=10000)`, fastavro decode of the Confluent value with the writer
  schema, then per batch one transaction: asyncpg COPY into a temporary staging table, one
  `INSERT … SELECT … ON CONFLICT DO UPDATE` merge into `bench_cases`, and a checkpoint upsert;
- hub: `getmany(max_records=1000)` (the worker's LIANDONG_BATCH_MAX default), each record turned into
  a `SourceRecord` as the worker does, then `Projector.process` with the real hub projections.

Both are timed from the first fetch to the last commit. faust is not involved: this isolates the
projection stage from the worker's consumer machinery.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from fastavro import parse_schema, schemaless_reader

from bench.clock_rows import asyncpg_dsn, machine, table
from connectors.kafka.publisher import KafkaPublisher
from events.calendar import WorkingDayCalendar
from events.catalog import Catalog
from events.clock_rules import ClockRules
from events.mechanisms import Mechanisms
from events.registry import LocalSchemaRegistry
from events.serde import EncodedRecord, EventCodec
from projections.clock_store import ClockSettings
from projections.db import make_engine
from projections.hub import hub_projections
from projections.migrate import upgrade
from projections.runtime import BatchResult, Projector, SourceRecord
from services.embedded_broker import EmbeddedBroker
from tests.support import PG_DSN, case_event, create_pg_database, drop_pg_database

TOPIC = "liandong.case.events"
PARTITIONS = 6
KINDS = ("filed", "decided", "closed")
PUBLISH_CHUNK = 2_000
BASELINE_BATCH = 10_000
HUB_BATCH = 1_000  # LIANDONG_BATCH_MAX default
_HEADER = struct.Struct(">bI")
STAGE_RANK = {"filed": 2, "decided": 6, "closed": 9}

BASELINE_DDL = (
    "CREATE TABLE bench_cases (case_id text PRIMARY KEY, stage text NOT NULL, event_count int NOT NULL)",
    'CREATE TABLE bench_checkpoints (topic text, partition int, "offset" bigint NOT NULL, '
    "PRIMARY KEY (topic, partition))",
)
STAGING_DDL = (
    "CREATE TEMP TABLE bench_stage (case_id text, stage text, rank int, part int, off bigint) "
    "ON COMMIT DELETE ROWS"
)
MERGE = """
INSERT INTO bench_cases AS c (case_id, stage, event_count)
SELECT case_id, (array_agg(stage ORDER BY rank DESC, part, off DESC))[1], count(*)
FROM bench_stage GROUP BY case_id
ON CONFLICT (case_id) DO UPDATE
SET stage = CASE WHEN c.stage IN ('closed') THEN c.stage ELSE EXCLUDED.stage END,
    event_count = c.event_count + EXCLUDED.event_count
"""
CHECKPOINT = """
INSERT INTO bench_checkpoints AS k (topic, partition, "offset")
SELECT $1, p, o FROM unnest($2::int[], $3::bigint[]) AS v(p, o)
ON CONFLICT (topic, partition) DO UPDATE SET "offset" = GREATEST(k."offset", EXCLUDED."offset")
"""


@dataclass(slots=True)
class Run:
    kind: str
    events: int
    seconds: float
    batches: int
    complete: bool = True

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass
class CountingDeadLetters:
    """A DeadLetterSink that counts: the benchmark's events are all valid."""

    sent: list[tuple[SourceRecord, str, str]] = field(default_factory=list)

    async def send(self, record: SourceRecord, reason: str, detail: str) -> None:
        self.sent.append((record, reason, detail))


class FixedIncarnation:
    """An Incarnation that never changes: one broker for the whole run."""

    @property
    def current(self) -> str:
        return "bench-broker"

    async def refresh(self) -> bool:
        return False


async def publish(bootstrap: str, codec: EventCodec, count: int) -> float:
    publisher = KafkaPublisher(bootstrap, client_id="bench-projection-stage", ack_timeout_s=60)
    started = time.perf_counter()
    base = datetime(2025, 6, 16, 2, 0, tzinfo=UTC)
    try:
        chunk: list[tuple[str, EncodedRecord]] = []
        for i in range(count):
            subject = f"shilou-bench-{i // 3:07d}"
            event = case_event(KINDS[i % 3], subject, time_=base + timedelta(seconds=i))
            chunk.append((TOPIC, codec.encode(event)))
            if len(chunk) == PUBLISH_CHUNK:
                await publisher.publish(chunk)
                chunk = []
        if chunk:
            await publisher.publish(chunk)
    finally:
        await publisher.close()
    return time.perf_counter() - started


async def open_consumer(bootstrap: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return consumer


async def writer_schemas(catalog: Catalog, registry: LocalSchemaRegistry) -> dict[int, Any]:
    schemas: dict[int, Any] = {}
    for kind in catalog:
        for revision in kind.revisions:
            schemas[await registry.register(kind.subject, revision)] = parse_schema(dict(revision))
    return schemas


def stage_of(headers: Sequence[tuple[str, bytes]]) -> str:
    for name, value in headers:
        if name == "ce_type":
            return value.decode().rsplit(".", 2)[-2]
    raise ValueError("no ce_type header")


async def baseline_run(bootstrap: str, schemas: Mapping[int, Any], total: int, deadline: float) -> Run:
    url = await create_pg_database()
    conn: asyncpg.Connection = await asyncpg.connect(asyncpg_dsn(url))
    consumer = await open_consumer(bootstrap)
    try:
        for ddl in BASELINE_DDL:
            await conn.execute(ddl)
        await conn.execute(STAGING_DDL)
        seen = batches = 0
        started: float | None = None
        while seen < total and time.monotonic() < deadline:
            if started is None:
                started = time.perf_counter()
            fetched = await consumer.getmany(timeout_ms=1000, max_records=BASELINE_BATCH)
            records: list[ConsumerRecord[bytes, bytes]] = [r for rs in fetched.values() for r in rs]
            if not records:
                continue
            rows: list[tuple[str, str, int, int, int]] = []
            newest: dict[int, int] = {}
            for r in records:
                value = r.value or b""
                _magic, schema_id = _HEADER.unpack_from(value)
                schemaless_reader(io.BytesIO(value[_HEADER.size :]), schemas[schema_id], None)
                stage = stage_of(r.headers)
                rows.append(((r.key or b"").decode(), stage, STAGE_RANK[stage], r.partition, r.offset))
                newest[r.partition] = max(newest.get(r.partition, -1), r.offset)
            async with conn.transaction():
                await conn.copy_records_to_table("bench_stage", records=rows)
                await conn.execute(MERGE)
                await conn.execute(CHECKPOINT, TOPIC, list(newest), list(newest.values()))
            seen += len(records)
            batches += 1
        elapsed = time.perf_counter() - (started or time.perf_counter())
        cases = await conn.fetchval("SELECT count(*) FROM bench_cases")
        counted = await conn.fetchval("SELECT coalesce(sum(event_count), 0) FROM bench_cases")
        if seen >= total and (cases != (total + 2) // 3 or counted != total):
            raise AssertionError(f"baseline wrote {cases} cases / {counted} events for {total} events")
        return Run("baseline", seen, elapsed, batches, seen >= total)
    finally:
        await consumer.stop()
        await conn.close()
        await drop_pg_database(url)


def source_record(message: ConsumerRecord[bytes, bytes]) -> SourceRecord:
    """As `services.worker.app._record` does it (aiokafka timestamps are already in ms)."""
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp or 0),
        key=message.key,
        value=message.value,
        headers=[(k, bytes(v)) for k, v in (message.headers or ())],
    )


async def hub_run(
    bootstrap: str, codec: EventCodec, total: int, deadline: float, profile_batch: int = 0
) -> tuple[Run, str]:
    """Runs the hub projector; with `profile_batch` it stops after that batch and profiles it."""
    url = await create_pg_database()
    engine = make_engine(url)
    await upgrade(engine)
    projector = Projector(
        engine,
        "bench",
        codec,
        hub_projections(
            Mechanisms.load(),
            ClockRules.load(),
            WorkingDayCalendar.load(),
            ClockSettings(grace=timedelta(seconds=60), reescalate_after=timedelta(hours=48)),
        ),
        dead := CountingDeadLetters(),
        FixedIncarnation(),
    )
    consumer = await open_consumer(bootstrap)
    profile = ""
    try:
        seen = batches = applied = 0
        started: float | None = None
        while seen < total and time.monotonic() < deadline:
            if started is None:
                started = time.perf_counter()
            fetched = await consumer.getmany(timeout_ms=1000, max_records=HUB_BATCH)
            records = [source_record(r) for rs in fetched.values() for r in rs]
            if not records:
                continue
            if profile_batch and batches + 1 == profile_batch:
                profiler = cProfile.Profile()
                profiler.enable()
                result: BatchResult = await projector.process(records)
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
                profile = f"batch {profile_batch}, {len(records)} records\n{out.getvalue()}"
            else:
                result = await projector.process(records)
            applied += sum(result.applied.values())
            seen += len(records)
            batches += 1
            if profile_batch and batches >= profile_batch:
                break
        elapsed = time.perf_counter() - (started or time.perf_counter())
        if dead.sent or (not profile_batch and seen >= total and applied != total):
            raise AssertionError(f"hub applied {applied} of {seen}, dead-lettered {len(dead.sent)}")
        return Run("hub", seen, elapsed, batches, seen >= total), profile
    finally:
        await consumer.stop()
        await engine.dispose()
        await drop_pg_database(url)


def report(runs: list[Run], header: str, note: str) -> str:
    def median(kind: str) -> float:
        return statistics.median(r.rate for r in runs if r.kind == kind)

    base = median("baseline")
    rows: list[Sequence[object]] = []
    for kind, what in (
        (
            "baseline",
            f"aiokafka `getmany({BASELINE_BATCH:,})` → fastavro → COPY staging → one merge + "
            "checkpoint per batch",
        ),
        (
            "hub",
            f"aiokafka `getmany({HUB_BATCH:,})` → `SourceRecord` → `Projector.process` (hub projections)",
        ),
    ):
        mine = [r for r in runs if r.kind == kind]
        rates = ", ".join(f"{r.rate:,.0f}{'' if r.complete else ' (partial)'}" for r in mine)
        rows.append((kind, what, len(mine), rates, f"{median(kind):,.0f}", f"{median(kind) / base:.3f}"))
    headers = ["pipeline", "what", "runs", "events/s per run", "events/s (median)", "× baseline"]
    return "\n".join([header, "", table(headers, rows), "", note]).rstrip() + "\n"


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000, help="case events published")
    parser.add_argument("--runs", type=int, default=3, help="runs per pipeline (median reported)")
    parser.add_argument("--budget-s", type=float, default=210, help="no new run starts after this")
    parser.add_argument("--profile-batch", type=int, default=0, help="also profile hub batch N (0: no)")
    args = parser.parse_args(argv)
    begun = time.monotonic()
    deadline = begun + args.budget_s
    conn = await asyncpg.connect(PG_DSN)
    try:
        host = machine(str(await conn.fetchval("SHOW server_version")))
    finally:
        await conn.close()
    catalog = Catalog.load()
    registry = LocalSchemaRegistry()
    codec = EventCodec(catalog, registry)
    await codec.prepare()
    schemas = await writer_schemas(catalog, registry)
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    runs: list[Run] = []
    profile = ""
    notes: list[str] = []
    try:
        publish_s = await publish(bootstrap, codec, args.events)
        print(f"published {args.events:,} events in {publish_s:.1f} s", file=sys.stderr)
        for i in range(args.runs):
            # A run that starts past the budget is skipped; one in flight is cut at the deadline.
            if i and time.monotonic() > deadline - 20:
                notes.append(f"stopped after {i} run(s) per pipeline: the time budget was spent")
                break
            for run in (
                await baseline_run(bootstrap, schemas, args.events, deadline + 60),
                (await hub_run(bootstrap, codec, args.events, deadline + 60))[0],
            ):
                runs.append(run)
                print(
                    f"  {run.kind:8} run {i + 1}: {run.events:,} events in {run.seconds:.1f} s = "
                    f"{run.rate:,.0f}/s ({run.batches} batches)",
                    file=sys.stderr,
                )
        if args.profile_batch:
            _, profile = await hub_run(bootstrap, codec, args.events, deadline + 120, args.profile_batch)
    finally:
        broker.stop()
    header = (
        f"Machine: {host}. {args.events:,} case events (filed/decided/closed, {(args.events + 2) // 3:,} "
        f"subjects), topic `{TOPIC}` with {PARTITIONS} partitions on the embedded broker. Run took "
        f"{time.monotonic() - begun:.0f} s."
    )
    print(report(runs, header, "\n".join(notes)))
    if profile:
        print(profile, file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())

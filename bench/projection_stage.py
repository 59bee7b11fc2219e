"""Throughput of the projection stage: the hub's real `Projector` against a lean batched baseline.

    .venv/bin/python -m bench.projection_stage                  # catalog mix, prints Markdown
    .venv/bin/python -m bench.projection_stage --mix case3      # the first measurement's mix
    .venv/bin/python -m bench.projection_stage --help           # events, runs, batches, profile

N events from a source (`bench/event_mix.py`: `catalog`, whole lifecycles over the catalog, or
`case3`, filed/decided/closed per case) are published once with `KafkaPublisher` to a fresh
embedded broker, each to its area's topic (`liandong.<area>.events`, 6 partitions), keyed by
subject, as the gateway does. Each run then reads every partition of those topics with a bare
aiokafka consumer (group_id=None, all partitions assigned, seek to beginning) into a fresh,
migrated PostgreSQL database:

- baseline: `getmany(max_records=10000)`, fastavro decode of the Confluent value with the writer
  schema, then per batch one transaction: asyncpg COPY into a temporary staging table, one
  `INSERT … SELECT … ON CONFLICT DO UPDATE` merge into a per-subject table `bench_subjects`
  (furthest step, event count), and a checkpoint upsert;
- hub: `getmany(max_records=--hub-batch)`, each record turned into a `SourceRecord` as the worker
  does, then `Projector.process` with the real hub projections (history, cases, matters,
  directory, anomalies, clocks, alerts).

Both are timed from the first fetch to the last commit. faust is not involved: this isolates the
projection stage from the worker's consumer machinery. Runs alternate baseline, hub, baseline, …
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import statistics
import struct
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from fastavro import parse_schema, schemaless_reader

from bench.clock_rows import asyncpg_dsn, machine, table
from bench.event_mix import SOURCES
from bench.profile_report import cumulative_shares
from connectors.kafka.publisher import KafkaPublisher
from events.calendar import WorkingDayCalendar
from events.catalog import Catalog, topic_for
from events.clock_rules import ClockRules
from events.envelope import Envelope
from events.mechanisms import Mechanisms
from events.registry import LocalSchemaRegistry
from events.serde import EncodedRecord, EventCodec
from projections.clock_store import ClockSettings
from projections.db import make_engine
from projections.hub import hub_projections
from projections.migrate import upgrade
from projections.runtime import BatchResult, Projector, SourceRecord
from services.embedded_broker import EmbeddedBroker
from services.settings import DEFAULT_BATCH_MAX
from tests.support import PG_DSN, create_pg_database, drop_pg_database

PARTITIONS = 6
PUBLISH_CHUNK = 2_000
BASELINE_BATCH = 10_000
# Collect the youngest generation every 100,000 allocations instead of 700: a batch allocates
# hundreds of thousands of short-lived objects, and each collection walks the live ones.
TUNED_GC = (100_000, 50, 1000)
_HEADER = struct.Struct(">bI")

BASELINE_DDL = (
    "CREATE TABLE bench_subjects (area text, subject text, step text NOT NULL, rank int NOT NULL, "
    "event_count int NOT NULL, PRIMARY KEY (area, subject))",
    'CREATE TABLE bench_checkpoints (topic text, partition int, "offset" bigint NOT NULL, '
    "PRIMARY KEY (topic, partition))",
)
STAGING_DDL = (
    "CREATE TEMP TABLE bench_stage (area text, subject text, step text, rank int, topic text, part int, "
    "off bigint) ON COMMIT DELETE ROWS"
)
# The furthest step of the lifecycle wins; the same rank keeps the latest record.
MERGE = """
INSERT INTO bench_subjects AS s (area, subject, step, rank, event_count)
SELECT area, subject, (array_agg(step ORDER BY rank DESC, topic, part, off DESC))[1], max(rank), count(*)
FROM bench_stage GROUP BY area, subject
ON CONFLICT (area, subject) DO UPDATE
SET step = CASE WHEN EXCLUDED.rank > s.rank THEN EXCLUDED.step ELSE s.step END,
    rank = GREATEST(s.rank, EXCLUDED.rank),
    event_count = s.event_count + EXCLUDED.event_count
"""
CHECKPOINT = """
INSERT INTO bench_checkpoints AS k (topic, partition, "offset")
SELECT t, p, o FROM unnest($1::text[], $2::int[], $3::bigint[]) AS v(t, p, o)
ON CONFLICT (topic, partition) DO UPDATE SET "offset" = GREATEST(k."offset", EXCLUDED."offset")
"""


@dataclass(slots=True)
class Run:
    kind: str
    events: int
    seconds: float
    batches: int
    complete: bool = True
    cpu_seconds: float = 0.0  # this process's CPU time over the run: the rest is waiting

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass(frozen=True, slots=True)
class Workload:
    """What was published: the topics, and what a correct projection of it must hold."""

    topics: tuple[str, ...]
    events: int
    unique: int  # distinct event ids: what the hub applies
    subjects: int
    types: int


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


async def publish(bootstrap: str, codec: EventCodec, events: Sequence[Envelope]) -> Workload:
    publisher = KafkaPublisher(
        bootstrap, client_id="bench-projection-stage", ack_timeout_s=60, partitions=PARTITIONS
    )
    try:
        for start in range(0, len(events), PUBLISH_CHUNK):
            chunk: list[tuple[str, EncodedRecord]] = [
                (topic_for(e.area), codec.encode(e)) for e in events[start : start + PUBLISH_CHUNK]
            ]
            await publisher.publish(chunk)
    finally:
        await publisher.close()
    return Workload(
        topics=tuple(sorted({topic_for(e.area) for e in events})),
        events=len(events),
        unique=len({e.id for e in events}),
        subjects=len({(e.area, e.subject) for e in events}),
        types=len({e.type for e in events}),
    )


async def open_consumer(bootstrap: str, topics: Sequence[str]) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return consumer


async def writer_schemas(catalog: Catalog, registry: LocalSchemaRegistry) -> dict[int, Any]:
    schemas: dict[int, Any] = {}
    for kind in catalog:
        for revision in kind.revisions:
            schemas[await registry.register(kind.subject, revision)] = parse_schema(dict(revision))
    return schemas


def step_ranks(mechanisms: Mechanisms) -> dict[str, int]:
    """`area.event` -> its position in the lifecycle (mechanisms.json order), for the baseline."""
    return {
        f"{area}.{event}": rank
        for area, spec in mechanisms.areas.items()
        for rank, event in enumerate(spec.steps, 1)
    }


def area_step(headers: Sequence[tuple[str, bytes]]) -> tuple[str, str]:
    for name, value in headers:
        if name == "ce_type":
            area, step, _version = value.decode().rsplit(".", 3)[-3:]
            return area, step
    raise ValueError("no ce_type header")


async def baseline_run(
    bootstrap: str, work: Workload, schemas: Mapping[int, Any], ranks: Mapping[str, int], deadline: float
) -> Run:
    url = await create_pg_database()
    conn: asyncpg.Connection = await asyncpg.connect(asyncpg_dsn(url))
    consumer = await open_consumer(bootstrap, work.topics)
    try:
        for ddl in BASELINE_DDL:
            await conn.execute(ddl)
        await conn.execute(STAGING_DDL)
        seen = batches = 0
        started: float | None = None
        cpu = 0.0
        while seen < work.events and time.monotonic() < deadline:
            if started is None:
                started = time.perf_counter()
                cpu = time.process_time()
            fetched = await consumer.getmany(timeout_ms=1000, max_records=BASELINE_BATCH)
            records: list[ConsumerRecord[bytes, bytes]] = [r for rs in fetched.values() for r in rs]
            if not records:
                continue
            rows: list[tuple[str, str, str, int, str, int, int]] = []
            newest: dict[tuple[str, int], int] = {}
            for r in records:
                value = r.value or b""
                _magic, schema_id = _HEADER.unpack_from(value)
                schemaless_reader(io.BytesIO(value[_HEADER.size :]), schemas[schema_id], None)
                area, step = area_step(r.headers)
                subject = (r.key or b"").decode()
                rows.append(
                    (area, subject, step, ranks.get(f"{area}.{step}", 0), r.topic, r.partition, r.offset)
                )
                key = (r.topic, r.partition)
                newest[key] = max(newest.get(key, -1), r.offset)
            async with conn.transaction():
                await conn.copy_records_to_table("bench_stage", records=rows)
                await conn.execute(MERGE)
                await conn.execute(
                    CHECKPOINT, [t for t, _ in newest], [p for _, p in newest], list(newest.values())
                )
            seen += len(records)
            batches += 1
        elapsed = time.perf_counter() - (started or time.perf_counter())
        cpu = time.process_time() - cpu
        subjects = await conn.fetchval("SELECT count(*) FROM bench_subjects")
        counted = await conn.fetchval("SELECT coalesce(sum(event_count), 0) FROM bench_subjects")
        if seen >= work.events and (subjects != work.subjects or counted != work.events):
            raise AssertionError(f"baseline wrote {subjects} subjects / {counted} events for {work}")
        return Run("baseline", seen, elapsed, batches, seen >= work.events, cpu)
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
    bootstrap: str,
    work: Workload,
    codec: EventCodec,
    batch: int,
    deadline: float,
    profiler: cProfile.Profile | None = None,
    verbose: bool = False,
) -> Run:
    """Runs the hub projector over the whole topic; with `profiler`, every batch is profiled."""
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
    consumer = await open_consumer(bootstrap, work.topics)
    try:
        seen = batches = 0
        applied: Counter[str] = Counter()
        started: float | None = None
        cpu = 0.0
        while seen < work.events and time.monotonic() < deadline:
            if started is None:
                started = time.perf_counter()
                cpu = time.process_time()
            fetched = await consumer.getmany(timeout_ms=1000, max_records=batch)
            records = [source_record(r) for rs in fetched.values() for r in rs]
            if not records:
                continue
            if profiler is not None:
                profiler.enable()
            began = time.perf_counter()
            result: BatchResult = await projector.process(records)
            if profiler is not None:
                profiler.disable()
            if verbose:
                print(
                    f"    batch {batches + 1}: {len(records)} in {time.perf_counter() - began:.3f} s",
                    file=sys.stderr,
                )
            applied.update(result.applied)
            seen += len(records)
            batches += 1
        elapsed = time.perf_counter() - (started or time.perf_counter())
        cpu = time.process_time() - cpu
        total = sum(applied.values())
        if dead.sent or (seen >= work.events and total != work.unique):
            raise AssertionError(
                f"hub applied {total} of {seen}, dead-lettered {len(dead.sent)}: {dead.sent[:3]}"
            )
        return Run("hub", seen, elapsed, batches, seen >= work.events, cpu)
    finally:
        await consumer.stop()
        await engine.dispose()
        await drop_pg_database(url)


def spread(values: Sequence[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def report(runs: list[Run], hub_batch: int, header: str, note: str) -> str:
    base = [r for r in runs if r.kind == "baseline"]
    hub = [r for r in runs if r.kind == "hub"]
    rows: list[Sequence[object]] = []
    for kind, what, mine in (
        (
            "baseline",
            f"aiokafka `getmany({BASELINE_BATCH:,})` → fastavro → COPY staging → one merge + "
            "checkpoint per batch",
            base,
        ),
        (
            "hub",
            f"aiokafka `getmany({hub_batch:,})` → `SourceRecord` → `Projector.process` (hub projections)",
            hub,
        ),
    ):
        rates = ", ".join(f"{r.rate:,.0f}{'' if r.complete else ' (partial)'}" for r in mine)
        rows.append((kind, what, len(mine), rates, spread([r.rate for r in mine], ",.0f")))
    headers = ["pipeline", "what", "runs", "events/s per run", "events/s min / median / max"]
    ratios = [h.rate / b.rate for b, h in zip(base, hub, strict=False)]
    summary = ""
    if ratios:
        medians = statistics.median(r.rate for r in hub) / statistics.median(r.rate for r in base)
        summary = (
            f"hub ÷ baseline, per pair of runs: min / median / max = {spread(ratios, '.3f')}; "
            f"ratio of the medians = {medians:.3f}"
        )
    return "\n".join([header, "", table(headers, rows), "", summary, "", note]).rstrip() + "\n"


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mix", choices=sorted(SOURCES), default="catalog", help="event source")
    parser.add_argument("--events", type=int, default=50_000, help="events published")
    parser.add_argument("--seed", type=int, default=None, help="seed of the event source (its default)")
    parser.add_argument("--runs", type=int, default=3, help="runs per pipeline (min/median/max reported)")
    parser.add_argument(
        "--hub-batch", type=int, default=DEFAULT_BATCH_MAX, help="hub getmany size (LIANDONG_BATCH_MAX)"
    )
    parser.add_argument("--only", choices=("both", "hub", "baseline"), default="both")
    parser.add_argument("--verbose", action="store_true", help="print each hub batch's time")
    parser.add_argument(
        "--gc",
        choices=("default", "tuned"),
        default="default",
        help="tuned: gc.freeze() after start-up and gc.set_threshold(100_000, 50, 1000), for both pipelines",
    )
    parser.add_argument("--budget-s", type=float, default=600, help="no new run starts after this")
    parser.add_argument(
        "--profile", type=int, default=0, help="after the timed runs, profile one hub run; print top N"
    )
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
    ranks = step_ranks(Mechanisms.load())
    events = SOURCES[args.mix](args.events, *(() if args.seed is None else (args.seed,)))
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    runs: list[Run] = []
    profile = ""
    notes: list[str] = []
    try:
        published = time.perf_counter()
        work = await publish(bootstrap, codec, events)
        # A worker holds only its batch: 50,000 live events would only slow the garbage collector.
        del events
        if args.gc == "tuned":
            gc.collect()
            gc.freeze()
            gc.set_threshold(*TUNED_GC)
        print(
            f"published {work.events:,} events ({work.types} types, {work.subjects:,} subjects, "
            f"{len(work.topics)} topics) in {time.perf_counter() - published:.1f} s",
            file=sys.stderr,
        )
        for i in range(args.runs):
            # A run that starts past the budget is skipped; one in flight is cut at the deadline.
            if i and time.monotonic() > deadline - 20:
                notes.append(f"stopped after {i} run(s) per pipeline: the time budget was spent")
                break
            pair: list[Run] = []
            if args.only in ("both", "baseline"):
                pair.append(await baseline_run(bootstrap, work, schemas, ranks, deadline + 60))
            if args.only in ("both", "hub"):
                pair.append(
                    await hub_run(bootstrap, work, codec, args.hub_batch, deadline + 60, verbose=args.verbose)
                )
            for run in pair:
                runs.append(run)
                print(
                    f"  {run.kind:8} run {i + 1}: {run.events:,} events in {run.seconds:.2f} s = "
                    f"{run.rate:,.0f}/s ({run.batches} batches, {run.cpu_seconds:.2f} s CPU here)",
                    file=sys.stderr,
                )
        if args.profile:
            profiler = cProfile.Profile()
            run = await hub_run(bootstrap, work, codec, args.hub_batch, deadline + 300, profiler)
            stats = pstats.Stats(profiler)
            profile = (
                f"cProfile of one whole hub run ({run.events:,} events, {run.batches} batches, "
                f"{run.seconds:.1f} s under the profiler), inside `Projector.process` only:\n\n"
                + cumulative_shares(stats, args.profile)
            )
    finally:
        broker.stop()
    header = (
        f"Machine: {host}, Python {sys.version.split()[0]}, garbage collector {args.gc}. "
        f"Mix `{args.mix}` (seed {'default' if args.seed is None else args.seed}): "
        f"{work.events:,} events of {work.types} types over {work.subjects:,} subjects, "
        f"{len(work.topics)} topics × {PARTITIONS} partitions on the embedded broker. "
        f"Run took {time.monotonic() - begun:.0f} s."
    )
    if runs and args.only == "both":
        print(report(runs, args.hub_batch, header, "\n".join(notes)))
    else:
        print(header)
    if profile:
        print(profile)


if __name__ == "__main__":
    asyncio.run(main())

"""Rebuild the projections from the events archived on the topics.

    LIANDONG_KAFKA_BOOTSTRAP=… LIANDONG_DATABASE_URL=<a new database> python -m services.rebuild

Every catalog topic is replayed from the start into the configured database (migrated first) through
the hub's real `Projector` and projections, then the command exits. It is the worker's projection
path without faust: a one-shot replay needs no consumer group, no rebalancing and no timers, so a
lean aiokafka consumer with every partition assigned reads each one up to the end offset it saw at
start. Events published meanwhile are left to the worker.

- **Fresh projections.** Point it at a new database. Checkpoints are written under `--consumer`
  (default `hub`, the worker's), so a worker started on the rebuilt database carries on from where the
  rebuild stopped. A rerun resumes after the checkpoints; a rerun into a database that holds the
  events already changes nothing (the event history keeps each id once).
- **Bounded memory.** One batch at a time, and the consumer's fetch buffer is capped; nothing is kept
  between batches.
- **No side effects on the world.** Webhook deliveries are not queued for replayed alerts, so history
  is not sent again. Undecodable records are logged with their position and counted; the worker
  dead-lettered them when it first read them.

The same loop (`replay_to`) replays the shadow tables of `liandong projections rebuild NAME`
(services/shadow_rebuild.py), bounded by the live projector's checkpoints instead of the end offsets.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.incarnation import BrokerIncarnation
from events.catalog import Catalog, topic_for
from events.grants import Grants
from events.mechanisms import Mechanisms
from events.serde import EventCodec
from projections.db import make_engine
from projections.hub import hub_projections
from projections.migrate import upgrade
from projections.runtime import Projector, SourceRecord
from projections.schema import projection_checkpoints
from services import logs
from services.rebuilding import mark_rebuilding
from services.registry import make_registry
from services.settings import Settings, SettingsError
from services.timesource import time_source
from services.worker.closed_loop import ClosedLoop

log = logging.getLogger(__name__)

DEFAULT_CONSUMER = "hub"  # the worker's projection name: a worker can take over a rebuilt database
DEFAULT_BATCH = 5_000
REBUILD_MARKER = "all"  # `liandong rebuild` replays every projection
PROGRESS_EVERY_S = 10.0
# What the consumer may hold in fetched, not yet returned records: enough to keep a batch ready.
FETCH_MAX_BYTES = 16 * 1024 * 1024
PARTITION_FETCH_BYTES = 1024 * 1024
STALL_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Progress:
    records: int  # read so far, up to the end offsets
    total: int  # records between the start positions and the end offsets (an upper bound)
    applied: int  # events new to the projections
    seconds: float
    rss_kib: int | None


@dataclass(slots=True)
class RebuildResult:
    records: int = 0
    applied: int = 0
    skipped: int = 0  # at or below a checkpoint, or already in the event history
    dead_lettered: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0


class LoggedDeadLetters:
    """The worker sent these records to the dead-letter topic when it first read them; a replay only
    says where they are."""

    def __init__(self) -> None:
        self.count = 0

    async def send(self, record: SourceRecord, reason: str, detail: str) -> None:
        self.count += 1
        log.warning(
            "undecodable record %s[%d]@%d skipped: %s (%s)",
            record.topic,
            record.partition,
            record.offset,
            reason,
            detail,
        )


def rss_kib() -> int | None:
    """This process's resident memory, where /proc tells it."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


async def rebuild(
    settings: Settings,
    *,
    consumer: str = DEFAULT_CONSUMER,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[Progress], None] | None = None,
    progress_every: int = 0,
) -> RebuildResult:
    """Replay every catalog topic into `settings.database_url`, up to the end offsets seen at start.

    `progress` is called every `progress_every` records (0: every PROGRESS_EVERY_S seconds) and at
    the end.
    """
    if settings.kafka_bootstrap is None:
        raise SettingsError("LIANDONG_KAFKA_BOOTSTRAP is required: a rebuild reads the broker's topics")
    bootstrap = settings.kafka_bootstrap
    engine = make_engine(settings.database_url)
    source = open_source(bootstrap)
    try:
        await upgrade(engine)
        # Readiness (/readyz) of the processes on this store is false while it is marked.
        async with mark_rebuilding(engine, REBUILD_MARKER):
            catalog = Catalog.load()
            codec = EventCodec(catalog, make_registry(settings))
            await codec.prepare()
            incarnation = BrokerIncarnation(bootstrap)
            await incarnation.refresh()
            projector = build_projector(settings, engine, consumer, codec, incarnation)
            await source.start()
            partitions = await assign(source, engine, consumer, incarnation.current, catalog_topics(catalog))
            return await _replay(source, projector, partitions, batch, progress, progress_every)
    finally:
        await source.stop()
        await engine.dispose()


def open_source(bootstrap: str) -> AIOKafkaConsumer:
    """A consumer without a group: a replay assigns every partition itself and seeks."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="liandong-rebuild",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
        fetch_max_wait_ms=100,
    )


def catalog_topics(catalog: Catalog) -> list[str]:
    return sorted(map(topic_for, catalog.families))


def build_projector(
    settings: Settings, engine: AsyncEngine, consumer: str, codec: EventCodec, incarnation: BrokerIncarnation
) -> Projector:
    """The worker's projector and projections, without webhook deliveries (history is not sent again)."""
    loop = ClosedLoop.load(settings)
    projections = hub_projections(
        Mechanisms.load(),
        loop.rules,
        loop.calendar,
        loop.settings,
        time_source(settings.time_source),
        master_key=settings.master_key,
    )
    gate = Grants(loop.directory, codec.catalog, hub_issued=True)  # as the worker's, so a rebuild equals it
    return Projector(engine, consumer, codec, projections, LoggedDeadLetters(), incarnation, gate=gate)


async def assign(
    source: AIOKafkaConsumer, engine: AsyncEngine, consumer: str, incarnation: str, topics: Sequence[str]
) -> list[TopicPartition]:
    """Assign every partition of the topics that exist, each positioned after its checkpoint (or at
    the beginning)."""
    existing = await source.topics()
    partitions = [
        TopicPartition(t, p)
        for t in topics
        if t in existing
        for p in sorted(source.partitions_for_topic(t) or ())
    ]
    source.assign(partitions)
    t = projection_checkpoints
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(t.c.topic, t.c.partition, t.c.offset).where(
                t.c.consumer == consumer, t.c.incarnation == incarnation
            )
        )
        done = {TopicPartition(r.topic, r.partition): int(r.offset) for r in rows}
    beginnings = await source.beginning_offsets(partitions)
    for tp in partitions:
        source.seek(tp, max(beginnings[tp], done.get(tp, -1) + 1))
    return partitions


class Bound(Protocol):
    """Where a replay stops reading each partition."""

    def learn(self, source: AIOKafkaConsumer) -> None:
        """Called after every fetch: a bound may depend on what the broker answered."""
        ...

    def end(self, tp: TopicPartition) -> int | None:
        """The exclusive end offset of `tp`; None while not known yet."""
        ...


class _Ends:
    """The end offset of each partition, as the rebuild saw it when it started reading.

    Tansu answers ListOffsets(latest) with the base offset of the partition's last record batch plus
    one, not with the end of the log, so that answer is only a lower bound. The high watermark in
    the first fetch response for the partition is the end of the log: the end is the larger of both.
    """

    def __init__(self, listed: dict[TopicPartition, int]) -> None:
        self._listed = listed
        self.known: dict[TopicPartition, int] = {}

    def learn(self, source: AIOKafkaConsumer) -> None:
        for tp, listed in self._listed.items():
            if tp not in self.known:
                highwater = source.highwater(tp)
                if highwater is not None:
                    self.known[tp] = max(listed, int(highwater))

    def end(self, tp: TopicPartition) -> int | None:
        return self.known.get(tp)


class Targets:
    """Fixed end offsets (another projector's checkpoints plus one); a partition not named ends at 0."""

    def __init__(self, ends: Mapping[TopicPartition, int]) -> None:
        self.ends = dict(ends)

    def learn(self, source: AIOKafkaConsumer) -> None:
        pass

    def end(self, tp: TopicPartition) -> int | None:
        return int(self.ends.get(tp, 0))


async def replay_to(
    source: AIOKafkaConsumer,
    projector: Projector,
    partitions: Sequence[TopicPartition],
    bound: Bound,
    batch: int,
    result: RebuildResult,
    after_batch: Callable[[], None] | None = None,
) -> None:
    """Project every record of `partitions` from the consumer's positions up to `bound`, adding to
    `result`. Records fetched beyond the bound are not projected, and the partition is sought back
    to the bound: a later call with a further bound reads them."""
    pending = set(partitions)
    last_data = time.monotonic()
    while True:
        for tp in list(pending):
            end = bound.end(tp)
            if end is not None and await source.position(tp) >= end:
                pending.discard(tp)
                source.pause(tp)
        if not pending:
            return
        source.resume(*pending)
        fetched = await source.getmany(*pending, timeout_ms=500, max_records=batch)
        bound.learn(source)
        records: list[SourceRecord] = []
        for tp, messages in fetched.items():
            end = bound.end(tp)
            if end is None:  # no end known yet: read these again once it is
                source.seek(tp, messages[0].offset)
                continue
            kept = [m for m in messages if m.offset < end]
            if len(kept) < len(messages):
                source.seek(tp, end)
            records += map(_source_record, kept)
        if records:
            outcome = await projector.process(records)
            applied = sum(outcome.applied.values())
            result.records += len(records)
            result.applied += applied
            result.skipped += len(records) - applied - sum(outcome.dead_lettered.values())
            for reason, count in outcome.dead_lettered.items():
                result.dead_lettered[reason] = result.dead_lettered.get(reason, 0) + count
            result.batches += 1
            last_data = time.monotonic()
        if after_batch is not None:
            after_batch()
        if time.monotonic() - last_data > STALL_TIMEOUT_S:
            raise TimeoutError(
                f"no records for {STALL_TIMEOUT_S:.0f} s with {len(pending)} partition(s) short of "
                "their end offsets"
            )


async def _replay(
    source: AIOKafkaConsumer,
    projector: Projector,
    partitions: list[TopicPartition],
    batch: int,
    progress: Callable[[Progress], None] | None,
    progress_every: int,
) -> RebuildResult:
    result = RebuildResult()
    starts = {tp: await source.position(tp) for tp in partitions}
    ends = _Ends(await source.end_offsets(partitions))
    started = last_report = time.monotonic()
    next_report_at = progress_every

    def report() -> None:
        if progress is not None:
            total = sum(max(0, end - starts[tp]) for tp, end in ends.known.items())
            progress(Progress(result.records, total, result.applied, time.monotonic() - started, rss_kib()))

    def after_batch() -> None:
        nonlocal last_report, next_report_at
        now = time.monotonic()
        if progress_every and result.records >= next_report_at:
            report()
            next_report_at = (result.records // progress_every + 1) * progress_every
        elif not progress_every and now - last_report >= PROGRESS_EVERY_S:
            report()
            last_report = now

    await replay_to(source, projector, partitions, ends, batch, result, after_batch)
    result.seconds = time.monotonic() - started
    report()
    return result


def _source_record(message: ConsumerRecord[bytes, bytes]) -> SourceRecord:
    """As the worker builds it (aiokafka's timestamps are already milliseconds)."""
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(message.timestamp or 0),
        key=message.key,
        value=message.value,
        # aiokafka hands headers as a tuple of (str, bytes) already: no copy per header.
        headers=message.headers or (),
    )


def _print_progress(p: Progress) -> None:
    rate = p.records / p.seconds if p.seconds else 0.0
    memory = f", rss {p.rss_kib / 1024:.0f} MiB" if p.rss_kib is not None else ""
    print(
        f"rebuild: {p.records:,}/{p.total:,} records, {p.applied:,} applied, {p.seconds:.0f} s, "
        f"{rate:,.0f}/s{memory}",
        file=sys.stderr,
        flush=True,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `liandong rebuild`, on whichever parser hosts the command."""
    parser.add_argument(
        "--consumer",
        default=DEFAULT_CONSUMER,
        help=f"checkpoint name (default '{DEFAULT_CONSUMER}', the worker's: it carries on afterwards)",
    )
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help=f"records per transaction ({DEFAULT_BATCH})"
    )
    parser.add_argument(
        "--progress-every",
        type=int,
        default=0,
        metavar="N",
        help=f"print progress every N records (default: every {PROGRESS_EVERY_S:.0f} s)",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """`liandong rebuild` for a configured process: replay, print progress and a summary; the exit
    code (0 done, 1 failed, 2 configuration)."""
    if args.batch < 1:
        print("配置错误 configuration error: --batch must be at least 1", file=sys.stderr)
        return 2
    if settings.kafka_bootstrap is None:
        print("配置错误 configuration error: LIANDONG_KAFKA_BOOTSTRAP is required", file=sys.stderr)
        return 2
    print(f"rebuilding into {settings.redacted_database_url()}", file=sys.stderr)
    try:
        result = asyncio.run(
            rebuild(
                settings,
                consumer=args.consumer,
                batch=args.batch,
                progress=_print_progress,
                progress_every=args.progress_every,
            )
        )
    except SettingsError as exc:
        print(f"配置错误 configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # reported with its traceback; a rerun resumes from the checkpoints
        log.critical("rebuild failed: %r", exc, exc_info=exc)
        return 1
    dead = ", ".join(f"{k} {v}" for k, v in sorted(result.dead_lettered.items())) or "none"
    print(
        f"rebuilt: {result.records:,} records in {result.seconds:.2f} s, {result.applied:,} applied, "
        f"{result.skipped:,} already there, undecodable: {dead}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m services.rebuild`, until the CLI hosts it as `liandong rebuild`."""
    parser = argparse.ArgumentParser(
        prog="liandong rebuild",
        description="Replay every catalog topic from the start into the configured database "
        "(LIANDONG_DATABASE_URL, best a new one) through the hub's projections, then exit.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"配置错误 configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(
        "rebuild",
        settings.log_level,
        settings.log_format,
        secrets=(settings.token_secret, settings.master_key),
        dsns=(settings.database_url,),
    )
    return run(settings, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The worker's operational metrics that are measured rather than counted: clocks by rule and state,
consumer lag, dead-letter depth; and the counting helpers the runtime calls (records ingested, alert
latency). docs/operations.md explains each choice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.envelope import Envelope
from events.serde import EventCodec
from projections.schema import clocks, projection_checkpoints
from services.deadletters import DeadLetterDepth
from services.metrics import UNKNOWN, WorkerMetrics
from services.timesource import Now
from services.worker.closed_loop import KafkaAlertSink

log = logging.getLogger(__name__)

ALERT_RAISED = "cn.gov.liandong.alert.raised.v1"
STEP_TIMEOUT_S = 10.0

# (topic, partition) -> the next offset to read, or None while the consumer has not fetched yet.
Highwaters = Callable[[], Mapping[tuple[str, int], int | None]]


class IngestCounter:
    """`liandong_events_ingested_total{source,type}` from the CloudEvents headers of every record the
    worker reads, whatever path it came by. A record is counted once per process: a batch retried,
    or redelivered within the process's lifetime, is not counted again (offsets are remembered per
    partition). After a restart or a rebalance the uncommitted tail is read, and counted, again: the
    same at-least-once as the broker's."""

    def __init__(self, metrics: WorkerMetrics, sources: Collection[str], types: Collection[str]) -> None:
        self._metrics = metrics
        self._sources = sources
        self._types = types
        self._counted: dict[tuple[str, int], int] = {}

    def count(self, records: Iterable[tuple[str, int, int, Sequence[tuple[str, bytes]]]]) -> None:
        tally: dict[tuple[str, str], int] = {}
        for topic, partition, offset, headers in records:
            if offset <= self._counted.get((topic, partition), -1):
                continue
            self._counted[(topic, partition)] = offset
            found = dict(headers)
            source = found.get("ce_source", b"").decode("utf-8", "replace")
            kind = found.get("ce_type", b"").decode("utf-8", "replace")
            key = (source if source in self._sources else UNKNOWN, kind if kind in self._types else UNKNOWN)
            tally[key] = tally.get(key, 0) + 1
        for (source, kind), n in tally.items():
            self._metrics.ingested.labels(source=source, type=kind).inc(n)


class MeasuredAlertSink(KafkaAlertSink):
    """Observes `liandong_alert_latency_seconds` once the broker has acknowledged each raised alert:
    the hub's clock (its time source) at the acknowledgement minus the threshold the alert is about."""

    def __init__(
        self, publisher: KafkaPublisher, codec: EventCodec, metrics: WorkerMetrics, now: Now
    ) -> None:
        super().__init__(publisher, codec)
        self._metrics = metrics
        self._now = now

    async def publish(self, events: Sequence[Envelope]) -> None:
        await super().publish(events)
        acknowledged = self._now()
        for event in events:
            threshold = event.data.get("threshold") if event.type == ALERT_RAISED else None
            if isinstance(threshold, datetime):
                self._metrics.alert_latency.observe(max(0.0, (acknowledged - threshold).total_seconds()))


async def clock_counts(engine: AsyncEngine, now: datetime) -> dict[tuple[str, str], int]:
    """Running clocks (not stopped) by rule and state, in one GROUP BY over the clocks table.

    overdue: the deadline has passed; due: a warning level was raised (`fired` is not empty) and the
    deadline has not passed; open: neither. The states do not overlap: their sum is every running
    clock."""
    c = clocks.c
    state = case(
        (and_(c.deadline.is_not(None), c.deadline < now), "overdue"),
        (c.fired != "", "due"),
        else_="open",
    )
    query = select(c.rule_id, state, func.count()).where(c.stopped_at.is_(None)).group_by(c.rule_id, state)
    async with engine.connect() as conn:
        return {(rule, str(s)): int(n) for rule, s, n in await conn.execute(query)}


async def checkpoints(engine: AsyncEngine, consumer: str) -> dict[tuple[str, int], int]:
    """The projector's checkpoints: the last offset applied, per partition."""
    p = projection_checkpoints.c
    query = select(p.topic, p.partition, p.offset).where(p.consumer == consumer)
    async with engine.connect() as conn:
        return {
            (topic, int(partition)): int(offset) for topic, partition, offset in await conn.execute(query)
        }


class OpsGauges:
    """One timer tick: every step bounded by a timeout, a failed step logged and skipped (its gauge
    keeps its last value), so one slow dependency does not stall the others."""

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: WorkerMetrics,
        group: str,
        projection: str,
        rules: Iterable[str],
        highwaters: Highwaters,
        dead_letters: DeadLetterDepth,
        now: Now,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._group = group
        self._projection = projection
        self._rules = sorted(rules)
        self._highwaters = highwaters
        self._dead_letters = dead_letters
        self._now = now
        self._lag_labels: set[tuple[str, str, str]] = set()
        self._reasons: set[str] = set()
        self._lock = asyncio.Lock()
        metrics.init_clocks(self._rules)

    async def tick(self) -> None:
        if self._lock.locked():
            return
        async with self._lock:
            for name, step in (
                ("clocks", self._clocks),
                ("consumer lag", self._consumer_lag),
                ("dead-letter depth", self._dead_letter_depth),
            ):
                try:
                    await asyncio.wait_for(step(), STEP_TIMEOUT_S)
                except Exception as exc:  # the next tick tries again
                    log.warning("metrics: %s not measured: %r", name, exc)

    async def close(self) -> None:
        await self._dead_letters.close()

    async def _clocks(self) -> None:
        counts = await clock_counts(self._engine, self._now())
        for rule in sorted({*self._rules, *(r for r, _ in counts)}):
            for state in ("open", "due", "overdue"):
                self._metrics.clocks.labels(rule=rule, state=state).set(counts.get((rule, state), 0))

    async def _consumer_lag(self) -> None:
        """For the partitions this worker holds, so that summing over workers counts each partition
        once. The position is the projector's checkpoint, not the group's committed offset: effects
        are committed with the checkpoint, while faust commits offsets to the broker later, so the
        committed offset would show lag that is already projected."""
        ends = self._highwaters()
        done = await checkpoints(self._engine, self._projection)
        seen: set[tuple[str, str, str]] = set()
        for (topic, partition), end in ends.items():
            if end is None:
                continue
            lag = max(0, end - (done.get((topic, partition), -1) + 1))
            labels = (self._group, topic, str(partition))
            self._metrics.consumer_lag.labels(*labels).set(lag)
            seen.add(labels)
        for labels in self._lag_labels - seen:  # revoked in a rebalance: another worker reports it
            self._metrics.consumer_lag.remove(*labels)
        self._lag_labels = seen

    async def _dead_letter_depth(self) -> None:
        depth = await self._dead_letters.measure()
        for reason in self._reasons | set(depth):
            self._metrics.dead_letters.labels(reason=reason).set(depth.get(reason, 0))
        self._reasons |= set(depth)

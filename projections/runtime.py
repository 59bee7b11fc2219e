"""The projector runtime: one transaction per batch for rows, dead letters' fate and checkpoints.

Exactly-once effects on at-least-once delivery:
- the checkpoint (consumer, topic, partition, offset, broker incarnation) is written in the same
  transaction as the projection's rows;
- each batch locks and re-reads its checkpoint rows and skips offsets at or below them, so a
  redelivery or a partition that rewinds late applies nothing twice;
- every fresh event is first recorded in the event history, keyed by event id; only events new to
  the history reach the projections, so the same event published twice counts once.

An optional gate (`events.grants.Grants` in the worker) sees every decoded event before the history
does: records published straight to the broker bypass the gateway, so an event whose source is
unknown, or not granted its type or townships, is dead-lettered with the gate's reason and never
projected.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.envelope import Envelope
from events.grants import Refusal
from events.serde import DecodeError, EventCodec, Headers
from projections.bulk import insert_new, merge, pairs_of
from projections.schema import event_history, projection_checkpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def correlation(record: SourceRecord) -> dict[str, str]:
    """The log fields `event_id`, `subject` and `unit` (the claimed source) from a record's CloudEvents
    headers, as far as it has them: also for a record that does not decode."""
    fields = {}
    for header, name in (("ce_id", "event_id"), ("ce_subject", "subject"), ("ce_source", "unit")):
        value = next((v for k, v in record.headers if k == header), None)
        if value:
            fields[name] = value[:200].decode("utf-8", "replace")
    return fields


@dataclass(frozen=True, slots=True)
class Positioned:
    """A decoded event with the position it was read from."""

    event: Envelope
    record: SourceRecord


class Projection(Protocol):
    name: str

    def handles(self, event_type: str) -> bool:
        """A pure function of the type: the runtime asks once per type and remembers the answer."""
        ...

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        """Apply events that are new to the history (never seen before, by event id)."""
        ...


class DeadLetterSink(Protocol):
    async def send(self, record: SourceRecord, reason: str, detail: str) -> None:
        """Return only once the dead letter is durably stored (broker acknowledged)."""
        ...


class Incarnation(Protocol):
    """Identity of the broker's log: a memory-only broker that restarts is a new incarnation."""

    @property
    def current(self) -> str: ...

    async def refresh(self) -> bool:
        """Re-read the broker's identity; True if it changed."""
        ...


Gate = Callable[[Envelope], Refusal | None]
"""None to admit a decoded event; a refusal (reason, field, detail) to dead-letter it."""


class IncarnationChanged(RuntimeError):
    pass


@dataclass(slots=True)
class BatchResult:
    applied: dict[str, int] = field(default_factory=dict)
    skipped_redelivered: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    newest_timestamp_ms: int | None = None


class Projector:
    def __init__(
        self,
        engine: AsyncEngine,
        consumer: str,
        codec: EventCodec,
        projections: Sequence[Projection],
        dead_letters: DeadLetterSink,
        incarnation: Incarnation,
        after_commit: Callable[[BatchResult], Awaitable[None]] | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._engine = engine
        self._consumer = consumer
        self._codec = codec
        self._projections = projections
        self._dead_letters = dead_letters
        self._incarnation = incarnation
        self._after_commit = after_commit
        self._gate = gate
        # event type -> the projections that handle it, in order
        self._routes: dict[str, tuple[int, ...]] = {}

    async def process(self, records: Sequence[SourceRecord]) -> BatchResult:
        if not records:
            return BatchResult()
        for _attempt in range(3):
            try:
                result = await self._process_once(records)
            except IncarnationChanged:
                log.warning(
                    "broker incarnation changed to %s; old checkpoints no longer apply",
                    self._incarnation.current,
                )
                continue
            if self._after_commit is not None:
                await self._after_commit(result)
            return result
        raise RuntimeError("broker incarnation kept changing while processing one batch")

    async def _process_once(self, records: Sequence[SourceRecord]) -> BatchResult:
        result = BatchResult()
        async with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Plan each statement for this batch's keys. A prepared statement otherwise settles
                # on a generic plan after five runs, made while the tables were still small, and
                # keeps its sequential scans as they grow (seen: 700 ms for a 10 ms read).
                await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            checkpoints = await self._lock_checkpoints(conn, records)
            fresh = [r for r in records if r.offset > checkpoints.get((r.topic, r.partition), -1)]
            result.skipped_redelivered = len(records) - len(fresh)
            if result.skipped_redelivered and await self._incarnation.refresh():
                # Offsets at or below a checkpoint of an earlier broker are new events, not
                # redeliveries: retry the batch against the new incarnation.
                raise IncarnationChanged()
            decoded: list[Positioned] = []
            for record in fresh:
                try:
                    event = self._codec.decode(record.value, record.headers)
                except DecodeError as exc:
                    await self._dead_letter(result, record, exc.reason, exc.detail)
                    continue
                refusal = self._gate(event) if self._gate is not None else None
                if refusal is not None:
                    detail = f"{refusal.field}: {refusal.detail}"
                    await self._dead_letter(result, record, refusal.reason, detail)
                    continue
                decoded.append(Positioned(event, record))
            new = await _record_history(conn, decoded)
            routed: list[list[Positioned]] = [[] for _ in self._projections]
            for p in new:
                result.applied[p.event.type] = result.applied.get(p.event.type, 0) + 1
                for index in self._route(p.event.type):
                    routed[index].append(p)
            for projection, mine in zip(self._projections, routed, strict=True):
                if mine:
                    await projection.write(conn, mine)
            if fresh:
                await self._save_checkpoints(conn, fresh)
                result.newest_timestamp_ms = max(r.timestamp_ms for r in fresh)
        return result

    async def _dead_letter(self, result: BatchResult, record: SourceRecord, reason: str, detail: str) -> None:
        await self._dead_letters.send(record, reason, detail)
        # The reason only: a detail can quote the record's data (docs/logging.md).
        log.warning(
            "record %s[%d]@%d dead-lettered: %s",
            record.topic,
            record.partition,
            record.offset,
            reason,
            extra=correlation(record),
        )
        result.dead_lettered[reason] = result.dead_lettered.get(reason, 0) + 1

    async def set_aside(self, record: SourceRecord, reason: str, detail: str) -> BatchResult:
        """Dead-letter one record the projections cannot apply, and move its partition's checkpoint
        past it, in one transaction: the partition goes on, and a redelivery is skipped instead of
        dead-lettered twice (services/worker/batches.py decides which record that is)."""
        for _attempt in range(3):
            result = BatchResult()
            async with self._engine.begin() as conn:
                done = await self._lock_checkpoints(conn, [record])
                if record.offset <= done.get((record.topic, record.partition), -1):
                    if await self._incarnation.refresh():
                        continue  # a checkpoint of an earlier broker: not a redelivery
                    result.skipped_redelivered = 1
                else:
                    await self._dead_letter(result, record, reason, detail)
                    await self._save_checkpoints(conn, [record])
            if self._after_commit is not None:
                await self._after_commit(result)
            return result
        raise RuntimeError("broker incarnation kept changing while setting a record aside")

    def _route(self, event_type: str) -> tuple[int, ...]:
        route = self._routes.get(event_type)
        if route is None:
            route = tuple(i for i, p in enumerate(self._projections) if p.handles(event_type))
            self._routes[event_type] = route
        return route

    async def _lock_checkpoints(
        self, conn: AsyncConnection, records: Sequence[SourceRecord]
    ) -> dict[tuple[str, int], int]:
        t = projection_checkpoints
        positions = {(r.topic, r.partition) for r in records}
        query = (
            select(t.c.topic, t.c.partition, t.c.offset, t.c.incarnation)
            .where(t.c.consumer == self._consumer)
            .where(pairs_of(conn, t.c.topic, t.c.partition, positions))
            .with_for_update()
        )
        current = self._incarnation.current
        return {
            (row.topic, row.partition): row.offset
            for row in await conn.execute(query)
            if row.incarnation == current
        }

    async def _save_checkpoints(self, conn: AsyncConnection, records: Sequence[SourceRecord]) -> None:
        newest: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.topic, r.partition)
            newest[key] = max(newest.get(key, -1), r.offset)
        now = datetime.now(UTC)
        rows = [
            {
                "consumer": self._consumer,
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "incarnation": self._incarnation.current,
                "updated_at": now,
            }
            for (topic, partition), offset in newest.items()
        ]
        await merge(conn, projection_checkpoints, rows, _advance)


def _advance(stmt: Any) -> Any:
    return stmt.on_conflict_do_update(
        index_elements=["consumer", "topic", "partition"],
        set_={
            "offset": stmt.excluded.offset,
            "incarnation": stmt.excluded.incarnation,
            "updated_at": stmt.excluded.updated_at,
        },
    )


async def _record_history(conn: AsyncConnection, events: Sequence[Positioned]) -> list[Positioned]:
    """Insert into the event history; return the events it did not hold yet, in batch order."""
    unique: dict[str, Positioned] = {}
    for p in events:
        unique.setdefault(p.event.id, p)
    if not unique:
        return []
    rows = [
        {
            "event_id": p.event.id,
            "subject": p.event.subject,
            "area": p.event.area,
            "type": p.event.type,
            "source": p.event.source,
            "occurred_at": p.event.time,
            "topic": p.record.topic,
            "partition": p.record.partition,
            "offset": p.record.offset,
        }
        for p in unique.values()
    ]
    new_ids = await insert_new(conn, event_history, rows, "event_id")
    return [p for p in unique.values() if p.event.id in new_ids]

"""Dead letters: list them, and re-drive them to the topics they came from once the cause is fixed.

The worker dead-letters a record it cannot project (`services/worker/dead_letters.py`): the record,
untouched, goes to `liandong.deadletter` with `liandong_dlq_reason`, `_detail`, `_topic`,
`_partition` and `_offset` headers. Typical causes, and their fix:

- `unknown_schema`, `unknown_type`: a publisher (or the gateway) runs a newer catalog than the
  worker; deploy the worker's new release;
- `projection_failed`: a projection or the database refused the record (services/worker/batches.py);
  fix the code or the schema;
- a publishing grant refused (events/grants.py): fix the directory, if the unit was entitled.

Replay publishes each dead letter again to its original topic, with the same key, value and headers,
minus the `liandong_dlq_*` headers, plus `liandong_replays` (how often it was replayed). The worker
then reads it as any new record. A record that fails again is dead-lettered again, its replay count
in its headers.

**Each dead letter is replayed once.** The replay keeps a cursor per reason: the committed offset
of the consumer group `liandong-deadletter-replay.<reason>` on the dead-letter topic. Every dead
letter of that reason below the cursor has been dealt with. A replay reads from the cursors to the
end offsets it saw at start, re-drives the dead letters of the reasons asked for, then moves those
reasons' cursors to the end; the other reasons' cursors stay, so `--reason unknown_schema` today
does not pass over the `projection_failed` letters of tomorrow's fix. `--since T` passes over (for
good) the letters of the chosen reasons dead-lettered before T. `--dry-run` moves nothing.

A crash between publishing and moving the cursor replays those letters again on the next run; the
event history keeps each event id once, so the projections do not change.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from connectors.kafka.publisher import KafkaPublisher
from events.serde import EncodedRecord

DEAD_LETTER_TOPIC = "liandong.deadletter"
DLQ_HEADER_PREFIX = "liandong_dlq_"
REPLAYS_HEADER = "liandong_replays"
REPLAY_GROUP = "liandong-deadletter-replay"
CHINA = timezone(timedelta(hours=8))
PUBLISH_CHUNK = 500
READ_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int  # on the dead-letter topic
    offset: int
    timestamp_ms: int  # when it was dead-lettered
    reason: str
    detail: str
    topic: str | None  # where it came from
    source_partition: int | None
    source_offset: int | None
    ce_id: str | None
    ce_type: str | None
    replays: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, message: ConsumerRecord[bytes, bytes]) -> DeadLetter:
        headers = tuple((name, bytes(value or b"")) for name, value in message.headers or ())
        text = {name: _text(value) for name, value in headers}
        return cls(
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=int(message.timestamp or 0),
            reason=text.get(f"{DLQ_HEADER_PREFIX}reason") or "unknown",
            detail=text.get(f"{DLQ_HEADER_PREFIX}detail", ""),
            topic=text.get(f"{DLQ_HEADER_PREFIX}topic") or None,
            source_partition=_int(text.get(f"{DLQ_HEADER_PREFIX}partition")),
            source_offset=_int(text.get(f"{DLQ_HEADER_PREFIX}offset")),
            ce_id=text.get("ce_id"),
            ce_type=text.get("ce_type"),
            replays=_int(text.get(REPLAYS_HEADER)) or 0,
            key=message.key,
            value=message.value,
            headers=headers,
        )

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, CHINA)

    def redriven(self) -> EncodedRecord:
        """The original record again: its key, value and headers, without the dead-letter headers,
        with its replay count."""
        headers = [
            (name, value)
            for name, value in self.headers
            if not name.startswith(DLQ_HEADER_PREFIX) and name != REPLAYS_HEADER
        ]
        headers.append((REPLAYS_HEADER, str(self.replays + 1).encode()))
        return EncodedRecord(key=self.key or b"", value=self.value or b"", headers=headers)


@dataclass(slots=True)
class Listing:
    letters: list[DeadLetter]
    cursors: dict[str, dict[int, int]]  # reason -> dead-letter partition -> replay cursor

    def handled(self, letter: DeadLetter) -> bool:
        """Replayed or passed over already: below its reason's cursor."""
        return letter.offset < self.cursors.get(letter.reason, {}).get(letter.partition, 0)


@dataclass(slots=True)
class ReplayOutcome:
    replayed: list[DeadLetter] = field(default_factory=list)
    passed_over: int = 0  # of the chosen reasons, dead-lettered before --since
    already: int = 0  # of the chosen reasons, below their cursor: handled by an earlier replay
    unroutable: int = 0  # no original topic in the headers: passed over
    other_reasons: int = 0  # not asked for; their cursors did not move
    dry_run: bool = False

    def by_topic(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for letter in self.replayed:
            counts[letter.topic or "?"] = counts.get(letter.topic or "?", 0) + 1
        return counts


async def read_dead_letters(
    bootstrap: str, topic: str = DEAD_LETTER_TOPIC
) -> tuple[list[DeadLetter], dict[int, int]]:
    """Every record of the dead-letter topic up to its end at the time of the call, and those ends.

    Reads without a group, so nothing is committed. The end of a partition is the larger of the
    listed end offset and the high watermark of a fetch: Tansu lists the base offset of the last
    record batch plus one, which is only a lower bound (see services/rebuild.py)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="liandong-deadletter-reader",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            return [], {}
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        listed = await consumer.end_offsets(partitions)
        ends: dict[TopicPartition, int] = {tp: 0 for tp, end in listed.items() if end == 0}
        letters: list[DeadLetter] = []
        deadline = _now() + READ_TIMEOUT_S
        while True:
            pending = [tp for tp in partitions if tp not in ends or await consumer.position(tp) < ends[tp]]
            if not pending:
                break
            if _now() > deadline:
                raise TimeoutError(f"{topic} did not reach its end within {READ_TIMEOUT_S:.0f} s")
            fetched = await consumer.getmany(*pending, timeout_ms=200)
            for messages in fetched.values():
                letters += (DeadLetter.of(m) for m in messages)
            for tp in pending:
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    ends[tp] = max(int(listed[tp]), int(highwater))
        mine = [letter for letter in letters if letter.offset < ends[TopicPartition(topic, letter.partition)]]
        return mine, {tp.partition: end for tp, end in ends.items()}
    finally:
        await consumer.stop()


async def read_cursors(
    bootstrap: str, reasons: Collection[str], partitions: Collection[int], topic: str = DEAD_LETTER_TOPIC
) -> dict[str, dict[int, int]]:
    """Each reason's replay cursor on each partition (0 where nothing was committed yet)."""
    cursors: dict[str, dict[int, int]] = {}
    for reason in sorted(reasons):
        consumer = _group_consumer(bootstrap, reason)
        try:
            await consumer.start()
            cursors[reason] = {}
            for partition in partitions:
                committed = await consumer.committed(TopicPartition(topic, partition))
                cursors[reason][partition] = int(committed or 0)
        finally:
            await consumer.stop()
    return cursors


async def move_cursors(
    bootstrap: str, cursors: Mapping[str, Mapping[int, int]], topic: str = DEAD_LETTER_TOPIC
) -> None:
    for reason, offsets in sorted(cursors.items()):
        if not offsets:
            continue
        consumer = _group_consumer(bootstrap, reason)
        try:
            await consumer.start()
            parts = {TopicPartition(topic, p): offset for p, offset in offsets.items()}
            consumer.assign(list(parts))
            await consumer.commit(parts)
        finally:
            await consumer.stop()


async def list_dead_letters(bootstrap: str) -> Listing:
    letters, ends = await read_dead_letters(bootstrap)
    cursors = await read_cursors(bootstrap, {letter.reason for letter in letters}, ends)
    return Listing(letters, cursors)


async def replay(
    bootstrap: str,
    publisher: KafkaPublisher,
    reasons: Collection[str] | None = None,
    since: datetime | None = None,
    dry_run: bool = False,
) -> ReplayOutcome:
    """Re-drive the dead letters of `reasons` (all if None) not replayed yet, from `since` on."""
    letters, ends = await read_dead_letters(bootstrap)
    chosen = {letter.reason for letter in letters if reasons is None or letter.reason in reasons}
    cursors = await read_cursors(bootstrap, chosen, ends)
    since_ms = int(since.timestamp() * 1000) if since is not None else None
    outcome = ReplayOutcome(dry_run=dry_run)
    for letter in letters:
        if letter.reason not in chosen:
            outcome.other_reasons += 1
        elif letter.offset < cursors[letter.reason].get(letter.partition, 0):
            outcome.already += 1
        elif since_ms is not None and letter.timestamp_ms < since_ms:
            outcome.passed_over += 1
        elif letter.topic is None:
            outcome.unroutable += 1
        else:
            outcome.replayed.append(letter)
    if dry_run:
        return outcome
    records = [(letter.topic or "", letter.redriven()) for letter in outcome.replayed]
    for start in range(0, len(records), PUBLISH_CHUNK):
        await publisher.publish(records[start : start + PUBLISH_CHUNK])
    # Only once every replayed record is acknowledged: a failure before this replays them again.
    moved = {reason: {p: max(end, cursors[reason].get(p, 0)) for p, end in ends.items()} for reason in chosen}
    await move_cursors(bootstrap, moved)
    return outcome


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`2h`, `30m`, `7d`, `45s` ago, or an ISO date or time (China time when no offset is given)."""
    relative = re.fullmatch(r"(\d+)\s*([smhd])", value.strip())
    if relative:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[relative.group(2)]
        return (now or datetime.now(CHINA)) - timedelta(**{unit: int(relative.group(1))})
    moment = datetime.fromisoformat(value.strip())
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=CHINA)


def _group_consumer(bootstrap: str, reason: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="liandong-deadletter-replay",
        group_id=f"{REPLAY_GROUP}.{reason}",
        enable_auto_commit=False,
    )


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _now() -> float:
    return time.monotonic()


def summary_lines(outcome: ReplayOutcome) -> Sequence[str]:
    """What a replay did (or would do), in Chinese and English, for the operator."""
    verb = "将重放 would replay" if outcome.dry_run else "已重放 replayed"
    lines = [f"{verb}: {len(outcome.replayed)}"]
    lines += [f"  → {topic}: {count}" for topic, count in sorted(outcome.by_topic().items())]
    lines.append(f"此前已处理 handled by an earlier replay: {outcome.already}")
    if outcome.passed_over:
        lines.append(f"早于 --since，跳过 passed over (before --since): {outcome.passed_over}")
    if outcome.unroutable:
        lines.append(f"无原始主题，跳过 passed over (no original topic): {outcome.unroutable}")
    if outcome.other_reasons:
        lines.append(f"其他原因，未动 other reasons, left as they are: {outcome.other_reasons}")
    if outcome.dry_run:
        lines.append("试运行，未发送，游标未移动 dry run: nothing sent, no cursor moved")
    return lines


class DeadLetterDepth:
    """How many dead letters wait for a replay, by reason: those at or above their reason's cursor.

    Reading the whole topic on every measurement would cost more as dead letters pile up, which is
    exactly when the gauge matters; so one consumer without a group stays assigned to the topic and
    reads only what is new, keeping the (reason, partition, offset) of each letter (their payloads
    are dropped). The cursors are read each time: `liandong deadletters replay` moves them from
    another process."""

    def __init__(self, bootstrap: str, topic: str = DEAD_LETTER_TOPIC, max_rounds: int = 50) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._max_rounds = max_rounds
        self._consumer: AIOKafkaConsumer | None = None
        self._groups: dict[str, AIOKafkaConsumer] = {}
        self._offsets: dict[tuple[str, int], list[int]] = {}

    async def measure(self) -> dict[str, int]:
        try:
            await self._read_new()
            depth: dict[str, int] = {}
            for reason in sorted({reason for reason, _ in self._offsets}):
                cursors = await self._cursors(reason)
                depth[reason] = sum(
                    len(offsets) - bisect.bisect_left(offsets, cursors.get(partition, 0))
                    for (r, partition), offsets in self._offsets.items()
                    if r == reason
                )
            return depth
        except BaseException:
            await self.close()  # start again from the beginning next time, with fresh clients
            raise

    async def _read_new(self) -> None:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id="liandong-deadletter-depth",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            self._consumer = consumer
            self._offsets = {}
        consumer = self._consumer
        partitions = consumer.partitions_for_topic(self._topic)
        if not partitions:
            await consumer.topics()  # refresh the metadata: the topic may exist by the next time
            return
        wanted = {TopicPartition(self._topic, p) for p in partitions}
        if consumer.assignment() != wanted:
            consumer.assign(sorted(wanted))
            await consumer.seek_to_beginning(*wanted)
            self._offsets = {}
        for _ in range(self._max_rounds):
            fetched = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for messages in fetched.values():
                for message in messages:
                    letter = DeadLetter.of(message)
                    self._offsets.setdefault((letter.reason, letter.partition), []).append(letter.offset)
            if not fetched:
                return

    async def _cursors(self, reason: str) -> dict[int, int]:
        # A group consumer per reason, kept (reasons are few): it joins nothing, it only asks for
        # the group's committed offsets. (The admin client's OffsetFetch does not decode against
        # Tansu; the consumer's does, as `read_cursors` relies on.)
        consumer = self._groups.get(reason)
        if consumer is None:
            consumer = _group_consumer(self._bootstrap, reason)
            await consumer.start()
            self._groups[reason] = consumer
        partitions = {p for r, p in self._offsets if r == reason}
        return {p: int(await consumer.committed(TopicPartition(self._topic, p)) or 0) for p in partitions}

    async def close(self) -> None:
        consumers = [c for c in (self._consumer, *self._groups.values()) if c is not None]
        self._consumer, self._groups = None, {}
        for consumer in consumers:
            await consumer.stop()

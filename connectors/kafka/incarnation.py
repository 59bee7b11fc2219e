"""The broker's incarnation: the value of the first record on a marker topic.

A memory-only broker that restarts loses every record, offsets start again at zero, and the
first process to look writes a new marker. Whoever wrote it, every process reads the record at
offset 0, so all agree. On a durable Kafka the marker never changes.
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connectors.kafka.topics import ensure_topics

MARKER_TOPIC = "liandong.broker-incarnation"


class BrokerIncarnation:
    def __init__(self, bootstrap: str, timeout_s: float = 15.0) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._current: str | None = None

    @property
    def current(self) -> str:
        if self._current is None:
            raise RuntimeError("call refresh() before reading the incarnation")
        return self._current

    async def refresh(self) -> bool:
        value = await asyncio.wait_for(self._read_or_create(), self._timeout_s)
        changed = self._current is not None and value != self._current
        self._current = value
        return changed

    async def _read_or_create(self) -> str:
        await ensure_topics(self._bootstrap, {MARKER_TOPIC: 1})
        tp = TopicPartition(MARKER_TOPIC, 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            if (await consumer.end_offsets([tp]))[tp] == 0:
                await self._write_marker()
            await consumer.seek_to_beginning(tp)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
                for record in batch.get(tp, []):
                    return bytes(record.value).decode()
        finally:
            await consumer.stop()

    async def _write_marker(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(MARKER_TOPIC, uuid.uuid4().hex.encode(), partition=0)
        finally:
            await producer.stop()

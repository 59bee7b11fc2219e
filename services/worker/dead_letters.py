"""Dead letters: the original record, untouched, plus why and where it came from in headers."""

from __future__ import annotations

from connectors.kafka.publisher import KafkaPublisher
from events.serde import EncodedRecord
from projections.runtime import SourceRecord


class KafkaDeadLetters:
    def __init__(self, publisher: KafkaPublisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def send(self, record: SourceRecord, reason: str, detail: str) -> None:
        headers = [*record.headers]
        headers += [
            ("liandong_dlq_reason", reason.encode()),
            ("liandong_dlq_detail", detail.encode()[:1000]),
            ("liandong_dlq_topic", record.topic.encode()),
            ("liandong_dlq_partition", str(record.partition).encode()),
            ("liandong_dlq_offset", str(record.offset).encode()),
        ]
        dead = EncodedRecord(key=record.key or b"", value=record.value or b"", headers=headers)
        await self._publisher.publish([(self._topic, dead)])

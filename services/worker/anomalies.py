"""Anomalies in the worker: detect case-flow anomalies on the wall clock, then announce every
anomaly worth a person's attention as an `anomaly.detected` event, which becomes a risk alert."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import topic_for
from events.directory import Directory
from events.envelope import Envelope
from events.serde import EventCodec
from projections.anomaly_announcer import AnomalyAnnouncer, AnomalySink
from projections.case_flow import detect_case_flow
from services.timesource import Now

log = logging.getLogger(__name__)
ANOMALY_TOPIC = topic_for("anomaly")


class KafkaAnomalySink:
    def __init__(self, publisher: KafkaPublisher, codec: EventCodec) -> None:
        self._publisher = publisher
        self._codec = codec

    async def publish(self, events: Sequence[Envelope]) -> None:
        await self._publisher.publish([(ANOMALY_TOPIC, self._codec.encode(e)) for e in events])


@dataclass(slots=True)
class AnomalyTick:
    detected: int | None = None  # None: detection failed this tick
    announced: int | None = None  # None: announcing failed this tick


class AnomalyLoop:
    """One detection and one announcement per timer tick; ticks never overlap.

    The two steps fail apart: a failed case-flow detection still lets the legal-review and
    inspection anomalies out, and a failed announcement leaves its rows unannounced for the next
    tick. Both are logged, and both are retried next tick.
    """

    def __init__(self, engine: AsyncEngine, directory: Directory, sink: AnomalySink, now: Now) -> None:
        self._engine = engine
        self._announcer = AnomalyAnnouncer(engine, directory, sink)
        self._now = now
        self._lock = asyncio.Lock()
        self.last: AnomalyTick | None = None

    async def tick(self) -> AnomalyTick | None:
        if self._lock.locked():
            return None
        async with self._lock:
            tick = AnomalyTick()
            try:
                now = self._now()
            except Exception as exc:  # an unreadable time source: nothing to do until it reads
                log.error("anomaly tick: cannot read the time: %r", exc, exc_info=exc)
                return None
            try:
                async with self._engine.begin() as conn:
                    tick.detected = await detect_case_flow(conn, now)
            except Exception as exc:  # rolled back; the next tick detects again
                log.error("case-flow detection failed: %r", exc, exc_info=exc)
            try:
                tick.announced = await self._announcer.announce(now)
            except Exception as exc:  # the rows stay unannounced; the next tick retries
                log.error("anomaly announcement failed: %r", exc, exc_info=exc)
            if tick.detected or tick.announced:
                log.info(
                    "anomalies: %s case-flow anomalies detected, %s announced", tick.detected, tick.announced
                )
            self.last = tick
            return tick

"""Anomalies in the worker: detect case-flow anomalies on the wall clock, announce every anomaly
worth a person's attention as an `anomaly.detected` event, which becomes a risk alert, and withdraw
the risk alert of every anomaly resolved since (`alert.withdrawn`)."""

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


class KafkaAnomalySink:
    """Each event on its area's topic: `anomaly.detected` on the anomaly topic, `alert.withdrawn` on
    the alert topic beside the alert's acknowledgements."""

    def __init__(self, publisher: KafkaPublisher, codec: EventCodec) -> None:
        self._publisher = publisher
        self._codec = codec

    async def publish(self, events: Sequence[Envelope]) -> None:
        await self._publisher.publish([(topic_for(e.area), self._codec.encode(e)) for e in events])


@dataclass(slots=True)
class AnomalyTick:
    detected: int | None = None  # None: detection failed this tick
    announced: int | None = None  # None: announcing failed this tick
    withdrawn: int | None = None  # None: withdrawing failed this tick


class AnomalyLoop:
    """One detection, one announcement and one withdrawal pass per timer tick; ticks never overlap.

    The steps fail apart: a failed case-flow detection still lets the legal-review and inspection
    anomalies out, a failed announcement leaves its rows unannounced for the next tick, and a failed
    withdrawal leaves the alerts open, so the next tick finds them again. Each failure is logged and
    retried next tick.
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
            try:
                tick.withdrawn = await self._announcer.withdraw()
            except Exception as exc:  # the alerts stay open; the next tick finds them again
                log.error("withdrawing the alerts of resolved anomalies failed: %r", exc, exc_info=exc)
            if tick.detected or tick.announced or tick.withdrawn:
                log.info(
                    "anomalies: %s case-flow anomalies detected, %s announced, %s alerts withdrawn",
                    tick.detected,
                    tick.announced,
                    tick.withdrawn,
                )
            self.last = tick
            return tick

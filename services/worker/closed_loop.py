"""The closed loop in the worker: clock rules, the calendar, and the scanner that raises alerts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.calendar import WorkingDayCalendar
from events.catalog import topic_for
from events.clock_rules import ClockRules
from events.directory import Directory
from events.envelope import Envelope
from events.serde import EventCodec
from projections.clock_scanner import ClockScanner, ScanResult
from projections.clock_store import ClockSettings
from services.settings import Settings
from services.timesource import Now

log = logging.getLogger(__name__)
ALERT_TOPIC = topic_for("alert")


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    rules: ClockRules
    calendar: WorkingDayCalendar
    directory: Directory
    settings: ClockSettings

    @classmethod
    def load(cls, settings: Settings) -> ClosedLoop:
        return cls(
            rules=ClockRules.load(),
            calendar=WorkingDayCalendar.load(settings.calendar_file),
            directory=Directory.load(),
            settings=ClockSettings(
                grace=timedelta(seconds=settings.alert_grace_s),
                reescalate_after=timedelta(hours=settings.reescalate_after_h),
            ),
        )


class KafkaAlertSink:
    def __init__(self, publisher: KafkaPublisher, codec: EventCodec) -> None:
        self._publisher = publisher
        self._codec = codec

    async def publish(self, events: Sequence[Envelope]) -> None:
        await self._publisher.publish([(ALERT_TOPIC, self._codec.encode(e)) for e in events])


class ScanLoop:
    """One scan per timer tick; ticks never overlap, and a failed scan is logged and retried next tick
    (the clocks stay due, so nothing is lost)."""

    def __init__(self, loop: ClosedLoop, engine: AsyncEngine, sink: KafkaAlertSink, now: Now) -> None:
        self._scanner = ClockScanner(engine, loop.rules, loop.calendar, loop.directory, loop.settings, sink)
        self._now = now
        self._lock = asyncio.Lock()
        self.last: ScanResult | None = None

    async def tick(self) -> ScanResult | None:
        if self._lock.locked():
            return None
        async with self._lock:
            try:
                self.last = await self._scanner.scan(self._now())
            except Exception as exc:  # the next tick retries; the due clocks are still due
                log.error("clock scan failed: %r", exc, exc_info=exc)
                return None
            if self.last.raised or self.last.withdrawn:
                log.info(
                    "clock scan: %d alerts raised, %d withdrawn, %d deadlines recomputed",
                    self.last.raised,
                    self.last.withdrawn,
                    self.last.recomputed,
                )
            return self.last

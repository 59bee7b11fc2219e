"""Driving the projector runtime directly: records from real encodings, fakes for our own ports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from events.calendar import WorkingDayCalendar
from events.clock_rules import ClockRules
from events.envelope import Envelope
from events.mechanisms import Mechanisms
from events.serde import EventCodec
from projections.clock_store import ClockSettings
from projections.hub import hub_projections
from projections.runtime import Projector, SourceRecord

TOPIC = "liandong.case.events"
CALENDAR = WorkingDayCalendar.load()
CLOCK_SETTINGS = ClockSettings(grace=timedelta(seconds=60), reescalate_after=timedelta(hours=48))


@dataclass
class SettableIncarnation:
    """Our Incarnation port, with the broker identity under the test's control."""

    value: str = "broker-a"
    seen: str = "broker-a"

    @property
    def current(self) -> str:
        return self.seen

    async def refresh(self) -> bool:
        changed = self.value != self.seen
        self.seen = self.value
        return changed


@dataclass
class ListDeadLetters:
    sent: list[tuple[SourceRecord, str, str]] = field(default_factory=list)

    async def send(self, record: SourceRecord, reason: str, detail: str) -> None:
        self.sent.append((record, reason, detail))


def records(
    codec: EventCodec, events: Sequence[Envelope], start: int = 0, partition: int = 0
) -> list[SourceRecord]:
    out = []
    for offset, event in enumerate(events, start):
        encoded = codec.encode(event)
        out.append(
            SourceRecord(
                TOPIC, partition, offset, 1_700_000_000_000, encoded.key, encoded.value, encoded.headers
            )
        )
    return out


def projector(
    engine: AsyncEngine,
    codec: EventCodec,
    incarnation: SettableIncarnation | None = None,
    dead: ListDeadLetters | None = None,
    now: Callable[[], datetime] | None = None,
) -> Projector:
    return Projector(
        engine,
        "hub",
        codec,
        hub_projections(Mechanisms.load(), ClockRules.load(), CALENDAR, CLOCK_SETTINGS, now),
        dead or ListDeadLetters(),
        incarnation or SettableIncarnation(),
    )

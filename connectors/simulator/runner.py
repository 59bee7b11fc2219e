"""Play the simulated year in compressed wall time, through the channels, with a simulated clock.

The year is cut into windows of simulated time. At the end of each window the runner waits until
the wall clock reaches that moment (unless it runs as fast as it can), publishes the window's
events, and only then writes the window's end to the clock file: a hub that reads "now" from that
file never sees a deadline pass before the receipt that would have stopped it was acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from connectors.simulator.channels import Channel
from connectors.simulator.simulated import INJECTED_KINDS, SimulatedEvent
from connectors.simulator.timing import CST

MAX = "max"


@dataclass(frozen=True, slots=True)
class Pace:
    """How simulated time maps to wall time. `speed` is simulated seconds per wall second; None: max."""

    speed: float | None
    window: timedelta

    @classmethod
    def of(
        cls, speed: str | float | None = None, duration_min: float | None = None, year: int = 2022
    ) -> Pace:
        """From `--speed N|max` or `--duration-min M` (the whole year in M minutes)."""
        if duration_min is not None:
            if duration_min <= 0:
                raise ValueError("--duration-min must be positive")
            return cls.at(year_seconds(year) / (duration_min * 60))
        if speed is None or speed == MAX:
            return cls(None, timedelta(days=14))
        value = float(speed)
        if value <= 0:
            raise ValueError("--speed must be positive or 'max'")
        return cls.at(value)

    @classmethod
    def at(cls, speed: float) -> Pace:
        # About one window per wall second, but never under a simulated minute or over a week.
        window = min(timedelta(days=7), max(timedelta(minutes=1), timedelta(seconds=speed)))
        return cls(speed, window)

    def wall_seconds(self, simulated: timedelta) -> float:
        """Wall seconds after the start at which `simulated` time after the start is reached."""
        return 0.0 if self.speed is None else simulated.total_seconds() / self.speed


def year_seconds(year: int) -> float:
    return (datetime(year + 1, 1, 1) - datetime(year, 1, 1)).total_seconds()


class ClockFile:
    """The current simulated time, ISO 8601 with its offset, replaced atomically for readers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, moment: datetime) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(moment.astimezone(CST).isoformat(), encoding="utf-8")
        os.replace(tmp, self.path)


@dataclass(slots=True)
class Summary:
    events: int = 0
    by_channel: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    # The lapses injected on purpose and published: what the hub's anomaly checks should find.
    injected: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(INJECTED_KINDS, 0)))
    windows: int = 0
    wall_s: float = 0.0
    behind_s: float = 0.0  # the most the publishing fell behind the paced wall clock
    simulated_to: datetime | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "events": self.events,
            "by_channel": dict(self.by_channel),
            "by_type": dict(sorted(self.by_type.items())),
            "injected_anomalies": dict(sorted(self.injected.items())),
            "windows": self.windows,
            "wall_s": round(self.wall_s, 1),
            "behind_s": round(self.behind_s, 1),
            "simulated_to": self.simulated_to.isoformat() if self.simulated_to else None,
        }


Progress = Callable[[datetime, Summary], None]
# Called with the number of events published so far, before the clock moves: lets a demo wait for
# the hub to project them, so that a lagging hub does not see deadlines pass on unprojected receipts.
Settle = Callable[[int], Awaitable[None]]


async def play(
    events: Iterable[SimulatedEvent],
    channels: Mapping[str, Channel],
    pace: Pace,
    *,
    start: datetime,
    end: datetime,
    clock: ClockFile | None = None,
    progress: Progress | None = None,
    settle: Settle | None = None,
    max_buffer: int = 20_000,
) -> Summary:
    summary = Summary()
    began = time.monotonic()
    boundary = start + pace.window
    buffer: list[SimulatedEvent] = []

    async def close_window(until: datetime) -> None:
        behind = time.monotonic() - began - pace.wall_seconds(until - start)
        if behind < 0:
            await asyncio.sleep(-behind)  # pacing: the window's end has not come yet in wall time
        summary.behind_s = max(summary.behind_s, behind)
        await flush()
        summary.windows += 1
        summary.simulated_to = until
        if settle is not None:
            await settle(summary.events)
        if clock is not None:
            clock.write(until)
        if progress is not None:
            progress(until, summary)

    async def flush() -> None:
        if not buffer:
            return
        grouped: dict[str, list[SimulatedEvent]] = {}
        for event in buffer:
            grouped.setdefault(event.channel, []).append(event)
        await asyncio.gather(*(channels[name].publish(batch) for name, batch in grouped.items()))
        for name, batch in grouped.items():
            summary.by_channel[name] += len(batch)
        summary.events += len(buffer)
        buffer.clear()

    if clock is not None:
        clock.write(start)
    for event in events:
        while event.publish_at >= boundary:
            await close_window(boundary)
            boundary = min(boundary + pace.window, end)
        buffer.append(event)
        summary.by_type[event.type] += 1
        if event.anomaly is not None:
            summary.injected[event.anomaly] += 1
        if len(buffer) >= max_buffer:
            await flush()
    while boundary < end:
        await close_window(boundary)
        boundary = min(boundary + pace.window, end)
    await close_window(end)
    summary.wall_s = time.monotonic() - began
    return summary

"""A discrete-event scheduler: processes are generators, the heap holds each one's next fact.

Memory stays bounded by the processes alive at once (open cases and matters), never by the
year's event count. Ties are broken by insertion order, so a seed always gives the same stream.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import count
from typing import Any


@dataclass(frozen=True, slots=True)
class Fact:
    """One event a process wants published. `key` tells apart repeats of a type on one subject;
    `anomaly` names the deliberate lapse this fact completes, if any (see `SimulatedEvent`)."""

    time: datetime
    unit: str
    type: str
    subject: str
    data: Mapping[str, Any]
    key: str = ""
    publish_at: datetime | None = None
    anomaly: str | None = None


@dataclass(frozen=True, slots=True)
class Start:
    """Start a child process now."""

    process: Iterator[Item]


@dataclass(frozen=True, slots=True)
class Wake:
    """Resume this process at `at` without publishing anything."""

    at: datetime


Item = Fact | Start | Wake
Process = Iterator[Item]


# (publish time, insertion number, fact, process): the unique number settles every tie.
_Entry = tuple[datetime, int, Fact | None, Process]


class Scheduler:
    """Yields `(publish_at, fact)` in publish order until `end` (exclusive), then stops."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.now = start
        self._end = end
        self._heap: list[_Entry] = []
        self._seq = count()

    def start(self, process: Process) -> None:
        self._advance(process)

    def run(self) -> Iterator[tuple[datetime, Fact]]:
        while self._heap:
            at, _, fact, process = heapq.heappop(self._heap)
            self.now = at
            if fact is not None:
                yield at, fact
            self._advance(process)

    def _advance(self, process: Process) -> None:
        for item in process:
            if isinstance(item, Start):
                self._advance(item.process)
                continue
            if isinstance(item, Wake):
                at, fact = max(item.at, self.now), None
            else:
                # A process never publishes before what it already published (a subject stays in order).
                at, fact = max(item.time, item.publish_at or item.time, self.now), item
                if item.time >= self._end:
                    at = item.time
            if at >= self._end:
                close = getattr(process, "close", None)
                if close is not None:
                    close()
                return
            heapq.heappush(self._heap, (at, next(self._seq), fact, process))
            return

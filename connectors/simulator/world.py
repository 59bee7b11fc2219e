"""What every simulated process shares: the seed, the directory, the calendar, the stall ledger.

Each subject draws from its own random generator, seeded by (seed, subject), so one subject's
story does not change when another process is added or reordered.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from connectors.simulator.profile import Profile
from connectors.simulator.scheduler import Fact
from connectors.simulator.timing import CST, Days, year_bounds
from events.directory import Directory

LATE, NEVER = "late", "never"


@dataclass(slots=True)
class Ledger:
    """Loops with a duty clock, and those whose receipt the simulator withheld or delayed."""

    loops: Counter[str] = field(default_factory=Counter)
    stalled: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def loop(self, area: str, step: str | None, mode: str | None) -> None:
        self.loops[area] += 1
        if step is not None and mode is not None:
            self.stalled[(area, step, mode)] += 1

    @property
    def share(self) -> float:
        total = sum(self.loops.values())
        return sum(self.stalled.values()) / total if total else 0.0


class Timeline:
    """The facts of one process, possibly about several subjects, released in time order."""

    def __init__(self) -> None:
        self._facts: list[Fact] = []

    def add(
        self,
        at: datetime,
        unit: str,
        short_type: str,
        subject: str,
        data: Mapping[str, Any],
        *,
        key: str = "",
        publish_at: datetime | None = None,
        anomaly: str | None = None,
    ) -> datetime:
        self._facts.append(Fact(at, unit, short_type, subject, data, key, publish_at, anomaly))
        return at

    def facts(self) -> Iterator[Fact]:
        # By occurrence, stable: facts of one subject were added in order, so ties keep it. A fact
        # published late (a weekly upload) holds back the ones after it: the scheduler sees to that.
        return iter(sorted(self._facts, key=lambda f: f.time))


@dataclass(slots=True)
class World:
    seed: int
    year: int
    profile: Profile
    directory: Directory
    days: Days
    ledger: Ledger = field(default_factory=Ledger)
    filed_so_far: Counter[str] = field(default_factory=Counter)

    @property
    def start(self) -> datetime:
        return year_bounds(self.year)[0]

    @property
    def end(self) -> datetime:
        return year_bounds(self.year)[1]

    def rng(self, *parts: str) -> random.Random:
        return random.Random(f"{self.seed}|" + "|".join(parts))

    def stall(self, rng: random.Random, steps: Sequence[str]) -> tuple[str | None, str | None]:
        """Which step of a loop stalls, and how (late or never); (None, None) for most loops."""
        if not steps or rng.random() >= self.profile.rate("stall", "share"):
            return None, None
        step = steps[rng.randrange(len(steps))]
        return step, NEVER if rng.random() < self.profile.rate("stall", "never") else LATE

    def unit_or(self, unit: str, fallback: str) -> str:
        return unit if unit in self.directory.units else fallback

    def office(self, township: str) -> str:
        return f"{township}.enforcement-office"

    def police(self, township: str) -> str:
        return f"{township}.police-station"

    def judicial(self, township: str) -> str:
        return f"{township}.judicial-office"

    def market(self, township: str) -> str:
        return f"{township}.market-supervision-office"

    def planning(self, township: str) -> str:
        return self.unit_or(f"{township}.planning-resources-office", "district.planning-resources")

    @property
    def townships(self) -> list[str]:
        return list(self.directory.townships)

    def upload_after(self, day: date) -> datetime:
        """When a spreadsheet unit uploads its export holding `day`'s filings.

        Weekly on the profile's weekday, for the week before; also on the year's last working day,
        so that the year's filings are complete within the year.
        """
        ahead = (self.profile.upload_weekday - day.weekday() - 1) % 7 + 1
        upload = self.days.on_or_after(day + timedelta(days=ahead))
        last = self.last_working_day
        if upload > last >= day:
            return datetime.combine(last, time(17, 30), CST)
        return datetime.combine(upload, self.profile.upload_time, CST)

    @property
    def last_working_day(self) -> date:
        day = date(self.year, 12, 31)
        while not self.days.is_working(day):
            day -= timedelta(days=1)
        return day

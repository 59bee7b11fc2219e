"""What the clock benchmarks share: clock rows built exactly as the projection writes them, loaded
with COPY, and the small helpers that print their results."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from events.calendar import WorkingDayCalendar
from events.clock_rules import ClockRule, ClockRules
from projections import clocks as engine
from projections.clock_store import ClockSettings, state_row
from projections.schema import clocks as clocks_table

RULE_ID = "transfer.acceptance"
AREA = "transfer"
RESPONSIBLE = "shilou.enforcement-office"
TOWNSHIP = "shilou"
COLUMNS: tuple[str, ...] = tuple(c.name for c in clocks_table.c)
COPY_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class ClockFactory:
    """Builds `clocks` rows for rule `transfer.acceptance` through `state_row`, like the projection."""

    rules: ClockRules
    calendar: WorkingDayCalendar
    settings: ClockSettings

    @classmethod
    def load(cls, grace: timedelta = timedelta(seconds=60)) -> ClockFactory:
        return cls(ClockRules.load(), WorkingDayCalendar.load(), ClockSettings(grace, timedelta(hours=48)))

    @property
    def rule(self) -> ClockRule:
        return self.rules.rules[RULE_ID]

    def state(self, subject: str, started_at: datetime) -> engine.ClockState:
        return engine.ClockState(
            clock_id=engine.clock_id(RULE_ID, AREA, subject, ""),
            rule_id=RULE_ID,
            area=AREA,
            subject=subject,
            party="",
            responsible=RESPONSIBLE,
            township=TOWNSHIP,
            started_at=started_at,
        )

    def row(self, state: engine.ClockState, written_at: datetime) -> dict[str, Any]:
        return state_row(state, self.rule, self.rules, self.calendar, self.settings, written_at)

    def fired_row(self, state: engine.ClockState, level: str, written_at: datetime) -> dict[str, Any]:
        """The row the scanner writes once it raised `level` for this clock."""
        return self.row(replace(state, fired=state.fired | {level}), written_at)


def asyncpg_dsn(url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy `postgresql+asyncpg://` URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def copy_rows(conn: asyncpg.Connection, rows: Iterable[dict[str, Any]]) -> int:
    """COPY rows into `clocks` in chunks; returns how many were written."""
    written = 0
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(tuple(row[c] for c in COLUMNS))
        if len(chunk) == COPY_CHUNK:
            await conn.copy_records_to_table("clocks", records=chunk, columns=list(COLUMNS))
            written += len(chunk)
            chunk = []
    if chunk:
        await conn.copy_records_to_table("clocks", records=chunk, columns=list(COLUMNS))
        written += len(chunk)
    return written


def subjects(prefix: str, start: int, count: int) -> Iterator[str]:
    return (f"{prefix}-{i:07d}" for i in range(start, start + count))


def median_ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1000


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(pg_version: str) -> str:
    """One line naming the machine: cores, CPU model, PostgreSQL version, date."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model}), PostgreSQL {pg_version}, {when}, load average {load} at start"

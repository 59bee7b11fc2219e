"""Cost of one `ClockScanner.scan(now)` as open clocks grow while due clocks stay fixed, and as due
clocks grow while open clocks stay fixed.

    .venv/bin/python -m bench.clock_scan            # both series, prints Markdown
    .venv/bin/python -m bench.clock_scan --help     # sizes, repeats, time budget

Each series runs on a fresh PostgreSQL database (`tests.support.create_pg_database`), migrated with
Alembic and dropped at the end. Rows are built by `state_row` for rule `transfer.acceptance`, exactly
as the clock projection writes them, and loaded with asyncpg COPY. Alerts go to an in-memory sink that
only counts, so the figures are the database and Python cost of a scan, without the broker. Each scan
is also split into its two phases (provisional-deadline recompute, due-clock batches), and the
scanner's two statements are shown with EXPLAIN ANALYZE at the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.dialects import postgresql

from bench.clock_rows import (
    ClockFactory,
    asyncpg_dsn,
    copy_rows,
    machine,
    median_ms,
    subjects,
    table,
)
from events.directory import Directory
from events.envelope import Envelope
from projections import clocks as engine
from projections.clock_scanner import ClockScanner
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import clocks as clocks_table
from tests.support import PG_DSN, create_pg_database, drop_pg_database

# Monday 10:00 in Shanghai, in a year the calendar has official data for (no provisional deadlines).
NOW = datetime(2025, 6, 16, 2, 0, tzinfo=UTC)
# Due clocks started 30 days before NOW: yellow, red and the escalation have all passed, so `due()`
# raises "escalated" (one alert per clock).
DUE_STARTED = NOW - timedelta(days=30)
# Open, not-due clocks started within the 12 hours before NOW: their next rung is days ahead.
OPEN_WINDOW_S = 12 * 3600
SIZES = (1_000, 10_000, 100_000, 1_000_000)
DUE_FIXED = 100
DUE_COUNTS = (10, 100, 1_000, 10_000)
OPEN_FIXED = 100_000


@dataclass(frozen=True, slots=True)
class Options:
    repeats: int
    vacuum: bool


class CountingSink:
    """An AlertSink that keeps nothing: the broker is not part of this measurement."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, events: Sequence[Envelope]) -> None:
        self.published += len(events)


@dataclass(slots=True)
class DueClocks:
    """Clocks that can be made due: when due they wait to raise "escalated"; when parked they have
    raised it already (fired 'escalated', next_check_at NULL), which is still an open clock."""

    ids: list[str] = field(default_factory=list)
    next_check: list[datetime] = field(default_factory=list)


@dataclass(slots=True)
class Timing:
    total_s: float
    recompute_s: float  # the provisional-deadline pass (once per process and calendar)
    batches_s: float  # claiming due clocks, raising, publishing, writing back


@dataclass(slots=True)
class Point:
    open_clocks: int
    due: int
    scans: list[Timing]
    load_s: float = 0.0

    def median(self, phase: str = "total_s") -> float:
        return median_ms([getattr(t, phase) for t in self.scans])


class PhaseTimer:
    """Times the scanner's two phases by wrapping its bound methods on the instance (measurement
    only: the scanner's code runs unchanged)."""

    def __init__(self, scanner: ClockScanner) -> None:
        self.spent: dict[str, float] = {"_recompute": 0.0, "_scan_batch": 0.0}
        for name in self.spent:
            setattr(scanner, name, self._timed(name, getattr(scanner, name)))

    def _timed(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args)
            finally:
                self.spent[name] += time.perf_counter() - started

        return timed

    def reset(self) -> None:
        self.spent = dict.fromkeys(self.spent, 0.0)


def open_rows(factory: ClockFactory, start: int, count: int) -> Iterator[dict[str, Any]]:
    for n, subject in enumerate(subjects("open", start, count), start):
        row = factory.row(factory.state(subject, NOW - timedelta(seconds=n % OPEN_WINDOW_S)), NOW)
        if row["next_check_at"] is None or row["next_check_at"] <= NOW:
            raise AssertionError(f"open clock {subject} would be due at {NOW}: {row['next_check_at']}")
        yield row


def due_rows(factory: ClockFactory, count: int, due: DueClocks) -> Iterator[dict[str, Any]]:
    for n, subject in enumerate(subjects("due", 0, count)):
        state = factory.state(subject, DUE_STARTED - timedelta(seconds=n))
        plan = engine.schedule(state, factory.rule, factory.rules, factory.calendar)
        settings = factory.settings
        actions = engine.due(state, factory.rule, plan, NOW, settings.grace, settings.reescalate_after)
        if [(a.kind, a.level) for a in actions] != [("raise", "escalated")]:
            raise AssertionError(f"due clock {subject} would do {actions}, not raise 'escalated'")
        parked = factory.fired_row(state, "escalated", NOW)
        if parked["next_check_at"] is not None:
            raise AssertionError(f"an escalated clock should have nothing left to check: {parked}")
        row = factory.row(state, NOW)
        due.ids.append(row["clock_id"])
        due.next_check.append(row["next_check_at"])
        yield row


async def make_due(conn: asyncpg.Connection, due: DueClocks, count: int, vacuum: bool) -> None:
    """The first `count` clocks due again (fired '', next_check_at in the past), the others parked."""
    fired = ["" if i < count else "escalated" for i in range(len(due.ids))]
    checks = [c if i < count else None for i, c in enumerate(due.next_check)]
    await conn.execute(
        """
        UPDATE clocks AS c SET fired = v.fired, next_check_at = v.next_check_at
        FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS v(clock_id, fired, next_check_at)
        WHERE c.clock_id = v.clock_id
        """,
        due.ids,
        fired,
        checks,
    )
    if vacuum:
        # Every scan then meets the same index: no dead versions left by the previous scan's updates.
        await conn.execute("VACUUM clocks")


def scanner_queries(calendar_version: str) -> dict[str, str]:
    """The two statements a scan runs per batch, built like ClockScanner builds them, as plain SQL."""
    t = clocks_table.c
    statements = {
        "recompute": select(clocks_table)
        .where(t.provisional, t.calendar_version != calendar_version)
        .limit(500)
        .with_for_update(skip_locked=True),
        "due": select(clocks_table)
        .where(t.next_check_at <= NOW)
        .order_by(t.next_check_at)
        .limit(500)
        .with_for_update(skip_locked=True),
    }
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return {
        name: str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        for name, stmt in statements.items()
    }


async def explain(conn: asyncpg.Connection, queries: dict[str, str]) -> dict[str, str]:
    """EXPLAIN ANALYZE of each query (in a transaction rolled back: the row locks go away)."""
    plans: dict[str, str] = {}
    for name, sql in queries.items():
        tr = conn.transaction()
        await tr.start()
        try:
            lines = [r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")]
        finally:
            await tr.rollback()
        plans[name] = "\n".join(lines)
    return plans


async def measure(db: Database, due: DueClocks, count: int) -> list[Timing]:
    """One warm-up scan, then `repeats` timed scans, each after making the same `count` clocks due."""
    timings: list[Timing] = []
    for i in range(db.opts.repeats + 1):
        await make_due(db.conn, due, count, db.opts.vacuum)
        before = db.sink.published
        db.phases.reset()
        started = time.perf_counter()
        result = await db.scanner.scan(NOW)
        elapsed = time.perf_counter() - started
        if result.raised != count or db.sink.published - before != count:
            raise AssertionError(f"scan raised {result.raised} alerts, expected {count}")
        if i:
            timings.append(Timing(elapsed, db.phases.spent["_recompute"], db.phases.spent["_scan_batch"]))
    return timings


class Database:
    """A fresh, migrated database with a scanner on it."""

    def __init__(self, factory: ClockFactory, opts: Options) -> None:
        self.factory = factory
        self.opts = opts
        self.url = ""
        self.sink = CountingSink()

    async def __aenter__(self) -> Database:
        self.url = await create_pg_database()
        self.engine = make_engine(self.url)
        await upgrade(self.engine)
        self.conn: asyncpg.Connection = await asyncpg.connect(asyncpg_dsn(self.url))
        f = self.factory
        self.scanner = ClockScanner(self.engine, f.rules, f.calendar, Directory.load(), f.settings, self.sink)
        self.phases = PhaseTimer(self.scanner)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.conn.close()
        await self.engine.dispose()
        await drop_pg_database(self.url)

    async def load(self, rows: Iterator[dict[str, Any]]) -> float:
        started = time.perf_counter()
        await copy_rows(self.conn, rows)
        await self.conn.execute("VACUUM ANALYZE clocks")
        return time.perf_counter() - started


async def open_clocks_series(
    factory: ClockFactory, sizes: Sequence[int], opts: Options, deadline: float
) -> tuple[list[Point], str, dict[str, str]]:
    points: list[Point] = []
    note = ""
    async with Database(factory, opts) as db:
        due = DueClocks()
        loaded = 0
        load_rate = 0.0  # seconds per row, from what was loaded so far
        for size in sizes:
            add = size - loaded - (0 if loaded else DUE_FIXED)
            expected = time.monotonic() + add * load_rate * 1.3 + 30
            if points and expected > deadline:
                note = f"stopped before {size:,} open clocks: loading them would overrun the time budget"
                break
            rows = open_rows(factory, loaded, add)
            load_s = await db.load(rows if loaded else _chain(due_rows(factory, DUE_FIXED, due), rows))
            load_rate = load_s / (add + (0 if loaded else DUE_FIXED))
            loaded = size
            point = Point(size, DUE_FIXED, await measure(db, due, DUE_FIXED), load_s)
            points.append(point)
            print(f"  {size:>9,} open: {point.median():8.1f} ms (load {load_s:.1f} s)", file=sys.stderr)
        await make_due(db.conn, due, DUE_FIXED, opts.vacuum)
        plans = await explain(db.conn, scanner_queries(factory.calendar.version))
    return points, note, plans


async def due_clocks_series(
    factory: ClockFactory, counts: Sequence[int], open_clocks: int, opts: Options
) -> list[Point]:
    points: list[Point] = []
    if not counts:
        return points
    async with Database(factory, opts) as db:
        due = DueClocks()
        most = max(counts)
        load_s = await db.load(
            _chain(due_rows(factory, most, due), open_rows(factory, 0, open_clocks - most))
        )
        for count in counts:
            point = Point(open_clocks, count, await measure(db, due, count), load_s)
            points.append(point)
            print(f"  {count:>9,} due: {point.median():8.1f} ms", file=sys.stderr)
    return points


def _chain(*parts: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for part in parts:
        yield from part


def report(
    open_points: list[Point], note: str, due_points: list[Point], plans: dict[str, str], header: str
) -> str:
    base = open_points[0]
    out = [header, "", f"### Open clocks grow, {DUE_FIXED} due clocks per scan", ""]
    rows: list[Sequence[object]] = [
        (
            f"{p.open_clocks:,}",
            p.due,
            f"{p.median():.1f}",
            f"{min(t.total_s for t in p.scans) * 1000:.1f}–{max(t.total_s for t in p.scans) * 1000:.1f}",
            f"{p.median() / base.median():.2f}",
            f"{p.median('recompute_s'):.1f}",
            f"{p.median('batches_s'):.1f}",
            f"{p.median('batches_s') / base.median('batches_s'):.2f}",
            f"{p.load_s:.1f}",
        )
        for p in open_points
    ]
    headers = [
        "open clocks",
        "due",
        "scan ms (median)",
        "min–max ms",
        "scan × base",
        "recompute phase ms",
        "due-clock phase ms",
        "due phase × base",
        "COPY + VACUUM ANALYZE s",
    ]
    out += [table(headers, rows), ""]
    out.append(
        f"Baseline ('× base'): the {base.open_clocks:,}-clock point, measured in this run. The recompute "
        "phase is `ClockScanner._recompute` (provisional deadlines), the due-clock phase is the "
        "`_scan_batch` loop."
    )
    if note:
        out += ["", f"Note: {note}."]
    if due_points:
        first = due_points[0]
        out += ["", f"### Due clocks grow, {first.open_clocks:,} open clocks", ""]
        rows = []
        for prev, p in zip([None, *due_points[:-1]], due_points, strict=True):
            marginal = "" if prev is None else f"{(p.median() - prev.median()) / (p.due - prev.due):.3f}"
            rows.append(
                (
                    f"{p.open_clocks:,}",
                    f"{p.due:,}",
                    f"{p.median():.1f}",
                    f"{p.median() / first.median():.2f}",
                    f"{p.median() / p.due:.3f}",
                    marginal,
                    f"{p.median('recompute_s'):.1f}",
                )
            )
        headers = [
            "open clocks",
            "due",
            "scan ms (median)",
            "× base",
            "ms per due clock",
            "marginal ms per extra due clock",
            "recompute phase ms",
        ]
        out += [table(headers, rows), ""]
        out.append(
            f"Baseline ('× base'): {first.due:,} due clocks, measured in this run. Marginal cost: the "
            "difference to the row above divided by the extra due clocks."
        )
    out += ["", f"### Plans of the scanner's statements at {open_points[-1].open_clocks:,} open clocks", ""]
    for name, plan in plans.items():
        out += [f"{name}:", "", "```", plan, "```", ""]
    return "\n".join(out)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="open clocks per step")
    parser.add_argument(
        "--due", type=int, nargs="*", default=list(DUE_COUNTS), help="due clocks per step (none: skip)"
    )
    parser.add_argument("--open-fixed", type=int, default=OPEN_FIXED, help="open clocks in the due series")
    parser.add_argument("--repeats", type=int, default=9, help="timed scans per point (median reported)")
    parser.add_argument("--budget-s", type=float, default=420, help="stop growing before this is overrun")
    parser.add_argument("--no-vacuum", action="store_true", help="do not VACUUM between scans")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    deadline = time.monotonic() + args.budget_s
    factory = ClockFactory.load()
    opts = Options(args.repeats, not args.no_vacuum)
    conn = await asyncpg.connect(PG_DSN)
    try:
        host = machine(str(await conn.fetchval("SHOW server_version")))
    finally:
        await conn.close()
    started = time.monotonic()
    print("due clocks series", file=sys.stderr)
    due_points = await due_clocks_series(factory, args.due, args.open_fixed, opts)
    print("open clocks series", file=sys.stderr)
    open_points, note, plans = await open_clocks_series(factory, args.sizes, opts, deadline)
    header = (
        f"## Clock scan cost\n\nMachine: {host}. Median of {args.repeats} scans after one "
        f"warm-up; {'VACUUM' if opts.vacuum else 'no VACUUM'} between scans. Run took "
        f"{time.monotonic() - started:.0f} s."
    )
    print(report(open_points, note, due_points, plans, header))


if __name__ == "__main__":
    asyncio.run(main())

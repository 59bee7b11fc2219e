"""`liandong projections rebuild NAME` on a live store: how long it takes against the full replay, how
long the live worker is held, and what the API's readers notice.

    .venv/bin/python -m bench.shadow_rebuild                  # ~7 min: load a year, 2 runs of each
    .venv/bin/python -m bench.shadow_rebuild --runs 1 --names all

**The store** is the one of `bench.analysis_api`: a real hub (broker, PostgreSQL, `liandong api`,
`liandong worker`) holding a simulated year of Panyu published by `liandong simulate`.

**Load during the whole measurement**, so that every phase runs under the same conditions:

- a writer sends `--rate` events a second (default 10, one event per gateway request, from
  bench/workload.py's mix, dated December 2022) through `POST /v1/events`. Every event is timed from
  the gateway's 202 to its row in `event_history` (polled every `--poll-ms`, 10 ms): the live path's
  round trip.
- a reader polls `GET /v1/analysis/overview` and `GET /v1/cases` (district viewer) in turn, one
  request every `--read-every-ms` (200 ms), and times each answer.
- a sampler asks PostgreSQL every `--sample-ms` (10 ms) for the sum of the worker's checkpoint offsets
  (it moves when a worker batch commits) and for the locks on `public.projection_checkpoints`: the
  rebuild's EXCLUSIVE lock granted, and any lock request waiting for it (the worker's next batch).

**Phases**, repeated `--runs` times after a quiet window of `--quiet-s` (the "before"):

1. the full replay, `liandong rebuild`, into a new PostgreSQL database (the baseline: same topics,
   same machine, same load; the database is dropped after);
2. `liandong projections rebuild NAME` for each `--names` (default `case_registry` then `all`), with
   `--gap-s` of quiet between phases.

**From outside the rebuild**, the worker's pause is read three ways: how long the EXCLUSIVE lock was
seen granted; the longest time between two worker commits (against the same figure before); and the
writer's slowest round trip. The rebuild's own summary line ("live projectors paused … s") is
reported beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp

from bench.analysis_api import DISTRICT, Year, load_year
from bench.clock_rows import table
from bench.hub_processes import Child, Gateway, Hub, bench_connection, machine_line, say
from bench.latency import Visibility
from bench.workload import CN, Request, Workload, body, requests
from tests.support import create_pg_database, drop_pg_database

FULL = "full replay"
SHADOW = re.compile(
    r"rebuilt (?P<names>.+?): (?P<records>[\d,]+) records replayed \((?P<events>[\d,]+) events\) in "
    r"(?P<seconds>[\d.]+) s, (?P<rounds>\d+) round\(s\); live projectors paused (?P<paused>[\d.]+) s "
    r"(?:for the last |\(catch-up of )(?P<last>[\d,]+)"
)
SWAPPED = re.compile(r"^\s+(?P<table>\w+): (?P<written>[\d,]+) written, (?P<deleted>[\d,]+) deleted")
DONE = re.compile(
    r"rebuilt: (?P<records>[\d,]+) records in (?P<seconds>[\d.]+) s, (?P<applied>[\d,]+) applied"
)
READS = ("/v1/analysis/overview", "/v1/cases")
REBUILD_TIMEOUT_S = 900.0


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def pct(values: Sequence[float], q: float) -> float:
    data = sorted(values)
    return data[max(0, math.ceil(q * len(data)) - 1)] if data else float("nan")


@dataclass
class Window:
    """One phase: its name and the wall times (perf_counter) it ran between."""

    name: str
    kind: str  # before, full, shadow, gap
    start: float
    end: float = 0.0
    seconds: float = 0.0  # the command's own figure (its summary line)
    records: int = 0
    rounds: int = 0
    paused_s: float = 0.0
    paused_records: int = 0
    written: dict[str, int] = field(default_factory=dict)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def wall_s(self) -> float:
        return self.end - self.start

    def holds(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass
class Samples:
    """What the three background tasks saw, each stamped with perf_counter."""

    reads: list[tuple[float, str, float, int]] = field(default_factory=list)  # t, path, ms, status
    commits: list[float] = field(default_factory=list)  # a worker commit first seen
    exclusive: list[float] = field(default_factory=list)  # the rebuild's lock seen granted
    waiting: list[float] = field(default_factory=list)  # a lock request on the table seen waiting
    sample_ms: list[float] = field(default_factory=list)


class Background:
    """The writer, the reader and the sampler, until `stop`."""

    def __init__(self, hub: Hub, args: argparse.Namespace) -> None:
        self.hub = hub
        self.args = args
        self.samples = Samples()
        self.vis = Visibility(hub.dsn, "event_history", args.poll_ms)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        total = int(self.args.rate * self.args.max_minutes * 60)
        start = datetime(2022, 12, 20, 9, 0, tzinfo=CN)
        reqs = [
            Request(unit, body(events), tuple(e["id"] for e in events))
            for unit, events in requests(Workload(self.args.seed, start).events(), total, 1)
        ]
        self._tasks = [
            asyncio.create_task(self.vis.run(self.hub.check_alive)),
            asyncio.create_task(self._write(reqs)),
            asyncio.create_task(self._read()),
            asyncio.create_task(self._sample()),
        ]

    def check(self) -> None:
        self.hub.check_alive()
        for task in self._tasks:
            if task.done():
                task.result()  # the task's failure, or:
                raise RuntimeError("a background task stopped early")

    async def stop(self) -> None:
        self._stop.set()
        self.vis.stop()
        await asyncio.gather(*self._tasks)

    async def _write(self, reqs: Sequence[Request]) -> None:
        tick = 1.0 / self.args.rate
        pending: set[asyncio.Task[None]] = set()
        async with Gateway(self.hub, connections=8) as gateway:

            async def one(r: Request) -> None:
                self.vis.sent(r.ids)
                await gateway.post(r.unit, r.body)
                self.vis.acknowledged(r.ids, time.perf_counter())

            began = time.perf_counter()
            for i, r in enumerate(reqs):
                if self._stop.is_set():
                    break
                await asyncio.sleep(max(0.0, began + i * tick - time.perf_counter()))  # the schedule
                task = asyncio.create_task(one(r))
                pending.add(task)
                task.add_done_callback(pending.discard)
            else:
                raise RuntimeError("the writer ran out of events: raise --max-minutes")
            await asyncio.gather(*pending)

    async def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self.hub.keys[DISTRICT]}"}
        connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=2)
        async with aiohttp.ClientSession(self.hub.api_url, connector=connector, headers=headers) as session:
            i = 0
            every = self.args.read_every_ms / 1000
            while not self._stop.is_set():
                path = READS[i % len(READS)]
                i += 1
                started = time.perf_counter()
                async with session.get(path) as response:
                    await response.read()
                    status = response.status
                ms = (time.perf_counter() - started) * 1000
                self.samples.reads.append((started, path, ms, status))
                await asyncio.sleep(max(0.0, every - ms / 1000))  # the reader's cadence

    async def _sample(self) -> None:
        conn = await bench_connection(self.hub.dsn)
        try:
            oid = await conn.fetchval("SELECT 'public.projection_checkpoints'::regclass::oid")
            query = (
                'SELECT (SELECT coalesce(sum("offset"), 0) FROM public.projection_checkpoints '
                "WHERE consumer = 'hub'),"
                " (SELECT count(*) FROM pg_locks WHERE relation = $1 AND mode = 'ExclusiveLock' AND granted),"
                " (SELECT count(*) FROM pg_locks WHERE relation = $1 AND NOT granted)"
            )
            last = None
            every = self.args.sample_ms / 1000
            while not self._stop.is_set():
                started = time.perf_counter()
                offsets, exclusive, waiting = await conn.fetchrow(query, oid)
                seen = time.perf_counter()
                self.samples.sample_ms.append((seen - started) * 1000)
                if last is not None and offsets != last:
                    self.samples.commits.append(seen)
                last = offsets
                if exclusive:
                    self.samples.exclusive.append(seen)
                if waiting:
                    self.samples.waiting.append(seen)
                await asyncio.sleep(max(0.0, every - (seen - started)))  # the sampler's cadence
        finally:
            await conn.close()


# ---------------------------------------------------------------------------------------------------
# The commands


async def run_command(child: Child, check: Background) -> str:
    child.start()
    assert child.process is not None
    started = time.perf_counter()
    while child.process.poll() is None:
        check.check()
        if time.perf_counter() - started > REBUILD_TIMEOUT_S:
            child.stop()
            raise TimeoutError(f"{child.name} ran for more than {REBUILD_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)  # the command's end is a phase boundary: a fine poll
    out = child.log.read_text(errors="replace")
    if child.process.returncode != 0:
        raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{out[-3000:]}")
    return out


async def full_replay(year: Year, bg: Background, i: int) -> Window:
    url = await create_pg_database()
    try:
        env = {**year.hub.env(), "LIANDONG_DATABASE_URL": url, "LIANDONG_LOG_LEVEL": "WARNING"}
        child = Child(f"full-{i}", ["services.cli", "rebuild"], env, year.tmp / f"full-{i}.log")
        window = Window(FULL, "full", time.perf_counter(), load=os.getloadavg())
        out = await run_command(child, bg)
        window.end = time.perf_counter()
        done = DONE.search(out)
        if done is None:
            raise RuntimeError(f"no summary line from the full replay:\n{out[-2000:]}")
        window.seconds, window.records = float(done["seconds"]), _int(done["records"])
        return window
    finally:
        await drop_pg_database(url)


async def shadow_rebuild(year: Year, bg: Background, name: str, i: int) -> Window:
    command = ["services.cli", "projections", "rebuild", name, "--progress-interval", "5"]
    child = Child(f"{name}-{i}", command, year.hub.env(), year.tmp / f"shadow-{name}-{i}.log")
    window = Window(f"rebuild {name}", "shadow", time.perf_counter(), load=os.getloadavg())
    out = await run_command(child, bg)
    window.end = time.perf_counter()
    found = SHADOW.search(out)
    if found is None:
        raise RuntimeError(f"no summary line from the rebuild of {name}:\n{out[-2000:]}")
    window.seconds, window.records = float(found["seconds"]), _int(found["records"])
    window.rounds, window.paused_s = int(found["rounds"]), float(found["paused"])
    window.paused_records = _int(found["last"])
    for line in out.splitlines():
        swapped = SWAPPED.match(line)
        if swapped:
            window.written[swapped["table"]] = _int(swapped["written"]) + _int(swapped["deleted"])
    return window


async def quiet(name: str, seconds: float, bg: Background) -> Window:
    window = Window(name, "gap", time.perf_counter(), load=os.getloadavg())
    deadline = window.start + seconds
    while time.perf_counter() < deadline:
        bg.check()
        await asyncio.sleep(0.2)  # a quiet window: nothing to wait for but time
    window.end = time.perf_counter()
    return window


# ---------------------------------------------------------------------------------------------------
# Reading the samples


def spans(times: Sequence[float], max_gap_s: float) -> list[tuple[float, float]]:
    """Runs of samples no more than `max_gap_s` apart, as (first, last)."""
    out: list[tuple[float, float]] = []
    for t in sorted(times):
        if out and t - out[-1][1] <= max_gap_s:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def within(times: Sequence[float], w: Window) -> list[float]:
    return [t for t in times if w.holds(t)]


def gaps(times: Sequence[float], w: Window) -> list[float]:
    mine = within(times, w)
    return [b - a for a, b in itertools.pairwise(mine)]


def longest_span_ms(times: Sequence[float], w: Window, sample_s: float) -> float:
    # Samples are `sample_s` apart plus the query: a run is split only where samples are clearly missing.
    found = spans(within(times, w), 3 * sample_s + 0.05)
    return max(((b - a) * 1000 for a, b in found), default=0.0)


def round_trips(bg: Background, w: Window) -> list[float]:
    vis = bg.vis
    return [(vis.seen[i] - t) * 1000 for i, t in vis.acked.items() if i in vis.seen and w.holds(t)]


def reads(bg: Background, w: Window, path: str) -> list[float]:
    return [ms for t, p, ms, _ in bg.samples.reads if p == path and w.holds(t)]


def _ms(v: float) -> str:
    return f"{v:,.0f}" if v == v else "—"  # NaN


def three(values: Sequence[float]) -> str:
    return f"{_ms(pct(values, 0.5))} / {_ms(pct(values, 0.99))} / {_ms(max(values, default=float('nan')))}"


def report(header: str, windows: list[Window], bg: Background, args: argparse.Namespace) -> str:
    before = next(w for w in windows if w.name == "before")
    fulls = [w for w in windows if w.kind == "full"]
    base_wall = statistics.median(w.wall_s for w in fulls)
    base_replay = statistics.median(w.seconds for w in fulls)
    sample_s = args.sample_ms / 1000
    named = [FULL, *(f"rebuild {n}" for n in args.names)]

    durations: list[Sequence[object]] = []
    for name in named:
        mine = [w for w in windows if w.name == name]
        wall = statistics.median(w.wall_s for w in mine)
        own = statistics.median(w.seconds for w in mine)
        durations.append(
            (
                f"`{name}`" if name == FULL else f"`liandong projections {name}`",
                len(mine),
                " / ".join(f"{w.wall_s:.1f}" for w in mine),
                f"{wall / base_wall:.2f}",
                " / ".join(f"{w.seconds:.1f}" for w in mine),
                f"{own / base_replay:.2f}",
                " / ".join(f"{w.records:,}" for w in mine),
                " / ".join(str(w.rounds) for w in mine) if name != FULL else "—",
                "; ".join(", ".join(f"{t} {n:,}" for t, n in w.written.items()) or "none" for w in mine)
                if name != FULL
                else "—",
                " / ".join("/".join(f"{x:.1f}" for x in w.load[:1]) for w in mine),
            )
        )
    duration_table = table(
        [
            "command",
            "runs",
            "wall s (each run)",
            "× full replay (wall, median)",
            "its own figure s",
            "× full replay (own figure)",
            "records replayed",
            "rounds",
            "rows written or deleted by the swap",
            "load average at start",
        ],
        durations,
    )

    g = [x * 1000 for x in gaps(bg.samples.commits, before)]
    trips = round_trips(bg, before)
    pauses: list[Sequence[object]] = [
        ("before (no rebuild)", "—", "—", "—", three(g), three(trips), len(trips))
    ]
    for w in windows:
        if w.kind not in ("full", "shadow"):
            continue
        g = [x * 1000 for x in gaps(bg.samples.commits, w)]
        trips = round_trips(bg, w)
        pauses.append(
            (
                w.name,
                f"{w.paused_s * 1000:,.0f} ({w.paused_records:,} records)" if w.kind == "shadow" else "—",
                _ms(longest_span_ms(bg.samples.exclusive, w, sample_s)) if w.kind == "shadow" else "—",
                _ms(longest_span_ms(bg.samples.waiting, w, sample_s)) if w.kind == "shadow" else "—",
                three(g),
                three(trips),
                len(trips),
            )
        )
    pause_table = table(
        [
            "phase",
            "paused, the rebuild's own figure ms",
            "EXCLUSIVE lock seen held ms (≥)",
            "a lock request seen waiting ms (≥)",
            "time between worker commits ms (p50 / p99 / max)",
            "202 → visible ms (p50 / p99 / max)",
            "events timed",
        ],
        pauses,
    )

    read_rows: list[Sequence[object]] = []
    for path in READS:
        base = reads(bg, before, path)
        b50, b99 = pct(base, 0.5), pct(base, 0.99)
        read_rows.append(
            (
                f"`{path}`",
                "before",
                len(base),
                _ms(b50),
                _ms(b99),
                _ms(max(base, default=float("nan"))),
                "1.00",
            )
        )
        for name in named:
            mine = [x for w in windows if w.name == name for x in reads(bg, w, path)]
            read_rows.append(
                (
                    f"`{path}`",
                    f"during {name}",
                    len(mine),
                    _ms(pct(mine, 0.5)),
                    _ms(pct(mine, 0.99)),
                    _ms(max(mine, default=float("nan"))),
                    f"{pct(mine, 0.5) / b50:.2f} / {pct(mine, 0.99) / b99:.2f}",
                )
            )
    bad = sorted({s for _, _, _, s in bg.samples.reads if s != 200})
    read_table = table(
        ["endpoint", "phase", "requests", "p50 ms", "p99 ms", "max ms", "× before (p50 / p99)"],
        read_rows,
    )
    notes = [
        f"Reader answers other than 200: {bad or 'none'} of {len(bg.samples.reads):,}.",
        f"Sampler query: median {pct(bg.samples.sample_ms, 0.5):.1f} ms, every {args.sample_ms} ms; "
        f"visibility poll every {args.poll_ms} ms.",
    ]
    return "\n".join(
        [
            header,
            "",
            "**Duration**",
            "",
            duration_table,
            "",
            "**The live worker's pause**",
            "",
            pause_table,
            "",
            "**Readers during the rebuilds** (district viewer)",
            "",
            read_table,
            "",
            *notes,
        ]
    )


# ---------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2, help="runs of each command, alternated (default 2)")
    parser.add_argument(
        "--names",
        nargs="+",
        default=["case_registry", "all"],
        help="projections to rebuild (default case_registry all)",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="events/s the writer sends (default 10)")
    parser.add_argument("--read-every-ms", type=float, default=200.0, help="the reader's cadence (200)")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="the visibility poll (10)")
    parser.add_argument("--sample-ms", type=float, default=10.0, help="the lock and commit sampler (10)")
    parser.add_argument("--quiet-s", type=float, default=30.0, help="the 'before' window (30)")
    parser.add_argument("--gap-s", type=float, default=8.0, help="quiet between phases (8)")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="events prepared for the writer")
    parser.add_argument("--seed", type=int, default=2022, help="the simulator's seed (default 2022)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic (default 6)")
    parser.add_argument("--no-vacuum", action="store_true", help="skip VACUUM ANALYZE after the load")
    return parser


async def measure(args: argparse.Namespace) -> str:
    begun = time.monotonic()
    host = await machine_line()
    with tempfile.TemporaryDirectory(prefix="liandong-bench-shadow-") as tmp:
        year = await load_year(args, Path(tmp))
        try:
            bg = Background(year.hub, args)
            await bg.start()
            windows: list[Window] = []
            try:
                say(f"before: {args.quiet_s:.0f} s")
                windows.append(await quiet("before", args.quiet_s, bg))
                windows[-1].name = "before"
                for i in range(args.runs):
                    say(f"run {i + 1}: full replay")
                    windows.append(await full_replay(year, bg, i))
                    say(f"  {windows[-1].wall_s:.1f} s")
                    for name in args.names:
                        windows.append(await quiet("gap", args.gap_s, bg))
                        say(f"run {i + 1}: rebuild {name}")
                        windows.append(await shadow_rebuild(year, bg, name, i))
                        w = windows[-1]
                        say(f"  {w.wall_s:.1f} s, paused {w.paused_s:.2f} s for {w.paused_records:,} records")
                    windows.append(await quiet("gap", args.gap_s, bg))
            finally:
                await bg.stop()
            load = "/".join(f"{x:.2f}" for x in os.getloadavg())
            header = (
                f"## Shadow rebuild\n\nMachine: {host}; load average {load} at the end. {year.describe()} "
                f"Writer {args.rate:g} events/s, reader every {args.read_every_ms:g} ms. "
                f"Run took {time.monotonic() - begun:.0f} s."
            )
            return report(header, windows, bg, args)
        finally:
            await year.hub.stop()


async def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    print(await measure(args))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

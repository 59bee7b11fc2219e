"""Delay from a clock threshold passing to its alert being visible in the `alerts` table (the inbox),
end to end: the hub's real worker process, the embedded broker (Tansu) and PostgreSQL.

    .venv/bin/python -m bench.alert_latency            # prints Markdown
    .venv/bin/python -m bench.alert_latency --help

For each configuration (scan interval × open clocks) the benchmark starts a fresh broker and a fresh
database, loads the open clocks with COPY (rows built by `state_row`, rule `transfer.acceptance`),
and starts `python -m services.cli worker` with `LIANDONG_TIME_SOURCE=file:…`. Clocks are loaded in
cohorts of 100 whose yellow thresholds are a few minutes apart; every other clock is weeks away. A
round moves the time file just past the next cohort's threshold, notes the wall time, and polls
PostgreSQL every 20 ms until all 100 alerts are in `alerts`. Visibility there is the full loop:
scan → publish (acks=all) → the worker's consumer → alert projection commit.

Before each round the benchmark sleeps a fraction of the scan interval, a different one per round
spread evenly over (0, 1), so that the moment the threshold passes falls at every point of the
scanner's timer, as it does in production, and every configuration sees the same spread.

Each configuration runs `--repeats` times (fresh broker, database and worker each time) with
`--rounds` measured rounds after one warm-up round; the rounds are pooled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx

from bench.clock_rows import ClockFactory, asyncpg_dsn, copy_rows, machine, subjects, table
from projections.db import make_engine
from projections.migrate import upgrade
from services.embedded_broker import EmbeddedBroker, free_port
from tests.support import PG_DSN, REPO, create_pg_database, drop_pg_database

CN = timezone(timedelta(hours=8))
# Cohort 0 starts on a Monday morning in a year with official calendar data; cohort k starts k × STEP
# later, so its yellow threshold (3/4 of the way to the deadline, Thursday end of day) comes later too.
COHORT_START = datetime(2025, 6, 16, 9, 0, tzinfo=CN)
STEP = timedelta(minutes=10)
# Every other open clock starts 30 days later: nothing of it is due during the benchmark.
OTHERS_START = COHORT_START + timedelta(days=30)
COHORT = 100
SIZES = (1_000, 10_000)
INTERVALS_MS = (200, 1_000)
POLL_S = 0.02
READY_TIMEOUT_S = 120.0
ROUND_TIMEOUT_S = 30.0


@dataclass(slots=True)
class Round:
    scanned_s: float  # all 100 clocks marked fired in `clocks` (the scan committed, after the broker acked)
    first_s: float
    median_s: float
    last_s: float


@dataclass(slots=True)
class Config:
    interval_ms: int
    open_clocks: int
    rounds: list[Round] = field(default_factory=list)
    startups_s: list[float] = field(default_factory=list)

    def median(self, what: str) -> float:
        return float(statistics.median(getattr(r, what) for r in self.rounds)) * 1000

    def inbox_after_commit(self) -> float:
        """Median ms from the scan's commit to the last alert in the inbox: the consumer side."""
        return float(statistics.median(r.last_s - r.scanned_s for r in self.rounds)) * 1000


@dataclass(frozen=True, slots=True)
class Plan:
    """The clocks to load, the cohorts' clock ids, and the time to write for each round."""

    rows: list[dict[str, Any]]
    cohorts: list[list[str]]
    moments: list[datetime]


def plan_clocks(factory: ClockFactory, open_clocks: int, rounds: int) -> Plan:
    rows: list[dict[str, Any]] = []
    cohorts: list[list[str]] = []
    moments: list[datetime] = []
    after_yellow: list[datetime] = []
    names = subjects("cohort", 0, rounds * COHORT)
    for k in range(rounds):
        started = COHORT_START + k * STEP
        states = [factory.state(next(names), started) for _ in range(COHORT)]
        cohort = [factory.row(s, COHORT_START) for s in states]
        rows += cohort
        cohorts.append([r["clock_id"] for r in cohort])
        moments.append(max(r["next_check_at"] for r in cohort) + timedelta(seconds=1))
        after_yellow += [factory.fired_row(s, "yellow", COHORT_START)["next_check_at"] for s in states]
    others = [
        factory.row(factory.state(subject, OTHERS_START + timedelta(seconds=i)), COHORT_START)
        for i, subject in enumerate(subjects("other", 0, open_clocks - len(rows)))
    ]
    rows += others
    # Round k must make exactly cohort k due: the cohorts before it wait for red, the ones after it
    # and all the others for later moments.
    for k, moment in enumerate(moments):
        later = min(
            (r["next_check_at"] for r in rows[(k + 1) * COHORT :]), default=datetime.max.replace(tzinfo=CN)
        )
        if not later > moment > max(r["next_check_at"] for r in rows[k * COHORT : (k + 1) * COHORT]):
            raise AssertionError(f"round {k}: the moment {moment} does not single out cohort {k}")
        if not min(after_yellow) > moment:
            raise AssertionError(f"round {k}: an earlier cohort would reach red at {moment}")
    return Plan(rows, cohorts, moments)


def write_now(path: Path, moment: datetime) -> None:
    """Replace the time file atomically: the worker never reads half a timestamp."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(moment.isoformat(), encoding="utf-8")
    os.replace(tmp, path)


class Worker:
    """`python -m services.cli worker` as a child process, with its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._env = {**os.environ, **env, "LIANDONG_WORKER_WEB_PORT": str(self.port)}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "worker"],
                cwd=REPO,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, timeout_s: float) -> None:
        """/metrics answers, and the projector has projected something (the startup directory sync):
        the consumer group is joined and consuming."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while True:
                self.check_alive()
                try:
                    page = (await client.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2)).text
                    if _projected(page) > 0:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker was not ready after {timeout_s}s; see {self.log}")
                await asyncio.sleep(0.1)  # polling a process that is starting

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the worker exited with {self._process.returncode}:\n{tail}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _projected(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("liandong_events_projected_total{")
    )


async def measure_round(conn: asyncpg.Connection, now_file: Path, moment: datetime, ids: list[str]) -> Round:
    """Move time past the cohort's threshold, then poll until all its alerts are in the inbox."""
    wanted = {"first": 1, "median": len(ids) // 2, "last": len(ids)}
    seen: dict[str, float] = {}
    write_now(now_file, moment)
    t0 = time.perf_counter()
    while "last" not in seen:
        polled = time.perf_counter()
        fired, visible = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM clocks WHERE clock_id = ANY($1::text[]) AND fired <> ''),
                   (SELECT count(*) FROM alerts WHERE clock_id = ANY($1::text[]))
            """,
            ids,
        )
        at = time.perf_counter() - t0
        if fired == len(ids):
            seen.setdefault("scanned", at)
        for name, count in wanted.items():
            if visible >= count:
                seen.setdefault(name, at)
        if "last" in seen:
            break
        if at > ROUND_TIMEOUT_S:
            raise TimeoutError(f"only {visible} of {len(ids)} alerts visible after {ROUND_TIMEOUT_S}s")
        await asyncio.sleep(max(0.0, POLL_S - (time.perf_counter() - polled)))  # the polling cadence
    return Round(seen.get("scanned", seen["last"]), seen["first"], seen["median"], seen["last"])


async def run_config(
    factory: ClockFactory, config: Config, phases: Sequence[float], extra_env: dict[str, str]
) -> None:
    """Start everything afresh, then one warm-up round and one measured round per phase."""
    interval_ms, open_clocks = config.interval_ms, config.open_clocks
    plan = plan_clocks(factory, open_clocks, len(phases) + 1)
    broker = EmbeddedBroker()
    url = await create_pg_database()
    worker: Worker | None = None
    with tempfile.TemporaryDirectory(prefix="liandong-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            broker.start()
            engine = make_engine(url)
            try:
                await upgrade(engine)
            finally:
                await engine.dispose()
            conn = await asyncpg.connect(asyncpg_dsn(url))
            try:
                await copy_rows(conn, iter(plan.rows))
                await conn.execute("VACUUM ANALYZE clocks")
                now_file = tmp / "now.txt"
                write_now(now_file, COHORT_START)
                worker = Worker(
                    {
                        "LIANDONG_KAFKA_BOOTSTRAP": broker.bootstrap,
                        "LIANDONG_DATABASE_URL": url,
                        "LIANDONG_DATA_DIR": str(tmp / "data"),
                        "LIANDONG_TIME_SOURCE": f"file:{now_file}",
                        "LIANDONG_CLOCK_SCAN_INTERVAL_MS": str(interval_ms),
                        "LIANDONG_ALERT_GRACE_S": "0",
                        "LIANDONG_BROKER_SESSION_TIMEOUT_S": "10",
                        **extra_env,
                    },
                    tmp / "worker.log",
                )
                started = time.monotonic()
                worker.start()
                await worker.ready(READY_TIMEOUT_S)
                config.startups_s.append(time.monotonic() - started)
                waits = [0.0, *phases]
                for k, (moment, ids) in enumerate(zip(plan.moments, plan.cohorts, strict=True)):
                    await asyncio.sleep(waits[k] * interval_ms / 1000)  # where in the timer's period
                    result = await measure_round(conn, now_file, moment, ids)
                    worker.check_alive()
                    print(
                        f"    round {k}{' (warm-up)' if not k else ''}: scan committed "
                        f"{result.scanned_s * 1000:.0f} ms, alerts {result.first_s * 1000:.0f} / "
                        f"{result.median_s * 1000:.0f} / {result.last_s * 1000:.0f} ms",
                        file=sys.stderr,
                    )
                    if k:
                        config.rounds.append(result)
                total = await conn.fetchval("SELECT count(*) FROM alerts")
                if total != len(plan.cohorts) * COHORT:
                    raise AssertionError(
                        f"{total} alerts in the inbox, expected {len(plan.cohorts) * COHORT}"
                    )
            finally:
                await conn.close()
        finally:
            if worker is not None:
                worker.stop()
            broker.stop()
            await drop_pg_database(url)


def report(configs: list[Config], header: str) -> str:
    smallest = min(c.open_clocks for c in configs)
    baselines = {c.interval_ms: c for c in configs if c.open_clocks == smallest}
    rows: list[Sequence[object]] = []
    for c in configs:
        base = baselines[c.interval_ms]
        ratios = " / ".join(f"{c.median(w) / base.median(w):.2f}" for w in ("first_s", "median_s", "last_s"))
        rows.append(
            (
                c.interval_ms,
                f"{c.open_clocks:,}",
                len(c.rounds),
                f"{c.median('scanned_s'):.0f}",
                f"{c.median('first_s'):.0f}",
                f"{c.median('median_s'):.0f}",
                f"{c.median('last_s'):.0f}",
                f"{max(r.last_s for r in c.rounds) * 1000:.0f}",
                ratios,
                f"{c.inbox_after_commit():.0f}",
            )
        )
    headers = [
        "scan interval ms",
        "open clocks",
        "rounds",
        "scan committed ms",
        "first alert ms",
        "median alert ms",
        "last alert ms",
        "worst last ms",
        "× base (first / median / last)",
        "commit → inbox ms",
    ]
    out = [header, "", table(headers, rows), ""]
    out.append(
        "Figures are medians over the rounds of the wall time from writing the time file to the poll "
        f"(every {POLL_S * 1000:.0f} ms) that first saw the event. 'scan committed': all {COHORT} clock "
        "rows show the alert fired (the scanner commits after the broker acknowledged the alerts). "
        "'commit → inbox': last alert minus scan committed, per round (broker fetch, the worker's "
        f"batching window, the projection's commit). Baseline ('× base'): {smallest:,} open clocks at "
        "the same scan interval, in this run."
    )
    out.append("")
    started = ", ".join(
        f"{c.interval_ms} ms / {c.open_clocks:,}: " + " and ".join(f"{s:.1f}" for s in c.startups_s)
        for c in configs
    )
    out.append(f"Worker start to ready (s): {started}")
    return "\n".join(out)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(SIZES), help="open clocks (smallest = baseline)"
    )
    parser.add_argument(
        "--intervals", type=int, nargs="+", default=list(INTERVALS_MS), help="scan interval ms"
    )
    parser.add_argument("--rounds", type=int, default=9, help="measured rounds per worker run")
    parser.add_argument("--repeats", type=int, default=2, help="worker runs per configuration")
    parser.add_argument(
        "--batch-within-ms",
        type=int,
        default=None,
        help="LIANDONG_BATCH_WITHIN_MS for the worker (default: the hub's)",
    )
    args = parser.parse_args(argv)
    if args.rounds * args.repeats < 5:
        parser.error("measure at least 5 rounds per configuration")
    if (args.rounds + 1) * COHORT > min(args.sizes):
        parser.error(f"{args.rounds} rounds and a warm-up need {(args.rounds + 1) * COHORT:,} clocks")
    factory = ClockFactory.load(grace=timedelta(0))  # the worker runs with LIANDONG_ALERT_GRACE_S=0
    conn = await asyncpg.connect(PG_DSN)
    try:
        host = machine(str(await conn.fetchval("SHOW server_version")))
    finally:
        await conn.close()
    extra = {} if args.batch_within_ms is None else {"LIANDONG_BATCH_WITHIN_MS": str(args.batch_within_ms)}
    total = args.rounds * args.repeats
    configs = {(i, n): Config(i, n) for i in args.intervals for n in sorted(args.sizes)}
    started = time.monotonic()
    for r in range(args.repeats):  # configurations interleaved, so that drift touches all alike
        for (interval, size), config in configs.items():
            phases = [(j * args.repeats + r + 0.5) / total for j in range(args.rounds)]
            print(f"  {interval} ms, {size:,} open clocks, run {r + 1}", file=sys.stderr)
            await run_config(factory, config, phases, extra)
    window = "the hub's default" if args.batch_within_ms is None else f"{args.batch_within_ms} ms"
    header = (
        f"## Alert latency, threshold to inbox\n\nMachine: {host}. {COHORT} alerts per round; "
        f"{args.repeats} worker runs × {args.rounds} rounds (after a warm-up round) per configuration; "
        f"worker batching window (LIANDONG_BATCH_WITHIN_MS): {window}. "
        f"Run took {time.monotonic() - started:.0f} s."
    )
    print(report(list(configs.values()), header))


if __name__ == "__main__":
    asyncio.run(main())

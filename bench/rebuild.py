"""Rebuild: replay archived events from the topics into fresh projections, and its memory.

    .venv/bin/python -m bench.rebuild                          # 1,000,000 events, 3 runs, Markdown
    .venv/bin/python -m bench.rebuild --events 10000 --runs 3 --partitions 1
    .venv/bin/python -m bench.rebuild --profile /tmp/prof      # py-spy the rebuild of run 1

Once per benchmark: a fresh embedded broker, every catalog topic with `--partitions` partitions, and
`--events` events of bench/workload.py's mix, validated and encoded as the gateway does, published
with a raw aiokafka producer (acks=all). That is the archive; it does not change between runs.

Each run, alternately, into a fresh PostgreSQL database:

- hub: the product command, `python -m services.rebuild` (the hub's real `Projector` and projections
  behind a lean aiokafka consumer), as a child process with LIANDONG_* settings. Its rate is events
  over the seconds it reports from its first fetch to its last commit (migrations and start-up are
  excluded, and reported apart). While it runs, this benchmark reads its VmRSS from
  /proc/<pid>/status at each of its progress lines (every 1% of the events) and every 0.5 s.
- baseline: the lean consumer of bench/lean.py over the same topics (getmany → fastavro → COPY and
  one merge + checkpoint per batch), in this process, from its first fetch to its last commit.
- worker (with `--worker`): `liandong worker` started on a fresh database, which reads the archive
  through faust into the same `Projector`; timed from the first event visible in `event_history` to
  the last (polled every 0.5 s), with LIANDONG_BATCH_MAX set to the rebuild's batch size. The
  difference to `hub` is faust's share of the live path.

Memory is flat when the rebuild's RSS grows less than 20% from 10% of the events (100,000 of
1,000,000) to the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from bench.clock_rows import asyncpg_dsn, table
from bench.hub_processes import (
    Child,
    CpuMeter,
    Profiler,
    bench_connection,
    catalog_topics,
    cpu_seconds,
    create_topics,
    machine_line,
    median,
    rss_kib,
    say,
    spread,
)
from bench.lean import LeanConsumer, writer_schemas
from bench.workload import publish_archive
from services.embedded_broker import EmbeddedBroker, free_port
from services.rebuild import DEFAULT_BATCH
from tests.support import REPO, create_migrated_pg_database, create_pg_database, drop_pg_database

PROGRESS = re.compile(r"^rebuild: ([\d,]+)/([\d,]+) records")
DONE = re.compile(r"^rebuilt: ([\d,]+) records in ([\d.]+) s, ([\d,]+) applied")
RSS_EVERY_S = 0.5


@dataclass
class Run:
    pipeline: str
    events: int
    seconds: float
    wall_s: float = 0.0  # the whole command, start-up and migrations included
    rss: list[tuple[int, int]] = field(default_factory=list)  # (records done, VmRSS kB)
    cpu_ms_per_k: dict[str, float] = field(default_factory=dict)  # CPU ms per 1,000 events

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def rss_at(self, records: int) -> int:
        """VmRSS at the first sample taken once `records` were done."""
        return next((kb for done, kb in self.rss if done >= records), self.rss[-1][1] if self.rss else 0)

    def growth(self, early: int) -> float:
        """RSS growth from `early` records to the end, as a fraction of the RSS at `early`."""
        base = self.rss_at(early)
        end = max(kb for done, kb in self.rss if done >= early)
        return (end - base) / base if base else 0.0


async def hub_run(bootstrap: str, args: argparse.Namespace, profiler: Profiler | None) -> Run:
    url = await create_pg_database()
    try:
        env = {
            **os.environ,
            "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
            "LIANDONG_DATABASE_URL": url,
            "LIANDONG_DATA_DIR": str(Path(args.tmp) / "rebuild-data"),
            "LIANDONG_LOG_LEVEL": "WARNING",
        }
        every = max(1, args.events // 100)
        command = [sys.executable, "-m", "services.rebuild", "--progress-every", str(every)]
        if args.batch:
            command += ["--batch", str(args.batch)]
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *command, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        if profiler is not None:
            profiler.record("rebuild", process.pid)
        run = Run("hub", args.events, 0.0)
        records = 0
        tail: list[str] = []
        conn = await bench_connection(asyncpg_dsn(url))
        # (records, rebuild CPU s) at the first and the latest progress line, and the CPU seconds of
        # each PostgreSQL backend serving the rebuild, as last seen (they exit with it).
        cpu_marks: list[tuple[int, float]] = []
        backends_first: dict[int, float] = {}
        backends_last: dict[int, float] = {}

        async def sample_cpu() -> None:
            with contextlib.suppress(OSError):
                mark = (records, cpu_seconds(process.pid))
                cpu_marks[:] = [cpu_marks[0], mark] if cpu_marks else [mark]
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            for row in rows:
                with contextlib.suppress(OSError):
                    used = cpu_seconds(int(row["pid"]))
                    backends_first.setdefault(int(row["pid"]), used)
                    backends_last[int(row["pid"])] = used

        async def sample_by_time() -> None:
            while process.returncode is None:
                try:
                    run.rss.append((records, rss_kib(process.pid)))
                except (OSError, RuntimeError):
                    return
                await asyncio.sleep(RSS_EVERY_S)  # the RSS sampling cadence

        sampler = asyncio.create_task(sample_by_time())
        assert process.stderr is not None
        assert process.stdout is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            tail = [*tail[-20:], line]
            match = PROGRESS.match(line)
            if match:
                records = int(match.group(1).replace(",", ""))
                with contextlib.suppress(OSError, RuntimeError):
                    run.rss.append((records, rss_kib(process.pid)))
                await sample_cpu()
        out = (await process.stdout.read()).decode()
        code = await process.wait()
        run.wall_s = time.perf_counter() - started
        await sampler
        await conn.close()
        if len(cpu_marks) == 2 and cpu_marks[1][0] > cpu_marks[0][0]:
            events = cpu_marks[1][0] - cpu_marks[0][0]
            run.cpu_ms_per_k = {
                "rebuild": 1e6 * (cpu_marks[1][1] - cpu_marks[0][1]) / events,
                "postgres": 1e6 * sum(backends_last[p] - backends_first[p] for p in backends_last) / events,
            }
        if profiler is not None:
            for name, summary in profiler.finish().items():
                say(f"--- py-spy {name}\n{summary}")
        done = DONE.search(out)
        if code != 0 or done is None:
            raise RuntimeError(f"the rebuild exited with {code}: {out}\n" + "\n".join(tail))
        run.seconds = float(done.group(2))
        applied = int(done.group(3).replace(",", ""))
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            stored = await conn.fetchval("SELECT count(*) FROM event_history")
        finally:
            await conn.close()
        if applied != args.events or stored != args.events:
            raise AssertionError(f"the rebuild applied {applied:,} and stored {stored:,} of {args.events:,}")
        return run
    finally:
        await drop_pg_database(url)


async def worker_run(bootstrap: str, args: argparse.Namespace) -> Run:
    """The live path over the same archive: `liandong worker` (faust) on a fresh database, timed from
    the first event visible to the last (its start-up and group join are excluded)."""
    url = await create_migrated_pg_database()
    env = {
        "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
        "LIANDONG_DATABASE_URL": url,
        "LIANDONG_DATA_DIR": str(Path(args.tmp) / "worker-data"),
        "LIANDONG_TOPIC_PARTITIONS": str(args.partitions),
        "LIANDONG_WORKER_WEB_PORT": str(free_port()),
        # The rebuild's batch size, so that the difference is faust and not the batch.
        "LIANDONG_BATCH_MAX": str(args.batch or DEFAULT_BATCH),
    }
    worker = Child("worker", ["services.cli", "worker"], env, Path(args.tmp) / "worker.log")
    started = time.perf_counter()
    worker.start()
    conn = await bench_connection(asyncpg_dsn(url))
    meter = CpuMeter({"worker": worker.pid}, asyncpg_dsn(url))
    try:
        first = 0.0
        first_count = 0
        while True:
            worker.check_alive()
            count = await conn.fetchval("SELECT count(*) FROM event_history WHERE area <> 'directory'")
            now = time.perf_counter()
            if count and not first:
                first, first_count = now, count
                await meter.start()
            if count >= args.events:
                break
            if now - started > args.timeout_s:
                raise TimeoutError(f"the worker projected {count:,} of {args.events:,}")
            await asyncio.sleep(0.5)  # the visibility poll's cadence
        used = await meter.stop()
        per_k = {name: 1e6 * v / (args.events - first_count) for name, v in used.items()}
        return Run("worker", args.events, now - first, wall_s=now - started, cpu_ms_per_k=per_k)
    finally:
        await conn.close()
        worker.stop()
        await drop_pg_database(url)


async def baseline_run(bootstrap: str, args: argparse.Namespace) -> Run:
    url = await create_pg_database()
    try:
        consumer = LeanConsumer(bootstrap, asyncpg_dsn(url), catalog_topics(), await writer_schemas())
        result = await consumer.run(args.events, args.timeout_s)
        if result.events != args.events:
            raise AssertionError(f"the lean consumer wrote {result.events:,} of {args.events:,}")
        return Run("baseline", args.events, result.last_commit - result.first_fetch)
    finally:
        await drop_pg_database(url)


def report(runs: list[Run], header: str, args: argparse.Namespace) -> str:
    base = median(r.rate for r in runs if r.pipeline == "baseline")
    early = max(1, args.events // 10)
    rows: list[Sequence[object]] = []
    for pipeline, what in (
        ("baseline", "lean consumer: getmany → fastavro → COPY + merge + checkpoint"),
        ("hub", "`python -m services.rebuild`: lean aiokafka consumer → `Projector` (hub projections)"),
        ("worker", "`liandong worker` on a fresh database: faust agent → `Projector` (hub projections)"),
    ):
        mine = [r for r in runs if r.pipeline == pipeline]
        if not mine:
            continue
        memory = ("—",) * 4
        if pipeline == "hub":
            memory = (
                spread([r.rss_at(early) / 1024 for r in mine]),
                spread([max(kb for _, kb in r.rss) / 1024 for r in mine]),
                spread([100 * r.growth(early) for r in mine], "{:+.1f}"),
                spread([r.wall_s for r in mine], "{:.0f}"),
            )
        rows.append(
            (
                pipeline,
                what,
                len(mine),
                spread([r.rate for r in mine]),
                f"{median(r.rate for r in mine) / base:.3f}" if base else "—",
                spread([r.seconds for r in mine], "{:.1f}"),
                *memory,
                ", ".join(
                    f"{c} {median(r.cpu_ms_per_k[c] for r in mine if c in r.cpu_ms_per_k):,.0f}"
                    for c in sorted({c for r in mine for c in r.cpu_ms_per_k})
                )
                or "—",
            )
        )
    headers = [
        "pipeline",
        "what",
        "runs",
        "events/s (min / median / max)",
        "× baseline (median)",
        "seconds replaying",
        f"RSS MiB at {early:,} events",
        "peak RSS MiB",
        f"RSS growth % from {early:,} to the end",
        "command wall s",
        "CPU ms per 1,000 events (median)",
    ]
    notes = [""]
    hubs = [r for r in runs if r.pipeline == "hub"]
    if hubs and base:
        ratio = median(r.rate for r in hubs) / base
        growth = max(r.growth(early) for r in hubs)
        notes.append(
            f"Target ≥ 0.5× the baseline: **{'met' if ratio >= 0.5 else 'missed'}** ({ratio:.3f}×). "
            f"Memory flat (RSS growth < 20% from {early:,} events to the end, worst run): "
            f"**{'met' if growth < 0.2 else 'missed'}** ({100 * growth:+.1f}%)."
        )
    return "\n".join([header, "", table(headers, rows), *notes])


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="archived events (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per pipeline, alternated (default 3)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic (default 6)")
    parser.add_argument("--batch", type=int, default=0, help="the rebuild's --batch (default: its own)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--timeout-s", type=float, default=7200)
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the rebuild of run 1 into DIR")
    parser.add_argument(
        "--only", choices=("hub", "baseline", "worker"), default=None, help="run one pipeline only"
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="also replay the archive through `liandong worker` (faust), to price faust's share",
    )
    return parser


async def measure(args: argparse.Namespace) -> tuple[list[Run], str]:
    """Every run of both pipelines; and the report's header."""
    begun = time.monotonic()
    host = await machine_line()
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    runs: list[Run] = []

    with tempfile.TemporaryDirectory(prefix="liandong-bench-rebuild-") as tmp:
        args.tmp = tmp
        try:
            await create_topics(bootstrap, args.partitions)
            say(f"archiving {args.events:,} events")
            archive_s = await publish_archive(bootstrap, args.events, args.seed)
            say(f"  archived in {archive_s:.0f} s")
            for i in range(args.runs):
                for pipeline in ("baseline", "hub", "worker"):
                    if (args.only and pipeline != args.only) or (pipeline == "worker" and not args.worker):
                        continue
                    say(f"  run {i + 1}: {pipeline}")
                    if pipeline == "hub":
                        profiler = Profiler(args.profile) if args.profile and i == 0 else None
                        run = await hub_run(bootstrap, args, profiler)
                    elif pipeline == "worker":
                        run = await worker_run(bootstrap, args)
                    else:
                        run = await baseline_run(bootstrap, args)
                    runs.append(run)
                    extra = ""
                    if run.rss:
                        extra = (
                            f", RSS {run.rss_at(args.events // 10) / 1024:.0f} → "
                            f"{max(kb for _, kb in run.rss) / 1024:.0f} MiB"
                        )
                    say(f"    {run.events:,} events in {run.seconds:.1f} s = {run.rate:,.0f}/s{extra}")
        finally:
            broker.stop()
    header = (
        f"## Rebuild\n\nMachine: {host}. {args.events:,} archived events of the mix, {args.partitions} "
        f"partition(s) per topic; archive published in {archive_s:.0f} s. "
        f"Run took {time.monotonic() - begun:.0f} s."
    )
    if args.profile is not None:
        (args.profile / "rebuild-rss.json").write_text(json.dumps([r.rss for r in runs if r.rss]))
    return runs, header


async def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    runs, header = await measure(args)
    print(report(runs, header, args))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

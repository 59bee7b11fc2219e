"""End-to-end throughput: events/s from the HTTP gateway to projections visible in PostgreSQL.

    .venv/bin/python -m bench.e2e_throughput                      # 200,000 events, 3 runs, Markdown
    .venv/bin/python -m bench.e2e_throughput --events 10000 --runs 3 --partitions 1
    .venv/bin/python -m bench.e2e_throughput --profile /tmp/prof  # py-spy on the API and the worker

Each run starts everything afresh: an embedded broker (Tansu), a migrated PostgreSQL database with a
key for every unit, and the hub as production runs it, `liandong api` and `liandong worker` as child
processes. Broker, database, hub and this client share the machine's cores.

Hub: `--clients` concurrent HTTP clients POST the events as CloudEvents batches of `--batch` (500) to
`/v1/events`, one unit's key per request. The clock starts at the first POST. The gateway rate is
events over the time to the last 202 (each 202 means the broker acknowledged, acks=all). The
end-to-end rate is events over the time until the last one is visible: a poll every 0.5 s counts the
benchmark's events in `event_history`; at the end, every event id and the expected number of `cases`
and `matters` rows are checked.

Baseline, in the same run, on the same events (validated and encoded as the gateway does, before the
clock starts): a raw aiokafka producer (acks=all, `--clients` chunks of `--batch` in flight) sends
them straight to the topics while the lean consumer (bench/lean.py: getmany → fastavro → COPY and
one merge + checkpoint per batch) writes them to PostgreSQL. Same clock: first send to last commit.

The event mix is bench/workload.py: case lifecycles, transfers, assistance, consultations, complaints,
notices, joint operations and supervision orders over the 16 townships.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from bench.clock_rows import asyncpg_dsn, table
from bench.hub_processes import (
    CpuMeter,
    Gateway,
    Hub,
    Profiler,
    add_pipeline_options,
    bench_connection,
    catalog_topics,
    create_topics,
    machine_line,
    median,
    say,
    spread,
    worker_env,
)
from bench.lean import LeanConsumer, produce, writer_schemas
from bench.workload import Expected, Request, encode, prepare
from services.embedded_broker import EmbeddedBroker
from tests.support import create_pg_database, drop_pg_database

POLL_S = 0.5
OURS = "area NOT IN ('directory', 'alert')"


@dataclass
class Run:
    pipeline: str
    events: int
    accept_s: float  # first send to the last acknowledgement (202, or the producer's ack)
    visible_s: float  # first send to the last event visible in PostgreSQL
    halves: tuple[float, float] = (0.0, 0.0)  # projection rate (events/s) in each half of the events
    startup_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per component, whole window
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and at the end

    @property
    def rate(self) -> float:
        return self.events / self.visible_s

    @property
    def accept_rate(self) -> float:
        return self.events / self.accept_s


def halves(samples: Sequence[tuple[float, int]], total: int, t0: float) -> tuple[float, float]:
    """Events/s over the first and the second half of the events, from (time, visible) samples;
    zero when the samples are too few to tell."""
    if len(samples) < 6:
        return (0.0, 0.0)
    mid = next((t for t, n in samples if n >= total // 2), None)
    end = next((t for t, n in samples if n >= total), None)
    if mid is None or end is None:
        return (0.0, 0.0)
    first = next((t for t, n in samples if n > 0), t0)
    return ((total // 2) / max(mid - first, 1e-9), (total - total // 2) / max(end - mid, 1e-9))


async def post_all(hub: Hub, reqs: Sequence[Request], clients: int) -> tuple[float, float]:
    """POST every request with `clients` concurrent clients; return (start, last 202) perf_counter."""
    pending = iter(reqs)
    last = 0.0

    async def client(gateway: Gateway) -> None:
        nonlocal last
        for r in pending:
            await gateway.post(r.unit, r.body)
            last = time.perf_counter()

    async with Gateway(hub, clients) as gateway:
        started = time.perf_counter()
        await asyncio.gather(*(client(gateway) for _ in range(clients)))
    return started, last


async def watch(dsn: str, total: int, hub: Hub, timeout_s: float) -> list[tuple[float, int]]:
    """Count the benchmark's events in the history until all are there; return (time, count) samples."""
    conn = await bench_connection(dsn)
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            hub.check_alive()
            count = int(await conn.fetchval(f"SELECT count(*) FROM event_history WHERE {OURS}"))
            samples.append((time.perf_counter(), count))
            if count >= total:
                return samples
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {count:,} of {total:,} events visible after {timeout_s:.0f} s")
            await asyncio.sleep(POLL_S)  # the visibility poll's cadence
    finally:
        await conn.close()


async def verify(dsn: str, reqs: Sequence[Request], expected: Expected) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        stored = {r[0] for r in await conn.fetch(f"SELECT event_id FROM event_history WHERE {OURS}")}
        missing = {i for r in reqs for i in r.ids} - stored
        cases = await conn.fetchval("SELECT count(*) FROM cases")
        matters = await conn.fetchval("SELECT count(*) FROM matters")
    finally:
        await conn.close()
    if missing or cases != expected.cases or matters != expected.matters:
        raise AssertionError(
            f"{len(missing)} events missing; {cases} cases (expected {expected.cases}), "
            f"{matters} matters (expected {expected.matters})"
        )


async def hub_run(
    reqs: Sequence[Request], expected: Expected, args: argparse.Namespace, profiler: Profiler | None
) -> Run:
    hub = await Hub(partitions=args.partitions, extra_env=worker_env(args)).start()
    try:
        say(f"    hub ready: {', '.join(f'{k} {v:.1f} s' for k, v in hub.startup_s.items())}")
        if profiler is not None:
            for name in ("api", "worker"):
                profiler.record(f"e2e-{name}", hub.children[name].pid)
        meter = CpuMeter(
            {
                "api": hub.children["api"].pid,
                "worker": hub.children["worker"].pid,
                "tansu": hub.broker.pid or 0,
                "bench": os.getpid(),
            },
            hub.dsn,
        )
        await meter.start()
        load = os.getloadavg()[0]
        gateway = asyncio.create_task(post_all(hub, reqs, args.clients))
        samples = await watch(hub.dsn, expected.events, hub, args.timeout_s)
        started, last_202 = await gateway
        cpu = await meter.stop()
        if profiler is not None:
            for name, summary in profiler.finish().items():
                say(f"--- py-spy {name}\n{summary}")
        await verify(hub.dsn, reqs, expected)
        end = next(t for t, n in samples if n >= expected.events)
        return Run(
            "hub",
            expected.events,
            last_202 - started,
            end - started,
            halves(samples, expected.events, started),
            dict(hub.startup_s),
            cpu,
            (load, os.getloadavg()[0]),
        )
    finally:
        await hub.stop()


async def baseline_run(records: Sequence[tuple[str, object]], args: argparse.Namespace) -> Run:
    broker = EmbeddedBroker()
    url = await create_pg_database()
    try:
        broker.start()
        await create_topics(broker.bootstrap, args.partitions)
        consumer = LeanConsumer(broker.bootstrap, asyncpg_dsn(url), catalog_topics(), await writer_schemas())
        await consumer.create_tables()
        meter = CpuMeter({"tansu": broker.pid or 0, "bench": os.getpid()}, asyncpg_dsn(url))
        await meter.start()
        load = os.getloadavg()[0]
        consuming = asyncio.create_task(consumer.run(len(records), args.timeout_s))
        started = time.perf_counter()
        produced_s = await produce(broker.bootstrap, records, args.batch, args.clients)  # type: ignore[arg-type]
        result = await consuming
        cpu = await meter.stop()
        cpu["postgres"] = cpu.get("postgres", 0.0) + consumer.backend_cpu_s
        if result.events != len(records):
            raise AssertionError(f"the lean consumer wrote {result.events:,} of {len(records):,} events")
        samples = [(t, n) for t, n in consumer.committed_at]
        return Run(
            "baseline",
            len(records),
            produced_s,
            result.last_commit - started,
            halves(samples, len(records), started),
            cpu_s=cpu,
            load=(load, os.getloadavg()[0]),
        )
    finally:
        broker.stop()
        await drop_pg_database(url)


def report(runs: list[Run], header: str) -> str:
    bases = [r.rate for r in runs if r.pipeline == "baseline"]
    base = median(bases) if bases else float("nan")
    rows: list[Sequence[object]] = []
    for pipeline, what in (
        (
            "baseline",
            "aiokafka producer (acks=all) → topics → lean consumer "
            "(getmany → fastavro → COPY + merge + checkpoint)",
        ),
        (
            "hub",
            "HTTP gateway (`liandong api`, 202 after acks=all) → topics → "
            "`liandong worker` (faust → Projector)",
        ),
    ):
        mine = [r for r in runs if r.pipeline == pipeline]
        if not mine:
            continue
        rate = median(r.rate for r in mine)
        rows.append(
            (
                pipeline,
                what,
                len(mine),
                spread([r.rate for r in mine]),
                f"{rate / base:.3f}",
                spread([r.accept_rate for r in mine]),
                spread([r.visible_s for r in mine], "{:.1f}"),
                " / ".join(
                    f"{median(r.halves[i] for r in mine):,.0f}" if mine[0].halves[0] else "—" for i in (0, 1)
                ),
            )
        )
    headers = [
        "pipeline",
        "what",
        "runs",
        "end-to-end events/s (min / median / max)",
        "× baseline (median)",
        "acknowledged events/s (min / median / max)",
        "seconds to all visible",
        "projection events/s, 1st / 2nd half",
    ]
    hub_rate = (
        median(r.rate for r in runs if r.pipeline == "hub") if any(r.pipeline == "hub" for r in runs) else 0
    )
    verdict = "met" if hub_rate >= 5000 else "missed"
    notes = [
        "",
        f"Target ≥ 5,000 events/s end to end: **{verdict}** (hub median {hub_rate:,.0f}/s).",
        "'acknowledged events/s' is the gateway-only rate for the hub (202s), the producer's acks for the "
        "baseline. 'projection events/s' comes from the visibility samples: the first half of the events "
        "(from the first visible one), then the second half; a falling second half would mean the rate "
        "is not sustained.",
    ]
    components = sorted({c for r in runs for c in r.cpu_s})
    cpu_rows = []
    for pipeline in ("baseline", "hub"):
        mine = [r for r in runs if r.pipeline == pipeline]
        if not mine:
            continue
        per_k = {c: median(1e6 * r.cpu_s.get(c, 0.0) / r.events for r in mine) for c in components}
        total = sum(per_k.values())
        cpu_rows.append(
            (
                pipeline,
                *(f"{per_k[c]:,.0f}" if any(c in r.cpu_s for r in mine) else "—" for c in components),
                f"{total:,.0f}",
                f"{2 * 1e6 / total:,.0f}" if total else "—",
            )
        )
    notes += [
        "",
        "CPU milliseconds per 1,000 events, by component (median over runs; from /proc/<pid>/stat over "
        "the timed window; postgres = the backends serving the run's database). The last column is the "
        "ceiling those costs put on 2 cores with nothing else running: 2 CPU-seconds per second ÷ CPU "
        "per event.",
        "",
        table(["pipeline", *components, "total", "ceiling on 2 cores, events/s"], cpu_rows),
        "",
        "1-minute load average at the start → end of each run (other agents share the machine): "
        + "; ".join(f"{r.pipeline} {r.load[0]:.1f} → {r.load[1]:.1f}" for r in runs),
    ]
    startups = [r.startup_s for r in runs if r.startup_s]
    if startups:
        notes.append(
            "Hub start to ready (s, not timed): "
            + "; ".join(", ".join(f"{k} {v:.1f}" for k, v in s.items()) for s in startups)
        )
    return "\n".join([header, "", table(headers, rows), *notes])


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per run (default 200,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per pipeline, alternated (default 3)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic (default 6)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (default 4)")
    parser.add_argument("--batch", type=int, default=500, help="events per request (default 500)")
    parser.add_argument("--seed", type=int, default=6, help="seed of the event mix")
    parser.add_argument("--timeout-s", type=float, default=3600, help="give up a run after this")
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the API and worker of the first hub run into DIR"
    )
    add_pipeline_options(parser)
    return parser


async def measure(args: argparse.Namespace) -> tuple[list[Run], str]:
    """Every run of both pipelines; and the report's header."""
    begun = time.monotonic()
    host = await machine_line()
    say(f"preparing {args.events:,} events")
    reqs, expected = prepare(args.seed, args.events, args.batch)
    records = await encode(reqs) if args.only != "hub" else []
    say(f"  {len(reqs):,} requests, {expected.cases:,} cases, {expected.matters:,} matters")
    runs: list[Run] = []
    profiler = Profiler(args.profile) if args.profile else None
    for i in range(args.runs):
        for pipeline in ("baseline", "hub"):
            if args.only and pipeline != args.only:
                continue
            say(f"  run {i + 1}: {pipeline}")
            if pipeline == "hub":
                run = await hub_run(reqs, expected, args, profiler if i == 0 else None)
            else:
                run = await baseline_run(records, args)
            runs.append(run)
            say(
                f"    {run.events:,} events: acknowledged in {run.accept_s:.1f} s "
                f"({run.accept_rate:,.0f}/s), visible in {run.visible_s:.1f} s ({run.rate:,.0f}/s)"
            )
    header = (
        f"## End-to-end throughput\n\nMachine: {host}. {args.events:,} events per run "
        f"({expected.cases:,} cases, {expected.matters:,} matters), {args.partitions} partition(s) "
        f"per topic, {args.clients} clients × batches of {args.batch}; worker settings "
        f"{worker_env(args) or 'the defaults'}. "
        f"Run took {time.monotonic() - begun:.0f} s."
    )
    return runs, header


async def main(argv: Sequence[str] | None = None) -> None:
    runs, header = await measure(parser().parse_args(argv))
    print(report(runs, header))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

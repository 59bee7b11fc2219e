"""Latency from the gateway's 202 to the projection being visible, at a steady offered load.

    .venv/bin/python -m bench.latency                              # 100 and 1,000 events/s, 3 runs
    .venv/bin/python -m bench.latency --rates 1000 --duration-s 30 --runs 3
    .venv/bin/python -m bench.latency --profile /tmp/prof          # py-spy the worker of run 1

Open loop: every `--tick-ms` (20 ms) a request leaves on schedule, whether or not the earlier ones
were answered. At R events/s each request carries R × tick events of one unit (2 at 100/s, 20 at
1,000/s), taken from bench/workload.py's mix, so the request rate is the same at both loads.

Each run starts a fresh broker, database, `liandong api` and `liandong worker`, then for each rate
sends `--warmup-s` unmeasured, then `--duration-s` measured. `--timed-per-s` events a second (100,
evenly spread: every 10th at 1,000/s, all of them at 100/s) are timed: a poller asks PostgreSQL every
`--poll-ms` which of the pending timed ids are in `event_history` (`event_id = ANY($1)`), so the poll
costs the same small amount at any load. An event's latency is the poll that first saw it minus the
202 of its request. The poll adds on average half its period plus the query time; the report prints
both so they can be subtracted. The report also gives the CPU cores each process kept busy.

Baseline (the latency floor of the same path without the hub), in the same run, same schedule and
events: a raw aiokafka producer sends each request's records with acks=all (the ack stands in for the
202), and the lean consumer of bench/lean.py (aiokafka getmany with `--floor-fetch-wait-ms`, fastavro,
COPY + merge + checkpoint per batch) commits them to `lean_history`, polled the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer

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
from bench.lean import LeanConsumer, writer_schemas
from bench.workload import Request, Workload, body, encode, publish_archive, requests
from events.serde import EncodedRecord
from services.embedded_broker import EmbeddedBroker
from tests.support import create_pg_database, drop_pg_database

DRAIN_TIMEOUT_S = 120.0


@dataclass
class Phase:
    """One offered load in one run of one pipeline."""

    pipeline: str
    rate: int
    latencies_ms: list[float] = field(default_factory=list)  # acknowledged → visible, per event
    acks_ms: list[float] = field(default_factory=list)  # sent → acknowledged, per request
    sent: int = 0
    seconds: float = 0.0
    polls_ms: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per component over the phase
    cpu_window_s: float = 0.0  # the wall time those CPU seconds were spent in (warm-up and drain too)
    preload: int = 0

    def pct(self, q: float, values: Sequence[float] | None = None) -> float:
        data = sorted(self.latencies_ms if values is None else values)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))]


class Visibility:
    """Polls PostgreSQL for pending ids; remembers when each id was acknowledged and first seen."""

    def __init__(self, dsn: str, table_name: str, poll_ms: float, stride: int = 1) -> None:
        self._dsn = dsn
        # Every `stride`-th event is timed: the poll then asks about ~100 ids a second whatever the
        # load, so that it costs the database and this process little.
        self._stride = stride
        self._sent = 0
        self.tracked: set[str] = set()
        self._query = f"SELECT event_id FROM {table_name} WHERE event_id = ANY($1::text[])"
        self._poll_s = poll_ms / 1000
        self.acked: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self._pending: set[str] = set()
        self.polls_ms: list[float] = []
        self._stop = asyncio.Event()

    def sent(self, ids: Sequence[str]) -> None:
        for i in ids:
            if self._sent % self._stride == 0:
                self.tracked.add(i)
                self._pending.add(i)
            self._sent += 1

    def acknowledged(self, ids: Sequence[str], at: float) -> None:
        for i in ids:
            if i in self.tracked:
                self.acked[i] = at

    async def run(self, check: Callable[[], None]) -> None:
        conn = await bench_connection(self._dsn)
        try:
            while not self._stop.is_set():
                polled = time.perf_counter()
                if self._pending:
                    rows = await conn.fetch(self._query, list(self._pending))
                    now = time.perf_counter()
                    self.polls_ms.append((now - polled) * 1000)
                    for (event_id,) in rows:
                        self.seen[event_id] = now
                        self._pending.discard(event_id)
                check()
                await asyncio.sleep(max(0.0, self._poll_s - (time.perf_counter() - polled)))  # cadence
        finally:
            await conn.close()

    def stop(self) -> None:
        self._stop.set()


async def open_loop(
    reqs: Sequence[Request],
    tick_s: float,
    send: Callable[[Request], Awaitable[float]],
    vis: Visibility,
    measured_from: int,
    phase: Phase,
) -> None:
    """Send request i at start + i × tick, each in its own task; the first `measured_from` are warm-up."""
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, r: Request) -> None:
        vis.sent(r.ids)
        sent_at = time.perf_counter()
        acked_at = await send(r)
        vis.acknowledged(r.ids, acked_at)
        if i >= measured_from:
            phase.acks_ms.append((acked_at - sent_at) * 1000)

    for i, r in enumerate(reqs):
        due = start + i * tick_s
        await asyncio.sleep(max(0.0, due - time.perf_counter()))  # the open-loop schedule
        tasks.append(asyncio.create_task(one(i, r)))
    await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - start - measured_from * tick_s
    phase.sent = sum(len(r.ids) for r in reqs[measured_from:])


def stride(rate: int, args: argparse.Namespace) -> int:
    return max(1, round(rate / int(args.timed_per_s)))


async def drain(vis: Visibility, poller: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    ids = list(vis.tracked)
    while any(i not in vis.seen for i in ids):
        if poller.done():
            poller.result()  # the poller's failure (a hub process that died), or:
            raise RuntimeError("the visibility poller stopped")
        if time.monotonic() > deadline:
            missing = sum(1 for i in ids if i not in vis.seen)
            raise TimeoutError(f"{missing} events not visible after {DRAIN_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)  # waiting for the poller to see the last events


def collect(vis: Visibility, reqs: Sequence[Request], measured_from: int, phase: Phase) -> None:
    for r in reqs[measured_from:]:
        for i in r.ids:
            if i in vis.tracked:
                phase.latencies_ms.append((vis.seen[i] - vis.acked[i]) * 1000)
    phase.polls_ms = list(vis.polls_ms)


def plan(
    seed: int, rate: int, tick_s: float, warmup_s: float, duration_s: float
) -> tuple[list[Request], int]:
    per_request = max(1, round(rate * tick_s))
    warmup = round(warmup_s / tick_s)
    total = warmup + round(duration_s / tick_s)
    reqs = [
        Request(unit, body(events), tuple(e["id"] for e in events))
        for unit, events in requests(Workload(seed * 1000 + rate).events(), total * per_request, per_request)
    ]
    return reqs[:total], warmup


async def hub_phase(
    hub: Hub, reqs: Sequence[Request], warmup: int, rate: int, args: argparse.Namespace
) -> Phase:
    phase = Phase("hub", rate)
    vis = Visibility(hub.dsn, "event_history", args.poll_ms, stride(rate, args))
    async with Gateway(hub, 200) as gateway:

        async def send(r: Request) -> float:
            await gateway.post(r.unit, r.body)
            return time.perf_counter()

        poller = asyncio.create_task(vis.run(hub.check_alive))
        try:
            await open_loop(reqs, args.tick_ms / 1000, send, vis, warmup, phase)
            await drain(vis, poller)
        finally:
            vis.stop()
            await poller
    collect(vis, reqs, warmup, phase)
    return phase


async def hub_run(
    plans: dict[int, tuple[list[Request], int]], args: argparse.Namespace, profile: bool
) -> list[Phase]:
    hub = await Hub(
        partitions=args.partitions, worker_fetch_wait_ms=args.worker_fetch_wait_ms, extra_env=worker_env(args)
    ).start()
    profiler = Profiler(args.profile) if profile and args.profile else None
    try:
        say(f"    hub ready: {', '.join(f'{k} {v:.1f} s' for k, v in hub.startup_s.items())}")
        if args.preload:
            await preload(hub.broker.bootstrap, hub.dsn, "event_history WHERE area <> 'directory'", args)
        phases = []
        for rate, (reqs, warmup) in plans.items():
            if profiler is not None:
                profiler.record(f"latency-{rate}-worker", hub.children["worker"].pid)
                profiler.record(f"latency-{rate}-api", hub.children["api"].pid)
            pids = {"api": hub.children["api"].pid, "worker": hub.children["worker"].pid}
            meter = CpuMeter({**pids, "tansu": hub.broker.pid or 0, "bench": os.getpid()}, hub.dsn)
            await meter.start()
            window = time.perf_counter()
            phase = await hub_phase(hub, reqs, warmup, rate, args)
            phase.cpu_s = await meter.stop()
            phase.cpu_window_s = time.perf_counter() - window
            phase.preload = args.preload
            phases.append(phase)
            if profiler is not None:
                for name, summary in profiler.finish().items():
                    say(f"--- py-spy {name}\n{summary}")
        return phases
    finally:
        await hub.stop()


async def preload(bootstrap: str, dsn: str, counted: str, args: argparse.Namespace) -> None:
    """Publish `--preload` archived events and wait until they are projected: the tables the
    measured events then join are that large."""
    started = time.monotonic()
    await publish_archive(bootstrap, args.preload, args.seed + 1)
    conn = await bench_connection(dsn)
    try:
        while (count := await conn.fetchval(f"SELECT count(*) FROM {counted}")) < args.preload:
            if time.monotonic() - started > args.preload_timeout_s:
                raise TimeoutError(f"only {count:,} of {args.preload:,} preloaded events projected")
            await asyncio.sleep(1)  # waiting for the projection to catch up
    finally:
        await conn.close()
    say(f"    preloaded {args.preload:,} events in {time.monotonic() - started:.0f} s")


def raw_sender(
    producer: AIOKafkaProducer, records: dict[str, tuple[str, EncodedRecord]]
) -> Callable[[Request], Awaitable[float]]:
    """Sends a request's records straight to the topics; returns when all are acknowledged."""

    async def send(r: Request) -> float:
        futures = []
        for i in r.ids:
            topic, rec = records[i]
            futures.append(await producer.send(topic, value=rec.value, key=rec.key, headers=rec.headers))
        await asyncio.gather(*futures)
        return time.perf_counter()

    return send


async def baseline_run(
    plans: dict[int, tuple[list[Request], int]],
    encoded: dict[int, dict[str, tuple[str, EncodedRecord]]],
    args: argparse.Namespace,
) -> list[Phase]:
    broker = EmbeddedBroker()
    url = await create_pg_database()
    producer: AIOKafkaProducer | None = None
    try:
        broker.start()
        await create_topics(broker.bootstrap, args.partitions)
        dsn = asyncpg_dsn(url)
        consumer = LeanConsumer(
            broker.bootstrap,
            dsn,
            catalog_topics(),
            await writer_schemas(),
            fetch_max_wait_ms=args.floor_fetch_wait_ms,
        )
        await consumer.create_tables()
        stop = asyncio.Event()
        consuming = asyncio.create_task(consumer.run(10**12, 3600, stop))
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False, linger_ms=2
        )
        await producer.start()
        if args.preload:
            await preload(broker.bootstrap, dsn, "lean_history", args)
        phases = []
        for rate, (reqs, warmup) in plans.items():
            phase = Phase("baseline", rate, preload=args.preload)
            vis = Visibility(dsn, "lean_history", args.poll_ms, stride(rate, args))

            send = raw_sender(producer, encoded[rate])

            def check() -> None:
                if consuming.done():
                    consuming.result()
                    raise RuntimeError("the lean consumer stopped")

            poller = asyncio.create_task(vis.run(check))
            try:
                await open_loop(reqs, args.tick_ms / 1000, send, vis, warmup, phase)
                await drain(vis, poller)
            finally:
                vis.stop()
                await poller
            collect(vis, reqs, warmup, phase)
            phases.append(phase)
        stop.set()
        await consuming
        return phases
    finally:
        if producer is not None:
            await producer.stop()
        broker.stop()
        await drop_pg_database(url)


def cores(phases: Sequence[Phase]) -> str:
    """CPU cores each component kept busy during the phase (CPU seconds ÷ wall seconds)."""
    with_cpu = [p for p in phases if p.cpu_s]
    if not with_cpu:
        return "—"
    names = sorted({c for p in with_cpu for c in p.cpu_s})
    busy = {c: median(p.cpu_s.get(c, 0.0) / p.cpu_window_s for p in with_cpu) for c in names}
    return f"{sum(busy.values()):.2f}: " + ", ".join(f"{c} {v:.2f}" for c, v in busy.items())


def report(phases: list[Phase], header: str, args: argparse.Namespace) -> str:
    rows: list[Sequence[object]] = []
    for rate in args.rates:
        base = [p for p in phases if p.pipeline == "baseline" and p.rate == rate]
        for pipeline in ("baseline", "hub"):
            mine = [p for p in phases if p.pipeline == pipeline and p.rate == rate]
            if not mine:
                continue
            p50 = [p.pct(0.50) for p in mine]
            p99 = [p.pct(0.99) for p in mine]
            ratio = (
                f"{median(p50) / median(b.pct(0.50) for b in base):.1f} / "
                f"{median(p99) / median(b.pct(0.99) for b in base):.1f}"
                if base
                else "—"
            )
            polls = [x for p in mine for x in p.polls_ms]
            rows.append(
                (
                    pipeline,
                    f"{rate:,}",
                    len(mine),
                    spread([p.sent / p.seconds for p in mine]),
                    spread(p50),
                    spread(p99),
                    spread([max(p.latencies_ms) for p in mine]),
                    ratio,
                    spread([p.pct(0.50, p.acks_ms) for p in mine])
                    + " · "
                    + spread([p.pct(0.99, p.acks_ms) for p in mine]),
                    f"{median(polls):.1f}" if polls else "—",
                    cores(mine),
                )
            )
    headers = [
        "pipeline",
        "offered events/s",
        "runs",
        "achieved events/s",
        "p50 ms (min / median / max)",
        "p99 ms (min / median / max)",
        "max ms",
        "× floor p50 / p99",
        "send → ack ms, p50 · p99",
        "poll query ms (median)",
        "cores busy (median): components",
    ]
    hub_1000 = [p.pct(0.99) for p in phases if p.pipeline == "hub" and p.rate == 1000]
    notes = [
        "",
        f"Latency: the first poll (every {args.poll_ms:g} ms) that saw the event in PostgreSQL, minus the "
        "acknowledgement of its request (the gateway's 202 for the hub, the producer's acks=all for the "
        f"floor). The poll adds on average {args.poll_ms / 2:g} ms plus the poll query's time, and at most "
        f"{args.poll_ms:g} ms plus it. 'send → ack' is the gateway's (or the broker's) own latency, "
        "before the figure starts.",
    ]
    if hub_1000:
        verdict = "met" if median(hub_1000) < 250 else "missed"
        notes.append(
            f"Target p99 < 250 ms at 1,000 events/s: **{verdict}** (median p99 {median(hub_1000):,.0f} ms)."
        )
    return "\n".join([header, "", table(headers, rows), *notes])


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 1000], help="offered events/s")
    parser.add_argument("--duration-s", type=float, default=30, help="measured seconds per rate (default 30)")
    parser.add_argument("--warmup-s", type=float, default=5, help="unmeasured seconds before (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs per pipeline (default 3)")
    parser.add_argument("--tick-ms", type=float, default=20, help="one request every this often (default 20)")
    parser.add_argument("--poll-ms", type=float, default=5, help="visibility poll period (default 5)")
    parser.add_argument(
        "--timed-per-s", type=int, default=100, help="events timed per second, evenly spread (default 100)"
    )
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic (default 6)")
    parser.add_argument(
        "--floor-fetch-wait-ms",
        type=int,
        default=20,
        help="the lean consumer's fetch_max_wait_ms (default 20)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--preload", type=int, default=0, help="events projected before the measured load (default 0)"
    )
    parser.add_argument("--preload-timeout-s", type=float, default=3600)
    parser.add_argument(
        "--worker-fetch-wait-ms",
        type=int,
        default=None,
        help="run the worker with this consumer fetch wait instead of its own (an A/B of the setting)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the hub in run 1 into DIR")
    add_pipeline_options(parser)
    return parser


async def measure(args: argparse.Namespace) -> tuple[list[Phase], str]:
    """Every phase of every run of both pipelines; and the report's header."""
    begun = time.monotonic()
    host = await machine_line()
    tick_s = args.tick_ms / 1000
    plans = {rate: plan(args.seed, rate, tick_s, args.warmup_s, args.duration_s) for rate in args.rates}
    encoded: dict[int, dict[str, tuple[str, EncodedRecord]]] = {}
    for rate, (reqs, _) in plans.items():
        records = await encode(reqs)
        ids = [i for r in reqs for i in r.ids]
        encoded[rate] = dict(zip(ids, records, strict=True))
    phases: list[Phase] = []
    for i in range(args.runs):
        for pipeline in ("baseline", "hub"):
            if args.only and pipeline != args.only:
                continue
            say(f"  run {i + 1}: {pipeline}")
            done = await (
                hub_run(plans, args, i == 0) if pipeline == "hub" else baseline_run(plans, encoded, args)
            )
            for p in done:
                say(
                    f"    {p.rate:,}/s offered: {p.sent / p.seconds:,.0f}/s sent, p50 {p.pct(0.5):.0f} ms, "
                    f"p99 {p.pct(0.99):.0f} ms, max {max(p.latencies_ms):.0f} ms; ack p50 "
                    f"{p.pct(0.5, p.acks_ms):.0f} ms"
                )
            phases += done
    header = (
        f"## Latency, 202 to visible\n\nMachine: {host}. Per rate: {args.warmup_s:g} s warm-up, "
        f"{args.duration_s:g} s measured, a request every {args.tick_ms:g} ms; "
        f"{args.partitions} partition(s) per topic; {args.preload:,} events projected before; "
        f"floor consumer fetch_max_wait_ms={args.floor_fetch_wait_ms}; worker fetch wait "
        f"{'its own' if args.worker_fetch_wait_ms is None else f'{args.worker_fetch_wait_ms} ms'}; "
        f"worker settings {worker_env(args) or 'the defaults'}. "
        f"Run took {time.monotonic() - begun:.0f} s."
    )
    return phases, header


async def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    phases, header = await measure(args)
    print(report(phases, header, args))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

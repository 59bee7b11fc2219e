"""Growth: how end-to-end throughput, latency and rebuild change with events and with partitions.

    .venv/bin/python -m bench.growth                                  # the whole matrix (about 1.5 h)
    .venv/bin/python -m bench.growth --benches rebuild --sizes 10000 100000
    .venv/bin/python -m bench.growth --sizes 10000 --partitions 1 4 --runs 3   # a quick check

For every size in `--sizes` and every partition count in `--partitions`, it runs the benchmarks named
in `--benches` through their own `measure` functions (so each point is exactly what
`python -m bench.<name> --events N --partitions P` measures, baseline included), and prints one
table per benchmark with the medians and the ratios to the baseline of the same point:

- e2e: `bench.e2e_throughput --events N` (the hub's end-to-end and gateway rates);
- rebuild: `bench.rebuild --events N` (rate and RSS growth from 10% of the events to the end);
- latency: `bench.latency --preload N --rates 1000` (p50 and p99 at 1,000 events/s, once N events
  are already projected, so the tables the new events join hold N events).

Sizes of `--large` events and more run `--runs-large` times (default 1), smaller ones `--runs` times:
at today's rates one hub run of 1,000,000 events takes minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from bench import e2e_throughput, latency, rebuild
from bench.clock_rows import table
from bench.hub_processes import machine_line, median, say, spread

BENCHES = ("e2e", "rebuild", "latency")


def runs_for(size: int, args: argparse.Namespace) -> int:
    return int(args.runs_large if size >= args.large else args.runs)


async def grow_e2e(args: argparse.Namespace) -> str:
    rows: list[Sequence[object]] = []
    for partitions in args.partitions:
        for size in args.sizes:
            say(f"e2e: {size:,} events, {partitions} partition(s)")
            bench_args = e2e_throughput.parser().parse_args(
                ["--events", str(size), "--partitions", str(partitions), "--runs", str(runs_for(size, args))]
            )
            started = time.monotonic()
            runs, _ = await e2e_throughput.measure(bench_args)
            hub = [r for r in runs if r.pipeline == "hub"]
            base = [r for r in runs if r.pipeline == "baseline"]
            rows.append(
                (
                    f"{size:,}",
                    partitions,
                    len(hub),
                    spread([r.rate for r in hub]),
                    spread([r.accept_rate for r in hub]),
                    spread([r.rate for r in base]),
                    f"{median(r.rate for r in hub) / median(r.rate for r in base):.3f}",
                    f"{median(1e6 * sum(r.cpu_s.values()) / r.events for r in hub):,.0f}",
                    f"{time.monotonic() - started:.0f}",
                )
            )
    headers = [
        "events",
        "partitions",
        "runs",
        "hub end-to-end events/s (min / median / max)",
        "hub gateway events/s",
        "baseline events/s",
        "hub × baseline",
        "hub CPU ms per 1,000 events",
        "point took s",
    ]
    return "### End-to-end throughput\n\n" + table(headers, rows)


async def grow_rebuild(args: argparse.Namespace) -> str:
    rows: list[Sequence[object]] = []
    for partitions in args.partitions:
        for size in args.sizes:
            say(f"rebuild: {size:,} events, {partitions} partition(s)")
            bench_args = rebuild.parser().parse_args(
                ["--events", str(size), "--partitions", str(partitions), "--runs", str(runs_for(size, args))]
            )
            started = time.monotonic()
            runs, _ = await rebuild.measure(bench_args)
            hub = [r for r in runs if r.pipeline == "hub"]
            base = [r for r in runs if r.pipeline == "baseline"]
            early = max(1, size // 10)
            rows.append(
                (
                    f"{size:,}",
                    partitions,
                    len(hub),
                    spread([r.rate for r in hub]),
                    spread([r.rate for r in base]),
                    f"{median(r.rate for r in hub) / median(r.rate for r in base):.3f}",
                    spread([100 * r.growth(early) for r in hub], "{:+.1f}"),
                    spread([max(kb for _, kb in r.rss) / 1024 for r in hub]),
                    f"{time.monotonic() - started:.0f}",
                )
            )
    headers = [
        "events",
        "partitions",
        "runs",
        "hub rebuild events/s (min / median / max)",
        "baseline events/s",
        "hub × baseline",
        "RSS growth % from 10% of the events to the end",
        "peak RSS MiB",
        "point took s",
    ]
    return "### Rebuild\n\n" + table(headers, rows)


async def grow_latency(args: argparse.Namespace) -> str:
    rows: list[Sequence[object]] = []
    for partitions in args.partitions:
        for size in args.sizes:
            say(f"latency: {size:,} events preloaded, {partitions} partition(s)")
            bench_args = latency.parser().parse_args(
                [
                    "--preload",
                    str(size),
                    "--partitions",
                    str(partitions),
                    "--runs",
                    str(runs_for(size, args)),
                    "--rates",
                    "1000",
                    "--duration-s",
                    str(args.latency_duration_s),
                ]
            )
            started = time.monotonic()
            phases, _ = await latency.measure(bench_args)
            hub = [p for p in phases if p.pipeline == "hub"]
            base = [p for p in phases if p.pipeline == "baseline"]
            rows.append(
                (
                    f"{size:,}",
                    partitions,
                    len(hub),
                    spread([p.sent / p.seconds for p in hub]),
                    spread([p.pct(0.50) for p in hub]),
                    spread([p.pct(0.99) for p in hub]),
                    spread([p.pct(0.99) for p in base]),
                    f"{time.monotonic() - started:.0f}",
                )
            )
    headers = [
        "events before",
        "partitions",
        "runs",
        "achieved events/s (1,000 offered)",
        "hub p50 ms",
        "hub p99 ms",
        "floor p99 ms",
        "point took s",
    ]
    return "### Latency at 1,000 events/s\n\n" + table(headers, rows)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="events per point"
    )
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 4], help="partitions per topic")
    parser.add_argument("--benches", nargs="+", choices=BENCHES, default=list(BENCHES))
    parser.add_argument("--runs", type=int, default=3, help="runs per point below --large (default 3)")
    parser.add_argument("--large", type=int, default=1_000_000, help="sizes from here on are large")
    parser.add_argument("--runs-large", type=int, default=1, help="runs per large point (default 1)")
    parser.add_argument("--latency-duration-s", type=float, default=30, help="measured s per latency run")
    args = parser.parse_args(argv)
    begun = time.monotonic()
    host = await machine_line()
    print(
        f"## Growth\n\nMachine: {host}. Sizes {', '.join(f'{s:,}' for s in args.sizes)}; partitions "
        f"{', '.join(map(str, args.partitions))}; {args.runs} run(s) per point, {args.runs_large} from "
        f"{args.large:,} events.\n",
        flush=True,
    )
    for name, grow in (("e2e", grow_e2e), ("rebuild", grow_rebuild), ("latency", grow_latency)):
        if name in args.benches:
            # Each table as soon as it is done: a long matrix that dies late keeps what it measured.
            print(await grow(args) + "\n", flush=True)
    print(f"Matrix took {time.monotonic() - begun:.0f} s.")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

"""Scale-out, measured: throughput of 1 and 2 (or more) workers, and a group that keeps changing.

    .venv/bin/python -m bench.scale_out throughput --events 40000 --partitions 4 --workers 1,2 --runs 3
    .venv/bin/python -m bench.scale_out churn --events 100000 --rate 500 --cycles 4

**throughput.** One embedded broker (Tansu) holds a backlog of bench/workload.py's mix over the
whole catalog, published once to topics with --partitions partitions. Each measurement then starts N
`liandong worker` processes (one group) on a fresh, migrated PostgreSQL database, so they read the
whole backlog from the start, and times them from the moment *every* worker has projected something
(the group has settled; start-up and the first rebalance are left out) until the last event is in
the history:

    rate = events projected in that window / its length

Worker counts alternate between runs (1, 2, then 2, 1, …) so that a drift in the machine's load does
not favour one. Beside the rate, the report gives the share each worker projected (the partitions
were split), the worker processes' CPU milliseconds per 1,000 events, and how busy the machine's
cores were (/proc/stat) in the window: on a 2-core machine that also runs PostgreSQL and the
broker, a second worker has no idle core to use, and the ratio says so.

**churn.** The heavy form of tests/integration/test_scale_out.py. A feed publishes at --rate events/s
while the group changes, --cycles times: a worker joins (1 → 2), the older one leaves with SIGTERM
(2 → 1), another joins (1 → 2), and one of the two is SIGKILLed (2 → 1). Each change is timed until
the new member projects, or until the remaining one has committed on every partition. At the end,
bench/faults.py's verdict: acknowledged events lost, case events applied twice, and a comparison of
every projection table with a replay of the same records into a new database.

Progress goes to stderr; stdout holds the Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.clock_rows import asyncpg_dsn, table
from bench.faults import (
    Feed,
    metric,
    sigkill,
    until,
    verdict_rows,
    verify,
    worker_child,
    workload_records,
)
from bench.hub_processes import (
    Child,
    Hub,
    checkpoints,
    cpu_seconds,
    create_topics,
    run_scenario,
    say,
    spread,
)
from bench.workload import publish_archive
from services.embedded_broker import EmbeddedBroker, free_port
from tests.support import create_migrated_pg_database, drop_pg_database

OURS = "area NOT IN ('directory', 'alert', 'anomaly')"
POLL_S = 0.2
TIMEOUT_S = 900


@dataclass(frozen=True, slots=True)
class Run:
    workers: int
    rate: float  # events/s in the window
    window_s: float
    events: int  # projected in the window
    settle_s: float  # start to every worker projecting
    shares: tuple[float, ...]  # of the events each worker projected, over the whole run
    cpu_ms_per_1000: float  # the worker processes' CPU in the window
    cores_busy: float  # the machine's, in the window


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


async def projected(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM event_history WHERE {OURS}"))


async def measure(bootstrap: str, partitions: int, workers: int, events: int, logs: Path) -> Run:
    url = await create_migrated_pg_database()
    children: list[tuple[Child, int]] = []
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for i in range(workers):
            port = free_port()
            env = {
                "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
                "LIANDONG_DATABASE_URL": url,
                "LIANDONG_DATA_DIR": str(logs / f"data-{i}"),
                "LIANDONG_TOPIC_PARTITIONS": str(partitions),
                "LIANDONG_WORKER_WEB_PORT": str(port),
                "LIANDONG_LOG_LEVEL": "WARNING",
            }
            child = Child(f"worker-{i}", ["services.cli", "worker"], env, logs / f"worker-{workers}-{i}.log")
            child.start()
            children.append((child, port))
        started = time.monotonic()

        async def counts() -> list[float]:
            out = []
            for child, port in children:
                child.check_alive()
                out.append(await metric(port, "liandong_events_projected_total"))  # 0 until it serves
            return out

        while not all(await counts()):
            if time.monotonic() - started > TIMEOUT_S:
                raise TimeoutError("the workers did not all project within the timeout")
            await asyncio.sleep(POLL_S)  # polling processes that are starting
        settled = time.monotonic()
        at_start = await projected(conn)
        cpu = [cpu_seconds(child.pid) for child, _ in children]
        jiffies = busy_jiffies()
        while await projected(conn) < events:
            for child, _ in children:
                child.check_alive()
            if time.monotonic() - started > TIMEOUT_S:
                raise TimeoutError("the backlog was not drained within the timeout")
            await asyncio.sleep(POLL_S)  # polling the drain
        done = time.monotonic()
        used = sum(cpu_seconds(child.pid) - c for (child, _), c in zip(children, cpu, strict=True))
        busy = busy_jiffies()
        final = await counts()
        window = done - settled
        in_window = events - at_start
        return Run(
            workers=workers,
            rate=in_window / window,
            window_s=window,
            events=in_window,
            settle_s=settled - started,
            shares=tuple(n / sum(final) for n in final),
            cpu_ms_per_1000=1_000_000 * used / max(1, in_window),
            cores_busy=(busy[0] - jiffies[0]) / max(1, busy[1] - jiffies[1]) * _cores(),
        )
    finally:
        await conn.close()
        for child, _ in children:
            child.stop()
        await drop_pg_database(url)


def _cores() -> int:
    return sum(
        1
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("cpu") and line[3].isdigit()
    )


async def throughput(args: argparse.Namespace) -> str:
    counts = [int(n) for n in args.workers.split(",")]
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    logs = Path(tempfile.mkdtemp(prefix="liandong-scale-out-"))
    runs: list[Run] = []
    try:
        await create_topics(bootstrap, args.partitions)
        say(f"publishing a backlog of {args.events:,} events on {args.partitions} partitions …")
        await publish_archive(bootstrap, args.events, args.seed)
        for r in range(args.runs):
            for n in counts if r % 2 == 0 else list(reversed(counts)):
                run = await measure(bootstrap, args.partitions, n, args.events, logs)
                shares = ", ".join(f"{s:.0%}" for s in run.shares)
                say(
                    f"  run {r + 1}, {n} worker(s): {run.rate:,.0f} events/s over {run.window_s:.1f} s "
                    f"(settled after {run.settle_s:.1f} s; shares {shares}; {run.cores_busy:.2f} cores busy)"
                )
                runs.append(run)
    finally:
        broker.stop()
    base = statistics.median(r.rate for r in runs if r.workers == counts[0])
    rows = []
    for n in counts:
        mine = [r for r in runs if r.workers == n]
        rates = [r.rate for r in mine]
        rows.append(
            (
                str(n),
                spread(rates),
                f"{statistics.median(rates) / base:.2f}×",
                spread([r.window_s for r in mine], "{:.1f}"),
                spread([r.settle_s for r in mine], "{:.1f}"),
                " · ".join("/".join(f"{s:.0%}" for s in r.shares) for r in mine),
                spread([r.cpu_ms_per_1000 for r in mine]),
                spread([r.cores_busy for r in mine], "{:.2f}"),
            )
        )
    head = (
        f"{args.events:,} events (bench/workload.py mix, seed {args.seed}) on {args.partitions} partitions"
        f" per topic; {args.runs} runs per worker count, alternating; min / median / max."
    )
    headers = [
        "workers",
        "events/s",
        f"× {counts[0]} worker(s), medians",
        "window, s",
        "start to all projecting, s",
        "share per worker, each run",
        "workers' CPU ms per 1,000 events",
        "cores busy (machine)",
    ]
    return head + "\n\n" + table(headers, rows)


class Group:
    """The workers of one group, started and stopped as the churn asks."""

    def __init__(self, hub: Hub, logs: Path) -> None:
        self.hub = hub
        self.logs = logs
        self.members: list[tuple[Child, int]] = []
        self.started = 0

    def check(self) -> None:
        for child, _ in self.members:
            child.check_alive()

    async def join(self) -> float:
        """Start a worker; seconds until it has projected events of the feed."""
        self.started += 1
        child, port = worker_child(self.hub.env(), self.logs, f"worker-{self.started}")
        child.start()
        self.members.append((child, port))

        async def projecting() -> bool:
            return await metric(port, "liandong_events_projected_total") > 0

        return await until(projecting, 300, f"worker {self.started} to project", self.check)

    async def leave(self, feed: Feed, crash: bool) -> float:
        """Stop (SIGTERM) or SIGKILL the oldest member; seconds until the others have committed on
        every partition of the feed's topics."""
        before = await checkpoints(self.hub.dsn)
        child, _ = self.members.pop(0)
        started = time.monotonic()
        if crash:
            sigkill(child)
        else:
            await asyncio.to_thread(child.stop)  # it may take seconds; the feed goes on meanwhile
        left = time.monotonic() - started

        async def moved() -> bool:
            now = await checkpoints(self.hub.dsn)
            return feed.done or all(now.get(k, -1) > v for k, v in before.items())

        return left + await until(moved, 300, "the take-over", self.check)

    def stop_all(self) -> None:
        for child, _ in self.members:
            child.stop()


async def churn(args: argparse.Namespace) -> str:
    _, records = await workload_records(args.events, args.seed)
    hub = await Hub(
        partitions=args.partitions,
        api=False,
        worker=False,
        extra_env={"LIANDONG_BROKER_SESSION_TIMEOUT_S": str(args.session_s), "LIANDONG_LOG_LEVEL": "WARNING"},
    ).start()
    logs = Path(tempfile.mkdtemp(prefix="liandong-churn-"))
    group = Group(hub, logs)
    joins: list[float] = []
    leaves: list[float] = []
    crashes: list[float] = []
    try:
        feed = Feed(hub.broker.bootstrap, records, args.rate).start()
        await group.join()
        for cycle in range(args.cycles):
            for step, times in (("join", joins), ("leave", leaves), ("join", joins), ("crash", crashes)):
                if feed.done:
                    break  # a change now would show no take-over
                seconds = await group.join() if step == "join" else await group.leave(feed, step == "crash")
                if not feed.done:
                    times.append(seconds)
                    say(f"  cycle {cycle + 1}: {step} took {seconds:.1f} s ({len(group.members)} member(s))")
        if not feed.done:
            say("  the cycles are over; the feed goes on to its end")
        acked = await feed.wait()
        other = await second_group(hub, logs, len(acked)) if args.second_group else None
        verdict = await verify(hub.url, hub.broker.bootstrap, acked, logs, group.stop_all)
    finally:
        group.stop_all()
        await hub.stop()
    rows = [
        ("partitions per topic", str(args.partitions)),
        ("broker session timeout (LIANDONG_BROKER_SESSION_TIMEOUT_S)", f"{args.session_s} s"),
        ("feed", f"{args.rate:,.0f} events/s"),
        ("a worker joins: start to projecting (min / median / max)", _fmt(joins)),
        ("a worker leaves (SIGTERM): to the other committing on every partition", _fmt(leaves)),
        ("a worker is SIGKILLed: to the other committing on every partition", _fmt(crashes)),
        *(
            [
                (
                    "then a worker of another group on the same database: records re-read, skipped, applied",
                    other,
                )
            ]
            if other
            else []
        ),
        *verdict_rows(verdict),
    ]
    return table(["", "figure"], rows)


async def second_group(hub: Hub, logs: Path, acked: int) -> str:
    """Once every acknowledged event is projected, a worker with another LIANDONG_CONSUMER_GROUP on
    the same database: it reads every topic from the start, and must apply none of the feed's events
    again (the checkpoints belong to the projection, not to the group). Returns what it did."""
    await until(lambda: _all_visible(hub.dsn, acked), 600, "every acknowledged event", lambda: None)
    # Every record the first group has projected, on every topic: the second must skip them all.
    conn = await asyncpg.connect(hub.dsn)
    try:
        covered = int(
            await conn.fetchval('SELECT coalesce(sum("offset" + 1), 0) FROM projection_checkpoints')
        )
    finally:
        await conn.close()
    env = {**hub.env(), "LIANDONG_CONSUMER_GROUP": "liandong-second-group"}
    child, port = worker_child(env, logs, "worker-second-group")
    child.start()
    try:

        async def read_all() -> bool:
            return await metric(port, "liandong_events_redelivered_total") >= covered

        await until(read_all, 600, "the second group to re-read every record", child.check_alive)
        skipped = await metric(port, "liandong_events_redelivered_total")
        applied = await feed_applied(port)
    finally:
        child.stop()
    say(f"  a second group re-read and skipped {skipped:,.0f} records, applied {applied:,.0f} of the feed's")
    return f"{skipped:,.0f} skipped, {applied:,.0f} applied"


async def _all_visible(dsn: str, n: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return await projected(conn) >= n
    finally:
        await conn.close()


async def feed_applied(port: int) -> float:
    """Events of the feed's types (not the hub's own directory, alerts and anomalies) this worker
    applied, from its /metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    own = tuple(f"cn.gov.liandong.{area}." for area in ("directory", "alert", "anomaly"))
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "liandong_events_projected_total" and not s.labels.get("type", "").startswith(own)
    )


def _fmt(values: Sequence[float]) -> str:
    if not values:
        return "—"
    return f"{spread(values, '{:.1f}')} s ({len(values)})"


SCENARIOS = {"throughput": throughput, "churn": churn}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="scenario", required=True)
    t = sub.add_parser("throughput", help="1 worker against 2 (or more), draining the same backlog")
    t.add_argument("--events", type=int, default=40_000)
    t.add_argument("--workers", default="1,2", help="worker counts to compare, the first is the baseline")
    t.add_argument("--runs", type=int, default=3)
    c = sub.add_parser("churn", help="workers join, leave and crash under a steady feed")
    c.add_argument("--events", type=int, default=100_000)
    c.add_argument("--rate", type=float, default=500, help="events/s (the feed must outlast the cycles)")
    c.add_argument("--cycles", type=int, default=4)
    c.add_argument("--session-s", type=int, default=10)
    c.add_argument(
        "--no-second-group",
        dest="second_group",
        action="store_false",
        help="skip the last step: a worker of another group re-reading everything",
    )
    for each in (t, c):
        each.add_argument("--partitions", type=int, default=4)
        each.add_argument("--seed", type=int, default=6)
    return p


async def main(argv: Sequence[str]) -> None:
    await run_scenario("bench.scale_out", parser(), SCENARIOS, argv)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

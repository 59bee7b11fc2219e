"""The hub as production runs it, for the end-to-end benchmarks: a fresh embedded broker, a fresh
migrated PostgreSQL database with API keys for every unit, and `liandong api` and `liandong worker`
as child processes. Also the small helpers the benchmarks share (spreads, machine line, RSS)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import httpx

from bench.clock_rows import asyncpg_dsn, machine
from connectors.kafka.topics import ensure_topics
from events.catalog import Catalog, topic_for
from events.directory import Directory
from projections.db import make_engine
from projections.migrate import upgrade
from services.directory_sync import COMPACTED
from services.embedded_broker import EmbeddedBroker, free_port
from services.keys import issue_key
from tests.support import PG_DSN, REPO, create_pg_database, drop_pg_database

READY_TIMEOUT_S = 120.0
# The benchmark's own connections (visibility polls) carry this name; they are not the hub's cost.
BENCH_APP = "liandong-bench"
DEAD_LETTER_TOPIC = "liandong.deadletter"


def say(message: str) -> None:
    """Progress goes to stderr; stdout holds only the Markdown report."""
    print(message, file=sys.stderr, flush=True)


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """min / median / max, the form every table of these benchmarks uses."""
    if not values:
        return "—"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


async def machine_line() -> str:
    conn = await asyncpg.connect(PG_DSN)
    try:
        return machine(str(await conn.fetchval("SHOW server_version")))
    finally:
        await conn.close()


Scenario = Callable[[argparse.Namespace], Awaitable[str]]


async def run_scenario(
    module: str, parser: argparse.ArgumentParser, scenarios: Mapping[str, Scenario], argv: Sequence[str]
) -> None:
    """A multi-scenario benchmark's main: the machine line, the scenario, then its report headed by
    the command that produced it (docs/benchmarks.md quotes both)."""
    args = parser.parse_args(argv)
    machine_text = await machine_line()
    say(f"{module} {args.scenario}: {machine_text}")
    started = time.monotonic()
    report = await scenarios[args.scenario](args)
    command = f"python -m {module} " + " ".join(argv)
    print(f"`{command}` — {machine_text}; {time.monotonic() - started:.0f} s\n\n{report}")


async def checkpoints(dsn: str) -> dict[tuple[str, int], int]:
    """The projector's checkpoint of every event partition (the hub's own topics left out)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            'SELECT topic, partition, "offset" FROM projection_checkpoints WHERE topic NOT IN '
            "('liandong.directory.events', 'liandong.alert.events', 'liandong.anomaly.events')"
        )
        return {(r["topic"], int(r["partition"])): int(r["offset"]) for r in rows}
    finally:
        await conn.close()


async def bench_connection(dsn: str) -> asyncpg.Connection:
    """A connection of the benchmark itself, told apart from the hub's in pg_stat_activity."""
    return await asyncpg.connect(dsn, server_settings={"application_name": BENCH_APP})


def rss_kib(pid: int) -> int:
    """VmRSS of a live process, from /proc (kB as the kernel reports it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def worker_env(args: object) -> dict[str, str]:
    """LIANDONG_BATCH_* for the worker from a benchmark's --batch-within-ms / --batch-max options."""
    env: dict[str, str] = {}
    within = getattr(args, "batch_within_ms", None)
    most = getattr(args, "batch_max", None)
    if within is not None:
        env["LIANDONG_BATCH_WITHIN_MS"] = str(within)
    if most is not None:
        env["LIANDONG_BATCH_MAX"] = str(most)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each component spends over a window: processes by pid, and the PostgreSQL
    backends serving one database (found in pg_stat_activity at the start and at the end).

    On a shared 2-core machine wall time depends on who else runs; CPU time per event does not, so
    this is what says which component limits a figure, and by how much."""

    def __init__(self, pids: Mapping[str, int], dsn: str | None = None) -> None:
        self._pids = dict(pids)
        self._dsn = dsn
        self._start: dict[str, float] = {}
        self._backends: dict[int, float] = {}
        self.used: dict[str, float] = {}

    async def _backend_pids(self) -> list[int]:
        if self._dsn is None:
            return []
        conn = await asyncpg.connect(self._dsn)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                f"AND pid <> pg_backend_pid() AND application_name <> '{BENCH_APP}'"
            )
            return [int(r["pid"]) for r in rows]
        finally:
            await conn.close()

    async def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        for pid in await self._backend_pids():
            with contextlib.suppress(OSError):  # a backend that ended since the query
                self._backends[pid] = cpu_seconds(pid)

    async def stop(self) -> dict[str, float]:
        for name, pid in self._pids.items():
            try:
                self.used[name] = cpu_seconds(pid) - self._start[name]
            except OSError:
                self.used[name] = float("nan")
        postgres = 0.0
        for pid in set(self._backends) | set(await self._backend_pids()):
            # A backend that ended during the window: its time is lost, and small.
            with contextlib.suppress(OSError):
                postgres += cpu_seconds(pid) - self._backends.get(pid, 0.0)
        if self._dsn is not None:
            self.used["postgres"] = postgres
        return self.used


def per_thousand(used: Mapping[str, float], events: int) -> str:
    """CPU milliseconds per 1,000 events, per component, and their sum."""
    parts = [f"{name} {1_000_000 * s / events:,.0f}" for name, s in used.items()]
    total = sum(used.values())
    return ", ".join([*parts, f"total {1_000_000 * total / events:,.0f}"])


def catalog_topics() -> list[str]:
    return sorted(topic_for(f) for f in Catalog.load().families)


async def create_topics(bootstrap: str, partitions: int) -> None:
    """Every catalog topic with `partitions` partitions, created as the worker would create them."""
    await ensure_topics(
        bootstrap, {**dict.fromkeys(catalog_topics(), partitions), DEAD_LETTER_TOPIC: 1}, 1, COMPACTED
    )


class Child:
    """`python -m MODULE ARGS` as a child process, with its output in a log file."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._args = list(args)
        self._env = {**os.environ, **env}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *self._args],
                cwd=REPO,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Hub:
    """Broker, database, API and worker for one benchmark run; everything fresh, dropped at stop."""

    partitions: int = 6
    api: bool = True
    worker: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    # None: the worker's own FETCH_MAX_WAIT_MS; a number: that wait instead, for an A/B of the setting.
    worker_fetch_wait_ms: int | None = None
    broker: EmbeddedBroker = field(default_factory=EmbeddedBroker)
    url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    children: dict[str, Child] = field(default_factory=dict)
    startup_s: dict[str, float] = field(default_factory=dict)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def dsn(self) -> str:
        return asyncpg_dsn(self.url)

    def env(self) -> dict[str, str]:
        assert self._tmp is not None
        return {
            "LIANDONG_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "LIANDONG_DATABASE_URL": self.url,
            "LIANDONG_DATA_DIR": str(Path(self._tmp.name) / "data"),
            "LIANDONG_TOPIC_PARTITIONS": str(self.partitions),
            "LIANDONG_BROKER_SESSION_TIMEOUT_S": "10",
            **self.extra_env,
        }

    async def start(self) -> Hub:
        """Start everything; on any failure, stop what was started and re-raise."""
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> Hub:
        self._tmp = tempfile.TemporaryDirectory(prefix="liandong-bench-")
        self.broker.start()
        await create_topics(self.broker.bootstrap, self.partitions)
        self.url = await create_pg_database()
        engine = make_engine(self.url)
        try:
            await upgrade(engine)
            directory = Directory.load()
            for unit in sorted(directory.units):
                self.keys[unit] = await issue_key(engine, directory, unit)
        finally:
            await engine.dispose()
        logs = Path(self._tmp.name)
        if self.api:
            port = free_port()
            self.api_url = f"http://127.0.0.1:{port}"
            env = {**self.env(), "LIANDONG_API_PORT": str(port)}
            self.children["api"] = Child("api", ["services.cli", "api"], env, logs / "api.log")
        if self.worker:
            env = {**self.env(), "LIANDONG_WORKER_WEB_PORT": str(free_port())}
            args = ["services.cli", "worker"]
            if self.worker_fetch_wait_ms is not None:
                args = ["bench.worker_variant", str(self.worker_fetch_wait_ms)]
            self.children["worker"] = Child("worker", args, env, logs / "worker.log")
        for child in self.children.values():
            child.start()
        started = time.monotonic()
        if self.api:
            await self._api_ready()
            self.startup_s["api"] = time.monotonic() - started
        if self.worker:
            await self._worker_ready()
            self.startup_s["worker"] = time.monotonic() - started
        return self

    async def _api_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient() as client:
            while True:
                self.children["api"].check_alive()
                try:
                    if (await client.get(f"{self.api_url}/readyz", timeout=2)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the API was not ready after {READY_TIMEOUT_S}s")
                await asyncio.sleep(0.1)  # polling a process that is starting

    async def _worker_ready(self) -> None:
        """The worker has projected the directory it publishes at start: its group has joined."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        conn = await asyncpg.connect(self.dsn)
        try:
            while True:
                self.children["worker"].check_alive()
                if await conn.fetchval("SELECT count(*) FROM directory_units"):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker was not ready after {READY_TIMEOUT_S}s")
                await asyncio.sleep(0.1)  # polling a process that is starting
        finally:
            await conn.close()

    def check_alive(self) -> None:
        for child in self.children.values():
            child.check_alive()

    def log(self, name: str) -> Path:
        return self.children[name].log

    async def stop(self) -> None:
        for child in self.children.values():
            child.stop()
        self.broker.stop()
        if self.url:
            await drop_pg_database(self.url)
        if self._tmp is not None:
            self._tmp.cleanup()


class Gateway:
    """A client of the hub's `POST /v1/events`, one unit's key per request.

    aiohttp rather than httpx: it costs this process about a third of httpx's CPU per request
    (0.06 against 0.17 cores at 50 requests/s), CPU the hub would otherwise lose on 2 shared cores.
    """

    BATCH = "application/cloudevents-batch+json"

    def __init__(self, hub: Hub, connections: int) -> None:
        self._hub = hub
        # Below uvicorn's 5 s keep-alive timeout: a connection the server is closing is never reused.
        connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=2)
        self._session = aiohttp.ClientSession(
            hub.api_url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)
        )

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def post(self, unit: str, body: bytes) -> None:
        """POST one batch; raise unless the gateway answers 202."""
        headers = {"Authorization": f"Bearer {self._hub.keys[unit]}", "Content-Type": self.BATCH}
        async with self._session.post("/v1/events", data=body, headers=headers) as response:
            if response.status != 202:
                text = await response.text()
                raise RuntimeError(f"the gateway answered {response.status}: {text[:500]}")
            await response.read()


class Profiler:
    """py-spy, if installed next to the interpreter: `record` children while a run lasts, then keep,
    per thread, the share of wall time it was busy and the functions with the most samples (own and
    inclusive), so that the report names what limits a figure."""

    RATE = 50

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self._exe = Path(sys.executable).with_name("py-spy")
        self._running: list[tuple[str, subprocess.Popen[bytes], Path, float]] = []

    @property
    def enabled(self) -> bool:
        return self.out_dir is not None and self._exe.exists()

    def record(self, name: str, pid: int, max_s: float = 3600) -> None:
        if not self.enabled:
            return
        assert self.out_dir is not None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        raw = self.out_dir / f"{name}.txt"
        command = [str(self._exe), "record", "--pid", str(pid), "--duration", str(int(max_s))]
        command += ["--rate", str(self.RATE), "--threads", "--format", "raw", "--output", str(raw)]
        # --nonblocking: the profiler must not pause the process it measures.
        command += ["--nonblocking"]
        log = (self.out_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._running.append((name, process, raw, time.monotonic()))

    def finish(self) -> dict[str, str]:
        """Stop the recordings (py-spy writes its file on SIGINT); return a summary per process."""
        summaries: dict[str, str] = {}
        for name, process, raw, started in self._running:
            seconds = time.monotonic() - started
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            process.wait()
            if raw.exists():
                summaries[name] = summarise(raw, seconds * self.RATE)
                raw.with_suffix(".summary.txt").write_text(summaries[name])
        self._running = []
        return summaries


def summarise(raw: Path, wall_samples: float, top: int = 30) -> str:
    """From py-spy's collapsed stacks (--threads): busy share per thread, then the functions with the
    most samples, own and inclusive, over all busy samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    threads: dict[str, int] = {}
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:] or frames
        threads[thread] = threads.get(thread, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    if not samples:
        return "no samples"

    def rows(counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"  {100 * n / samples:5.1f}%  {frame}" for frame, n in ranked]

    busy = [
        f"  {name}: busy {100 * n / max(wall_samples, 1):.0f}% of wall time" for name, n in threads.items()
    ]
    return "\n".join(
        [
            f"{samples} busy samples over {wall_samples / Profiler.RATE:.0f} s",
            *busy,
            "own time (share of busy samples):",
            *rows(own),
            "inclusive time:",
            *rows(total),
        ]
    )


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """The worker's batching and the choice of pipeline, as the hub-against-baseline benches take them."""
    parser.add_argument(
        "--batch-within-ms",
        type=int,
        default=None,
        help="LIANDONG_BATCH_WITHIN_MS for the worker (default: the hub's, 200)",
    )
    parser.add_argument(
        "--batch-max", type=int, default=None, help="LIANDONG_BATCH_MAX for the worker (default: the hub's)"
    )
    parser.add_argument("--only", choices=("hub", "baseline"), default=None, help="run one pipeline only")

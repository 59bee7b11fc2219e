"""The issue-7 read path at a year's scale: every `/v1/analysis/*` endpoint, the lists and their
exports, timed against a real `liandong api` over a simulated year of Panyu.

    .venv/bin/python -m bench.analysis_api                       # ~6–9 min: load a year, then time
    .venv/bin/python -m bench.analysis_api --rounds 20 --no-sqlite --viewers district

**The store.** A fresh hub (`bench.hub_processes.Hub`: embedded broker, migrated PostgreSQL database,
`liandong api` and `liandong worker` as processes), with `LIANDONG_TIME_SOURCE` reading a clock file.
`liandong simulate --speed max --seed 2022 --clock-file … --hub-metrics …` then publishes the whole
simulated 2022 through its three channels (gateway, Kafka SDK, spreadsheet import), moving the
hub's clock as it goes, so the scanner raises the year's alerts as it would have. The benchmark waits
until the worker has projected everything (the event history stops growing), then runs
`VACUUM ANALYZE` (`--no-vacuum` skips it), as autovacuum would have over a year of use.

**The timing.** One client (aiohttp, one keep-alive connection) sends one request at a time, so each
figure is one request's latency with nothing else queued, body read in full. Each round sends every
endpoint once, in an order shuffled per round; `--warmup` rounds are not counted. Each viewer
(`--viewers`: the district supervision section, which sees all 16 townships, and a township
enforcement office) has its own rounds. Two baselines are measured in the same rounds:

- `GET /v1/me`: authenticated (the key lookup and the viewer's scope), no aggregate;
- `SELECT count(*) FROM cases` on the benchmark's own asyncpg connection: one full pass over the
  largest read model, no API at all.

Every endpoint is reported as median and p95 milliseconds and as a ratio to the `/v1/me` median of
the same viewer. "API CPU" is the API process's CPU time (from /proc) per request. The "page" rows
send a dashboard page's requests at once, as the page does (`Promise.allSettled`), and time the
last answer. Exports (CSV and XLSX of the largest list, which ignore paging) run in the first
`--export-rounds` rounds only.

**SQLite** (unless `--no-sqlite`): the same topics replayed by `liandong rebuild` into a new SQLite
file, a second `liandong api` on it, and the same rounds for the district viewer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.clock_rows import table
from bench.hub_processes import Child, Hub, bench_connection, cpu_seconds, machine_line, say
from events.directory import Directory
from projections.db import make_engine
from projections.migrate import upgrade
from services.embedded_broker import free_port
from services.keys import issue_key
from services.simulate import save_keys

YEAR_START = "2022-01-01T00:00:00+08:00"
DISTRICT = "district.justice-bureau"
TOWNSHIP_VIEWER = "shiqiao.enforcement-office"
DRILL_TOWNSHIP = "shiqiao"
SIMULATE_TIMEOUT_S = 900.0
SETTLE_QUIET_S = 6.0
STORE_TABLES = (
    "event_history",
    "cases",
    "matters",
    "matter_parties",
    "clocks",
    "alerts",
    "alert_recipients",
    "anomalies",
    "file_reviews",
    "disputes",
    "inspections",
)
LISTS = (
    "/v1/cases",
    "/v1/coordination",
    "/v1/publications/register",
    "/v1/disputes",
    "/v1/anomalies",
    "/v1/file-reviews",
)
Params = tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------------------------------------
# A simulated year in a real hub


@dataclass
class Year:
    hub: Hub
    tmp: Path
    clock_file: Path
    events: int = 0  # published by the simulator
    publish_s: float = 0.0
    settle_s: float = 0.0  # from the simulator's exit to the worker having projected everything
    vacuum_s: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def worker_metrics(self) -> str:
        # Hub keeps the worker's web port only in the child's environment.
        return f"http://127.0.0.1:{self.hub.children['worker']._env['LIANDONG_WORKER_WEB_PORT']}/metrics"

    def describe(self) -> str:
        rows = ", ".join(f"{name} {n:,}" for name, n in self.rows.items())
        return (
            f"Store: `liandong simulate --speed max --seed 2022` published {self.events:,} events in "
            f"{self.publish_s:.0f} s; the worker had projected all of them {self.settle_s:.0f} s later; "
            f"VACUUM ANALYZE {self.vacuum_s:.1f} s. Rows: {rows}."
        )


async def store_rows(dsn: str) -> dict[str, int]:
    conn = await bench_connection(dsn)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in STORE_TABLES}
    finally:
        await conn.close()


async def load_year(args: argparse.Namespace, tmp: Path, extra_env: dict[str, str] | None = None) -> Year:
    """A hub holding one simulated year, worker caught up. The caller stops `year.hub`."""
    clock = tmp / "clock.txt"
    clock.write_text(YEAR_START)
    hub = Hub(
        partitions=args.partitions,
        extra_env={"LIANDONG_TIME_SOURCE": f"file:{clock}", **(extra_env or {})},
    )
    say("starting the hub")
    await hub.start()
    year = Year(hub, tmp, clock)
    try:
        await _simulate(year, args)
        if not args.no_vacuum:
            conn = await bench_connection(hub.dsn)
            try:
                started = time.perf_counter()
                await conn.execute("VACUUM ANALYZE")
                year.vacuum_s = time.perf_counter() - started
            finally:
                await conn.close()
        year.rows = await store_rows(hub.dsn)
        say("  " + year.describe())
        return year
    except BaseException:
        await hub.stop()
        raise


async def _simulate(year: Year, args: argparse.Namespace) -> None:
    hub, tmp = year.hub, year.tmp
    keys_file = tmp / "keys.json"
    save_keys(keys_file, hub.keys)  # every unit has a key already: the simulator issues none
    summary_file = tmp / "summary.json"
    command = ["services.cli", "simulate", "--speed", "max", "--seed", str(args.seed)]
    command += ["--api", hub.api_url, "--keys-file", str(keys_file), "--work-dir", str(tmp / "sim")]
    command += ["--summary", str(summary_file), "--clock-file", str(year.clock_file)]
    command += ["--hub-metrics", year.worker_metrics]
    simulator = Child("simulate", command, hub.env(), tmp / "simulate.log")
    say("publishing a simulated year (liandong simulate --speed max)")
    started = time.perf_counter()
    simulator.start()
    assert simulator.process is not None
    while simulator.process.poll() is None:
        hub.check_alive()
        if time.perf_counter() - started > SIMULATE_TIMEOUT_S:
            simulator.stop()
            raise TimeoutError(f"the simulator ran for more than {SIMULATE_TIMEOUT_S:.0f} s")
        await asyncio.sleep(1)  # waiting for a process that takes minutes
    if simulator.process.returncode != 0:
        tail = simulator.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the simulator exited with {simulator.process.returncode}:\n{tail}")
    year.publish_s = time.perf_counter() - started
    year.events = int(json.loads(summary_file.read_text(encoding="utf-8"))["events"])
    say(f"  {year.events:,} events published in {year.publish_s:.0f} s; waiting for the worker")
    settled = time.perf_counter()
    conn = await bench_connection(hub.dsn)
    try:
        last, quiet_since = -1, time.perf_counter()
        while True:
            hub.check_alive()
            count = int(await conn.fetchval("SELECT count(*) FROM event_history"))
            now = time.perf_counter()
            if count != last:
                last, quiet_since = count, now
            elif count >= year.events and now - quiet_since >= SETTLE_QUIET_S:
                break
            if now - settled > SIMULATE_TIMEOUT_S:
                raise TimeoutError(f"the worker projected {count:,} events, the year has {year.events:,}")
            await asyncio.sleep(0.5)  # the visibility poll's cadence
        year.settle_s = quiet_since - settled
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------------
# What is timed


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: str  # baseline, analysis, list, page, export
    path: str
    params: Params = ()
    # A page: several requests sent at once, timed to the last answer.
    parts: tuple[tuple[str, Params], ...] = ()
    label_text: str = ""

    @property
    def label(self) -> str:
        if self.label_text:
            return self.label_text
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return f"`{self.path}{'?' + query if query else ''}`"


ME = Endpoint("baseline", "/v1/me")
SQL_COUNT = Endpoint("baseline", "sql", label_text="`SELECT count(*) FROM cases` (asyncpg, no API)")


def analysis_endpoints() -> list[Endpoint]:
    quarter: Params = (("from", "2022-07-01"), ("to", "2022-10-01"))
    return [
        Endpoint("analysis", "/v1/analysis/overview"),
        Endpoint("analysis", "/v1/analysis/overview", quarter),
        Endpoint("analysis", "/v1/analysis/trend", (("period", "month"),)),
        Endpoint("analysis", "/v1/analysis/trend", (("period", "week"),)),
        *(
            Endpoint("analysis", "/v1/analysis/stages", (("group_by", g),))
            for g in ("township", "unit", "category")
        ),
        *(Endpoint("analysis", "/v1/analysis/load", (("group_by", g),)) for g in ("township", "unit")),
        *(
            Endpoint("analysis", "/v1/analysis/on-time", (("group_by", g),))
            for g in ("rule", "township", "unit")
        ),
        Endpoint("analysis", "/v1/analysis/loops"),
        *(
            Endpoint("analysis", "/v1/analysis/reconsiderations", (("group_by", g),))
            for g in ("township", "category")
        ),
        *(
            Endpoint("analysis", "/v1/analysis/file-reviews", (("group_by", g),))
            for g in ("township", "unit")
        ),
    ]


def list_endpoints() -> list[Endpoint]:
    return [
        *(Endpoint("list", path) for path in LISTS),
        Endpoint("list", "/v1/cases", (("limit", "1000"),)),
        Endpoint("list", "/v1/cases", (("offset", "10000"),)),
        Endpoint("list", "/v1/coordination", (("status", "overdue"),)),
        Endpoint("list", "/v1/publications/register", (("status", "overdue"),)),
        Endpoint("list", "/v1/anomalies", (("open", "true"),)),
    ]


def page_endpoints(township: str | None) -> list[Endpoint]:
    """The dashboard's two heaviest pages, with the requests their scripts send (pages/*.js)."""
    scope: Params = (("township", township),) if township else ()
    return [
        Endpoint(
            "page",
            "overview",
            parts=(("/v1/analysis/overview", ()), ("/v1/analysis/trend", (("period", "month"),))),
            label_text="page 区级总览 overview: overview + trend, at once",
        ),
        Endpoint(
            "page",
            "township",
            parts=(
                ("/v1/analysis/overview", scope),
                ("/v1/analysis/trend", (*scope, ("period", "month"))),
                ("/v1/analysis/stages", (*scope, ("group_by", "township"))),
                ("/v1/analysis/load", (*scope, ("group_by", "unit"))),
                ("/v1/analysis/on-time", (*scope, ("group_by", "rule"))),
                ("/v1/analysis/loops", scope),
                ("/v1/anomalies", (*scope, ("open", "true"), ("limit", "50"))),
                ("/v1/analysis/reconsiderations", (*scope, ("group_by", "township"))),
                ("/v1/analysis/file-reviews", (*scope, ("group_by", "township"))),
                ("/v1/cases", (*scope, ("limit", "20"))),
            ),
            label_text=f"page 镇街详情 township drill-down ({township or 'own'}): 10 requests at once",
        ),
    ]


def export_endpoints(path: str) -> list[Endpoint]:
    return [Endpoint("export", path, (("format", f),)) for f in ("csv", "xlsx")]


# ---------------------------------------------------------------------------------------------------
# Timing


@dataclass
class Sample:
    endpoint: Endpoint
    ms: list[float] = field(default_factory=list)
    api_cpu_s: float = 0.0
    size: int = 0  # bytes of the last answer (the sum of the parts for a page)
    rows: int | None = None  # `total` of a list, or items of an aggregate
    statuses: set[int] = field(default_factory=set)

    def pct(self, q: float) -> float:
        data = sorted(self.ms)
        return data[max(0, math.ceil(q * len(data)) - 1)] if data else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    data = sorted(values)
    return data[max(0, math.ceil(q * len(data)) - 1)] if data else float("nan")


class Client:
    """One viewer's requests: sequential on one connection, except a page's parts."""

    def __init__(self, api_url: str, key: str) -> None:
        # Below uvicorn's 5 s keep-alive timeout: a connection the server is closing is never reused.
        connector = aiohttp.TCPConnector(limit=10, keepalive_timeout=2)
        self.session = aiohttp.ClientSession(
            api_url,
            connector=connector,
            headers={"Authorization": f"Bearer {key}"},
            timeout=aiohttp.ClientTimeout(total=300),
        )

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, params: Params) -> tuple[int, bytes]:
        async with self.session.get(path, params=list(params)) as response:
            return response.status, await response.read()


def _rows(body: bytes, status: int) -> int | None:
    if status != 200:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # a CSV or XLSX file
    if isinstance(doc, dict):
        if isinstance(doc.get("total"), int):
            return int(doc["total"])
        if isinstance(doc.get("items"), list):
            return len(doc["items"])
    return None


async def time_rounds(
    client: Client,
    endpoints: Sequence[Endpoint],
    rounds: int,
    warmup: int,
    api_pid: int,
    sql: Callable[[], Awaitable[object]],
    export_rounds: int,
    seed: int,
    check: Callable[[], None],
) -> dict[str, Sample]:
    samples = {e.label: Sample(e) for e in endpoints}
    rng = random.Random(seed)
    for r in range(warmup + rounds):
        order = list(endpoints)
        rng.shuffle(order)
        counted = r >= warmup
        for e in order:
            if e.kind == "export" and r >= warmup + export_rounds:
                continue
            if e.kind == "export" and not counted and r > 0:
                continue  # one warm-up request of an export is enough
            check()
            sample = samples[e.label]
            cpu_before = cpu_seconds(api_pid)
            started = time.perf_counter()
            if e.path == "sql":
                await sql()
                status, size, rows = 200, 0, None
            elif e.parts:
                answers = await asyncio.gather(*(client.get(p, q) for p, q in e.parts))
                status = max(s for s, _ in answers)
                size, rows = sum(len(b) for _, b in answers), None
            else:
                status, body = await client.get(e.path, e.params)
                size, rows = len(body), _rows(body, status)
            elapsed = time.perf_counter() - started
            if not counted:
                continue
            sample.ms.append(elapsed * 1000)
            sample.api_cpu_s += cpu_seconds(api_pid) - cpu_before
            sample.size, sample.rows = size, rows
            sample.statuses.add(status)
        if counted:
            say(f"    round {r - warmup + 1}/{rounds}")
    bad = {s.endpoint.label: sorted(s.statuses) for s in samples.values() if s.statuses - {200}}
    if bad:
        raise RuntimeError(f"endpoints answered other than 200: {bad}")
    return samples


async def largest_list(client: Client) -> tuple[str, int]:
    totals: dict[str, int] = {}
    for path in LISTS:
        status, body = await client.get(path, (("limit", "1"),))
        totals[path] = _rows(body, status) or 0
    path = max(totals, key=lambda p: totals[p])
    return path, totals[path]


@dataclass
class Beside:
    """`/v1/me`, sent one after the other while one heavy request is in flight."""

    heavy: Endpoint
    heavy_ms: list[float] = field(default_factory=list)
    me_ms: list[float] = field(default_factory=list)


async def beside_heavy(client: Client, heavy: Sequence[Endpoint], repeats: int) -> list[Beside]:
    """How much one heavy request slows the API's other requests: the API is one process and one
    event loop, and a file export runs in a thread that shares the GIL with it."""
    out = []
    for e in heavy:
        found = Beside(e)
        for _ in range(repeats):
            started = time.perf_counter()
            task = asyncio.create_task(client.get(e.path, e.params))
            await asyncio.sleep(0.005)  # the heavy request leaves first
            while not task.done():
                sent = time.perf_counter()
                status, _ = await client.get(ME.path, ())
                if status != 200:
                    raise RuntimeError(f"/v1/me answered {status}")
                found.me_ms.append((time.perf_counter() - sent) * 1000)
            status, _ = await task
            if status != 200:
                raise RuntimeError(f"{e.label} answered {status}")
            found.heavy_ms.append((time.perf_counter() - started) * 1000)
        out.append(found)
    return out


@dataclass
class Series:
    """All timings of one viewer on one store."""

    store: str
    viewer: str
    samples: dict[str, Sample]
    beside: list[Beside] = field(default_factory=list)

    @property
    def base_ms(self) -> float:
        return percentile(self.samples[ME.label].ms, 0.5)


async def measure_viewer(
    store: str,
    api_url: str,
    api_pid: int,
    key: str,
    viewer: str,
    sql: Callable[[], Awaitable[object]],
    args: argparse.Namespace,
    check: Callable[[], None],
) -> Series:
    client = Client(api_url, key)
    try:
        biggest, total = await largest_list(client)
        say(f"  {store}, {viewer}: largest list {biggest} ({total:,} rows)")
        drill = DRILL_TOWNSHIP if viewer == DISTRICT else None
        endpoints = [
            ME,
            SQL_COUNT,
            *analysis_endpoints(),
            *list_endpoints(),
            *page_endpoints(drill),
            *export_endpoints(biggest),
        ]
        samples = await time_rounds(
            client, endpoints, args.rounds, args.warmup, api_pid, sql, args.export_rounds, args.seed, check
        )
        series = Series(store, viewer, samples)
        if viewer == DISTRICT and args.beside_repeats:
            say(f"  {store}: /v1/me beside heavy requests")
            heavy = [
                Endpoint("analysis", "/v1/analysis/trend", (("period", "week"),)),
                Endpoint("analysis", "/v1/analysis/overview"),
                *export_endpoints(biggest),
            ]
            series.beside = await beside_heavy(client, heavy, args.beside_repeats)
        return series
    finally:
        await client.close()


# ---------------------------------------------------------------------------------------------------
# SQLite: the same topics replayed into a file, and an API on it


async def sqlite_store(year: Year, path: Path) -> tuple[float, dict[str, str]]:
    """`liandong rebuild` into a new SQLite file; keys issued first. Returns the replay's seconds."""
    url = f"sqlite+aiosqlite:///{path}"
    engine = make_engine(url)
    keys: dict[str, str] = {}
    try:
        await upgrade(engine)
        directory = Directory.load()
        for unit in (DISTRICT, TOWNSHIP_VIEWER):
            keys[unit] = await issue_key(engine, directory, unit)
    finally:
        await engine.dispose()
    env = {**year.hub.env(), "LIANDONG_DATABASE_URL": url, "LIANDONG_LOG_LEVEL": "WARNING"}
    rebuild = Child("rebuild-sqlite", ["services.cli", "rebuild"], env, year.tmp / "rebuild-sqlite.log")
    started = time.perf_counter()
    rebuild.start()
    assert rebuild.process is not None
    while rebuild.process.poll() is None:
        year.hub.check_alive()
        await asyncio.sleep(0.5)  # waiting for a replay that takes a minute
    if rebuild.process.returncode != 0:
        raise RuntimeError(f"the SQLite rebuild failed:\n{rebuild.log.read_text(errors='replace')[-3000:]}")
    return time.perf_counter() - started, keys


async def measure_sqlite(year: Year, args: argparse.Namespace) -> tuple[list[Series], str]:
    path = year.tmp / "store.db"
    say("replaying the year into SQLite (liandong rebuild)")
    replay_s, keys = await sqlite_store(year, path)
    url = f"sqlite+aiosqlite:///{path}"
    port = free_port()
    env = {**year.hub.env(), "LIANDONG_DATABASE_URL": url, "LIANDONG_API_PORT": str(port)}
    api = Child("api-sqlite", ["services.cli", "api"], env, year.tmp / "api-sqlite.log")
    api.start()
    db = sqlite3.connect(path)
    try:
        api_url = f"http://127.0.0.1:{port}"
        await _wait_ready(api, api_url)
        rows = {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in STORE_TABLES}

        async def sql() -> object:
            return db.execute("SELECT count(*) FROM cases").fetchone()

        out = []
        for viewer in args.viewers_units[:1] if args.sqlite_district_only else args.viewers_units:
            out.append(
                await measure_viewer(
                    "SQLite", api_url, api.pid, keys[viewer], viewer, sql, args, api.check_alive
                )
            )
        size = path.stat().st_size / 2**20
        note = (
            f"SQLite store: `liandong rebuild` replayed the topics into a new file in {replay_s:.0f} s "
            f"({size:,.0f} MiB); rows: {', '.join(f'{t} {n:,}' for t, n in rows.items())}."
        )
        return out, note
    finally:
        db.close()
        api.stop()


async def _wait_ready(api: Child, api_url: str) -> None:
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while True:
            api.check_alive()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{api_url}/readyz") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError("the SQLite API was not ready after 120 s")
            await asyncio.sleep(0.1)  # polling a process that is starting


# ---------------------------------------------------------------------------------------------------
# Report


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.1f}" if base else "—"


def series_table(series: Series, sqlite: Series | None) -> str:
    base = series.base_ms
    headers = [
        "kind",
        "endpoint",
        "rows",
        "KiB",
        "median ms",
        "p95 ms",
        "× `/v1/me` (median)",
        "× `/v1/me` (p95)",
        "API CPU ms/request",
    ]
    if sqlite is not None:
        headers += ["SQLite median ms", "SQLite p95 ms", "SQLite × its `/v1/me`"]
    rows: list[Sequence[object]] = []
    for label, s in series.samples.items():
        row: list[object] = [
            s.endpoint.kind,
            label,
            f"{s.rows:,}" if s.rows is not None else "",
            f"{s.size / 1024:,.1f}" if s.size else "",
            f"{s.pct(0.5):,.1f}",
            f"{s.pct(0.95):,.1f}",
            _ratio(s.pct(0.5), base),
            _ratio(s.pct(0.95), base),
            f"{1000 * s.api_cpu_s / len(s.ms):,.1f}" if s.ms and s.endpoint.path != "sql" else "",
        ]
        if sqlite is not None:
            other = sqlite.samples.get(label)
            if other is None or not other.ms:
                row += ["", "", ""]
            else:
                row += [
                    f"{other.pct(0.5):,.1f}",
                    f"{other.pct(0.95):,.1f}",
                    _ratio(other.pct(0.5), sqlite.base_ms),
                ]
        rows.append(row)
    return table(headers, rows)


def beside_table(series: Series) -> str:
    alone = series.samples[ME.label]
    rows = []
    for b in series.beside:
        p50, p95 = percentile(b.me_ms, 0.5), percentile(b.me_ms, 0.95)
        rows.append(
            (
                b.heavy.label,
                f"{percentile(b.heavy_ms, 0.5):,.0f}",
                len(b.me_ms),
                f"{p50:,.1f} / {p95:,.1f} / {max(b.me_ms, default=0):,.1f}",
                f"{p50 / alone.pct(0.5):.1f} / {p95 / alone.pct(0.95):.1f}",
            )
        )
    return table(
        [
            "in flight",
            "its ms (median)",
            "`/v1/me` sent meanwhile",
            "`/v1/me` ms (p50 / p95 / max)",
            "× `/v1/me` alone (p50 / p95)",
        ],
        rows,
    )


def summary_lines(series: Series) -> list[str]:
    analysis = [s for s in series.samples.values() if s.endpoint.kind == "analysis"]
    lists = [s for s in series.samples.values() if s.endpoint.kind == "list"]
    out = []
    for name, group in (("analysis endpoints", analysis), ("list pages", lists)):
        if not group:
            continue
        slowest = max(group, key=lambda s: s.pct(0.5))
        middle = percentile([s.pct(0.5) for s in group], 0.5)
        out.append(
            f"- {series.store}, {series.viewer}: {name}: median of medians {middle:,.1f} ms "
            f"({middle / series.base_ms:.1f}× `/v1/me`); slowest {slowest.endpoint.label} "
            f"{slowest.pct(0.5):,.1f} ms median, {slowest.pct(0.95):,.1f} ms p95 "
            f"({slowest.pct(0.5) / series.base_ms:.1f}×)."
        )
    me = series.samples[ME.label]
    out.append(
        f"- {series.store}, {series.viewer}: `/v1/me` median {me.pct(0.5):.1f} ms, p95 {me.pct(0.95):.1f} ms."
    )
    return out


def report(header: str, pg: list[Series], sqlite: list[Series], notes: list[str]) -> str:
    parts = [header, "", *notes, ""]
    for series in pg:
        lite = next((s for s in sqlite if s.viewer == series.viewer), None)
        parts += [f"### Viewer `{series.viewer}`", "", series_table(series, lite), ""]
        for one in (series, lite):
            if one is not None and one.beside:
                parts += [f"{one.store}: other requests beside a heavy one (one client each)", ""]
                parts += [beside_table(one), ""]
    parts += ["Summary:", "", *(line for s in [*pg, *sqlite] for line in summary_lines(s))]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30, help="counted rounds per viewer (default 30)")
    parser.add_argument("--warmup", type=int, default=2, help="rounds not counted (default 2)")
    parser.add_argument("--export-rounds", type=int, default=5, help="rounds that include the exports (5)")
    parser.add_argument("--seed", type=int, default=2022, help="the simulator's seed (default 2022)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic (default 6)")
    parser.add_argument(
        "--viewers",
        nargs="+",
        choices=("district", "township"),
        default=["district", "township"],
        help="the district supervision section and/or a township enforcement office",
    )
    parser.add_argument(
        "--beside-repeats",
        type=int,
        default=3,
        help="times each heavy request runs beside /v1/me (3; 0 skips)",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite store")
    parser.add_argument(
        "--sqlite-all-viewers", action="store_true", help="time every viewer on SQLite (default: district)"
    )
    parser.add_argument("--no-vacuum", action="store_true", help="skip VACUUM ANALYZE after the load")
    return parser


async def measure(args: argparse.Namespace) -> str:
    begun = time.monotonic()
    host = await machine_line()
    args.viewers_units = [DISTRICT if v == "district" else TOWNSHIP_VIEWER for v in args.viewers]
    args.sqlite_district_only = not args.sqlite_all_viewers
    with tempfile.TemporaryDirectory(prefix="liandong-bench-analysis-") as tmp:
        year = await load_year(args, Path(tmp))
        try:
            hub = year.hub
            conn = await bench_connection(hub.dsn)
            try:
                pg: list[Series] = []
                for viewer in args.viewers_units:

                    async def sql() -> object:
                        return await conn.fetchval("SELECT count(*) FROM cases")

                    say(f"timing PostgreSQL, {viewer}")
                    pg.append(
                        await measure_viewer(
                            "PostgreSQL",
                            hub.api_url,
                            hub.children["api"].pid,
                            hub.keys[viewer],
                            viewer,
                            sql,
                            args,
                            hub.check_alive,
                        )
                    )
            finally:
                await conn.close()
            notes = [year.describe()]
            lite: list[Series] = []
            if not args.no_sqlite:
                lite, note = await measure_sqlite(year, args)
                notes.append(note)
        finally:
            await year.hub.stop()
    header = (
        f"## Analysis API\n\nMachine: {host}. {args.rounds} counted rounds after {args.warmup} warm-up, "
        f"exports in {args.export_rounds}. Run took {time.monotonic() - begun:.0f} s."
    )
    return report(header, pg, lite, notes)


async def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    print(await measure(args))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

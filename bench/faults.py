"""Faults, measured: the figures of docs/reliability.md.

    .venv/bin/python -m bench.faults kills --events 100000 --kills 10   # SIGKILL the worker 10 times
    .venv/bin/python -m bench.faults pause --pause-s 10                 # SIGSTOP the broker 10 s
    .venv/bin/python -m bench.faults gateway-ab                         # its publish bound, then/now
    .venv/bin/python -m bench.faults pgrestart --outages 2,5,10,20      # restart PostgreSQL
    .venv/bin/python -m bench.faults poison --events 20000              # rolling upgrade, replay
    .venv/bin/python -m bench.faults bisect                             # a poison record's cost
    .venv/bin/python -m bench.faults takeover --kills 5                 # two workers, one killed

Every scenario starts afresh: an embedded broker (Tansu), a migrated PostgreSQL database, and
`liandong worker` (and `liandong api` for `pause`) as child processes (bench/hub_processes.py). The
events are bench/workload.py's mix over the whole catalog, validated and encoded as the gateway
does. The database that `pgrestart` stops is a private cluster (tests/pgcluster.py), never the
machine's.

What every scenario checks at the end, and reports:

- lost: acknowledged events (acks=all, or a 202) missing from `event_history`;
- doubled: the events the `cases` rows count minus the case events acknowledged (a redelivered
  event applied twice counts twice);
- rebuild: `python -m services.rebuild` (`liandong rebuild`) replays the topics into a new database;
  every projection table is compared row by row with the live one (tests/projection_diff.py says
  which columns are left out and why).

Progress goes to stderr; stdout holds the Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.clock_rows import asyncpg_dsn, table
from bench.hub_processes import Child, Hub, checkpoints, create_topics, run_scenario, say
from bench.workload import Request, encode, prepare
from connectors.kafka.publisher import BrokerUnavailable, KafkaPublisher
from events.serde import EncodedRecord
from projections.db import make_engine
from projections.migrate import upgrade
from services.embedded_broker import EmbeddedBroker, free_port
from services.settings import Settings
from tests.pgcluster import PgCluster
from tests.projection_diff import compared_tables, diff_stores, explain, replay_like
from tests.release_worker import previous_release
from tests.support import REPO, create_pg_database, drop_pg_database

OURS = "area NOT IN ('directory', 'alert', 'anomaly')"
POLL_S = 0.2
SESSION_S = 10  # the hub's default broker session timeout


def fmt(values: Sequence[float], unit: str = "s") -> str:
    """min / median / max."""
    if not values:
        return "—"
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f} {unit}"


# --- the pieces -----------------------------------------------------------------------------------


def worker_child(env: dict[str, str], logs: Path, name: str) -> tuple[Child, int]:
    port = free_port()
    child = Child(
        name, ["services.cli", "worker"], {**env, "LIANDONG_WORKER_WEB_PORT": str(port)}, logs / f"{name}.log"
    )
    return child, port


def sigkill(child: Child) -> None:
    process = child.process
    assert process is not None
    process.kill()
    process.wait()


async def metric(port: int, name: str) -> float:
    """A worker's counter (all label values summed), 0 when the worker does not answer."""
    try:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=2)).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and not s.labels.get("type", "").startswith("cn.gov.liandong.directory.")
    )


async def visible(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM event_history WHERE {OURS}"))
    finally:
        await conn.close()


async def until(
    probe: Callable[[], Awaitable[bool]], timeout_s: float, what: str, check: Callable[[], None]
) -> float:
    """Poll until `probe` holds; return the seconds it took."""
    started = time.monotonic()
    while True:
        check()
        try:
            if await probe():
                return time.monotonic() - started
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass  # the database is away (a scenario stopped it): ask again
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)  # polling cadence


class Feed:
    """Publishes encoded records at a steady rate (acks=all), in the background; keeps the ids of
    those the broker acknowledged."""

    def __init__(
        self, bootstrap: str, records: Sequence[tuple[str, EncodedRecord]], rate: float, chunk: int = 250
    ) -> None:
        self.bootstrap = bootstrap
        self.records = records
        self.rate = rate
        self.chunk = chunk
        self.acked: list[str] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Feed:
        self.task = asyncio.create_task(self._run())
        return self

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()

    async def wait(self) -> list[str]:
        assert self.task is not None
        await self.task
        return self.acked

    async def _run(self) -> None:
        publisher = KafkaPublisher(self.bootstrap, client_id="bench-feed", partitions=6)
        started = time.monotonic()
        try:
            for start in range(0, len(self.records), self.chunk):
                chunk = self.records[start : start + self.chunk]
                while True:
                    try:
                        await publisher.publish(chunk)
                        break
                    except BrokerUnavailable:
                        await asyncio.sleep(0.5)  # a retry, as any publisher does
                self.acked += [dict(r.headers)["ce_id"].decode() for _, r in chunk]
                ahead = started + (start + len(chunk)) / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # the feed's pace
        finally:
            await publisher.close()


@dataclass
class Verdict:
    acked: int
    lost: int
    doubled: int
    tables: int
    differing: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def equal(self) -> str:
        return "yes" if not self.differing else "NO: " + ", ".join(self.differing)


async def verify(
    live_url: str,
    bootstrap: str,
    acked: Sequence[str],
    tmp: Path,
    stop_workers: Callable[[], None],
    timeout_s: float = 600,
) -> Verdict:
    """Wait until every acknowledged event is visible; count lost and doubled; stop the workers (their
    timers keep publishing); compare with a replay of the same records into a new database."""
    dsn = asyncpg_dsn(live_url)
    wanted = set(acked)
    await until(partial(_at_least, dsn, len(wanted)), timeout_s, "every acknowledged event", lambda: None)
    conn = await asyncpg.connect(dsn)
    try:
        stored = {r[0] for r in await conn.fetch(f"SELECT event_id FROM event_history WHERE {OURS}")}
        case_events = await conn.fetchval(
            "SELECT count(*) FROM event_history WHERE area = 'case' AND event_id = ANY($1::text[])",
            list(wanted),
        )
        counted = await conn.fetchval("SELECT coalesce(sum(event_count), 0) FROM cases")
    finally:
        await conn.close()
    verdict = Verdict(
        len(wanted), len(wanted - stored), int(counted) - int(case_events), len(compared_tables())
    )
    stop_workers()
    rebuilt_url = await create_pg_database()
    try:
        settings = Settings.from_env(
            {
                "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
                "LIANDONG_DATABASE_URL": rebuilt_url,
                "LIANDONG_DATA_DIR": str(tmp / "rebuild"),
            }
        )
        say("    rebuilding from the topics into a new database, up to the live checkpoints …")
        live, rebuilt = make_engine(live_url), make_engine(rebuilt_url)
        try:
            started = time.monotonic()
            replayed = await replay_like(live, settings)
            say(f"    replayed {replayed.records:,} records in {time.monotonic() - started:.0f} s")
            diffs = await diff_stores(live, rebuilt)
        finally:
            await live.dispose()
            await rebuilt.dispose()
        verdict.differing = [d.table for d in diffs]
        verdict.detail = explain(diffs)
    finally:
        await drop_pg_database(rebuilt_url)
    if verdict.detail:
        say(verdict.detail)
    return verdict


async def command(argv: Sequence[str], env: dict[str, str]) -> str:
    """`python -m ARGV` to its end; its standard output. A failure raises with its error output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({process.returncode}): {err.decode(errors='replace')[-2000:]}"
        )
    return out.decode()


async def _at_least(dsn: str, n: int) -> bool:
    return await visible(dsn) >= n


async def workload_records(events: int, seed: int) -> tuple[list[Request], list[tuple[str, EncodedRecord]]]:
    say(f"  preparing {events:,} events of the workload mix (seed {seed}) …")
    reqs, _ = prepare(seed, events, 250)
    return reqs, await encode(reqs)


def verdict_rows(v: Verdict) -> list[tuple[str, str]]:
    return [
        ("events acknowledged", f"{v.acked:,}"),
        ("lost (acknowledged, not in the history)", str(v.lost)),
        ("doubled (case events counted minus acknowledged)", str(v.doubled)),
        (f"projection tables equal to a rebuild ({v.tables} compared)", v.equal),
    ]


# --- 1. SIGKILL the worker ------------------------------------------------------------------------


async def kills(args: argparse.Namespace) -> str:
    _, records = await workload_records(args.events, args.seed)
    rng = random.Random(args.seed)
    hub = await Hub(api=False, worker=False).start()
    logs = Path(tempfile.mkdtemp(prefix="liandong-kills-"))
    worker, port = worker_child(hub.env(), logs, "worker")
    resumes: list[float] = []
    redelivered = 0.0
    try:
        worker.start()
        feed = Feed(hub.broker.bootstrap, records, args.rate).start()
        started = time.monotonic()
        progress = 0  # events visible when the current worker started
        for k in range(1, args.kills + 1):
            # Kill k lands once the feed has published k/(kills+1) of the events and the current
            # worker has committed since it started, then anywhere within the next second.
            threshold = k * args.events // (args.kills + 1)
            await until(
                partial(_published, feed, threshold), 900, f"{threshold:,} published", worker.check_alive
            )
            await until(
                partial(_moved, hub.dsn, progress), 600, "a commit by this worker", worker.check_alive
            )
            await asyncio.sleep(rng.uniform(0, 1.0))  # land the kill anywhere in a batch
            redelivered += await metric(port, "liandong_events_redelivered_total")
            before = await visible(hub.dsn)
            killed = time.monotonic()
            sigkill(worker)
            worker, port = worker_child(hub.env(), logs, f"worker-{k}")
            worker.start()
            await until(partial(_resumed, hub.dsn, before, feed), 600, "a commit", worker.check_alive)
            waited = time.monotonic() - killed
            progress = await visible(hub.dsn)
            if progress > before:  # else the feed had ended and nothing was left to do
                resumes.append(waited)
            say(f"    kill {k}: at {before:,} visible, {len(feed.acked):,} published; resumed {waited:.1f} s")
        acked = await feed.wait()
        await until(partial(_at_least, hub.dsn, len(acked)), 600, "every event", worker.check_alive)
        redelivered += await metric(port, "liandong_events_redelivered_total")
        verdict = await verify(hub.url, hub.broker.bootstrap, acked, logs, worker.stop)
        total_s = time.monotonic() - started
    finally:
        worker.stop()
        await hub.stop()
    rows = [
        ("SIGKILLs of the worker", str(args.kills)),
        *verdict_rows(verdict),
        (f"SIGKILL to the next worker's first commit ({len(resumes)} kills with work left)", fmt(resumes)),
        ("records redelivered and skipped by the checkpoint guard (at least)", f"{redelivered:,.0f}"),
        ("run, first event to last check", f"{total_s:.0f} s"),
    ]
    return table(["", "figure"], rows)


async def _moved(dsn: str, before: int) -> bool:
    return await visible(dsn) > before


async def _resumed(dsn: str, before: int, feed: Feed) -> bool:
    """A commit since `before`; or nothing left to commit (the feed ended and all is visible)."""
    now = await visible(dsn)
    return now > before or (feed.done and now >= len(feed.acked))


async def _published(feed: Feed, n: int) -> bool:
    if feed.done and len(feed.acked) < n:
        await feed.wait()  # raises what stopped the feed
    return len(feed.acked) >= n


# --- 2. Pause the broker --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    started: float
    seconds: float
    status: int
    request: Request


async def pause(args: argparse.Namespace) -> str:
    reqs, _ = prepare(args.seed, args.events, args.batch)
    hub = await Hub(api=True, worker=True).start()
    answers: list[Answer] = []
    pending = iter(reqs)
    try:
        pid = hub.broker.pid
        assert pid is not None
        stop_at = time.monotonic() + args.before_s + args.pause_s + args.after_s

        async def client(session: aiohttp.ClientSession) -> None:
            for request in pending:
                if time.monotonic() > stop_at:
                    return
                answers.append(await _post(session, hub, request))
                await asyncio.sleep(args.think_s)  # each client's pace

        async def pauser() -> tuple[float, float]:
            await asyncio.sleep(args.before_s)  # traffic flows before the fault
            os.kill(pid, signal.SIGSTOP)
            stopped = time.monotonic()
            say(f"    broker paused (SIGSTOP pid {pid})")
            try:
                await asyncio.sleep(args.pause_s)  # the pause itself
            finally:
                os.kill(pid, signal.SIGCONT)
            say("    broker resumed (SIGCONT)")
            return stopped, time.monotonic()

        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(hub.api_url, timeout=timeout) as session:
            fault = asyncio.create_task(pauser())
            await asyncio.gather(*(client(session) for _ in range(args.clients)))
            stopped, resumed = await fault
            accepted = [i for a in answers if a.status == 202 for i in a.request.ids]
            refused = [a for a in answers if a.status == 503]
            # Which refused events the broker stored anyway (it acknowledged after the deadline):
            await until(partial(_at_least, hub.dsn, len(set(accepted))), 300, "the accepted", hub.check_alive)
            stored_anyway = await _stored(hub.dsn, [i for a in refused for i in a.request.ids])
            # The clients resend what was refused, with the same ids (Retry-After has passed).
            for a in refused:
                again = await _post(session, hub, a.request)
                if again.status != 202:
                    raise RuntimeError(f"a resend was answered {again.status}")
        everything = sorted({i for a in answers for i in a.request.ids})
        verdict = await verify(
            hub.url, hub.broker.bootstrap, everything, Path(tempfile.mkdtemp()), hub.children["worker"].stop
        )
    finally:
        await hub.stop()
    # Every request the pause touched: sent before it and not answered when it began, or sent during it.
    touched = [a for a in answers if a.started < resumed and a.started + a.seconds > stopped]
    to_503 = [a.seconds for a in answers if a.status == 503]
    after = [a.started + a.seconds - resumed for a in answers if a.status == 202 and a.started >= resumed]
    rows = [
        ("broker paused (SIGSTOP)", f"{resumed - stopped:.1f} s"),
        ("clients, each sending a request of 50 events, then the next", str(args.clients)),
        (
            "requests: 202 / 503 / other",
            f"{sum(a.status == 202 for a in answers)} / {len(refused)} / "
            f"{sum(a.status not in (202, 503) for a in answers)}",
        ),
        (
            "requests the pause touched: 503 / 202 (acknowledged after SIGCONT, within the bound)",
            f"{sum(a.status == 503 for a in touched)} / {sum(a.status == 202 for a in touched)}",
        ),
        ("time to a 503 (min / median / max)", fmt(to_503)),
        ("longest any request waited", f"{max(a.seconds for a in answers):.1f} s"),
        ("SIGCONT to the first 202 of a request sent after it", f"{min(after):.2f} s" if after else "—"),
        (
            "events refused with 503 that the broker stored anyway (acknowledged late)",
            f"{stored_anyway} of {sum(len(a.request.ids) for a in refused)}",
        ),
        *verdict_rows(verdict),
    ]
    return table(["", "figure"], rows)


async def _post(session: aiohttp.ClientSession, hub: Hub, request: Request) -> Answer:
    headers = {
        "Authorization": f"Bearer {hub.keys[request.unit]}",
        "Content-Type": "application/cloudevents-batch+json",
    }
    started = time.monotonic()
    async with session.post("/v1/events", data=request.body, headers=headers) as response:
        await response.read()
        return Answer(started, time.monotonic() - started, response.status, request)


async def _stored(dsn: str, ids: Sequence[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM event_history WHERE event_id = ANY($1::text[])", list(ids)
            )
        )
    finally:
        await conn.close()


# --- 2b. The gateway's publish bound, before and after -------------------------------------------


async def gateway_ab(args: argparse.Namespace) -> str:
    """Waves of single-event POSTs (in-process API, real broker and PostgreSQL) while the broker is
    paused, with the publisher of git revision `--rev` and with this tree's. One wave is sent while
    the first producer waits for its acknowledgements, one after it was given up on (when a new
    producer must connect to the silent broker)."""
    import importlib.util

    from connectors.kafka import publisher as current

    source = await command_output(["git", "show", f"{args.rev}:connectors/kafka/publisher.py"])
    # The old module raises the gateway's BrokerUnavailable, so that its failures are mapped to 503.
    source = source.replace("class BrokerUnavailable(RuntimeError):", "class _Unused(RuntimeError):")
    source += "\nfrom connectors.kafka.publisher import BrokerUnavailable  # noqa\n"
    path = Path(tempfile.mkdtemp()) / "previous_publisher.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("previous_publisher", path)
    assert spec is not None
    assert spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    variants: list[tuple[str, Callable[[str], KafkaPublisher]]] = [
        (f"before ({args.rev[:7]})", lambda b: previous.KafkaPublisher(b, partitions=6)),
        (
            "after",
            lambda b: current.KafkaPublisher(b, ack_timeout_s=current.GATEWAY_ACK_TIMEOUT_S, partitions=6),
        ),
    ]
    rows: list[tuple[str, str, str, str, str]] = []
    for label, make in variants:
        waits = await _paused_posts(make, args.pause_s, args.wave)
        for wave, (low, high) in (("first", (0.0, 16.0)), ("second", (16.0, 1e9))):
            mine = [w for w in waits if low <= w[0] < high]
            rows.append(
                (
                    label,
                    wave,
                    fmt([w[1] for w in mine]),
                    str(sum(w[2] == 503 for w in mine)),
                    str(sum(w[2] == 202 for w in mine)),
                )
            )
        say(f"    {label}: " + ", ".join(f"{a:.1f}+{w:.1f}s→{code}" for a, w, code in sorted(waits)))
    return table(
        ["publisher", "wave", "a request's wait (min / median / max)", "503", "202 after SIGCONT"], rows
    )


async def _paused_posts(
    make: Callable[[str], KafkaPublisher], pause_s: float, wave: int
) -> list[tuple[float, float, int]]:
    """(sent after the pause began, seconds waited, status) of each request."""
    import json

    from events.directory import Directory
    from services.api.app import create_app
    from services.keys import issue_key
    from tests.support import case_event, cloudevent_json

    broker = EmbeddedBroker()
    url = await create_pg_database()
    waits: list[tuple[float, float, int]] = []
    try:
        broker.start()
        pid = broker.pid
        assert pid is not None
        engine = make_engine(url)
        await upgrade(engine)
        key = await issue_key(engine, Directory.load(), "shilou.enforcement-office")
        await engine.dispose()
        settings = Settings.from_env({"LIANDONG_DATA_DIR": tempfile.mkdtemp(), "LIANDONG_DATABASE_URL": url})
        app = create_app(settings, broker.bootstrap)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents+json"}
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://hub", timeout=300
            ) as c,
        ):
            await app.state.ctx.publisher.close()
            app.state.ctx.publisher = make(broker.bootstrap)
            body = json.dumps(cloudevent_json(case_event("filed", "AB-0")))
            assert (await c.post("/v1/events", content=body, headers=headers)).status_code == 202
            os.kill(pid, signal.SIGSTOP)
            paused = time.monotonic()

            async def one(i: int, at: float) -> None:
                await asyncio.sleep(at)  # when this request arrives
                started = time.monotonic()
                event = json.dumps(cloudevent_json(case_event("filed", f"AB-{i}")))
                response = await c.post("/v1/events", content=event, headers=headers)
                waits.append((started - paused, time.monotonic() - started, response.status_code))

            async def resume() -> None:
                await asyncio.sleep(pause_s)  # the pause itself
                os.kill(pid, signal.SIGCONT)

            arrivals = [i * 0.25 for i in range(wave)] + [16 + i * 0.25 for i in range(wave)]
            await asyncio.gather(resume(), *(one(i, at) for i, at in enumerate(arrivals)))
    finally:
        if broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        broker.stop()
        await drop_pg_database(url)
    return waits


async def command_output(argv: Sequence[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {err.decode(errors='replace')}")
    return out.decode()


# --- 3. Restart PostgreSQL ------------------------------------------------------------------------


async def pgrestart(args: argparse.Namespace) -> str:
    outages = [float(x) for x in args.outages.split(",")]
    _, records = await workload_records(args.events, args.seed)
    cluster = PgCluster()
    broker = EmbeddedBroker()
    logs = Path(tempfile.mkdtemp(prefix="liandong-pgrestart-"))
    rows: list[tuple[str, str, str, str]] = []
    worker: Child | None = None
    try:
        cluster.start()
        broker.start()
        await create_topics(broker.bootstrap, 6)
        url = await cluster.create_database()
        engine = make_engine(url)
        await upgrade(engine)
        await engine.dispose()
        dsn = asyncpg_dsn(url)
        env = {
            "LIANDONG_KAFKA_BOOTSTRAP": broker.bootstrap,
            "LIANDONG_DATABASE_URL": url,
            "LIANDONG_DATA_DIR": str(logs / "data"),
            "LIANDONG_TOPIC_PARTITIONS": "6",
        }
        worker, _ = worker_child(env, logs, "worker")
        worker.start()
        pid = worker.pid
        feed = Feed(broker.bootstrap, records, args.rate).start()
        for outage in outages:
            await asyncio.sleep(args.gap_s)  # the feed flows between outages
            before = await visible(dsn)
            stop_s = cluster.stop("fast")
            down = time.monotonic()
            await asyncio.sleep(outage)  # the outage itself
            start_s = cluster.start()
            up = time.monotonic()
            backlog = len(feed.acked)
            await until(
                partial(_moved, dsn, before), 120, "the first commit after the restart", worker.check_alive
            )
            resume = time.monotonic() - up
            await until(partial(_at_least, dsn, backlog), 600, "the backlog", worker.check_alive)
            caught_up = time.monotonic() - up
            rows.append((f"{up - down:.1f}", f"{stop_s + start_s:.1f}", f"{resume:.1f}", f"{caught_up:.1f}"))
            say(
                f"    outage {up - down:.1f} s: first commit after {resume:.1f} s, "
                f"caught up after {caught_up:.1f} s"
            )
        acked = await feed.wait()
        same = worker.pid == pid
        verdict = await verify(url, broker.bootstrap, acked, logs, worker.stop)
        retries = (logs / "worker.log").read_text(errors="replace").count("retrying in")
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        cluster.destroy()
    head = table(
        [
            "outage (s)",
            "pg_ctl stop + start (s)",
            "restart to the worker's first commit (s)",
            "restart to backlog caught up (s)",
        ],
        rows,
    )
    summary = table(
        ["", "figure"],
        [
            *verdict_rows(verdict),
            ("the same worker process throughout (never restarted)", "yes" if same else "NO"),
            ("batch retries logged by the worker", str(retries)),
        ],
    )
    return head + "\n\n" + summary


# --- 4. Poison: a rolling upgrade, dead letters, replay ------------------------------------------


async def poison(args: argparse.Namespace) -> str:
    _, records = await workload_records(args.events, args.seed)
    hub = await Hub(api=False, worker=False).start()
    logs = Path(tempfile.mkdtemp(prefix="liandong-poison-"))
    try:
        old_env = {**hub.env(), "LIANDONG_WORKER_WEB_PORT": str(free_port())}
        schemas = str(previous_release(logs))
        old = Child("old-worker", ["tests.release_worker", schemas], old_env, logs / "old-worker.log")
        old.start()
        acked = await Feed(hub.broker.bootstrap, records, args.rate).start().wait()
        filed = await _filed_ids(records)
        expected_dead = len(filed)
        others = len(acked) - expected_dead
        went_on = await until(partial(_at_least, hub.dsn, others), 600, "every other event", old.check_alive)
        from services.deadletters import read_dead_letters

        letters, _ = await read_dead_letters(hub.broker.bootstrap)
        reasons: dict[str, int] = {}
        for d in letters:
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
        old.stop()
        new, _ = worker_child(hub.env(), logs, "worker")
        new.start()
        started = time.monotonic()
        env = {**os.environ, **hub.env(), "LIANDONG_LOG_LEVEL": "WARNING"}
        output = await command(["services.cli", "deadletter", "replay", "--reason", "unknown_schema"], env)
        replay_s = time.monotonic() - started
        say("    " + output.replace("\n", "\n    "))
        again = await command(["services.cli", "deadletter", "replay"], env)
        await until(partial(_at_least, hub.dsn, len(set(acked))), 600, "every event applied", new.check_alive)
        applied_s = time.monotonic() - started
        verdict = await verify(hub.url, hub.broker.bootstrap, acked, logs, new.stop)
    finally:
        await hub.stop()
    rows = [
        ("events published by the upgraded gateway", f"{len(acked):,}"),
        ("of them case.filed with the new revision (unknown to the old worker)", f"{expected_dead:,}"),
        ("dead letters, by reason", ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items()))),
        ("the other events projected by the old worker meanwhile", f"{others:,} (after {went_on:.1f} s)"),
        ("`liandong deadletter replay --reason unknown_schema`, wall time", f"{replay_s:.1f} s"),
        ("upgraded worker started, replay, to every event applied", f"{applied_s:.1f} s"),
        ("a second replay", again.splitlines()[0] if again else "—"),
        *verdict_rows(verdict),
    ]
    return table(["", "figure"], rows)


async def _filed_ids(records: Sequence[tuple[str, EncodedRecord]]) -> set[str]:
    kind = b"cn.gov.liandong.case.filed.v1"
    return {dict(r.headers)["ce_id"].decode() for _, r in records if dict(r.headers)["ce_type"] == kind}


# --- 4b. What a poison record costs a batch -------------------------------------------------------


async def bisect(args: argparse.Namespace) -> str:
    """A batch with one record a projection raises on, against the same batch clean, in-process on
    PostgreSQL through the hub's projections (the projection's bug is simulated: it raises on one
    subject)."""
    from events.catalog import Catalog
    from events.mechanisms import Mechanisms
    from events.registry import LocalSchemaRegistry
    from events.serde import EventCodec
    from projections.hub import hub_projections
    from projections.runtime import Positioned, Projector, SourceRecord
    from services.settings import Settings
    from services.timesource import time_source
    from services.worker.batches import run_batch
    from services.worker.closed_loop import ClosedLoop

    class Sink:
        async def send(self, record: SourceRecord, reason: str, detail: str) -> None:
            pass

    class Incarnation:
        current = "bench"

        async def refresh(self) -> bool:
            return False

    class Defective:
        name = "defective"

        def __init__(self) -> None:
            self.poison: str | None = None

        def handles(self, event_type: str) -> bool:
            return True

        async def write(self, conn: object, events: Sequence[Positioned]) -> None:
            if any(p.event.id == self.poison for p in events):
                raise KeyError("a projection's bug")

    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    rows: list[tuple[str, str, str, str, str]] = []
    for size in args.sizes:
        clean_s: list[float] = []
        poisoned_s: list[float] = []
        for run in range(args.runs):
            for poisoned in (False, True):
                _, records = await workload_records(size, args.seed + 100 * run + int(poisoned))
                url = await create_pg_database()
                engine = make_engine(url)
                try:
                    await upgrade(engine)
                    settings = Settings.from_env(
                        {"LIANDONG_DATABASE_URL": url, "LIANDONG_DATA_DIR": tempfile.mkdtemp()}
                    )
                    loop = ClosedLoop.load(settings)
                    defective = Defective()
                    projections = [
                        *hub_projections(
                            Mechanisms.load(), loop.rules, loop.calendar, loop.settings, time_source("system")
                        ),
                        defective,
                    ]
                    projector = Projector(engine, "hub", codec, projections, Sink(), Incarnation())
                    batch = [
                        SourceRecord(topic, 0, i, 0, r.key, r.value, r.headers)
                        for i, (topic, r) in enumerate(records)
                    ]
                    if poisoned:
                        defective.poison = dict(records[len(records) // 3][1].headers)["ce_id"].decode()
                    started = time.perf_counter()
                    await run_batch(projector, batch)
                    (poisoned_s if poisoned else clean_s).append(time.perf_counter() - started)
                finally:
                    await engine.dispose()
                    await drop_pg_database(url)
        ratio = statistics.median(poisoned_s) / statistics.median(clean_s)
        rows.append(
            (
                f"{size:,}",
                fmt(clean_s),
                fmt(poisoned_s),
                f"{ratio:.2f}",
                f"{2 * max(1, size).bit_length() - 1}",
            )
        )
        say(f"    batch of {size:,}: clean {fmt(clean_s)}, one poison {fmt(poisoned_s)}, ×{ratio:.2f}")
    return table(
        [
            "batch",
            "clean (min / median / max)",
            "one poison record",
            "× clean (medians)",
            "transactions (about)",
        ],
        rows,
    )


# --- 5. Two workers, one killed -------------------------------------------------------------------


async def takeover(args: argparse.Namespace) -> str:
    _, records = await workload_records(args.events, args.seed)
    hub = await Hub(
        api=False, worker=False, extra_env={"LIANDONG_BROKER_SESSION_TIMEOUT_S": str(args.session_s)}
    ).start()
    logs = Path(tempfile.mkdtemp(prefix="liandong-takeover-"))
    pair = [worker_child(hub.env(), logs, "worker-a"), worker_child(hub.env(), logs, "worker-b")]
    takeovers: list[float] = []
    try:
        for child, _ in pair:
            child.start()
        feed = Feed(hub.broker.bootstrap, records, args.rate).start()

        def alive() -> None:
            for child, _ in pair:
                child.check_alive()

        for k in range(args.kills):
            marks = [await metric(port, "liandong_events_projected_total") for _, port in pair]

            async def both_busy(marks: list[float] = marks) -> bool:
                now = [await metric(port, "liandong_events_projected_total") for _, port in pair]
                return all(n > m for n, m in zip(now, marks, strict=True))

            async def busy_or_over() -> bool:
                return feed.done or await both_busy()

            await until(busy_or_over, 300, "both workers to project", alive)
            if not await both_busy():
                break  # the feed ended: a kill now would show no take-over
            victim = k % 2
            before = await checkpoints(hub.dsn)
            killed = time.monotonic()
            sigkill(pair[victim][0])
            survivor = pair[1 - victim][0]
            await until(
                partial(_taken_over, hub.dsn, before, feed), 300, "the take-over", survivor.check_alive
            )
            if not await _all_moved(hub.dsn, before):
                break  # the feed ended first: a partition without new records shows no take-over
            takeovers.append(time.monotonic() - killed)
            say(f"    kill {k + 1}: the survivor resumed every partition after {takeovers[-1]:.1f} s")
            if feed.done:
                break
            pair[victim] = worker_child(hub.env(), logs, f"worker-{k}")
            pair[victim][0].start()
        acked = await feed.wait()

        def stop_both() -> None:
            for child, _ in pair:
                child.stop()

        verdict = await verify(hub.url, hub.broker.bootstrap, acked, logs, stop_both)
    finally:
        for child, _ in pair:
            child.stop()
        await hub.stop()
    rows = [
        ("broker session timeout (LIANDONG_BROKER_SESSION_TIMEOUT_S)", f"{args.session_s} s"),
        ("SIGKILLs (one of two workers, alternately; the killed one restarted)", str(len(takeovers))),
        ("SIGKILL to the survivor committing on every partition (min / median / max)", fmt(takeovers)),
        *verdict_rows(verdict),
    ]
    return table(["", "figure"], rows)


async def _taken_over(dsn: str, before: dict[tuple[str, int], int], feed: Feed) -> bool:
    return await _all_moved(dsn, before) or (feed.done and await visible(dsn) >= len(feed.acked))


async def _all_moved(dsn: str, before: dict[tuple[str, int], int]) -> bool:
    now = await checkpoints(dsn)
    return all(now.get(k, -1) > v for k, v in before.items())


# --- main -----------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[argparse.Namespace], Awaitable[str]]] = {
    "kills": kills,
    "pause": pause,
    "gateway-ab": gateway_ab,
    "pgrestart": pgrestart,
    "poison": poison,
    "bisect": bisect,
    "takeover": takeover,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="scenario", required=True)
    k = sub.add_parser("kills", help="SIGKILL the worker during a run")
    k.add_argument("--events", type=int, default=100_000)
    k.add_argument("--kills", type=int, default=10)
    k.add_argument(
        "--rate", type=float, default=600, help="events/s published (the feed must outlast the kills)"
    )
    pz = sub.add_parser("pause", help="SIGSTOP the broker during ingest through the gateway")
    pz.add_argument("--events", type=int, default=60_000, help="events prepared (the run stops by time)")
    pz.add_argument("--batch", type=int, default=50, help="events per request")
    pz.add_argument("--clients", type=int, default=4)
    pz.add_argument("--think-s", type=float, default=0.1, help="each client's pause between requests")
    pz.add_argument("--before-s", type=float, default=5)
    pz.add_argument("--pause-s", type=float, default=10)
    pz.add_argument("--after-s", type=float, default=10)
    ab = sub.add_parser(
        "gateway-ab", help="the gateway's publish bound under a pause: a git revision against now"
    )
    ab.add_argument("--rev", default="442040164a3ee9397161c7ae674f10e5dfe06bf3", help="the 'before' revision")
    ab.add_argument("--pause-s", type=float, default=40)
    ab.add_argument("--wave", type=int, default=16, help="requests per wave (one every 0.25 s)")
    pg = sub.add_parser("pgrestart", help="stop and start PostgreSQL (a private cluster) during a run")
    pg.add_argument("--events", type=int, default=60_000)
    pg.add_argument("--rate", type=float, default=1_000)
    pg.add_argument("--outages", default="2,5,10,20", help="outage lengths in seconds")
    pg.add_argument("--gap-s", type=float, default=5, help="seconds of traffic before each outage")
    po = sub.add_parser("poison", help="a rolling upgrade: dead letters from the old worker, then replay")
    po.add_argument("--events", type=int, default=20_000)
    po.add_argument("--rate", type=float, default=5_000)
    bi = sub.add_parser("bisect", help="what one poison record costs a batch")
    bi.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1_000, 10_000])
    bi.add_argument("--runs", type=int, default=3)
    t = sub.add_parser("takeover", help="two workers, SIGKILL one, the survivor takes over")
    t.add_argument("--events", type=int, default=100_000)
    t.add_argument("--kills", type=int, default=5)
    t.add_argument(
        "--rate", type=float, default=600, help="events/s published (the feed must outlast the kills)"
    )
    t.add_argument("--session-s", type=int, default=SESSION_S)
    for each in (k, pz, ab, pg, po, bi, t):
        each.add_argument("--seed", type=int, default=8)
    return p


async def main(argv: Sequence[str]) -> None:
    await run_scenario("bench.faults", parser(), SCENARIOS, argv)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

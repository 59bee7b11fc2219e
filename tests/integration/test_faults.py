"""Faults, for real: SIGKILLed workers, a paused broker, a restarted PostgreSQL, poison records.

Each test is the scaled-down form of a run of bench/faults.py, whose figures are in
docs/reliability.md. Real processes, a real broker (Tansu) and real PostgreSQL throughout; the
database that is restarted is a private cluster (tests/pgcluster.py), never the machine's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.envelope import Envelope
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import cases, event_history, projection_checkpoints
from services.embedded_broker import EmbeddedBroker, free_port
from services.rebuild import rebuild
from services.settings import Settings
from tests.pgcluster import PgCluster
from tests.processes import Workers
from tests.projection_diff import assert_equals_replay
from tests.release_worker import previous_release
from tests.support import REPO, case_event, wait_for

TOPIC = topic_for("case")
DEAD_LETTER = "liandong.deadletter"
CN = timezone(timedelta(hours=8))
# Tansu rebalances a group only once a dead member's session has expired: the lowest allowed value
# makes a SIGKILL's take-over as quick as it can be.
QUICK_SESSION = {"LIANDONG_BROKER_SESSION_TIMEOUT_S": "6"}


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(pg_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def codec() -> EventCodec:
    instance = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await instance.prepare()
    return instance


async def publish(bootstrap: str, events: Sequence[Envelope]) -> None:
    encoder = await codec()
    publisher = KafkaPublisher(bootstrap, partitions=3)
    try:
        await publisher.publish([(TOPIC, encoder.encode(e)) for e in events])
    finally:
        await publisher.close()


class Feed:
    """Case lifecycles (filed, decided, closed) published in the background at a steady pace, on every
    partition, until stopped: the load a worker is killed under."""

    def __init__(
        self, bootstrap: str, prefix: str, subjects_per_chunk: int = 10, pause_s: float = 0.2
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.subjects_per_chunk = subjects_per_chunk
        self.pause_s = pause_s
        self.ids: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Feed:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> list[str]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.ids

    async def _run(self) -> None:
        encoder = await codec()
        publisher = KafkaPublisher(self.bootstrap, partitions=3)
        serial = 0
        try:
            while not self._stop.is_set():
                events = []
                for _ in range(self.subjects_per_chunk):
                    serial += 1
                    events += [
                        case_event(k, f"{self.prefix}-{serial}") for k in ("filed", "decided", "closed")
                    ]
                await publisher.publish([(TOPIC, encoder.encode(e)) for e in events])
                self.ids += [e.id for e in events]  # acknowledged (acks=all): these must all arrive
                await asyncio.sleep(self.pause_s)  # the feed's pace, not synchronisation
        finally:
            await publisher.close()


async def count(engine: AsyncEngine, query: Select[int]) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


def history_of(prefix: str) -> Select[int]:
    return select(func.count()).select_from(event_history).where(event_history.c.subject.startswith(prefix))


async def case_checkpoints(engine: AsyncEngine) -> dict[int, int]:
    t = projection_checkpoints
    async with engine.connect() as conn:
        rows = await conn.execute(select(t.c.partition, t.c.offset).where(t.c.topic == TOPIC))
        return {int(r.partition): int(r.offset) for r in rows}


async def projected_by(port: int) -> float:
    """Case events this worker process projected (its own /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "liandong_events_projected_total"
        and s.labels.get("type", "").startswith("cn.gov.liandong.case.")
    )


async def assert_no_loss_no_double(
    engine: AsyncEngine, prefix: str, ids: Sequence[str], workers: Workers
) -> None:
    async def all_there() -> bool:
        workers.assert_running()
        return await count(engine, history_of(prefix)) >= len(ids)

    await wait_for(all_there, 60, f"all {len(ids)} acknowledged events in the history")
    async with engine.connect() as conn:
        stored = set(
            (
                await conn.execute(
                    select(event_history.c.event_id).where(event_history.c.subject.startswith(prefix))
                )
            ).scalars()
        )
        applied = await conn.scalar(
            select(func.sum(cases.c.event_count)).where(cases.c.case_id.startswith(prefix))
        )
    assert stored == set(ids), f"{len(set(ids) - stored)} acknowledged events lost"
    # Each case counts the events applied to it: a redelivered event applied again would show here.
    assert applied == len(ids), f"{applied} events applied for {len(ids)} published"


# --- 1, 3 and 5: PostgreSQL restarted, then one of two workers SIGKILLed --------------------------


@pytest.fixture
def private_pg() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of this test's own, which it may stop (never the machine's on 5432)."""
    cluster = PgCluster()
    cluster.start()
    yield cluster
    cluster.destroy()


async def test_through_a_database_restart_and_a_sigkill_nothing_is_lost_doubled_or_unlike_a_rebuild(
    fresh_broker: EmbeddedBroker, private_pg: PgCluster, tmp_path: Path
) -> None:
    """Two workers project a steady feed. PostgreSQL is stopped and started again: both resume by
    themselves. Then one worker is SIGKILLed: the other takes over its partitions. Every event
    acknowledged by the broker is projected once, and the projections equal a from-scratch rebuild.
    (Scenario 1's ten kills of one worker, and the figures, are in bench/faults.py.)"""
    bootstrap = fresh_broker.bootstrap
    url = await private_pg.create_database()
    engine = make_engine(url)
    pool = Workers(tmp_path, url)
    try:
        await upgrade(engine)
        feed = Feed(bootstrap, "K").start()
        doomed, doomed_port = pool.start(bootstrap, **QUICK_SESSION)
        survivor, survivor_port = pool.start(bootstrap, **QUICK_SESSION)

        async def both_projecting() -> bool:
            pool.assert_running()
            return await projected_by(doomed_port) > 0 and await projected_by(survivor_port) > 0

        # Both hold case partitions: the one killed later leaves some that only a take-over resumes.
        await wait_for(both_projecting, 60, "both workers to project case events")

        # PostgreSQL goes away for 2 s; the feed goes on.
        await engine.dispose()  # the test's own connections die with the server too
        counts = (await projected_by(doomed_port), await projected_by(survivor_port))
        private_pg.stop("fast")
        await asyncio.sleep(2)  # the outage itself, not a wait for a condition
        private_pg.start()
        restarted, published = time.monotonic(), len(feed.ids)

        async def both_resumed() -> bool:
            pool.assert_running()
            again = (await projected_by(doomed_port), await projected_by(survivor_port))
            return all(a > b for a, b in zip(again, counts, strict=True)) and (
                await count(engine, history_of("K-")) >= published
            )

        await wait_for(both_resumed, 40, "both workers to catch up after the restart, by themselves")
        catch_up_s = time.monotonic() - restarted
        for worker in (doomed, survivor):
            log = (tmp_path / f"worker-{pool.started.index(worker)}.log").read_text(errors="replace")
            assert "retrying in" in log, "each worker saw the database go away and retried"

        # One worker is SIGKILLed; the survivor must resume every partition the dead one held.
        before = await case_checkpoints(engine)
        killed_at = time.monotonic()
        pool.kill(doomed)

        async def every_partition_moved() -> bool:
            pool.assert_running()
            now = await case_checkpoints(engine)
            return all(now.get(p, -1) > offset for p, offset in before.items())

        await wait_for(every_partition_moved, 45, "the survivor to resume the killed worker's partitions")
        takeover_s = time.monotonic() - killed_at
        ids = await feed.stop()
        await assert_no_loss_no_double(engine, "K-", ids, pool)
        assert len(before) == 3
        assert survivor.poll() is None, "the survivor is the process started first; nobody restarted it"
        # The longest backoff between retries (5 s) bounds how long a recovered database waits.
        assert catch_up_s < 15, f"catching up after the restart took {catch_up_s:.1f} s"
        # A dead member is noticed when its session expires (6 s here): the take-over follows.
        assert takeover_s < 6 + 20, f"the take-over took {takeover_s:.1f} s"
        pool.stop_all()  # their timers would go on publishing while the replay reads
        await assert_equals_replay(engine, bootstrap, tmp_path / "rebuilt")
    finally:
        pool.stop_all()
        await engine.dispose()


# --- 2: the broker paused ------------------------------------------------------------------------


async def test_while_the_broker_is_paused_the_gateway_answers_503_in_bounded_time_and_loses_no_202(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path
) -> None:
    from connectors.kafka.publisher import GATEWAY_ACK_TIMEOUT_S
    from events.directory import Directory
    from services.api.app import create_app
    from services.keys import issue_key
    from tests.support import cloudevent_json

    assert fresh_broker.pid is not None
    engine = make_engine(pg_url)
    try:
        await upgrade(engine)
        key = await issue_key(engine, Directory.load(), "shilou.enforcement-office")
    finally:
        await engine.dispose()
    settings = Settings.from_env({"LIANDONG_DATA_DIR": str(tmp_path), "LIANDONG_DATABASE_URL": pg_url})
    app = create_app(settings, fresh_broker.bootstrap)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents+json"}
    accepted: list[str] = []
    refused: list[Envelope] = []

    async def post(client: httpx.AsyncClient, event: Envelope) -> tuple[int, float, httpx.Response]:
        started = time.monotonic()
        response = await client.post(
            "/v1/events", content=json.dumps(cloudevent_json(event)), headers=headers
        )
        if response.status_code == 202:
            accepted.append(event.id)
        elif response.status_code == 503:
            refused.append(event)
        return response.status_code, time.monotonic() - started, response

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub", timeout=60
        ) as client,
    ):
        assert (await post(client, case_event("filed", "B-0")))[0] == 202
        os.kill(fresh_broker.pid, signal.SIGSTOP)
        try:
            during = await asyncio.gather(*(post(client, case_event("filed", f"B-{i}")) for i in range(1, 5)))
        finally:
            os.kill(fresh_broker.pid, signal.SIGCONT)
        resumed = time.monotonic()
        while (await post(client, case_event("filed", f"B-{len(accepted) + len(refused)}")))[0] != 202:
            assert time.monotonic() - resumed < 20, "the gateway did not recover after SIGCONT"
        recovery_s = time.monotonic() - resumed
        # The clients resend what was refused, with the same ids: safe, as duplicates count once.
        retried = list(refused)
        for event in retried:
            assert (await post(client, event))[0] == 202

    for status, seconds, response in during:
        assert status == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"] == "5"
        assert response.json()["errors"][0]["field"] == "broker"
        assert seconds < GATEWAY_ACK_TIMEOUT_S + 2, f"a request waited {seconds:.1f} s for its 503"
    assert recovery_s < 10
    # Every acknowledged event is projected, once: replayed through the hub's projector.
    await rebuild(Settings.from_env({**_env(settings), "LIANDONG_KAFKA_BOOTSTRAP": fresh_broker.bootstrap}))
    engine = make_engine(pg_url)
    try:
        async with engine.connect() as conn:
            stored = list(
                (
                    await conn.execute(
                        select(event_history.c.event_id).where(event_history.c.subject.startswith("B-"))
                    )
                ).scalars()
            )
            applied = await conn.scalar(
                select(func.sum(cases.c.event_count)).where(cases.c.case_id.startswith("B-"))
            )
    finally:
        await engine.dispose()
    assert set(accepted) <= set(stored)
    assert len(stored) == len(set(accepted)) == applied


def _env(settings: Settings) -> dict[str, str]:
    return {"LIANDONG_DATA_DIR": str(settings.data_dir), "LIANDONG_DATABASE_URL": settings.database_url}


# --- 4: poison records and the dead-letter replay ------------------------------------------------


def start_release_worker(workers: Workers, bootstrap: str, schemas: Path) -> subprocess.Popen[bytes]:
    """`liandong worker` of the older release (tests/release_worker.py), tracked by `workers`."""
    log = (workers.tmp_path / f"worker-{len(workers.started)}.log").open("wb")
    env = {
        **os.environ,
        "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
        "LIANDONG_DATABASE_URL": workers.pg_url,
        "LIANDONG_DATA_DIR": str(workers.tmp_path / "data"),
        "LIANDONG_WORKER_WEB_PORT": str(free_port()),
        "LIANDONG_TOPIC_PARTITIONS": "3",
        **QUICK_SESSION,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.release_worker", str(schemas)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    workers.started.append(process)
    return process


def deadletter_cli(bootstrap: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "deadletter", *args],
        cwd=REPO,
        env={**os.environ, "LIANDONG_KAFKA_BOOTSTRAP": bootstrap, "LIANDONG_LOG_LEVEL": "WARNING"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


async def test_an_unknown_schema_is_dead_lettered_the_stream_goes_on_and_a_replay_after_upgrade_applies_once(
    fresh_broker: EmbeddedBroker, engine: AsyncEngine, workers: Workers, tmp_path: Path
) -> None:
    from services.deadletter_cli import format_listing
    from services.deadletters import list_dead_letters, read_dead_letters, replay

    bootstrap = fresh_broker.bootstrap
    # The gateway already runs the new release: its case.filed records carry revision 2's schema id.
    filed = case_event("filed", "DL-1", data={**case_event("filed", "x").data, "party_name": "张三"})
    later = [case_event("decided", "DL-1"), *(case_event("decided", f"DL-{i}") for i in range(2, 6))]
    await publish(bootstrap, [filed, *later])
    old = start_release_worker(workers, bootstrap, previous_release(tmp_path))

    async def stream_went_on() -> bool:
        workers.assert_running()
        return await count(engine, history_of("DL-")) == len(later)

    await wait_for(stream_went_on, 60, "the older worker to project the events after the poison record")
    letters, _ = await read_dead_letters(bootstrap)
    assert [(d.reason, d.ce_id, d.topic) for d in letters] == [("unknown_schema", filed.id, TOPIC)]
    listing = "\n".join(format_listing(await list_dead_letters(bootstrap), None, None, False, True))
    assert "unknown_schema" in listing
    assert filed.id in listing
    assert "待重放 pending" in listing
    assert "张三" not in listing, "a listing never shows the payload"
    assert "村民" not in listing, "a listing never shows the payload"
    # The fix: the worker is upgraded to the release that knows revision 2.
    workers.stop(old)
    workers.start(bootstrap, **QUICK_SESSION)
    publisher = KafkaPublisher(bootstrap, partitions=3)
    try:
        dry = await replay(bootstrap, publisher, dry_run=True)
        assert [d.ce_id for d in dry.replayed] == [filed.id]
        output = await asyncio.to_thread(deadletter_cli, bootstrap, "replay", "--reason", "unknown_schema")
        assert "已重放 replayed: 1" in output, output

        async def applied() -> bool:
            workers.assert_running()
            return await count(engine, history_of("DL-")) == len(later) + 1

        await wait_for(applied, 60, "the upgraded worker to apply the replayed record")
        again = await replay(bootstrap, publisher)
    finally:
        await publisher.close()
    assert (len(again.replayed), again.already) == (0, 1), "each dead letter is replayed once"
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(cases.c.stage, cases.c.event_count).where(cases.c.case_id == "DL-1"))
        ).one()
    assert tuple(row) == ("decided", 2)
    assert "已处理 handled" in deadletter_cli(bootstrap, "list")


async def test_a_record_that_makes_a_projection_raise_is_set_aside_and_its_partition_goes_on(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projections.runtime import Positioned, Projector, SourceRecord
    from services.worker import batches

    class Sink:
        def __init__(self) -> None:
            self.sent: list[tuple[int, str, str]] = []

        async def send(self, record: SourceRecord, reason: str, detail: str) -> None:
            self.sent.append((record.offset, reason, detail))

    class Incarnation:
        current = "test"

        async def refresh(self) -> bool:
            return False

    class Defective:
        """A projection with a bug that one record's data trips (it raises, as a KeyError would)."""

        name = "defective"

        def __init__(self, poison: set[str]) -> None:
            self.poison = poison

        def handles(self, event_type: str) -> bool:
            return True

        async def write(self, conn: object, events: Sequence[Positioned]) -> None:
            if any(p.event.subject in self.poison for p in events):
                raise KeyError("township")

    from projections.case_store import CaseRegistryProjection  # the real case registry beside it

    encoder = await codec()
    events = [case_event("filed", f"PZ-{i}") for i in range(40)]
    records = [
        SourceRecord(TOPIC, i % 2, i // 2, 0, r.key, r.value, r.headers)
        for i, r in enumerate(encoder.encode(e) for e in events)
    ]
    sink = Sink()
    defective = Defective({"PZ-17"})
    projector = Projector(engine, "hub", encoder, [CaseRegistryProjection(), defective], sink, Incarnation())

    result = await batches.run_batch(projector, records)

    poison = records[17]
    assert [(offset, reason) for offset, reason, _ in sink.sent] == [(poison.offset, "projection_failed")]
    assert sink.sent[0][2].startswith("KeyError")
    assert result.dead_lettered == {"projection_failed": 1}
    async with engine.connect() as conn:
        stored = set(
            (await conn.execute(select(cases.c.case_id).where(cases.c.case_id.startswith("PZ-")))).scalars()
        )
    assert stored == {f"PZ-{i}" for i in range(40)} - {"PZ-17"}
    assert await case_checkpoints(engine) == {0: 19, 1: 19}, "both partitions went on past the poison"
    # Redelivered (a crash before the offset commit): nothing is applied or dead-lettered again.
    again = await batches.run_batch(projector, records)
    assert (again.skipped_redelivered, len(sink.sent)) == (40, 1)

    # A deployment that fails every record is not poison: after a few, the worker stops instead.
    class Stop(Exception):
        pass

    def stop(record: SourceRecord, exc: BaseException, limit: int) -> None:
        raise Stop(limit)

    monkeypatch.setattr(batches, "_die", stop)
    broken = [case_event("filed", f"PB-{i}") for i in range(20)]
    defective.poison = {e.subject for e in broken}
    more = [
        SourceRecord(TOPIC, 0, 100 + i, 0, r.key, r.value, r.headers)
        for i, r in enumerate(map(encoder.encode, broken))
    ]
    with pytest.raises(Stop):
        await batches.run_batch(projector, more, policy=batches.PoisonPolicy(max_consecutive=3))
    assert len(sink.sent) == 1 + 3


def test_a_replayed_dead_letter_is_the_original_record_without_dead_letter_headers_and_with_its_count() -> (
    None
):
    from aiokafka import ConsumerRecord

    from services.deadletters import DeadLetter, parse_since

    headers = [
        ("ce_id", b"E-1"),
        ("ce_type", b"cn.gov.liandong.case.filed.v1"),
        ("liandong_replays", b"1"),
        ("liandong_dlq_reason", b"unknown_schema"),
        ("liandong_dlq_topic", b"liandong.case.events"),
        ("liandong_dlq_offset", b"17"),
    ]
    message = ConsumerRecord(
        DEAD_LETTER, 0, 4, 1_700_000_000_000, 0, b"C-1", b"\x00payload", None, 3, 8, tuple(headers)
    )
    letter = DeadLetter.of(message)
    assert (letter.reason, letter.topic, letter.source_offset, letter.replays) == (
        "unknown_schema",
        "liandong.case.events",
        17,
        1,
    )
    again = letter.redriven()
    assert (again.key, again.value) == (b"C-1", b"\x00payload")
    assert again.headers == [
        ("ce_id", b"E-1"),
        ("ce_type", b"cn.gov.liandong.case.filed.v1"),
        ("liandong_replays", b"2"),
    ]

    now = datetime(2026, 11, 29, 12, 0, tzinfo=CN)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("2026-11-28T09:30", now) == datetime(2026, 11, 28, 9, 30, tzinfo=CN)
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_since("yesterday", now)

"""Helpers shared by the suites: waiting on conditions, fresh databases, hub processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiokafka
import asyncpg

from events.envelope import Envelope
from events.ids import uuid7
from projections.db import make_engine
from projections.migrate import upgrade

T = TypeVar("T")

PG_DSN = os.environ.get("LIANDONG_TEST_PG", "postgresql://127.0.0.1:5432/test")
PG_HINT = (
    "PostgreSQL is not reachable at {dsn} ({error}). The tests need a real PostgreSQL with trust auth. "
    "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start, "
    "or point LIANDONG_TEST_PG at another server."
)
REPO = Path(__file__).resolve().parent.parent


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = await probe()
            if value:
                return value
        except Exception as exc:  # remembered for the failure message
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}; last error: {last_error!r}"
            )
        await asyncio.sleep(interval_s)  # why: polling interval of a condition wait, not synchronisation


async def create_pg_database(dsn: str = PG_DSN) -> str:
    """A fresh, empty database; returns its SQLAlchemy URL."""
    name = f"liandong_t_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(PG_HINT.format(dsn=dsn, error=exc)) from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    if "@" not in base:
        base = base.replace("://", f"://{os.environ.get('USER', 'root')}@", 1)
    return f"{base}/{name}"


async def create_migrated_pg_database() -> str:
    """A fresh database with the hub's schema at head; returns its SQLAlchemy URL."""
    url = await create_pg_database()
    engine = make_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url


async def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def case_event(
    kind: str,
    subject: str,
    *,
    source: str = "shilou.enforcement-office",
    event_id: str | None = None,
    time_: datetime | None = None,
    data: Mapping[str, Any] | None = None,
) -> Envelope:
    """A valid case event of `kind` (filed, decided, closed) with realistic data."""
    defaults: dict[str, Mapping[str, Any]] = {
        "filed": {
            "township": "shilou",
            "category": "illegal_construction",
            "handling_unit": "shilou.enforcement-office",
            "title": "村民未批先建三层住宅",
            "case_number": None,
            "requires_legal_review": False,
        },
        "decided": {
            "outcome": "penalty",
            "penalty_kinds": ["fine"],
            "fine_amount_fen": 500_000,
            "decision_number": None,
            "legal_review_completed": True,
        },
        "closed": {"closure_reason": "executed"},
    }
    return Envelope(
        id=event_id or str(uuid7()),
        type=f"cn.gov.liandong.case.{kind}.v1",
        source=source,
        subject=subject,
        time=time_ or datetime.now(UTC),
        data=dict(data if data is not None else defaults[kind]),
    )


def cloudevent_json(event: Envelope) -> dict[str, Any]:
    """The structured-mode JSON a publishing unit would send for `event`."""
    data = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in event.data.items()}
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": event.time.isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }


def liandong(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """Start `liandong ARGS` as a real process of this interpreter."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env},
        cwd=cwd or REPO,
        **kwargs,
    )


def catalog_event(
    short_type: str,
    subject: str,
    *,
    source: str = "shilou.enforcement-office",
    time_: datetime | None = None,
    event_id: str | None = None,
    **data: Any,
) -> Envelope:
    """An event of any catalog type (`transfer.requested.v1`) with sample data, overridden by `data`.

    The data is Avro-ready (dates as `date`), as the gateway would hand it on after validation.
    """
    from events.catalog import Catalog
    from events.directory import Directory
    from events.jsonavro import from_json
    from events.samples import sample_data

    kind = Catalog.load().get("cn.gov.liandong." + short_type)
    raw = {**sample_data(kind.latest), **data}
    return Envelope(
        id=event_id or str(uuid7()),
        type=kind.type,
        source=source,
        subject=subject,
        time=time_ or datetime.now(UTC),
        data=from_json(kind.latest, raw, "data", Directory.load().knows),
    )


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free port of 127.0.0.1, lifespan included; yield its URL.

    For what an in-process transport cannot show, such as a streaming (SSE) response.
    """
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the server stopped before it started")
        return bool(server.started)

    try:
        await wait_for(started, 20, "the API server to start")
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def topic_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record on `topic`, read from the beginning to the end offsets, without a group."""
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:

        async def partitions() -> set[int] | None:
            parts: set[int] | None = consumer.partitions_for_topic(topic)
            return parts

        parts = [
            aiokafka.TopicPartition(topic, p) for p in sorted(await wait_for(partitions, 10, f"{topic}"))
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(parts)
        records: list[Any] = []

        async def caught_up() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            positions = [await consumer.position(p) for p in parts]
            return all(pos >= ends[p] for pos, p in zip(positions, parts, strict=True))

        await wait_for(caught_up, 20, f"the end of {topic}")
        return records
    finally:
        await consumer.stop()


SUPERVISOR = "district.justice-bureau"


async def reader_headers(database_url: str, unit: str = SUPERVISOR) -> dict[str, str]:
    """Authorization for the query API with a fresh key of `unit` on the (migrated) store at
    `database_url`; by default the district supervision section, which reads every township."""
    from events.directory import Directory
    from projections.db import make_engine
    from services.keys import issue_key

    engine = make_engine(database_url)
    try:
        key = await issue_key(engine, Directory.load(), unit)
    finally:
        await engine.dispose()
    return {"Authorization": f"Bearer {key}"}


def plain(value: Any) -> Any:
    """The same fact reads the same from PostgreSQL and SQLite (which returns naive UTC times)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def replay_settings(url: str, data_dir: Path, bootstrap: str, now_file: Path) -> Any:
    """Settings of a replay (`liandong rebuild`, `liandong projections rebuild`) in a test."""
    from services.settings import Settings

    return Settings.from_env(
        {
            "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
            "LIANDONG_DATABASE_URL": url,
            "LIANDONG_DATA_DIR": str(data_dir),
            "LIANDONG_TIME_SOURCE": f"file:{now_file}",
        }
    )

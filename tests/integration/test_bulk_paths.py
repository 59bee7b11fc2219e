"""PostgreSQL's COPY-and-merge path and the plain `executemany` path write the same rows.

`projections/bulk.py` stages batches of 48 rows or more with COPY on PostgreSQL and merges them
with one statement; smaller batches, and SQLite, use an `executemany` of the same upsert. A whole
catalog stream (lifecycles of every mechanism, late events, an event published twice) goes through
each path and through SQLite, and every projected table must come out the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.event_mix import catalog_mix
from events.envelope import Envelope
from events.serde import EventCodec
from projections import bulk
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import (
    anomalies,
    cases,
    clocks,
    event_history,
    matter_parties,
    matters,
    projection_checkpoints,
)
from tests.projector_kit import projector, records
from tests.support import create_pg_database, drop_pg_database

NOW = datetime(2025, 9, 1, 4, 0, tzinfo=UTC)
# Written with the wall clock of the run, not derived from events.
VOLATILE = {"updated_at", "detected_at", "resolved_at"}
TABLES = (event_history, cases, matters, matter_parties, anomalies, clocks, projection_checkpoints)


def stream() -> list[Envelope]:
    events = catalog_mix(1_200, seed=11)
    # Published twice: the second copy, later in the stream, must change nothing.
    return [*events[:700], *events[100:130], *events[700:]]


def normal(value: Any) -> Any:
    # SQLite hands back naive datetimes (stored as UTC).
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(value, date | str | int | bool) or value is None:
        return value
    raise TypeError(type(value))


async def snapshot(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in TABLES:
            names = [c.name for c in table.c if c.name not in VOLATILE]
            rows = await conn.execute(select(*(table.c[n] for n in names)))
            out[table.name] = sorted(tuple(normal(v) for v in row) for row in rows)
        open_anomalies = await conn.execute(
            select(anomalies.c.anomaly_id).where(anomalies.c.resolved_at.is_(None))
        )
        out["open anomalies"] = sorted((row[0],) for row in open_anomalies)
    return out


async def project(url: str, codec: EventCodec, events: list[Envelope]) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_engine(url)
    try:
        await upgrade(engine)
        runner = projector(engine, codec, now=lambda: NOW)
        batch = records(codec, events)
        for start in range(0, len(batch), 250):
            await runner.process(batch[start : start + 250])
        return await snapshot(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def copy_from() -> Iterator[None]:
    saved = bulk._COPY_FROM
    yield
    bulk._COPY_FROM = saved


@pytest.mark.usefixtures("copy_from")
async def test_copy_and_merge_executemany_and_sqlite_project_the_same_rows(
    codec: EventCodec, tmp_path: Path
) -> None:
    events = stream()
    seen: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for path, copy_from in (("copy", 1), ("executemany", 10**9)):
        bulk._COPY_FROM = copy_from
        url = await create_pg_database()
        try:
            seen[path] = await project(url, codec, events)
        finally:
            await drop_pg_database(url)
    seen["sqlite"] = await project(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", codec, events)

    assert len(seen["copy"]["event_history"]) == len({e.id for e in events})
    for name in ("clocks", "matters", "anomalies"):
        assert seen["copy"][name], f"the stream projects no {name}: it tests nothing"
    for name in seen["copy"]:
        assert seen["copy"][name] == seen["executemany"][name], name
        assert seen["copy"][name] == seen["sqlite"][name], name

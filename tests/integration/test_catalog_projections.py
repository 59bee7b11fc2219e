"""Matters, anomalies and the directory on both real stores."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.envelope import Envelope
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import anomalies, cases, directory_units, event_history, matter_parties, matters
from tests.projector_kit import projector, records
from tests.support import case_event, catalog_event, create_pg_database, drop_pg_database

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


async def project(engine: AsyncEngine, codec: object, events: Sequence[Envelope], start: int = 0) -> None:
    await projector(engine, codec).process(records(codec, events, start=start))  # type: ignore[arg-type]


async def matter(engine: AsyncEngine, area: str, subject: str) -> dict[str, object]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(matters).where(matters.c.area == area, matters.c.subject_id == subject))
        ).one()
        parties = set(
            (
                await conn.execute(
                    select(matter_parties.c.unit_id).where(
                        matter_parties.c.area == area, matter_parties.c.subject_id == subject
                    )
                )
            ).scalars()
        )
    out = dict(row._mapping)
    out["parties"] = parties
    out["open"] = row.closed_at is None or (row.reopened_at is not None and row.reopened_at > row.closed_at)
    return out


async def open_anomalies(engine: AsyncEngine, subject: str) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(anomalies.c.kind, anomalies.c.category).where(
                anomalies.c.subject == subject, anomalies.c.resolved_at.is_(None)
            )
        )
        return sorted((r.kind, r.category) for r in rows)


def transfer(subject: str) -> list[Envelope]:
    return [
        catalog_event(
            "transfer.requested.v1", subject, time_=at(0), to_unit="nancun.police-station", township="shilou"
        ),
        catalog_event("transfer.received.v1", subject, source="nancun.police-station", time_=at(1)),
        catalog_event("transfer.accepted.v1", subject, source="nancun.police-station", time_=at(2)),
        catalog_event("transfer.result_reported.v1", subject, source="nancun.police-station", time_=at(30)),
    ]


async def test_a_transfer_is_open_until_the_receiver_reports_its_result(
    engine: AsyncEngine, codec: object
) -> None:
    events = transfer("TR-1")
    await project(engine, codec, events[:3])
    row = await matter(engine, "transfer", "TR-1")
    assert row["open"] is True
    assert row["parties"] == {"shilou.enforcement-office", "nancun.police-station"}
    assert (row["township"], row["initiator"]) == ("shilou", "shilou.enforcement-office")
    await project(engine, codec, events[3:], start=3)
    row = await matter(engine, "transfer", "TR-1")
    assert row["open"] is False
    assert row["event_count"] == 4
    assert row["last_event_type"] == "cn.gov.liandong.transfer.result_reported.v1"


async def test_a_transfer_in_any_arrival_order_ends_in_the_same_row(
    engine: AsyncEngine, codec: object
) -> None:
    seen = set()
    for n, order in enumerate(itertools.permutations(range(4))):
        subject = f"TR-P{n}"
        events = transfer(subject)
        for i, index in enumerate(order):
            await project(engine, codec, [events[index]], start=100 * n + i)
        row = await matter(engine, "transfer", subject)
        seen.add((row["open"], row["township"], row["initiator"], row["event_count"], row["last_event_type"]))
    assert seen == {
        (False, "shilou", "shilou.enforcement-office", 4, "cn.gov.liandong.transfer.result_reported.v1")
    }


async def test_a_reopened_supervision_order_is_open_again_until_closed_later(
    engine: AsyncEngine, codec: object
) -> None:
    justice = "district.justice-bureau"
    issued = catalog_event("supervision.order_issued.v1", "SO-1", source=justice, time_=at(0))
    closed = catalog_event("supervision.order_closed.v1", "SO-1", source=justice, time_=at(10))
    reopened = catalog_event("supervision.order_reopened.v1", "SO-1", source=justice, time_=at(20))
    await project(engine, codec, [issued, closed, reopened])
    assert (await matter(engine, "supervision", "SO-1"))["open"] is True
    closed_again = catalog_event("supervision.order_closed.v1", "SO-1", source=justice, time_=at(30))
    await project(engine, codec, [closed_again], start=3)
    assert (await matter(engine, "supervision", "SO-1"))["open"] is False


async def test_a_decision_without_a_filing_is_stored_and_flagged_until_the_filing_arrives(
    engine: AsyncEngine, codec: object
) -> None:
    decided = case_event("decided", "AN-1", time_=at(5))
    await project(engine, codec, [decided])
    async with engine.connect() as conn:
        stored = (await conn.execute(select(cases.c.stage).where(cases.c.case_id == "AN-1"))).scalar_one()
    assert stored == "decided"
    assert await open_anomalies(engine, "AN-1") == [("out_of_order", "data_quality")]
    # The filing happened earlier, in the agency's system; it only reaches the hub now.
    await project(engine, codec, [case_event("filed", "AN-1", time_=at(1))], start=1)
    assert await open_anomalies(engine, "AN-1") == []
    async with engine.connect() as conn:
        resolved = (
            await conn.execute(select(anomalies.c.resolved_at).where(anomalies.c.subject == "AN-1"))
        ).scalar()
    assert resolved is not None


async def test_a_major_case_decided_without_a_completed_legal_review_is_a_three_systems_anomaly(
    engine: AsyncEngine, codec: object
) -> None:
    filed = case_event("filed", "MJ-1", time_=at(0), data={**_filed_data(), "requires_legal_review": True})
    decided = case_event("decided", "MJ-1", time_=at(10))
    await project(engine, codec, [filed, decided])
    assert await open_anomalies(engine, "MJ-1") == [("legal_review_missing", "three_systems")]

    filed2 = case_event("filed", "MJ-2", time_=at(0), data={**_filed_data(), "requires_legal_review": True})
    requested = catalog_event("case.legal_review_requested.v1", "MJ-2", time_=at(5))
    completed = catalog_event("case.legal_review_completed.v1", "MJ-2", time_=at(6))
    decided2 = case_event("decided", "MJ-2", time_=at(10))
    await project(engine, codec, [filed2, requested, completed, decided2], start=10)
    assert await open_anomalies(engine, "MJ-2") == []


async def test_a_v1_decision_is_projected_through_its_upcaster(engine: AsyncEngine, codec: object) -> None:
    data = {
        "outcome": "penalty",
        "penalty_kinds": ["警告", "罚款"],
        "fine_amount_fen": 250_000,
        "decision_number": "番综执罚〔2026〕12号",
        "legal_review_completed": True,
    }
    await project(
        engine,
        codec,
        [case_event("filed", "UP-1", time_=at(0)), case_event("decided", "UP-1", time_=at(1), data=data)],
    )
    async with engine.connect() as conn:
        row = (await conn.execute(select(cases).where(cases.c.case_id == "UP-1"))).one()
        types = set(
            (
                await conn.execute(select(event_history.c.type).where(event_history.c.subject == "UP-1"))
            ).scalars()
        )
    assert (row.outcome, row.fine_amount_fen, row.stage) == ("penalty", 250_000, "decided")
    # The log keeps what was written; projections read the newest major version.
    assert "cn.gov.liandong.case.decided.v2" in types


async def test_the_directory_projection_keeps_the_latest_publication_and_marks_retirements(
    engine: AsyncEngine, codec: object
) -> None:
    hub = "liandong.hub"
    first = catalog_event(
        "directory.unit_published.v1", "shilou.new-office", source=hub, time_=at(0), officers=3
    )
    second = catalog_event(
        "directory.unit_published.v1", "shilou.new-office", source=hub, time_=at(5), officers=7
    )
    retired = catalog_event("directory.unit_retired.v1", "shilou.new-office", source=hub, time_=at(9))
    await project(engine, codec, [second])
    await project(engine, codec, [first], start=1)  # an older publication arrives late
    async with engine.connect() as conn:
        officers = (await conn.execute(select(directory_units.c.officers))).scalar_one()
    assert officers == 7
    await project(engine, codec, [retired], start=2)
    async with engine.connect() as conn:
        row = (await conn.execute(select(directory_units))).one()
    assert (row.officers, row.retired_at is not None) == (7, True)


def _filed_data() -> dict[str, object]:
    return dict(case_event("filed", "X").data)


@pytest.fixture(params=["sqlite", "postgresql"])
async def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        if request.param == "sqlite"
        else await create_pg_database()
    )
    engine = make_engine(url)
    await upgrade(engine, "0001")
    yield engine
    await engine.dispose()
    if request.param == "postgresql":
        await drop_pg_database(url)


async def test_migrating_a_0001_store_keeps_its_case_history(old_store: AsyncEngine) -> None:
    from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table

    old_case_events = Table(
        "case_events",
        MetaData(),
        Column("event_id", String),
        Column("case_id", String),
        Column("type", String),
        Column("source", String),
        Column("occurred_at", DateTime(timezone=True)),
        Column("topic", String),
        Column("partition", Integer),
        Column("offset", Integer),
    )
    async with old_store.begin() as conn:
        await conn.execute(
            insert(old_case_events).values(
                event_id="e-1",
                case_id="OLD-1",
                type="cn.gov.liandong.case.filed.v1",
                source="shilou.enforcement-office",
                occurred_at=T0,
                topic="liandong.case.events",
                partition=0,
                offset=7,
            )
        )
        await conn.execute(
            insert(cases).values(
                case_id="OLD-1",
                stage="decided",
                stage_rank=2,
                last_event_at=T0,
                event_count=2,
            )
        )
    await upgrade(old_store)
    async with old_store.connect() as conn:
        moved = (await conn.execute(select(event_history))).one()
        rank = (await conn.execute(select(cases.c.stage_rank))).scalar_one()
    assert (moved.event_id, moved.subject, moved.area, moved.offset) == ("e-1", "OLD-1", "case", 7)
    assert rank == 6

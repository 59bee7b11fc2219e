"""The archive (全过程记录): every event once in one hash chain, and `liandong audit verify` naming
the first broken link after rows are edited, deleted, inserted or cut off, on both stores."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.clock_rules import ClockRules
from events.envelope import Envelope
from events.mechanisms import Mechanisms
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections import shadow
from projections.archive import link_hash
from projections.archive_store import ArchiveProjection, read_head, verify
from projections.db import make_engine
from projections.hub import hub_projections
from projections.migrate import upgrade
from projections.runtime import Projection, Projector
from projections.schema import archive, archive_head, party_keys
from services.embedded_broker import EmbeddedBroker
from services.worker.audit import ChainHeadMetrics
from tests.processes import Workers
from tests.projector_kit import (
    CALENDAR,
    CLOCK_SETTINGS,
    TOPIC,
    ListDeadLetters,
    SettableIncarnation,
    projector,
    records,
)
from tests.support import REPO, case_event, catalog_event, wait_for

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
PERSON = {
    "party_name": "欧阳明轩",
    "party_id_number": "440113199001011234",
    "party_phone": "13912345678",
    "party_address": "广州市番禺区石楼镇岳溪村大街9号",
}


def case_life(case_id: str, start: datetime = T0, **person: str) -> list[Envelope]:
    """Filed (naming its party), decided, closed."""
    filed = catalog_event(
        "case.filed.v1",
        case_id,
        time_=start,
        township="shilou",
        handling_unit="shilou.enforcement-office",
        title="违法建设",
        **(person or PERSON),
    )
    return [
        filed,
        case_event("decided", case_id, time_=start + timedelta(days=2)),
        case_event("closed", case_id, time_=start + timedelta(days=5)),
    ]


async def archived(engine: AsyncEngine, codec: EventCodec, events: Sequence[Envelope]) -> Projector:
    hub = projector(engine, codec)
    await hub.process(records(codec, events))
    return hub


async def rows(engine: AsyncEngine) -> list[tuple[int, str, str, str]]:
    a = archive.c
    async with engine.connect() as conn:
        found = await conn.execute(select(a.seq, a.event_id, a.prev_hash, a.hash).order_by(a.seq))
        return [(r.seq, r.event_id, r.prev_hash, r.hash) for r in found]


async def test_every_new_event_is_archived_once_in_order_and_the_chain_verifies(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    first, second = case_life("A1"), case_life("A2", T0 + timedelta(days=1))
    hub = projector(engine, codec)
    await hub.process(records(codec, first))
    # A redelivery of the first batch, the second batch, and one event published twice with one id.
    again = case_event("closed", "A2", event_id=second[2].id, time_=T0 + timedelta(days=9))
    await hub.process(records(codec, first))
    await hub.process(records(codec, [*second, again], start=3))

    chain = await rows(engine)
    assert [r[0] for r in chain] == [1, 2, 3, 4, 5, 6]
    assert [r[1] for r in chain] == [e.id for e in [*first, *second]]
    assert chain[0][2] == "0" * 64
    assert all(later[2] == earlier[3] for earlier, later in itertools.pairwise(chain))
    async with engine.connect() as conn:
        head = await read_head(conn)
        record = json.loads(str(await conn.scalar(select(archive.c.record).where(archive.c.seq == 1))))
    assert head is not None
    assert (head.seq, head.hash) == (6, chain[-1][3])
    verdict = await verify(engine, page=4)  # pages of 4: the chain is read in two
    assert (verdict.broken, verdict.records) == (None, 6)

    # The record: the event as read from the topic, its parties' fields sealed under their key.
    assert (record["id"], record["subject"], record["topic"], record["offset"]) == (
        first[0].id,
        "A1",
        TOPIC,
        0,
    )
    assert record["time"] == "2026-11-02T01:00:00+00:00"
    sealed = record["data"]["party_id_number"]
    assert set(sealed) == {"enc", "key"}
    assert record["data"]["party_name"]["key"] == sealed["key"]
    assert record["data"]["title"] == "违法建设"
    assert not any(value in json.dumps(record, ensure_ascii=False) for value in PERSON.values())


async def test_two_projectors_appending_at_once_keep_one_unbroken_chain(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    # Two workers, each with its partition and its batches one after the other, as faust runs them:
    # the head row serialises their archive stages.
    async def worker(partition: int) -> None:
        hub = projector(engine, codec)
        for i in range(4):
            events = case_life(f"P{partition}-{i}", T0 + timedelta(hours=i))
            await hub.process(records(codec, events, partition=partition, start=3 * i))

    await asyncio.gather(worker(0), worker(1))
    verdict = await verify(engine)
    assert (verdict.broken, verdict.records) == (None, 24)
    async with engine.connect() as conn:
        keys = await conn.scalar(select(func.count()).select_from(party_keys))
    assert keys == 1  # one person in every case: one key, though two workers met them at once


# --- tampering -----------------------------------------------------------------------------------


async def tamper(engine: AsyncEngine, how: str) -> str | None:
    """Tamper with a chain of 9 records; return the head hash noted before, for --expect-head."""
    async with engine.begin() as conn:
        before = await read_head(conn)
        assert before is not None
        assert before.seq == 9
        a = archive.c
        if how == "edit":
            await conn.execute(
                update(archive)
                .where(a.seq == 3)
                .values(record=func.replace(a.record, "executed", "withdrawn"))
            )
        elif how == "delete":
            await conn.execute(delete(archive).where(a.seq == 3))
        elif how in ("insert_mid", "insert_end"):
            at = 3 if how == "insert_mid" else 10
            prev = str(await conn.scalar(select(a.hash).where(a.seq == at - 1)))
            if how == "insert_mid":
                # Make room as a forger would: renumber the rest (in two steps, for the primary key).
                await conn.execute(update(archive).where(a.seq >= at).values(seq=a.seq + 1000))
                await conn.execute(update(archive).where(a.seq >= 1000).values(seq=a.seq - 999))
            record = json.dumps({"id": "forged-event", "subject": "A1", "data": {}}, separators=(",", ":"))
            await conn.execute(
                insert(archive).values(
                    seq=at,
                    event_id="forged-event",
                    subject="A1",
                    record=record,
                    prev_hash=prev,
                    hash=link_hash(prev, record),  # a forger who knows the rule
                )
            )
        elif how == "truncate":
            await conn.execute(delete(archive).where(a.seq >= 8))
            last = str(await conn.scalar(select(a.hash).where(a.seq == 7)))
            await conn.execute(update(archive_head).values(seq=7, hash=last))
        else:
            raise AssertionError(how)
    return before.hash


@pytest.mark.parametrize(
    ("how", "seq", "event", "kind"),
    [
        ("edit", 3, 3, "edited"),
        ("delete", 3, None, "missing"),
        ("insert_mid", 3, "forged-event", "inserted"),
        ("insert_end", 10, "forged-event", "inserted"),
        ("truncate", 8, None, "missing"),
    ],
)
async def test_audit_verify_names_the_first_broken_link(
    engine: AsyncEngine, codec: EventCodec, how: str, seq: int, event: int | str | None, kind: str
) -> None:
    events = [e for i in range(3) for e in case_life(f"A{i}", T0 + timedelta(days=i))]
    await archived(engine, codec, events)
    assert (await verify(engine)).broken is None
    anchored = await tamper(engine, how)

    verdict = await verify(engine, page=4)
    if how == "truncate":
        # The tail and the head row were cut back together: only the head noted outside shows it.
        assert verdict.broken is None
        verdict = await verify(engine, expect_head=anchored, page=4)
    assert verdict.broken is not None, how
    expected_event = events[event - 1].id if isinstance(event, int) else event
    assert (verdict.broken.seq, verdict.broken.event_id, verdict.broken.kind) == (seq, expected_event, kind)


def test_the_cli_says_the_chain_is_intact_or_names_the_broken_link_with_exit_code_1(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LIANDONG_DATA_DIR": str(tmp_path),
        "LIANDONG_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'store.db'}",
    }

    async def fill() -> tuple[list[Envelope], str]:
        engine = make_engine(env["LIANDONG_DATABASE_URL"])
        try:
            await upgrade(engine)
            codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
            await codec.prepare()
            events = case_life("CLI1")
            await archived(engine, codec, events)
            async with engine.connect() as conn:
                head = await read_head(conn)
            assert head is not None
            return events, head.hash
        finally:
            await engine.dispose()

    events, head = asyncio.run(fill())

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "audit", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    intact = cli("verify", "--expect-head", head)
    assert intact.returncode == 0, intact.stderr
    assert f"审计链完整 chain intact: 3 records, head {head}" in intact.stdout
    shown = cli("head")
    assert f"seq 3 hash {head}" in shown.stdout

    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("UPDATE archive SET record = replace(record, '违法建设', '合法建设') WHERE seq = 1")
    broken = cli("verify")
    assert broken.returncode == 1
    assert f"审计链断裂 chain broken at seq 1 (event {events[0].id}): edited" in broken.stdout
    refused = cli("verify", "--expect-head", "not-a-hash")
    assert refused.returncode == 2


# --- the archive is the record, not a rebuildable projection --------------------------------------


def kit_projections() -> list[Projection]:
    return hub_projections(Mechanisms.load(), ClockRules.load(), CALENDAR, CLOCK_SETTINGS)


def test_a_projection_rebuild_never_swaps_the_archive() -> None:
    projections = kit_projections()
    chosen = shadow.choose(projections, shadow.ALL)
    assert "archive" not in chosen.names
    assert not {"archive", "archive_head", "party_keys", "parties"} & {t.name for t in chosen.tables}
    with pytest.raises(shadow.NotRebuildable, match="rewrite the chain"):
        shadow.choose(projections, "archive")
    assert isinstance(projections[-1], ArchiveProjection)  # last: the head lock is held briefly


# --- the head as a metric ------------------------------------------------------------------------


async def test_the_chain_head_metric_shows_one_series_that_follows_the_head(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    registry = CollectorRegistry()
    metrics = ChainHeadMetrics.create(registry)
    projections = kit_projections()
    archive_projection = projections[-1]
    assert isinstance(archive_projection, ArchiveProjection)  # the worker keeps the same reference
    hub = Projector(engine, "hub", codec, projections, ListDeadLetters(), SettableIncarnation())

    def series() -> list[str]:
        return [
            line
            for line in generate_latest(registry).decode().splitlines()
            if line.startswith("liandong_audit_chain")
        ]

    await metrics.after_commit(archive_projection, False, engine)  # before any event: no head yet
    assert series() == ["liandong_audit_chain_length 0.0"]
    for i in range(2):
        await hub.process(records(codec, case_life(f"M{i}"), start=3 * i))
        await metrics.after_commit(archive_projection, True, engine)
        async with engine.connect() as conn:
            head = await read_head(conn)
        assert head is not None
        assert head.seq == 3 * (i + 1)
        assert series() == [
            f"liandong_audit_chain_length {float(head.seq)}",
            f'liandong_audit_chain_head_info{{hash="{head.hash}"}} 1.0',
        ]
    # A worker that starts on a store with a chain shows the stored head before its first batch.
    fresh = ChainHeadMetrics.create(CollectorRegistry())
    await fresh.after_commit(None, False, engine)
    assert fresh.shown == head


async def test_the_worker_exports_the_head_that_audit_verify_later_accepts_as_anchor(
    fresh_broker: EmbeddedBroker, pg_url: str, workers: Workers
) -> None:
    engine = make_engine(pg_url)
    await upgrade(engine)
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    publisher = KafkaPublisher(fresh_broker.bootstrap, partitions=3)
    try:
        events = [e for i in range(4) for e in case_life(f"W{i}", T0 + timedelta(days=i))]
        await publisher.publish([(topic_for("case"), codec.encode(e)) for e in events])
        _, port = workers.start(fresh_broker.bootstrap)

        async def anchored() -> tuple[str, float] | None:
            workers.assert_running()
            async with engine.connect() as conn:
                archived_cases = await conn.scalar(
                    select(func.count()).select_from(archive).where(archive.c.subject.startswith("W"))
                )
                head = await read_head(conn)
            if archived_cases != len(events) or head is None:
                return None
            async with httpx.AsyncClient() as client:
                page = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
            samples = {
                (s.name, s.labels.get("hash")): s.value
                for family in text_string_to_metric_families(page)
                for s in family.samples
                if s.name.startswith("liandong_audit_chain")
            }
            # One head series only, and it is the stored head (the worker also archives the directory).
            if samples != {
                ("liandong_audit_chain_head_info", head.hash): 1.0,
                ("liandong_audit_chain_length", None): head.seq,
            }:
                return None
            return head.hash, samples[("liandong_audit_chain_length", None)]

        scraped, length = await wait_for(
            anchored, 60, "the worker's chain head metric to show the stored head"
        )
        verdict = await verify(engine, expect_head=scraped)
        assert verdict.broken is None
        assert (verdict.records, verdict.anchored_at) == (length, length)
    finally:
        await publisher.close()
        await engine.dispose()

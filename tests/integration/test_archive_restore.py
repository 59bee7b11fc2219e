"""Backups (docs/backup.md): `liandong archive export` from a running hub's store, `archive restore`
into a fresh broker and a fresh database, and a worker on the restored hub: every projection equals
the original's, the chain is the same chain, and a shredded person stays erased.

Real processes throughout: the original worker, the CLI, the restored worker; two Tansu brokers and
two PostgreSQL databases.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.envelope import Envelope
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections import party_store, pii
from projections.archive_store import lock_head, read_head
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import (
    anomalies,
    api_keys,
    archive,
    clocks,
    event_history,
    parties,
    party_keys,
    projection_checkpoints,
)
from services.archive_io import ArchiveFileError, ExportRefused, export, read_all
from services.archive_restore import broker_contents, store_contents, write_store
from services.embedded_broker import EmbeddedBroker
from services.keys import issue_key
from services.rebuilding import rebuilds_in_progress
from tests.processes import Workers
from tests.projection_diff import diff_stores, explain
from tests.projector_kit import projector, records
from tests.support import (
    REPO,
    case_event,
    catalog_event,
    create_pg_database,
    drop_pg_database,
    plain,
    wait_for,
)

pytestmark = pytest.mark.integration

CN = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=CN)
LATE = datetime(2026, 11, 20, 9, 0, tzinfo=CN)  # past every rung of a transfer's clocks
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
KEPT: dict[str, Any] = {
    "party_name": "欧阳明轩",
    "party_id_number": "440113199001011234",
    "party_phone": "13912345678",
}
ERASED: dict[str, Any] = {
    "party_name": "陈小红",
    "party_id_number": "44011319851212002X",
    "party_phone": "13800001111",
}


def the_events() -> list[Envelope]:
    """Cases naming people (one to be erased), a major case decided without legal review (an
    anomaly the hub announces), transfers whose clocks run out (alerts the hub raises)."""
    kept = catalog_event(
        "case.filed.v1", "R-1", time_=T0, township="shilou", handling_unit="shilou.enforcement-office", **KEPT
    )
    erased = catalog_event(
        "case.filed.v1",
        "R-2",
        time_=T0,
        township="shilou",
        handling_unit="shilou.enforcement-office",
        requires_legal_review=True,
        **ERASED,
    )
    decided = case_event(
        "decided",
        "R-2",
        time_=T0 + timedelta(days=1),
        data={**case_event("decided", "x").data, "legal_review_completed": False},
    )
    transfers = [
        catalog_event(
            "transfer.requested.v1",
            f"R-T{i}",
            time_=T0,
            to_unit="nancun.police-station",
            township="shilou",
            urgent=False,
            discovered_on="2026-11-02",
        )
        for i in range(3)
    ]
    closed = [
        case_event("decided", "R-1", time_=T0 + timedelta(days=2)),
        case_event("closed", "R-1", time_=T0 + timedelta(days=5)),
    ]
    return [kept, erased, decided, *transfers, *closed]


async def publish(bootstrap: str, events: Sequence[Envelope]) -> None:
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    publisher = KafkaPublisher(bootstrap, partitions=3)
    try:
        await publisher.publish([(topic_for(e.area), codec.encode(e)) for e in events])
    finally:
        await publisher.close()


async def scalar(engine: AsyncEngine, query: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(query)


async def full_rows(engine: AsyncEngine, table: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
    return [tuple(plain(v) for v in row) for row in rows]


async def quiet(engine: AsyncEngine, now: datetime) -> bool:
    """Nothing left for the worker's timers: no clock due, no anomaly waiting to be announced, and
    every alert and announcement they published projected."""
    due = await scalar(engine, select(func.count()).select_from(clocks).where(clocks.c.next_check_at <= now))
    unannounced = await scalar(
        engine,
        select(func.count())
        .select_from(anomalies)
        .where(anomalies.c.announced_at.is_(None), anomalies.c.category == "three_systems"),
    )
    raised = await scalar(
        engine,
        select(func.count()).select_from(event_history).where(event_history.c.type.like("%alert.raised%")),
    )
    async with engine.connect() as conn:
        fired = sum(len(f.split(",")) for f in (await conn.execute(select(clocks.c.fired))).scalars() if f)
    return bool(due == 0 and unannounced == 0 and fired > 0 and raised == fired)


def cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def topic_events(bootstrap: str, topic: str) -> list[Envelope]:
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=2000, max_records=10_000)
        return [codec.decode(r.value, r.headers) for records in batches.values() for r in records]
    finally:
        await consumer.stop()


@pytest.fixture(
    params=[("postgresql", "postgresql"), ("postgresql", "sqlite"), ("sqlite", "postgresql")],
    ids=["postgresql-to-postgresql", "postgresql-to-sqlite", "sqlite-to-postgresql"],
)
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, pg_url: str
) -> AsyncIterator[tuple[str, str]]:
    """The original hub's store and the restore's target: a production backup restored as such, the
    same restored into the embedded SQLite file, and the laptop default moved to PostgreSQL
    (docs/backup.md, "From the embedded store to PostgreSQL")."""
    source, target = request.param
    original = pg_url if source == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'original.db'}"
    if target == "sqlite":
        yield original, f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}"
        return
    url = await create_pg_database()
    yield original, url
    await drop_pg_database(url)


async def test_a_restore_into_an_empty_broker_and_database_rebuilds_every_projection_and_the_same_chain(
    tmp_path: Path, stores: tuple[str, str], workers: Workers
) -> None:
    original_url, restored_url = stores
    # The laptop default keeps its master key in its store: the file must carry it, and the new store
    # keeps it as the old one did (docs/backup.md, "From the embedded store to PostgreSQL").
    laptop = original_url.startswith("sqlite")
    now_file = tmp_path / "now.txt"
    now_file.write_text(T0.isoformat())
    hub_env = {
        "LIANDONG_TIME_SOURCE": f"file:{now_file}",
        "LIANDONG_CLOCK_SCAN_INTERVAL_MS": "200",
        "LIANDONG_ALERT_GRACE_S": "0",
    } | ({} if laptop else {"LIANDONG_MASTER_KEY": MASTER_KEY})
    original = make_engine(original_url)
    restored = make_engine(restored_url)
    first, second = EmbeddedBroker(log_path=tmp_path / "a.log"), EmbeddedBroker(log_path=tmp_path / "b.log")
    try:
        # --- the original hub: events from units, alerts and an announcement from the hub itself ---
        first.start()
        await upgrade(original)
        await issue_key(original, Directory.load(), "shilou.enforcement-office")
        events = the_events()
        await publish(first.bootstrap, events)
        worker, _ = workers.start(first.bootstrap, **{**hub_env, "LIANDONG_DATABASE_URL": original_url})

        async def projected() -> bool:
            workers.assert_running()
            ids = [e.id for e in events]
            found = await scalar(
                original,
                select(func.count()).select_from(event_history).where(event_history.c.event_id.in_(ids)),
            )
            return bool(found == len(ids))

        await wait_for(projected, 60, "the original worker to project every event")
        now_file.write_text(LATE.isoformat())
        await wait_for(lambda: quiet(original, LATE), 30, "the original hub's alerts and announcements")
        workers.stop(worker)

        # A person erased before the backup stays erased after it.
        async with original.begin() as conn:
            await lock_head(conn)
            master = await pii.stored_master_key(conn, None if laptop else base64.b64decode(MASTER_KEY))
            assert master is not None
            ref = master.party_ref("id:" + ERASED["party_id_number"])
            assert await party_store.shred(conn, await party_store.keys_of(conn, ref), LATE) == 1
        async with original.connect() as conn:
            head = await read_head(conn)
        assert head is not None
        assert head.seq > len(events)  # the directory, the alerts and the announcement are archived too

        # --- export ---
        backup = tmp_path / "hub.archive.gz"
        out = cli(
            "archive",
            "export",
            str(backup),
            "--expect-head",
            head.hash,
            *(["--include-master-key"] if laptop else []),
            env={"LIANDONG_DATABASE_URL": original_url, **hub_env},
        )
        assert out.returncode == 0, out.stderr
        assert f"{head.seq:,} records" in out.stderr
        text = gzip.decompress(backup.read_bytes()).decode()
        assert all(value not in text for value in (*KEPT.values(), *ERASED.values()))  # sealed, as archived
        header = read_all(io.BytesIO(backup.read_bytes())).header
        assert header is not None
        assert header.master_key == (master.secret if laptop else None)

        # --- restore into a fresh broker and database ---
        second.start()
        target = {
            "LIANDONG_DATABASE_URL": restored_url,
            "LIANDONG_KAFKA_BOOTSTRAP": second.bootstrap,
            "LIANDONG_TOPIC_PARTITIONS": "3",
            "LIANDONG_DATA_DIR": str(tmp_path / "restored"),
            **hub_env,
        }
        out = cli("archive", "restore", str(backup), "--expect-head", head.hash, env=target)
        assert out.returncode == 0, out.stderr + out.stdout
        assert f"restored {head.seq:,} records" in out.stdout

        # The restored chain is the original chain, row for row; the archive's tables too.
        for table in (archive, party_keys, parties, api_keys):
            assert await full_rows(restored, table) == await full_rows(original, table), table.name
        assert await rebuilds_in_progress(restored) == []  # the restore's marker is gone with it
        # The key is kept in the store only when it came in the file; otherwise only its fingerprint.
        async with restored.connect() as conn:
            if laptop:
                kept = await pii.stored_master_key(conn, None)
                assert kept is not None
                assert kept.secret == master.secret
            else:
                with pytest.raises(pii.MasterKeyMismatch, match="set it"):
                    await pii.stored_master_key(conn, None)
        verified = cli("audit", "verify", "--expect-head", head.hash, env=target)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # The events went back to their topics in clear, but the erased person's fields stay empty.
        filed = {
            e.subject: e
            for e in await topic_events(second.bootstrap, topic_for("case"))
            if e.type.endswith("filed.v1")
        }
        assert {k: filed["R-1"].data[k] for k in KEPT} == KEPT
        assert all(filed["R-2"].data[k] is None for k in ERASED)

        # A restore into what is no longer empty is refused, and writes nothing.
        again = cli("archive", "restore", str(backup), env=target)
        assert again.returncode == 1
        assert "the database is not empty: table " in again.stderr
        assert any(p.startswith("liandong.case.events[") for p in await broker_contents(second.bootstrap))

        # --- a worker on the restored hub carries on: its timers add nothing the original lacks ---
        restored_worker, _ = workers.start(
            second.bootstrap, **{**hub_env, "LIANDONG_DATABASE_URL": restored_url}
        )

        async def same_projections() -> bool:
            workers.assert_running()
            return await quiet(restored, LATE) and not await diff_stores(original, restored)

        try:
            await wait_for(same_projections, 40, "the restored hub's projections to equal the original's")
        except AssertionError:
            raise AssertionError(explain(await diff_stores(original, restored))) from None
        async with restored.connect() as conn:
            assert await read_head(conn) == head  # nothing archived twice, nothing new
        checkpoints = await scalar(restored, select(func.count()).select_from(projection_checkpoints))
        assert checkpoints > 0
        workers.stop(restored_worker)
    finally:
        first.stop()
        second.stop()
        await original.dispose()
        await restored.dispose()


async def test_an_export_of_a_broken_chain_is_refused_and_its_output_cannot_be_restored(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    hub = projector(engine, codec)
    await hub.process(records(codec, [case_event("filed", "B-1"), case_event("closed", "B-1")]))
    async with engine.begin() as conn:
        await conn.execute(archive.update().where(archive.c.seq == 2).values(record=archive.c.record + " "))
    out = io.BytesIO()
    with pytest.raises(ExportRefused, match="seq 2"):
        await export(engine, out)
    with pytest.raises(ArchiveFileError, match="cut short"):
        read_all(io.BytesIO(out.getvalue()))


async def test_an_export_refuses_to_carry_party_keys_without_their_master_key(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    # The master key generated into the database (no LIANDONG_MASTER_KEY): a file without it could
    # not restore anyone's personal data.
    hub = projector(engine, codec)
    await hub.process(records(codec, [catalog_event("case.filed.v1", "M-1", **KEPT)]))
    with pytest.raises(ExportRefused, match="--include-master-key"):
        await export(engine, io.BytesIO())
    out = io.BytesIO()
    result = await export(engine, out, include_master_key=True)
    assert result.counts["party_key"] == 1
    reader = read_all(io.BytesIO(out.getvalue()))
    assert reader.header is not None
    assert reader.header.master_key is not None
    with pytest.raises(ExportRefused, match="not the key"):
        await export(engine, io.BytesIO(), configured_master_key=bytes(32))


async def test_a_store_without_parties_exports_with_the_master_key_flag_and_no_key(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    # A hub that never stored a person has no master key yet; the flag asks for nothing to carry.
    await projector(engine, codec).process(records(codec, [case_event("filed", "N-1")]))
    out = io.BytesIO()
    result = await export(engine, out, include_master_key=True)
    assert result.counts["party_key"] == 0
    assert result.counts["record"] == 1
    reader = read_all(io.BytesIO(out.getvalue()))
    assert reader.header is not None
    assert reader.header.master_key is None


async def test_a_file_naming_one_event_twice_is_refused_by_the_store_which_stays_empty(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    from tests.unit.test_archive_file import T, good_lines, pack, record_line

    # The chain holds (a forger who knows the rule), but the archive keeps each event id once.
    lines = good_lines(1, sealed=False)
    again = case_event("closed", "F-1", time_=T, event_id=lines[2]["event_id"])
    lines.append(record_line(2, lines[2]["hash"], again))
    lines[0]["head"] = {"seq": 2, "hash": lines[-1]["hash"], "updated_at": None}
    path = tmp_path / "twice.archive.gz"
    path.write_bytes(pack(lines))
    header = read_all(io.BytesIO(path.read_bytes())).header
    assert header is not None
    with pytest.raises(IntegrityError):
        await write_store(engine, path, header, keep_master_key=False)
    assert await store_contents(engine) == []


def test_the_export_command_streams_to_standard_output_and_leaves_no_file_when_refused(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    import argparse
    import asyncio

    from services.archive_cli import _cmd_check, _cmd_export
    from services.settings import Settings

    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    settings = Settings.from_env({"LIANDONG_DATABASE_URL": url, "LIANDONG_DATA_DIR": str(tmp_path)})

    async def seed(tamper: bool) -> None:
        engine = make_engine(url)
        await upgrade(engine)
        codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
        await codec.prepare()
        if not tamper:
            await projector(engine, codec).process(records(codec, [case_event("filed", "S-1")]))
        else:
            async with engine.begin() as conn:
                await conn.execute(archive.update().values(record=archive.c.record + " "))
        await engine.dispose()

    def args(**extra: Any) -> argparse.Namespace:
        return argparse.Namespace(**({"expect_head": None, "include_master_key": False} | extra))

    asyncio.run(seed(tamper=False))
    assert _cmd_export(settings, args(file="-")) == 0
    streamed = capsysbinary.readouterr().out
    assert read_all(io.BytesIO(streamed)).counts["record"] == 1
    backup = tmp_path / "backup.gz"
    backup.write_bytes(streamed)
    assert _cmd_check(settings, args(file=str(backup))) == 0
    assert "backup intact: 1 records" in capsysbinary.readouterr().out.decode()
    backup.write_bytes(streamed[:-20])
    assert _cmd_check(settings, args(file=str(backup))) == 1
    assert "invalid backup file" in capsysbinary.readouterr().err.decode()

    asyncio.run(seed(tamper=True))
    target = tmp_path / "refused.gz"
    assert _cmd_export(settings, args(file=str(target))) == 1
    assert "chain broken at seq 1" in capsysbinary.readouterr().err.decode()
    assert sorted(p.name for p in tmp_path.iterdir() if "refused" in p.name) == []  # no file, no .partial

"""The outbox relay against a real PostgreSQL and a real broker: concurrent writers, no row skipped."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.structs import ConsumerRecord

from connectors.framework import DEAD_LETTER_TOPIC
from connectors.outbox import CHECKPOINT_TABLE, OutboxRelay, OutboxRow
from connectors.sdk import event_id_for
from services.embedded_broker import EmbeddedBroker
from tests.ops_processes import OUTBOX_DDL
from tests.support import topic_records, wait_for

pytestmark = pytest.mark.integration

SEED = 20260415
CASE_TOPIC = "liandong.case.events"
WRITERS = 8
ROWS_PER_WRITER = 50
UNITS = ("shilou.enforcement-office", "shiqiao.enforcement-office")

INSERT = """INSERT INTO liandong_outbox (unit, event_type, subject, occurred_at, payload)
            VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id"""


def filed_data(unit: str, title: str) -> dict[str, Any]:
    township = unit.split(".", 1)[0]
    return {
        "township": township,
        "category": "illegal_construction",
        "handling_unit": unit,
        "title": title,
        "case_number": None,
        "requires_legal_review": False,
    }


@pytest.fixture
async def outbox_dsn(pg_url: str) -> str:
    """The agency database (asyncpg DSN) with its outbox table."""
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(OUTBOX_DDL)
    finally:
        await conn.close()
    return dsn


async def insert(
    conn: asyncpg.Connection, unit: str, subject: str, data: Any, kind: str = "case.filed.v1"
) -> int:
    row_id: int = await conn.fetchval(INSERT, unit, kind, subject, datetime.now(UTC), json.dumps(data))
    return row_id


async def read_topic(bootstrap: str, topic: str) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
    """Every record now on `topic`, per partition in offset order."""
    found: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
    for record in await topic_records(bootstrap, topic):
        found.setdefault(record.partition, []).append(record)
    return found


def headers(records: dict[int, list[ConsumerRecord[bytes, bytes]]]) -> list[dict[str, bytes]]:
    return [dict(r.headers) for partition in records.values() for r in partition]


async def relay_all(relay: OutboxRelay, expected: int, timeout_s: float = 30) -> None:
    """Run `relay` batch by batch until it has handled `expected` rows, and check it handles no more.

    The relay only reads rows below the cluster-wide xmin, so a transaction that another test holds open
    on the same PostgreSQL can hold a batch back for a while; waiting for the count, not asserting one
    batch, is what makes this independent of what else runs on the server.
    """
    handled = 0

    async def all_handled() -> bool:
        nonlocal handled
        handled += await relay.run_once()
        return handled >= expected

    await wait_for(all_handled, timeout_s, f"the relay to handle {expected} rows")
    assert handled == expected
    assert await relay.run_once() == 0


def ids_of(records: dict[int, list[ConsumerRecord[bytes, bytes]]]) -> Counter[str]:
    return Counter(h["ce_id"].decode() for h in headers(records))


async def writer(dsn: str, n: int, written: dict[str, list[int]]) -> None:
    """One agency process: transactions of 1-4 rows that hold 0-200 ms after taking their ids."""
    rng = random.Random(SEED + n)
    unit, subject = UNITS[n % len(UNITS)], f"OB-W{n}"
    conn = await asyncpg.connect(dsn)
    try:
        left = ROWS_PER_WRITER
        while left:
            size = min(left, rng.randint(1, 4))
            async with conn.transaction():
                ids = [
                    await insert(conn, unit, subject, filed_data(unit, f"outbox row {left - i}"))
                    for i in range(size)
                ]
                # A slow transaction that took its ids early and commits late: the race under test.
                await asyncio.sleep(rng.uniform(0, 0.2))  # why: the commit delay is the thing under test
            written[subject].extend(ids)
            left -= size
    finally:
        await conn.close()


async def straggle(dsn: str, batches: list[Sequence[OutboxRow]], written: dict[str, list[int]]) -> None:
    """The race, made certain: transaction X takes id a+1 while Y, which took id a first, goes on to
    take a+2 and commits; the relay publishes a+2; only then does X commit. A relay reading
    `WHERE id > last_id` would now skip a+1 for ever."""
    unit = UNITS[0]
    y, x = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        y_tx, x_tx = y.transaction(), x.transaction()
        await y_tx.start()
        await x_tx.start()
        first = await insert(y, unit, "OB-Y", filed_data(unit, "Y first"))
        late = await insert(x, unit, "OB-X", filed_data(unit, "X, committed late"))
        second = await insert(y, unit, "OB-Y", filed_data(unit, "Y second"))
        await y_tx.commit()

        async def relayed(row_id: int) -> bool:
            return any(r.id == row_id for batch in batches for r in batch)

        await wait_for(lambda: relayed(second), 30, "the relay to publish Y's rows while X is open")
        await x_tx.commit()
        written["OB-Y"] += [first, second]
        written["OB-X"] += [late]
    finally:
        await y.close()
        await x.close()


async def test_concurrent_late_commits_arrive_exactly_once_and_in_order(
    outbox_dsn: str, fresh_broker: EmbeddedBroker
) -> None:
    batches: list[Sequence[OutboxRow]] = []
    written: dict[str, list[int]] = {f"OB-W{n}": [] for n in range(WRITERS)} | {"OB-Y": [], "OB-X": []}
    total = WRITERS * ROWS_PER_WRITER + 3
    stop = asyncio.Event()
    async with OutboxRelay(outbox_dsn, fresh_broker.bootstrap, batch=50, on_batch=batches.append) as relay:
        relaying = asyncio.create_task(relay.run(stop, interval_s=0.01))
        await straggle(outbox_dsn, batches, written)
        await asyncio.gather(*(writer(outbox_dsn, n, written) for n in range(WRITERS)))

        async def caught_up() -> bool:
            if relaying.done():
                relaying.result()
            return sum(len(b) for b in batches) >= total

        await wait_for(caught_up, 60, f"the relay to catch up with {total} rows")
        stop.set()
        await relaying
        assert relay.health.counts["published"] == total
        assert relay.health.counts["rejected"] == 0

    relayed = [row for batch in batches for row in batch]
    assert sorted(r.id for r in relayed) == sorted(i for ids in written.values() for i in ids)
    order = [(r.xid, r.id) for r in relayed]
    assert order == sorted(order), "rows not relayed in (xid, id) order"
    assert len(set(order)) == len(order), "a row was relayed twice"
    # The race really happened: a later batch carried a smaller id than an earlier one, a row that a
    # `WHERE id > last_id` relay would have skipped for ever.
    highest_so_far, late = 0, 0
    for batch in batches:
        late += sum(1 for r in batch if r.id < highest_so_far)
        highest_so_far = max([highest_so_far, *(r.id for r in batch)])
    assert late > 0, "no row committed late; the test did not exercise the race"
    assert written["OB-X"][0] < written["OB-Y"][1]

    expected = {event_id_for(r.unit, f"outbox:{r.id}"): r.id for r in relayed}
    on_broker = ids_of(await read_topic(fresh_broker.bootstrap, CASE_TOPIC))
    assert set(on_broker) == set(expected)
    assert len(on_broker) == total
    assert [n for n in on_broker.values() if n != 1] == [], "some event arrived more than once"

    # Each writer committed its transactions one after another: its rows arrive in commit order.
    records = await read_topic(fresh_broker.bootstrap, CASE_TOPIC)
    arrived: dict[str, list[int]] = {subject: [] for subject in written}
    for partition in records.values():
        for record in partition:
            found = dict(record.headers)
            arrived[found["ce_subject"].decode()].append(expected[found["ce_id"].decode()])
    assert arrived == written

    # A re-run from the start (checkpoint deleted) publishes the same event ids again, and no new ones.
    conn = await asyncpg.connect(outbox_dsn)
    try:
        await conn.execute(f"DELETE FROM {CHECKPOINT_TABLE}")
    finally:
        await conn.close()
    async with OutboxRelay(outbox_dsn, fresh_broker.bootstrap, batch=500) as again:
        await relay_all(again, total)
    replayed = ids_of(await read_topic(fresh_broker.bootstrap, CASE_TOPIC))
    assert set(replayed) == set(expected)
    assert len(replayed) == total


async def test_an_invalid_row_is_dead_lettered_and_later_rows_still_arrive(
    outbox_dsn: str, fresh_broker: EmbeddedBroker
) -> None:
    unit = UNITS[0]
    conn = await asyncpg.connect(outbox_dsn)
    try:
        first = await insert(conn, unit, "OB-1", filed_data(unit, "before"))
        unknown_type = await insert(conn, unit, "OB-2", filed_data(unit, "x"), kind="case.vanished.v1")
        missing = {k: v for k, v in filed_data(unit, "x").items() if k != "category"}
        missing_field = await insert(conn, unit, "OB-3", missing)
        unknown_unit = await insert(conn, "nowhere.unit", "OB-4", filed_data(unit, "x"))
        last = await insert(conn, unit, "OB-5", filed_data(unit, "after"))
    finally:
        await conn.close()

    async with OutboxRelay(outbox_dsn, fresh_broker.bootstrap) as relay:
        await relay_all(relay, 5)
        assert relay.health.counts["published"] == 2
        assert relay.health.counts["rejected"] == relay.health.counts["dead_lettered"] == 3
        assert (await relay.checkpoint())[1] == last

    published = ids_of(await read_topic(fresh_broker.bootstrap, CASE_TOPIC))
    assert set(published) == {event_id_for(unit, f"outbox:{first}"), event_id_for(unit, f"outbox:{last}")}
    dead = {
        json.loads(r.value)["id"]: r
        for partition in (await read_topic(fresh_broker.bootstrap, DEAD_LETTER_TOPIC)).values()
        for r in partition
    }
    assert sorted(dead) == [unknown_type, missing_field, unknown_unit]
    reasons = {row_id: dict(r.headers)["liandong_dlq_detail"].decode() for row_id, r in dead.items()}
    assert reasons[unknown_type].startswith("type:"), reasons
    assert reasons[missing_field].startswith("data.category:"), reasons
    assert reasons[unknown_unit].startswith("unit:"), reasons
    original = json.loads(dead[missing_field].value)
    assert (original["unit"], original["subject"], original["payload"]) == (unit, "OB-3", missing)
    assert dead[missing_field].key == f"outbox:{missing_field}".encode()
    assert {dict(r.headers)["liandong_dlq_connector"] for r in dead.values()} == {b"outbox"}


async def test_the_relay_command_runs_as_a_process_with_metrics_and_stops_on_sigterm(
    fresh_broker: EmbeddedBroker, outbox_dsn: str, tmp_path: Path
) -> None:
    import signal
    import subprocess

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from services.embedded_broker import free_port
    from tests.support import liandong

    conn = await asyncpg.connect(outbox_dsn)
    try:
        for i in range(5):
            await insert(conn, UNITS[0], f"OB-CLI-{i}", filed_data(UNITS[0], f"发件箱 {i}"))
    finally:
        await conn.close()
    port = free_port()
    env = {
        "LIANDONG_KAFKA_BOOTSTRAP": fresh_broker.bootstrap,
        "LIANDONG_OUTBOX_DSN": outbox_dsn,
        "LIANDONG_CONNECTOR_METRICS_PORT": str(port),
        "LIANDONG_DATA_DIR": str(tmp_path),
    }
    log = (tmp_path / "relay.log").open("wb")
    relay = liandong("outbox-relay", env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        async def published() -> float:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=2)).text
            return sum(
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "liandong_connector_records_total" and s.labels.get("outcome") == "published"
            )

        async def all_published() -> float | None:
            # The fence can let the five rows through in more than one batch: wait for the total.
            count = await published()
            return count if count >= 5 else None

        assert await wait_for(all_published, 60, "the relay's published counter to reach 5") == 5
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(30) == 0
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
    subjects = {
        h["ce_subject"].decode() for h in headers(await read_topic(fresh_broker.bootstrap, CASE_TOPIC))
    }
    assert {f"OB-CLI-{i}" for i in range(5)} <= subjects

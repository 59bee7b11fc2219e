"""Clocks on the wall clock, across real worker processes: SIGKILL and take-over, once per alert.

The workers read "now" from a file (LIANDONG_TIME_SOURCE=file:…), so the test moves time past the
deadlines instead of sleeping until them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import alerts, clocks
from services.api.app import create_app
from services.embedded_broker import EmbeddedBroker
from services.keys import issue_key
from services.settings import Settings
from tests.processes import Workers
from tests.support import catalog_event, serving, wait_for

CN = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=CN)
LATE = datetime(2026, 11, 20, 9, 0, tzinfo=CN)  # past every rung of a 3-working-day clock
JB = "district.justice-bureau"


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(pg_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


class Time:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(T0)

    def set(self, moment: datetime) -> None:
        self.path.write_text(moment.isoformat(), encoding="utf-8")

    def env(self) -> dict[str, str]:
        return {
            "LIANDONG_TIME_SOURCE": f"file:{self.path}",
            "LIANDONG_CLOCK_SCAN_INTERVAL_MS": "200",
            "LIANDONG_ALERT_GRACE_S": "0",
        }


async def publish_transfers(bootstrap: str, count: int, prefix: str) -> None:
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    events = [
        catalog_event(
            "transfer.requested.v1",
            f"{prefix}-{i}",
            time_=T0,
            to_unit="nancun.police-station",
            township="shilou",
            urgent=False,
            discovered_on="2026-11-02",
        )
        for i in range(count)
    ]
    publisher = KafkaPublisher(bootstrap, partitions=3)
    try:
        await publisher.publish([(topic_for("transfer"), codec.encode(e)) for e in events])
    finally:
        await publisher.close()


async def count_rows(engine: AsyncEngine, query: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def alerts_on_topic(bootstrap: str) -> Counter[str]:
    """Every alert.raised record on the alert topic, by alert id (retries would repeat ids)."""
    consumer = AIOKafkaConsumer(
        topic_for("alert"),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: Counter[str] = Counter()
    try:
        batches = await consumer.getmany(timeout_ms=2000, max_records=100_000)
        for records in batches.values():
            for r in records:
                headers = dict(r.headers)
                if headers.get("ce_type") == b"cn.gov.liandong.alert.raised.v1":
                    seen[headers["ce_id"].decode()] += 1
    finally:
        await consumer.stop()
    return seen


async def test_alerts_still_arrive_once_after_a_worker_is_killed_while_clocks_are_due(
    fresh_broker: EmbeddedBroker, engine: AsyncEngine, workers: Workers, tmp_path: Path
) -> None:
    clock = Time(tmp_path / "now.txt")
    count = 150
    await publish_transfers(fresh_broker.bootstrap, count, "K")
    first, _ = workers.start(fresh_broker.bootstrap, **clock.env())

    async def clocks_started() -> bool:
        workers.assert_running()
        return (
            await count_rows(
                engine, select(func.count()).select_from(clocks).where(clocks.c.subject.startswith("K-"))
            )
            >= 2 * count
        )

    await wait_for(clocks_started, 60, "the acceptance and send clocks of every transfer")
    clock.set(LATE)

    async def some_alerts() -> bool:
        return await count_rows(engine, select(func.count()).select_from(alerts)) > 0

    await wait_for(some_alerts, 30, "the first alerts after time moved past the deadlines")
    workers.kill(first)
    workers.start(fresh_broker.bootstrap, **clock.env())

    async def every_alert() -> bool:
        workers.assert_running()
        n = await count_rows(
            engine, select(func.count()).select_from(alerts).where(alerts.c.about_subject.startswith("K-"))
        )
        return n >= count

    await wait_for(every_alert, 90, f"{count} escalations after the SIGKILL")
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(alerts.c.about_subject, alerts.c.level).where(alerts.c.about_subject.startswith("K-"))
            )
        ).all()
    # One escalation per transfer: the highest rung reached, never a rung twice.
    assert sorted(r.level for r in rows) == ["escalated"] * count
    assert len({r.about_subject for r in rows}) == count
    raised = await alerts_on_topic(fresh_broker.bootstrap)
    # The topic may hold an alert twice (published again after the kill, with the same id);
    # the inbox holds each id once, and exactly the ids on the topic.
    async with engine.connect() as conn:
        inbox_ids = set((await conn.execute(select(alerts.c.alert_id))).scalars())
    assert len(raised) == count
    assert inbox_ids == set(raised)


async def test_a_second_worker_takes_over_the_clocks_of_a_stopped_one(
    fresh_broker: EmbeddedBroker, engine: AsyncEngine, workers: Workers, tmp_path: Path, pg_url: str
) -> None:
    clock = Time(tmp_path / "now.txt")
    await publish_transfers(fresh_broker.bootstrap, 20, "H")
    first, _ = workers.start(fresh_broker.bootstrap, **clock.env())
    workers.start(fresh_broker.bootstrap, **clock.env())

    async def clocks_started() -> bool:
        workers.assert_running()
        return (
            await count_rows(
                engine, select(func.count()).select_from(clocks).where(clocks.c.subject.startswith("H-"))
            )
            >= 40
        )

    await wait_for(clocks_started, 60, "the clocks of 20 transfers")
    workers.stop(first)
    clock.set(LATE)

    async def escalated() -> bool:
        workers.assert_running()
        return (
            await count_rows(
                engine,
                select(func.count()).select_from(alerts).where(alerts.c.about_subject.startswith("H-")),
            )
            == 20
        )

    await wait_for(escalated, 60, "the remaining worker to raise all 20 escalations")

    # The supervisors' side, over the real API: the inbox, an acknowledgement, an order.
    key_engine = make_engine(pg_url)
    try:
        key = await issue_key(key_engine, Directory.load(), JB)
    finally:
        await key_engine.dispose()
    app = create_app(
        Settings.from_env({"LIANDONG_DATA_DIR": str(tmp_path), "LIANDONG_DATABASE_URL": pg_url}),
        fresh_broker.bootstrap,
    )
    auth = {"Authorization": f"Bearer {key}"}
    # A real server: the live stream (SSE) needs a real streaming connection.
    async with (
        serving(app) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        inbox = (await client.get("/v1/inbox", headers=auth)).json()["items"]
        mine = [a for a in inbox if a["about_subject"].startswith("H-")]
        assert len(mine) == 20
        assert all(a["proposed_order"]["to_unit"] == "nancun.police-station" for a in mine)
        target = mine[0]
        ack = await client.post(
            f"/v1/alerts/{target['alert_id']}/acknowledge", json={"note": "已电话督促"}, headers=auth
        )
        assert ack.status_code == 202, ack.text

        async def acknowledged() -> bool:
            async with engine.connect() as conn:
                return bool(
                    await conn.scalar(
                        select(alerts.c.acknowledged_by).where(alerts.c.alert_id == target["alert_id"])
                    )
                )

        await wait_for(acknowledged, 30, "the acknowledgement to reach the inbox")
        order = {
            "to_unit": "nancun.police-station",
            "about_area": "transfer",
            "about_subject": target["about_subject"],
            "reason": "移送案件逾期未受理",
            "reply_by": "2026-12-31",
            "township": "shilou",
        }
        issued = await client.post("/v1/supervision-orders", json=order, headers=auth)
        assert issued.status_code == 202, issued.text
        order_id = issued.json()["order_id"]

        async def order_tracked() -> bool:
            r = await client.get(f"/v1/matters/supervision/{order_id}", headers=auth)
            return r.status_code == 200 and r.json()["open"] is True

        await wait_for(order_tracked, 30, "the supervision order as an open matter")
        bad = await client.post("/v1/supervision-orders", json={**order, "to_unit": "nowhere"}, headers=auth)
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "to_unit"

        async with client.stream("GET", "/v1/inbox/stream", headers=auth, params={"poll_ms": 100}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            first_event = ""
            async for line in lines:
                if line.startswith("data: "):
                    first_event = line
                    break
        assert json.loads(first_event.removeprefix("data: "))["level"] == "escalated"

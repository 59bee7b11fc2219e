"""Each anomaly worth a person's attention is an `anomaly.detected` event and a risk alert in the inbox.

The announcer is driven directly against both stores with a sink of our own (its port); the whole
path runs through the real gateway, broker, worker processes and PostgreSQL at the end.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from events.catalog import topic_for
from events.directory import Directory
from events.envelope import Envelope
from events.serde import EventCodec
from projections.alert_store import AlertProjection
from projections.anomalies import anomaly_id
from projections.anomaly_announcer import (
    DETECTED,
    WITHDRAWN,
    AnomalyAnnouncer,
    event_id,
    withdrawal_id,
)
from projections.db import make_engine
from projections.migrate import upgrade
from projections.runtime import Projector
from projections.schema import (
    alert_recipients,
    alerts,
    anomalies,
    deliveries,
    event_history,
    inspections,
    projection_checkpoints,
)
from services.api.app import create_app
from services.embedded_broker import EmbeddedBroker
from services.keys import issue_key
from services.settings import Settings
from services.worker.anomalies import AnomalyLoop
from services.worker.deliveries import email_text
from tests.processes import Workers
from tests.projector_kit import ListDeadLetters, SettableIncarnation, projector, records
from tests.support import case_event, catalog_event, cloudevent_json, wait_for

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
MARKET = "shilou.market-supervision-office"
OFFICE = "shilou.enforcement-office"
SUPERVISION = "district.justice-bureau"
BATCH = "application/cloudevents-batch+json"


@dataclass
class ListSink:
    """Our AnomalySink port: keeps what it was given, or fails like a broker that does not ack."""

    events: list[Envelope] = field(default_factory=list)
    failing: bool = False

    async def publish(self, events: Sequence[Envelope]) -> None:
        if self.failing:
            raise ConnectionError("broker did not acknowledge")
        self.events.extend(events)


def major_case(subject: str, *, source: str = MARKET) -> list[Envelope]:
    """A major case decided without a completed legal review (Art. 58)."""
    filed = case_event(
        "filed",
        subject,
        source=source,
        time_=T0,
        data={**case_event("filed", "x").data, "handling_unit": source, "requires_legal_review": True},
    )
    decided = case_event(
        "decided",
        subject,
        source=source,
        time_=T0 + timedelta(days=20),
        data={**case_event("decided", "x").data, "legal_review_completed": False},
    )
    return [filed, decided]


def late_legal_review(subject: str, *, source: str = MARKET) -> list[Envelope]:
    """The legal review of `major_case`, done before the decision, reaching the hub after it."""
    return [
        catalog_event(
            "case.legal_review_requested.v1", subject, source=source, time_=T0 + timedelta(days=15)
        ),
        catalog_event(
            "case.legal_review_completed.v1", subject, source=source, time_=T0 + timedelta(days=18)
        ),
    ]


async def unannounced(engine: AsyncEngine) -> dict[str, str]:
    """kind -> category of every anomaly not yet announced."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(anomalies.c.kind, anomalies.c.category).where(anomalies.c.announced_at.is_(None))
        )
        return {r.kind: r.category for r in rows}


async def seed(engine: AsyncEngine, codec: EventCodec) -> None:
    """A three-systems anomaly (MJ-1) and a data-quality one (DQ-1: a decision with no filing)."""
    orphan = case_event("decided", "DQ-1", source=MARKET, time_=T0)
    await projector(engine, codec).process(records(codec, [*major_case("MJ-1"), orphan]))
    assert await unannounced(engine) == {
        "legal_review_missing": "three_systems",
        "out_of_order": "data_quality",
    }


async def test_a_three_systems_anomaly_is_announced_once_to_the_office_the_supervisors_and_the_handler(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await seed(engine, codec)
    sink = ListSink()
    announcer = AnomalyAnnouncer(engine, Directory.load(), sink)

    assert await announcer.announce(NOW) == 1
    assert await announcer.announce(NOW + timedelta(minutes=1)) == 0

    [event] = sink.events
    assert (event.type, event.source, event.subject) == (DETECTED, "liandong.hub", event.data["anomaly_id"])
    assert event.id == event_id(event.data["anomaly_id"])
    assert event.data["kind"] == "legal_review_missing"
    assert event.data["category"] == "three_systems"
    assert (event.data["township"], event.data["case_id"]) == ("shilou", "MJ-1")
    assert event.data["responsible_unit"] == MARKET
    assert event.data["recipients"] == [OFFICE, SUPERVISION, MARKET]
    assert event.data["name_zh"] == "重大案件决定未经法制审核"
    assert event.time == event.data["detected_at"]
    # The data-quality anomaly is never announced: noisy, and it heals when the filing arrives.
    assert await unannounced(engine) == {"out_of_order": "data_quality"}
    codec.encode(event)  # valid against the catalog's schema


async def test_a_failed_publish_leaves_the_anomaly_unannounced_until_a_later_pass_succeeds(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await seed(engine, codec)
    sink = ListSink(failing=True)
    announcer = AnomalyAnnouncer(engine, Directory.load(), sink)

    try:
        await announcer.announce(NOW)
    except ConnectionError:
        pass
    else:
        raise AssertionError("a publish the broker did not acknowledge must fail the pass")
    assert "legal_review_missing" in await unannounced(engine)

    sink.failing = False
    assert await announcer.announce(NOW) == 1
    async with engine.connect() as conn:
        announced_at = await conn.scalar(
            select(anomalies.c.announced_at).where(anomalies.c.kind == "legal_review_missing")
        )
    assert announced_at is not None
    assert announced_at.replace(tzinfo=UTC) == NOW


async def test_an_anomaly_announced_twice_is_one_risk_alert_with_its_recipients_and_deliveries(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await seed(engine, codec)
    sink = ListSink()
    announcer = AnomalyAnnouncer(engine, Directory.load(), sink)
    await announcer.announce(NOW)
    # A crash between the broker's ack and the commit: the row is announced again, with the same id.
    async with engine.begin() as conn:
        await conn.execute(
            update(anomalies).values(announced_at=None).where(anomalies.c.category != "data_quality")
        )
    await announcer.announce(NOW)
    assert len(sink.events) == 2
    assert sink.events[0].id == sink.events[1].id

    alerts_only = Projector(
        engine,
        "alerts-test",
        codec,
        [AlertProjection({SUPERVISION: ["jb-hook"]})],
        ListDeadLetters(),
        SettableIncarnation(),
    )
    # Each copy in a delivery of its own: the second finds the first already applied.
    await alerts_only.process(records(codec, sink.events[:1]))
    await alerts_only.process(records(codec, sink.events[1:], start=1))
    announced = sink.events[0].data["anomaly_id"]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(alerts))).all()
        units = set(
            (
                await conn.execute(
                    select(alert_recipients.c.unit_id).where(alert_recipients.c.alert_id == announced)
                )
            )
            .scalars()
            .all()
        )
        queued = (await conn.execute(select(deliveries.c.unit_id, deliveries.c.alert_id))).all()
    [row] = rows
    assert row.alert_id == announced
    assert (row.level, row.clock_id, row.rule_id) == (
        "risk",
        f"anomaly:{announced}",
        "anomaly.legal_review_missing",
    )
    assert (row.about_area, row.about_subject, row.case_id, row.township) == (
        "case",
        "MJ-1",
        "MJ-1",
        "shilou",
    )
    assert row.deadline == row.threshold
    assert (row.overdue_seconds, row.provisional) == (0, False)
    assert "第58条" in row.citation
    assert units == {OFFICE, SUPERVISION, MARKET}
    assert [(q.unit_id, q.alert_id) for q in queued] == [(SUPERVISION, announced)]


async def test_risk_and_flow_anomalies_reach_the_units_involved_and_a_resolved_one_is_not_announced(
    engine: AsyncEngine,
) -> None:
    def anomaly(key: str, kind: str, category: str, area: str, subject: str, **extra: Any) -> dict[str, Any]:
        return {
            "anomaly_id": key,
            "subject": subject,
            "area": area,
            "kind": kind,
            "category": category,
            "event_id": f"ev-{key}",
            "event_type": "cn.gov.liandong.linkage.inspection_tasked.v1",
            "occurred_at": T0,
            "detected_at": T0 + timedelta(minutes=5),
            "resolved_at": None,
            "detail": "示例 | example",
            "township": None,
            "announced_at": None,
            **extra,
        }

    def inspection(subject: str, unit: str, days_before: int) -> dict[str, Any]:
        return {
            "subject": subject,
            "inspecting_unit": unit,
            "township": "shilou",
            "business_key": "uscc:91440113MA5XXXXX0X",
            "business_name": "番禺示例餐饮店",
            "tasked_at": T0 - timedelta(days=days_before),
            "completed_at": None,
            "finding": None,
        }

    repeat_id = anomaly_id("repeat_inspection", "INS-1|INS-2")  # the pair's id, as detection makes it
    async with engine.begin() as conn:
        await conn.execute(
            insert(inspections),
            [
                inspection("INS-1", MARKET, 10),
                inspection("INS-2", OFFICE, 0),
                # A repeat of its own with INS-2 (another anomaly): not a party to this one.
                inspection("INS-3", "shilou.police-station", 5),
            ],
        )
        await conn.execute(
            insert(anomalies),
            [
                anomaly(repeat_id, "repeat_inspection", "risk", "linkage", "INS-2"),
                anomaly("a-spike", "case_flow_spike", "flow", "township", "nancun", township="nancun"),
                anomaly("a-silent", "case_flow_silence", "flow", "township", "shiqi", resolved_at=T0),
            ],
        )
    sink = ListSink()
    assert await AnomalyAnnouncer(engine, Directory.load(), sink).announce(NOW) == 2
    by_id = {e.data["anomaly_id"]: e.data for e in sink.events}
    repeat, spike = by_id[repeat_id], by_id["a-spike"]
    assert repeat["township"] == "shilou"
    assert repeat["responsible_unit"] == OFFICE
    assert repeat["recipients"] == [OFFICE, SUPERVISION, MARKET]
    assert repeat["case_id"] is None
    assert spike["recipients"] == ["nancun.enforcement-office", SUPERVISION]
    assert spike["name_en"] == "Unusual spike in a township's case flow"
    # Resolved before anyone was told: nothing to announce.
    assert "a-silent" not in by_id


async def test_the_worker_tick_retries_a_failed_announcement_on_the_next_tick(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await seed(engine, codec)
    sink = ListSink(failing=True)
    loop = AnomalyLoop(engine, Directory.load(), sink, lambda: NOW)

    first = await loop.tick()
    assert first is not None
    assert first.announced is None  # failed, logged, nothing recorded
    assert first.detected is not None  # the case-flow step ran on its own
    assert "legal_review_missing" in await unannounced(engine)

    sink.failing = False
    second = await loop.tick()
    assert second is not None
    assert second.announced == 1
    assert [e.data["kind"] for e in sink.events] == ["legal_review_missing"]


# --- withdrawal: the anomaly resolved after it was announced ----------------------------------


@dataclass
class Offsets:
    """The next offset of the test's one partition, so every delivery is fresh to the projector."""

    next: int = 0

    def take(self, n: int) -> int:
        start, self.next = self.next, self.next + n
        return start


async def resolution(engine: AsyncEngine, anomaly: str) -> datetime | None:
    async with engine.connect() as conn:
        at = await conn.scalar(select(anomalies.c.resolved_at).where(anomalies.c.anomaly_id == anomaly))
    return None if at is None else at.replace(tzinfo=UTC)


async def alert_row(engine: AsyncEngine, alert_id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(alerts).where(alerts.c.alert_id == alert_id))).one()


async def project(engine: AsyncEngine, codec: EventCodec, offsets: Offsets, events: list[Envelope]) -> None:
    await projector(engine, codec).process(records(codec, events, start=offsets.take(len(events))))


async def announced_major_case(
    engine: AsyncEngine, codec: EventCodec, offsets: Offsets, sink: ListSink
) -> str:
    """MJ-1 decided without legal review, announced, its risk alert in the inbox: the anomaly id."""
    await project(engine, codec, offsets, major_case("MJ-1"))
    assert await AnomalyAnnouncer(engine, Directory.load(), sink).announce(NOW) == 1
    [detected] = sink.events
    await project(engine, codec, offsets, [detected])
    return str(detected.data["anomaly_id"])


async def test_a_late_legal_review_withdraws_the_risk_alert_once_and_the_inbox_shows_it_closed(
    engine: AsyncEngine, codec: EventCodec, store_url: str, tmp_path: Path
) -> None:
    offsets, sink = Offsets(), ListSink()
    announced = await announced_major_case(engine, codec, offsets, sink)
    announcer = AnomalyAnnouncer(engine, Directory.load(), sink)
    assert await announcer.withdraw() == 0  # still open: nothing to withdraw

    # The legal review was done before the decision; it reaches the hub after the alert.
    await project(engine, codec, offsets, late_legal_review("MJ-1"))
    resolved_at = await resolution(engine, announced)
    assert resolved_at is not None

    loop = AnomalyLoop(engine, Directory.load(), sink, lambda: NOW)
    tick = await loop.tick()
    assert tick is not None
    assert (tick.announced, tick.withdrawn) == (0, 1)
    # The projection has not caught up yet: the next pass publishes the same event again.
    assert await announcer.withdraw() == 1
    first, again = sink.events[1:]
    assert first.id == again.id == withdrawal_id(announced, resolved_at)
    assert (first.type, first.source, first.subject) == (WITHDRAWN, "liandong.hub", f"anomaly:{announced}")
    assert first.time == resolved_at
    assert first.data["alert_id"] == announced
    assert (first.data["level"], first.data["reason"]) == ("risk", "anomaly_resolved")
    assert (first.data["closed_at"], first.data["case_id"]) == (resolved_at, "MJ-1")
    assert first.data["note"].startswith("异常已消除，风险预警撤回：重大案件决定未经法制审核 | ")
    codec.encode(first)  # valid against the catalog's newest revision

    await project(engine, codec, offsets, [first, again])
    row = await alert_row(engine, announced)
    assert row.withdrawn_at.replace(tzinfo=UTC) == resolved_at
    # Withdrawn: later passes find nothing, so nothing more is published.
    assert await announcer.withdraw() == 0
    assert await announcer.announce(NOW + timedelta(minutes=5)) == 0
    assert len(sink.events) == 3
    # A risk alert's history has no `alert.raised` (its raise is the anomaly.detected event): its
    # withdrawal is not a fact out of order.
    async with engine.connect() as conn:
        noise = (await conn.execute(select(anomalies.c.detail).where(anomalies.c.area == "alert"))).all()
    assert noise == []

    directory = Directory.load()
    auth = {"Authorization": f"Bearer {await issue_key(engine, directory, SUPERVISION)}"}
    settings = Settings.from_env({"LIANDONG_DATA_DIR": str(tmp_path), "LIANDONG_DATABASE_URL": store_url})
    app = create_app(settings, "127.0.0.1:1")  # reads only: the broker is never dialled
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client,
    ):
        still_open = await client.get("/v1/inbox", params={"level": "risk"}, headers=auth)
        closed = await client.get("/v1/inbox", params={"level": "risk", "open": "false"}, headers=auth)
    assert still_open.status_code == closed.status_code == 200, still_open.text
    assert still_open.json()["items"] == []
    [item] = closed.json()["items"]
    assert (item["alert_id"], item["open"]) == (announced, False)


async def test_an_anomaly_resolved_before_it_was_announced_is_never_raised_nor_withdrawn(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    offsets, sink = Offsets(), ListSink()
    await project(engine, codec, offsets, major_case("MJ-2"))
    await project(engine, codec, offsets, late_legal_review("MJ-2"))
    async with engine.connect() as conn:
        [(anomaly, resolved_at)] = (
            await conn.execute(
                select(anomalies.c.anomaly_id, anomalies.c.resolved_at).where(
                    anomalies.c.kind == "legal_review_missing"
                )
            )
        ).all()
    assert resolved_at is not None

    loop = AnomalyLoop(engine, Directory.load(), sink, lambda: NOW)
    for _ in range(2):
        tick = await loop.tick()
        assert tick is not None
        assert (tick.announced, tick.withdrawn) == (0, 0)
    assert sink.events == []
    async with engine.connect() as conn:
        assert (await conn.execute(select(alerts.c.alert_id))).all() == []
        assert (
            await conn.scalar(select(anomalies.c.announced_at).where(anomalies.c.anomaly_id == anomaly))
            is None
        )


async def test_an_anomaly_that_reopens_after_its_alert_was_withdrawn_leaves_the_alert_withdrawn(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    offsets, sink = Offsets(), ListSink()
    announced = await announced_major_case(engine, codec, offsets, sink)
    announcer = AnomalyAnnouncer(engine, Directory.load(), sink)
    await project(engine, codec, offsets, late_legal_review("MJ-1"))
    assert await announcer.withdraw() == 1
    await project(engine, codec, offsets, sink.events[-1:])
    withdrawn_at = (await alert_row(engine, announced)).withdrawn_at
    assert withdrawn_at is not None

    # Reopened (as a case-flow finding that holds again is), then resolved once more.
    async with engine.begin() as conn:
        await conn.execute(
            update(anomalies).where(anomalies.c.anomaly_id == announced).values(resolved_at=None)
        )
    assert (await announcer.announce(NOW), await announcer.withdraw()) == (0, 0)
    async with engine.begin() as conn:
        await conn.execute(
            update(anomalies)
            .where(anomalies.c.anomaly_id == announced)
            .values(resolved_at=NOW + timedelta(days=1))
        )
    assert (await announcer.announce(NOW), await announcer.withdraw()) == (0, 0)
    assert [e.type for e in sink.events] == [DETECTED, WITHDRAWN]
    assert (await alert_row(engine, announced)).withdrawn_at == withdrawn_at


async def test_a_replay_that_applies_the_withdrawal_before_the_raise_still_ends_withdrawn(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    offsets, sink = Offsets(), ListSink()
    announced = await announced_major_case(engine, codec, offsets, sink)
    await project(engine, codec, offsets, late_legal_review("MJ-1"))
    assert await AnomalyAnnouncer(engine, Directory.load(), sink).withdraw() == 1
    detected, withdrawal = sink.events

    # A rebuild's shadow starts empty and reads the anomaly and alert topics side by side.
    async with engine.begin() as conn:
        for table in (deliveries, alert_recipients, alerts, event_history):
            await conn.execute(delete(table))
    replay = Projector(engine, "replay", codec, [AlertProjection()], ListDeadLetters(), SettableIncarnation())
    await replay.process(records(codec, [withdrawal], start=0))
    await replay.process(records(codec, [detected], start=1))
    row = await alert_row(engine, announced)
    assert row.withdrawn_at is not None
    assert row.withdrawn_at.replace(tzinfo=UTC) == withdrawal.time


def test_a_risk_alert_email_names_the_anomaly_and_its_basis_and_nothing_overdue() -> None:
    alert = {
        "alert_id": "f8c6169970385048b20b4f44570ea2eb",
        "level": "risk",
        "rule_name_zh": "重大案件决定未经法制审核",
        "rule_name_en": "Major-case decision without a completed legal review",
        "citation": "《行政处罚法》第58条（重大执法决定法制审核） | Administrative Penalty Law Art. 58",
        "about_area": "case",
        "about_subject": "MJ-1",
        "responsible_unit": MARKET,
        "deadline": "2026-11-03T09:00:00+00:00",
        "raised_at": "2026-11-03T09:00:00+00:00",
        "overdue_seconds": 0,
    }
    subject, body = email_text(alert)
    assert subject == "[联动风险预警] 重大案件决定未经法制审核 MJ-1"
    assert body.startswith("风险预警：重大案件决定未经法制审核\n")
    assert "依据：《行政处罚法》第58条" in body
    assert "Risk alert: Major-case decision without a completed legal review" in body
    assert "超期" not in body
    assert "overdue" not in body
    # A clock alert still counts its days overdue.
    _, red = email_text({**alert, "level": "red", "overdue_seconds": 2 * 86400})
    assert "已超期 2 天" in red
    # A yellow alert comes before its deadline: it is not "0 days overdue".
    _, yellow = email_text({**alert, "level": "yellow", "overdue_seconds": 0})
    assert "临近期限，尚未超期" in yellow
    assert "已超期" not in yellow


# --- through the real gateway, broker, worker processes and PostgreSQL -------------------------


@asynccontextmanager
async def api(bootstrap: str, pg_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings.from_env({"LIANDONG_DATA_DIR": str(tmp_path), "LIANDONG_DATABASE_URL": pg_url}), bootstrap
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client,
    ):
        yield client


async def detected_on_topic(bootstrap: str) -> dict[str, list[tuple[int, int]]]:
    """Every anomaly.detected record on the anomaly topic: event id -> (partition, offset) of each copy."""
    consumer = AIOKafkaConsumer(
        topic_for("anomaly"),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    try:
        batches = await consumer.getmany(timeout_ms=2000, max_records=10_000)
        for batch in batches.values():
            for r in batch:
                headers = dict(r.headers)
                if headers.get("ce_type") == DETECTED.encode():
                    seen[headers["ce_id"].decode()].append((r.partition, r.offset))
    finally:
        await consumer.stop()
    return seen


async def projected_up_to(engine: AsyncEngine, partition: int, offset: int) -> bool:
    """Whether the worker's projection has applied the anomaly topic up to `offset`."""
    c = projection_checkpoints.c
    async with engine.connect() as conn:
        done = await conn.scalar(
            select(c.offset).where(
                c.consumer == "hub", c.topic == topic_for("anomaly"), c.partition == partition
            )
        )
    return done is not None and done >= offset


async def test_a_major_decision_without_legal_review_reaches_the_office_and_supervisors_inboxes_once(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, workers: Workers
) -> None:
    bootstrap = fresh_broker.bootstrap
    engine = make_engine(pg_url)
    try:
        await upgrade(engine)
        directory = Directory.load()
        keys = {
            u: await issue_key(engine, directory, u)
            for u in (MARKET, OFFICE, SUPERVISION, "shiqiao.enforcement-office")
        }
        auth = {u: {"Authorization": f"Bearer {k}"} for u, k in keys.items()}
        async with api(bootstrap, pg_url, tmp_path) as client:
            sent = await client.post(
                "/v1/events",
                content=json.dumps(
                    [cloudevent_json(e) for e in major_case("MJ-9")], ensure_ascii=False
                ).encode(),
                headers={**auth[MARKET], "Content-Type": BATCH},
            )
            assert sent.status_code == 202, sent.text
            # Only the hub announces anomalies: a unit may not publish one through the gateway.
            forged = Envelope(
                id=event_id("forged"),
                type=DETECTED,
                source=MARKET,
                subject="forged",
                time=NOW,
                data={},
            )
            refused = await client.post(
                "/v1/events",
                content=json.dumps([cloudevent_json(forged)]).encode(),
                headers={**auth[MARKET], "Content-Type": BATCH},
            )
            assert refused.status_code == 403, refused.text
            assert refused.json()["errors"][0]["field"] == "type"

            workers.start(bootstrap, LIANDONG_CLOCK_SCAN_INTERVAL_MS="200")

            async def in_inbox(unit: str) -> dict[str, Any] | None:
                workers.assert_running()
                r = await client.get("/v1/inbox", headers=auth[unit])
                # Clock alerts of the same case (its decision is due for service) may be there too.
                items = [
                    a for a in r.json()["items"] if a["about_subject"] == "MJ-9" and a["level"] == "risk"
                ]
                return items[0] if items else None

            alert = await wait_for(
                lambda: in_inbox(OFFICE), 90, "the risk alert in the township office's inbox"
            )
            assert await in_inbox(SUPERVISION) == alert
            assert await in_inbox(MARKET) == alert
            assert alert["level"] == "risk"
            assert alert["rule_id"] == "anomaly.legal_review_missing"
            assert alert["rule_name_zh"] == "重大案件决定未经法制审核"
            assert alert["overdue_seconds"] == 0
            assert alert["open"] is True
            other = await client.get("/v1/inbox", headers=auth["shiqiao.enforcement-office"])
            assert [a for a in other.json()["items"] if a["about_subject"] == "MJ-9"] == []

            # A crash after the broker's ack and before the commit: the worker announces again.
            async with engine.begin() as conn:
                await conn.execute(
                    update(anomalies)
                    .where(anomalies.c.anomaly_id == alert["alert_id"])
                    .values(announced_at=None)
                )

            async def announced_again() -> list[tuple[int, int]] | None:
                workers.assert_running()
                copies = (await detected_on_topic(bootstrap))[event_id(alert["alert_id"])]
                return copies if len(copies) == 2 else None

            copies = await wait_for(
                announced_again, 60, "the anomaly announced again, with the same event id"
            )
            partition, offset = max(copies)
            await wait_for(
                lambda: projected_up_to(engine, partition, offset),
                60,
                "the second copy through the projection",
            )
            # Twice on the topic, once in the inbox.
            items = (await client.get("/v1/inbox", headers=auth[SUPERVISION])).json()["items"]
            assert [
                a["alert_id"] for a in items if a["about_subject"] == "MJ-9" and a["level"] == "risk"
            ] == [alert["alert_id"]]

            # Acknowledging it is the existing command, open to recipients only.
            stranger = await client.post(
                f"/v1/alerts/{alert['alert_id']}/acknowledge",
                json={},
                headers=auth["shiqiao.enforcement-office"],
            )
            assert stranger.status_code == 403
            ack = await client.post(
                f"/v1/alerts/{alert['alert_id']}/acknowledge",
                json={"note": "已责令补正法制审核"},
                headers=auth[SUPERVISION],
            )
            assert ack.status_code == 202, ack.text

            async def acknowledged() -> str | None:
                workers.assert_running()
                return (await in_inbox(SUPERVISION) or {}).get("acknowledged_by")

            assert await wait_for(acknowledged, 60, "the acknowledgement in the inbox") == SUPERVISION

            # The legal review was done before the decision and arrives now: the anomaly resolves,
            # and the worker withdraws the risk alert (on the alert topic, beside the acknowledgement).
            late = await client.post(
                "/v1/events",
                content=json.dumps(
                    [cloudevent_json(e) for e in late_legal_review("MJ-9")], ensure_ascii=False
                ).encode(),
                headers={**auth[MARKET], "Content-Type": BATCH},
            )
            assert late.status_code == 202, late.text

            async def withdrawn(unit: str) -> dict[str, Any] | None:
                workers.assert_running()
                r = await client.get("/v1/inbox", params={"open": "false"}, headers=auth[unit])
                items = [a for a in r.json()["items"] if a["alert_id"] == alert["alert_id"]]
                return items[0] if items else None

            closed = await wait_for(lambda: withdrawn(OFFICE), 60, "the risk alert withdrawn")
            assert closed["open"] is False
            assert closed["acknowledged_by"] == SUPERVISION
            assert await in_inbox(SUPERVISION) is None  # no longer among the open alerts
    finally:
        await engine.dispose()

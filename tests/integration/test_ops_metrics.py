"""Every long-running process's /metrics, scraped for real and parsed with prometheus-client's own
parser, after events flow through every ingest path: the HTTP gateway, the outbox relay, and a record
written straight to Kafka. And every `liandong_*` name the deploy files use is exported somewhere.

One hub (a broker of its own, a fresh PostgreSQL database, api + worker + relay) is shared by the
module's tests, which run in order."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from events.catalog import Catalog, topic_for
from events.directory import Directory
from projections.db import make_engine
from projections.migrate import instance_id
from projections.schema import clocks
from services.embedded_broker import EmbeddedBroker
from services.keys import issue_key
from services.metrics import CLOCK_STATES
from tests.ops_processes import OUTBOX_DDL, Hub, Scrape, readyz, scrape
from tests.support import (
    REPO,
    catalog_event,
    cloudevent_json,
    create_migrated_pg_database,
    drop_pg_database,
    wait_for,
)

pytestmark = pytest.mark.integration

CN = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=CN)
LATE = datetime(2026, 11, 20, 9, 0, tzinfo=CN)  # past every rung of a 3-working-day clock
SHILOU = "shilou.enforcement-office"
TRANSFER = "cn.gov.liandong.transfer.requested.v1"
FILED = "cn.gov.liandong.case.filed.v1"
VIA_GATEWAY = 4
VIA_OUTBOX = 2
PARTITIONS = 3
TOPICS = {topic_for(family) for family in Catalog.load().families}


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ops-metrics")


@pytest.fixture(scope="module")
def own_broker(module_tmp: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this module's own: the session broker carries other tests' records, which a fresh
    store's worker would read and count too."""
    instance = EmbeddedBroker(log_path=module_tmp / "tansu.log")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
async def store(module_tmp: Path) -> AsyncIterator[str]:
    url = await create_migrated_pg_database()
    yield url
    await drop_pg_database(url)


@pytest.fixture(scope="module")
async def hub(own_broker: EmbeddedBroker, store: str, module_tmp: Path) -> AsyncIterator[Hub]:
    dsn = store.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(OUTBOX_DDL)
    finally:
        await conn.close()
    now_file = module_tmp / "now"
    now_file.write_text(T0.isoformat())
    hub = Hub(
        module_tmp,
        {
            "LIANDONG_KAFKA_BOOTSTRAP": own_broker.bootstrap,
            "LIANDONG_DATABASE_URL": store,
            "LIANDONG_DATA_DIR": str(module_tmp / "data"),
            "LIANDONG_TOPIC_PARTITIONS": str(PARTITIONS),
            "LIANDONG_TIME_SOURCE": f"file:{now_file}",
            "LIANDONG_CLOCK_SCAN_INTERVAL_MS": "200",
            "LIANDONG_ALERT_GRACE_S": "0",
            "LIANDONG_METRICS_INTERVAL_MS": "300",
            "LIANDONG_OUTBOX_DSN": dsn,
        },
    )
    try:
        hub.start("worker", ("worker",), "LIANDONG_WORKER_WEB_PORT")
        hub.start("api", ("api",), "LIANDONG_API_PORT")
        hub.start("relay", ("outbox-relay",), "LIANDONG_RELAY_WEB_PORT")
        for name in ("api", "relay", "worker"):
            await hub.answering(name)
        yield hub
    finally:
        hub.stop_all()


async def publish_via_gateway(api: str, store: str) -> None:
    engine = make_engine(store)
    try:
        key = await issue_key(engine, Directory.load(), SHILOU)
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as client:
        for i in range(VIA_GATEWAY):
            event = catalog_event(
                "transfer.requested.v1",
                f"OPS-T-{i}",
                source=SHILOU,
                time_=T0,
                to_unit="nancun.police-station",
                township="shilou",
                urgent=False,
                discovered_on="2026-11-02",
            )
            response = await client.post(
                f"{api}/v1/events",
                content=json.dumps(cloudevent_json(event), default=str),
                headers={"Content-Type": "application/cloudevents+json"},
                timeout=30,
            )
            assert response.status_code == 202, response.text
        # One refused (unknown type): the gateway counts it under its reason.
        bad = cloudevent_json(catalog_event("transfer.requested.v1", "OPS-BAD", source=SHILOU))
        bad["type"] = "cn.gov.liandong.no-such.v1"
        response = await client.post(
            f"{api}/v1/events",
            content=json.dumps(bad, default=str),
            headers={"Content-Type": "application/cloudevents+json"},
        )
        assert response.status_code == 422, response.text


async def publish_via_outbox(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for i in range(VIA_OUTBOX):
            data = {
                "township": "shilou",
                "category": "illegal_construction",
                "handling_unit": SHILOU,
                "title": f"发件箱 {i}",
                "case_number": None,
                "requires_legal_review": False,
            }
            await conn.execute(
                "INSERT INTO liandong_outbox (unit, event_type, subject, occurred_at, payload) "
                "VALUES ($1, 'case.filed.v1', $2, $3, $4::jsonb)",
                SHILOU,
                f"OPS-OB-{i}",
                datetime.now(UTC),
                json.dumps(data),
            )
    finally:
        await conn.close()


async def publish_garbage(bootstrap: str) -> None:
    """Straight to Kafka, no CloudEvents headers: the worker reads it (unknown source and type) and
    dead-letters it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait("liandong.case.events", b"not an event", key=b"OPS-GARBAGE")
    finally:
        await producer.stop()


async def expected_clocks(store: str, now: datetime) -> dict[tuple[str, str], float]:
    """The clocks table classified in Python, independently of the worker's GROUP BY."""
    engine = make_engine(store)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(clocks).where(clocks.c.stopped_at.is_(None)))).all()
    finally:
        await engine.dispose()
    out: dict[tuple[str, str], float] = {}
    for row in rows:
        state = (
            "overdue" if row.deadline is not None and row.deadline < now else "due" if row.fired else "open"
        )
        out[(row.rule_id, state)] = out.get((row.rule_id, state), 0) + 1
    return out


def set_time(path: Path, moment: datetime) -> None:
    path.write_text(moment.isoformat(), encoding="utf-8")


def clock_gauge(scrape_: Scrape) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["rule"], dict(labels)["state"]): value
        for labels, value in scrape_.matching("liandong_clocks").items()
        if value
    }


async def test_metrics_of_every_process_after_events_flow(
    hub: Hub, store: str, own_broker: EmbeddedBroker
) -> None:
    api, worker, relay = hub.urls["api"], hub.urls["worker"], hub.urls["relay"]
    await publish_via_gateway(api, store)
    await publish_via_outbox(hub.env["LIANDONG_OUTBOX_DSN"])
    await publish_garbage(own_broker.bootstrap)

    # Ingested by source and type, counted by the worker whatever the path.
    async def ingested() -> Scrape | None:
        hub.assert_running()
        s = await scrape(worker)
        counts = (
            s.value("liandong_events_ingested_total", source=SHILOU, type=TRANSFER),
            s.value("liandong_events_ingested_total", source=SHILOU, type=FILED),
            s.value("liandong_events_ingested_total", source="unknown", type="unknown"),
        )
        return s if counts == (VIA_GATEWAY, VIA_OUTBOX, 1) else None

    w = await wait_for(ingested, 60, "the worker to count every record it read")
    sources = {dict(k)["source"] for k in w.matching("liandong_events_ingested_total")}
    assert sources <= {*Directory.load().units, "liandong.hub", "unknown"}, sources

    # The gateway: accepted, rejected by reason, publish latency observed once per 202.
    a = await scrape(api)
    assert a.value("liandong_events_accepted_total", type=TRANSFER) == VIA_GATEWAY
    assert a.value("liandong_events_rejected_total", type="unknown", reason="invalid_event") == 1
    assert a.families["liandong_publish_latency_seconds"] == "histogram"
    assert a.value("liandong_publish_latency_seconds_count", connector="http-gateway") == VIA_GATEWAY
    latency_sum = a.value("liandong_publish_latency_seconds_sum", connector="http-gateway")
    assert latency_sum is not None
    assert 0 < latency_sum < 30 * VIA_GATEWAY
    assert (a.value("liandong_connector_last_success_timestamp_seconds", connector="http-gateway") or 0) > 0
    assert a.value("liandong_auth_rejections_total", reason="csrf") == 0  # pre-initialised

    # The relay published what was in the outbox, and says it is up.
    r = await scrape(relay)
    assert (
        r.value("liandong_connector_records_total", connector="outbox:liandong_outbox", outcome="published")
        == 2
    )
    assert r.value("liandong_connector_up", connector="outbox:liandong_outbox") == 1
    # One latency observation per relayed event, from reading its row to the broker's ack.
    assert r.value("liandong_publish_latency_seconds_count", connector="outbox:liandong_outbox") == 2
    relay_sum = r.value("liandong_publish_latency_seconds_sum", connector="outbox:liandong_outbox")
    assert relay_sum is not None
    assert 0 < relay_sum < 60, relay_sum
    assert r.value("liandong_dependency_up", dependency="kafka") == 1
    assert r.value("liandong_dependency_up", dependency="outbox_database") == 1

    for s in (a, w):
        assert s.value("liandong_dependency_up", dependency="kafka") == 1
        assert s.value("liandong_dependency_up", dependency="postgresql") == 1

    # Deliveries: both channels exported from the start.
    assert w.value("liandong_deliveries_failed_total", channel="webhook") == 0
    assert w.value("liandong_deliveries_failed_total", channel="email") == 0

    # Dead-letter depth: the garbage record waits for a replay.
    async def dead_letter_depth() -> float:
        hub.assert_running()
        return sum((await scrape(worker)).matching("liandong_dead_letters_records").values())

    assert await wait_for(dead_letter_depth, 30, "the dead-letter depth to show the garbage record") == 1

    # Clocks: every rule, every state, exported; the counts match the clocks table.
    rules = {dict(k)["rule"] for k in w.matching("liandong_clocks")}
    assert len(rules) > 20
    assert {dict(k)["state"] for k in w.matching("liandong_clocks")} == set(CLOCK_STATES)

    async def clocks_match(now: datetime) -> bool:
        hub.assert_running()
        expected = await expected_clocks(store, now)
        return bool(expected) and clock_gauge(await scrape(worker)) == expected

    await wait_for(lambda: clocks_match(T0), 30, "liandong_clocks to match the clocks table at T0")
    before = clock_gauge(await scrape(worker))
    assert before.get(("transfer.acceptance", "open")) == VIA_GATEWAY, before

    # Time moves past every threshold: the scanner raises alerts, their latency is observed, and the
    # clocks are overdue.
    set_time(Path(hub.env["LIANDONG_TIME_SOURCE"].removeprefix("file:")), LATE)

    async def alerted() -> Scrape | None:
        hub.assert_running()
        s = await scrape(worker)
        return s if (s.value("liandong_alert_latency_seconds_count") or 0) >= VIA_GATEWAY else None

    s = await wait_for(alerted, 30, "alerts to be raised and their latency observed")
    count = s.value("liandong_alert_latency_seconds_count") or 0
    total = s.value("liandong_alert_latency_seconds_sum") or 0
    # Each alert is late by LATE minus its threshold: positive, at most the 18 days since T0.
    assert 0 < total / count <= (LATE - T0).total_seconds()
    await wait_for(lambda: clocks_match(LATE), 30, "liandong_clocks to match the clocks table at LATE")
    assert clock_gauge(await scrape(worker)).get(("transfer.acceptance", "overdue")) == VIA_GATEWAY

    # Consumer lag: one series per partition this (only) worker holds, in its group, reaching 0.
    engine = make_engine(store)
    try:
        group = f"liandong-projector.{(await instance_id(engine))[:12]}"
    finally:
        await engine.dispose()

    async def caught_up() -> bool:
        hub.assert_running()
        lag = (await scrape(worker)).matching("liandong_consumer_lag_records")
        groups = {dict(k)["group"] for k in lag}
        return groups == {group} and len(lag) == len(TOPICS) * PARTITIONS and not any(lag.values())

    await wait_for(caught_up, 30, "every partition's consumer lag to reach 0")

    # The audit chain head and the projection lag exist.
    w = await scrape(worker)
    assert (w.value("liandong_audit_chain_length") or 0) > 0
    assert w.matching("liandong_projection_lag_seconds", projection="hub")

    for url in (api, worker, relay):
        status, body, _ = await readyz(url)
        assert status == 200, (url, body)
        assert body["status"] == "ready", (url, body)


DEPLOY_NAME = re.compile(r"\bliandong_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def deploy_names() -> set[str]:
    names: set[str] = set()
    files = [
        *(REPO / "deploy/prometheus/rules").glob("*.yml"),
        *(REPO / "deploy/grafana/dashboards").glob("*.json"),
    ]
    assert files, "no rules or dashboards found under deploy/"
    for path in files:
        for name in DEPLOY_NAME.findall(path.read_text(encoding="utf-8")):
            for suffix in SUFFIXES:
                if name.endswith(suffix):
                    name = name.removesuffix(suffix)
                    break
            names.add(name)
    return names


async def test_every_metric_the_deploy_files_use_is_exported(hub: Hub) -> None:
    # Declared families count even before their first sample (a labelled metric shows only its HELP
    # and TYPE lines until a label set is used), so this test does not depend on the one above. The
    # parser names a counter's family without `_total`; a histogram is used by its family name once
    # the `_bucket` suffix is stripped.
    exported: set[str] = set()
    for url in hub.urls.values():
        s = await scrape(url)
        exported |= {name for name, _labels in s.samples}
        exported |= set(s.families)
        exported |= {f"{name}_total" for name, kind in s.families.items() if kind == "counter"}
    used = deploy_names()
    assert len(used) > 10, used
    missing = sorted(n for n in used if n not in exported)
    assert not missing, f"deploy/ uses metrics no process exports: {missing}"

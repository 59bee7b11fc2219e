"""Alerts reach subscribed units' webhooks: signed, retried with backoff, failures kept visible."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.webhook.sender import RetryPolicy, WebhookSender
from events.directory import Directory
from events.serde import EventCodec
from projections.alert_store import AlertProjection
from projections.runtime import Projector
from projections.schema import deliveries
from services.api.app import create_app
from services.keys import issue_key
from services.settings import Settings
from services.webhooks import Subscription, load_subscriptions
from services.worker.deliveries import DeliveryLoop
from tests.projector_kit import ListDeadLetters, SettableIncarnation, records
from tests.support import catalog_event
from tests.webhook_receiver import Receiver

UNIT = "nancun.police-station"
NOW = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def alert(subject: str) -> object:
    return catalog_event(
        "alert.raised.v1",
        subject,
        source="liandong.hub",
        time_=NOW,
        alert_id=f"0193a5e2-7c1d-7b3e-9f00-{subject[-12:]:0>12}",
        rule_id="transfer.acceptance",
        rule_version=1,
        rule_name_zh="移送受理",
        rule_name_en="Receiver accepts or objects",
        citation="本地规则 | local rules",
        level="red",
        about_area="transfer",
        about_subject="TR-9",
        responsible_unit=UNIT,
        township="shilou",
        started_at="2026-11-02T09:00:00+08:00",
        deadline="2026-11-05T23:59:59+08:00",
        threshold="2026-11-05T23:59:59+08:00",
        overdue_seconds=3600,
        provisional=False,
        recipients=[UNIT],
        proposed_order=None,
    )


async def project_alert(engine: AsyncEngine, codec: EventCodec, subject: str, target: str) -> str:
    projection = AlertProjection({UNIT: [target]})
    event = alert(subject)
    runner = Projector(engine, "alerts-test", codec, [projection], ListDeadLetters(), SettableIncarnation())
    # Each alert at its own offset: the runtime would skip a second record at offset 0.
    offset = int(subject[-12:])
    await runner.process(records(codec, [event], start=offset))  # type: ignore[list-item]
    return str(event.data["alert_id"])  # type: ignore[attr-defined]


def loop(engine: AsyncEngine, receiver: Receiver, path: str, now: datetime = NOW) -> DeliveryLoop:
    subs = {f"receiver{path}": Subscription(UNIT, receiver.target(path))}
    policy = RetryPolicy(rng=random.Random(1))
    return DeliveryLoop(engine, subs, WebhookSender(timeout_s=5), policy, lambda: now)


async def status_of(engine: AsyncEngine, alert_id: str) -> tuple[str, int, object]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(deliveries).where(deliveries.c.alert_id == alert_id))).one()
    return row.status, row.attempts, row.next_attempt_at


async def test_an_alert_is_delivered_once_signed_to_the_subscribed_unit(
    engine: AsyncEngine, codec: EventCodec, receiver: Receiver
) -> None:
    alert_id = await project_alert(engine, codec, "clock-000000000001", "receiver/hook")
    assert await loop(engine, receiver, "/hook").tick() == 1
    assert await loop(engine, receiver, "/hook").tick() == 0
    assert [a.signature_error for a in receiver.arrivals] == [None]
    assert json.loads(receiver.arrivals[0].body)["alert_id"] == alert_id
    status, attempts, _ = await status_of(engine, alert_id)
    assert (status, attempts) == ("delivered", 1)


async def test_a_failing_receiver_is_retried_later_and_a_rejecting_one_is_kept_as_failed(
    engine: AsyncEngine, codec: EventCodec, receiver: Receiver, tmp_path: Path, store_url: str
) -> None:
    flaky = await project_alert(engine, codec, "clock-000000000002", "receiver/status/503")
    await loop(engine, receiver, "/status/503").tick()
    status, attempts, next_at = await status_of(engine, flaky)
    assert (status, attempts) == ("pending", 1)
    assert next_at is not None
    # Not due again until its backoff has passed.
    assert await loop(engine, receiver, "/status/503").tick() == 0

    rejected = await project_alert(engine, codec, "clock-000000000003", "receiver/status/404")
    await loop(engine, receiver, "/status/404").tick()
    assert (await status_of(engine, rejected))[0] == "failed"

    key = await issue_key(engine, Directory.load(), UNIT)
    app = create_app(
        Settings.from_env({"LIANDONG_DATA_DIR": str(tmp_path), "LIANDONG_DATABASE_URL": store_url}),
        "127.0.0.1:1",
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client,
    ):
        as_unit = {"Authorization": f"Bearer {key}"}
        failed = (await client.get("/v1/deliveries", params={"status": "failed"}, headers=as_unit)).json()[
            "items"
        ]
        assert [d["alert_id"] for d in failed] == [rejected]
        assert failed[0]["last_error"].startswith("unexpected_status") or "404" in failed[0]["last_error"]
        retry = await client.post(
            f"/v1/deliveries/{failed[0]['delivery_id']}/retry", headers={"Authorization": f"Bearer {key}"}
        )
        assert retry.status_code == 202
    assert (await status_of(engine, rejected))[:2] == ("pending", 0)


def test_webhook_subscriptions_read_secrets_from_the_environment_only(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.json"
    path.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "name": "oa",
                        "unit": UNIT,
                        "url": "https://oa.example/hook",
                        "secret_env": "HOOK_SECRET",
                    }
                ]
            }
        )
    )
    subs = load_subscriptions(path, Directory.load(), {"HOOK_SECRET": "s3cret"})
    assert subs["oa"].target.secret == b"s3cret"
    assert "s3cret" not in repr(subs)
    with pytest.raises(Exception, match="HOOK_SECRET is not set"):
        load_subscriptions(path, Directory.load(), {})


async def test_deliveries_are_counted_as_connector_metrics(
    engine: AsyncEngine, codec: EventCodec, receiver: Receiver
) -> None:
    from prometheus_client import CollectorRegistry

    from connectors.framework import ConnectorMetrics

    registry = CollectorRegistry()
    await project_alert(engine, codec, "clock-000000000021", "receiver/hook")
    await project_alert(engine, codec, "clock-000000000022", "receiver/status/503")
    subs = {
        "receiver/hook": Subscription(UNIT, receiver.target("/hook")),
        "receiver/status/503": Subscription(UNIT, receiver.target("/status/503")),
    }
    metrics = ConnectorMetrics.create(registry)
    loop = DeliveryLoop(
        engine,
        subs,
        WebhookSender(timeout_s=5),
        RetryPolicy(rng=random.Random(3)),
        lambda: NOW,
        metrics=metrics,
    )
    await loop.tick()
    sample = registry.get_sample_value
    assert sample("liandong_connector_records_total", {"connector": "webhook", "outcome": "published"}) == 1
    assert sample("liandong_connector_records_total", {"connector": "webhook", "outcome": "retried"}) == 1
    await loop.tick()  # the backlog is measured at the start of a tick: the 503 delivery is still pending
    assert sample("liandong_connector_lag_records", {"connector": "webhook"}) == 1

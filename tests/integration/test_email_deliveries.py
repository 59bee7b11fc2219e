"""Alerts by email, against a real SMTP server (aiosmtpd) started by the test."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.email.sender import EmailTarget
from connectors.webhook.sender import RetryPolicy, WebhookSender
from events.serde import EventCodec
from projections.schema import deliveries
from services.embedded_broker import free_port
from services.webhooks import Subscription
from services.worker.deliveries import DeliveryLoop
from tests.integration.test_webhook_deliveries import NOW, UNIT, project_alert


@dataclass
class Mailbox:
    """An SMTP handler that keeps what it accepts and refuses one address permanently."""

    refused: str = "nobody@example.gov.cn"
    received: list[Message] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address == self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.received.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()  # returns once the server answers
    yield mailbox, port
    controller.stop()


def mail_loop(engine: AsyncEngine, name: str, address: str, port: int) -> DeliveryLoop:
    subs = {name: Subscription(UNIT, EmailTarget(name, address, "127.0.0.1", port))}
    return DeliveryLoop(engine, subs, WebhookSender(), RetryPolicy(rng=random.Random(2)), lambda: NOW)


async def status(engine: AsyncEngine, alert_id: str) -> str:
    async with engine.connect() as conn:
        return str(await conn.scalar(select(deliveries.c.status).where(deliveries.c.alert_id == alert_id)))


async def test_an_alert_arrives_by_email_in_chinese_with_its_delivery_id(
    engine: AsyncEngine, codec: EventCodec, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    alert_id = await project_alert(engine, codec, "clock-000000000011", "mail")
    assert await mail_loop(engine, "mail", "duban@example.gov.cn", port).tick() == 1
    [message] = mailbox.received
    assert message["To"] == "duban@example.gov.cn"
    assert "红色预警" in str(message["Subject"])
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "移送受理" in body.decode("utf-8")
    assert message["X-Liandong-Delivery"]
    assert await status(engine, alert_id) == "delivered"


async def test_a_refused_mailbox_is_a_permanent_failure_kept_visible(
    engine: AsyncEngine, codec: EventCodec, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    alert_id = await project_alert(engine, codec, "clock-000000000012", "mail")
    await mail_loop(engine, "mail", mailbox.refused, port).tick()
    assert mailbox.received == []
    assert await status(engine, alert_id) == "failed"


async def test_an_unreachable_smtp_server_is_retried_later(engine: AsyncEngine, codec: EventCodec) -> None:
    alert_id = await project_alert(engine, codec, "clock-000000000013", "mail")
    await mail_loop(engine, "mail", "duban@example.gov.cn", free_port()).tick()
    assert await status(engine, alert_id) == "pending"

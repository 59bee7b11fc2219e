"""Webhook deliveries over real HTTP to a receiver on 127.0.0.1 that checks signatures with `verify`.

The receiver is a small Starlette app served by uvicorn in a background task, on a socket bound here
to a free port (so there is no race for the port), and used once uvicorn reports it has started.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from connectors.webhook.sender import DeliveryResult, Outcome, WebhookSender, WebhookTarget
from connectors.webhook.signing import DELIVERY_HEADER
from tests.webhook_receiver import BODY, DELIVERY, OLD_SECRET, SECRET, Receiver


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    async with WebhookSender(timeout_s=5.0) as sender:
        yield sender


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that is bound but not listening: connecting is refused, and nobody else can take it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def assert_result(result: DeliveryResult, outcome: Outcome, reason: str, status: int | None) -> None:
    assert (result.outcome, result.reason, result.status_code) == (outcome, reason, status), result


async def test_a_delivery_arrives_signed_and_verifiable_with_the_exact_body(
    receiver: Receiver, sender: WebhookSender
) -> None:
    result = await sender.deliver(receiver.target("/hook"), DELIVERY, BODY)

    assert_result(result, Outcome.DELIVERED, "delivered", 204)
    [arrival] = receiver.arrivals
    assert arrival.signature_error is None
    assert arrival.body == BODY
    assert arrival.headers[DELIVERY_HEADER.lower()] == DELIVERY
    assert arrival.headers["content-type"] == "application/json"


async def test_every_attempt_of_a_delivery_carries_the_same_id_and_body_and_verifies(
    receiver: Receiver, sender: WebhookSender
) -> None:
    for _ in range(2):
        assert (await sender.deliver(receiver.target("/hook"), DELIVERY, BODY)).outcome is Outcome.DELIVERED
    assert [(a.headers[DELIVERY_HEADER.lower()], a.body, a.signature_error) for a in receiver.arrivals] == [
        (DELIVERY, BODY, None),
        (DELIVERY, BODY, None),
    ]


async def test_a_receiver_rotating_its_secret_accepts_deliveries_signed_with_the_old_one(
    receiver: Receiver, sender: WebhookSender
) -> None:
    receiver.secrets = [SECRET, OLD_SECRET]
    result = await sender.deliver(receiver.target("/hook", secret=OLD_SECRET), DELIVERY, BODY)
    assert_result(result, Outcome.DELIVERED, "delivered", 204)


async def test_a_delivery_signed_with_the_wrong_secret_is_refused_permanently_with_the_receivers_reason(
    receiver: Receiver, sender: WebhookSender
) -> None:
    result = await sender.deliver(receiver.target("/hook", secret=b"not-the-shared-one"), DELIVERY, BODY)

    assert_result(result, Outcome.PERMANENT, "rejected", 401)
    assert "mismatch" in result.detail
    assert [a.signature_error for a in receiver.arrivals] == ["mismatch"]


async def test_a_receiver_answering_500_gives_a_retryable_result(
    receiver: Receiver, sender: WebhookSender
) -> None:
    result = await sender.deliver(receiver.target("/status/500"), DELIVERY, BODY)

    assert_result(result, Outcome.RETRYABLE, "server_error", 500)
    assert result.retry_after_s is None
    assert "status 500 as asked" in result.detail
    assert [a.signature_error for a in receiver.arrivals] == [None]


async def test_a_429_with_retry_after_7_gives_a_retryable_result_with_retry_after_7(
    receiver: Receiver, sender: WebhookSender
) -> None:
    result = await sender.deliver(receiver.target("/status/429?retry_after=7"), DELIVERY, BODY)

    assert_result(result, Outcome.RETRYABLE, "rate_limited", 429)
    assert result.retry_after_s == 7.0


async def test_a_503_with_retry_after_is_retryable_and_honours_it(
    receiver: Receiver, sender: WebhookSender
) -> None:
    result = await sender.deliver(receiver.target("/status/503?retry_after=30"), DELIVERY, BODY)

    assert_result(result, Outcome.RETRYABLE, "server_error", 503)
    assert result.retry_after_s == 30.0


async def test_a_408_is_retryable(receiver: Receiver, sender: WebhookSender) -> None:
    result = await sender.deliver(receiver.target("/status/408"), DELIVERY, BODY)
    assert_result(result, Outcome.RETRYABLE, "request_timeout", 408)


async def test_a_404_is_a_permanent_failure_with_the_receivers_answer(
    receiver: Receiver, sender: WebhookSender
) -> None:
    result = await sender.deliver(receiver.target("/status/404"), DELIVERY, BODY)

    assert_result(result, Outcome.PERMANENT, "rejected", 404)
    assert result.detail == "HTTP 404: status 404 as asked"


async def test_a_redirect_is_not_followed_and_is_a_permanent_failure(
    receiver: Receiver, sender: WebhookSender
) -> None:
    result = await sender.deliver(receiver.target("/status/307"), DELIVERY, BODY)

    assert_result(result, Outcome.PERMANENT, "redirected", 307)
    assert [a.path for a in receiver.arrivals] == ["/status/307"]


async def test_a_closed_port_gives_a_retryable_connection_error(
    closed_port: int, sender: WebhookSender
) -> None:
    target = WebhookTarget(url=f"http://127.0.0.1:{closed_port}/hook", secret=SECRET, name="nobody")
    result = await sender.deliver(target, DELIVERY, BODY)

    assert_result(result, Outcome.RETRYABLE, "connection_error", None)
    assert "ConnectError" in result.detail


async def test_a_receiver_that_hangs_beyond_the_timeout_gives_a_retryable_timeout(
    receiver: Receiver,
) -> None:
    async with WebhookSender(timeout_s=0.5) as sender:
        started = time.monotonic()
        result = await sender.deliver(receiver.target("/hang"), DELIVERY, BODY)
        elapsed = time.monotonic() - started

    assert receiver.hanging.is_set(), "the request should have reached the receiver"
    receiver.release.set()
    assert_result(result, Outcome.RETRYABLE, "timeout", None)
    assert "0.5 s" in result.detail
    assert 0.5 <= elapsed < 5.0

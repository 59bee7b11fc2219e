"""Webhook deliveries over real HTTP to a receiver on 127.0.0.1 that checks signatures with `verify`.

The receiver is a small Starlette app served by uvicorn in a background task, on a socket bound here
to a free port (so there is no race for the port), and used once uvicorn reports it has started.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.webhook.sender import DeliveryResult, Outcome, WebhookSender, WebhookTarget
from connectors.webhook.signing import DELIVERY_HEADER, SignatureError, verify
from tests.support import wait_for

SECRET = b"whsec-integration-current"
OLD_SECRET = b"whsec-integration-previous"
BODY = '{"alert_id":"a-42","case":"SQ-2026-0042","message":"督办超期 3 个工作日"}'.encode()
DELIVERY = "0193a5e2-7c1d-7b3e-9f00-000000000042"


@dataclass(frozen=True)
class Arrival:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_error: str | None


@dataclass
class Receiver:
    """A webhook receiver that records every request; it trusts `secrets`."""

    base_url: str
    secrets: list[bytes]
    arrivals: list[Arrival] = field(default_factory=list)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def target(self, path: str, secret: bytes = SECRET) -> WebhookTarget:
        return WebhookTarget(url=f"{self.base_url}{path}", secret=secret, name=f"receiver{path}")

    async def record(self, request: Request) -> SignatureError | None:
        body = await request.body()
        try:
            verify(self.secrets, body, request.headers, now=int(time.time()))
            error = None
        except SignatureError as exc:
            error = exc
        reason = None if error is None else error.reason
        self.arrivals.append(Arrival(request.url.path, dict(request.headers), body, reason))
        return error

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            error = await self.record(request)
            if error is not None:
                return JSONResponse({"reason": error.reason, "detail": str(error)}, status_code=401)
            return Response(status_code=204)

        async def status(request: Request) -> Response:
            await self.record(request)
            code = int(request.path_params["code"])
            headers = {"Retry-After": request.query_params["retry_after"]} if request.query_params else {}
            if 300 <= code < 400:
                headers["Location"] = f"{self.base_url}/hook"
            return Response(f"status {code} as asked", status_code=code, headers=headers)

        async def hang(request: Request) -> Response:
            await self.record(request)
            self.hanging.set()
            await self.release.wait()
            return Response(status_code=204)

        return Starlette(
            routes=[
                Route("/hook", hook, methods=["POST"]),
                Route("/status/{code:int}", status, methods=["POST"]),
                Route("/hang", hang, methods=["POST"]),
            ]
        )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    receiver = Receiver(base_url=f"http://{host}:{port}", secrets=[SECRET])
    config = uvicorn.Config(receiver.app(), log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if serving.done():
            serving.result()  # raises what stopped it
            raise AssertionError("the receiver stopped before it started")
        return server.started

    try:
        await wait_for(started, timeout_s=10, what="the webhook receiver to start")
        yield receiver
    finally:
        receiver.release.set()
        server.should_exit = True
        await serving
        sock.close()


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

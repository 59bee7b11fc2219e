"""A webhook receiver for tests: a small Starlette app served by uvicorn on 127.0.0.1, on a socket
bound before the server starts (so there is no race for the port), that checks signatures."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.webhook.sender import WebhookTarget
from connectors.webhook.signing import SignatureError, verify
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

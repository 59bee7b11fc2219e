"""One signed delivery attempt to a webhook target, classified; and the backoff between attempts.

`WebhookSender.deliver` makes exactly one attempt and never raises for what the network or the receiver
did: every outcome comes back as a `DeliveryResult` for the caller to record. `RetryPolicy` is pure and
says how long to wait before the next attempt, or that it is time to give up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from connectors.webhook.signing import sign

_LOOPBACK_NAMES = frozenset({"localhost"})
_SNIPPET_BYTES = 256


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebhookTarget:
    """Where to deliver and with which secret. Plain http is allowed only to a loopback address."""

    url: str
    secret: bytes = field(repr=False)
    name: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if not host or parts.scheme not in {"https", "http"}:
            raise ValueError(f"webhook target {self.name!r}: url must be an absolute https URL")
        if parts.scheme == "http" and not _is_loopback(host):
            raise ValueError(f"webhook target {self.name!r}: plain http is allowed only to loopback")
        if not self.secret:
            raise ValueError(f"webhook target {self.name!r}: the secret is empty")
        if not self.name:
            raise ValueError("a webhook target needs a name")


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class DeliveryResult:
    """What one attempt came to.

    `reason` is a short code fit for a metric label: delivered, server_error, rate_limited,
    request_timeout, rejected, redirected, unexpected_status, timeout, connection_error, transport_error,
    invalid_url. `detail` is for people and the delivery record (it includes the start of the receiver's
    answer on failure). `retry_after_s` is the receiver's Retry-After on 429 and 503, in seconds.
    """

    outcome: Outcome
    reason: str
    detail: str
    status_code: int | None = None
    retry_after_s: float | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now`: delay-seconds or an HTTP-date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _classify(status: int, retry_after_s: float | None, snippet: str) -> DeliveryResult:
    detail = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    if 200 <= status < 300:
        return DeliveryResult(Outcome.DELIVERED, "delivered", detail, status)
    if status in (429, 503):
        reason = "rate_limited" if status == 429 else "server_error"
        return DeliveryResult(Outcome.RETRYABLE, reason, detail, status, retry_after_s)
    if status == 408:
        return DeliveryResult(Outcome.RETRYABLE, "request_timeout", detail, status)
    if 500 <= status < 600:
        return DeliveryResult(Outcome.RETRYABLE, "server_error", detail, status)
    if 400 <= status < 500:
        return DeliveryResult(Outcome.PERMANENT, "rejected", detail, status)
    if 300 <= status < 400:
        return DeliveryResult(Outcome.PERMANENT, "redirected", f"{detail} (not followed)", status)
    return DeliveryResult(Outcome.PERMANENT, "unexpected_status", detail, status)


async def _read_snippet(response: httpx.Response) -> str:
    """The start of the receiver's answer, for the record."""
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) >= _SNIPPET_BYTES:
            break
    return bytes(chunks[:_SNIPPET_BYTES]).decode("utf-8", errors="replace").strip()


class WebhookSender:
    """Signs and POSTs a body to a target, once per call.

    Pass a client to share its connection pool (the sender then leaves closing it to you); without one
    the sender makes its own and closes it in `aclose`. `timeout_s` bounds the whole attempt:
    connecting, sending, and waiting for the status line.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        content_type: str = "application/json",
        user_agent: str = "Liandong-Webhook/1",
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(follow_redirects=False)
        self._timeout_s = timeout_s
        self._clock = clock
        self._content_type = content_type
        self._user_agent = user_agent

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def deliver(self, target: WebhookTarget, delivery_id: str, body: bytes) -> DeliveryResult:
        """One attempt. Keep `delivery_id` the same across attempts; the signature is fresh each time."""
        headers = {
            "Content-Type": self._content_type,
            "User-Agent": self._user_agent,
            **sign(target.secret, body, delivery_id, int(self._clock())),
        }
        status: int | None = None
        retry_after_s: float | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                request = self._client.build_request(
                    "POST", target.url, content=body, headers=headers, timeout=self._timeout_s
                )
                response = await self._client.send(request, stream=True, follow_redirects=False)
                try:
                    status = response.status_code
                    if status in (429, 503):
                        retry_after_s = parse_retry_after(response.headers.get("Retry-After"), self._clock())
                    snippet = "" if 200 <= status < 300 else await _read_snippet(response)
                finally:
                    await response.aclose()
                return _classify(status, retry_after_s, snippet)
        except (TimeoutError, httpx.TimeoutException) as exc:
            if status is not None:  # the status arrived; only reading the answer's start timed out
                return _classify(status, retry_after_s, "(the answer's body timed out)")
            return DeliveryResult(
                Outcome.RETRYABLE, "timeout", f"no answer within {self._timeout_s:g} s ({type(exc).__name__})"
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return DeliveryResult(Outcome.PERMANENT, "invalid_url", f"{type(exc).__name__}: {exc}")
        except httpx.ConnectError as exc:
            return DeliveryResult(Outcome.RETRYABLE, "connection_error", f"ConnectError: {exc}")
        except httpx.TransportError as exc:
            if status is not None:
                return _classify(status, retry_after_s, f"(the answer's body failed: {type(exc).__name__})")
            return DeliveryResult(Outcome.RETRYABLE, "transport_error", f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, and a limit on attempts.

    The wait before attempt n+1 is uniform in [0, min(cap_s, base_s * factor ** (n - 1))]. A receiver's
    Retry-After wins when it is longer, up to `max_retry_after_s`. With the defaults the last of 12
    attempts comes at most about 27 minutes after the first.
    """

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 600.0
    max_attempts: int = 12
    max_retry_after_s: float = 3600.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (0 < self.base_s <= self.cap_s and self.factor >= 1):
            raise ValueError("need 0 < base_s <= cap_s and factor >= 1")
        if self.max_attempts < 1 or self.max_retry_after_s < 0:
            raise ValueError("need max_attempts >= 1 and max_retry_after_s >= 0")

    def ceiling(self, attempt: int) -> float:
        """The longest jittered wait after `attempt` attempts."""
        try:
            grown = self.base_s * self.factor ** (attempt - 1)
        except OverflowError:
            return self.cap_s
        return min(self.cap_s, grown) if math.isfinite(grown) else self.cap_s

    def next_delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait after `attempt` failed attempts (1 after the first), or None to give up.

        None means: mark the delivery failed and keep it visible for a manual retry.
        """
        if attempt < 1:
            raise ValueError("attempt counts the attempts made so far, starting at 1")
        if attempt >= self.max_attempts:
            return None
        delay = self.rng.uniform(0.0, self.ceiling(attempt))
        if retry_after is not None:
            delay = max(delay, min(max(retry_after, 0.0), self.max_retry_after_s))
        return delay

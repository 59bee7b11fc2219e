"""What every connector shares: metrics, a health report, dead letters, retries, row problems.

A connector reads records from an agency's system (a spreadsheet, an outbox table), turns each into
a catalog event with `connectors.sdk.LiandongClient` (same validation and serde as the gateway, ids
derived from the source's own record ids), and publishes it. What it cannot take goes to the
dead-letter topic with the original record and the reason, and into a report a person can read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from connectors.kafka.publisher import BrokerUnavailable, KafkaPublisher
from events.serde import EncodedRecord

T = TypeVar("T")
DEAD_LETTER_TOPIC = "liandong.deadletter"
OUTCOMES = ("read", "published", "rejected", "retried", "dead_lettered")


@dataclass(frozen=True, slots=True)
class ConnectorMetrics:
    records: Counter
    lag: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ConnectorMetrics:
        return cls(
            records=Counter(
                "liandong_connector_records",
                "Records a connector read, published, rejected, retried or dead-lettered",
                ["connector", "outcome"],
                registry=registry,
            ),
            lag=Gauge(
                "liandong_connector_lag_records",
                "Records known to the source and not yet published",
                ["connector"],
                registry=registry,
            ),
        )

    def count(self, connector: str, outcome: str, n: int = 1) -> None:
        if n:
            self.records.labels(connector=connector, outcome=outcome).inc(n)


@dataclass(slots=True)
class Health:
    """What `liandong connectors status` and the API show for one connector."""

    name: str
    kind: str  # inbound | outbound
    ok: bool = True
    detail: str = ""
    last_run_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    metrics: ConnectorMetrics | None = None

    def record(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n
        if self.metrics is not None:
            self.metrics.count(self.name, outcome, n)

    def backlog(self, records: int) -> None:
        """Records known to the source and not yet published."""
        self.counts["backlog"] = records
        if self.metrics is not None:
            self.metrics.lag.labels(connector=self.name).set(records)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "ok": self.ok,
            "detail": self.detail,
            "last_run_at": self.last_run_at.isoformat() if self.last_run_at else None,
            "counts": dict(self.counts),
        }

    def ran(self, ok: bool, detail: str = "") -> None:
        self.ok, self.detail, self.last_run_at = ok, detail, datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One line of a row-by-row error report: where, what was there, and why it was refused."""

    row: int | str
    column: str
    value: str
    reason: str


async def dead_letter(
    publisher: KafkaPublisher, connector: str, original: bytes, reason: str, detail: str, key: bytes = b""
) -> None:
    """Keep the original record, untouched, with why it was refused, on the dead-letter topic."""
    headers = [
        ("liandong_dlq_connector", connector.encode()),
        ("liandong_dlq_reason", reason.encode()),
        ("liandong_dlq_detail", detail.encode()[:1000]),
    ]
    await publisher.publish([(DEAD_LETTER_TOPIC, EncodedRecord(key=key, value=original, headers=headers))])


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay_s: float = 0.5,
    on_retry: Callable[[int, BaseException], None] | None = None,
    retry_on: tuple[type[BaseException], ...] = (BrokerUnavailable, OSError, TimeoutError),
) -> T:
    """Retry a transient failure with exponential backoff; the last failure is raised."""
    for n in range(1, attempts + 1):
        try:
            return await attempt()
        except retry_on as exc:
            if n == attempts:
                raise
            if on_retry is not None:
                on_retry(n, exc)
            await asyncio.sleep(base_delay_s * 2 ** (n - 1))  # backoff before the next attempt
    raise AssertionError("unreachable")


def registry_of(connectors: Mapping[str, Health]) -> list[dict[str, object]]:
    return [h.as_json() for h in connectors.values()]

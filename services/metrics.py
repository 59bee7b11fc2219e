"""Prometheus collectors, built against an injected registry (never the global one)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from connectors.framework import ConnectorMetrics


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    accepted: Counter
    rejected: Counter
    connector: ConnectorMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GatewayMetrics:
        return cls(
            accepted=Counter(
                "liandong_events_accepted",
                "Events acknowledged by the broker and answered 202",
                ["type"],
                registry=registry,
            ),
            rejected=Counter(
                "liandong_events_rejected",
                "Events or requests refused by the gateway",
                ["type", "reason"],
                registry=registry,
            ),
            # The gateway is a connector too: the same read/published/rejected counters as the others.
            connector=ConnectorMetrics.create(registry),
        )


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    projected: Counter
    redelivered: Counter
    dead_lettered: Counter
    lag_seconds: Gauge
    batch_retries: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        return cls(
            projected=Counter(
                "liandong_events_projected",
                "Events that changed a projection",
                ["projection", "type"],
                registry=registry,
            ),
            redelivered=Counter(
                "liandong_events_redelivered",
                "Records skipped because their checkpoint already covers them",
                ["projection"],
                registry=registry,
            ),
            dead_lettered=Counter(
                "liandong_events_dead_lettered",
                "Records sent to the dead-letter topic",
                ["reason"],
                registry=registry,
            ),
            lag_seconds=Gauge(
                "liandong_projection_lag_seconds",
                "Broker append time to projection commit, for the newest record of the last batch",
                ["projection"],
                registry=registry,
            ),
            batch_retries=Counter(
                "liandong_projection_batch_retries",
                "Batches retried after a transient failure",
                ["projection"],
                registry=registry,
            ),
        )

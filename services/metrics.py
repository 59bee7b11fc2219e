"""Prometheus collectors, built against an injected registry (never the global one)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from connectors.framework import ConnectorMetrics

# Why an authentication or authorization attempt was refused: a fixed set, so the label stays bounded
# (docs/identity.md explains each).
AUTH_REJECTION_REASONS = (
    "missing",
    "malformed",
    "unknown_key",
    "revoked",
    "expired",
    "bad_signature",
    "token_expired",
    "role_mismatch",
    "forged_source",
    "type_not_permitted",
    "township_not_permitted",
    "role_forbidden",
    "unit_forbidden",
    "needs_unit_key",
    "rate_limited",
    "csrf",
)


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    accepted: Counter
    rejected: Counter
    connector: ConnectorMetrics
    auth_rejections: Counter

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
            auth_rejections=_auth_rejections(registry),
        )


def _auth_rejections(registry: CollectorRegistry) -> Counter:
    counter = Counter(
        "liandong_auth_rejections",
        "Refused authentication or authorization attempts, by reason",
        ["reason"],
        registry=registry,
    )
    for reason in AUTH_REJECTION_REASONS:
        counter.labels(reason=reason)  # every reason exported from the start, at zero
    return counter


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

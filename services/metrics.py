"""Prometheus collectors, built against an injected registry (never the global one)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from connectors.framework import ConnectorMetrics

# docs/operations.md lists every metric, its labels and the process that exports it.
CLOCK_STATES = ("open", "due", "overdue")
DELIVERY_CHANNELS = ("webhook", "email")
UNKNOWN = "unknown"
# Publish latency is milliseconds to a few seconds (acks=all, GATEWAY_ACK_TIMEOUT_S at most).
PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Alert latency includes the scan interval and LIANDONG_ALERT_GRACE_S (60 s by default): seconds to
# many minutes.
ALERT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

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


def publish_latency(registry: CollectorRegistry, connectors: Iterable[str]) -> Histogram:
    histogram = Histogram(
        "liandong_publish_latency_seconds",
        "From receipt of an event to the broker's acknowledgement (acks=all)",
        ["connector"],
        buckets=PUBLISH_BUCKETS,
        registry=registry,
    )
    for connector in connectors:
        histogram.labels(connector=connector)
    return histogram


def last_success(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "liandong_connector_last_success_timestamp_seconds",
        "Unix time of the connector's last successful publish or delivery",
        ["connector"],
        registry=registry,
    )


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    accepted: Counter
    rejected: Counter
    connector: ConnectorMetrics
    auth_rejections: Counter
    publish_latency: Histogram
    last_success: Gauge

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
            publish_latency=publish_latency(registry, ["http-gateway"]),
            last_success=last_success(registry),
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
    ingested: Counter
    consumer_lag: Gauge
    clocks: Gauge
    dead_letters: Gauge
    alert_latency: Histogram
    deliveries_failed: Counter
    last_success: Gauge

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
            ingested=Counter(
                "liandong_events_ingested",
                "Records read from the event topics, by publishing unit and type, whatever path they "
                "came by (gateway, connector, direct Kafka); unknown units and types count as unknown",
                ["source", "type"],
                registry=registry,
            ),
            consumer_lag=Gauge(
                "liandong_consumer_lag_records",
                "Log end offset minus the projector's checkpoint, for the partitions this worker holds",
                ["group", "topic", "partition"],
                registry=registry,
            ),
            clocks=Gauge(
                "liandong_clocks",
                "Running clocks by rule: open (no threshold passed), due (a warning raised, deadline "
                "not passed) and overdue (deadline passed), counted in the store",
                ["rule", "state"],
                registry=registry,
            ),
            dead_letters=Gauge(
                "liandong_dead_letters_records",
                "Dead letters not replayed or passed over yet (below no replay cursor), by reason",
                ["reason"],
                registry=registry,
            ),
            alert_latency=Histogram(
                "liandong_alert_latency_seconds",
                "From the moment a clock passed its threshold to the broker's acknowledgement of the alert",
                buckets=ALERT_BUCKETS,
                registry=registry,
            ),
            deliveries_failed=_deliveries_failed(registry),
            last_success=last_success(registry),
        )

    def init_clocks(self, rules: Iterable[str]) -> None:
        for rule in rules:
            for state in CLOCK_STATES:
                self.clocks.labels(rule=rule, state=state)


def _deliveries_failed(registry: CollectorRegistry) -> Counter:
    counter = Counter(
        "liandong_deliveries_failed",
        "Alert delivery attempts that failed (retried later or failed for good), by channel",
        ["channel"],
        registry=registry,
    )
    for channel in DELIVERY_CHANNELS:
        counter.labels(channel=channel)
    return counter


@dataclass(frozen=True, slots=True)
class HealthMetrics:
    dependency_up: Gauge
    rebuilding: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, dependencies: Iterable[str]) -> HealthMetrics:
        up = Gauge(
            "liandong_dependency_up",
            "1 while the last probe of the dependency succeeded within its timeout, else 0",
            ["dependency"],
            registry=registry,
        )
        for dependency in dependencies:
            up.labels(dependency=dependency)
        return cls(
            dependency_up=up,
            rebuilding=Gauge(
                "liandong_rebuilds_in_progress",
                "Projection rebuilds or restores holding a live marker (readiness is false meanwhile)",
                registry=registry,
            ),
        )


@dataclass(frozen=True, slots=True)
class RelayMetrics:
    connector: ConnectorMetrics
    up: Gauge
    last_success: Gauge
    publish_latency: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry, connector: str) -> RelayMetrics:
        up = Gauge(
            "liandong_connector_up",
            "1 while the connector's last run succeeded, else 0",
            ["connector"],
            registry=registry,
        )
        up.labels(connector=connector)
        return cls(
            connector=ConnectorMetrics.create(registry),
            up=up,
            last_success=last_success(registry),
            publish_latency=publish_latency(registry, [connector]),
        )

"""Composition root of the worker process: a faust app whose agent feeds the projector."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_kafka
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.framework import ConnectorMetrics
from connectors.kafka.incarnation import BrokerIncarnation
from connectors.kafka.publisher import KafkaPublisher
from connectors.kafka.topics import ensure_topics, partition_counts, partition_mismatches
from connectors.webhook.sender import RetryPolicy, WebhookSender
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.grants import HUB_SOURCE, Grants
from events.mechanisms import Mechanisms
from events.serde import EventCodec
from projections.archive_store import ArchiveProjection
from projections.db import make_engine
from projections.hub import hub_projections
from projections.migrate import instance_id
from projections.runtime import BatchResult, Projector, SourceRecord
from services.deadletters import DeadLetterDepth
from services.directory_sync import COMPACTED, sync_directory
from services.health import Health, dependency_names, group_probe, problem_body, store_probes
from services.metrics import HealthMetrics, WorkerMetrics
from services.registry import make_registry
from services.settings import Settings
from services.timesource import time_source
from services.webhooks import Subscription, load_subscriptions, targets_by_unit
from services.worker.anomalies import AnomalyLoop, KafkaAnomalySink
from services.worker.audit import ChainHeadMetrics
from services.worker.batches import PoisonPolicy, run_batch
from services.worker.closed_loop import ClosedLoop, ScanLoop
from services.worker.dead_letters import KafkaDeadLetters
from services.worker.deliveries import DeliveryLoop
from services.worker.ops import IngestCounter, MeasuredAlertSink, OpsGauges

log = logging.getLogger(__name__)

PROJECTION = "hub"
DEAD_LETTER_TOPIC = "liandong.deadletter"
EXIT_FAULT_INJECTED = 75
# faust hard-codes fetch_max_wait_ms=1500 for the worker's consumer. Tansu holds a fetch for the whole
# wait even when records arrive during it, so a record waited for the rest of a 1.5 s poll: at 100
# events/s, 202-to-visible p50 fell from 570-650 ms to 190-300 ms with a 50 ms wait
# (docs/benchmarks.md, "Latency"). Each wait that ends empty costs a fetch: idle, the worker and Tansu
# burn 0.02 cores at 1,500 ms, 0.09 at 100 ms, 0.15 at 50 ms. 100 ms adds at most 100 ms.
FETCH_MAX_WAIT_MS = 100


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """Everything decided before the faust loop starts."""

    bootstrap: str
    group_id: str
    topics: tuple[str, ...]
    codec: EventCodec
    incarnation: BrokerIncarnation
    closed_loop: ClosedLoop
    subscriptions: Mapping[str, Subscription]


async def plan_worker(settings: Settings, bootstrap: str) -> WorkerPlan:
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)
    catalog = Catalog.load()
    codec = EventCodec(catalog, make_registry(settings))
    await codec.prepare()
    topics = tuple(sorted(topic_for(f) for f in catalog.families))
    wanted = dict.fromkeys(topics, settings.topic_partitions)
    await ensure_topics(bootstrap, {**wanted, DEAD_LETTER_TOPIC: 1}, settings.topic_replication, COMPACTED)
    # The setting only sizes topics it creates: an operator who raised it for an existing cluster
    # would otherwise add workers that stay idle and never learn why.
    actual = await partition_counts(bootstrap, topics)
    for topic, (setting, count) in sorted(partition_mismatches(wanted, actual).items()):
        log.warning(
            "%s has %d partitions but LIANDONG_TOPIC_PARTITIONS is %d: the setting applies only when a "
            "topic is created, so at most %d workers share it (docs/scaling.md)",
            topic,
            count,
            setting,
            count,
        )
    incarnation = BrokerIncarnation(bootstrap)
    await incarnation.refresh()
    engine = make_engine(settings.database_url)
    publisher = KafkaPublisher(bootstrap, client_id="liandong-directory")
    try:
        store_id = await instance_id(engine)
        published = await sync_directory(engine, Directory.load(), codec, publisher)
        log.info("directory: %d unit changes published", published)
    finally:
        await publisher.close()
        await engine.dispose()
    # The group is scoped to the store: a fresh database must read the topics from the start,
    # not from offsets that another store's projections committed.
    group_id = f"{settings.consumer_group}.{store_id[:12]}"
    closed_loop = ClosedLoop.load(settings)
    subscriptions = load_subscriptions(settings.webhooks_file, closed_loop.directory)
    return WorkerPlan(bootstrap, group_id, topics, codec, incarnation, closed_loop, subscriptions)


class _ConsumerThread(faust_kafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher, which happens after this.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_kafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_kafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    """faust's app with the consumer's fetch wait set by us (see FETCH_MAX_WAIT_MS)."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def build_app(settings: Settings, plan: WorkerPlan, registry: CollectorRegistry) -> faust.App:
    app = _App(
        plan.group_id,
        broker=f"kafka://{plan.bootstrap}",
        autodiscover=False,
        datadir=str(settings.data_dir / "worker"),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.broker_session_timeout_s / 5),
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=False,
        web_enabled=True,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_bind=settings.worker_web_host,
    )
    metrics = WorkerMetrics.create(registry)
    for counter in (metrics.redelivered, metrics.batch_retries):
        counter.labels(projection=PROJECTION)  # exported from the start, at zero
    topic = app.topic(*plan.topics, key_type=bytes, value_type=bytes)
    runtime = _WorkerRuntime(
        settings, plan, metrics, ConnectorMetrics.create(registry), ChainHeadMetrics.create(registry)
    )
    health_metrics = HealthMetrics.create(
        registry, dependency_names(settings.database_url, settings.schema_registry_url)
    )

    def highwaters() -> dict[tuple[str, int], int | None]:
        """The log end offset of each partition this worker holds, from the consumer's last fetch
        (Tansu's ListOffsets only answers a lower bound; see services/rebuild.py)."""
        consumer = app.consumer
        return {
            (tp.topic, tp.partition): consumer.highwater(tp)
            for tp in consumer.assignment()
            if tp.topic in plan.topics
        }

    async def project(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            await runtime.run([_record(e.message) for e in events])

    app.agent(topic, name="hub-projector")(project)

    async def scan_clocks() -> None:
        await runtime.scan()

    app.timer(interval=settings.clock_scan_interval_s, name="clock-scanner")(scan_clocks)

    async def anomalies() -> None:
        await runtime.anomalies()

    app.timer(interval=settings.clock_scan_interval_s, name="anomaly-announcer")(anomalies)

    async def deliver_webhooks() -> None:
        await runtime.deliver()

    app.timer(interval=settings.clock_scan_interval_s, name="webhook-deliveries")(deliver_webhooks)

    async def measure() -> None:
        await runtime.measure(highwaters, health_metrics)

    app.timer(interval=settings.metrics_interval_s, name="ops-metrics")(measure)

    async def healthz(view: Any, request: Any) -> Any:
        return view.json({"status": "ok"})

    async def readyz(view: Any, request: Any) -> Any:
        readiness = await runtime.health(health_metrics).readiness()
        if readiness.ready:
            return view.json(readiness.body())
        body = json.dumps(problem_body(readiness), ensure_ascii=False).encode()
        return view.bytes(body, status=503, headers={"Content-Type": "application/problem+json"})

    app.page("/healthz")(healthz)
    app.page("/readyz")(readyz)

    async def assigned(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        partitions = args[0] if args else kwargs.get("assigned", ())
        runtime.assigned(sum(1 for tp in partitions if tp.topic in plan.topics))

    app.on_partitions_assigned.connect(assigned, weak=False)  # a closure, as close_ops below

    async def close_ops(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        await runtime.close_ops()

    app.on_before_shutdown.connect(close_ops, weak=False)  # a closure: a weak reference would vanish

    async def metrics_page(view: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type=, so the full header goes in headers.
        return view.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.page("/metrics")(metrics_page)
    return app


class _WorkerRuntime:
    """Owns the loop-bound resources (one database pool, the producers), created lazily inside
    faust's event loop, and shared by the projector agent and the timers."""

    def __init__(
        self,
        settings: Settings,
        plan: WorkerPlan,
        metrics: WorkerMetrics,
        connectors: ConnectorMetrics,
        chain_head: ChainHeadMetrics,
    ) -> None:
        self._settings = settings
        self._plan = plan
        self._metrics = metrics
        self._connector_metrics = connectors
        self._chain_head = chain_head
        self._archive: ArchiveProjection | None = None
        self._projector: Projector | None = None
        self._scan: ScanLoop | None = None
        self._anomalies: AnomalyLoop | None = None
        self._deliveries: DeliveryLoop | None = None
        self._db: AsyncEngine | None = None
        self._now = time_source(settings.time_source)
        self._batches = 0
        self._lock = asyncio.Lock()
        self._poison = PoisonPolicy()  # counts failures across batches (services/worker/batches.py)
        loop = plan.closed_loop
        self._ingested = IngestCounter(
            metrics, {*loop.directory.units, HUB_SOURCE}, frozenset(plan.codec.catalog.kinds)
        )
        self._health: Health | None = None
        self._ops: OpsGauges | None = None
        self._assigned: int | None = None  # partitions of the last assignment; None before the first

    @property
    def db(self) -> AsyncEngine:
        if self._db is None:
            self._db = make_engine(self._settings.database_url)
        return self._db

    async def scan(self) -> None:
        if self._scan is None:
            publisher = KafkaPublisher(self._plan.bootstrap, client_id="liandong-alerts")
            sink = MeasuredAlertSink(publisher, self._plan.codec, self._metrics, self._now)
            self._scan = ScanLoop(self._plan.closed_loop, self.db, sink, self._now)
        await self._scan.tick()

    async def anomalies(self) -> None:
        if self._anomalies is None:
            publisher = KafkaPublisher(self._plan.bootstrap, client_id="liandong-anomalies")
            sink = KafkaAnomalySink(publisher, self._plan.codec)
            self._anomalies = AnomalyLoop(self.db, self._plan.closed_loop.directory, sink, self._now)
        await self._anomalies.tick()

    async def deliver(self) -> None:
        if not self._plan.subscriptions:
            return
        if self._deliveries is None:
            self._deliveries = DeliveryLoop(
                self.db,
                self._plan.subscriptions,
                WebhookSender(),
                RetryPolicy(),
                self._now,
                metrics=self._connector_metrics,
                failed=self._metrics.deliveries_failed,
                last_success=self._metrics.last_success,
            )
        try:
            await self._deliveries.tick()
        except Exception as exc:  # the deliveries stay pending; the next tick retries
            log.error("webhook delivery tick failed: %r", exc, exc_info=exc)

    def assigned(self, partitions: int) -> None:
        self._assigned = partitions

    def health(self, metrics: HealthMetrics) -> Health:
        if self._health is None:
            probes = store_probes(self.db, self._plan.bootstrap, self._settings.schema_registry_url, metrics)
            probes.append(group_probe(self._plan.group_id, lambda: self._assigned))
            self._health = Health(probes, metrics)
        return self._health

    async def measure(
        self, highwaters: Callable[[], dict[tuple[str, int], int | None]], health: HealthMetrics
    ) -> None:
        """The ops timer: dependency probes (for liandong_dependency_up), then the measured gauges."""
        await self.health(health).readiness()
        if self._ops is None:
            self._ops = OpsGauges(
                self.db,
                self._metrics,
                self._plan.group_id,
                PROJECTION,
                self._plan.closed_loop.rules.rules,
                highwaters,
                DeadLetterDepth(self._plan.bootstrap, DEAD_LETTER_TOPIC),
                self._now,
            )
        await self._ops.tick()

    async def close_ops(self) -> None:
        if self._ops is not None:
            await self._ops.close()

    def _build(self) -> Projector:
        mechanisms = Mechanisms.load()
        loop = self._plan.closed_loop
        dead_letters = KafkaDeadLetters(
            KafkaPublisher(self._plan.bootstrap, client_id="liandong-deadletters"), DEAD_LETTER_TOPIC
        )
        projections = hub_projections(
            mechanisms,
            loop.rules,
            loop.calendar,
            loop.settings,
            self._now,
            targets_by_unit(self._plan.subscriptions),
            master_key=self._settings.master_key,
        )
        self._archive = next((p for p in projections if isinstance(p, ArchiveProjection)), None)
        return Projector(
            engine=self.db,
            consumer=PROJECTION,
            codec=self._plan.codec,
            projections=projections,
            dead_letters=dead_letters,
            incarnation=self._plan.incarnation,
            after_commit=self._after_commit,
            gate=Grants(loop.directory, self._plan.codec.catalog, hub_issued=True),
        )

    async def run(self, records: list[SourceRecord]) -> None:
        async with self._lock:
            if self._projector is None:
                self._projector = self._build()
            await run_batch(
                self._projector,
                records,
                on_retry=self._metrics.batch_retries.labels(projection=PROJECTION).inc,
                policy=self._poison,
            )
            self._ingested.count((r.topic, r.partition, r.offset, r.headers) for r in records)

    async def _after_commit(self, result: BatchResult) -> None:
        for event_type, count in result.applied.items():
            self._metrics.projected.labels(projection=PROJECTION, type=event_type).inc(count)
        if result.skipped_redelivered:
            self._metrics.redelivered.labels(projection=PROJECTION).inc(result.skipped_redelivered)
        for reason, count in result.dead_lettered.items():
            self._metrics.dead_lettered.labels(reason=reason).inc(count)
        if result.newest_timestamp_ms is not None:
            lag = max(0.0, time.time() - result.newest_timestamp_ms / 1000)
            self._metrics.lag_seconds.labels(projection=PROJECTION).set(lag)
        await self._chain_head.after_commit(self._archive, bool(result.applied), self.db)
        self._batches += 1
        limit = self._settings.fault_exit_after_batches
        if limit and self._batches >= limit:
            # Test hook: die after the database commit and before faust acknowledges the batch.
            log.warning("fault injection: exiting after %d committed batches", self._batches)
            logging.shutdown()
            os._exit(EXIT_FAULT_INJECTED)


def _record(message: Any) -> SourceRecord:
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int((message.timestamp or 0) * 1000),
        key=message.key,
        value=message.value,
        headers=[(k, bytes(v)) for k, v in (message.headers or ())],
    )

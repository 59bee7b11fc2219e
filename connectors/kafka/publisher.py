"""Publish encoded events and return only after the broker acknowledged all of them (acks=all)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from connectors.kafka.topics import ensure_topics
from events.serde import EncodedRecord

log = logging.getLogger(__name__)

_RETRY_DELAY_S = 0.2
# The HTTP gateway's bound on one publish: a client gets its 503 (with Retry-After) within this,
# however long the broker stays silent. Below the 10 s of a paused or failing-over broker, so
# that a caller learns of it while it lasts (docs/reliability.md, "Broker paused").
GATEWAY_ACK_TIMEOUT_S = 5.0
# A producer given up on is stopped in the background: its stop waits for in-flight requests,
# which a silent broker never answers, and must not delay the caller's 503.
_STOP_TIMEOUT_S = 5.0


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge in time; nothing may be reported as accepted."""


class KafkaPublisher:
    def __init__(
        self,
        bootstrap: str,
        client_id: str = "liandong-gateway",
        ack_timeout_s: float = 10.0,
        max_request_bytes: int = 4 * 1024 * 1024,
        partitions: int = 6,
        replication: int = 1,
    ) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._ack_timeout_s = ack_timeout_s
        self._max_request_bytes = max_request_bytes
        self._partitions = partitions
        self._replication = replication
        self._known_topics: set[str] = set()
        self._warm_topics: set[str] = set()
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()

    @property
    def bootstrap(self) -> str:
        return self._bootstrap

    async def _ensure(self, deadline: float) -> AIOKafkaProducer:
        """The producer, started if need be, by the deadline. Waiting for the lock counts too: while
        one caller starts a producer against a silent broker, the others must not queue past their
        own deadlines (each would otherwise wait for every start before it)."""
        try:
            await asyncio.wait_for(self._lock.acquire(), _remaining(deadline))
        except TimeoutError as exc:
            raise BrokerUnavailable(f"no connection to the broker at {self._bootstrap} in time") from exc
        try:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap,
                    client_id=self._client_id,
                    acks="all",
                    # Tansu has no idempotent producer; duplicates are absorbed downstream by event id.
                    enable_idempotence=False,
                    linger_ms=2,
                    request_timeout_ms=int(self._ack_timeout_s * 1000),
                    max_request_size=self._max_request_bytes,
                )
                try:
                    await asyncio.wait_for(producer.start(), _remaining(deadline))
                except (KafkaError, OSError, TimeoutError) as exc:
                    self._stop_later(producer)
                    raise BrokerUnavailable(f"cannot reach broker at {self._bootstrap}: {exc!r}") from exc
                self._producer = producer
            return self._producer
        finally:
            self._lock.release()

    async def _ensure_topics(self, topics: set[str], deadline: float) -> None:
        missing = topics - self._known_topics
        if not missing:
            return
        try:
            await asyncio.wait_for(
                ensure_topics(self._bootstrap, dict.fromkeys(missing, self._partitions), self._replication),
                _remaining(deadline),
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot create topics on {self._bootstrap}: {exc!r}") from exc
        self._known_topics |= missing

    async def publish(self, records: Sequence[tuple[str, EncodedRecord]]) -> None:
        """Send every record and wait for all acknowledgements, within the ack timeout.

        The timeout bounds the whole call: creating topics, connecting, and the acknowledgements.
        A retriable broker answer (a leader still being elected for a new topic, say) is retried
        until the deadline. Retrying may store a record twice; event ids make that harmless. So may
        a call that timed out: the broker can still store what it was sent, after the deadline.
        """
        deadline = asyncio.get_running_loop().time() + self._ack_timeout_s
        await self._ensure_topics({topic for topic, _ in records}, deadline)
        pending = list(records)
        while True:
            producer = await self._ensure(deadline)
            try:
                pending = await asyncio.wait_for(self._attempt(producer, pending), _remaining(deadline))
            except (KafkaError, OSError, TimeoutError) as exc:
                # A producer that timed out may hold a broken connection; start afresh next time.
                if self._producer is producer:
                    self._producer = None
                self._stop_later(producer)
                raise BrokerUnavailable(f"broker did not acknowledge: {exc!r}") from exc
            if not pending:
                return
            if asyncio.get_running_loop().time() + _RETRY_DELAY_S >= deadline:
                raise BrokerUnavailable(f"broker kept refusing {len(pending)} records as retriable")
            await asyncio.sleep(_RETRY_DELAY_S)  # give the broker time to elect leaders

    async def _attempt(
        self, producer: AIOKafkaProducer, records: Sequence[tuple[str, EncodedRecord]]
    ) -> list[tuple[str, EncodedRecord]]:
        # Learn new topics one at a time: Tansu did not answer a metadata request naming a known
        # topic and two new ones together, and the batch timed out (see docs/decisions.md).
        for topic in sorted({t for t, _ in records} - self._warm_topics):
            await producer.partitions_for(topic)
            self._warm_topics.add(topic)
        return await self._send(producer, records)

    @staticmethod
    async def _send(
        producer: AIOKafkaProducer, records: Sequence[tuple[str, EncodedRecord]]
    ) -> list[tuple[str, EncodedRecord]]:
        """Send; return the records refused with a retriable error, raise on anything else."""
        futures = [await producer.send(t, value=r.value, key=r.key, headers=r.headers) for t, r in records]
        results = await asyncio.gather(*futures, return_exceptions=True)
        retry: list[tuple[str, EncodedRecord]] = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, KafkaError) and result.retriable:
                retry.append(record)
            elif isinstance(result, BaseException):
                raise result
        return retry

    def _stop_later(self, producer: AIOKafkaProducer) -> None:
        task = asyncio.get_running_loop().create_task(_quiet_stop(producer))
        self._stopping.add(task)  # a reference, so that the task is not collected half-way
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _quiet_stop(producer)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)


def _remaining(deadline: float) -> float:
    """Seconds left until `deadline`; a floor keeps a call that is already late from hanging on 0."""
    return max(deadline - asyncio.get_running_loop().time(), 0.05)


async def _quiet_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), _STOP_TIMEOUT_S)
    except Exception as exc:  # shutting down a broken producer must not mask the real error
        log.warning("producer stop failed: %r", exc)

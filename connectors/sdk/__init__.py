"""A small, typed Python client for agencies that publish straight to Kafka.

It builds catalog events, validates them exactly as the HTTP gateway does (schema, directory
references, the unit's publishing rights and jurisdiction), and publishes them with the gateway's
serde and headers, returning only after the broker acknowledged them (acks=all). `publish` checks
the directory's grants again (`events/grants.py`) for every event it is handed, however it was
built: a client publishes only as its own unit, only the types and townships granted to it.

    async with LiandongClient("kafka-1:9092", unit="shilou.enforcement-office") as client:
        filed = client.event("case.filed.v1", subject="SL-2026-0001", record_id="row-17", data={...})
        await client.publish(filed)

Event ids are derived from the unit and the agency's own record id, so publishing the same record
twice (a re-run, a retry) publishes the same event id, which the hub keeps once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from connectors.http_gateway.ingest import Forbidden, IngestRejected, Limits, validate_event
from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.envelope import SPECVERSION, TYPE_PREFIX, Envelope
from events.grants import Grants
from events.jsonavro import DataError
from events.registry import LocalSchemaRegistry, SchemaRegistry
from events.serde import EventCodec

_NAMESPACE = uuid.UUID("2f6b1c8e-4d4a-4c6e-8f1e-7a0d9b3c5e12")

__all__ = ["InvalidEvent", "LiandongClient", "event_id_for"]


class InvalidEvent(ValueError):
    """The event breaks the contract; `problems` names each field and reason, as the gateway would.

    `reason` is the gateway's bounded label: `invalid_event`, or a grant refusal (`forged_source`,
    `unknown_source`, `type_not_permitted`, `township_not_permitted`)."""

    def __init__(self, problems: list[tuple[str, str]], reason: str = "invalid_event") -> None:
        super().__init__("; ".join(f"{f}: {r}" for f, r in problems))
        self.problems = problems
        self.reason = reason


def event_id_for(unit: str, record_id: str) -> str:
    """The event id for an agency's own record: the same record always gives the same id."""
    return str(uuid.uuid5(_NAMESPACE, f"{unit}|{record_id}"))


class LiandongClient:
    def __init__(
        self,
        bootstrap: str,
        unit: str,
        *,
        registry: SchemaRegistry | None = None,
        catalog: Catalog | None = None,
        directory: Directory | None = None,
        partitions: int = 6,
    ) -> None:
        self._unit = unit
        self._catalog = catalog or Catalog.load()
        self._directory = directory or Directory.load()
        if unit not in self._directory.units:
            raise InvalidEvent([("unit", f"'{unit}' is not a registered unit")])
        self._grants = Grants(self._directory, self._catalog)
        self._codec = EventCodec(self._catalog, registry or LocalSchemaRegistry())
        self._publisher = KafkaPublisher(bootstrap, client_id=f"liandong-sdk-{unit}", partitions=partitions)
        self._prepared = False

    async def __aenter__(self) -> LiandongClient:
        await self._codec.prepare()
        self._prepared = True
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._publisher.close()

    def event(
        self,
        short_type: str,
        *,
        subject: str,
        data: dict[str, Any],
        record_id: str | None = None,
        time: datetime | None = None,
    ) -> Envelope:
        """Build and validate one event. `short_type` is e.g. `case.filed.v1`; data is JSON-shaped."""
        item = {
            "specversion": SPECVERSION,
            "id": event_id_for(self._unit, record_id) if record_id else str(uuid.uuid4()),
            "source": self._unit,
            "type": TYPE_PREFIX + short_type,
            "subject": subject,
            "time": (time or datetime.now(UTC)).isoformat(),
            "data": data,
        }
        try:
            return validate_event(item, self._unit, self._catalog, self._directory, Limits())
        except DataError as exc:
            raise InvalidEvent([(exc.path, exc.reason)]) from None
        except IngestRejected as exc:
            raise InvalidEvent([(p.field, p.reason) for p in exc.problems]) from None
        except Forbidden as exc:
            raise InvalidEvent([(exc.field, exc.detail)], exc.reason) from None

    def check(self, event: Envelope) -> None:
        """Raise `InvalidEvent` if the directory does not grant this unit `event` (source, type,
        townships named in its data)."""
        refusal = self._grants.check(event, publisher=self._unit)
        if refusal is not None:
            raise InvalidEvent([(refusal.field, refusal.detail)], refusal.reason)

    async def publish(self, *events: Envelope) -> None:
        """Publish and wait for the broker's acknowledgement of every event.

        All or nothing on the grants: if one event is refused, `InvalidEvent` is raised and none is
        sent."""
        if not self._prepared:
            raise RuntimeError("use the client as `async with LiandongClient(...) as client:`")
        for e in events:
            self.check(e)
        await self._publisher.publish([(topic_for(e.area), self._codec.encode(e)) for e in events])

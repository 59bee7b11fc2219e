"""What the simulator produces: one event as a unit publishes it, and how to turn it into an envelope.

`SimulatedEvent.data` is JSON-shaped (dates as `YYYY-MM-DD`), exactly what a unit sends to the
gateway; `to_envelope` validates it as the gateway and the SDK do and returns the Avro-ready
envelope that the SDK would publish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.http_gateway.ingest import Limits, validate_event
from events.catalog import Catalog
from events.directory import Directory
from events.envelope import SPECVERSION, TYPE_PREFIX, Envelope

# The lapses the simulator injects on purpose, named as the hub's anomaly kinds
# (projections/anomalies.py), so that a run can be checked against what the hub finds.
REPEAT_INSPECTION = "repeat_inspection"
LEGAL_REVIEW_MISSING = "legal_review_missing"
INJECTED_KINDS = (LEGAL_REVIEW_MISSING, REPEAT_INSPECTION)


@dataclass(frozen=True, slots=True)
class SimulatedEvent:
    """One fact of the simulated year.

    `time` is when it occurred (simulated, +08:00); `publish_at` is when its unit publishes it,
    later than `time` for a weekly spreadsheet upload. The stream is ordered by `publish_at`.
    `anomaly` is one of `INJECTED_KINDS` on the event that completes a lapse the simulator
    injected (the later inspection of a repeat pair, a major decision without legal review), so
    that each one the hub should find is counted once; it is not part of what the unit publishes.
    """

    time: datetime
    publish_at: datetime
    unit: str
    channel: str
    type: str
    subject: str
    record_id: str
    event_id: str
    data: Mapping[str, Any]
    anomaly: str | None = None

    @property
    def area(self) -> str:
        return self.type.split(".", 1)[0]

    def cloudevent(self) -> dict[str, Any]:
        """The structured-mode CloudEvents JSON a unit posts to `POST /v1/events`."""
        return {
            "specversion": SPECVERSION,
            "id": self.event_id,
            "source": self.unit,
            "type": TYPE_PREFIX + self.type,
            "subject": self.subject,
            "time": self.time.isoformat(),
            "datacontenttype": "application/json",
            "data": dict(self.data),
        }


def to_envelope(
    event: SimulatedEvent, catalog: Catalog | None = None, directory: Directory | None = None
) -> Envelope:
    """Validate as the gateway does (schema, references, rights, jurisdiction); raise if refused."""
    return validate_event(
        event.cloudevent(),
        event.unit,
        catalog or Catalog.load(),
        directory or Directory.load(),
        Limits(),
    )

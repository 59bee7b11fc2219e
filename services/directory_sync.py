"""Publish the directory file's changes as `directory.*` events on the compacted directory topic.

Event ids are derived from the unit, its content and the event it follows, so every worker that
starts at the same time publishes the same ids, and the projections keep one copy.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import topic_for
from events.directory import Directory
from events.envelope import Envelope
from events.serde import EventCodec
from projections.directory_store import PUBLISHED, RETIRED
from projections.schema import directory_units

HUB_SOURCE = "liandong.hub"
DIRECTORY_TOPIC = topic_for("directory")
COMPACTED = {DIRECTORY_TOPIC: {"cleanup.policy": "compact"}}
_NAMESPACE = uuid.UUID("0c6a3f0e-2a7b-4f7e-9a55-3b8f1d4c6e21")


def _projected_record(row: Any) -> dict[str, Any]:
    return {
        "kind": row.kind,
        "name_zh": row.name_zh,
        "name_en": row.name_en,
        "home_township": row.home_township,
        "jurisdiction": sorted(json.loads(row.jurisdiction or "[]")),
        "publishes": json.loads(row.publishes or "[]"),
        "officers": row.officers,
    }


async def directory_changes(engine: AsyncEngine, directory: Directory) -> list[Envelope]:
    async with engine.connect() as conn:
        rows = {r.unit_id: r for r in await conn.execute(select(directory_units))}
    now = datetime.now(UTC)
    changes: list[Envelope] = []
    for unit in directory.units.values():
        row = rows.get(unit.id)
        if row is not None and row.retired_at is None and _projected_record(row) == unit.as_record():
            continue
        follows = row.event_id if row is not None else ""
        event_id = uuid.uuid5(_NAMESPACE, f"{unit.id}|{unit.content_hash()}|{follows}")
        changes.append(Envelope(str(event_id), PUBLISHED, HUB_SOURCE, unit.id, now, unit.as_record()))
    for unit_id, row in rows.items():
        if unit_id not in directory.units and row.retired_at is None:
            event_id = uuid.uuid5(_NAMESPACE, f"{unit_id}|retired|{row.event_id}")
            data = {"reason": "removed from the directory file", "successor_unit": None}
            changes.append(Envelope(str(event_id), RETIRED, HUB_SOURCE, unit_id, now, data))
    return changes


async def sync_directory(
    engine: AsyncEngine, directory: Directory, codec: EventCodec, publisher: KafkaPublisher
) -> int:
    changes = await directory_changes(engine, directory)
    if changes:
        await publisher.publish([(DIRECTORY_TOPIC, codec.encode(e)) for e in changes])
    return len(changes)

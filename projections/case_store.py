"""SQL side of the case registry: one history insert and one upsert per batch, never per event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import case, func
from sqlalchemy.ext.asyncio import AsyncConnection

from projections import case_registry
from projections.db import upsert
from projections.runtime import Positioned
from projections.schema import case_events, cases


class CaseRegistryProjection:
    name = "case_registry"

    def handles(self, event_type: str) -> bool:
        return case_registry.handles(event_type)

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> Mapping[str, int]:
        unique: dict[str, Positioned] = {}
        for p in events:
            unique.setdefault(p.event.id, p)
        history = [
            {
                "event_id": p.event.id,
                "case_id": p.event.subject,
                "type": p.event.type,
                "source": p.event.source,
                "occurred_at": p.event.time,
                "topic": p.record.topic,
                "partition": p.record.partition,
                "offset": p.record.offset,
            }
            for p in unique.values()
        ]
        insert = upsert(conn, case_events).on_conflict_do_nothing(index_elements=["event_id"])
        inserted = await conn.execute(insert.returning(case_events.c.event_id), history)
        new_ids = {row[0] for row in inserted}
        fresh = [p.event for p in unique.values() if p.event.id in new_ids]
        if not fresh:
            return {}
        changes = case_registry.fold(fresh)
        await conn.execute(_merge_statement(conn), [c.as_row() for c in changes.values()])
        counts: dict[str, int] = {}
        for event in fresh:
            counts[event.type] = counts.get(event.type, 0) + 1
        return counts


def _merge_statement(conn: AsyncConnection) -> Any:
    stmt = upsert(conn, cases)
    new, old = stmt.excluded, cases.c
    forward = new.stage_rank > old.stage_rank
    set_: dict[str, Any] = {name: func.coalesce(old[name], new[name]) for name in case_registry.SETTABLE}
    set_.update(
        stage=case((forward, new.stage), else_=old.stage),
        stage_rank=case((forward, new.stage_rank), else_=old.stage_rank),
        last_event_at=case(
            (new.last_event_at > old.last_event_at, new.last_event_at), else_=old.last_event_at
        ),
        event_count=old.event_count + new.event_count,
    )
    return stmt.on_conflict_do_update(index_elements=["case_id"], set_=set_)

"""SQL side of the case registry: one upsert per batch, never a round trip per event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, true
from sqlalchemy.ext.asyncio import AsyncConnection

from projections import case_registry
from projections.db import upsert
from projections.runtime import Positioned
from projections.schema import cases


class CaseRegistryProjection:
    name = "case_registry"
    tables = ("cases",)  # what `liandong projections rebuild` swaps

    def handles(self, event_type: str) -> bool:
        return case_registry.handles(event_type)

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        changes = case_registry.fold(p.event for p in events)
        await conn.execute(_merge_statement(conn), [c.as_row() for c in changes.values()])


def _merge_statement(conn: AsyncConnection) -> Any:
    stmt = upsert(conn, cases)
    new, old = stmt.excluded, cases.c
    forward = new.stage_rank > old.stage_rank
    set_: dict[str, Any] = {name: func.coalesce(old[name], new[name]) for name in case_registry.SETTABLE}
    set_.update(
        stage=case((forward, new.stage), else_=old.stage),
        stage_rank=case((forward, new.stage_rank), else_=old.stage_rank),
        requires_legal_review=case(
            ((new.requires_legal_review == true()) | (old.requires_legal_review == true()), true()),
            else_=func.coalesce(old.requires_legal_review, new.requires_legal_review),
        ),
        last_event_at=case(
            (new.last_event_at > old.last_event_at, new.last_event_at), else_=old.last_event_at
        ),
        event_count=old.event_count + new.event_count,
    )
    return stmt.on_conflict_do_update(index_elements=["case_id"], set_=set_)

"""SQL side of coordination matters: one upsert for the matters, one insert for their parties."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, func
from sqlalchemy.ext.asyncio import AsyncConnection

from events.mechanisms import Mechanisms
from projections import matters
from projections.bulk import merge
from projections.runtime import Positioned
from projections.schema import matter_parties
from projections.schema import matters as matters_table
from projections.steps import StepIndex


class MattersProjection:
    name = "matters"
    tables = ("matters", "matter_parties")  # what `liandong projections rebuild` swaps

    def __init__(self, mechanisms: Mechanisms) -> None:
        self._mechanisms = StepIndex(mechanisms)
        self._areas = {name for name, area in mechanisms.areas.items() if area.matter}

    def handles(self, event_type: str) -> bool:
        step = self._mechanisms.step(event_type)
        return step is not None and step.area in self._areas

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        changes = matters.fold((p.event for p in events), self._mechanisms)
        if not changes:
            return
        await merge(conn, matters_table, [c.as_row() for c in changes.values()], _on_conflict)
        parties = [
            {"subject_id": c.subject_id, "area": c.area, "unit_id": unit}
            for c in changes.values()
            for unit in sorted(c.parties)
        ]
        await merge(
            conn,
            matter_parties,
            parties,
            _new_parties,
        )


def _earlier(old: Any, new: Any) -> ColumnElement[Any]:
    # NULL-safe min: SQLite's min() and PostgreSQL's LEAST treat NULL differently.
    return case((old.is_(None), new), (new.is_(None), old), (new < old, new), else_=old)


def _later(old: Any, new: Any) -> ColumnElement[Any]:
    return case((old.is_(None), new), (new.is_(None), old), (new > old, new), else_=old)


def _on_conflict(stmt: Any) -> Any:
    t = matters_table
    new = stmt.excluded
    newer = new.last_event_at > t.c.last_event_at
    return stmt.on_conflict_do_update(
        index_elements=["subject_id", "area"],
        set_={
            "township": func.coalesce(t.c.township, new.township),
            "case_id": func.coalesce(t.c.case_id, new.case_id),
            "initiator": func.coalesce(t.c.initiator, new.initiator),
            "opened_at": _earlier(t.c.opened_at, new.opened_at),
            "closed_at": _later(t.c.closed_at, new.closed_at),
            "reopened_at": _later(t.c.reopened_at, new.reopened_at),
            "last_event_at": case((newer, new.last_event_at), else_=t.c.last_event_at),
            "last_event_type": case((newer, new.last_event_type), else_=t.c.last_event_type),
            "event_count": t.c.event_count + new.event_count,
        },
    )


def _new_parties(stmt: Any) -> Any:
    return stmt.on_conflict_do_nothing(index_elements=["subject_id", "area", "unit_id"])

"""The projected directory: the latest published version of every unit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case
from sqlalchemy.ext.asyncio import AsyncConnection

from events.envelope import TYPE_PREFIX
from projections.bulk import merge
from projections.runtime import Positioned
from projections.schema import directory_units

PUBLISHED = TYPE_PREFIX + "directory.unit_published.v1"
RETIRED = TYPE_PREFIX + "directory.unit_retired.v1"
_UNIT_DATA = ("kind", "name_zh", "name_en", "home_township", "jurisdiction", "publishes", "officers")
_COLUMNS = (*_UNIT_DATA, "retired_at")


class DirectoryProjection:
    name = "directory"
    tables = ("directory_units",)  # what `liandong projections rebuild` swaps

    def handles(self, event_type: str) -> bool:
        return event_type in (PUBLISHED, RETIRED)

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        latest: dict[str, dict[str, Any]] = {}
        for p in sorted(events, key=lambda p: p.event.time):
            e = p.event
            row = {
                "unit_id": e.subject,
                "changed_at": e.time,
                "event_id": e.id,
                **dict.fromkeys(_COLUMNS),
            }
            if e.type == PUBLISHED:
                row.update(
                    {k: e.data.get(k) for k in ("kind", "name_zh", "name_en", "home_township", "officers")}
                )
                row["jurisdiction"] = json.dumps(list(e.data.get("jurisdiction", [])))
                row["publishes"] = json.dumps(list(e.data.get("publishes", [])))
            else:
                previous = latest.get(e.subject, {})
                row.update({k: previous.get(k) for k in _COLUMNS})
                row["retired_at"] = e.time
            latest[e.subject] = row
        await merge(conn, directory_units, list(latest.values()), _on_conflict)


def _on_conflict(stmt: Any) -> Any:
    newer = stmt.excluded.changed_at >= directory_units.c.changed_at
    set_: dict[str, Any] = {
        # A retirement carries no unit data: keep what the last publication said.
        name: case(
            (newer & stmt.excluded.retired_at.is_(None), stmt.excluded[name]),
            else_=directory_units.c[name],
        )
        for name in _UNIT_DATA
    }
    set_.update(
        retired_at=case((newer, stmt.excluded.retired_at), else_=directory_units.c.retired_at),
        changed_at=case((newer, stmt.excluded.changed_at), else_=directory_units.c.changed_at),
        event_id=case((newer, stmt.excluded.event_id), else_=directory_units.c.event_id),
    )
    return stmt.on_conflict_do_update(index_elements=["unit_id"], set_=set_)

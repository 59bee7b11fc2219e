"""JSON rendering shared by the query routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.schema import event_history


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    # SQLite hands datetimes back without their zone; every stored time is UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def clock_json(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    started = iso(m["started_at"])
    reset, stopped = m["reset_at"], m["stopped_at"]
    start = max(x for x in (m["started_at"], reset) if x is not None) if m["started_at"] else None
    return {
        "clock_id": m["clock_id"],
        "rule_id": m["rule_id"],
        "area": m["area"],
        "subject": m["subject"],
        "party": m["party"] or None,
        "responsible": m["responsible"],
        "township": m["township"],
        "started_at": started,
        "deadline": iso(m["deadline"]),
        # Every view marks a deadline computed over a year without official holiday data.
        "provisional": m["provisional"],
        "open": start is not None and (stopped is None or stopped < start),
        "stopped_at": iso(stopped),
        "alerts_raised": [x for x in m["fired"].split(",") if x],
    }


async def timeline(conn: AsyncConnection, area: str, subject: str) -> list[dict[str, Any]]:
    """A subject's events in the order they occurred: its full-process record (全过程记录)."""
    h = event_history.c
    rows = await conn.execute(
        select(h.event_id, h.type, h.source, h.occurred_at)
        .where(h.area == area, h.subject == subject)
        .order_by(h.occurred_at, h.event_id)
    )
    return [{"id": e.event_id, "type": e.type, "source": e.source, "time": iso(e.occurred_at)} for e in rows]

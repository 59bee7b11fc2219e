"""SQL side of anomalies: re-derive the open set of every subject the batch touched."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, not_, select, true, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import NullType

from events.mechanisms import Mechanisms
from projections.anomalies import HistoryEntry, detect
from projections.bulk import any_of, is_postgresql, merge, pairs_of
from projections.runtime import Positioned
from projections.schema import anomalies, cases, event_history
from projections.steps import StepIndex


class AnomalyProjection:
    """Runs after the case registry, whose `requires_legal_review` it reads."""

    name = "anomalies"

    def __init__(self, mechanisms: Mechanisms) -> None:
        self._mechanisms = StepIndex(mechanisms)

    def handles(self, event_type: str) -> bool:
        return self._mechanisms.step(event_type) is not None

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        subjects = {(p.event.area, p.event.subject) for p in events}
        history = await _histories(conn, subjects)
        case_ids = [s for a, s in subjects if a == "case"]
        major = set()
        if case_ids:
            major = set(
                (
                    await conn.execute(
                        select(cases.c.case_id).where(
                            any_of(conn, cases.c.case_id, case_ids), cases.c.requires_legal_review == true()
                        )
                    )
                ).scalars()
            )
        now = datetime.now(UTC)
        found = [
            anomaly
            for (area, subject), entries in history.items()
            for anomaly in detect(area, subject, entries, subject in major, self._mechanisms)
        ]
        if found:
            await merge(
                conn,
                anomalies,
                [
                    {
                        "anomaly_id": a.anomaly_id,
                        "subject": a.subject,
                        "area": a.area,
                        "kind": a.kind,
                        "category": a.category,
                        "event_id": a.event_id,
                        "event_type": a.event_type,
                        "occurred_at": a.occurred_at,
                        "detected_at": now,
                        "resolved_at": None,
                        "detail": a.detail,
                    }
                    for a in found
                ],
                _reopened,
            )
        a = anomalies.c
        # A late predecessor (the filing that arrives after its decision) resolves the anomaly.
        await conn.execute(
            update(anomalies)
            .where(pairs_of(conn, a.area, a.subject, subjects))
            .where(a.resolved_at.is_(None))
            .where(not_(any_of(conn, a.anomaly_id, [x.anomaly_id for x in found])))
            .values(resolved_at=now)
        )


async def _histories(
    conn: AsyncConnection, subjects: set[tuple[str, str]]
) -> dict[tuple[str, str], list[HistoryEntry]]:
    """Each subject's whole history, by occurrence time (then event id)."""
    h = event_history.c
    where = pairs_of(conn, h.area, h.subject, subjects)
    order = (h.occurred_at, h.event_id)
    if is_postgresql(conn):
        # One row per subject, its history in three arrays: a batch touches hundreds of subjects
        # with a dozen events each, and arrays cost one Python row per subject, not per event.
        # Untyped arrays: asyncpg already returns lists of str and of aware datetimes, and
        # SQLAlchemy's ARRAY would walk every element again.
        rows = await conn.execute(
            select(
                h.area,
                h.subject,
                func.array_agg(aggregate_order_by(h.event_id, *order), type_=NullType()),
                func.array_agg(aggregate_order_by(h.type, *order), type_=NullType()),
                func.array_agg(aggregate_order_by(h.occurred_at, *order), type_=NullType()),
            )
            .where(where)
            .group_by(h.area, h.subject)
        )
        return {
            (area, subject): list(map(HistoryEntry, ids, types, times))
            for area, subject, ids, types, times in rows.all()
        }
    history: dict[tuple[str, str], list[HistoryEntry]] = defaultdict(list)
    flat = await conn.execute(
        select(h.area, h.subject, h.event_id, h.type, h.occurred_at).where(where).order_by(*order)
    )
    for area, subject, event_id, event_type, occurred_at in flat.all():
        history[(area, subject)].append(HistoryEntry(event_id, event_type, occurred_at))
    return history


def _reopened(stmt: Any) -> Any:
    return stmt.on_conflict_do_update(index_elements=["anomaly_id"], set_={"resolved_at": None})

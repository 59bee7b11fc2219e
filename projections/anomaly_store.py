"""SQL side of anomalies: re-derive the open set of every subject the batch touched."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.mechanisms import Mechanisms
from projections.anomalies import HistoryEntry, detect
from projections.db import pairs_in, upsert
from projections.runtime import Positioned
from projections.schema import anomalies, cases, event_history


class AnomalyProjection:
    """Runs after the case registry, whose `requires_legal_review` it reads."""

    name = "anomalies"

    def __init__(self, mechanisms: Mechanisms) -> None:
        self._mechanisms = mechanisms

    def handles(self, event_type: str) -> bool:
        return self._mechanisms.step(event_type) is not None

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        subjects = {(p.event.area, p.event.subject) for p in events}
        history: dict[tuple[str, str], list[HistoryEntry]] = defaultdict(list)
        h = event_history.c
        rows = await conn.execute(
            select(h.area, h.subject, h.event_id, h.type, h.occurred_at)
            .where(pairs_in(h.area, h.subject, subjects))
            .order_by(h.occurred_at, h.event_id)
        )
        for row in rows:
            history[(row.area, row.subject)].append(HistoryEntry(row.event_id, row.type, row.occurred_at))
        case_ids = [s for a, s in subjects if a == "case"]
        major = set()
        if case_ids:
            major = set(
                (
                    await conn.execute(
                        select(cases.c.case_id).where(
                            cases.c.case_id.in_(case_ids), cases.c.requires_legal_review == true()
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
            stmt = upsert(conn, anomalies)
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["anomaly_id"], set_={"resolved_at": None}),
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
            )
        a = anomalies.c
        # A late predecessor (the filing that arrives after its decision) resolves the anomaly.
        await conn.execute(
            update(anomalies)
            .where(pairs_in(a.area, a.subject, subjects))
            .where(a.resolved_at.is_(None))
            .where(a.anomaly_id.not_in([x.anomaly_id for x in found]))
            .values(resolved_at=now)
        )

"""SQL side of anomalies: re-derive the open set of every subject the batch touched, and pair each
newly tasked inspection with the other inspections of its business."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, not_, select, true, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import NullType

from events.envelope import TYPE_PREFIX
from events.mechanisms import Mechanisms
from projections.anomalies import (
    HISTORY_KINDS,
    REPEAT_INSPECTION,
    REPEAT_INSPECTION_WINDOW,
    RISK,
    Anomaly,
    HistoryEntry,
    Inspection,
    detect,
    repeat_detail,
    repeat_inspections,
)
from projections.bulk import any_of, is_postgresql, merge, pairs_of
from projections.runtime import Positioned
from projections.schema import anomalies, cases, event_history, inspections, matters
from projections.steps import StepIndex

_TASKED = TYPE_PREFIX + "linkage.inspection_tasked."


class AnomalyProjection:
    """Runs after the case registry, whose `requires_legal_review` it reads, and after the analysis
    projection, whose `inspections` rows it pairs."""

    name = "anomalies"
    tables = ("anomalies",)  # what `liandong projections rebuild` swaps

    def __init__(self, mechanisms: Mechanisms, now: Callable[[], datetime] | None = None) -> None:
        self._mechanisms = StepIndex(mechanisms)
        # The worker's time source: detection times read as the hub's "now", which a simulation moves.
        self._now = now or (lambda: datetime.now(UTC))

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
        now = self._now()
        found = [
            anomaly
            for (area, subject), entries in history.items()
            if not _risk_alert(area, subject)
            for anomaly in detect(area, subject, entries, subject in major, self._mechanisms)
        ]
        tasked = {
            p.event.subject
            for p in events
            if p.event.area == "linkage" and p.event.event_name == "inspection_tasked"
        }
        if tasked:
            found += await _repeat_inspections(conn, tasked)
        if found:
            townships = await _townships(conn, {(x.area, x.subject) for x in found if x.township is None})
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
                        "township": a.township or townships.get((a.area, a.subject)),
                    }
                    for a in found
                ],
                _reopened,
            )
        a = anomalies.c
        # A late predecessor (the filing that arrives after its decision) resolves the anomaly. Only
        # the kinds re-derived from histories: a repeat inspection stays a fact of its pair.
        await conn.execute(
            update(anomalies)
            .where(pairs_of(conn, a.area, a.subject, subjects))
            .where(a.resolved_at.is_(None))
            .where(a.kind.in_(HISTORY_KINDS))
            .where(not_(any_of(conn, a.anomaly_id, [x.anomaly_id for x in found])))
            .values(resolved_at=now)
        )


def _risk_alert(area: str, subject: str) -> bool:
    """A risk alert's raise is its `anomaly.detected` event, under the bare anomaly id: the alert's
    own subject ("anomaly:" + id) never holds an `alert.raised`, so its acknowledgement and its
    withdrawal are not out of order."""
    return area == "alert" and subject.startswith("anomaly:")


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


async def _repeat_inspections(conn: AsyncConnection, tasked: set[str]) -> list[Anomaly]:
    """Anomalies for the batch's tasked inspections and the others of their businesses.

    Reads the `inspections` rows the analysis projection wrote earlier in this transaction, so the
    second inspection of a pair finds the first whichever arrives first.
    """
    i = inspections.c
    columns = (i.subject, i.inspecting_unit, i.township, i.business_key, i.business_name, i.tasked_at)
    complete = and_(i.business_key.is_not(None), i.tasked_at.is_not(None), i.inspecting_unit.is_not(None))
    new = [
        _inspection(row)
        for row in await conn.execute(select(*columns).where(any_of(conn, i.subject, tasked), complete))
    ]
    if not new:
        return []
    low = min(r.tasked_at for r in new) - REPEAT_INSPECTION_WINDOW
    high = max(r.tasked_at for r in new) + REPEAT_INSPECTION_WINDOW
    known = await conn.execute(
        select(*columns).where(
            any_of(conn, i.business_key, sorted({r.business_key for r in new})),
            complete,
            # Bound in UTC: SQLite compares the stored UTC text.
            i.tasked_at >= low.astimezone(UTC),
            i.tasked_at <= high.astimezone(UTC),
        )
    )
    pairs = repeat_inspections(new, [_inspection(row) for row in known])
    if not pairs:
        return []
    causes = await _taskings(conn, {p.later.subject for p in pairs})
    out = []
    for pair in pairs:
        event_id, event_type = causes.get(pair.later.subject, ("", _TASKED + "v1"))
        out.append(
            Anomaly(
                anomaly_id=pair.anomaly_id,
                subject=pair.later.subject,
                area="linkage",
                kind=REPEAT_INSPECTION,
                category=RISK,
                event_id=event_id,
                event_type=event_type,
                occurred_at=pair.later.tasked_at,
                detail=repeat_detail(pair),
                township=pair.later.township or pair.earlier.township,
            )
        )
    return out


def _inspection(row: Any) -> Inspection:
    subject, unit, township, key, name, tasked_at = row
    return Inspection(subject, unit, township, key, name, _utc(tasked_at))


def _utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def _taskings(conn: AsyncConnection, subjects: set[str]) -> dict[str, tuple[str, str]]:
    """Each subject's first tasking event (id, type): the fact an inspection row's tasking is from."""
    h = event_history.c
    rows = await conn.execute(
        select(h.subject, h.event_id, h.type)
        .where(h.area == "linkage", any_of(conn, h.subject, subjects), h.type.startswith(_TASKED))
        .order_by(h.subject, h.occurred_at, h.event_id)
    )
    out: dict[str, tuple[str, str]] = {}
    for subject, event_id, event_type in rows.all():
        out.setdefault(subject, (event_id, event_type))
    return out


async def _townships(conn: AsyncConnection, subjects: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Where each anomaly belongs: a case's township, or its matter's."""
    out: dict[tuple[str, str], str] = {}
    case_ids = [s for area, s in subjects if area == "case"]
    others = {(area, s) for area, s in subjects if area != "case"}
    if case_ids:
        c = cases.c
        rows = await conn.execute(
            select(c.case_id, c.township).where(any_of(conn, c.case_id, case_ids), c.township.is_not(None))
        )
        out.update((("case", case_id), township) for case_id, township in rows.all())
    if others:
        m = matters.c
        matter_rows = await conn.execute(
            select(m.area, m.subject_id, m.township).where(
                pairs_of(conn, m.area, m.subject_id, others), m.township.is_not(None)
            )
        )
        out.update(((area, subject), township) for area, subject, township in matter_rows.all())
    return out


def _reopened(stmt: Any) -> Any:
    # A township learnt later (the filing after its decision) fills in; `announced_at` is kept.
    return stmt.on_conflict_do_update(
        index_elements=["anomaly_id"],
        set_={"resolved_at": None, "township": func.coalesce(anomalies.c.township, stmt.excluded.township)},
    )

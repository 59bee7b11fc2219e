"""The analysis projection (分析研判): case-file reviews, the dispute list and inspections.

One upsert per table per batch. Facts may arrive in any order and more than once, so every row is
merged by rules that give the same row whatever the order:

- a group of columns that one kind of event sets is taken, whole, from the event with the earliest
  (raised, referred, tasked) or the latest (scored, decided, listed, completed) occurrence time;
  on a tie the row already held wins;
- a dispute's status is the furthest reached: raised < referred < decided < listed;
- a case id, once known, is kept.

The same rules run twice: in Python, to fold a batch into one row per key (an upsert may touch a
row only once), and in SQL, to merge that row with the stored one. Both are built from `_Spec`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    func,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from events.envelope import TYPE_PREFIX, Envelope
from projections.bulk import is_postgresql, merge
from projections.runtime import Positioned
from projections.schema import disputes, file_reviews, inspections

Row = dict[str, Any]

DISPUTE_STATUSES: Mapping[str, int] = {"raised": 1, "referred": 2, "decided": 3, "listed": 4}

_BUSINESS_KEY_LENGTH = 160  # inspections.business_key
# The first argument of the two-key advisory lock: the space of "a business being inspected".
_INSPECTION_LOCKS = 7_260_001


def business_key(credit_code: object, name: object) -> str | None:
    """`uscc:<credit code>` when the business is identified, else `name:<business name>`."""
    if isinstance(credit_code, str) and credit_code.strip():
        return "uscc:" + credit_code.strip().upper()
    if isinstance(name, str) and name.strip():
        key = "name:" + name.strip()
        # A name too long for the column is hashed, not cut: cut names could collide.
        if len(key) <= _BUSINESS_KEY_LENGTH:
            return key
        return "name:sha256:" + hashlib.sha256(name.strip().encode()).hexdigest()
    return None


@dataclass(frozen=True, slots=True)
class _Group:
    """Columns set together by one kind of event, kept from its earliest or latest occurrence."""

    time: str
    columns: tuple[str, ...]
    earliest: bool


@dataclass(frozen=True, slots=True)
class _Spec:
    table: Table
    key: str
    groups: tuple[_Group, ...]
    kept: tuple[str, ...] = ()  # the first non-null value stays
    status: str | None = None  # ranked by DISPUTE_STATUSES, never moves back
    latest: str | None = None  # the newest value


_FILE_REVIEWS = _Spec(
    file_reviews,
    "review_id",
    (
        _Group(
            "scored_at",
            (
                "reviewed_unit",
                "township",
                "score",
                "passed",
                "reviewing_body",
                "review_batch",
                "case_id",
                "case_number",
                "problems",
            ),
            earliest=False,
        ),
    ),
)
_DISPUTES = _Spec(
    disputes,
    "dispute_id",
    (
        _Group("raised_at", ("township", "matter", "units"), earliest=True),
        _Group("referred_at", ("referred_to",), earliest=True),
        _Group("decided_at", ("responsible_unit", "basis"), earliest=False),
        _Group("listed_at", ("list_entry_id", "matter_category"), earliest=False),
    ),
    kept=("case_id",),
    status="status",
    latest="last_event_at",
)
_INSPECTIONS = _Spec(
    inspections,
    "subject",
    (
        # A permit re-tasked under the same subject keeps its first tasking: the pair checks for
        # repeat inspections then compare stable rows.
        _Group("tasked_at", ("inspecting_unit", "township", "business_key", "business_name"), earliest=True),
        _Group("completed_at", ("finding",), earliest=False),
    ),
)


def _takes(group: _Group, old: datetime | None, new: datetime | None) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    return new < old if group.earliest else new > old


def _combine(spec: _Spec, old: Row, new: Row) -> Row:
    out = dict(old)
    for group in spec.groups:
        if _takes(group, old[group.time], new[group.time]):
            for name in (group.time, *group.columns):
                out[name] = new[name]
    for name in spec.kept:
        if out[name] is None:
            out[name] = new[name]
    if spec.status is not None and DISPUTE_STATUSES[new[spec.status]] > DISPUTE_STATUSES[old[spec.status]]:
        out[spec.status] = new[spec.status]
    if spec.latest is not None and new[spec.latest] > old[spec.latest]:
        out[spec.latest] = new[spec.latest]
    return out


def _set_clause(spec: _Spec, stmt: Any) -> dict[str, Any]:
    new, old = stmt.excluded, spec.table.c
    set_: dict[str, Any] = {}
    for group in spec.groups:
        t_new, t_old = new[group.time], old[group.time]
        before_or_after = t_new < t_old if group.earliest else t_new > t_old
        takes = and_(t_new.is_not(None), (t_old.is_(None) | before_or_after))
        for name in (group.time, *group.columns):
            set_[name] = case((takes, new[name]), else_=old[name])
    for name in spec.kept:
        set_[name] = func.coalesce(old[name], new[name])
    if spec.status is not None:
        forward = _rank(new[spec.status]) > _rank(old[spec.status])
        set_[spec.status] = case((forward, new[spec.status]), else_=old[spec.status])
    if spec.latest is not None:
        newer = new[spec.latest] > old[spec.latest]
        set_[spec.latest] = case((newer, new[spec.latest]), else_=old[spec.latest])
    return set_


def _rank(column: Any) -> ColumnElement[int]:
    return case(DISPUTE_STATUSES, value=column, else_=0)


def _on_conflict(spec: _Spec) -> Callable[[Any], Any]:
    def on_conflict(stmt: Any) -> Any:
        return stmt.on_conflict_do_update(index_elements=[spec.key], set_=_set_clause(spec, stmt))

    return on_conflict


# Module-level, built once: bulk.py remembers statements by this function.
_MERGE_FILE_REVIEWS = _on_conflict(_FILE_REVIEWS)
_MERGE_DISPUTES = _on_conflict(_DISPUTES)
_MERGE_INSPECTIONS = _on_conflict(_INSPECTIONS)


def _lengths(table: Table) -> tuple[tuple[str, int], ...]:
    return tuple(
        (c.name, c.type.length) for c in table.c if isinstance(c.type, String) and c.type.length is not None
    )


_LENGTHS = {t.name: _lengths(t) for t in (file_reviews, disputes, inspections)}


def _blank(table: Table) -> Row:
    return {c.name: None for c in table.c}


def _fitted(table: Table, row: Row) -> Row:
    """Free text longer than its column is cut: one long batch label must not stop the projector."""
    for name, length in _LENGTHS[table.name]:
        value = row[name]
        if isinstance(value, str) and len(value) > length:
            row[name] = value[:length]
    return row


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) else None


def _file_review(event: Envelope) -> Row:
    d = event.data
    problems = d.get("problems")
    return {
        "review_id": event.subject,
        "reviewed_unit": d["reviewed_unit"],
        "township": _text(d, "township"),
        "score": int(d["score"]),
        "passed": bool(d["passed"]),
        "reviewing_body": _text(d, "reviewing_body"),
        "review_batch": _text(d, "review_batch"),
        "case_id": _text(d, "case_id"),
        "case_number": _text(d, "case_number"),
        "problems": len(problems) if isinstance(problems, list) else 0,
        "scored_at": event.time,
    }


def _dispute(event: Envelope, status: str) -> Row:
    d, at = event.data, event.time
    row = _blank(disputes)
    row.update(dispute_id=event.subject, status=status, case_id=_text(d, "case_id"), last_event_at=at)
    if status == "raised":
        units = d.get("units")
        row.update(
            township=_text(d, "township"),
            matter=_text(d, "matter"),
            units=json.dumps(list(units), ensure_ascii=False) if isinstance(units, list) else None,
            raised_at=at,
        )
    elif status == "referred":
        row.update(referred_to=_text(d, "referred_to"), referred_at=at)
    elif status == "decided":
        row.update(responsible_unit=_text(d, "responsible_unit"), basis=_text(d, "basis"), decided_at=at)
    else:
        row.update(
            list_entry_id=_text(d, "list_entry_id"),
            matter_category=_text(d, "matter_category"),
            listed_at=at,
        )
    return row


def _inspection(event: Envelope, tasked: bool) -> Row:
    d = event.data
    row = _blank(inspections)
    row["subject"] = event.subject
    if tasked:
        row.update(
            inspecting_unit=_text(d, "inspecting_unit"),
            township=_text(d, "township"),
            business_key=business_key(d.get("business_credit_code"), d.get("business_name")),
            business_name=_text(d, "business_name"),
            tasked_at=event.time,
        )
    else:
        row.update(completed_at=event.time, finding=_text(d, "finding"))
    return row


# (area, event name) -> the table's spec and the row an event gives.
_HANDLERS: Mapping[tuple[str, str], tuple[_Spec, Callable[[Envelope], Row]]] = {
    ("file_review", "scored"): (_FILE_REVIEWS, _file_review),
    **{("dispute", s): (_DISPUTES, partial(_dispute, status=s)) for s in DISPUTE_STATUSES},
    ("linkage", "inspection_tasked"): (_INSPECTIONS, partial(_inspection, tasked=True)),
    ("linkage", "inspection_completed"): (_INSPECTIONS, partial(_inspection, tasked=False)),
}
_MERGES = {
    file_reviews.name: _MERGE_FILE_REVIEWS,
    disputes.name: _MERGE_DISPUTES,
    inspections.name: _MERGE_INSPECTIONS,
}


def _area_and_name(event_type: str) -> tuple[str, str] | None:
    if not event_type.startswith(TYPE_PREFIX):
        return None
    pieces = event_type[len(TYPE_PREFIX) :].split(".")
    return (pieces[0], pieces[1]) if len(pieces) == 3 else None


def fold(events: Sequence[Envelope]) -> dict[str, dict[str, Row]]:
    """Table name -> key -> the batch's merged row (pure)."""
    out: dict[str, dict[str, Row]] = {}
    for event in events:
        parts = _area_and_name(event.type)
        handler = _HANDLERS.get(parts) if parts else None
        if handler is None:
            continue
        spec, make = handler
        row = _fitted(spec.table, make(event))
        rows = out.setdefault(spec.table.name, {})
        key = row[spec.key]
        held = rows.get(key)
        rows[key] = row if held is None else _combine(spec, held, row)
    return out


class AnalysisProjection:
    """File reviews, disputes and inspections; runs before the anomalies, which read inspections."""

    name = "analysis"
    tables = ("file_reviews", "disputes", "inspections")  # what `liandong projections rebuild` swaps
    tables = ("file_reviews", "disputes", "inspections")  # what `liandong projections rebuild` swaps

    def handles(self, event_type: str) -> bool:
        parts = _area_and_name(event_type)
        return parts is not None and parts in _HANDLERS

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        changes = fold([p.event for p in events])
        rows = changes.get(inspections.name)
        if rows:
            await _lock_businesses(conn, {r["business_key"] for r in rows.values() if r["business_key"]})
        for table in (file_reviews, disputes, inspections):
            batch = changes.get(table.name)
            if batch:
                await merge(conn, table, list(batch.values()), _MERGES[table.name])


_LOCK = text(
    # The keys come sorted, and unnest keeps their order.
    "SELECT count(pg_advisory_xact_lock(:space, hashtext(k))) FROM unnest(:keys) AS k"
).bindparams(bindparam("keys", type_=ARRAY(Text)), bindparam("space", type_=Integer))


async def _lock_businesses(conn: AsyncConnection, keys: set[str]) -> None:
    """Serialise the inspections of one business across workers until commit.

    The repeat-inspection check reads the other inspections of the business in the same
    transaction. Two workers inserting two inspections of one business at once would each miss the
    other's uncommitted row; with the lock, the second waits and then sees the first. In key order,
    so that two batches never wait for each other. SQLite has one writer at a time already.
    """
    if not keys or not is_postgresql(conn):
        return
    await conn.execute(_LOCK, {"space": _INSPECTION_LOCKS, "keys": sorted(keys)})

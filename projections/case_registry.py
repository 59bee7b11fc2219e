"""The case registry: one row per case with its furthest stage, and the ids of its events.

`apply` is pure. Stages only move forward by rank, so events that arrive out of order
(closed before filed) converge to the same row as events in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.envelope import Envelope

STAGES: Mapping[str, tuple[str, int]] = {
    "cn.gov.liandong.case.filed.v1": ("filed", 1),
    "cn.gov.liandong.case.decided.v1": ("decided", 2),
    "cn.gov.liandong.case.closed.v1": ("closed", 3),
}

# Columns that an event may set; a later batch only fills what is still empty.
SETTABLE = (
    "township",
    "category",
    "handling_unit",
    "title",
    "case_number",
    "requires_legal_review",
    "outcome",
    "fine_amount_fen",
    "filed_at",
    "decided_at",
    "closed_at",
)


@dataclass(frozen=True, slots=True)
class CaseChange:
    case_id: str
    stage: str
    stage_rank: int
    last_event_at: datetime
    event_count: int
    values: Mapping[str, Any]

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {name: self.values.get(name) for name in SETTABLE}
        row.update(
            case_id=self.case_id,
            stage=self.stage,
            stage_rank=self.stage_rank,
            last_event_at=self.last_event_at,
            event_count=self.event_count,
        )
        return row


def handles(event_type: str) -> bool:
    return event_type in STAGES


def apply(event: Envelope) -> CaseChange:
    stage, rank = STAGES[event.type]
    data = event.data
    values: dict[str, Any]
    if stage == "filed":
        values = {
            "township": data["township"],
            "category": data["category"],
            "handling_unit": data["handling_unit"],
            "title": data["title"],
            "case_number": data.get("case_number"),
            "requires_legal_review": data.get("requires_legal_review", False),
            "filed_at": event.time,
        }
    elif stage == "decided":
        values = {
            "outcome": data["outcome"],
            "fine_amount_fen": data.get("fine_amount_fen"),
            "decided_at": event.time,
        }
    else:
        values = {"closed_at": event.time}
    return CaseChange(event.subject, stage, rank, event.time, 1, values)


def merge(old: CaseChange, new: CaseChange) -> CaseChange:
    forward = new.stage_rank > old.stage_rank
    values = dict(old.values)
    for name, value in new.values.items():
        if values.get(name) is None:
            values[name] = value
    return CaseChange(
        case_id=old.case_id,
        stage=new.stage if forward else old.stage,
        stage_rank=max(old.stage_rank, new.stage_rank),
        last_event_at=max(old.last_event_at, new.last_event_at),
        event_count=old.event_count + new.event_count,
        values=values,
    )


def fold(events: Iterable[Envelope]) -> dict[str, CaseChange]:
    """One change per case for a whole batch, so the database sees one upsert row per case."""
    changes: dict[str, CaseChange] = {}
    for event in events:
        change = apply(event)
        previous = changes.get(change.case_id)
        changes[change.case_id] = change if previous is None else merge(previous, change)
    return changes

"""The case registry: one row per case with its furthest stage and its key facts.

`apply` is pure. Stages only move forward by rank, and set columns keep their first value, so
events that arrive out of order (closed before filed) converge to the same row as events in order.
Events that do not move a case along (publication, reconsideration, lawsuits) only count; the first
reconsideration's filing time and result are kept for the yearly figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.envelope import TYPE_PREFIX, Envelope

AREA_PREFIX = TYPE_PREFIX + "case."

# Stage names and their order along the procedure of the Administrative Penalty Law.
STAGE_RANKS: Mapping[str, int] = {
    "lead": 1,
    "filed": 2,
    "investigating": 3,
    "legal_review": 4,
    "notified": 5,
    "decided": 6,
    "served": 7,
    "executing": 8,
    "closed": 9,
    "archived": 10,
}

EVENT_STAGES: Mapping[str, str] = {
    "lead_received": "lead",
    "filed": "filed",
    "evidence_preserved": "investigating",
    "evidence_disposed": "investigating",
    "investigation_completed": "investigating",
    "decision_deadline_extended": "investigating",
    "legal_review_requested": "legal_review",
    "legal_review_completed": "legal_review",
    "advance_notice_served": "notified",
    "statement_made": "notified",
    "hearing_requested": "notified",
    "hearing_scheduled": "notified",
    "hearing_held": "notified",
    "decided": "decided",
    "decision_served": "served",
    "executed": "executing",
    "late_fee_assessed": "executing",
    "court_enforcement_applied": "executing",
    "not_filed": "closed",
    "closed": "closed",
    "archived": "archived",
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
    "reconsideration_filed_at",
    "reconsideration_result",
)


@dataclass(frozen=True, slots=True)
class CaseChange:
    case_id: str
    stage: str | None
    stage_rank: int
    last_event_at: datetime
    event_count: int
    values: Mapping[str, Any]

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {name: self.values.get(name) for name in SETTABLE}
        row.update(
            case_id=self.case_id,
            # A case known only from events that do not move it keeps the lowest stage name.
            stage=self.stage or "lead",
            stage_rank=self.stage_rank,
            last_event_at=self.last_event_at,
            event_count=self.event_count,
        )
        return row


def handles(event_type: str) -> bool:
    return event_type.startswith(AREA_PREFIX)


def _values(name: str, data: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    if name in ("lead_received", "not_filed"):
        return {k: data.get(k) for k in ("township", "category", "handling_unit")}
    if name == "filed":
        return {
            "township": data["township"],
            "category": data["category"],
            "handling_unit": data["handling_unit"],
            "title": data["title"],
            "case_number": data.get("case_number"),
            "requires_legal_review": data.get("requires_legal_review", False),
            "filed_at": at,
        }
    if name == "decided":
        fines = [
            p["amount_fen"]
            for p in data.get("penalties", [])
            if p.get("kind") == "fine" and p.get("amount_fen") is not None
        ]
        return {
            "outcome": data["outcome"],
            "fine_amount_fen": sum(fines) if fines else None,
            "decided_at": at,
            # Art. 58: a decision that says the case is major makes it one.
            "requires_legal_review": True if data.get("major_case") else None,
        }
    if name == "closed":
        return {"closed_at": at}
    if name == "reconsideration_filed":
        return {"reconsideration_filed_at": at}
    if name == "reconsideration_decided":
        return {"reconsideration_result": data["result"]}
    return {}


def apply(event: Envelope) -> CaseChange:
    name = event.event_name
    stage = EVENT_STAGES.get(name)
    return CaseChange(
        case_id=event.subject,
        stage=stage,
        stage_rank=STAGE_RANKS[stage] if stage else 0,
        last_event_at=event.time,
        event_count=1,
        values=_values(name, event.data, event.time),
    )


def merge(old: CaseChange, new: CaseChange) -> CaseChange:
    forward = new.stage_rank > old.stage_rank
    values = dict(old.values)
    for name, value in new.values.items():
        if name == "requires_legal_review" and value is True:
            values[name] = True
        elif values.get(name) is None:
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

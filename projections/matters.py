"""Coordination matters (transfers, assistance, consultations, …): one row per subject per area.

Pure. A matter is open from its opening event until a closing receipt, and open again after a
reopening event that is later than the close. Times merge by min/max, so arrival order does not
matter; the parties are every unit named by the lifecycle's party fields, and every publisher.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from events.envelope import Envelope
from events.mechanisms import Step
from projections.steps import Lifecycles


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass(slots=True)
class MatterChange:
    subject_id: str
    area: str
    township: str | None
    case_id: str | None
    initiator: str | None
    opened_at: datetime | None
    closed_at: datetime | None
    reopened_at: datetime | None
    last_event_at: datetime
    last_event_type: str
    event_count: int
    parties: set[str] = field(default_factory=set)

    def as_row(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "area": self.area,
            "township": self.township,
            "case_id": self.case_id,
            "initiator": self.initiator,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "reopened_at": self.reopened_at,
            "last_event_at": self.last_event_at,
            "last_event_type": self.last_event_type,
            "event_count": self.event_count,
        }


def is_open(opened_at: datetime | None, closed_at: datetime | None, reopened_at: datetime | None) -> bool:
    """Open until a closing receipt; a reopening later than the close opens it again."""
    if closed_at is None:
        return True
    return reopened_at is not None and reopened_at > closed_at


def _parties(step: Step, event: Envelope) -> set[str]:
    units = {event.source}
    for name in step.parties:
        value = event.data.get(name)
        if isinstance(value, str):
            units.add(value)
        elif isinstance(value, list):
            units.update(v for v in value if isinstance(v, str))
    return units


def apply(event: Envelope, step: Step) -> MatterChange:
    township = event.data.get("township")
    case_id = event.data.get("case_id")
    return MatterChange(
        subject_id=event.subject,
        area=event.area,
        township=township if isinstance(township, str) else None,
        case_id=case_id if isinstance(case_id, str) else None,
        initiator=event.source if step.opens else None,
        opened_at=event.time if step.opens else None,
        closed_at=event.time if step.closes else None,
        reopened_at=event.time if step.reopens else None,
        last_event_at=event.time,
        last_event_type=event.type,
        event_count=1,
        parties=_parties(step, event),
    )


def merge(old: MatterChange, new: MatterChange) -> MatterChange:
    newer = new.last_event_at > old.last_event_at
    return MatterChange(
        subject_id=old.subject_id,
        area=old.area,
        township=old.township or new.township,
        case_id=old.case_id or new.case_id,
        initiator=old.initiator or new.initiator,
        opened_at=_earlier(old.opened_at, new.opened_at),
        closed_at=_later(old.closed_at, new.closed_at),
        reopened_at=_later(old.reopened_at, new.reopened_at),
        last_event_at=new.last_event_at if newer else old.last_event_at,
        last_event_type=new.last_event_type if newer else old.last_event_type,
        event_count=old.event_count + new.event_count,
        parties=old.parties | new.parties,
    )


def fold(events: Iterable[Envelope], mechanisms: Lifecycles) -> dict[tuple[str, str], MatterChange]:
    changes: dict[tuple[str, str], MatterChange] = {}
    for event in events:
        step = mechanisms.step(event.type)
        if step is None or not mechanisms.areas[step.area].matter:
            continue
        change = apply(event, step)
        key = (change.area, change.subject_id)
        previous = changes.get(key)
        changes[key] = change if previous is None else merge(previous, change)
    return changes

"""Facts are kept, anomalies are flagged (pure).

An event that breaks the lifecycle order (a decision for a case with no filing) is still a fact:
it happened in the agency's system. It is stored, and an anomaly names it. These anomalies are
derived from a subject's whole history by occurrence time, so the open set does not depend on how
the events were batched or in which order they arrived.

Repeat inspections compare inspections of one business across subjects (`repeat_inspections`);
spikes and silences of a township's case flow come from a periodic sweep (`case_flow.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from projections.steps import Lifecycles

_NAMESPACE = uuid.UUID("7b1f3c52-9d0e-4d43-a6a1-5a8f0c2e9b11")
CST = timezone(timedelta(hours=8))

# Categories
DATA_QUALITY = "data_quality"
THREE_SYSTEMS = "three_systems"
RISK = "risk"
FLOW = "flow"

# Kinds
OUT_OF_ORDER = "out_of_order"
LEGAL_REVIEW_MISSING = "legal_review_missing"
REPEAT_INSPECTION = "repeat_inspection"
CASE_FLOW_SPIKE = "case_flow_spike"
CASE_FLOW_SILENCE = "case_flow_silence"
# Re-derived from each touched subject's history: a batch resolves those it no longer finds.
HISTORY_KINDS = (OUT_OF_ORDER, LEGAL_REVIEW_MISSING)

# Two inspections of one business by different units this close (event time, either side) repeat.
REPEAT_INSPECTION_WINDOW = timedelta(days=30)


class HistoryEntry(NamedTuple):
    """A tuple, not a dataclass: a batch reads the whole history of every subject it touches."""

    event_id: str
    type: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Anomaly:
    anomaly_id: str
    subject: str
    area: str
    kind: str
    category: str
    event_id: str
    event_type: str
    occurred_at: datetime
    detail: str
    township: str | None = None


def anomaly_id(kind: str, event_id: str) -> str:
    """Deterministic: the same finding, detected again, is the same row."""
    return uuid.uuid5(_NAMESPACE, f"{kind}|{event_id}").hex


class Inspection(NamedTuple):
    """An `inspections` row, as the repeat check reads it."""

    subject: str
    inspecting_unit: str
    township: str | None
    business_key: str
    business_name: str | None
    tasked_at: datetime


@dataclass(frozen=True, slots=True)
class RepeatPair:
    earlier: Inspection
    later: Inspection

    @property
    def anomaly_id(self) -> str:
        first, second = sorted((self.earlier.subject, self.later.subject))
        return anomaly_id(REPEAT_INSPECTION, f"{first}|{second}")


def repeat_inspections(tasked: Iterable[Inspection], known: Iterable[Inspection]) -> list[RepeatPair]:
    """Pairs of a newly tasked inspection with a known one of the same business, by a different
    unit, tasked within the window either side; each pair once, ordered by tasking time."""
    by_business: dict[str, list[Inspection]] = {}
    for row in known:
        by_business.setdefault(row.business_key, []).append(row)
    pairs: dict[str, RepeatPair] = {}
    for new in tasked:
        for other in by_business.get(new.business_key, ()):
            if other.subject == new.subject or other.inspecting_unit == new.inspecting_unit:
                continue
            if abs(other.tasked_at - new.tasked_at) > REPEAT_INSPECTION_WINDOW:
                continue
            earlier, later = sorted((new, other), key=lambda r: (r.tasked_at, r.subject))
            pair = RepeatPair(earlier, later)
            pairs.setdefault(pair.anomaly_id, pair)
    return sorted(pairs.values(), key=lambda p: (p.later.tasked_at, p.later.subject, p.earlier.subject))


def repeat_detail(pair: RepeatPair) -> str:
    """Chinese first, English second: the business, both units, both dates (China time)."""
    a, b = pair.earlier, pair.later
    name = b.business_name or a.business_name
    code = b.business_key.removeprefix("uscc:") if b.business_key.startswith("uscc:") else None
    zh_business = f"「{name}」" if name else "经营者"
    en_business = f"'{name}'" if name else "a business"
    if code:
        zh_business += f"（统一社会信用代码 {code}）"
        en_business += f" (credit code {code})"
    da, db = f"{a.tasked_at.astimezone(CST):%Y-%m-%d}", f"{b.tasked_at.astimezone(CST):%Y-%m-%d}"
    return (
        f"同一经营者{zh_business}30日内被不同单位重复检查：{a.inspecting_unit}（{da}，{a.subject}）、"
        f"{b.inspecting_unit}（{db}，{b.subject}） | The same business, {en_business}, inspected by "
        f"different units within 30 days: {a.inspecting_unit} on {da} ({a.subject}) and "
        f"{b.inspecting_unit} on {db} ({b.subject})"
    )


def detect(
    area: str, subject: str, history: Sequence[HistoryEntry], major_case: bool, mechanisms: Lifecycles
) -> list[Anomaly]:
    steps = [mechanisms.step(entry.type) for entry in history]
    # A requirement is met when one of the required steps occurred at or before the entry: the
    # earliest occurrence of each step is all that needs comparing.
    earliest: dict[str, datetime] = {}
    for entry, step in zip(history, steps, strict=True):
        if step is not None:
            at = earliest.get(step.event)
            if at is None or entry.occurred_at < at:
                earliest[step.event] = entry.occurred_at
    found: list[Anomaly] = []
    for entry, step in zip(history, steps, strict=True):
        if step is None:
            continue
        checks = [(OUT_OF_ORDER, DATA_QUALITY, step.requires)]
        if major_case:
            checks.append((LEGAL_REVIEW_MISSING, THREE_SYSTEMS, step.requires_if_major))
        for kind, category, required in checks:
            if not required:
                continue
            if any((at := earliest.get(name)) is not None and at <= entry.occurred_at for name in required):
                continue
            found.append(
                Anomaly(
                    anomaly_id=anomaly_id(kind, entry.event_id),
                    subject=subject,
                    area=area,
                    kind=kind,
                    category=category,
                    event_id=entry.event_id,
                    event_type=entry.type,
                    occurred_at=entry.occurred_at,
                    detail=f"{area}.{step.event} without an earlier {' or '.join(required)}",
                )
            )
    return found

"""Facts are kept, anomalies are flagged (pure).

An event that breaks the lifecycle order (a decision for a case with no filing) is still a fact:
it happened in the agency's system. It is stored, and an anomaly names it. Anomalies are derived
from a subject's whole history by occurrence time, so the open set does not depend on how the
events were batched or in which order they arrived.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from projections.steps import Lifecycles

_NAMESPACE = uuid.UUID("7b1f3c52-9d0e-4d43-a6a1-5a8f0c2e9b11")

DATA_QUALITY = "data_quality"
THREE_SYSTEMS = "three_systems"


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


def anomaly_id(kind: str, event_id: str) -> str:
    return uuid.uuid5(_NAMESPACE, f"{kind}|{event_id}").hex


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
        checks = [("out_of_order", DATA_QUALITY, step.requires)]
        if major_case:
            checks.append(("legal_review_missing", THREE_SYSTEMS, step.requires_if_major))
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

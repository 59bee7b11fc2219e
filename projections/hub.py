"""The hub's projections, in the order one batch applies them."""

from __future__ import annotations

from events.mechanisms import Mechanisms
from projections.anomaly_store import AnomalyProjection
from projections.case_store import CaseRegistryProjection
from projections.directory_store import DirectoryProjection
from projections.matter_store import MattersProjection
from projections.runtime import Projection


def hub_projections(mechanisms: Mechanisms) -> list[Projection]:
    # Anomalies read what the case registry wrote earlier in the same transaction.
    return [
        CaseRegistryProjection(),
        MattersProjection(mechanisms),
        DirectoryProjection(),
        AnomalyProjection(mechanisms),
    ]

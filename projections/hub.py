"""The hub's projections, in the order one batch applies them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from events.clock_rules import ClockRules
from events.mechanisms import Mechanisms
from projections.alert_store import AlertProjection
from projections.analysis_store import AnalysisProjection
from projections.anomaly_store import AnomalyProjection
from projections.archive_store import ArchiveProjection
from projections.case_store import CaseRegistryProjection
from projections.clock_store import ClockProjection, ClockSettings
from projections.clocks import Calendar
from projections.directory_store import DirectoryProjection
from projections.matter_store import MattersProjection
from projections.runtime import Projection


def hub_projections(
    mechanisms: Mechanisms,
    clock_rules: ClockRules,
    calendar: Calendar,
    clock_settings: ClockSettings,
    now: Callable[[], datetime] | None = None,
    webhook_targets: Mapping[str, Sequence[str]] | None = None,
    master_key: bytes | None = None,
) -> list[Projection]:
    # Anomalies and clocks read what the case registry wrote earlier in the same transaction;
    # anomalies also read the matters (townships) and the analysis projection's inspections.
    # The archive comes last: its head row serialises every batch of every worker, so it is locked
    # only once everything else of the batch is written. `master_key` None: the one in hub_meta.
    return [
        CaseRegistryProjection(),
        MattersProjection(mechanisms),
        DirectoryProjection(),
        AnalysisProjection(),
        AnomalyProjection(mechanisms, now),
        ClockProjection(clock_rules, calendar, clock_settings, now),
        AlertProjection(webhook_targets),
        ArchiveProjection(master_key=master_key, now=now),
    ]

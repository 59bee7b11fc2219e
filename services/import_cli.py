"""`liandong import FILE --source UNIT`: publish a spreadsheet case list as `case.filed.v1` events.

Exit codes: 0 every row published; 1 some rows refused (see the report); 2 the file or the command
cannot be used (nothing, or nothing more, was published); 3 the broker stopped acknowledging (run
the same command again to resume).
"""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from connectors.framework import ConnectorMetrics, Health, dead_letter
from connectors.kafka.publisher import BrokerUnavailable, KafkaPublisher
from connectors.sdk import InvalidEvent, LiandongClient
from connectors.spreadsheet.importer import CONNECTOR, CaseClient, ImportOptions, run
from connectors.spreadsheet.mapping import ColumnMapping
from connectors.spreadsheet.reader import MAX_BYTES, MAX_ROWS, SpreadsheetError
from events.directory import Directory
from services.connectors_registry import record_run
from services.settings import Settings, SettingsError
from services.store import with_engine


def default_report_path(path: Path) -> Path:
    return path.with_name(path.stem + ".import-report.csv")


def state_path_for(report_path: Path, state_dir: Path | None) -> Path:
    return (state_dir or report_path.parent) / (report_path.stem + ".state.json")


def run_import(
    settings: Settings,
    path: Path,
    unit: str,
    report_path: Path | None = None,
    *,
    restart: bool = False,
    state_dir: Path | None = None,
    max_bytes: int = MAX_BYTES,
    max_rows: int = MAX_ROWS,
    show_progress: bool = True,
) -> int:
    import asyncio

    if settings.kafka_bootstrap is None:
        raise SettingsError("LIANDONG_KAFKA_BOOTSTRAP is required for `liandong import`")
    report = report_path or default_report_path(path)
    options = ImportOptions(
        path=path,
        unit=unit,
        report_path=report,
        state_path=state_path_for(report, state_dir),
        restart=restart,
        max_bytes=max_bytes,
        max_rows=max_rows,
        progress=sys.stderr if show_progress else None,
    )
    health = Health(CONNECTOR, "inbound")
    code = asyncio.run(
        import_file(settings.kafka_bootstrap, options, partitions=settings.topic_partitions, health=health)
    )
    if health.last_run_at is not None:
        asyncio.run(with_engine(settings, lambda engine: record_run(engine, health, unit, path.name)))
    return code


async def import_file(
    bootstrap: str,
    options: ImportOptions,
    *,
    client: CaseClient | None = None,
    partitions: int = 6,
    health: Health | None = None,
    registry: CollectorRegistry | None = None,
) -> int:
    """The command's body: open the client, run the import, print the outcome; returns the exit code."""
    directory = Directory.load()
    health = health or Health(CONNECTOR, "inbound")
    metrics = ConnectorMetrics.create(registry or CollectorRegistry())
    try:
        mapping = ColumnMapping.load(directory)
        sdk = LiandongClient(bootstrap, options.unit, directory=directory, partitions=partitions)
    except InvalidEvent as exc:
        print(f"未知单位 unknown unit: {exc} (see events/directory/units.json)", file=sys.stderr)
        return 2
    dlq = KafkaPublisher(bootstrap, client_id=f"liandong-import-dlq-{options.unit}", partitions=partitions)

    async def to_dead_letters(original: bytes, reason: str, detail: str, key: bytes) -> None:
        await dead_letter(dlq, CONNECTOR, original, reason, detail, key)

    try:
        async with sdk:
            result = await run(options, client or sdk, mapping, health, to_dead_letters)
    except SpreadsheetError as exc:
        health.ran(False, str(exc))
        print(f"导入失败 import refused: {exc}", file=sys.stderr)
        return 2
    except BrokerUnavailable as exc:
        health.ran(False, str(exc))
        print(
            f"消息服务不可用 broker unavailable: {exc}; run the same command again to resume", file=sys.stderr
        )
        return 3
    finally:
        await dlq.close()
        for outcome, n in health.counts.items():
            metrics.count(CONNECTOR, outcome, n)
    counts = health.counts
    health.ran(True, f"{counts['published']} published, {counts['rejected']} rejected")
    print(
        f"{options.path.name}: {result.rows} rows, {counts['published']} published, "
        f"{counts['rejected']} rejected, {result.skipped} skipped "
        f"(resumed after row {result.resumed_after}), "
        f"{counts['retried']} retried; report: {options.report_path}",
        file=sys.stderr,
    )
    return 1 if counts["rejected"] else 0

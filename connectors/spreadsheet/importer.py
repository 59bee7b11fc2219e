"""One import run: rows → validated `case.filed.v1` events → acknowledged batches, resumable.

Re-running is safe: each event id comes from the unit and the case id (`record_id`), never from
the row's position, so the hub keeps a re-published event once. After every acknowledged batch the
state file records the last row number handled; the next run skips rows up to it.

Every row's event is checked against the directory's grants (`events/grants.py`) as the importing
unit, whatever client built it: a row the unit may not publish (a township outside its
jurisdiction, say) is reported and dead-lettered with the grant's reason, like any bad row.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from connectors.framework import Health, RowProblem, with_retries
from connectors.sdk import InvalidEvent
from connectors.spreadsheet.mapping import ColumnMapping, MappedRow
from connectors.spreadsheet.reader import MAX_BYTES, MAX_ROWS, Row, read_table
from events.envelope import Envelope
from events.grants import Grants

CONNECTOR = "spreadsheet"
REPORT_COLUMNS = ("row", "column", "value", "reason")
INVALID_ROW = "invalid_row"
DeadLetter = Callable[[bytes, str, str, bytes], Awaitable[None]]


class CaseClient(Protocol):
    """The part of `LiandongClient` an import needs."""

    def event(
        self,
        short_type: str,
        *,
        subject: str,
        data: dict[str, Any],
        record_id: str | None = None,
        time: datetime | None = None,
    ) -> Envelope: ...

    async def publish(self, *events: Envelope) -> None: ...


@dataclass(frozen=True, slots=True)
class ImportOptions:
    path: Path
    unit: str
    report_path: Path
    state_path: Path
    restart: bool = False
    batch_size: int = 200
    max_bytes: int = MAX_BYTES
    max_rows: int = MAX_ROWS
    retry_base_delay_s: float = 0.5
    progress: IO[str] | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A row that does not become an event: the dead letter's reason and the report's lines."""

    reason: str
    problems: list[RowProblem]


@dataclass(slots=True)
class ImportResult:
    rows: int = 0
    skipped: int = 0
    resumed_after: int = 0
    problems: list[RowProblem] = field(default_factory=list)


def record_id_for(event_type: str, subject: str) -> str:
    """The file-independent key of a row: the event type and the case id."""
    return f"{event_type}|{subject}"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_state(options: ImportOptions, digest: str) -> int:
    """The last row acknowledged by a previous run of this very file for this unit, else 0."""
    if options.restart or not options.state_path.exists():
        return 0
    try:
        state = json.loads(options.state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    if state.get("sha256") != digest or state.get("unit") != options.unit:
        return 0
    return int(state.get("last_row", 0))


def save_state(options: ImportOptions, digest: str, last_row: int) -> None:
    doc = {"file": options.path.name, "sha256": digest, "unit": options.unit, "last_row": last_row}
    tmp = options.state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    tmp.replace(options.state_path)  # atomic: a crash leaves the old state or the new, never half


class Report:
    """The row-by-row CSV report (UTF-8 with BOM so that Excel opens it); kept across a resume."""

    def __init__(self, path: Path, resumed_after: int) -> None:
        kept: list[list[str]] = []
        if resumed_after and path.exists():
            with path.open(encoding="utf-8-sig", newline="") as old:
                kept = [
                    r
                    for r in list(csv.reader(old))[1:]
                    if r and r[0].isdigit() and int(r[0]) <= resumed_after
                ]
        self._file = path.open("w", encoding="utf-8-sig", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(REPORT_COLUMNS)
        self._writer.writerows(kept)

    def add(self, problem: RowProblem) -> None:
        self._writer.writerow([problem.row, problem.column, problem.value, problem.reason])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Progress:
    def __init__(self, stream: IO[str] | None, total: int, every: int) -> None:
        self._stream, self._total, self._every = stream, max(total, 1), max(every, 1)

    def show(self, done: int, force: bool = False) -> None:
        if self._stream is None or not (force or done % self._every == 0):
            return
        filled = 30 * done // self._total
        self._stream.write(f"\r导入 import [{'#' * filled}{'.' * (30 - filled)}] {done}/{self._total} rows")
        if force:
            self._stream.write("\n")
        self._stream.flush()


async def run(
    options: ImportOptions,
    client: CaseClient,
    mapping: ColumnMapping,
    health: Health,
    dead_letter: DeadLetter,
    grants: Grants | None = None,
) -> ImportResult:
    """Import one file. Raises `SpreadsheetError` before publishing anything if the file is unusable."""
    grants = grants or Grants.load()
    table = read_table(options.path, max_bytes=options.max_bytes, max_rows=options.max_rows)
    columns = mapping.resolve(table.headers)
    digest = file_digest(options.path)
    result = ImportResult(rows=len(table.rows), resumed_after=load_state(options, digest))
    report = Report(options.report_path, result.resumed_after)
    progress = Progress(options.progress, len(table.rows), options.batch_size)
    seen: dict[str, int] = {}
    batch: list[Envelope] = []

    def retried(n: int, exc: BaseException) -> None:
        health.record("retried")

    async def flush(last_row: int) -> None:
        if batch:
            events = tuple(batch)
            await with_retries(
                lambda: client.publish(*events), base_delay_s=options.retry_base_delay_s, on_retry=retried
            )
            health.record("published", len(events))
            batch.clear()
        save_state(options, digest, last_row)

    async def reject(row: Row, problems: list[RowProblem], reason: str) -> None:
        health.record("rejected")
        result.problems.extend(problems)
        for problem in problems:
            report.add(problem)
        original = json.dumps({"row": row.number, "cells": row.cells}, ensure_ascii=False, default=str)
        detail = "; ".join(f"{p.column}: {p.reason}" for p in problems)
        await dead_letter(original.encode(), reason, detail, str(row.number).encode())
        health.record("dead_lettered")

    try:
        for done, row in enumerate(table.rows, start=1):
            key = mapping.key_of(row, columns)
            if row.number <= result.resumed_after:
                seen.setdefault(key, row.number)
                result.skipped += 1
                continue
            health.record("read")
            outcome = _to_event(row, columns, mapping, client, options.unit, grants)
            if isinstance(outcome, Refused):
                await reject(row, outcome.problems, outcome.reason)
            elif key in seen:
                duplicate = RowProblem(
                    row.number, columns["subject"], key, f"重复 duplicate of row {seen[key]}"
                )
                health.record("rejected")
                result.problems.append(duplicate)
                report.add(duplicate)
            else:
                seen[key] = row.number
                batch.append(outcome)
            if len(batch) >= options.batch_size:
                await flush(row.number)
            progress.show(done)
        await flush(table.rows[-1].number if table.rows else 0)
        progress.show(len(table.rows), force=True)
    finally:
        report.close()
    return result


def _to_event(
    row: Row, columns: dict[str, str], mapping: ColumnMapping, client: CaseClient, unit: str, grants: Grants
) -> Envelope | Refused:
    mapped = mapping.map_row(row, columns, unit)
    if not isinstance(mapped, MappedRow):
        return Refused(INVALID_ROW, mapped)
    try:
        event = client.event(
            mapping.event_type,
            subject=mapped.subject,
            data=mapped.data,
            record_id=record_id_for(mapping.event_type, mapped.subject),
            time=mapped.time,
        )
    except InvalidEvent as exc:
        if exc.reason == "invalid_event":
            return Refused(INVALID_ROW, [_problem(row, columns, f, r) for f, r in exc.problems])
        return Refused(exc.reason, [_problem(row, columns, f, _not_granted(r)) for f, r in exc.problems])
    # The client may be any `CaseClient`: the importer does not rely on it to apply the grants.
    refusal = grants.check(event, publisher=unit)
    if refusal is not None:
        return Refused(refusal.reason, [_problem(row, columns, refusal.field, _not_granted(refusal.detail))])
    return event


def _not_granted(detail: str) -> str:
    return f"无权发布 not granted: {detail}"


def _problem(row: Row, columns: dict[str, str], problem_field: str, reason: str) -> RowProblem:
    header = columns.get(problem_field.removeprefix("data."), problem_field)
    return RowProblem(row.number, header, _value(row, columns, problem_field), reason)


def _value(row: Row, columns: dict[str, str], problem_field: str) -> str:
    header = columns.get(problem_field.removeprefix("data."))
    value = row.cells.get(header) if header else None
    return "" if value is None else str(value)

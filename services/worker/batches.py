"""Run one batch to completion: transient failures are retried, a poison record is set aside.

The stream's batch helper acknowledges a batch once control returns to it, even by an exception.
So a batch returns only when each of its records is either applied or set aside on the dead-letter
topic with its checkpoint moved past it; otherwise the process exits without acknowledging, and
the batch is redelivered to the next worker.

- **Transient failures** (the database or the broker unreachable, a connection lost mid-batch, a
  database starting up or shutting down, a serialization failure or deadlock) are retried with
  capped exponential backoff, as long as they last: when PostgreSQL comes back, the same batch goes
  on and no one has to restart the worker.
- **A poison record** (one whose data makes a projection or the database refuse it) must not block
  its partition forever. A failing batch is split in halves, each run in its own transaction, down
  to the single records that fail; those go to the dead-letter topic with reason
  `projection_failed` (`Projector.set_aside`), the rest is applied. Halves that succeed commit as
  any batch does: a poison record costs its batch about three times the work, once
  (docs/reliability.md).
- **A systemic failure** (a broken deployment: every record fails) is not dead-lettered wholesale.
  After `PoisonPolicy.max_consecutive` records set aside without one success in between, the
  process exits (70) without acknowledging; what was set aside can be replayed after the fix
  (`liandong deadletter replay --reason projection_failed`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from connectors.kafka.publisher import BrokerUnavailable
from projections.runtime import BatchResult, Projector, SourceRecord, correlation

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    BrokerUnavailable,
    OSError,
    TimeoutError,
    ConnectionError,
)
# SQLSTATEs that say "the server, not this batch": connection exceptions (08), insufficient resources
# (53), system errors (58), shutdown / starting up (57P01-03), serialization failure and deadlock,
# a lock not available, and a read-only transaction (a standby, during a fail-over).
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "58")
TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01", "55P03", "25006"})
POISON_REASON = "projection_failed"
EXIT_UNRECOVERABLE = 70
FIRST_DELAY_S = 0.5
# The longest wait between retries is also the longest a recovered database waits for the worker.
MAX_DELAY_S = 5.0


@dataclass(slots=True)
class PoisonPolicy:
    """How many records in a row may be set aside before the failure counts as systemic.

    Keep one per projector, across batches: live traffic comes in batches of one record, and a
    fresh policy per batch would never see a run of failures."""

    max_consecutive: int = 10
    consecutive: int = 0

    def applied(self) -> None:
        self.consecutive = 0

    def allow(self) -> bool:
        """Count one more record to set aside; False once the run is too long to be poison."""
        self.consecutive += 1
        return self.consecutive <= self.max_consecutive


async def run_batch(
    projector: Projector,
    records: Sequence[SourceRecord],
    on_retry: Callable[[], None] | None = None,
    policy: PoisonPolicy | None = None,
) -> BatchResult:
    return await _run(projector, records, on_retry, policy or PoisonPolicy(), 0)


async def _run(
    projector: Projector,
    records: Sequence[SourceRecord],
    on_retry: Callable[[], None] | None,
    policy: PoisonPolicy,
    depth: int,
) -> BatchResult:
    delay = FIRST_DELAY_S
    while True:
        try:
            result = await projector.process(records)
        except Exception as exc:
            if not is_transient(exc):
                return await _isolate(projector, records, exc, on_retry, policy, depth)
            _log_retry(records, exc, delay)
        else:
            policy.applied()
            return result
        if on_retry is not None:
            on_retry()
        await asyncio.sleep(delay)  # backoff between retries of a failing dependency
        delay = min(delay * 2, MAX_DELAY_S)


async def _isolate(
    projector: Projector,
    records: Sequence[SourceRecord],
    exc: Exception,
    on_retry: Callable[[], None] | None,
    policy: PoisonPolicy,
    depth: int,
) -> BatchResult:
    """Find the records of a failed batch that fail on their own; set them aside, apply the rest."""
    if len(records) == 1:
        return await _set_aside(projector, records[0], exc, policy)
    # Each partition's records in offset order, so that the first half of a partition commits
    # before the second: a checkpoint must never pass a record that has not been handled.
    ordered = sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    middle = len(ordered) // 2
    # The first split is news; the ones below it narrow the search (about log2 of the batch).
    log.log(
        logging.WARNING if depth == 0 else logging.DEBUG,
        "batch of %d records from %s[%d]@%d failed (%s); splitting it to find the record",
        len(ordered),
        ordered[0].topic,
        ordered[0].partition,
        ordered[0].offset,
        describe(exc),
    )
    first = await _run(projector, ordered[:middle], on_retry, policy, depth + 1)
    second = await _run(projector, ordered[middle:], on_retry, policy, depth + 1)
    return _merged(first, second)


async def _set_aside(
    projector: Projector, record: SourceRecord, exc: Exception, policy: PoisonPolicy
) -> BatchResult:
    if not policy.allow():
        _die(record, exc, policy.max_consecutive)
    # Only the kind of error goes to the log: a database message can quote the record's values.
    log.error(
        "record %s[%d]@%d cannot be projected (%s); setting it aside as a dead letter",
        record.topic,
        record.partition,
        record.offset,
        describe(exc),
        extra=correlation(record),
    )
    delay = FIRST_DELAY_S
    while True:
        try:
            return await projector.set_aside(record, POISON_REASON, _detail(exc))
        except Exception as failure:
            if not is_transient(failure):
                raise
            _log_retry([record], failure, delay)
        await asyncio.sleep(delay)  # the dead-letter topic or the database is away: wait for it
        delay = min(delay * 2, MAX_DELAY_S)


def is_transient(exc: BaseException) -> bool:
    """True when the failure is the environment's (retry the same batch), not the records'."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    state = sqlstate(exc)
    if state is not None:
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES
    return isinstance(exc, TRANSIENT)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE a PostgreSQL error carries, wrapped by SQLAlchemy or not."""
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str) and state:
            return state
    return None


def describe(exc: BaseException) -> str:
    """The error's kind, without its message (which may quote data): class and SQLSTATE."""
    orig = getattr(exc, "orig", None)
    kind = type(orig).__name__ if orig is not None else type(exc).__name__
    state = sqlstate(exc)
    return f"{kind} sqlstate {state}" if state else kind


def _detail(exc: BaseException) -> str:
    """For the dead letter's header: the kind and the database's own message, never SQLAlchemy's
    rendering, which appends the statement and its parameters. The dead-letter topic holds the
    record itself, so a message quoting one of its values says nothing new."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    message = text.splitlines()[0] if text else ""
    return f"{describe(exc)}: {message}"[:500]


def _merged(first: BatchResult, second: BatchResult) -> BatchResult:
    merged = BatchResult(
        applied=dict(first.applied),
        skipped_redelivered=first.skipped_redelivered + second.skipped_redelivered,
        dead_lettered=dict(first.dead_lettered),
    )
    for kind, count in second.applied.items():
        merged.applied[kind] = merged.applied.get(kind, 0) + count
    for reason, count in second.dead_lettered.items():
        merged.dead_lettered[reason] = merged.dead_lettered.get(reason, 0) + count
    stamps = [t for t in (first.newest_timestamp_ms, second.newest_timestamp_ms) if t is not None]
    merged.newest_timestamp_ms = max(stamps) if stamps else None
    return merged


def _log_retry(records: Sequence[SourceRecord], exc: BaseException, delay: float) -> None:
    first = records[0]
    log.warning(
        "batch at %s[%d]@%d failed (%s); retrying in %.1fs",
        first.topic,
        first.partition,
        first.offset,
        _brief(exc),
        delay,
    )


def _brief(exc: BaseException) -> str:
    """A retried failure for the log: a connection error says where it failed to connect; a
    database error only its kind (see `describe`)."""
    return describe(exc) if isinstance(exc, DBAPIError) else repr(exc)[:300]


def _die(record: SourceRecord, exc: BaseException, limit: int) -> None:
    # A traceback helps with a code error; a database error's rendering quotes the statement's
    # parameters (personal data), so only its kind is logged.
    trace = None if isinstance(exc, DBAPIError) else exc
    log.critical(
        "%d records in a row failed, the last at %s[%d]@%d (%s): not poison but a systemic failure; "
        "exiting without acknowledging the batch",
        limit + 1,
        record.topic,
        record.partition,
        record.offset,
        describe(exc),
        exc_info=trace,
        extra=correlation(record),
    )
    logging.shutdown()
    os._exit(EXIT_UNRECOVERABLE)

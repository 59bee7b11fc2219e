"""Run one batch to completion: transient failures are retried, anything else stops the process.

The stream's batch helper acknowledges a batch once control returns to it, even by an
exception. So a batch that failed must never return: it is retried until it succeeds, or the
process exits without acknowledging, and the batch is redelivered to the next worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence

from sqlalchemy.exc import DBAPIError, OperationalError

from connectors.kafka.publisher import BrokerUnavailable
from projections.runtime import BatchResult, Projector, SourceRecord

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    BrokerUnavailable,
    OSError,
    TimeoutError,
    ConnectionError,
)
EXIT_UNRECOVERABLE = 70


async def run_batch(
    projector: Projector, records: Sequence[SourceRecord], on_retry: Callable[[], None] | None = None
) -> BatchResult:
    delay = 0.5
    while True:
        try:
            return await projector.process(records)
        except TRANSIENT as exc:
            _log_retry(records, exc, delay)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                _die(records, exc)
            _log_retry(records, exc, delay)
        except Exception as exc:
            _die(records, exc)
        if on_retry is not None:
            on_retry()
        await asyncio.sleep(delay)  # backoff between retries of a failing dependency
        delay = min(delay * 2, 30.0)


def _log_retry(records: Sequence[SourceRecord], exc: BaseException, delay: float) -> None:
    first = records[0]
    log.warning(
        "batch at %s[%d]@%d failed (%r); retrying in %.1fs",
        first.topic,
        first.partition,
        first.offset,
        exc,
        delay,
    )


def _die(records: Sequence[SourceRecord], exc: BaseException) -> None:
    first = records[0]
    log.critical(
        "batch at %s[%d]@%d cannot be projected (%r); exiting without acknowledging it",
        first.topic,
        first.partition,
        first.offset,
        exc,
        exc_info=exc,
    )
    logging.shutdown()
    os._exit(EXIT_UNRECOVERABLE)

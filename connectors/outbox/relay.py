"""Relay an agency-owned PostgreSQL outbox table to the hub, in transaction order, never skipping a row.

Rows are read in (xid, id) order, where xid is the 64-bit id of the transaction that inserted the row,
and only below the xmin of the reading snapshot: every transaction that could still commit a row at or
above the fence is still running, so nothing below it can appear later. The checkpoint (xid, id) is
kept in the agency database and moved only after the broker acknowledged the batch. See docs/outbox.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from connectors.framework import Health, dead_letter, with_retries
from connectors.kafka.publisher import BrokerUnavailable, KafkaPublisher
from connectors.sdk import InvalidEvent, LiandongClient
from events.envelope import Envelope

log = logging.getLogger(__name__)

CONNECTOR = "outbox"
CHECKPOINT_TABLE = "liandong_outbox_relay_checkpoint"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_CHECKPOINT_DDL = f"""
CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (
    source_table text PRIMARY KEY,
    last_xid bigint NOT NULL,
    last_id bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""

# The row's xmin is a 32-bit xid; widen it to the 64-bit xid8 by taking the epoch from the snapshot's
# xmax (every existing xid is below xmax and, short of wraparound, within 2^32 of it).
_READ = """
WITH fence AS (
    SELECT pg_snapshot_xmin(s)::text::bigint AS xmin, pg_snapshot_xmax(s)::text::bigint AS xmax
    FROM (SELECT pg_current_snapshot() AS s) AS snap
), rows AS (
    SELECT o.id, o.unit, o.event_type, o.subject, o.occurred_at, o.payload::text AS payload,
           f.xmax - ((f.xmax - o.xmin::text::bigint) % 4294967296) AS xid, f.xmin AS fence
    FROM {table} AS o CROSS JOIN fence AS f
)
SELECT id, unit, event_type, subject, occurred_at, payload, xid
FROM rows
WHERE xid < fence AND (xid, id) > ($1::bigint, $2::bigint)
ORDER BY xid, id
LIMIT $3
"""

_BACKLOG = (
    _READ.split("SELECT id, unit", 1)[0]
    + "SELECT count(*) FROM rows WHERE (xid, id) > ($1::bigint, $2::bigint)"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One outbox row: one event. `payload` is the event's `data` as JSON text."""

    id: int
    xid: int
    unit: str
    event_type: str
    subject: str
    occurred_at: datetime
    payload: str

    @property
    def record_id(self) -> str:
        return f"outbox:{self.id}"

    def as_json(self) -> bytes:
        """The original row, for the dead-letter topic."""
        doc = {
            "id": self.id,
            "xid": self.xid,
            "unit": self.unit,
            "event_type": self.event_type,
            "subject": self.subject,
            "occurred_at": self.occurred_at.isoformat(),
            "payload": json.loads(self.payload),
        }
        return json.dumps(doc, ensure_ascii=False).encode()


class OutboxRelay:
    def __init__(
        self,
        dsn: str,
        bootstrap: str,
        table: str = "liandong_outbox",
        batch: int = 500,
        *,
        health: Health | None = None,
        on_batch: Callable[[Sequence[OutboxRow]], None] | None = None,
        on_published: Callable[[float, int], None] | None = None,
    ) -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError(f"outbox table name {table!r} is not a plain lower-case identifier")
        self._dsn = dsn
        self._bootstrap = bootstrap
        self._table = table
        self._batch = batch
        self._query = _READ.format(table=table)
        self._backlog_query = _BACKLOG.format(table=table)
        self.health = health or Health(name=f"{CONNECTOR}:{table}", kind="inbound")
        self._on_batch = on_batch
        # (seconds from reading the rows to the broker's acknowledgement, events): the relay's
        # publish latency, retries included.
        self._on_published = on_published
        self._conn: Any = None
        self._clients: dict[str, LiandongClient] = {}
        self._dead_letters = KafkaPublisher(bootstrap, client_id=f"liandong-{CONNECTOR}-dlq")

    async def __aenter__(self) -> OutboxRelay:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.__aexit__(None, None, None)
        await self._dead_letters.close()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(self._dsn, timeout=10)
            await conn.execute(_CHECKPOINT_DDL)
            self._conn = conn
        return self._conn

    async def checkpoint(self) -> tuple[int, int]:
        """The (xid, id) of the last row handled; (0, 0) before the first."""
        conn = await self._connection()
        row = await conn.fetchrow(
            f"SELECT last_xid, last_id FROM {CHECKPOINT_TABLE} WHERE source_table = $1", self._table
        )
        return (0, 0) if row is None else (int(row["last_xid"]), int(row["last_id"]))

    async def backlog(self) -> int:
        """Rows after the checkpoint, behind the fence or not: what the relay still has to publish."""
        after = await self.checkpoint()
        conn = await self._connection()
        pending = await conn.fetchval(self._backlog_query, after[0], after[1])
        self.health.backlog(int(pending or 0))
        return int(pending or 0)

    async def _read(self, after: tuple[int, int]) -> list[OutboxRow]:
        conn = await self._connection()
        # One snapshot for the fence and the rows it lets through.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            records = await conn.fetch(self._query, after[0], after[1], self._batch)
        return [
            OutboxRow(
                id=r["id"],
                xid=r["xid"],
                unit=r["unit"],
                event_type=r["event_type"],
                subject=r["subject"],
                occurred_at=r["occurred_at"],
                payload=r["payload"],
            )
            for r in records
        ]

    async def _save(self, last: OutboxRow) -> None:
        conn = await self._connection()
        await conn.execute(
            f"""INSERT INTO {CHECKPOINT_TABLE} AS c (source_table, last_xid, last_id) VALUES ($1, $2, $3)
                ON CONFLICT (source_table) DO UPDATE
                SET last_xid = excluded.last_xid, last_id = excluded.last_id, updated_at = now()
                WHERE (c.last_xid, c.last_id) < (excluded.last_xid, excluded.last_id)""",
            self._table,
            last.xid,
            last.id,
        )

    async def _client(self, unit: str) -> LiandongClient:
        client = self._clients.get(unit)
        if client is None:
            client = await LiandongClient(self._bootstrap, unit=unit).__aenter__()
            self._clients[unit] = client
        return client

    async def _event(self, row: OutboxRow) -> Envelope:
        client = await self._client(row.unit)
        data = json.loads(row.payload)
        if not isinstance(data, dict):
            raise InvalidEvent([("data", "the payload must be a JSON object")])
        return client.event(
            row.event_type, subject=row.subject, data=data, record_id=row.record_id, time=row.occurred_at
        )

    def _retried(self, attempt: int, exc: BaseException) -> None:
        self.health.record("retried")
        log.warning("outbox %s: broker error, attempt %d: %r", self._table, attempt, exc)

    async def _reject(self, row: OutboxRow, problem: InvalidEvent) -> None:
        async def send() -> None:
            await dead_letter(
                self._dead_letters,
                CONNECTOR,
                row.as_json(),
                "invalid_event",
                str(problem),
                key=row.record_id.encode(),
            )

        await with_retries(send, on_retry=self._retried)
        log.warning(
            "outbox %s: row %s rejected as a dead letter: invalid_event",
            self._table,
            row.record_id,
            extra={"subject": row.subject, "unit": row.unit},
        )
        self.health.record("rejected")
        self.health.record("dead_lettered")

    async def run_once(self) -> int:
        """Relay one batch; return how many rows were handled (published or dead-lettered)."""
        rows = await self._read(await self.checkpoint())
        if not rows:
            return 0
        read_at = time.monotonic()
        self.health.record("read", len(rows))
        by_unit: dict[str, list[Envelope]] = {}
        for row in rows:
            try:
                event = await self._event(row)
            except InvalidEvent as problem:
                await self._reject(row, problem)
                continue
            by_unit.setdefault(row.unit, []).append(event)
        for unit, events in by_unit.items():
            client = self._clients[unit]

            async def publish(client: LiandongClient = client, events: list[Envelope] = events) -> None:
                await client.publish(*events)

            await with_retries(publish, on_retry=self._retried)
            self.health.record("published", len(events))
            if self._on_published is not None:
                self._on_published(time.monotonic() - read_at, len(events))
        await self._save(rows[-1])
        if self._on_batch is not None:
            self._on_batch(rows)
        return len(rows)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Relay until `stop` is set; drain what is ready, then wait `interval_s` (or for stop)."""
        while not stop.is_set():
            try:
                while not stop.is_set() and await self.run_once() == self._batch:
                    pass  # a full batch: more is probably ready
                self.health.ran(True)
            except BrokerUnavailable as exc:
                self.health.ran(False, repr(exc))
                log.warning("outbox %s: broker unavailable, will retry: %r", self._table, exc)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.health.ran(False, repr(exc))
                log.warning("outbox %s: database error, will reconnect: %r", self._table, exc)
                if self._conn is not None:
                    conn, self._conn = self._conn, None
                    conn.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


async def relay_status(dsn: str, table: str = "liandong_outbox") -> dict[str, int | str]:
    """The relay's position and backlog, read from the agency database (for health pages)."""
    if not _IDENTIFIER.match(table):
        raise ValueError(f"outbox table name {table!r} is not a plain identifier")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(_CHECKPOINT_DDL)
        row = await conn.fetchrow(
            f"SELECT last_xid, last_id FROM {CHECKPOINT_TABLE} WHERE source_table = $1", table
        )
        after = (0, 0) if row is None else (int(row["last_xid"]), int(row["last_id"]))
        backlog = await conn.fetchval(_BACKLOG.format(table=table), after[0], after[1])
    finally:
        await conn.close()
    return {"table": table, "last_id": after[1], "backlog": int(backlog or 0)}

"""Shadow tables: a projection rebuilt beside the live one, then swapped in by copy.

A shadow holds a full copy of the store's tables: a schema of its own on PostgreSQL, an attached
database file on SQLite. The hub's real projector writes there unchanged (on PostgreSQL through the
connection's `search_path`, so that the raw-SQL COPY paths of `projections.bulk` land there too).

The swap runs in one transaction on the live store, after the live projectors were paused
(`pause_projectors`) and the shadow was brought to exactly their checkpoints:

- rows the shadow does not hold are deleted; rows it holds are upserted, but only where they
  differ, so an unchanged row keeps its version and its bookkeeping;
- no DDL touches a live table: readers keep reading the old rows until the commit (MVCC on
  PostgreSQL, WAL on SQLite), and the prepared statements of running processes stay valid.

Some columns are written outside the projector, or stamped with the wall clock when a batch ran.
Their live values are kept, see `_KEPT`. Some rows are written outside the projector altogether (the
worker's case-flow sweep): a replay never holds them, so the swap leaves them alone, see `_FOREIGN`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    MetaData,
    Table,
    and_,
    case,
    delete,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.anomalies import FLOW
from projections.db import upsert
from projections.runtime import Projection
from projections.schema import event_history, metadata, projection_checkpoints

ALL = "all"
SCHEMA_PREFIX = "liandong_shadow_"
SQLITE_ALIAS = "shadow"
# How long the swap waits for a lock on a live table before it gives up and changes nothing.
LOCK_TIMEOUT_S = 60


class UnknownProjection(LookupError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown projection {name!r}; known: {', '.join([*known, ALL])}")
        self.name = name
        self.known = tuple(known)


class NotRebuildable(ValueError):
    """The projection cannot be rebuilt safely; the message says why."""


class ArchiveIncomplete(RuntimeError):
    """The topics no longer hold every event the live store has projected."""


@dataclass(frozen=True, slots=True)
class Chosen:
    """The projections a rebuild swaps, and their tables in swap order."""

    names: tuple[str, ...]
    tables: tuple[Table, ...]


def rebuildable(projection: Projection) -> bool:
    """False for what is a record rather than a projection (the archive): `all` leaves it out."""
    return bool(getattr(projection, "rebuildable", True))


def declared_tables(projection: Projection) -> tuple[Table, ...]:
    """The tables a projection writes and a rebuild may swap: its `tables` attribute (names)."""
    if not rebuildable(projection):
        why = getattr(projection, "why_not_rebuildable", "it declares itself not rebuildable")
        raise NotRebuildable(f"projection {projection.name!r}: {why}")
    names = getattr(projection, "tables", None)
    if not names:
        raise NotRebuildable(
            f"projection {projection.name!r} declares no tables (a `tables` attribute): "
            "a rebuild would not know what to swap"
        )
    unknown = [n for n in names if n not in metadata.tables]
    if unknown:
        raise NotRebuildable(f"projection {projection.name!r} names tables the schema lacks: {unknown}")
    refused = [n for n in names if n in _REFUSED]
    if refused:
        raise NotRebuildable(f"projection {projection.name!r}: {'; '.join(_REFUSED[n] for n in refused)}")
    return tuple(metadata.tables[n] for n in names)


def choose(projections: Sequence[Projection], name: str) -> Chosen:
    """The projection called `name`, or all of them (`all`); raises UnknownProjection or
    NotRebuildable."""
    known = [p.name for p in projections]
    if name == ALL:
        picked = [p for p in projections if rebuildable(p)]
    else:
        picked = [p for p in projections if p.name == name]
        if not picked:
            raise UnknownProjection(name, known)
    tables: list[Table] = []
    for projection in picked:
        tables += [t for t in declared_tables(projection) if t not in tables]
    return Chosen(tuple(p.name for p in picked), tuple(tables))


def kept_columns(table: Table) -> tuple[str, ...]:
    """Columns whose live values a swap keeps (for `liandong projections list` and the docs)."""
    return _KEPT[table.name].columns if table.name in _KEPT else ()


def schema_name(name: str) -> str:
    """The PostgreSQL schema of the shadow of `name` (a projection name, or `all`)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
        raise ValueError(f"not a projection name: {name!r}")
    return SCHEMA_PREFIX + name


def create_tables(conn: Any) -> None:
    """Every table of the store, in the connection's first schema (for `run_sync`)."""
    metadata.create_all(conn)


async def pause_projectors(conn: AsyncConnection) -> None:
    """Hold every projector of the live store between batches until this transaction ends.

    A projector batch starts by locking its checkpoint rows FOR UPDATE, but a partition it has not
    checkpointed yet has no row to lock: so the whole checkpoint table is locked, in EXCLUSIVE
    mode, which waits for a batch in flight to commit and blocks the next one at its first
    statement, while plain reads (the API's) go on. SQLite has one writer at a time: the first
    write of this transaction takes it.
    """
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'")
        await conn.exec_driver_sql(f"LOCK TABLE {projection_checkpoints.name} IN EXCLUSIVE MODE")
    else:
        await conn.execute(delete(projection_checkpoints).where(false()))


async def lock_tables(conn: AsyncConnection, tables: Sequence[Table]) -> None:
    """Keep the other writers of `tables` (the clock scanner, the anomaly announcer) out of them until
    this transaction ends; plain reads go on. (On SQLite, `pause_projectors` already excludes them.)"""
    if conn.dialect.name == "postgresql":
        for table in tables:
            await conn.exec_driver_sql(f"LOCK TABLE {table.name} IN EXCLUSIVE MODE")


async def positions(conn: AsyncConnection, consumer: str, incarnation: str) -> dict[tuple[str, int], int]:
    """The next offset the live projector `consumer` will read, by (topic, partition)."""
    t = projection_checkpoints.c
    rows = await conn.execute(
        select(t.topic, t.partition, t.offset).where(t.consumer == consumer, t.incarnation == incarnation)
    )
    return {(r.topic, r.partition): int(r.offset) + 1 for r in rows}


async def check_same_history(conn: AsyncConnection, schema: str) -> None:
    """The shadow, replayed up to the live checkpoints, must know as many events as the live store:
    fewer means the topics lost some (retention, or a memory-only broker that restarted), and a swap
    would drop their effects."""
    live = await conn.scalar(select(func.count()).select_from(event_history))
    shadow = await conn.scalar(select(func.count()).select_from(_in(event_history, schema)))
    if live != shadow:
        raise ArchiveIncomplete(
            f"the topics, read up to the live checkpoints, hold {shadow:,} events, the live store has "
            f"projected {live:,}: the archive is incomplete (retention, or a memory-only broker that "
            "restarted), so the rebuilt tables would lose facts; the live tables were not touched"
        )


@dataclass(frozen=True, slots=True)
class Swapped:
    table: str
    deleted: int
    written: int  # inserted or changed; unchanged rows are not written


async def swap(conn: AsyncConnection, tables: Sequence[Table], schema: str) -> list[Swapped]:
    """Make each live table hold what its shadow in `schema` holds (see the module's docstring)."""
    out = []
    for table in tables:
        shadow = _in(table, schema).alias("shadow_rows")
        key = [c.name for c in table.primary_key.columns]
        same_key = and_(*(shadow.c[k] == table.c[k] for k in key))
        gone = delete(table).where(~exists().where(same_key))
        foreign = _FOREIGN.get(table.name)
        if foreign is not None:
            gone = gone.where(~foreign.rows(table.c))
        deleted = await conn.execute(gone)
        written = await conn.execute(_upsert(conn, table, shadow, key))
        out.append(Swapped(table.name, max(deleted.rowcount, 0), max(written.rowcount, 0)))
    return out


def _upsert(conn: AsyncConnection, table: Table, shadow: Any, key: Sequence[str]) -> Any:
    columns = [c.name for c in table.columns]
    # `WHERE true`: SQLite reads an upsert's ON CONFLICT as a join's ON without it.
    stmt = upsert(conn, table).from_select(columns, select(*(shadow.c[c] for c in columns)).where(true()))
    values = [c for c in columns if c not in key]
    if not values:
        return stmt.on_conflict_do_nothing(index_elements=key)
    kept = _KEPT.get(table.name)
    new = stmt.excluded
    compared = [c for c in values if kept is None or c not in kept.columns]
    differs: list[ColumnElement[bool]] = [table.c[c].is_distinct_from(new[c]) for c in compared]
    set_: dict[str, Any] = {c: new[c] for c in compared}
    if kept is not None:
        differs += kept.differs(table.c, new)
        set_.update(kept.values(table.c, new))
    return stmt.on_conflict_do_update(index_elements=key, set_=set_, where=or_(*differs))


_SCHEMAS: dict[tuple[str, str], Table] = {}


def _in(table: Table, schema: str) -> Table:
    """`table` in another schema (or attached SQLite database)."""
    found = _SCHEMAS.get((schema, table.name))
    if found is None:
        found = Table(table.name, MetaData(schema=schema), *(Column(c.name, c.type) for c in table.columns))
        _SCHEMAS[(schema, table.name)] = found
    return found


Columns = Any  # a table's column collection, or an upsert's `excluded`


@dataclass(frozen=True, slots=True)
class _Kept:
    """Columns another writer owns, or the wall clock stamped: a swap keeps their live values.

    `differs` adds what still counts as a change among them; `values` gives what a changed row gets.
    """

    columns: tuple[str, ...]
    why: str
    differs: Callable[[Columns, Columns], list[ColumnElement[bool]]]
    values: Callable[[Columns, Columns], Mapping[str, Any]]


def _anomaly_values(live: Columns, new: Columns) -> Mapping[str, Any]:
    return {
        "detected_at": func.coalesce(live.detected_at, new.detected_at),
        "resolved_at": case(
            (new.resolved_at.is_(None), None), else_=func.coalesce(live.resolved_at, new.resolved_at)
        ),
        "announced_at": live.announced_at,
    }


def _clock_values(live: Columns, new: Columns) -> Mapping[str, Any]:
    # The ladder levels the scanner raised belong to the cycle their alert ids name (its start).
    same_cycle = and_(
        live.started_at.is_not_distinct_from(new.started_at), live.reset_at.is_not_distinct_from(new.reset_at)
    )
    carried = and_(same_cycle, or_(live.fired != literal(""), live.withdrawn != literal("")))
    return {
        "fired": case((same_cycle, live.fired), else_=new.fired),
        "withdrawn": case((same_cycle, live.withdrawn), else_=new.withdrawn),
        # The shadow scheduled the row as if nothing had fired, so a stopped clock may owe
        # withdrawals it does not know of. Its start is never later than any check the clock needs
        # (every threshold, stop and acknowledgement comes after it): the scanner looks at the row
        # at its next pass, finds what is due with the kept levels, and writes the right time.
        "next_check_at": case(
            (carried, func.coalesce(new.started_at, new.next_check_at)), else_=new.next_check_at
        ),
        "updated_at": new.updated_at,
    }


_KEPT: Mapping[str, _Kept] = {
    "anomalies": _Kept(
        ("detected_at", "resolved_at", "announced_at"),
        "detected_at and resolved_at are the wall-clock times a batch found or healed the anomaly, "
        "announced_at is set by the announcer: kept, so nothing is announced twice; an anomaly the "
        "live store lacks is announced (its event id is derived from the anomaly id)",
        lambda live, new: [live.resolved_at.is_(None) != new.resolved_at.is_(None)],
        _anomaly_values,
    ),
    "clocks": _Kept(
        ("fired", "withdrawn", "next_check_at", "updated_at"),
        "fired and withdrawn are the scanner's, kept while the clock's cycle is the same (a new cycle "
        "starts its ladder again); next_check_at and updated_at follow them",
        lambda live, new: [],
        _clock_values,
    ),
}


@dataclass(frozen=True, slots=True)
class _Foreign:
    """Rows of a swapped table that another writer owns: the projector never writes them, so the
    shadow never holds them, and deleting them would lose facts the replay cannot give back."""

    rows: Callable[[Columns], ColumnElement[bool]]
    why: str


_FOREIGN: Mapping[str, _Foreign] = {
    "anomalies": _Foreign(
        lambda c: c.category == literal(FLOW),
        "case-flow spikes and silences (category flow) come from the worker's periodic sweep, not "
        "from the projector: the swap keeps the live rows, and the next sweep re-derives them from "
        "the swapped cases",
    ),
}


# Tables a rebuild must never swap, with the reason.
_REFUSED: Mapping[str, str] = {
    "deliveries": "deliveries are the record of webhooks and e-mails sent, not a projection: a replay "
    "queues none, so swapping them would forget what was sent",
    "event_history": "the event history is the projector's record of what it applied: it must stay "
    "in step with the live checkpoints",
    "projection_checkpoints": "checkpoints belong to the live projectors",
    "archive": "the archive is the hash-chained record: a replay would rewrite the chain",
    "archive_head": "the archive's head belongs to the chain it ends",
    "party_keys": "parties' keys: a replay would bring back shredded parties under new keys",
    "parties": "parties' data: a replay would bring back shredded parties",
}


def describe(table: Table) -> str:
    notes = []
    kept = _KEPT.get(table.name)
    if kept is not None:
        notes.append(f"keeps the live {', '.join(kept.columns)}")
    if table.name in _FOREIGN:
        notes.append("keeps the live rows of the worker's case-flow sweep")
    return f"{table.name} ({'; '.join(notes)})" if notes else table.name


def drop_schema_sql(schema: str) -> Any:
    return text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

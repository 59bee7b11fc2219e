"""Batched reads and writes that cost a fixed number of statements per batch, on both stores.

On PostgreSQL, rows go into a temporary staging table with asyncpg's binary COPY, and one
`INSERT … SELECT … ON CONFLICT` merges them into the table. An `executemany` of an upsert costs a
server execution and a row of SQLAlchemy parameter processing per row; COPY costs neither, and the
merge is one statement. A few rows still go through `executemany`: below `_COPY_FROM` rows, the
staging round trips cost more than they save.

On SQLite (the embedded store, one worker), the same upserts run as an `executemany`: SQLite has
no COPY, and its statements cost no network round trip.

Reads by key take all the keys in one parameter: an array (`= ANY($1)`) on PostgreSQL, a JSON array
on SQLite. The statement text, and so its prepared statement, is the same whatever the batch holds.

Every function takes the batch's `AsyncConnection` and runs inside its transaction: the staging
tables are emptied at commit (`ON COMMIT DELETE ROWS`), and a failure rolls everything back.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import (
    ARRAY,
    Column,
    ColumnElement,
    MetaData,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.db import upsert

OnConflict = Callable[[Any], Any]
"""Adds the ON CONFLICT clause to a dialect INSERT (both dialects share the API, `excluded` too).
Pass a module-level function: statements are built once per function, table and columns."""

_STAGES: dict[str, Table] = {}
_STAGE_METADATA = MetaData()
# Built statements: an upsert of a wide table costs more to build (its `excluded` columns) than
# to compile from SQLAlchemy's cache. Bounded, in case a caller passes a new closure every time.
_STATEMENTS: dict[tuple[str, str, tuple[str, ...], OnConflict | str], Any] = {}
_STATEMENTS_MAX = 256
# Below this many rows, staging costs more round trips (create, COPY, merge) than it saves:
# measured on the clocks table, an executemany wins at 32 rows or fewer and loses at 64 or more.
_COPY_FROM = 48
# Errors that mean the connection is gone, not that the statement was wrong: the batch is retried.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


def is_postgresql(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def _copies(conn: AsyncConnection, rows: Sequence[object]) -> bool:
    return len(rows) >= _COPY_FROM and is_postgresql(conn)


async def merge(
    conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]], on_conflict: OnConflict
) -> None:
    """Insert `rows` (unique by the conflict key) into `table`, resolving conflicts by `on_conflict`."""
    if not rows:
        return
    if not _copies(conn, rows):
        await conn.execute(_statement(conn, table, (), on_conflict), list(rows))
        return
    columns = await _stage(conn, table, rows)
    await conn.execute(_statement(conn, table, columns, on_conflict))


async def insert_new(
    conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]], key: str
) -> set[Any]:
    """Insert the rows whose `key` the table does not hold yet; return the keys inserted.

    The rows must be unique by `key`. A row whose key another transaction is inserting waits for
    it, and counts as held once that one commits: two workers never both take the same key.
    """
    if not rows:
        return set()

    def new_keys(stmt: Any) -> Any:
        return stmt.on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])

    if not _copies(conn, rows):
        result = await conn.execute(_statement(conn, table, (), new_keys, f"new {key}"), list(rows))
        return {row[0] for row in result}
    columns = await _stage(conn, table, rows)
    inserted = _statement(conn, table, columns, new_keys, f"new {key}").cte("inserted")
    stage = _stage_table(table)
    # Only the keys that were already held come back: normally none, where RETURNING would send
    # back every key of the batch.
    held = select(stage.c[key]).except_(select(inserted.c[key]))
    return {row[key] for row in rows} - set((await conn.execute(held)).scalars())


def any_of(conn: AsyncConnection, column: Any, values: Collection[Any]) -> ColumnElement[bool]:
    """`column IN values`, with all the values in one parameter: an array on PostgreSQL, a JSON
    array on SQLite, which refuses statements of more than 32,766 parameters."""
    if is_postgresql(conn):
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))  # type: ignore[no-any-return]
    listed = func.json_each(bindparam(None, json.dumps(list(values)), type_=Text)).table_valued("value")
    return column.in_(select(listed.c.value))  # type: ignore[no-any-return]


def pairs_of(
    conn: AsyncConnection, first: Any, second: Any, pairs: Iterable[tuple[Any, Any]]
) -> ColumnElement[bool]:
    """(first, second) in `pairs`, as one term per value of `first`: a batch touches few areas and
    many subjects, and one OR term per pair costs more to build than the query costs to run."""
    grouped: dict[Any, list[Any]] = defaultdict(list)
    for a, b in pairs:
        grouped[a].append(b)
    return or_(*(and_(first == a, any_of(conn, second, bs)) for a, bs in sorted(grouped.items())))


def _stage_table(table: Table) -> Table:
    stage = _STAGES.get(table.name)
    if stage is None:
        stage = Table(f"stage_{table.name}", _STAGE_METADATA, *(Column(c.name, c.type) for c in table.c))
        _STAGES[table.name] = stage
    return stage


def _statement(
    conn: AsyncConnection,
    table: Table,
    columns: Sequence[str],
    on_conflict: OnConflict,
    name: str | None = None,
) -> Any:
    """`on_conflict` applied to an INSERT of `columns` from the staging table (PostgreSQL), or to a
    plain INSERT for `executemany` (no columns); remembered under `name` or the function."""
    key = (conn.dialect.name, table.name, tuple(columns), name or on_conflict)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = upsert(conn, table)
        if columns:
            stage = _stage_table(table)
            stmt = stmt.from_select(list(columns), select(*(stage.c[c] for c in columns)))
        stmt = on_conflict(stmt)
        if len(_STATEMENTS) >= _STATEMENTS_MAX:
            _STATEMENTS.clear()
        _STATEMENTS[key] = stmt
    return stmt


async def _stage(conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """COPY `rows` into the table's staging table, in this transaction; return the columns."""
    columns = list(rows[0])
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy begins lazily, at the first statement: COPY alone would run outside it.
        await conn.exec_driver_sql("SELECT 1")
    stage = _stage_table(table).name
    statement = f"COPY {stage}"
    try:
        # IF NOT EXISTS: a rolled-back batch also rolls back the table it created. DELETE: a
        # second merge into the same table in one transaction must not see the first one's rows.
        await driver.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table.name}) ON COMMIT DELETE ROWS;"
            f"DELETE FROM {stage}"
        )
        values = itemgetter(*columns)
        records = map(values, rows) if len(columns) > 1 else ((values(row),) for row in rows)
        await driver.copy_records_to_table(stage, records=records, columns=columns)
    except _CONNECTION_LOST as exc:
        # As SQLAlchemy reports a lost connection, so that the worker retries the batch.
        await conn.invalidate()
        raise OperationalError(statement, None, exc, connection_invalidated=True) from exc
    return columns

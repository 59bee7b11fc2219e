"""Engines for the two supported stores: PostgreSQL (asyncpg) and the embedded SQLite (aiosqlite)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, event, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.schema import Table


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while the worker writes; the busy timeout absorbs the
            # short write locks of other processes instead of failing.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


def upsert(conn: AsyncConnection, table: Table) -> Any:
    """The dialect's INSERT with ON CONFLICT support (both dialects share the same API)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {conn.dialect.name}")


def pairs_in(first: Any, second: Any, pairs: Iterable[tuple[str, str]]) -> ColumnElement[bool]:
    """(first, second) in `pairs`, as one IN list per value of `first`: a batch touches few areas and
    many subjects, and one OR term per pair costs more to build than the query costs to run."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for a, b in pairs:
        grouped[a].append(b)
    return or_(*(and_(first == a, second.in_(bs)) for a, bs in grouped.items()))

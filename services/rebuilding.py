"""The "a projection is rebuilding" marker that readiness reads.

While `projections rebuild`, `liandong rebuild` or `liandong archive restore` runs, the projections it
touches are incomplete, so every process that answers from them reports not ready (/readyz). The
marker is a row in `hub_meta` (key `rebuilding.<name>`), because the store is the one thing every
process and every CLI run shares; its value is JSON: pid, host, started_at, heartbeat_at and the
holder's heartbeat interval.

A crashed rebuild must not keep the hub unready forever: the holder refreshes `heartbeat_at` while it
holds the marker, and a reader ignores a marker whose heartbeat is older than three intervals
(`STALE_AFTER_BEATS`). The interval is stored with the marker, so readers need no shared setting. The
comparison uses the reader's wall clock, so hosts must keep their clocks within a few seconds (NTP).

Two holders of the same name (two concurrent restores, say) each re-assert the row on every beat; a
holder only deletes the row while it still carries its own token, so the marker stays while either
runs (at worst it is absent for one beat after the first one ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.db import upsert
from projections.schema import hub_meta

log = logging.getLogger(__name__)

KEY_PREFIX = "rebuilding."
HEARTBEAT_SECONDS = 5.0
STALE_AFTER_BEATS = 3
# hub_meta.key is VARCHAR(64)
MAX_NAME_LENGTH = 64 - len(KEY_PREFIX)


def _now() -> datetime:
    return datetime.now(UTC)


def _check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ValueError(f"rebuild marker name must be 1..{MAX_NAME_LENGTH} printable characters: {name!r}")
    return name


def mark_rebuilding(
    engine: AsyncEngine, name: str, *, heartbeat_seconds: float = HEARTBEAT_SECONDS
) -> AbstractAsyncContextManager[None]:
    """Hold the marker `rebuilding.<name>` for the duration of the `async with` block."""
    return _held(engine, _check_name(name), heartbeat_seconds)


@contextlib.asynccontextmanager
async def _held(engine: AsyncEngine, name: str, heartbeat_seconds: float) -> AsyncIterator[None]:
    key = KEY_PREFIX + name
    token = uuid.uuid4().hex
    started_at = _now()

    def value() -> str:
        return json.dumps(
            {
                "token": token,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": started_at.isoformat(),
                "heartbeat_at": _now().isoformat(),
                "heartbeat_seconds": heartbeat_seconds,
            }
        )

    async def write() -> None:
        async with engine.begin() as conn:
            stmt = upsert(conn, hub_meta).values(key=key, value=value())
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value})
            )

    async def beat() -> None:
        while True:
            await asyncio.sleep(heartbeat_seconds)
            try:
                await write()
            except Exception:  # the store may be briefly unreachable; the next beat tries again
                log.warning("could not refresh the rebuild marker %s", key, exc_info=True)

    await write()
    beating = asyncio.create_task(beat(), name=f"heartbeat {key}")
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
        try:
            await _release(engine, key, token)
        except Exception:  # the marker goes stale on its own; do not hide the block's own error
            log.warning("could not remove the rebuild marker %s; it expires on its own", key, exc_info=True)


async def _release(engine: AsyncEngine, key: str, token: str) -> None:
    async with engine.begin() as conn:
        current = await conn.scalar(select(hub_meta.c.value).where(hub_meta.c.key == key))
        if current is not None and _parse(current).get("token") == token:
            await conn.execute(delete(hub_meta).where(hub_meta.c.key == key, hub_meta.c.value == current))


def _parse(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def is_live(marker: dict[str, Any], now: datetime) -> bool:
    """A marker counts while its heartbeat is younger than `STALE_AFTER_BEATS` intervals. One that
    cannot be read has no heartbeat to trust, so it counts as stale: it must not hold readiness down
    forever, which is the very thing the heartbeat exists to prevent."""
    try:
        beat = datetime.fromisoformat(str(marker["heartbeat_at"]))
        interval = float(marker.get("heartbeat_seconds", HEARTBEAT_SECONDS))
    except (KeyError, TypeError, ValueError):
        return False
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=UTC)
    return now - beat <= timedelta(seconds=interval * STALE_AFTER_BEATS)


async def rebuilds_in_progress(engine: AsyncEngine) -> list[str]:
    """The names of the live markers, sorted."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(hub_meta.c.key, hub_meta.c.value).where(
                    hub_meta.c.key.startswith(KEY_PREFIX, autoescape=True)
                )
            )
        ).all()
    now = _now()
    return sorted(key.removeprefix(KEY_PREFIX) for key, value in rows if is_live(_parse(value), now))

"""Run Alembic migrations on an async engine, and give each store a stable instance id."""

from __future__ import annotations

import uuid
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.db import upsert
from projections.schema import hub_meta

MIGRATIONS = Path(__file__).parent / "migrations"
INSTANCE_KEY = "store_instance_id"


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> str:
    """Bring the schema to `revision`; return the store's instance id (created on first run)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)
    async with engine.begin() as conn:
        stmt = upsert(conn, hub_meta).values(key=INSTANCE_KEY, value=uuid.uuid4().hex)
        await conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
        value = await conn.scalar(select(hub_meta.c.value).where(hub_meta.c.key == INSTANCE_KEY))
    return str(value)


async def instance_id(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        value = await conn.scalar(select(hub_meta.c.value).where(hub_meta.c.key == INSTANCE_KEY))
    if value is None:
        raise RuntimeError("the store is not migrated: run `liandong migrate` first")
    return str(value)

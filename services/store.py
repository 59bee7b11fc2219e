"""Store chores shared by CLI commands: migrate, issue keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from events.directory import Directory
from projections.db import make_engine
from projections.migrate import upgrade
from services.keys import issue_key
from services.settings import Settings


async def migrate(settings: Settings) -> str:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    try:
        return await upgrade(engine)
    finally:
        await engine.dispose()


async def issue(settings: Settings, unit_id: str) -> str:
    await migrate(settings)
    engine = make_engine(settings.database_url)
    try:
        return await issue_key(engine, Directory.load(), unit_id)
    finally:
        await engine.dispose()


T = TypeVar("T")


async def with_engine(settings: Settings, use: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `use` on a migrated store, and dispose of the engine afterwards."""
    await migrate(settings)
    engine = make_engine(settings.database_url)
    try:
        return await use(engine)
    finally:
        await engine.dispose()

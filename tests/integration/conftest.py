"""Fixtures for projection tests: a migrated store (both kinds) and a prepared codec."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from events.catalog import Catalog
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.db import make_engine
from tests.webhook_receiver import receiver


@pytest.fixture
async def codec() -> EventCodec:
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    return codec


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(store_url)
    yield engine
    await engine.dispose()


__all__ = ["codec", "engine", "receiver"]

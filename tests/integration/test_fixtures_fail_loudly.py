"""A missing service fails the run with a message that says what to start; it is never skipped."""

from __future__ import annotations

import pytest

from services.embedded_broker import free_port
from tests.support import create_pg_database


async def test_a_missing_postgresql_fails_with_instructions_to_start_it() -> None:
    closed = free_port()
    with pytest.raises(RuntimeError, match=r"pg_ctlcluster .* main start"):
        await create_pg_database(f"postgresql://127.0.0.1:{closed}/test")

"""schemathesis against the API's own OpenAPI schema (`/openapi.json`), in process over ASGI.

Every operation gets generated requests with a valid key of the district supervision section (which
may read everything): no answer is a server error, and an answer the schema documents matches the
schema. The real app runs with its lifespan, a real broker and a real PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import response_schema_conformance

from projections.db import make_engine
from projections.migrate import upgrade
from services.api.app import create_app
from services.settings import Settings
from tests.support import create_pg_database, drop_pg_database, reader_headers

pytestmark = pytest.mark.integration

# Streams never end on their own; the gateway's hostile input is fuzzed in test_fuzz_gateway.py.
SKIPPED = {"GET /v1/inbox/stream", "GET /v1/live"}
# Per operation, half valid and half schema-breaking requests; raise it for a longer hunt.
EXAMPLES = int(os.environ.get("LIANDONG_SCHEMATHESIS_EXAMPLES", "12"))


@dataclass(frozen=True)
class Api:
    schema: Any
    headers: dict[str, str]


@pytest.fixture(scope="module")
def api(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    url = asyncio.run(create_pg_database())

    async def migrated_key() -> dict[str, str]:
        engine = make_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        return await reader_headers(url)

    headers = asyncio.run(migrated_key())
    data_dir: Path = tmp_path_factory.mktemp("schemathesis")
    env = {
        "LIANDONG_DATA_DIR": str(data_dir),
        "LIANDONG_DATABASE_URL": url,
        # Hundreds of requests with one key in seconds: the rate limit is not what is tested here.
        "LIANDONG_RATE_LIMIT_BURST": "1000000",
    }
    settings_ = Settings.from_env(env)
    app = create_app(settings_, broker)
    try:
        yield Api(schemathesis.openapi.from_asgi("/openapi.json", app), headers)
    finally:
        shutdown_lifespans()  # the app's engine and producer close before the database goes
        asyncio.run(drop_pg_database(url))


def _labels() -> list[str]:
    """The operations, read from a schema loaded without a database (routing only)."""
    app = create_app(Settings.from_env({"LIANDONG_DATA_DIR": "/tmp/liandong-openapi"}), "127.0.0.1:1")
    schema = app.openapi()
    methods = ("get", "post", "put", "patch", "delete")
    return sorted(
        f"{method.upper()} {path}"
        for path, item in schema["paths"].items()
        for method in item
        if method in methods and f"{method.upper()} {path}" not in SKIPPED
    )


@pytest.mark.parametrize("label", _labels())
def test_no_operation_answers_a_server_error_or_breaks_its_documented_schema(api: Api, label: str) -> None:
    method, path = label.split(" ", 1)
    operation = api.schema[path][method]
    # Valid requests, then requests that break the schema on purpose (wrong types, missing fields).
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(case=cases)
    def run(case: Any) -> None:
        case.call_and_validate(headers=api.headers, checks=[not_a_server_error, response_schema_conformance])

    run()

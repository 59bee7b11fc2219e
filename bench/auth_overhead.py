"""What authentication costs per request: `GET /v1/me` with an API key, a person's token, a browser
session opened with a token and one opened with a key, against `GET /healthz` (no authentication).

    .venv/bin/python -m bench.auth_overhead              # ~20 s
    .venv/bin/python -m bench.auth_overhead --requests 5000

In-process (httpx over ASGI, no sockets), one request at a time, on a fresh migrated PostgreSQL
database. A key costs one indexed lookup of `api_keys`; a token is checked in memory (HMAC-SHA256);
a session opened with a key checks the token and looks the key up, so that revoking the key ends it.
Prints a Markdown table: median and p95 microseconds per request and the ratio to /healthz.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time

import httpx

from events.directory import Directory
from projections.db import make_engine
from projections.migrate import upgrade
from services.api.app import create_app
from services.keys import issue_key
from services.settings import Settings
from services.tokens import issue_token, token_secret
from tests.support import create_pg_database, drop_pg_database

UNIT = "shilou.enforcement-office"


async def timed(client: httpx.AsyncClient, path: str, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        response = await client.get(path)
        samples.append((time.perf_counter() - began) * 1e6)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.text[:200]}")
    return samples


async def run(requests: int) -> None:
    url = await create_pg_database()
    try:
        engine = make_engine(url)
        try:
            await upgrade(engine)
            key = await issue_key(engine, Directory.load(), UNIT)
        finally:
            await engine.dispose()
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings.from_env(
                {
                    "LIANDONG_DATA_DIR": folder,
                    "LIANDONG_DATABASE_URL": url,
                    # The bench measures the checks, not the limit: one bucket serves every request.
                    "LIANDONG_RATE_LIMIT_PER_MIN": "10000000",
                    "LIANDONG_RATE_LIMIT_BURST": "10000000",
                }
            )
            app = create_app(settings, "127.0.0.1:1")
            async with app.router.lifespan_context(app):
                engine = make_engine(url)
                try:
                    secret = await token_secret(engine, settings)
                finally:
                    await engine.dispose()
                token, _ = issue_token(
                    secret, Directory.load(), unit=UNIT, role="township_office", person="p-1"
                )
                rows = await measure(app, key, token, requests)
    finally:
        await drop_pg_database(url)
    base = statistics.median(rows[0][1])
    print(f"\n{requests} sequential requests each, in-process (ASGI), PostgreSQL 127.0.0.1\n")
    print("| request | median µs | p95 µs | × /healthz |")
    print("|---|---|---|---|")
    for label, samples in rows:
        p95 = statistics.quantiles(samples, n=20)[-1]
        median = statistics.median(samples)
        print(f"| {label} | {median:,.0f} | {p95:,.0f} | {median / base:.2f} |")


async def measure(app: object, key: str, token: str, n: int) -> list[tuple[str, list[float]]]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]

    def client(headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, base_url="http://hub", headers=headers or {})

    rows: list[tuple[str, list[float]]] = []
    async with client() as anonymous:
        await timed(anonymous, "/healthz", 50)  # warm-up
        rows.append(("GET /healthz (no authentication)", await timed(anonymous, "/healthz", n)))
    async with client({"Authorization": f"Bearer {key}"}) as keyed:
        await timed(keyed, "/v1/me", 50)
        rows.append(("GET /v1/me, API key", await timed(keyed, "/v1/me", n)))
    async with client({"Authorization": f"Bearer {token}"}) as person:
        rows.append(("GET /v1/me, person's token", await timed(person, "/v1/me", n)))
    for label, body in (("token", {"token": token}), ("key", {"key": key})):
        async with client() as browser:
            opened = await browser.post("/v1/session", json=body)
            if opened.status_code != 204:
                raise SystemExit(f"session: {opened.status_code} {opened.text[:200]}")
            rows.append((f"GET /v1/me, session opened with a {label}", await timed(browser, "/v1/me", n)))
    print(f"done ({len(rows)} series)", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per series (default 2000)")
    args = parser.parse_args()
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()

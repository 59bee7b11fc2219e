"""Identity: keys that expire, rotate and are revoked; people's signed tokens and their roles; every
refusal counted in /metrics and logged without the secret; each unit's rate limit.

Keys are managed through the real CLI (`liandong keys ...`, `liandong tokens issue`), in-process
against the same PostgreSQL store the API reads. Time is driven by writing `expires_at`, never slept.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from events.directory import Directory
from projections.db import make_engine
from projections.schema import api_keys
from services.api.app import create_app
from services.cli import main
from services.settings import Settings
from services.tokens import issue_token, token_secret
from tests.integration.analysis_data import SHILOU_OFFICE, Api, fill
from tests.support import create_pg_database, drop_pg_database

pytestmark = pytest.mark.integration

SUPERVISOR = "district.justice-bureau"
POLICE = "shilou.police-station"
PROBLEM = "application/problem+json"
COOKIE = "liandong_session"
AUTH_LOG = "liandong.auth"


@dataclass
class Hub:
    app: FastAPI
    url: str
    data_dir: Path

    def client(self, credential: str | None = None, **headers: str) -> httpx.AsyncClient:
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://hub", headers=headers)

    async def cli(self, *argv: str) -> tuple[int, str, str]:
        """`liandong ARGV` in-process (in a thread: the CLI runs its own event loop)."""
        env = {"LIANDONG_DATABASE_URL": self.url, "LIANDONG_DATA_DIR": str(self.data_dir)}
        out, err = io.StringIO(), io.StringIO()

        def run() -> int:
            # The CLI configures logging for its whole process; here that process is pytest's, whose
            # log capture the test reads, so the CLI's configuration is left out.
            with (
                mock.patch.dict(os.environ, env),
                mock.patch("services.cli._configure_logging"),
                redirect_stdout(out),
                redirect_stderr(err),
            ):
                return main(list(argv))

        code = await asyncio.to_thread(run)
        return code, out.getvalue(), err.getvalue()

    async def key(self, unit: str, *options: str) -> str:
        code, out, err = await self.cli("keys", "issue", unit, *options)
        assert code == 0, err
        return out.strip()

    async def token(self, role: str, unit: str = "", person: str = "p-1001", *options: str) -> str:
        code, out, err = await self.cli(
            "tokens", "issue", "--unit", unit, "--role", role, "--person", person, "--name", "王五", *options
        )
        assert code == 0, err
        return out.strip()

    async def expire(self, key: str, ago: timedelta = timedelta(seconds=1)) -> None:
        """Move a key's expiry into the past, as the wall clock would after its grace period."""
        engine = make_engine(self.url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.key_id == key_id(key))
                    .values(expires_at=datetime.now(UTC) - ago)
                )
        finally:
            await engine.dispose()

    async def rejections(self) -> dict[str, float]:
        async with self.client() as client:
            text = (await client.get("/metrics")).text
        return {
            s.labels["reason"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "liandong_auth_rejections_total"
        }


@pytest.fixture(scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hub]:
    url = await create_pg_database()
    await fill(url)
    folder = tmp_path_factory.mktemp("identity")
    app = Api(url, folder).app
    try:
        async with app.router.lifespan_context(app):
            yield Hub(app, url, folder)
    finally:
        await drop_pg_database(url)


def key_id(key: str) -> str:
    return key.split("_")[1]


def refused(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:liandong:problem:{kind.replace('_', '-')}", body
    return body


async def me(hub: Hub, credential: str) -> httpx.Response:
    async with hub.client(credential) as client:
        return await client.get("/v1/me")


# --- keys ----------------------------------------------------------------------------------------


async def test_a_key_issued_with_a_lifetime_is_refused_once_it_expires(hub: Hub) -> None:
    code, out, err = await hub.cli("keys", "issue", SHILOU_OFFICE, "--ttl-days", "30")
    key = out.strip()
    assert code == 0
    assert "expires at" in err
    assert "有效期至" in err
    before = await hub.rejections()
    assert (await me(hub, key)).status_code == 200

    await hub.expire(key)
    response = await me(hub, key)

    body = refused(response, 401, "unauthenticated")
    assert body["errors"][0]["reason"] == "the key has expired; use its successor or ask for a new one"
    assert (await hub.rejections())["expired"] == before["expired"] + 1


async def test_a_revoked_key_is_refused_at_once_and_revoking_twice_is_harmless(hub: Hub) -> None:
    key = await hub.key(POLICE)
    assert (await me(hub, key)).status_code == 200
    before = await hub.rejections()

    first = await hub.cli("keys", "revoke", key_id(key))
    again = await hub.cli("keys", "revoke", key_id(key))
    unknown = await hub.cli("keys", "revoke", "0123456789ab")
    response = await me(hub, key)

    assert first[0] == again[0] == 0
    assert "已于" in first[2]
    assert "revoked at" in first[2]
    assert unknown[0] == 2
    assert "unknown key id" in unknown[2]
    refused(response, 401, "unauthenticated")
    assert (await hub.rejections())["revoked"] == before["revoked"] + 1


async def test_rotation_keeps_both_keys_valid_during_the_grace_period_then_only_the_new_one(
    hub: Hub,
) -> None:
    old = await hub.key(SHILOU_OFFICE)

    code, out, err = await hub.cli("keys", "rotate", key_id(old))
    new = out.strip()
    assert code == 0, err
    assert f"replaces {key_id(old)}" in err
    assert "旧密钥" in err
    assert key_id(new) != key_id(old)
    both = [await me(hub, old), await me(hub, new)]
    assert [r.status_code for r in both] == [200, 200]
    assert {r.json()["unit"] for r in both} == {SHILOU_OFFICE}
    again = await hub.cli("keys", "rotate", key_id(old))
    assert again[0] == 2
    assert "rotated" in again[2]

    code, listing, _ = await hub.cli("keys", "list", "--unit", SHILOU_OFFICE)
    assert code == 0
    row = next(line for line in listing.splitlines() if line.startswith(key_id(old)))
    assert "rotated" in row
    assert key_id(new) in row
    assert old.split("_", 2)[2] not in listing
    assert new.split("_", 2)[2] not in listing

    await hub.expire(old)  # the grace period has passed
    refused(await me(hub, old), 401, "unauthenticated")
    assert (await me(hub, new)).status_code == 200


async def test_a_rotation_without_grace_refuses_the_old_key_at_once(hub: Hub) -> None:
    old = await hub.key(POLICE)

    code, out, _ = await hub.cli("keys", "rotate", key_id(old), "--grace-hours", "0")

    assert code == 0
    refused(await me(hub, old), 401, "unauthenticated")
    assert (await me(hub, out.strip())).json()["unit"] == POLICE


async def test_keys_issue_keeps_its_output_and_refuses_an_unknown_unit(hub: Hub) -> None:
    code, out, err = await hub.cli("keys", "issue", SUPERVISOR)
    unknown = await hub.cli("keys", "issue", "no.such-unit")

    assert code == 0
    assert out.count("\n") == 1
    assert out.startswith("ld_")
    assert "shown once" in err
    assert "密钥只显示一次" in err
    assert unknown[0] == 2
    assert "unknown unit" in unknown[2]


# --- tokens --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_role", "unit", "role", "townships"),
    [
        ("district_supervisor", SUPERVISOR, "district", 16),
        ("township_office", SHILOU_OFFICE, "township", 1),
        ("agency", POLICE, "unit", 1),
        ("auditor", POLICE, "auditor", 16),
        ("public", "", "public", 0),
    ],
)
async def test_a_persons_token_names_the_person_and_the_role_it_grants(
    hub: Hub, token_role: str, unit: str, role: str, townships: int
) -> None:
    token = await hub.token(token_role, unit, "p-2001")

    body = (await me(hub, token)).json()

    assert (body["role"], body["person"], body["credential"], body["unit"]) == (role, "p-2001", "token", unit)
    assert len(body["townships"]) == townships


async def test_a_role_that_does_not_fit_the_unit_is_refused_at_issue(hub: Hub) -> None:
    code, out, err = await hub.cli(
        "tokens", "issue", "--unit", SHILOU_OFFICE, "--role", "district_supervisor", "--person", "p-1"
    )

    assert code == 2
    assert out == ""
    assert "does not fit" in err
    assert "角色与单位不符" in err


async def test_the_auditor_reads_every_township_and_writes_nothing(hub: Hub) -> None:
    token = await hub.token("auditor", POLICE)
    before = await hub.rejections()

    async with hub.client(token) as client:
        cases = (await client.get("/v1/cases")).json()
        other = await client.get("/v1/cases/Q1")
        ack = await client.post("/v1/alerts/alert-T2/acknowledge", json={})
        retry = await client.post("/v1/deliveries/no-such/retry")

    assert {c["township"] for c in cases["items"]} == {"shilou", "shiqiao"}
    assert other.status_code == 200
    body = refused(ack, 403, "role_forbidden")
    assert body["errors"][0]["reason"] == "role 'auditor' may not POST /v1/alerts/alert-T2/acknowledge"
    refused(retry, 403, "role_forbidden")
    assert (await hub.rejections())["role_forbidden"] == before["role_forbidden"] + 2


async def test_the_public_reads_the_feed_and_nothing_else(hub: Hub) -> None:
    token = await hub.token("public", person="citizen-7")

    async with hub.client(token) as client:
        feed = await client.get("/v1/publications")
        cases = await client.get("/v1/cases")
        townships = await client.get("/v1/townships")

    assert feed.status_code == townships.status_code == 200
    assert len(townships.json()["items"]) == 16  # to filter the feed by
    refused(cases, 403, "role_forbidden")


async def test_publishing_needs_the_units_key_not_a_persons_token(hub: Hub) -> None:
    token = await hub.token("township_office", SHILOU_OFFICE)
    before = await hub.rejections()

    async with hub.client(token) as client:
        response = await client.post(
            "/v1/events", content=b"{}", headers={"Content-Type": "application/cloudevents+json"}
        )

    refused(response, 403, "publishing_needs_unit_key")
    assert (await hub.rejections())["needs_unit_key"] == before["needs_unit_key"] + 1


async def test_tampered_forged_and_expired_tokens_are_refused_and_counted_by_reason(hub: Hub) -> None:
    token = await hub.token("township_office", SHILOU_OFFICE)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    promoted = base64.urlsafe_b64encode(
        json.dumps({**claims, "role": "district_supervisor", "unit": SUPERVISOR}).encode()
    )
    none_header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    engine = make_engine(hub.url)
    try:
        secret = await token_secret(engine, hub.app.state.ctx.settings)
    finally:
        await engine.dispose()
    expired, _ = issue_token(
        secret, Directory.load(), unit=SHILOU_OFFICE, role="township_office", person="p-9", now=1_600_000_000
    )
    foreign, _ = issue_token(
        b"f" * 32, Directory.load(), unit=SUPERVISOR, role="district_supervisor", person="p-9"
    )
    before = await hub.rejections()

    attempts = {
        "tampered": f"{header}.{promoted.decode().rstrip('=')}.{signature}",
        "alg none": f"{none_header.decode().rstrip('=')}.{payload}.",
        "other secret": foreign,
        "expired": expired,
    }
    for what, credential in attempts.items():
        response = await me(hub, credential)
        assert response.status_code == 401, what

    after = await hub.rejections()
    assert after["bad_signature"] == before["bad_signature"] + 3
    assert after["token_expired"] == before["token_expired"] + 1


# --- sessions ------------------------------------------------------------------------------------


async def test_a_session_opened_with_a_token_carries_the_person_and_never_the_token(hub: Hub) -> None:
    token = await hub.token("township_office", SHILOU_OFFICE, "p-3001")

    async with hub.client() as browser:
        opened = await browser.post("/v1/session", json={"token": token})
        body = (await browser.get("/v1/me")).json()
        write = await browser.post("/v1/alerts/no-such/acknowledge", json={})

    assert opened.status_code == 204
    cookie = opened.headers["set-cookie"]
    assert token not in cookie
    assert (body["person"], body["role"], body["credential"]) == ("p-3001", "township", "token")
    refused(write, 403, "csrf_header_missing")


async def test_a_session_opened_with_a_key_ends_when_the_key_is_revoked(hub: Hub) -> None:
    key = await hub.key(SHILOU_OFFICE)
    async with hub.client() as browser:
        assert (await browser.post("/v1/session", json={"key": key})).status_code == 204
        assert (await browser.get("/v1/me")).json()["unit"] == SHILOU_OFFICE
        await hub.cli("keys", "revoke", key_id(key))
        after = await browser.get("/v1/me")

    refused(after, 401, "unauthenticated")


async def test_a_key_planted_in_the_cookie_is_refused(hub: Hub) -> None:
    key = await hub.key(SUPERVISOR)
    async with hub.client() as browser:
        browser.cookies.set(COOKIE, key)
        response = await browser.get("/v1/me")

    body = refused(response, 401, "unauthenticated")
    assert "sign in again" in body["errors"][0]["reason"]


async def test_a_session_cannot_publish_events(hub: Hub) -> None:
    key = await hub.key(SHILOU_OFFICE)
    async with hub.client() as browser:
        await browser.post("/v1/session", json={"key": key})
        response = await browser.post(
            "/v1/events",
            content=b"{}",
            headers={"Content-Type": "application/cloudevents+json", "X-Liandong-CSRF": "1"},
        )

    refused(response, 403, "publishing_needs_unit_key")


# --- rejections: counted and logged without the secret -------------------------------------------


async def test_a_refusal_is_logged_once_with_reason_key_id_path_and_client_but_no_secret(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    key = await hub.key(SHILOU_OFFICE)
    secret = key.split("_", 2)[2]
    forged = f"ld_{key_id(key)}_{'x' * len(secret)}"
    token = await hub.token("township_office", SHILOU_OFFICE, "p-4001")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    with caplog.at_level(logging.WARNING, logger=AUTH_LOG):
        await me(hub, forged)
        await me(hub, tampered)
        async with hub.client(token) as client:
            await client.post("/v1/events", content=b"{}")

    lines = [r.getMessage() for r in caplog.records if r.name == AUTH_LOG]
    assert len(lines) == 3, lines
    assert "reason=unknown_key" in lines[0]
    assert f"key={key_id(key)}" in lines[0]
    assert "path=/v1/me" in lines[0]
    assert "client=127.0.0.1" in lines[0]
    assert "reason=bad_signature" in lines[1]
    assert "sub=p-4001" in lines[1]
    assert "reason=needs_unit_key" in lines[2]
    assert "path=/v1/events" in lines[2]
    text = "\n".join(lines)
    for secret_text in (secret, "x" * 20, token.split(".")[2], tampered.split(".")[2], token):
        assert secret_text not in text


async def test_every_reason_is_exported_from_the_start(hub: Hub) -> None:
    reasons = await hub.rejections()

    assert {"missing", "malformed", "unknown_key", "csrf", "rate_limited", "forged_source"} <= set(reasons)


async def test_missing_malformed_and_csrf_refusals_are_counted(hub: Hub) -> None:
    before = await hub.rejections()
    key = await hub.key(SUPERVISOR)
    async with hub.client() as anonymous:
        await anonymous.get("/v1/cases")
    async with hub.client(**{"Authorization": "Basic abc"}) as basic:
        await basic.get("/v1/cases")
    async with hub.client() as browser:
        await browser.post("/v1/session", json={"key": key})
        await browser.post("/v1/supervision-orders", json={})  # no CSRF header

    after = await hub.rejections()
    assert after["missing"] == before["missing"] + 1
    assert after["malformed"] == before["malformed"] + 1
    assert after["csrf"] == before["csrf"] + 1


# --- rate limit ----------------------------------------------------------------------------------


@pytest.fixture
async def limited(hub: Hub) -> AsyncIterator[Hub]:
    """The same store behind an API whose units may send 3 requests, then one a minute."""
    settings = Settings.from_env(
        {
            "LIANDONG_DATA_DIR": str(hub.data_dir),
            "LIANDONG_DATABASE_URL": hub.url,
            "LIANDONG_RATE_LIMIT_PER_MIN": "1",
            "LIANDONG_RATE_LIMIT_BURST": "3",
        }
    )
    app = create_app(settings, "127.0.0.1:1")
    async with app.router.lifespan_context(app):
        yield Hub(app, hub.url, hub.data_dir)


async def statuses(hub: Hub, credential: str, n: int, path: str = "/v1/me") -> list[int]:
    async with hub.client(credential) as client:
        return [(await client.get(path)).status_code for _ in range(n)]


async def test_a_unit_over_its_rate_limit_is_answered_429_then_recovers(limited: Hub) -> None:
    office = await limited.key(SHILOU_OFFICE)
    second_office_key = await limited.key(SHILOU_OFFICE)
    police = await limited.key(POLICE)

    assert await statuses(limited, office, 3) == [200, 200, 200]
    async with limited.client(second_office_key) as client:
        over = await client.get("/v1/me")  # the bucket is the unit's, whichever of its keys
        publish = await client.post("/v1/events", content=b"{}")
    assert await statuses(limited, police, 1) == [200]  # another unit is not slowed

    body = refused(over, 429, "rate_limited")
    assert int(over.headers["retry-after"]) in (59, 60)
    assert "over 1 requests a minute (burst 3)" in body["errors"][0]["reason"]
    refused(publish, 429, "rate_limited")
    assert (await limited.rejections())["rate_limited"] == 2

    # A minute later (the bucket's clock moved on, not the test's), one request is allowed again.
    limiter = limited.app.state.auth.limiter
    wall = limiter.clock
    limiter.clock = lambda: wall() + 61
    assert await statuses(limited, office, 2) == [200, 429]


async def test_public_readers_each_have_their_own_bucket(limited: Hub) -> None:
    first = await limited.token("public", person="citizen-1")
    second = await limited.token("public", person="citizen-2")

    assert await statuses(limited, first, 4) == [200, 200, 200, 429]
    assert await statuses(limited, second, 1) == [200]

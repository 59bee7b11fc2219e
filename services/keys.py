"""API keys for publishing units: shown once, stored only as a SHA-256 of their secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.directory import Directory
from projections.schema import api_keys

PREFIX = "ld"


class UnknownUnit(LookupError):
    pass


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def issue_key(engine: AsyncEngine, directory: Directory, unit_id: str) -> str:
    if unit_id not in directory.units:
        raise UnknownUnit(unit_id)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(
            insert(api_keys).values(
                key_id=key_id, unit_id=unit_id, secret_sha256=_hash(secret), created_at=datetime.now(UTC)
            )
        )
    return f"{PREFIX}_{key_id}_{secret}"


async def unit_for_key(engine: AsyncEngine, key: str) -> str | None:
    """The unit a key belongs to, or None for a malformed, unknown or revoked key."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 12:
        return None
    _, key_id, secret = parts
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(api_keys.c.unit_id, api_keys.c.secret_sha256, api_keys.c.revoked_at).where(
                    api_keys.c.key_id == key_id
                )
            )
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_sha256, _hash(secret)):
        return None
    return str(row.unit_id)

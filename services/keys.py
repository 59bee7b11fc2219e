"""API keys for publishing units: shown once, stored only as a SHA-256 of their secret.

A key reads `ld_<12 hex id>_<secret>`. Its lifecycle: issued (optionally with an expiry), rotated
(a successor for the same unit; the old key stays valid for a grace period, then expires), revoked
(refused at once). Expiry is judged on the wall clock, never on a test's time source: a key's
validity is a security fact, not a simulated one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from events.directory import Directory
from projections.schema import api_keys

PREFIX = "ld"
DEFAULT_GRACE = timedelta(hours=24)
_KEY_ID = re.compile(r"[0-9a-f]{12}")

KeyRejection = Literal["malformed", "unknown_key", "revoked", "expired"]
KeyStatus = Literal["active", "rotated", "expired", "revoked"]


class UnknownUnit(LookupError):
    pass


class UnknownKey(LookupError):
    pass


class KeyNotActive(ValueError):
    """Rotating a key that is revoked, expired or already rotated."""


@dataclass(frozen=True, slots=True)
class KeyAccepted:
    key_id: str
    unit: str


@dataclass(frozen=True, slots=True)
class KeyRefused:
    # None when the presented string is not even shaped like a key: nothing of it is worth logging.
    key_id: str | None
    reason: KeyRejection


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as `liandong keys list` shows it: everything but the secret, which is never stored."""

    key_id: str
    unit: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: str | None

    def status(self, now: datetime) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "rotated" if self.replaced_by is not None else "active"


@dataclass(frozen=True, slots=True)
class Rotation:
    key: str
    key_id: str
    old_key_id: str
    old_expires_at: datetime


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite hands timestamps back naive (they were written in UTC).
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a string shaped like a key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not _KEY_ID.fullmatch(parts[1]) or not parts[2]:
        return None
    return parts[1], parts[2]


async def issue_key(
    engine: AsyncEngine, directory: Directory, unit_id: str, ttl: timedelta | None = None
) -> str:
    """A new key for `unit_id`; it expires after `ttl` (None: only when rotated or revoked)."""
    _, key = await _insert(engine, directory, unit_id, ttl, datetime.now(UTC))
    return key


async def _insert(
    engine: AsyncEngine, directory: Directory, unit_id: str, ttl: timedelta | None, now: datetime
) -> tuple[str, str]:
    if unit_id not in directory.units:
        raise UnknownUnit(unit_id)
    row, key = _new_key(unit_id, ttl, now)
    async with engine.begin() as conn:
        await conn.execute(insert(api_keys).values(**row))
    return str(row["key_id"]), key


def _new_key(unit_id: str, ttl: timedelta | None, now: datetime) -> tuple[dict[str, object], str]:
    """The row of a new key, and the key itself (the only place its secret ever exists)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row: dict[str, object] = {
        "key_id": key_id,
        "unit_id": unit_id,
        "secret_sha256": _hash(secret),
        "created_at": now,
        "expires_at": None if ttl is None else now + ttl,
    }
    return row, f"{PREFIX}_{key_id}_{secret}"


async def unit_for_key(
    engine: AsyncEngine, key: str, now: datetime | None = None
) -> KeyAccepted | KeyRefused:
    """The unit a key belongs to, or why it is refused.

    The secret is compared before anything else about the row is told: without it, a revoked or an
    expired key reads as unknown, so a key id alone reveals nothing.
    """
    parsed = parse_key(key)
    if parsed is None:
        return KeyRefused(None, "malformed")
    key_id, secret = parsed
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    api_keys.c.unit_id,
                    api_keys.c.secret_sha256,
                    api_keys.c.revoked_at,
                    api_keys.c.expires_at,
                ).where(api_keys.c.key_id == key_id)
            )
        ).first()
    if row is None or not hmac.compare_digest(row.secret_sha256, _hash(secret)):
        return KeyRefused(key_id, "unknown_key")
    if row.revoked_at is not None:
        return KeyRefused(key_id, "revoked")
    expires_at = _utc(row.expires_at)
    if expires_at is not None and expires_at <= (now or datetime.now(UTC)):
        return KeyRefused(key_id, "expired")
    return KeyAccepted(key_id, str(row.unit_id))


async def key_status(engine: AsyncEngine, key_id: str, now: datetime | None = None) -> KeyStatus | None:
    """The status of a key by id (None: unknown), for sessions opened with a key."""
    keys = await list_keys(engine, key_id=key_id)
    return keys[0].status(now or datetime.now(UTC)) if keys else None


async def list_keys(engine: AsyncEngine, unit: str | None = None, key_id: str | None = None) -> list[KeyInfo]:
    k = api_keys.c
    query = select(k.key_id, k.unit_id, k.created_at, k.expires_at, k.revoked_at, k.replaced_by).order_by(
        k.unit_id, k.created_at, k.key_id
    )
    if unit is not None:
        query = query.where(k.unit_id == unit)
    if key_id is not None:
        query = query.where(k.key_id == key_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        KeyInfo(
            key_id=r.key_id,
            unit=r.unit_id,
            created_at=_utc(r.created_at) or datetime.min.replace(tzinfo=UTC),
            expires_at=_utc(r.expires_at),
            revoked_at=_utc(r.revoked_at),
            replaced_by=r.replaced_by,
        )
        for r in rows
    ]


async def rotate_key(
    engine: AsyncEngine,
    directory: Directory,
    key_id: str,
    grace: timedelta = DEFAULT_GRACE,
    ttl: timedelta | None = None,
    now: datetime | None = None,
) -> Rotation:
    """Issue a successor for the key's unit; the old key expires after `grace` (at once for zero).

    The old key is marked in the same transaction as the successor is inserted, guarded on its still
    being active: two rotations racing for one key leave one successor, not two.
    """
    if grace < timedelta(0):
        raise ValueError("the grace period must not be negative")
    now = now or datetime.now(UTC)
    found = await list_keys(engine, key_id=key_id)
    if not found:
        raise UnknownKey(key_id)
    old = found[0]
    if old.status(now) != "active":
        raise KeyNotActive(f"key {key_id} is {old.status(now)}")
    if old.unit not in directory.units:
        raise UnknownUnit(old.unit)
    row, key = _new_key(old.unit, ttl, now)
    old_expires = now + grace if old.expires_at is None else min(old.expires_at, now + grace)
    k = api_keys.c
    async with engine.begin() as conn:
        await conn.execute(insert(api_keys).values(**row))
        marked = await conn.execute(
            update(api_keys)
            .where(k.key_id == key_id, k.replaced_by.is_(None), k.revoked_at.is_(None))
            .values(replaced_by=row["key_id"], expires_at=old_expires)
        )
        if marked.rowcount != 1:
            raise KeyNotActive(f"key {key_id} was rotated or revoked meanwhile")  # rolls back the insert
    return Rotation(key, str(row["key_id"]), key_id, old_expires)


async def revoke_key(engine: AsyncEngine, key_id: str, now: datetime | None = None) -> datetime:
    """Refuse the key from now on; revoking twice keeps the first moment. Returns that moment."""
    k = api_keys.c
    async with engine.begin() as conn:
        await conn.execute(
            update(api_keys)
            .where(k.key_id == key_id, k.revoked_at.is_(None))
            .values(revoked_at=now or datetime.now(UTC))
        )
        revoked = await conn.scalar(select(k.revoked_at).where(k.key_id == key_id))
    moment = _utc(revoked)
    if moment is None:
        raise UnknownKey(key_id)
    return moment

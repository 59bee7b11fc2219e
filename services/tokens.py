"""Signed tokens for people: HS256 JWTs made with the standard library, no new dependency.

A token names a person (`sub`, `name`), the unit they work for and their role in it. The hub signs
it with one secret (LIANDONG_TOKEN_SECRET, or one generated once into `hub_meta`), so the API and the
CLI that issues tokens agree. Verification refuses anything but HS256 (`alg: none` above all),
compares the signature in constant time before it reads a claim, and checks the time window and
that the role fits the unit's kind in the directory.

Tokens cannot be revoked one by one: they are short-lived (8 hours by default). Changing the secret
ends every token at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast, get_args

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.directory import Directory
from projections.db import upsert
from projections.schema import hub_meta
from services.settings import Settings

TokenRole = Literal["district_supervisor", "township_office", "agency", "auditor", "public"]
TOKEN_ROLES: tuple[TokenRole, ...] = get_args(TokenRole)
TokenRejection = Literal["malformed", "bad_signature", "token_expired", "role_mismatch"]

ISSUER = "liandong"
ALGORITHM = "HS256"
SECRET_KEY = "token_secret"  # the hub_meta row of a generated secret
LEEWAY_S = 30  # clocks of the issuing and the verifying machine may differ this much
MAX_TOKEN_CHARS = 4096
MAX_TTL_S = 31 * 86_400
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenRejected(Exception):
    """Why a token is refused; `who` is a jti/sub fit for a log line (never the token)."""

    def __init__(self, reason: TokenRejection, who: str | None = None) -> None:
        super().__init__(reason)
        self.reason: TokenRejection = reason
        self.who = who


class RoleMismatch(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    name: str
    unit: str
    role: TokenRole
    iat: int
    exp: int
    jti: str
    iss: str = ISSUER
    # A browser session opened with an API key carries the key's id: revoking the key ends it.
    key_id: str | None = None

    @property
    def who(self) -> str:
        return f"jti={self.jti} sub={self.sub}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenRejected("malformed")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenRejected("malformed") from None


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise TokenRejected("malformed") from None
    if not isinstance(value, dict):
        raise TokenRejected("malformed")
    return cast(dict[str, Any], value)


def key_id_of(secret: bytes) -> str:
    """The `kid` of a secret: names it without revealing it (a hash of 256 random bits)."""
    return hashlib.sha256(b"liandong-token-kid:" + secret).hexdigest()[:12]


def role_fits(directory: Directory, unit_id: str, role: TokenRole) -> str | None:
    """Why `role` does not fit `unit_id`, or None if it does."""
    if role == "public" and not unit_id:
        return None
    unit = directory.units.get(unit_id)
    if unit is None:
        return f"unit '{unit_id}' is not in the directory"
    township_office = unit.kind == "enforcement_office" and unit.home_township is not None
    fits = {
        "district_supervisor": unit.kind == "supervision",
        "township_office": township_office,
        "agency": unit.kind != "supervision" and not township_office,
        "auditor": True,
        "public": True,
    }[role]
    return None if fits else f"role '{role}' does not fit unit '{unit_id}' (kind {unit.kind})"


def unit_role(directory: Directory, unit_id: str) -> TokenRole:
    """The role an API key's unit holds, as a token names it (for sessions opened with a key)."""
    unit = directory.units[unit_id]
    if unit.kind == "supervision":
        return "district_supervisor"
    if unit.kind == "enforcement_office" and unit.home_township:
        return "township_office"
    return "agency"


def sign(secret: bytes, claims: Claims) -> str:
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": key_id_of(secret)}
    body = {k: v for k, v in asdict(claims).items() if v is not None}
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    )
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def issue_token(
    secret: bytes,
    directory: Directory,
    *,
    unit: str,
    role: TokenRole,
    person: str,
    name: str = "",
    ttl_s: int = 8 * 3600,
    key_id: str | None = None,
    now: float | None = None,
) -> tuple[str, Claims]:
    """A signed token, and its claims. Raises RoleMismatch if the role does not fit the unit."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"a token lives between 1 second and {MAX_TTL_S // 86_400} days")
    if not person:
        raise ValueError("a token names a person")
    wrong = role_fits(directory, unit, role)
    if wrong is not None:
        raise RoleMismatch(wrong)
    iat = int(time.time() if now is None else now)
    claims = Claims(
        sub=person,
        name=name,
        unit=unit,
        role=role,
        iat=iat,
        exp=iat + ttl_s,
        jti=secrets.token_hex(8),
        key_id=key_id,
    )
    return sign(secret, claims), claims


def looks_like_token(credential: str) -> bool:
    return credential.count(".") == 2


def verify(secret: bytes, token: str, directory: Directory, now: float | None = None) -> Claims:
    """The claims of a token this hub signed, still valid, whose role fits its unit.

    Raises TokenRejected. Nothing in the payload is trusted before the signature checks out.
    """
    if len(token) > MAX_TOKEN_CHARS or not looks_like_token(token):
        raise TokenRejected("malformed")
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = _json(_unb64(header_b64))
    signature = _unb64(signature_b64)
    # The algorithm is ours to choose, not the token's: only HS256, with this hub's key id.
    if header.get("alg") != ALGORITHM or header.get("kid") != key_id_of(secret):
        raise TokenRejected("bad_signature", _unverified_who(payload_b64))
    expected = hmac.new(secret, f"{header_b64}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise TokenRejected("bad_signature", _unverified_who(payload_b64))
    claims = _claims(_json(_unb64(payload_b64)))
    moment = time.time() if now is None else now
    if claims.exp + LEEWAY_S < moment or claims.iat - LEEWAY_S > moment:
        raise TokenRejected("token_expired", claims.who)
    wrong = role_fits(directory, claims.unit, claims.role)
    if wrong is not None:
        raise TokenRejected("role_mismatch", claims.who)
    return claims


def _claims(raw: dict[str, Any]) -> Claims:
    strings = ("sub", "name", "unit", "jti", "iss")
    ok = (
        all(isinstance(raw.get(k), str) for k in strings)
        and raw.get("role") in TOKEN_ROLES
        and all(type(raw.get(k)) is int for k in ("iat", "exp"))
        and isinstance(raw.get("key_id"), str | None)
        and raw.get("iss") == ISSUER
        and raw["sub"]
        and raw["jti"]
    )
    if not ok or raw["exp"] <= raw["iat"]:
        raise TokenRejected("malformed")
    return Claims(
        sub=raw["sub"],
        name=raw["name"],
        unit=raw["unit"],
        role=raw["role"],
        iat=raw["iat"],
        exp=raw["exp"],
        jti=raw["jti"],
        key_id=raw.get("key_id"),
    )


def _unverified_who(payload_b64: str) -> str | None:
    """jti/sub of a token whose signature failed, marked as claimed: useful to trace a forgery."""
    try:
        raw = _json(_unb64(payload_b64))
    except TokenRejected:
        return None
    return f"unverified jti={raw.get('jti')} sub={raw.get('sub')}"


async def token_secret(engine: AsyncEngine, settings: Settings) -> bytes:
    """LIANDONG_TOKEN_SECRET, else the hub's generated secret: inserted if absent, then re-read, so
    every process of one hub signs and verifies with the same secret."""
    if settings.token_secret is not None:
        return settings.token_secret
    async with engine.begin() as conn:
        stmt = upsert(conn, hub_meta).values(key=SECRET_KEY, value=_b64(secrets.token_bytes(32)))
        await conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
        value = await conn.scalar(select(hub_meta.c.value).where(hub_meta.c.key == SECRET_KEY))
    return _unb64(str(value))

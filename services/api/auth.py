"""Credentials: which unit (and which person) is asking, and every refusal counted and logged.

`Authorization: Bearer` carries either a unit's API key (`ld_<id>_<secret>`) or a signed token
(three base64url parts, two dots): a person's token, or the session token the browser's cookie holds.
A refusal increments `liandong_auth_rejections_total{reason}` and logs one WARNING line naming the
reason, the key id or the token's jti/sub, the path and the client address, never the credential.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import JSONResponse

from connectors.http_gateway.ingest import FieldProblem
from events.masking import mask_text
from services.api.context import ApiContext
from services.api.problems import problem
from services.api.ratelimit import RateLimiter, retry_after
from services.keys import KeyRefused, key_status, unit_for_key
from services.tokens import Claims, TokenRejected, TokenRole, looks_like_token, token_secret, verify

log = logging.getLogger("liandong.auth")
Credential = Literal["key", "token"]
_UNSAFE = re.compile(r"[^0-9A-Za-z._:=@/ -]")

_UNAUTHENTICATED: dict[str, str] = {
    "missing": "expected 'Bearer <key>' with a key issued to your unit, or 'Bearer <token>'",
    "malformed": "expected 'Bearer <key>' with a key issued to your unit, or 'Bearer <token>'",
    "unknown_key": "expected 'Bearer <key>' with a key issued to your unit",
    "revoked": "the key was revoked",
    "expired": "the key has expired; use its successor or ask for a new one",
    "bad_signature": "the token's signature does not verify",
    "token_expired": "the token has expired, or is not valid yet",
    "role_mismatch": "the token's role does not fit its unit in the directory",
}


class Rejected(Exception):
    """A refused credential; `who` is a key id or a token's jti/sub, fit for a log line."""

    def __init__(self, reason: str, who: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.who = who


@dataclass(frozen=True, slots=True)
class Identity:
    unit: str
    credential: Credential
    who: str  # key id or jti/sub: what a log line may name
    key_id: str | None = None  # the API key presented, or the key a session was opened with
    person: str | None = None  # a token's subject; None for a key and a key's session
    token_role: TokenRole | None = None  # None for a key: its role comes from the directory
    name: str = ""
    claims: Claims | None = None

    @property
    def bucket(self) -> str:
        """Whose rate limit a request spends: the unit's, or a public reader's own."""
        if self.token_role == "public":
            return f"person:{self.person}"
        return f"unit:{self.unit}"


@dataclass(slots=True)
class AuthState:
    """Per API process: the token secret once read, and the rate-limit buckets."""

    secret: bytes | None = None
    limiter: RateLimiter | None = None

    async def token_secret(self, ctx: ApiContext) -> bytes:
        if self.secret is None:
            self.secret = await token_secret(ctx.engine, ctx.settings)
        return self.secret

    def rate_limiter(self, ctx: ApiContext) -> RateLimiter:
        if self.limiter is None:
            self.limiter = RateLimiter(ctx.settings.rate_limit_per_min, ctx.settings.rate_limit_burst)
        return self.limiter


def auth_state(app: Any) -> AuthState:
    """The AuthState of an app (`access.install` creates it; created here for a bare app)."""
    state: AuthState | None = getattr(app.state, "auth", None)
    if state is None:
        state = app.state.auth = AuthState()
    return state


async def identify(
    ctx: ApiContext, state: AuthState, authorization: str | None, *, via_cookie: bool = False
) -> Identity:
    """The identity behind an Authorization header; raises Rejected."""
    if not authorization or not authorization.strip():
        raise Rejected("missing")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    # RFC 9110: the scheme name is case-insensitive.
    if scheme.lower() != "bearer" or not credential:
        raise Rejected("malformed")
    if looks_like_token(credential):
        return await _token_identity(ctx, state, credential)
    if via_cookie:
        # The cookie holds a session token, never a key: a key found there was not put there by us.
        raise Rejected("malformed")
    check = await unit_for_key(ctx.engine, credential)
    if isinstance(check, KeyRefused):
        raise Rejected(check.reason, f"key={check.key_id}" if check.key_id else None)
    if check.unit not in ctx.directory.units:
        raise Rejected("unknown_key", f"key={check.key_id}")
    return Identity(unit=check.unit, credential="key", who=f"key={check.key_id}", key_id=check.key_id)


async def _token_identity(ctx: ApiContext, state: AuthState, token: str) -> Identity:
    try:
        claims = verify(await state.token_secret(ctx), token, ctx.directory)
    except TokenRejected as exc:
        raise Rejected(exc.reason, exc.who) from None
    if claims.key_id is not None:
        # A session opened with a key lasts only as long as the key.
        status = await key_status(ctx.engine, claims.key_id)
        if status is None:
            raise Rejected("unknown_key", claims.who)
        if status in ("revoked", "expired"):
            raise Rejected(status, claims.who)
    return Identity(
        unit=claims.unit,
        credential="token",
        who=claims.who,
        key_id=claims.key_id,
        person=None if claims.key_id is not None else claims.sub,
        token_role=claims.role,
        name=claims.name,
        claims=claims,
    )


def record_rejection(
    ctx: ApiContext, scope: Mapping[str, Any], reason: str, who: str | None = None, unit: str | None = None
) -> None:
    """Count a refusal and log it once: reason, key id or jti/sub, path, client; never the secret.
    `unit`: the authenticated unit, when known, as the line's correlation field."""
    ctx.metrics.auth_rejections.labels(reason=reason).inc()
    client = scope.get("client")
    address = f"{client[0]}:{client[1]}" if client else "-"
    log.warning(
        "auth refused reason=%s who=%s method=%s path=%s client=%s",
        reason,
        _safe(who),
        scope.get("method", "-"),
        _safe(str(scope.get("path", "-"))),
        address,
        extra={"unit": unit} if unit else None,
    )


def _safe(text: str | None) -> str:
    """Printable, short, and with ID and phone numbers masked: a claimed sub is attacker-chosen text."""
    if not text:
        return "-"
    return _UNSAFE.sub("?", mask_text(text[:120]) or "")


def unauthenticated(reason: str = "missing", via_cookie: bool = False) -> JSONResponse:
    detail = _UNAUTHENTICATED.get(reason, _UNAUTHENTICATED["malformed"])
    if via_cookie and reason == "malformed":
        detail = "the session cookie holds no valid session: sign in again"
    return problem(
        401,
        "unauthenticated",
        "A valid API key or token is required",
        "需要有效的 API 密钥或令牌",
        [FieldProblem("Authorization", detail)],
        headers={"WWW-Authenticate": "Bearer"},
    )


def role_forbidden(role: str, method: str, path: str) -> JSONResponse:
    return problem(
        403,
        "role_forbidden",
        "Your role may not use this endpoint",
        "您的角色无权使用该接口",
        [FieldProblem("Authorization", f"role '{role}' may not {method} {path}")],
    )


def needs_unit_key() -> JSONResponse:
    return problem(
        403,
        "publishing_needs_unit_key",
        "Publishing events needs the unit's API key",
        "发布事件须使用本单位的 API 密钥",
        [FieldProblem("Authorization", "a token (a person or a browser session) cannot publish events")],
    )


def rate_limited(limiter: RateLimiter, seconds: float) -> JSONResponse:
    return problem(
        429,
        "rate_limited",
        "Too many requests from your unit; retry later",
        "本单位请求过于频繁，请稍后再试",
        [
            FieldProblem(
                "Authorization",
                f"over {limiter.rate_per_s * 60:g} requests a minute (burst {limiter.burst:g})",
            )
        ],
        headers={"Retry-After": retry_after(seconds)},
    )

"""Bearer keys: which unit is asking."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from connectors.http_gateway.ingest import FieldProblem
from services.api.context import ApiContext
from services.api.problems import problem
from services.keys import unit_for_key


async def authenticate(ctx: ApiContext, authorization: str | None) -> str | None:
    scheme, _, key = (authorization or "").partition(" ")
    # RFC 9110: the scheme name is case-insensitive.
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return await unit_for_key(ctx.engine, key.strip())


def unauthenticated() -> JSONResponse:
    return problem(
        401,
        "unauthenticated",
        "A valid API key is required",
        "需要有效的 API 密钥",
        [FieldProblem("Authorization", "expected 'Bearer <key>' with a key issued to your unit")],
        headers={"WWW-Authenticate": "Bearer"},
    )

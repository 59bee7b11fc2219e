"""Who is reading, and what they may read: viewers, roles, township scope, and the browser session.

A viewer is the unit of an API key, sent as `Authorization: Bearer <key>` or held in the session
cookie. The middleware turns the cookie into that header, so every route authenticates one way.
Roles come from the directory: the supervision section reads the district, a township's enforcement
office its township, any other unit the townships of its jurisdiction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from connectors.http_gateway.ingest import FieldProblem
from events.directory import Directory
from services.api.auth import unauthenticated
from services.api.context import Ctx
from services.api.export import Column, respond
from services.api.listing import (
    LIST_RESPONSES,
    PROBLEMS,
    PageDep,
    ProblemError,
    problem_response,
    query_problem,
)
from services.api.models import Listing, Me, TownshipItem
from services.api.problems import problem, unknown_township
from services.keys import unit_for_key

Role = Literal["district", "township", "unit"]
SESSION_COOKIE = "liandong_session"
SESSION_PATH = "/v1/session"
CSRF_HEADER = b"x-liandong-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_MAX_AGE_S = 12 * 3600  # a working day; the key itself stays valid until revoked

router = APIRouter()
bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `liandong keys issue UNIT`; browsers use the session cookie instead",
)


@dataclass(frozen=True, slots=True)
class Viewer:
    unit: str
    name_zh: str
    name_en: str
    kind: str
    role: Role
    townships: tuple[str, ...]

    def sees(self, township: str | None) -> bool:
        return self.role == "district" or township in self.townships


def viewer_for(directory: Directory, unit_id: str) -> Viewer:
    unit = directory.units[unit_id]
    role: Role
    if unit.kind == "supervision":
        role, covered = "district", set(directory.townships)
    elif unit.kind == "enforcement_office" and unit.home_township:
        role, covered = "township", {unit.home_township}
    else:
        role, covered = "unit", set(unit.jurisdiction)
    townships = tuple(t for t in directory.townships if t in covered)
    return Viewer(unit.id, unit.name_zh, unit.name_en, unit.kind, role, townships)


async def current_viewer(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Viewer:
    unit = await unit_for_key(ctx.engine, credentials.credentials.strip()) if credentials else None
    if unit is None or unit not in ctx.directory.units:
        raise ProblemError(unauthenticated())
    return viewer_for(ctx.directory, unit)


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


# --- township scope ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """The townships a request reads: the viewer's, narrowed to one by `township`."""

    viewer: Viewer
    township: str | None
    townships: tuple[str, ...]

    @property
    def unrestricted(self) -> bool:
        # The district reads every row, including rows that name no township.
        return self.viewer.role == "district" and self.township is None

    def where(self, column: Any) -> list[ColumnElement[bool]]:
        return [] if self.unrestricted else [column.in_(self.townships)]

    def allows(self, township: str | None) -> bool:
        return self.unrestricted or township in self.townships


def scope_for(viewer: Viewer, known: Sequence[str], township: str | None) -> Scope:
    if township is None:
        return Scope(viewer, None, viewer.townships)
    if township not in known:
        raise ProblemError(unknown_township(township))
    if township not in viewer.townships:
        raise ProblemError(
            problem(
                403,
                "forbidden",
                "This township is outside your scope",
                "无权查看该镇街的数据",
                [
                    FieldProblem(
                        "township", f"'{viewer.unit}' may read {', '.join(viewer.townships) or 'none'}"
                    )
                ],
            )
        )
    return Scope(viewer, township, (township,))


async def township_scope(
    viewer: ViewerDep,
    ctx: Ctx,
    township: Annotated[
        str | None, Query(description="Township code, e.g. shilou; default: every township you may read")
    ] = None,
) -> Scope:
    return scope_for(viewer, tuple(ctx.directory.townships), township)


ScopeDep = Annotated[Scope, Depends(township_scope)]


# --- session cookie ------------------------------------------------------------------------------


class SessionCookieMiddleware:
    """Cookie -> `Authorization: Bearer`, and the CSRF rule for cookie-authenticated writes.

    A browser sends the cookie with any request, even one a foreign page makes it send; it cannot add
    a custom header cross-site without a CORS preflight, which this API never grants. So a request
    other than GET/HEAD/OPTIONS that relies on the cookie must carry `X-Liandong-CSRF: 1`. An
    explicit Authorization header wins over the cookie and needs no CSRF header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        if any(name == b"authorization" for name, _ in headers):
            await self.app(scope, receive, send)
            return
        cookies = b"; ".join(value for name, value in headers if name == b"cookie").decode("latin-1")
        key = cookie_parser(cookies).get(SESSION_COOKIE) if cookies else None
        if not key:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        logging_in = method == "POST" and scope["path"] == SESSION_PATH
        csrf = next((value for name, value in headers if name == CSRF_HEADER), None)
        if method not in SAFE_METHODS and not logging_in and csrf != b"1":
            refused = problem(
                403,
                "csrf_header_missing",
                "A request authenticated by the session cookie must carry X-Liandong-CSRF: 1",
                "使用会话 Cookie 的写请求须带 X-Liandong-CSRF: 1 请求头",
                [FieldProblem("X-Liandong-CSRF", "required with the session cookie for this method")],
            )
            await refused(scope, receive, send)
            return
        headers.append((b"authorization", f"Bearer {key}".encode("latin-1")))
        await self.app({**scope, "headers": headers}, receive, send)


class SessionRequest(BaseModel):
    key: str = Field(min_length=1, max_length=256, description="An API key issued to your unit")


@router.post("/v1/session", status_code=204, responses={401: PROBLEMS[401]})
async def open_session(body: SessionRequest, request: Request, ctx: Ctx) -> Response:
    """Sign in a browser: the key goes into an HttpOnly, SameSite=Strict cookie."""
    key = body.key.strip()
    unit = await unit_for_key(ctx.engine, key)
    if unit is None or unit not in ctx.directory.units:
        return unauthenticated()
    response = Response(status_code=204)
    response.set_cookie(
        SESSION_COOKIE,
        key,
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.delete("/v1/session", status_code=204)
async def close_session() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/v1/me", response_model=Me, responses=PROBLEMS)
async def me(viewer: ViewerDep) -> JSONResponse:
    """The unit behind the key or session, its role and the townships it may read."""
    return JSONResponse(
        {
            "unit": viewer.unit,
            "name_zh": viewer.name_zh,
            "name_en": viewer.name_en,
            "kind": viewer.kind,
            "role": viewer.role,
            "townships": list(viewer.townships),
        }
    )


TOWNSHIP_COLUMNS = (
    Column("township", "镇街代码", "Township code"),
    Column("name_zh", "镇街", "Township"),
    Column("name_en", "英文名", "English name"),
)


@router.get("/v1/townships", response_model=Listing[TownshipItem], responses=LIST_RESPONSES)
async def townships(viewer: ViewerDep, ctx: Ctx, page: PageDep) -> Response:
    """The townships the viewer may read, in the directory's order."""
    items = [
        {"township": code, "name_zh": t.name_zh, "name_en": t.name_en}
        for code, t in ctx.directory.townships.items()
        if code in viewer.townships
    ]
    rows = page.slice(items)
    return await respond(
        page.format,
        "townships",
        TOWNSHIP_COLUMNS,
        rows,
        total=len(items),
        limit=page.limit,
        offset=page.offset,
    )


def install(app: FastAPI) -> None:
    """The session middleware and the handlers that turn refusals into problem+json."""
    app.add_middleware(SessionCookieMiddleware)
    app.add_exception_handler(ProblemError, problem_response)
    app.add_exception_handler(RequestValidationError, query_problem)
    app.include_router(router, tags=["access"])

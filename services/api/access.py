"""Who is reading, and what they may do: viewers, roles, township scope, and the browser session.

A viewer is the unit of an API key or a person's token, sent as `Authorization: Bearer ...` or held
(as a session token, never as the key) in the session cookie. The middleware turns the cookie into
that header, so every route authenticates one way.

Roles: the supervision section reads the district; a township's enforcement office its township; any
other unit (an agency) the townships of its jurisdiction. A key's role comes from the directory; a
token names its role, which must fit its unit. An auditor reads every township and writes nothing;
the public reads only the public feed, /v1/me and /v1/townships. Routes state what they need with a
dependency (`ViewerDep`, `WriterDep`, `AnyViewerDep`, or `require(...)`): deny by default.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
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
from services.api.auth import (
    AuthState,
    Credential,
    Identity,
    Rejected,
    auth_state,
    identify,
    rate_limited,
    record_rejection,
    role_forbidden,
    unauthenticated,
)
from services.api.context import ApiContext, Ctx
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
from services.tokens import MAX_TOKEN_CHARS, TokenRole, issue_token, unit_role

Role = Literal["district", "township", "unit", "auditor", "public"]
ROLE_OF_TOKEN: dict[TokenRole, Role] = {
    "district_supervisor": "district",
    "township_office": "township",
    "agency": "unit",
    "auditor": "auditor",
    "public": "public",
}
READERS: tuple[Role, ...] = ("district", "township", "unit", "auditor")
WRITERS: tuple[Role, ...] = ("district", "township", "unit")
SESSION_COOKIE = "liandong_session"
SESSION_PATH = "/v1/session"
CSRF_HEADER = b"x-liandong-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A working day. The cookie holds a session token that expires then (or with the person's token,
# or as soon as the key it was opened with is revoked or expires).
SESSION_MAX_AGE_S = 12 * 3600
VIA_COOKIE = "liandong.via_cookie"  # ASGI scope key: this request authenticates by the cookie

router = APIRouter()
bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `liandong keys issue UNIT`, or a token from `liandong tokens issue`; "
    "browsers use the session cookie instead",
)


@dataclass(frozen=True, slots=True)
class Viewer:
    unit: str
    name_zh: str
    name_en: str
    kind: str
    role: Role
    townships: tuple[str, ...]
    person: str | None = None  # a token's subject; None for a key (and a session opened with one)
    credential: Credential = "key"
    who: str = "-"  # key id or token jti/sub, for log lines

    @property
    def reads_all(self) -> bool:
        """The district and the auditor read every township, including rows that name none."""
        return self.role in ("district", "auditor")

    def sees(self, township: str | None) -> bool:
        if self.role == "public":
            return False
        return self.reads_all or township in self.townships


def viewer_for(directory: Directory, unit_id: str) -> Viewer:
    """The viewer of a unit's API key: its role and townships follow from the directory."""
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


def viewer_of(directory: Directory, identity: Identity) -> Viewer:
    if identity.token_role is None:
        viewer = viewer_for(directory, identity.unit)
        return replace(viewer, credential=identity.credential, who=identity.who)
    role = ROLE_OF_TOKEN[identity.token_role]
    everywhere = tuple(directory.townships)
    unit = directory.units.get(identity.unit)
    if role == "public":
        # No township's own data: should a route ever let the public through, its scope is empty.
        viewer = Viewer(identity.unit, "公众", "Public", "public", "public", ())
    elif unit is None:  # verify() checked the unit; the directory may have changed since
        raise Rejected("role_mismatch", identity.who)
    elif role == "auditor":
        viewer = Viewer(unit.id, unit.name_zh, unit.name_en, unit.kind, "auditor", everywhere)
    else:
        viewer = viewer_for(directory, unit.id)
        if viewer.role != role:
            raise Rejected("role_mismatch", identity.who)
    return replace(viewer, person=identity.person, credential=identity.credential, who=identity.who)


async def authenticated(
    request: Request,
    ctx: Ctx,
    # Read from the request below; declared so that the OpenAPI schema names the scheme.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Viewer:
    """Any valid credential, the public's included. Refusals are counted; the rate limit is spent."""
    state = auth_state(request.app)
    via_cookie = bool(request.scope.get(VIA_COOKIE))
    try:
        identity = await identify(ctx, state, request.headers.get("authorization"), via_cookie=via_cookie)
        viewer = viewer_of(ctx.directory, identity)
    except Rejected as exc:
        record_rejection(ctx, request.scope, exc.reason, exc.who)
        raise ProblemError(unauthenticated(exc.reason, via_cookie)) from None
    spend(ctx, state, request, identity)
    return viewer


def spend(ctx: ApiContext, state: AuthState, request: Request, identity: Identity) -> None:
    """Take one request from the identity's bucket, or refuse with 429."""
    limiter = state.rate_limiter(ctx)
    wait = limiter.take(identity.bucket)
    if wait > 0:
        record_rejection(ctx, request.scope, "rate_limited", identity.who)
        raise ProblemError(rate_limited(limiter, wait))


def require(*roles: Role) -> Callable[..., Awaitable[Viewer]]:
    """A dependency: an authenticated viewer whose role is one of `roles`, else 403 role_forbidden."""
    allowed = frozenset(roles)

    async def viewer_in_role(
        request: Request, ctx: Ctx, viewer: Annotated[Viewer, Depends(authenticated)]
    ) -> Viewer:
        if viewer.role not in allowed:
            record_rejection(ctx, request.scope, "role_forbidden", viewer.who)
            raise ProblemError(role_forbidden(viewer.role, request.method, request.url.path))
        return viewer

    return viewer_in_role


# Reads of the hub's data: every role but the public.
ViewerDep = Annotated[Viewer, Depends(require(*READERS))]
# Commands (acknowledge, order, retry): not the auditor, who reads only, nor the public.
WriterDep = Annotated[Viewer, Depends(require(*WRITERS))]
# Who am I, and which townships are there: anyone with a credential.
AnyViewerDep = Annotated[Viewer, Depends(require(*READERS, "public"))]


# --- township scope ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """The townships a request reads: the viewer's, narrowed to one by `township`."""

    viewer: Viewer
    township: str | None
    townships: tuple[str, ...]

    @property
    def unrestricted(self) -> bool:
        # The district (and the auditor) read every row, including rows that name no township.
        return self.viewer.reads_all and self.township is None

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
    request: Request,
    viewer: ViewerDep,
    ctx: Ctx,
    township: Annotated[
        str | None, Query(description="Township code, e.g. shilou; default: every township you may read")
    ] = None,
) -> Scope:
    try:
        return scope_for(viewer, tuple(ctx.directory.townships), township)
    except ProblemError as exc:
        if exc.response.status_code == 403:
            record_rejection(ctx, request.scope, "township_not_permitted", viewer.who)
        raise


ScopeDep = Annotated[Scope, Depends(township_scope)]


# --- session cookie ------------------------------------------------------------------------------


class SessionCookieMiddleware:
    """Cookie -> `Authorization: Bearer`, and the CSRF rule for cookie-authenticated writes.

    A browser sends the cookie with any request, even one a foreign page makes it send; it cannot add
    a custom header cross-site without a CORS preflight, which this API never grants. So a request
    other than GET/HEAD/OPTIONS that relies on the cookie must carry `X-Liandong-CSRF: 1`. An
    explicit Authorization header wins over the cookie and needs no CSRF header. The cookie holds a
    session token; the request is marked as cookie-borne, so a key planted in the cookie is refused.
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
        session = cookie_parser(cookies).get(SESSION_COOKIE) if cookies else None
        if not session:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        logging_in = method == "POST" and scope["path"] == SESSION_PATH
        csrf = next((value for name, value in headers if name == CSRF_HEADER), None)
        if method not in SAFE_METHODS and not logging_in and csrf != b"1":
            ctx: ApiContext | None = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
            if ctx is not None:
                record_rejection(ctx, scope, "csrf")
            refused = problem(
                403,
                "csrf_header_missing",
                "A request authenticated by the session cookie must carry X-Liandong-CSRF: 1",
                "使用会话 Cookie 的写请求须带 X-Liandong-CSRF: 1 请求头",
                [FieldProblem("X-Liandong-CSRF", "required with the session cookie for this method")],
            )
            await refused(scope, receive, send)
            return
        headers.append((b"authorization", f"Bearer {session}".encode("latin-1")))
        await self.app({**scope, "headers": headers, VIA_COOKIE: True}, receive, send)


class SessionRequest(BaseModel):
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TOKEN_CHARS,
        description="An API key issued to your unit (a token is accepted here too)",
    )
    token: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TOKEN_CHARS,
        description="A person's token from `liandong tokens issue`",
    )


@router.post("/v1/session", status_code=204, responses={401: PROBLEMS[401]})
async def open_session(body: SessionRequest, request: Request, ctx: Ctx) -> Response:
    """Sign in a browser: a signed session token goes into an HttpOnly, SameSite=Strict cookie.

    The cookie never holds the key or the person's token itself: the session token carries the same
    unit and role, expires within SESSION_MAX_AGE_S, and a session opened with a key ends when the
    key is revoked or expires.
    """
    credential = (body.token or body.key or "").strip()
    if not credential:
        return problem(
            422,
            "invalid_body",
            "The request body is not valid",
            "请求内容不符合要求",
            [FieldProblem("key", "give an API key as `key`, or a token as `token`")],
        )
    state = auth_state(request.app)
    try:
        identity = await identify(ctx, state, f"Bearer {credential}")
        viewer_of(ctx.directory, identity)  # the same checks as every later request
    except Rejected as exc:
        record_rejection(ctx, request.scope, exc.reason, exc.who)
        return unauthenticated(exc.reason)
    spend(ctx, state, request, identity)
    secret = await state.token_secret(ctx)
    now = int(time.time())
    claims = identity.claims
    if claims is None:  # an API key: the session is the key's unit, in the role its kind gives it
        unit = ctx.directory.units[identity.unit]
        token, session = issue_token(
            secret,
            ctx.directory,
            unit=unit.id,
            role=unit_role(ctx.directory, unit.id),
            person=f"key:{identity.key_id}",
            name=unit.name_zh,
            ttl_s=SESSION_MAX_AGE_S,
            key_id=identity.key_id,
            now=now,
        )
    else:  # a token: the same person and role, for a working day at most
        ttl = min(SESSION_MAX_AGE_S, claims.exp - now)
        if ttl <= 0:
            record_rejection(ctx, request.scope, "token_expired", claims.who)
            return unauthenticated("token_expired")
        token, session = issue_token(
            secret,
            ctx.directory,
            unit=claims.unit,
            role=claims.role,
            person=claims.sub,
            name=claims.name,
            ttl_s=ttl,
            key_id=claims.key_id,
            now=now,
        )
    response = Response(status_code=204)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=session.exp - session.iat,
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
async def me(viewer: AnyViewerDep) -> JSONResponse:
    """The unit (and person) behind the key, token or session, the role and the townships it reads."""
    return JSONResponse(
        {
            "unit": viewer.unit,
            "name_zh": viewer.name_zh,
            "name_en": viewer.name_en,
            "kind": viewer.kind,
            "role": viewer.role,
            "townships": list(viewer.townships),
            "person": viewer.person,
            "credential": viewer.credential,
        }
    )


TOWNSHIP_COLUMNS = (
    Column("township", "镇街代码", "Township code"),
    Column("name_zh", "镇街", "Township"),
    Column("name_en", "英文名", "English name"),
)


@router.get("/v1/townships", response_model=Listing[TownshipItem], responses=LIST_RESPONSES)
async def townships(viewer: AnyViewerDep, ctx: Ctx, page: PageDep) -> Response:
    """The townships the viewer may read, in the directory's order; for the public, every township
    (the public feed can be filtered by each)."""
    items = [
        {"township": code, "name_zh": t.name_zh, "name_en": t.name_en}
        for code, t in ctx.directory.townships.items()
        if code in viewer.townships or viewer.role == "public"
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
    """The session middleware, the per-process credential state, and the handlers that turn refusals
    into problem+json."""
    app.state.auth = AuthState()
    app.add_middleware(SessionCookieMiddleware)
    app.add_exception_handler(ProblemError, problem_response)
    app.add_exception_handler(RequestValidationError, query_problem)
    app.include_router(router, tags=["access"])

"""Least privilege, walked in full: every route of the API × every role, by key and by token.

The table below classifies each route. A route the table does not name fails the test, so a new
route must be classified before it ships. Roles: the district supervision section, a township's
enforcement office, an agency (a unit with a jurisdiction), the auditor, the public, and nobody.

"Allowed" is the status the handler itself gives once past authorization: 200 for a read; for a
command whose body or target is deliberately invalid (nothing may be published: there is no broker
here), the handler's own 404 or 422. The two streams (SSE) are asked with `poll_ms=1`, which their
handler refuses with 400 — a status they reach only past authorization.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from events.directory import Directory
from projections.db import make_engine
from services.tokens import issue_token, token_secret
from tests.integration.analysis_data import SHILOU_OFFICE, Api, fill
from tests.support import create_pg_database, drop_pg_database

pytestmark = pytest.mark.integration

SUPERVISOR = "district.justice-bureau"
POLICE = "shilou.police-station"
DEPARTMENT = "district.urban-management"
STRUCTURED = "application/cloudevents+json"

# Who may pass: a role name, or "key:<role>" / "token:<role>" for one kind of credential only.
UNIT_ROLES = ("district", "township", "unit")
READERS = (*UNIT_ROLES, "auditor")
CREDENTIALS = (
    "key:district",
    "key:township",
    "key:unit",
    "token:district",
    "token:township",
    "token:unit",
    "token:auditor",
    "token:public",
    "anonymous",
)


@dataclass(frozen=True)
class Case:
    allowed: tuple[str, ...]  # roles (or "key:<role>") that get `ok`
    ok: int = 200
    url: str | None = None  # the concrete URL; default: the route's path
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # A role that passes authorization but is refused by the handler's own rule.
    special: Mapping[str, int] = field(default_factory=dict)

    def expected(self, credential: str) -> int:
        kind, _, role = credential.partition(":")
        if credential == "anonymous":
            return self.ok if "anonymous" in self.allowed else 401
        if role in self.special:
            return self.special[role]
        if role in self.allowed or credential in self.allowed:
            return self.ok
        if "key:" + role in self.allowed and kind == "token":
            return 403  # publishing_needs_unit_key
        return 403


OPEN = (*READERS, "public", "anonymous")
ANY = (*READERS, "public")
READ = READERS
WRITE = UNIT_ROLES
SSE = {"url_suffix": "?poll_ms=1"}
ORDER = {
    "to_unit": POLICE,
    "about_area": "transfer",
    "about_subject": "T2",
    "reason": "逾期未反馈",
    "reply_by": (date.today() - timedelta(days=1)).isoformat(),  # refused by the handler: 422
}

TABLE: dict[tuple[str, str], Case] = {
    ("GET", "/openapi.json"): Case(OPEN),
    ("HEAD", "/openapi.json"): Case(OPEN),
    ("POST", "/v1/session"): Case(OPEN, ok=422, json={}),
    ("DELETE", "/v1/session"): Case(OPEN, ok=204),
    ("GET", "/v1/me"): Case(ANY),
    ("GET", "/v1/townships"): Case(ANY),
    ("POST", "/v1/events"): Case(
        ("key:district", "key:township", "key:unit"),
        ok=422,
        content=b'{"specversion": "1.0"}',
        headers={"Content-Type": STRUCTURED},
    ),
    ("GET", "/v1/cases/{case_id}"): Case(READ, url="/v1/cases/C1"),
    ("GET", "/v1/cases"): Case(READ),
    ("GET", "/v1/matters/{area}/{subject_id}"): Case(READ, url="/v1/matters/transfer/T1"),
    ("GET", "/v1/matters"): Case(READ),
    ("GET", "/v1/directory/units"): Case(READ),
    ("GET", "/v1/inbox"): Case(READ),
    ("GET", "/v1/inbox/stream"): Case(READ, ok=400, url="/v1/inbox/stream?poll_ms=1"),
    ("POST", "/v1/alerts/{alert_id}/acknowledge"): Case(
        WRITE, ok=404, url="/v1/alerts/no-such-alert/acknowledge", json={}
    ),
    ("POST", "/v1/supervision-orders"): Case(
        WRITE, ok=422, json=ORDER, special={"township": 403, "unit": 403}
    ),
    ("GET", "/v1/clocks"): Case(READ),
    ("GET", "/v1/deliveries"): Case(READ),
    ("POST", "/v1/deliveries/{delivery_id}/retry"): Case(WRITE, ok=404, url="/v1/deliveries/no-such/retry"),
    ("GET", "/v1/publications"): Case(OPEN),
    ("GET", "/v1/publications.atom"): Case(OPEN),
    ("GET", "/v1/stats/calibration"): Case(READ, url="/v1/stats/calibration?year=2022"),
    ("GET", "/v1/analysis/overview"): Case(READ),
    ("GET", "/v1/analysis/load"): Case(READ),
    ("GET", "/v1/analysis/trend"): Case(READ),
    ("GET", "/v1/analysis/stages"): Case(READ),
    ("GET", "/v1/analysis/on-time"): Case(READ),
    ("GET", "/v1/analysis/loops"): Case(READ),
    ("GET", "/v1/analysis/reconsiderations"): Case(READ),
    ("GET", "/v1/analysis/file-reviews"): Case(READ),
    ("GET", "/v1/publications/register"): Case(READ),
    ("GET", "/v1/disputes"): Case(READ),
    ("GET", "/v1/file-reviews"): Case(READ),
    ("GET", "/v1/coordination"): Case(READ),
    ("GET", "/v1/anomalies"): Case(READ),
    ("GET", "/v1/live"): Case(READ, ok=400, url="/v1/live?poll_ms=1"),
    ("GET", "/healthz"): Case(OPEN),
    ("GET", "/readyz"): Case(OPEN, ok=503),  # no broker here: not ready, and saying so to anyone
    ("GET", "/metrics"): Case(OPEN),
    ("GET", "/v1/connectors"): Case(READ),
    ("GET", "/v1/audit/head"): Case(("district", "auditor")),
    ("GET", "/"): Case(OPEN, ok=307),
    ("HEAD", "/"): Case(OPEN, ok=307),
    ("GET", "/dashboard"): Case(OPEN, ok=307),
    ("HEAD", "/dashboard"): Case(OPEN, ok=307),
    ("GET", "/dashboard/"): Case(OPEN),
    ("HEAD", "/dashboard/"): Case(OPEN),
    ("GET", "/dashboard/labels.json"): Case(OPEN),
    ("GET", "/dashboard/static/{name:path}"): Case(OPEN, url="/dashboard/static/js/app.js"),
}


@dataclass
class Matrix:
    app: Any
    credentials: dict[str, str | None]

    def client(self, credential: str) -> httpx.AsyncClient:
        value = self.credentials[credential]
        headers = {"Authorization": f"Bearer {value}"} if value else {}
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://hub", headers=headers)


@pytest.fixture(scope="module")
async def matrix(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Matrix]:
    url = await create_pg_database()
    await fill(url)
    api = Api(url, tmp_path_factory.mktemp("matrix"))
    try:
        async with api.app.router.lifespan_context(api.app):
            engine = make_engine(url)
            try:
                secret = await token_secret(engine, api.app.state.ctx.settings)
            finally:
                await engine.dispose()
            directory = Directory.load()

            def token(role: Any, unit: str) -> str:
                return issue_token(secret, directory, unit=unit, role=role, person=f"p-{role}")[0]

            credentials: dict[str, str | None] = {
                "key:district": (await api.headers(SUPERVISOR))["Authorization"][7:],
                "key:township": (await api.headers(SHILOU_OFFICE))["Authorization"][7:],
                "key:unit": (await api.headers(POLICE))["Authorization"][7:],
                "token:district": token("district_supervisor", SUPERVISOR),
                "token:township": token("township_office", SHILOU_OFFICE),
                "token:unit": token("agency", POLICE),
                "token:auditor": token("auditor", DEPARTMENT),
                "token:public": token("public", ""),
                "anonymous": None,
            }
            yield Matrix(api.app, credentials)
    finally:
        await drop_pg_database(url)


def routes(app: Any) -> set[tuple[str, str]]:
    return {(method, rc.path) for rc in iter_route_contexts(app.routes) for method in rc.methods or ()}


async def test_every_route_is_classified_in_the_privilege_table(matrix: Matrix) -> None:
    found = routes(matrix.app)

    unclassified = sorted(found - TABLE.keys())
    stale = sorted(TABLE.keys() - found)
    assert not unclassified, f"classify these routes in TABLE: {unclassified}"
    assert not stale, f"these TABLE entries name no route: {stale}"


async def test_every_role_gets_exactly_its_due_on_every_route(matrix: Matrix) -> None:
    wrong: list[str] = []
    seen = 0
    for (method, path), case in sorted(TABLE.items()):
        for credential in CREDENTIALS:
            async with matrix.client(credential) as client:
                response = await client.request(
                    method,
                    case.url or path,
                    json=case.json,
                    content=case.content,
                    headers=dict(case.headers),
                )
            seen += 1
            expected = case.expected(credential)
            if response.status_code != expected:
                wrong.append(
                    f"{method} {path} as {credential}: {response.status_code}, expected {expected} "
                    f"({response.text[:160]})"
                )
            elif expected in (401, 403) and method != "HEAD":
                assert response.headers["content-type"].startswith("application/problem+json")
    assert seen == len(TABLE) * len(CREDENTIALS)
    assert not wrong, "\n".join(wrong)


async def test_refusals_name_their_reason(matrix: Matrix) -> None:
    async with matrix.client("token:public") as public:
        role = (await public.get("/v1/cases")).json()
    async with matrix.client("token:township") as person:
        publishing = (await person.post("/v1/events", content=b"{}")).json()
    async with matrix.client("token:auditor") as auditor:
        write = (await auditor.post("/v1/supervision-orders", json=ORDER)).json()
    async with matrix.client("anonymous") as nobody:
        missing = (await nobody.get("/v1/cases")).json()

    assert role["type"] == "urn:liandong:problem:role-forbidden"
    assert publishing["type"] == "urn:liandong:problem:publishing-needs-unit-key"
    assert write["type"] == "urn:liandong:problem:role-forbidden"
    assert missing["type"] == "urn:liandong:problem:unauthenticated"


def township_routes(app: Any) -> list[str]:
    """Authenticated GET routes that take a `township` filter, from the OpenAPI schema."""
    paths: dict[str, Any] = app.openapi()["paths"]
    return sorted(
        path
        for path, ops in paths.items()
        if "get" in ops
        and any(p["name"] == "township" and p["in"] == "query" for p in ops["get"].get("parameters", []))
        and "anonymous" not in TABLE[("GET", path)].allowed
    )


async def test_another_townships_data_is_refused_403_to_a_township_and_an_agency(matrix: Matrix) -> None:
    paths = township_routes(matrix.app)
    assert len(paths) >= 17, paths
    wrong: list[str] = []
    for path in paths:
        base = TABLE[("GET", path)].url or path
        glue = "&" if "?" in base else "?"
        for credential, other, own in [
            ("key:township", 403, 200),
            ("token:township", 403, 200),
            ("key:unit", 403, 200),
            ("token:auditor", 200, 200),
            ("key:district", 200, 200),
        ]:
            async with matrix.client(credential) as client:
                shiqiao = await client.get(f"{base}{glue}township=shiqiao")
                shilou = await client.get(f"{base}{glue}township=shilou")
            if (shiqiao.status_code, shilou.status_code) != (other, own):
                wrong.append(f"{path} as {credential}: {shiqiao.status_code}/{shilou.status_code}")
    assert not wrong, "\n".join(wrong)


async def test_the_auditor_reads_exactly_what_the_district_reads(matrix: Matrix) -> None:
    # Per-viewer answers aside (my own inbox), the streams, which never end, and the details of one
    # case or matter, where the parties' personal data is masked for the auditor (never entitled).
    own = {"/v1/inbox", "/v1/inbox/stream", "/v1/live"}
    paths = [
        case.url or path
        for (method, path), case in sorted(TABLE.items())
        if method == "GET" and path.startswith("/v1/") and case.allowed == READ
        if path not in own and "{" not in path
    ]
    differ = []
    for url in paths:
        async with matrix.client("token:auditor") as auditor, matrix.client("key:district") as district:
            seen, everything = await auditor.get(url), await district.get(url)
        assert seen.status_code == everything.status_code == 200, url
        if seen.json() != everything.json():
            differ.append(url)
    assert len(paths) >= 20
    assert not differ, differ


@pytest.mark.parametrize("path", ["/v1/cases/Q1", "/v1/matters/transfer/T4"])
async def test_a_case_outside_the_viewers_townships_is_answered_404(matrix: Matrix, path: str) -> None:
    got = {}
    for credential in (
        "key:township",
        "token:township",
        "key:unit",
        "token:unit",
        "token:auditor",
        "key:district",
    ):
        async with matrix.client(credential) as client:
            got[credential] = (await client.get(path)).status_code

    assert got == {
        "key:township": 404,
        "token:township": 404,
        "key:unit": 404,
        "token:unit": 404,
        "token:auditor": 200,
        "key:district": 200,
    }

"""Views follow roles, enforced by the API: real keys against a real PostgreSQL store.

The district supervision section reads every township, a township's enforcement office its own, any
other unit the townships of its jurisdiction. Without a valid key: 401; another township: 403; a
case outside scope: 404. Browsers use the session cookie, and writes with it need the CSRF header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import update

from projections.db import make_engine
from projections.schema import api_keys
from tests.integration.analysis_data import SHILOU_OFFICE, Api, fill
from tests.support import create_pg_database, drop_pg_database

pytestmark = pytest.mark.integration

SUPERVISOR = "district.justice-bureau"
POLICE = "shilou.police-station"
DEPARTMENT = "district.urban-management"
PROBLEM = "application/problem+json"
COOKIE = "liandong_session"
# Every read endpoint, with the township-scoped lists' paths first.
LISTS = [
    "/v1/cases",
    "/v1/matters",
    "/v1/coordination",
    "/v1/anomalies?open=true",
    "/v1/file-reviews",
    "/v1/disputes",
    "/v1/publications/register",
    "/v1/analysis/overview",
    "/v1/analysis/stages",
    "/v1/analysis/reconsiderations",
    "/v1/analysis/file-reviews",
    "/v1/analysis/on-time?group_by=township",
    "/v1/analysis/load",
    "/v1/clocks",
]
OTHER_READS = [
    "/v1/cases/C1",
    "/v1/matters/transfer/T1",
    "/v1/analysis/trend",
    "/v1/analysis/loops",
    "/v1/directory/units",
    "/v1/stats/calibration?year=2022",
    "/v1/me",
    "/v1/townships",
    "/v1/live",
    "/v1/deliveries",
]


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """One store for the module: the tests only read it, and issue or revoke keys of their own."""
    url = await create_pg_database()
    await fill(url)
    instance = Api(url, tmp_path_factory.mktemp("roles"))
    try:
        async with instance.app.router.lifespan_context(instance.app):
            yield instance
    finally:
        await drop_pg_database(url)


def townships_of(body: dict[str, object]) -> set[object]:
    items = body["items"]
    assert isinstance(items, list)
    return {i.get("township", i.get("group")) for i in items}


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = response.json()
    assert body["status"] == status
    return body


@pytest.mark.parametrize("path", LISTS + OTHER_READS)
async def test_every_read_without_a_key_is_answered_401_problem_json(api: Api, path: str) -> None:
    async with api.client() as client:
        response = await client.get(path)

    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_forged_unknown_malformed_and_revoked_keys_are_answered_401(api: Api) -> None:
    good = (await api.headers(SHILOU_OFFICE))["Authorization"].removeprefix("Bearer ")
    _, key_id, secret = good.split("_", 2)
    revoked = (await api.headers(SHILOU_OFFICE))["Authorization"].removeprefix("Bearer ")
    engine = make_engine(api.store_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == revoked.split("_")[1])
                .values(revoked_at=datetime.now(UTC))
            )
    finally:
        await engine.dispose()
    bad = {
        "forged secret": f"Bearer ld_{key_id}_{'x' * len(secret)}",
        "unknown key id": f"Bearer ld_{'0' * 12}_{secret}",
        "malformed": "Bearer not-a-key",
        "other scheme": f"Basic {good}",
        "revoked": f"Bearer {revoked}",
    }
    async with api.client() as client:
        assert (await client.get("/v1/cases", headers={"Authorization": f"Bearer {good}"})).status_code == 200
        for what, header in bad.items():
            response = await client.get("/v1/cases", headers={"Authorization": header})
            assert response.status_code == 401, what


@pytest.mark.parametrize(
    ("unit", "role", "townships"),
    [
        (SUPERVISOR, "district", 16),
        (SHILOU_OFFICE, "township", ["shilou"]),
        (POLICE, "unit", ["shilou"]),
        (DEPARTMENT, "unit", 16),
    ],
)
async def test_me_names_the_viewers_role_and_townships(
    api: Api, unit: str, role: str, townships: int | list[str]
) -> None:
    async with api.client(await api.headers(unit)) as client:
        me = (await client.get("/v1/me")).json()
        listed = (await client.get("/v1/townships")).json()

    assert (me["unit"], me["role"]) == (unit, role)
    if isinstance(townships, int):
        assert len(me["townships"]) == townships
    else:
        assert me["townships"] == townships
    assert [t["township"] for t in listed["items"]] == me["townships"]


@pytest.mark.parametrize("path", LISTS)
async def test_a_township_office_sees_only_its_township_and_the_district_sees_both(
    api: Api, path: str
) -> None:
    async with api.client(await api.headers(SHILOU_OFFICE)) as office:
        own = (await office.get(path)).json()
    async with api.client(await api.headers(SUPERVISOR)) as district:
        everything = (await district.get(path)).json()

    assert townships_of(own) == {"shilou"}
    assert {"shilou", "shiqiao"} <= townships_of(everything)


@pytest.mark.parametrize("path", [*LISTS, "/v1/analysis/trend", "/v1/analysis/loops"])
async def test_a_township_office_asking_for_another_township_is_answered_403_naming_township(
    api: Api, path: str
) -> None:
    async with api.client(await api.headers(SHILOU_OFFICE)) as client:
        response = await client.get(path, params={"township": "shiqiao"})
        own = await client.get(path, params={"township": "shilou"})

    problem = assert_problem(response, 403)
    assert problem["errors"] == [{"field": "township", "reason": f"'{SHILOU_OFFICE}' may read shilou"}]
    assert own.status_code == 200


async def test_a_unit_reads_the_townships_of_its_jurisdiction(api: Api) -> None:
    async with api.client(await api.headers(POLICE)) as police:
        cases = (await police.get("/v1/cases")).json()
        refused = await police.get("/v1/analysis/overview", params={"township": "shiqiao"})
    async with api.client(await api.headers(DEPARTMENT)) as department:
        both = (await department.get("/v1/cases")).json()

    assert townships_of(cases) == {"shilou"}
    assert refused.status_code == 403
    assert townships_of(both) == {"shilou", "shiqiao"}


async def test_a_case_or_matter_outside_scope_is_answered_404_as_if_it_did_not_exist(api: Api) -> None:
    async with api.client(await api.headers(SHILOU_OFFICE)) as office:
        own_case = await office.get("/v1/cases/C1")
        other_case = await office.get("/v1/cases/Q1")
        other_matter = await office.get("/v1/matters/transfer/T4")
    async with api.client(await api.headers(SUPERVISOR)) as district:
        seen = await district.get("/v1/cases/Q1")

    assert own_case.status_code == 200
    assert own_case.json()["township"] == "shilou"
    assert_problem(other_case, 404)
    assert_problem(other_matter, 404)
    assert seen.status_code == 200


async def test_the_yearly_figures_of_a_township_office_count_its_own_township_only(api: Api) -> None:
    async with api.client(await api.headers(SHILOU_OFFICE)) as office:
        own = (await office.get("/v1/stats/calibration", params={"year": 2022})).json()
    async with api.client(await api.headers(SUPERVISOR)) as district:
        everything = (await district.get("/v1/stats/calibration", params={"year": 2022})).json()

    assert (own["cases_filed"], own["officers"]) == (9, 3)
    assert (everything["cases_filed"], everything["officers"]) == (10, 5)


async def test_a_session_cookie_signs_a_browser_in_and_out(api: Api) -> None:
    key = (await api.headers(SHILOU_OFFICE))["Authorization"].removeprefix("Bearer ")
    async with api.client() as browser:
        refused = await browser.post("/v1/session", json={"key": "ld_000000000000_nope"})
        opened = await browser.post("/v1/session", json={"key": key})
        me = await browser.get("/v1/me")
        cases = await browser.get("/v1/cases")
        closed = await browser.delete("/v1/session", headers={"X-Liandong-CSRF": "1"})
        after = await browser.get("/v1/me")

    assert_problem(refused, 401)
    assert opened.status_code == 204
    cookie = opened.headers["set-cookie"]
    # The cookie holds a signed session token (three dot-separated parts), never the key itself.
    session = cookie.removeprefix(f"{COOKIE}=").split(";")[0]
    assert session.count(".") == 2
    assert key not in cookie
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower()
    assert me.json()["unit"] == SHILOU_OFFICE
    assert townships_of(cases.json()) == {"shilou"}
    assert closed.status_code == 204
    assert "max-age=0" in closed.headers["set-cookie"].lower()
    assert_problem(after, 401)


async def test_a_write_authenticated_by_the_cookie_needs_the_csrf_header(api: Api) -> None:
    key = (await api.headers(SUPERVISOR))["Authorization"].removeprefix("Bearer ")
    async with api.client() as browser:
        assert (await browser.post("/v1/session", json={"key": key})).status_code == 204
        without = await browser.post("/v1/alerts/no-such-alert/acknowledge", json={})
        logout_without = await browser.delete("/v1/session")
        with_header = await browser.post(
            "/v1/alerts/no-such-alert/acknowledge", json={}, headers={"X-Liandong-CSRF": "1"}
        )
        # An explicit key is not sent by a browser on its own: no CSRF header needed.
        explicit = await browser.post(
            "/v1/alerts/no-such-alert/acknowledge", json={}, headers={"Authorization": f"Bearer {key}"}
        )
        read = await browser.get("/v1/me")

    problem = assert_problem(without, 403)
    assert problem["errors"] == [
        {"field": "X-Liandong-CSRF", "reason": "required with the session cookie for this method"}
    ]
    assert_problem(logout_without, 403)
    # Past the middleware, authenticated as the cookie's unit: the alert is simply unknown.
    assert_problem(with_header, 404)
    assert_problem(explicit, 404)
    assert read.json()["unit"] == SUPERVISOR


async def test_a_forged_cookie_is_answered_401_even_with_the_csrf_header(api: Api) -> None:
    async with api.client() as browser:
        browser.cookies.set(COOKIE, "ld_000000000000_forged")
        read = await browser.get("/v1/cases")
        write = await browser.post(
            "/v1/alerts/no-such-alert/acknowledge", json={}, headers={"X-Liandong-CSRF": "1"}
        )

    assert_problem(read, 401)
    assert_problem(write, 401)


async def test_a_unit_reads_its_own_webhook_deliveries_and_the_district_reads_all(api: Api) -> None:
    async with api.client(await api.headers(POLICE)) as police:
        own = await police.get("/v1/deliveries")
    async with api.client(await api.headers(SUPERVISOR)) as district:
        every = await district.get("/v1/deliveries")

    assert own.status_code == every.status_code == 200
    assert {d["unit_id"] for d in own.json()["items"]} <= {POLICE}


async def test_the_inbox_exports_every_matching_alert_as_csv_with_chinese_headers(api: Api) -> None:
    async with api.client(await api.headers(SUPERVISOR)) as client:
        listed = (await client.get("/v1/inbox", params={"limit": 1})).json()["items"]
        exported = await client.get("/v1/inbox", params={"limit": 1, "format": "csv"})
        every = (await client.get("/v1/inbox", params={"limit": 1000})).json()["items"]

    assert listed, "the store holds alerts for the supervision section"
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("预警编号 Alert id,级别 Level")
    # A spreadsheet is read by people: names, not codes.
    levels = {"黄色预警", "红色预警", "升级督办", "再次升级督办", "风险预警"}
    assert {line.split(",")[1] for line in lines[1:]} <= levels
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(a["alert_id"] for a in every)


async def test_signing_in_refuses_malformed_wrong_and_oversize_bodies_and_repeats_harmlessly(
    api: Api,
) -> None:
    key = (await api.headers(SHILOU_OFFICE))["Authorization"].removeprefix("Bearer ")
    async with api.client() as browser:
        out_first = await browser.delete("/v1/session")  # signing out before signing in
        malformed = await browser.post(
            "/v1/session", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        wrong_schema = await browser.post("/v1/session", json={"secret": key})
        wrong_type = await browser.post("/v1/session", json={"key": 42})
        oversize = await browser.post("/v1/session", json={"key": "ld_" + "x" * 5000})
        first = await browser.post("/v1/session", json={"key": key})
        again = await browser.post("/v1/session", json={"key": key})
        me = await browser.get("/v1/me")

    assert out_first.status_code == 204
    for refused in (malformed, wrong_schema, wrong_type, oversize):
        assert refused.status_code in (400, 422), refused.text
        assert refused.headers["content-type"].startswith(PROBLEM), refused.text
    for refused in (wrong_schema, wrong_type, oversize):
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "key", refused.text
    assert first.status_code == again.status_code == 204
    assert me.json()["unit"] == SHILOU_OFFICE

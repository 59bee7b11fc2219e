"""The query API's analysis, registers, paging, exports and schema, on both stores.

The data (tests/integration/analysis_data.py) is a known half-year of Shilou and Shiqiao; the API's
"now" is 2022-06-30 12:00 in Beijing. Definitions: docs/query-api.md.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import openpyxl  # type: ignore[import-untyped]
import pytest
from sqlalchemy import func, select

from events.catalog import Catalog
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import anomalies
from services.api import listing, live
from services.api.export import cell
from services.api.trend import bucket, buckets
from tests.integration.analysis_data import SHILOU_OFFICE, Api, at, fill, utc
from tests.projector_kit import projector, records
from tests.support import case_event, create_pg_database, drop_pg_database, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """The half-year on each store, once per module: these tests only read."""
    folder = tmp_path_factory.mktemp(request.param)
    url = (
        f"sqlite+aiosqlite:///{folder / 'store.db'}"
        if request.param == "sqlite"
        else await create_pg_database()
    )
    await fill(url)
    instance = Api(url, folder)
    try:
        async with instance.app.router.lifespan_context(instance.app):
            yield instance
    finally:
        if request.param == "postgresql":
            await drop_pg_database(url)


@pytest.fixture
async def client(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client(await api.headers()) as c:
        yield c


async def items(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(path, params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["items"]
    return found


def by(rows: list[dict[str, Any]], key: str = "group") -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in rows}


# --- analysis ------------------------------------------------------------------------------------


async def test_the_overview_ranks_townships_by_on_time_rate_and_totals_the_district(
    client: httpx.AsyncClient, api: Api
) -> None:
    body = (await client.get("/v1/analysis/overview")).json()
    rows = by(body["items"], "township")
    shilou = rows["shilou"]
    engine = make_engine(api.store_url)
    try:
        async with engine.connect() as conn:
            flagged = await conn.scalar(
                select(func.count()).where(
                    anomalies.c.township == "shilou", anomalies.c.resolved_at.is_(None)
                )
            )
    finally:
        await engine.dispose()

    assert len(body["items"]) == 16
    assert (shilou["name_zh"], shilou["cases_filed"], shilou["cases_open"], shilou["cases_closed"]) == (
        "石楼镇",
        9,
        8,
        1,
    )
    assert (shilou["officers"], shilou["cases_per_officer"]) == (3, 3.0)
    assert (shilou["loops_open"], shilou["loops_overdue"], shilou["loops_escalated"]) == (2, 1, 1)
    assert shilou["anomalies_open"] == flagged
    due = shilou["clocks_on_time"] + shilou["clocks_late"] + shilou["clocks_open_overdue"]
    assert shilou["on_time_rate"] == round(shilou["clocks_on_time"] / due, 4)
    # Shilou meets more deadlines than Shiqiao; townships without clocks rank last.
    assert [r["township"] for r in body["items"][:2]] == ["shilou", "shiqiao"]
    assert [r["rank"] for r in body["items"]] == list(range(1, 17))
    assert all(r["on_time_rate"] is None for r in body["items"][2:])
    assert (body["totals"]["cases_filed"], body["totals"]["officers"]) == (10, 5)
    assert body["totals"]["cases_per_officer"] == 2.0
    assert body["reference"] == {"cases_per_officer": 79.95}


async def test_on_time_counts_a_decision_within_its_extended_deadline_as_on_time(
    client: httpx.AsyncClient,
) -> None:
    rules = by(await items(client, "/v1/analysis/on-time", township="shilou"))
    c7 = (await client.get("/v1/cases/C7")).json()

    # C1-C4, C6 and C7 (extended to 31 May) decided in time, C8 late; C5 open in time, C9 open and late.
    assert rules["case.decision"] | {"name_zh": "作出处罚决定"} == {
        "group": "case.decision",
        "name_zh": "作出处罚决定",
        "closed": 7,
        "on_time": 6,
        "late": 1,
        "open": 2,
        "open_overdue": 1,
        "on_time_rate": 0.75,
    }
    assert (rules["transfer.acceptance"]["on_time"], rules["transfer.acceptance"]["open_overdue"]) == (1, 1)
    assert rules["transfer.send"]["on_time"] == 3  # a check: measured once, at the request
    assert "case.reconsideration_window" not in rules  # the party's time, not a unit's deadline
    decision = next(c for c in c7["clocks"] if c["rule_id"] == "case.decision")
    assert decision["deadline"] == "2022-05-31T15:59:59+00:00"


async def test_on_time_per_township_adds_up_to_the_overview(client: httpx.AsyncClient) -> None:
    townships = by(await items(client, "/v1/analysis/on-time", group_by="township"))
    overview = by(await items(client, "/v1/analysis/overview"), "township")

    for code in ("shilou", "shiqiao"):
        assert townships[code]["on_time_rate"] == overview[code]["on_time_rate"]
        assert townships[code]["open_overdue"] == overview[code]["clocks_open_overdue"]


async def test_loops_per_mechanism_count_open_overdue_escalated_and_closed_matters(
    client: httpx.AsyncClient,
) -> None:
    shilou = by(await items(client, "/v1/analysis/loops", township="shilou"), "area")
    district = by(await items(client, "/v1/analysis/loops"), "area")

    assert shilou["transfer"] == {
        "area": "transfer",
        "name_zh": "案件移送",
        "open": 2,
        "overdue": 1,
        "escalated": 1,
        "closed": 1,
    }
    assert (district["transfer"]["open"], district["transfer"]["overdue"]) == (3, 2)
    assert shilou["assistance"]["open"] == 0


async def test_the_trend_counts_cases_in_china_time_months_with_empty_months_listed(
    client: httpx.AsyncClient,
) -> None:
    rows = await items(
        client, "/v1/analysis/trend", township="shilou", **{"from": "2022-01-01", "to": "2022-07-01"}
    )

    assert [r["period"] for r in rows] == ["2022-01", "2022-02", "2022-03", "2022-04", "2022-05", "2022-06"]
    # C2, filed ten past midnight on 1 February in Beijing (31 January in UTC), counts for February.
    assert [r["cases_filed"] for r in rows] == [4, 2, 1, 0, 1, 1]
    assert [r["cases_decided"] for r in rows] == [1, 1, 2, 0, 2, 1]
    assert [r["cases_closed"] for r in rows] == [0, 1, 0, 0, 0, 0]


async def test_the_weekly_trend_uses_iso_weeks(client: httpx.AsyncClient) -> None:
    rows = by(await items(client, "/v1/analysis/trend", period="week", township="shilou"), "period")

    assert rows["2022-W05"]["cases_filed"] == 3  # C1 on Monday 31 January, C2 and C9 on 1 February
    assert rows["2022-W03"]["cases_filed"] == 0


async def test_stages_by_category_name_each_stage_in_chinese(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/analysis/stages", params={"group_by": "category"})).json()
    rows = by(body["items"])

    assert (rows["noise"]["name_zh"], rows["noise"]["closed"], rows["noise"]["total"]) == ("噪声", 1, 1)
    assert (rows["street_vending"]["filed"], rows["street_vending"]["decided"]) == (2, 7)
    assert {"key": "decided", "zh": "作出决定", "en": "Decided"} in body["columns"]


async def test_load_divides_cases_filed_by_the_directorys_officers(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/analysis/load")).json()
    townships = by(body["items"])
    units = by(await items(client, "/v1/analysis/load", group_by="unit"))

    assert (townships["shilou"]["cases_filed"], townships["shilou"]["officers"]) == (9, 3)
    assert townships["shiqiao"]["cases_per_officer"] == 0.5
    assert units[SHILOU_OFFICE]["cases_per_officer"] == 3.0
    assert body["reference"]["cases_per_officer"] == 79.95
    assert body["totals"]["cases_per_officer"] == 2.0


async def test_reconsideration_rates_are_of_decided_cases_and_of_reconsiderations(
    client: httpx.AsyncClient,
) -> None:
    shilou = by(await items(client, "/v1/analysis/reconsiderations"))["shilou"]

    assert (shilou["decided"], shilou["reconsiderations"], shilou["revoked_or_changed"]) == (7, 2, 1)
    assert (shilou["reconsideration_rate"], shilou["revoked_or_changed_rate"]) == (0.2857, 0.5)


async def test_file_review_scores_give_pass_rate_and_average(client: httpx.AsyncClient) -> None:
    townships = by(await items(client, "/v1/analysis/file-reviews"))
    units = by(await items(client, "/v1/analysis/file-reviews", group_by="unit"))

    assert townships["shilou"] | {"name_zh": ""} == {
        "group": "shilou",
        "name_zh": "",
        "reviews": 2,
        "passed": 1,
        "pass_rate": 0.5,
        "average_score": 81.0,
    }
    assert units["shiqiao.enforcement-office"]["average_score"] == 85.0


# --- registers -----------------------------------------------------------------------------------


async def test_the_publication_register_shows_each_decisions_publication_status(
    client: httpx.AsyncClient,
) -> None:
    rows = by(await items(client, "/v1/publications/register"), "case_id")
    overdue = await items(client, "/v1/publications/register", status="overdue", township="shilou")

    assert {k: r["status"] for k, r in rows.items()} == {
        "C1": "published",
        "C2": "overdue",
        "C3": "pending",
        "C4": "withdrawn",
        "C6": "published",
        "C7": "overdue",
        "C8": "overdue",
        "Q1": "overdue",
    }
    assert (rows["C4"]["published_at"], rows["C4"]["withdrawn_at"]) == (utc(at(3, 12)), utc(at(4, 1)))
    assert rows["C3"]["deadline"] > utc(at(6, 30))
    assert {r["case_id"] for r in overdue} == {"C2", "C7", "C8"}


async def test_the_dispute_list_filters_by_status_and_by_a_unit_in_dispute(client: httpx.AsyncClient) -> None:
    listed = await items(client, "/v1/disputes", status="listed")
    involved = await items(client, "/v1/disputes", unit="shilou.market-supervision-office")

    assert [d["dispute_id"] for d in listed] == ["D1"]
    assert listed[0]["units"] == [SHILOU_OFFICE, "shilou.market-supervision-office"]
    assert (listed[0]["list_entry_id"], listed[0]["matter_category"]) == ("L-1", "road_occupation")
    assert [d["dispute_id"] for d in involved] == ["D1"]


async def test_the_coordination_tracker_marks_overdue_and_escalated_loops(client: httpx.AsyncClient) -> None:
    rows = by(await items(client, "/v1/coordination", area="transfer"), "subject_id")
    overdue = await items(client, "/v1/coordination", status="overdue")
    still_open = await items(client, "/v1/coordination", status="open")
    closed = await items(client, "/v1/coordination", status="closed")

    assert (rows["T2"]["overdue"], rows["T2"]["escalated"], rows["T2"]["status"]) == (True, True, "overdue")
    assert (rows["T3"]["overdue"], rows["T3"]["status"]) == (False, "open")
    assert "shilou.police-station" in rows["T2"]["parties"]
    assert rows["T2"]["area_name_zh"] == "案件移送"
    assert {r["subject_id"] for r in overdue} == {"T2", "T4"}
    assert {r["subject_id"] for r in still_open} == {"T2", "T3", "T4"}
    assert [r["subject_id"] for r in closed] == ["T1"]


async def test_anomalies_carry_their_chinese_kind_and_filter_by_category(client: httpx.AsyncClient) -> None:
    flow = await items(client, "/v1/anomalies", category="flow")
    risk = by(await items(client, "/v1/anomalies", kind="repeat_inspection"), "anomaly_id")

    assert [a["anomaly_id"] for a in flow] == ["A2"]
    assert (risk["A1"]["kind_zh"], risk["A1"]["township"], risk["A1"]["open"]) == (
        "30日内多部门重复检查",
        "shilou",
        True,
    )


async def test_file_reviews_list_the_scored_files_of_a_unit(client: httpx.AsyncClient) -> None:
    rows = await items(client, "/v1/file-reviews", unit=SHILOU_OFFICE, passed="false")

    assert [(r["review_id"], r["score"], r["passed"]) for r in rows] == [("R2", 70, False)]


# --- paging, export, errors, schema --------------------------------------------------------------


async def test_a_list_pages_with_limit_and_offset_and_reports_the_total(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/cases", params={"limit": 3, "offset": 3})).json()
    filtered = (await client.get("/v1/cases", params={"from": "2022-06-01", "to": "2022-07-01"})).json()

    assert (body["total"], body["limit"], body["offset"]) == (10, 3, 3)
    assert [c["case_id"] for c in body["items"]] == ["C4", "C5", "C6"]
    assert body["next_after"] == "C6"
    assert [c["case_id"] for c in filtered["items"]] == ["C3"]


EXPORTED = [
    ("/v1/cases", {}),
    ("/v1/matters", {}),
    ("/v1/coordination", {}),
    ("/v1/publications/register", {}),
    ("/v1/disputes", {}),
    ("/v1/anomalies", {"open": "true"}),
    ("/v1/file-reviews", {}),
    ("/v1/directory/units", {}),
    ("/v1/townships", {}),
    ("/v1/analysis/overview", {}),
    ("/v1/analysis/trend", {"period": "week"}),
    ("/v1/analysis/stages", {"group_by": "unit"}),
    ("/v1/analysis/load", {}),
    ("/v1/analysis/on-time", {}),
    ("/v1/analysis/loops", {}),
    ("/v1/analysis/reconsiderations", {"group_by": "category"}),
    ("/v1/analysis/file-reviews", {}),
]


@pytest.mark.parametrize(("path", "params"), EXPORTED)
async def test_every_list_exports_csv_and_xlsx_holding_the_rows_of_the_json(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    body = (await client.get(path, params={**params, "limit": 1000})).json()
    as_csv = await client.get(path, params={**params, "format": "csv"})
    as_xlsx = await client.get(path, params={**params, "format": "xlsx"})
    labels = [f"{c['zh']} {c['en']}" for c in body["columns"]]
    expected = [[cell(item.get(c["key"])) for c in body["columns"]] for item in body["items"]]

    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.content.startswith(b"\xef\xbb\xbf")
    csv_rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert csv_rows[0] == labels
    assert csv_rows[1:] == [[str(v) for v in row] for row in expected]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in csv_rows[0][0])
    book = openpyxl.load_workbook(io.BytesIO(as_xlsx.content), read_only=True)
    sheet_rows = [list(r) for r in book.active.iter_rows(values_only=True)]
    assert sheet_rows[0] == labels
    assert sheet_rows[1:] == [[None if v == "" else v for v in row] for row in expected]
    assert len(sheet_rows) - 1 == len(body["items"]) > 0


async def test_an_export_over_the_cap_is_refused_413_and_json_pages_are_not(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "EXPORT_MAX", 5)

    refused = await client.get("/v1/cases", params={"format": "xlsx"})
    page = await client.get("/v1/cases")
    narrowed = await client.get("/v1/cases", params={"format": "csv", "from": "2022-03-01"})

    assert refused.status_code == 413
    assert refused.json()["errors"][0]["field"] == "format"
    assert page.json()["total"] == 10
    assert narrowed.status_code == 200


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/analysis/stages", {"group_by": "rule"}, "group_by"),
        ("/v1/analysis/on-time", {"group_by": "category"}, "group_by"),
        ("/v1/analysis/load", {"group_by": "category"}, "group_by"),
        ("/v1/cases", {"from": "2022-13-01"}, "from"),
        ("/v1/cases", {"from": "20220101"}, "from"),
        ("/v1/analysis/trend", {"from": "2022-03-01", "to": "2022-02-01"}, "to"),
        ("/v1/cases", {"limit": "0"}, "limit"),
        ("/v1/cases", {"limit": "1001"}, "limit"),
        ("/v1/cases", {"limit": "many"}, "limit"),
        ("/v1/disputes", {"offset": "-1"}, "offset"),
        ("/v1/cases", {"format": "pdf"}, "format"),
        ("/v1/analysis/trend", {"period": "year"}, "period"),
        ("/v1/cases", {"unit": "nobody"}, "unit"),
        ("/v1/cases", {"township": "nowhere"}, "township"),
        ("/v1/analysis/on-time", {"rule": "nope"}, "rule"),
        ("/v1/coordination", {"status": "late"}, "status"),
        ("/v1/publications/register", {"status": "lost"}, "status"),
    ],
)
async def test_a_bad_query_value_is_answered_400_problem_json_naming_the_parameter(
    client: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(path, params=params)

    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == [field]


ANALYSIS_PARAMETERS = {
    "/v1/analysis/overview": {"township", "from", "to", "limit", "offset", "format"},
    "/v1/analysis/trend": {
        "township",
        "unit",
        "category",
        "from",
        "to",
        "period",
        "limit",
        "offset",
        "format",
    },
    "/v1/analysis/stages": {"township", "unit", "category", "from", "to", "group_by", "format"},
    "/v1/analysis/load": {"township", "category", "from", "to", "group_by", "format"},
    "/v1/analysis/on-time": {"township", "unit", "rule", "from", "to", "group_by", "format"},
    "/v1/analysis/loops": {"township", "unit", "from", "to", "format"},
    "/v1/analysis/reconsiderations": {"township", "unit", "category", "from", "to", "group_by", "format"},
    "/v1/analysis/file-reviews": {"township", "unit", "from", "to", "group_by", "format"},
}


async def test_the_openapi_schema_lists_the_analysis_endpoints_with_described_parameters(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()

    for path, expected in ANALYSIS_PARAMETERS.items():
        operation = schema["paths"][path]["get"]
        parameters = {p["name"]: p for p in operation["parameters"]}
        assert expected <= set(parameters), path
        assert all(p.get("description") for p in parameters.values()), path
        assert "$ref" in operation["responses"]["200"]["content"]["application/json"]["schema"], path
        assert {"400", "401", "403"} <= set(operation["responses"]), path
    group_by = {p["name"]: p for p in schema["paths"]["/v1/analysis/on-time"]["get"]["parameters"]}[
        "group_by"
    ]
    assert group_by["schema"]["enum"] == ["rule", "township", "unit"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    for path in (
        "/v1/publications/register",
        "/v1/disputes",
        "/v1/coordination",
        "/v1/anomalies",
        "/v1/live",
    ):
        assert "get" in schema["paths"][path], path


async def test_every_read_of_the_query_api_documents_its_parameters_and_response(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    reads = [
        p for p in paths if p.startswith(("/v1/cases", "/v1/matters", "/v1/analysis", "/v1/publications"))
    ]
    reads += ["/v1/me", "/v1/townships", "/v1/directory/units", "/v1/stats/calibration", "/v1/disputes"]
    reads += ["/v1/coordination", "/v1/anomalies", "/v1/file-reviews", "/v1/live"]

    for path in reads:
        operation = paths[path]["get"]
        assert all(p.get("description") for p in operation.get("parameters", [])), path
        assert operation["responses"]["200"]["content"], path


def test_periods_are_labelled_as_months_and_iso_weeks() -> None:
    assert bucket(date(2022, 3, 31), "month") == "2022-03"
    assert bucket(date(2021, 1, 3), "week") == "2020-W53"
    assert buckets(date(2021, 12, 30), date(2022, 1, 10), "week") == ["2021-W52", "2022-W01", "2022-W02"]
    assert buckets(date(2021, 11, 15), date(2022, 2, 1), "month") == [
        "2021-11",
        "2021-12",
        "2022-01",
        "2022-02",
    ]


# --- live ----------------------------------------------------------------------------------------


async def test_the_live_stream_announces_a_change_once_an_event_is_projected(
    pg_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "KEEPALIVE_S", 0.3)
    engine = make_engine(pg_url)
    await upgrade(engine)
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    api = Api(pg_url, tmp_path)
    headers = await api.headers(SHILOU_OFFICE)
    try:
        async with (
            asyncio.timeout(60),
            serving(api.app) as base_url,
            httpx.AsyncClient(base_url=base_url) as client,
        ):
            refused = await client.get("/v1/live")
            assert refused.status_code == 401
            async with client.stream("GET", "/v1/live", params={"poll_ms": 100}, headers=headers) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.aiter_lines()
                seen: list[str] = []

                async def until(prefix: str) -> str:
                    async for line in lines:
                        seen.append(line)
                        if line.startswith(prefix):
                            return line
                    raise AssertionError(f"the stream ended before {prefix!r}: {seen}")

                await until("event: ready")
                ready = await until("data: ")
                await until(": keep-alive")
                await projector(engine, codec).process(records(codec, [case_event("filed", "LIVE-1")]))
                await until("event: change")
                changed = await until("data: ")
            # Leaving the block disconnects; the server then shuts down only if the stream ended.
    finally:
        await engine.dispose()

    assert ready != changed
    assert changed.startswith('data: {"version": "')


async def test_no_api_page_loads_scripts_from_a_cdn(client: httpx.AsyncClient) -> None:
    # FastAPI's Swagger and ReDoc pages fetch their scripts from a CDN: offline, they would be blank.
    assert (await client.get("/docs")).status_code == 404
    assert (await client.get("/redoc")).status_code == 404
    assert (await client.get("/openapi.json")).status_code == 200

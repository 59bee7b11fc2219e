"""The yearly figures (立案数、人均办案量、复议、撤改) come from the projections, by China Standard Time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from events.envelope import Envelope
from events.serde import EventCodec
from services.api.app import create_app
from services.settings import Settings
from tests.projector_kit import projector, records
from tests.support import case_event, catalog_event, reader_headers

CST = timezone(timedelta(hours=8))


def unit(unit_id: str, officers: int) -> Envelope:
    return catalog_event(
        "directory.unit_published.v1",
        unit_id,
        source="district.justice-bureau",
        kind="enforcement_office",
        home_township="shilou",
        jurisdiction=["shilou"],
        publishes=["case.*"],
        officers=officers,
        parent_unit=None,
    )


def reconsidered(case_id: str, filed: datetime, result: str | None) -> list[Envelope]:
    out = [catalog_event("case.reconsideration_filed.v1", case_id, time_=filed)]
    if result is not None:
        out.append(
            catalog_event(
                "case.reconsideration_decided.v1", case_id, time_=filed + timedelta(days=50), result=result
            )
        )
    return out


async def figures(store_url: str, tmp_path: Path, year: int) -> tuple[int, dict[str, Any]]:
    app = create_app(
        Settings.from_env({"LIANDONG_DATA_DIR": str(tmp_path), "LIANDONG_DATABASE_URL": store_url}),
        "127.0.0.1:1",
    )
    auth = await reader_headers(store_url)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub", headers=auth
        ) as client,
    ):
        response = await client.get("/v1/stats/calibration", params={"year": year})
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def test_the_yearly_figures_count_filings_and_reconsiderations_by_china_time(
    engine: AsyncEngine, codec: EventCodec, store_url: str, tmp_path: Path
) -> None:
    events = [
        unit("shilou.enforcement-office-a", 3),
        unit("shilou.enforcement-office-b", 2),
        # 23:30 on 31 December in Beijing is 2021; ten minutes past midnight is 2022.
        case_event("filed", "Y-2021", time_=datetime(2021, 12, 31, 23, 30, tzinfo=CST)),
        case_event("filed", "Y-A", time_=datetime(2022, 1, 1, 0, 10, tzinfo=CST)),
        case_event("filed", "Y-B", time_=datetime(2022, 6, 1, 9, 0, tzinfo=CST)),
        case_event("filed", "Y-C", time_=datetime(2022, 12, 31, 23, 59, tzinfo=CST)),
        case_event("filed", "Y-2023", time_=datetime(2023, 1, 1, 0, 0, tzinfo=CST)),
        *reconsidered("Y-A", datetime(2022, 3, 1, tzinfo=CST), "revoked"),
        *reconsidered("Y-B", datetime(2022, 8, 1, tzinfo=CST), "upheld"),
        *reconsidered("Y-2021", datetime(2022, 2, 1, tzinfo=CST), "changed"),
        # Brought in 2022, not decided yet: counts as brought, not as revoked or changed.
        *reconsidered("Y-C", datetime(2022, 12, 31, 10, 0, tzinfo=CST), None),
        *reconsidered("Y-2023", datetime(2023, 2, 1, tzinfo=CST), "revoked"),
    ]
    await projector(engine, codec).process(records(codec, events))

    status, body = await figures(store_url, tmp_path, 2022)

    assert status == 200
    assert body["cases_filed"] == 3
    assert body["officers"] >= 5
    assert body["cases_per_officer"] == round(3 / body["officers"], 2)
    assert body["reconsiderations"] == 4
    assert body["revoked_or_changed"] == 2


async def test_a_decision_that_arrives_before_its_reconsideration_still_counts_once(
    engine: AsyncEngine, codec: EventCodec, store_url: str, tmp_path: Path
) -> None:
    filed_at = datetime(2022, 5, 1, 9, 0, tzinfo=CST)
    decided, brought = reversed(reconsidered("Y-OOO", filed_at, "changed"))
    feed = projector(engine, codec)
    await feed.process(records(codec, [decided], start=0))
    filed = case_event("filed", "Y-OOO", time_=filed_at - timedelta(days=40))
    await feed.process(records(codec, [filed], start=1))
    # The same reconsideration published three times: twice in one batch, once in a later one.
    await feed.process(records(codec, [brought, brought], start=2))
    await feed.process(records(codec, [brought], start=4))

    _, body = await figures(store_url, tmp_path, 2022)

    assert (body["cases_filed"], body["reconsiderations"], body["revoked_or_changed"]) == (1, 1, 1)


async def test_a_year_out_of_range_is_a_clear_error(
    store_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    status, body = await figures(store_url, tmp_path, 1900)

    assert status == 400
    assert body["errors"][0]["field"] == "year"

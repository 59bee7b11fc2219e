"""A small, fully known half-year in two townships, for the query API's tests.

Cases, transfers, the directory and an escalation go through the real projections; rows of
projections other helpers own (file reviews, disputes, anomalies) are written as those
projections would write them. `NOW` is the API's time source: 2022-06-30 12:00 in Beijing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from events.catalog import Catalog
from events.envelope import Envelope
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import anomalies, disputes, file_reviews
from services.api.app import create_app
from services.settings import Settings
from tests.projector_kit import projector, records
from tests.support import case_event, catalog_event, reader_headers

CST = timezone(timedelta(hours=8))
NOW = datetime(2022, 6, 30, 12, 0, tzinfo=CST)
SHILOU_OFFICE = "shilou.enforcement-office"
SHIQIAO_OFFICE = "shiqiao.enforcement-office"
POLICE = "shilou.police-station"


def at(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2022, month, day, hour, minute, tzinfo=CST)


def filed(
    case_id: str, when: datetime, township: str = "shilou", category: str = "street_vending"
) -> Envelope:
    office = f"{township}.enforcement-office"
    data = {
        **case_event("filed", case_id).data,
        "township": township,
        "handling_unit": office,
        "category": category,
    }
    return case_event("filed", case_id, source=office, time_=when, data=data)


def decided(case_id: str, when: datetime, source: str = SHILOU_OFFICE) -> Envelope:
    return case_event("decided", case_id, source=source, time_=when)


def case_fact(short_type: str, case_id: str, when: datetime, **data: Any) -> Envelope:
    return catalog_event(short_type, case_id, time_=when, **data)


def transfer(subject: str, when: datetime, township: str = "shilou") -> Envelope:
    office, police = f"{township}.enforcement-office", f"{township}.police-station"
    return catalog_event(
        "transfer.requested.v1",
        subject,
        source=office,
        time_=when,
        to_unit=police,
        township=township,
        discovered_on=when.date().isoformat(),
        case_id=None,
    )


def directory_unit(unit_id: str, township: str, officers: int) -> Envelope:
    return catalog_event(
        "directory.unit_published.v1",
        unit_id,
        source="district.justice-bureau",
        kind="enforcement_office",
        home_township=township,
        jurisdiction=[township],
        publishes=["case.*"],
        officers=officers,
        parent_unit=None,
    )


def escalation(subject: str) -> Envelope:
    return catalog_event(
        "alert.raised.v1",
        f"clock-{subject}",
        source="district.justice-bureau",
        time_=at(3, 20),
        alert_id=f"alert-{subject}",
        level="escalated",
        about_area="transfer",
        about_subject=subject,
        township="shilou",
        responsible_unit=POLICE,
        recipients=[POLICE, SHILOU_OFFICE, "district.justice-bureau"],
        proposed_order=None,
        case_id=None,
    )


def events() -> list[Envelope]:
    out = [
        directory_unit(SHILOU_OFFICE, "shilou", 3),
        directory_unit(SHIQIAO_OFFICE, "shiqiao", 2),
        # C1: 23:30 on 31 January in Beijing is January; published, then revoked on reconsideration.
        filed("C1", at(1, 31, 23, 30)),
        decided("C1", at(2, 10)),
        case_fact("case.published.v1", "C1", at(2, 11)),
        case_fact("case.reconsideration_filed.v1", "C1", at(3, 1)),
        case_fact("case.reconsideration_decided.v1", "C1", at(4, 20), result="revoked"),
        # C2: ten past midnight on 1 February is February in Beijing (still January in UTC).
        filed("C2", at(2, 1, 0, 10)),
        decided("C2", at(3, 1)),  # never published: overdue
        filed("C3", at(6, 1)),
        decided("C3", at(6, 29)),  # not published yet, still in time: pending
        filed("C4", at(3, 1)),
        decided("C4", at(3, 10)),
        case_fact("case.published.v1", "C4", at(3, 12)),
        case_fact("case.reconsideration_filed.v1", "C4", at(3, 20)),
        case_fact("case.reconsideration_decided.v1", "C4", at(5, 1), result="upheld"),
        case_fact("case.publication_withdrawn.v1", "C4", at(4, 1)),
        filed("C5", at(5, 1)),  # open, its decision deadline ahead
        filed("C6", at(1, 5), category="noise"),
        decided("C6", at(1, 10)),
        case_fact("case.published.v1", "C6", at(1, 11)),
        case_fact("case.closed.v1", "C6", at(2, 15)),
        # C7 and C8 decide after 90 days; only C7's deadline was extended past its decision.
        filed("C7", at(1, 4)),
        case_fact("case.decision_deadline_extended.v1", "C7", at(3, 20), new_deadline="2022-05-31"),
        decided("C7", at(5, 20)),
        filed("C8", at(1, 4)),
        decided("C8", at(5, 20)),
        filed("C9", at(2, 1, 9)),  # undecided past its 90 days: open and overdue
        filed("Q1", at(3, 1), township="shiqiao"),
        decided("Q1", at(3, 5), source=SHIQIAO_OFFICE),
        # Transfers: T1 closed in time, T2 stalled and escalated, T3 just sent; T4 in Shiqiao.
        transfer("T1", at(6, 1)),
        catalog_event("transfer.accepted.v1", "T1", source=POLICE, time_=at(6, 2), case_id=None),
        catalog_event("transfer.result_reported.v1", "T1", source=POLICE, time_=at(6, 10), case_id=None),
        transfer("T2", at(3, 1)),
        escalation("T2"),
        transfer("T3", at(6, 29)),
        transfer("T4", at(3, 1), township="shiqiao"),
    ]
    return out


def _row(**values: Any) -> dict[str, Any]:
    return values


ANOMALIES = [
    _row(anomaly_id="A1", subject="INSP-2", area="linkage", kind="repeat_inspection", category="risk",
         township="shilou", detail="same business inspected twice"),
    _row(anomaly_id="A2", subject="shiqiao", area="township", kind="case_flow_spike", category="flow",
         township="shiqiao", detail="weekly filings far above baseline"),
]  # fmt: skip
REVIEWS = [
    _row(review_id="R1", reviewed_unit=SHILOU_OFFICE, township="shilou", score=92, passed=True, problems=0),
    _row(review_id="R2", reviewed_unit=SHILOU_OFFICE, township="shilou", score=70, passed=False, problems=3),
    _row(review_id="R3", reviewed_unit=SHIQIAO_OFFICE, township="shiqiao", score=85, passed=True, problems=1),
]
DISPUTES = [
    _row(dispute_id="D1", township="shilou", matter="占道经营归属", status="listed",
         units=json.dumps([SHILOU_OFFICE, "shilou.market-supervision-office"]), raised_at=at(2, 1),
         list_entry_id="L-1", matter_category="road_occupation", listed_at=at(4, 1)),
    _row(dispute_id="D2", township="shiqiao", matter="油烟", status="raised",
         units=json.dumps([SHIQIAO_OFFICE]), raised_at=at(5, 1)),
]  # fmt: skip


def _utc(row: Mapping[str, Any]) -> dict[str, Any]:
    # Written as the projections write them: in UTC (SQLite keeps a time's digits, not its zone).
    return {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in row.items()}


async def fill(url: str) -> None:
    """Migrate the store at `url` and project the half-year into it."""
    engine = make_engine(url)
    try:
        await upgrade(engine)
        codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
        await codec.prepare()
        await build(engine, codec)
    finally:
        await engine.dispose()


async def build(engine: AsyncEngine, codec: EventCodec) -> None:
    await projector(engine, codec).process(records(codec, events()))
    async with engine.begin() as conn:
        for row in ANOMALIES:
            facts = {"event_id": f"ev-{row['anomaly_id']}", "event_type": "cn.gov.liandong.linkage.x.v1"}
            await conn.execute(
                insert(anomalies).values(
                    **_utc({**row, **facts, "occurred_at": at(6, 1), "detected_at": at(6, 2)})
                )
            )
        for row in REVIEWS:
            await conn.execute(
                insert(file_reviews).values(**_utc({**row, "scored_at": at(4, 1), "review_batch": "2022-Q1"}))
            )
        for row in DISPUTES:
            await conn.execute(insert(disputes).values(**_utc({**row, "last_event_at": at(5, 1)})))


@dataclass
class Api:
    """The API app over a store, its time source set to `NOW`."""

    store_url: str
    tmp_path: Path
    app: FastAPI = field(init=False)

    def __post_init__(self) -> None:
        clock = self.tmp_path / "now.txt"
        clock.write_text(NOW.isoformat(), encoding="utf-8")
        settings = Settings.from_env(
            {
                "LIANDONG_DATA_DIR": str(self.tmp_path),
                "LIANDONG_DATABASE_URL": self.store_url,
                "LIANDONG_TIME_SOURCE": f"file:{clock}",
            }
        )
        self.app = create_app(settings, "127.0.0.1:1")

    def client(self, headers: Mapping[str, str] | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://hub", headers=dict(headers or {}))

    async def headers(self, unit: str = "district.justice-bureau") -> dict[str, str]:
        return await reader_headers(self.store_url, unit)


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def day(moment: datetime) -> date:
    return moment.astimezone(CST).date()

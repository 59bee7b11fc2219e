"""Clocks, the scanner and the alert inbox on both real stores, with time under the test's control."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.calendar import WorkingDayCalendar, package_schedule
from events.clock_rules import ClockRules
from events.directory import Directory
from events.envelope import Envelope
from events.serde import EventCodec
from projections.clock_scanner import ClockScanner
from projections.clocks import clock_id
from projections.schema import alert_recipients, alerts, clocks
from tests.projector_kit import CALENDAR, CLOCK_SETTINGS, projector, records
from tests.support import catalog_event

CN = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=CN)  # a Monday
GRACE = CLOCK_SETTINGS.grace


@dataclass
class Loop:
    """The hub's loop without Kafka: projected events, a scanner, alerts fed back in."""

    engine: AsyncEngine
    codec: EventCodec
    calendar: WorkingDayCalendar = CALENDAR
    offset: int = 0
    published: list[Envelope] = field(default_factory=list)

    async def publish(self, events: Sequence[Envelope]) -> None:
        self.published.extend(events)

    async def project(self, *events: Envelope, now: datetime) -> None:
        runner = projector(self.engine, self.codec, now=lambda: now)
        await runner.process(records(self.codec, events, start=self.offset))
        self.offset += len(events)

    async def scan(self, now: datetime) -> list[Envelope]:
        before = len(self.published)
        scanner = ClockScanner(
            self.engine, ClockRules.load(), self.calendar, Directory.load(), CLOCK_SETTINGS, self
        )
        await scanner.scan(now)
        new = self.published[before:]
        if new:
            await self.project(*new, now=now)
        return new


def levels(events: Sequence[Envelope]) -> list[str]:
    return [e.data["level"] for e in events]


async def clock_row(engine: AsyncEngine, key: str) -> dict[str, object]:
    async with engine.connect() as conn:
        return dict((await conn.execute(select(clocks).where(clocks.c.clock_id == key))).one()._mapping)


def transfer_requested(subject: str, at: datetime) -> Envelope:
    return catalog_event(
        "transfer.requested.v1",
        subject,
        time_=at,
        to_unit="nancun.police-station",
        township="shilou",
        urgent=False,
        discovered_on=at.date().isoformat(),
    )


async def test_a_stalled_transfer_climbs_the_ladder_once_per_rung(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    loop = Loop(engine, codec)
    await loop.project(transfer_requested("TR-L1", T0), now=T0)
    key = clock_id("transfer.acceptance", "transfer", "TR-L1", "")
    row = await clock_row(engine, key)
    deadline = datetime(2026, 11, 5, 23, 59, 59, tzinfo=CN)  # 3 working days after Monday
    assert (
        row["deadline"].replace(tzinfo=UTC) == deadline
        if row["deadline"].tzinfo is None
        else row["deadline"] == deadline
    )
    assert row["responsible"] == "nancun.police-station"

    yellow_at = T0 + (deadline - T0) * 0.75
    assert await loop.scan(yellow_at) == []  # reached, but not past the grace for projection lag
    first = await loop.scan(yellow_at + GRACE + timedelta(seconds=1))
    assert levels(first) == ["yellow"]
    assert first[0].data["recipients"] == ["nancun.police-station"]
    assert await loop.scan(yellow_at + GRACE + timedelta(minutes=5)) == []  # exactly once

    red = await loop.scan(deadline + GRACE + timedelta(seconds=1))
    assert levels(red) == ["red"]
    assert red[0].data["recipients"] == ["nancun.police-station", "shilou.enforcement-office"]

    escalate_at = datetime(2026, 11, 10, 23, 59, 59, tzinfo=CN)  # 3 working days after Thursday
    escalated = await loop.scan(escalate_at + GRACE + timedelta(hours=1))
    assert levels(escalated) == ["escalated"]
    data = escalated[0].data
    assert "district.justice-bureau" in data["recipients"]
    assert data["proposed_order"]["to_unit"] == "nancun.police-station"
    assert data["overdue_seconds"] > 4 * 86400
    assert data["citation"].startswith("番禺区")
    async with engine.connect() as conn:
        inbox = set(
            (
                await conn.execute(
                    select(alert_recipients.c.alert_id).where(
                        alert_recipients.c.unit_id == "district.justice-bureau"
                    )
                )
            ).scalars()
        )
        raised = (
            await conn.execute(select(alerts.c.level).where(alerts.c.about_subject == "TR-L1"))
        ).scalars()
        assert sorted(raised) == ["escalated", "red", "yellow"]
    assert inbox == {data["alert_id"]}


async def test_an_alert_is_withdrawn_when_the_loop_had_closed_before_its_threshold(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    loop = Loop(engine, codec)
    requested = catalog_event(
        "assistance.requested.v1",
        "AS-W1",
        time_=T0,
        to_unit="shilou.police-station",
        township="shilou",
        reply_by=None,
    )
    await loop.project(requested, now=T0)
    deadline = datetime(2026, 11, 4, 23, 59, 59, tzinfo=CN)  # 2 working days
    red = await loop.scan(deadline + GRACE + timedelta(minutes=1))
    assert levels(red) == ["red"]
    # The reply was given before the deadline, but reached the hub late.
    reply = catalog_event(
        "assistance.accepted.v1", "AS-W1", source="shilou.police-station", time_=deadline - timedelta(hours=2)
    )
    await loop.project(reply, now=deadline + timedelta(hours=1))
    withdrawn = await loop.scan(deadline + timedelta(hours=1))
    assert [(e.type.split(".")[-2], e.data["alert_id"]) for e in withdrawn] == [
        ("withdrawn", red[0].data["alert_id"])
    ]
    async with engine.connect() as conn:
        gone = await conn.scalar(
            select(alerts.c.withdrawn_at).where(alerts.c.alert_id == red[0].data["alert_id"])
        )
    assert gone is not None
    assert await loop.scan(deadline + timedelta(days=5)) == []


async def test_an_acknowledged_alert_re_escalates_when_the_loop_stays_open(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    loop = Loop(engine, codec)
    await loop.project(transfer_requested("TR-A1", T0), now=T0)
    late = datetime(2026, 11, 12, 12, 0, tzinfo=CN)
    escalated = await loop.scan(late)
    assert levels(escalated) == ["escalated"]
    ack_at = late + timedelta(hours=1)
    ack = catalog_event(
        "alert.acknowledged.v1",
        escalated[0].subject,
        source="district.justice-bureau",
        time_=ack_at,
        alert_id=escalated[0].data["alert_id"],
        by_unit="district.justice-bureau",
    )
    await loop.project(ack, now=ack_at)
    assert await loop.scan(ack_at + timedelta(hours=47)) == []
    again = await loop.scan(ack_at + timedelta(hours=48, minutes=1))
    assert levels(again) == ["re_escalated"]
    assert again[0].data["alert_id"] != escalated[0].data["alert_id"]
    async with engine.connect() as conn:
        acked = await conn.scalar(
            select(alerts.c.acknowledged_by).where(alerts.c.alert_id == escalated[0].data["alert_id"])
        )
    assert acked == "district.justice-bureau"


async def test_a_reopened_supervision_order_starts_a_new_cycle_with_new_alert_ids(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    loop = Loop(engine, codec)
    jb = "district.justice-bureau"
    issued = catalog_event(
        "supervision.order_issued.v1",
        "DB-1",
        source=jb,
        time_=T0,
        to_unit="shilou.enforcement-office",
        reply_by="2026-11-06",
    )
    await loop.project(issued, now=T0)
    first = await loop.scan(datetime(2026, 11, 7, 9, 0, tzinfo=CN))
    assert levels(first) == ["red"]
    replied = catalog_event(
        "supervision.order_replied.v1",
        "DB-1",
        source="shilou.enforcement-office",
        time_=datetime(2026, 11, 8, 9, 0, tzinfo=CN),
    )
    reopened = catalog_event(
        "supervision.order_reopened.v1",
        "DB-1",
        source=jb,
        time_=datetime(2026, 11, 9, 9, 0, tzinfo=CN),
        reply_by="2026-11-11",
    )
    await loop.project(replied, reopened, now=datetime(2026, 11, 9, 9, 0, tzinfo=CN))
    second = await loop.scan(datetime(2026, 11, 12, 9, 0, tzinfo=CN))
    assert levels(second) == ["red"]
    assert second[0].data["alert_id"] != first[0].data["alert_id"]


async def test_a_provisional_deadline_is_recomputed_when_the_calendar_gains_the_year(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    # The shipped calendar has no official data for 2027 yet (the package stops at 2026).
    loop = Loop(engine, codec)
    start = datetime(2026, 12, 30, 10, 0, tzinfo=CN)
    await loop.project(transfer_requested("TR-Y1", start), now=start)
    key = clock_id("transfer.acceptance", "transfer", "TR-Y1", "")
    before = await clock_row(engine, key)
    with_2027 = WorkingDayCalendar.from_mapping(
        {"version": 1, "years": {"2027": {"holidays": ["2027-01-01"], "workdays": [], "source": "test"}}},
        package=package_schedule().through(2026),
    )
    await Loop(engine, codec, calendar=with_2027).scan(start)
    after = await clock_row(engine, key)
    assert (before["provisional"], after["provisional"]) == (True, False)
    assert before["calendar_version"] != after["calendar_version"]
    # Weekends only: Dec 31, Jan 1, Jan 4. With New Year's Day off: Dec 31, Jan 4, Jan 5.
    assert [_local_day(before["deadline"]), _local_day(after["deadline"])] == [
        date(2027, 1, 4),
        date(2027, 1, 5),
    ]


def _local_day(value: object) -> date:
    assert isinstance(value, datetime)
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.astimezone(CN).date()


async def test_the_case_page_shows_only_clocks_that_have_started(
    engine: AsyncEngine, codec: EventCodec, store_url: str, tmp_path: Path
) -> None:
    import httpx

    from services.api.app import create_app
    from services.settings import Settings
    from tests.support import case_event, reader_headers

    # Filing stops the filing-decision clock, which (with no lead) never started; it starts the
    # decision clock.
    await Loop(engine, codec).project(case_event("filed", "PG-1", time_=T0), now=T0)
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
        case = (await client.get("/v1/cases/PG-1")).json()
    assert [c["rule_id"] for c in case["clocks"]] == ["case.decision"]
    # 90 calendar days end on Sunday 2027-01-31, so the period runs to Monday (23:59:59 +08:00);
    # 2027 has no official holiday data yet, so the deadline is provisional.
    assert case["clocks"][0]["deadline"] == "2027-02-01T15:59:59+00:00"
    assert case["clocks"][0]["provisional"] is True


async def test_a_case_clock_started_before_its_filing_arrived_takes_the_township_of_the_late_filing(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    # Evidence preserved (the 7-day disposal clock starts) reaches the hub before the filing that
    # names the township: live, the clock must end with the township a rebuild would give it.
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    preserved = catalog_event("case.evidence_preserved.v1", "SL-LATE-1", time_=t0 + timedelta(hours=1))
    filed = catalog_event("case.filed.v1", "SL-LATE-1", time_=t0, township="shilou")
    hub = projector(engine, codec)
    await hub.process(records(codec, [preserved]))
    await hub.process(records(codec, [filed], start=1))
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(clocks.c.rule_id, clocks.c.township).where(clocks.c.subject == "SL-LATE-1")
            )
        ).all()
    started = {rule: township for rule, township in rows if rule != "case.filing_decision"}
    assert started == {"case.evidence_disposal": "shilou", "case.decision": "shilou"}

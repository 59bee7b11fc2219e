"""Anomaly detection on both real stores: repeat inspections, townships of anomalies, case-flow sweeps."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.envelope import Envelope
from events.serde import EventCodec
from projections.case_flow import detect_case_flow
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import anomalies
from tests.projector_kit import projector, records
from tests.support import case_event, catalog_event

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=CST)
CODE = "91440113MA5CXXXX1A"
OFFICE = "shilou.enforcement-office"
MARKET = "shilou.market-supervision-office"
PLANNING = "shilou.planning-resources-office"


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


async def project(engine: AsyncEngine, codec: EventCodec, events: Sequence[Envelope], start: int = 0) -> None:
    await projector(engine, codec).process(records(codec, events, start=start))


def tasked(
    subject: str,
    time_: datetime,
    unit: str,
    *,
    code: str | None = CODE,
    name: str | None = "番禺石楼某餐饮店",
    event_id: str | None = None,
) -> Envelope:
    return catalog_event(
        "linkage.inspection_tasked.v1",
        subject,
        source=MARKET,
        time_=time_,
        event_id=event_id,
        inspecting_unit=unit,
        township="shilou",
        business_name=name,
        business_credit_code=code,
        permit_id=None,
        case_id=None,
    )


async def anomaly_rows(engine: AsyncEngine, kind: str | None = None) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        query = select(anomalies).order_by(anomalies.c.anomaly_id)
        if kind is not None:
            query = query.where(anomalies.c.kind == kind)
        rows = (await conn.execute(query)).all()
    out = []
    for r in rows:
        row = dict(r._mapping)
        out.append(
            {
                k: v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
                for k, v in row.items()
            }
        )
    return out


async def test_an_inspection_by_another_unit_within_30_days_is_a_repeat_inspection(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    first = tasked("XK-A1", day(0), OFFICE)
    second = tasked("XK-A2", day(12), PLANNING)
    await project(engine, codec, [first])
    assert await anomaly_rows(engine, "repeat_inspection") == []
    await project(engine, codec, [second], start=1)
    [row] = await anomaly_rows(engine, "repeat_inspection")
    assert (row["category"], row["area"], row["subject"], row["township"]) == (
        "risk",
        "linkage",
        "XK-A2",
        "shilou",
    )
    assert (row["event_id"], row["event_type"], row["occurred_at"]) == (second.id, second.type, day(12))
    assert row["resolved_at"] is None
    assert row["announced_at"] is None
    for text in (
        OFFICE,
        PLANNING,
        "2026-03-02",
        "2026-03-14",
        "番禺石楼某餐饮店",
        CODE,
        "重复检查",
        "within 30 days",
    ):
        assert text in row["detail"]


async def test_a_repeat_inspection_is_found_whichever_inspection_arrives_first(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    found = []
    for n, (order, batched) in enumerate([((0, 1), False), ((1, 0), False), ((0, 1), True), ((1, 0), True)]):
        code = f"{CODE[:-2]}{n:02d}"
        events = [
            tasked(f"XK-B{n}-1", day(0), OFFICE, code=code),
            tasked(f"XK-B{n}-2", day(29), MARKET, code=code),
        ]
        ordered = [events[i] for i in order]
        if batched:
            await project(engine, codec, ordered, start=10 * n)
        else:
            for i, event in enumerate(ordered):
                await project(engine, codec, [event], start=10 * n + i)
        found.append(
            [(r["subject"], r["occurred_at"]) for r in await anomaly_rows(engine) if code in r["detail"]]
        )
    assert found == [[(f"XK-B{n}-2", day(29))] for n in range(4)]


async def test_the_same_unit_inspecting_twice_is_not_a_repeat_inspection(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await project(engine, codec, [tasked("XK-C1", day(0), OFFICE), tasked("XK-C2", day(3), OFFICE)])
    assert await anomaly_rows(engine, "repeat_inspection") == []


async def test_inspections_31_days_apart_are_not_repeats_and_30_days_apart_are(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    far = "91440113MA5CFAR01X"
    near = "91440113MA5CNEAR1X"
    await project(
        engine,
        codec,
        [
            tasked("XK-F1", day(0), OFFICE, code=far),
            tasked("XK-F2", day(31), MARKET, code=far),
            tasked("XK-N1", day(0), OFFICE, code=near),
            tasked("XK-N2", day(30), MARKET, code=near),
        ],
    )
    assert [r["subject"] for r in await anomaly_rows(engine, "repeat_inspection")] == ["XK-N2"]


async def test_a_business_without_a_credit_code_is_matched_by_its_name(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await project(
        engine,
        codec,
        [
            tasked("XK-M1", day(0), OFFICE, code=None, name="番禺某建设项目"),
            tasked("XK-M2", day(5), MARKET, code=None, name="番禺某建设项目"),
            tasked("XK-M3", day(6), PLANNING, code=None, name="另一家店"),
            tasked("XK-M4", day(7), PLANNING, code=None, name=None),
        ],
    )
    assert [r["subject"] for r in await anomaly_rows(engine, "repeat_inspection")] == ["XK-M2"]


async def test_a_repeat_inspection_is_recorded_once_whatever_is_redelivered_or_republished(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    first, second = tasked("XK-D1", day(0), OFFICE), tasked("XK-D2", day(2), MARKET)
    batch = records(codec, [first, second])
    runner = projector(engine, codec)
    await runner.process(batch)
    await runner.process(batch)  # redelivered
    # The same facts published again under new ids (a connector's second import), and a third
    # inspection that pairs with both.
    again = [tasked("XK-D1", day(0), OFFICE), tasked("XK-D2", day(2), MARKET)]
    await project(engine, codec, again, start=10)
    await project(engine, codec, [tasked("XK-D3", day(4), PLANNING)], start=20)
    rows = await anomaly_rows(engine, "repeat_inspection")
    assert sorted(r["subject"] for r in rows) == ["XK-D2", "XK-D3", "XK-D3"]
    assert len({r["anomaly_id"] for r in rows}) == 3
    assert next(r for r in rows if r["subject"] == "XK-D2")["event_id"] == second.id


async def test_completing_the_later_inspection_does_not_resolve_the_repeat(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await project(engine, codec, [tasked("XK-E1", day(0), OFFICE), tasked("XK-E2", day(1), MARKET)])
    done = catalog_event(
        "linkage.inspection_completed.v1",
        "XK-E2",
        source=MARKET,
        time_=day(3),
        finding="compliant",
        detail="按许可事项开展检查",
        case_id=None,
        rectify_by=None,
    )
    await project(engine, codec, [done], start=2)
    [row] = await anomaly_rows(engine, "repeat_inspection")
    assert row["resolved_at"] is None


async def test_a_major_case_decided_without_legal_review_names_its_township(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    data = {**case_event("filed", "X").data, "township": "nancun", "requires_legal_review": True}
    await project(
        engine,
        codec,
        [case_event("filed", "MJ-T", time_=day(0), data=data), case_event("decided", "MJ-T", time_=day(9))],
    )
    [row] = await anomaly_rows(engine, "legal_review_missing")
    assert (row["category"], row["township"], row["subject"]) == ("three_systems", "nancun", "MJ-T")


async def test_a_data_quality_anomaly_gains_its_township_once_the_case_is_known(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    completed = catalog_event("case.legal_review_completed.v1", "DQ-T", time_=day(2))
    await project(engine, codec, [completed])
    [before] = await anomaly_rows(engine, "out_of_order")
    assert before["township"] is None
    await project(engine, codec, [case_event("filed", "DQ-T", time_=day(0))], start=1)
    [after] = await anomaly_rows(engine, "out_of_order")
    # Still open (no legal review was requested), and now it belongs to Shilou.
    assert (after["category"], after["township"], after["resolved_at"]) == ("data_quality", "shilou", None)


async def test_two_workers_projecting_two_inspections_of_a_business_at_once_find_the_pair(
    pg_url: str, codec: EventCodec
) -> None:
    engine = make_engine(pg_url)
    await upgrade(engine)
    try:
        for n in range(5):
            code = f"{CODE[:-2]}W{n}"
            a = records(codec, [tasked(f"XK-W{n}-1", day(0), OFFICE, code=code)], start=n, partition=0)
            b = records(codec, [tasked(f"XK-W{n}-2", day(1), MARKET, code=code)], start=n, partition=1)
            # Two projectors, two transactions, interleaved at every await.
            await asyncio.gather(projector(engine, codec).process(a), projector(engine, codec).process(b))
        async with engine.connect() as conn:
            found = await conn.scalar(
                select(func.count()).select_from(anomalies).where(anomalies.c.kind == "repeat_inspection")
            )
        assert found == 5
    finally:
        await engine.dispose()


# ---- case flow -------------------------------------------------------------------------------

MONDAY = datetime(2022, 6, 6, 0, 0, tzinfo=CST)  # twelve weeks of five working days follow


def filings(township: str, per_week: Sequence[int], prefix: str) -> list[Envelope]:
    """`per_week[w]` filings in week w after MONDAY, spread over its working days."""
    data = {**case_event("filed", "X").data, "township": township}
    out = []
    for week, n in enumerate(per_week):
        for i in range(n):
            at = MONDAY + timedelta(weeks=week, days=i % 5, hours=9 + i % 8)
            out.append(case_event("filed", f"{prefix}-{week:02d}-{i:02d}", time_=at, data=data))
    return out


def steady_flow() -> list[Envelope]:
    """Eight weeks of baseline, then week 8 (2022-08-01) to judge, then one filing in week 9 that
    shows the data reaches past week 8."""
    return [
        *filings("shilou", [5, 6, 4, 5, 5, 6, 4, 5, 25], "SP"),  # a spike in week 8
        *filings("nancun", [6, 5, 7, 6, 5, 6, 7, 6, 0], "SI"),  # silence in week 8
        *filings("dagang", [6, 5, 7, 6, 5, 6, 7, 6, 9, 1], "ST"),  # steady, and the last filing
    ]


async def sweep(engine: AsyncEngine, now: datetime) -> int:
    async with engine.begin() as conn:
        return await detect_case_flow(conn, now)


async def test_a_spike_and_a_silence_are_found_and_a_steady_township_is_left_alone(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await project(engine, codec, steady_flow())
    assert await sweep(engine, datetime(2026, 1, 1, tzinfo=UTC)) == 2
    rows = await anomaly_rows(engine)
    flow = sorted(
        (r["kind"], r["category"], r["area"], r["subject"], r["township"], r["occurred_at"], r["event_type"])
        for r in rows
        if r["category"] == "flow"
    )
    week8 = MONDAY + timedelta(weeks=8)
    assert flow == [
        ("case_flow_silence", "flow", "township", "nancun", "nancun", week8, "case_flow.weekly"),
        ("case_flow_spike", "flow", "township", "shilou", "shilou", week8, "case_flow.weekly"),
    ]
    spike = next(r for r in rows if r["kind"] == "case_flow_spike")
    assert "25" in spike["detail"]
    assert "2022-08-01" in spike["detail"]
    assert "2022-08-07" in spike["detail"]
    assert all(r["event_id"] == "" and r["resolved_at"] is None for r in rows if r["category"] == "flow")


async def test_rerunning_the_sweep_records_nothing_twice(engine: AsyncEngine, codec: EventCodec) -> None:
    await project(engine, codec, steady_flow())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert await sweep(engine, now) == 2
    before = await anomaly_rows(engine)
    assert await sweep(engine, now) == 0
    assert await sweep(engine, now + timedelta(minutes=1)) == 0
    assert await anomaly_rows(engine) == before


async def test_a_week_still_running_or_without_later_data_is_not_judged(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    *judged, last = steady_flow()
    await project(engine, codec, judged)
    # Without the filing of week 9, nothing shows that week 8's filings are all in.
    assert await sweep(engine, datetime(2026, 1, 1, tzinfo=UTC)) == 0
    await project(engine, codec, [last], start=1000)
    # `now` inside week 8: the week is not over yet.
    assert await sweep(engine, MONDAY + timedelta(weeks=8, days=6, hours=23)) == 0
    assert await anomaly_rows(engine) == []
    assert await sweep(engine, MONDAY + timedelta(weeks=9)) == 2


async def test_late_filings_resolve_a_silence_they_fill(engine: AsyncEngine, codec: EventCodec) -> None:
    await project(engine, codec, steady_flow())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert await sweep(engine, now) == 2
    # Nancun's connector was down: its week-8 filings reach the hub late.
    await project(engine, codec, filings("nancun", [0] * 8 + [6], "SI-LATE"), start=1000)
    assert await sweep(engine, now) == 0
    silence = (await anomaly_rows(engine, "case_flow_silence"))[0]
    spike = (await anomaly_rows(engine, "case_flow_spike"))[0]
    assert silence["resolved_at"] is not None
    assert spike["resolved_at"] is None


async def test_an_empty_store_or_too_short_a_history_finds_nothing(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert await sweep(engine, now) == 0
    # Seven weeks of history: no week has a full baseline yet.
    await project(engine, codec, filings("shilou", [5, 5, 5, 5, 5, 5, 0, 30], "SH"))
    assert await sweep(engine, now) == 0
    assert await anomaly_rows(engine) == []

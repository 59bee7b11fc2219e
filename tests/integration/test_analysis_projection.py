"""The analysis projection (file reviews, the dispute list, inspections) on both real stores."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.clock_rules import ClockRules
from events.envelope import Envelope
from events.mechanisms import Mechanisms
from events.serde import EventCodec
from projections.hub import hub_projections
from projections.schema import disputes, file_reviews, inspections
from tests.projector_kit import CALENDAR, CLOCK_SETTINGS, ListDeadLetters, projector, records
from tests.support import catalog_event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SUPERVISOR = "district.justice-bureau"
CODE = "91440113MA5CXXXX1A"


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


async def project(engine: AsyncEngine, codec: EventCodec, events: Sequence[Envelope], start: int = 0) -> None:
    await projector(engine, codec).process(records(codec, events, start=start))


async def row(engine: AsyncEngine, table: Table, key: str) -> dict[str, Any]:
    column = table.primary_key.columns.values()[0]
    async with engine.connect() as conn:
        found = (await conn.execute(select(table).where(column == key))).one()
    out = dict(found._mapping)
    # SQLite hands datetimes back without their zone; every stored time is UTC.
    return {
        k: v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
        for k, v in out.items()
    }


async def count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


def scored(subject: str, time_: datetime, score: int, problems: list[str]) -> Envelope:
    return catalog_event(
        "file_review.scored.v1",
        subject,
        source=SUPERVISOR,
        time_=time_,
        reviewed_unit="shilou.enforcement-office",
        township="shilou",
        score=score,
        passed=score >= 80,
        reviewing_body="区司法局",
        problems=problems,
        review_batch="2026Q1",
        case_number="番综执立〔2026〕7号",
        case_id="SL-2026-7",
    )


def dispute(subject: str) -> list[Envelope]:
    office = "shilou.enforcement-office"
    return [
        catalog_event(
            "dispute.raised.v1",
            subject,
            source=office,
            time_=at(0),
            units=[office, "shilou.market-supervision-office"],
            township="shilou",
            matter="占道经营监管职责边界",
            case_id=None,
        ),
        catalog_event(
            "dispute.referred.v1", subject, source=office, time_=at(24), referred_to=SUPERVISOR, case_id=None
        ),
        catalog_event(
            "dispute.decided.v1",
            subject,
            source=SUPERVISOR,
            time_=at(240),
            responsible_unit=office,
            basis="《番禺区镇街综合行政执法事项职责边界清单》",
            case_id=None,
        ),
        catalog_event(
            "dispute.listed.v1",
            subject,
            source=SUPERVISOR,
            time_=at(300),
            list_entry_id=f"QD-{subject}",
            matter_category="占道经营",
            case_id=None,
        ),
    ]


def tasked(subject: str, time_: datetime, *, code: str | None, name: str | None) -> Envelope:
    return catalog_event(
        "linkage.inspection_tasked.v1",
        subject,
        source="shilou.market-supervision-office",
        time_=time_,
        inspecting_unit="shilou.enforcement-office",
        township="shilou",
        business_name=name,
        business_credit_code=code,
        permit_id=None,
        case_id=None,
    )


def completed(subject: str, time_: datetime, finding: str) -> Envelope:
    return catalog_event(
        "linkage.inspection_completed.v1",
        subject,
        time_=time_,
        finding=finding,
        detail="按许可事项开展检查",
        case_id=None,
        rectify_by=None,
    )


def test_the_analysis_projection_runs_between_the_directory_and_the_anomalies() -> None:
    names = [p.name for p in hub_projections(Mechanisms.load(), ClockRules.load(), CALENDAR, CLOCK_SETTINGS)]
    assert names == [
        "case_registry",
        "matters",
        "directory",
        "analysis",
        "anomalies",
        "clocks",
        "alerts",
        "archive",
    ]


async def test_a_scored_case_file_becomes_one_file_review_row(engine: AsyncEngine, codec: EventCodec) -> None:
    await project(engine, codec, [scored("PC-1", at(0), 76, ["文书不规范", "证据不充分"])])
    got = await row(engine, file_reviews, "PC-1")
    assert got == {
        "review_id": "PC-1",
        "reviewed_unit": "shilou.enforcement-office",
        "township": "shilou",
        "score": 76,
        "passed": False,
        "reviewing_body": "区司法局",
        "review_batch": "2026Q1",
        "case_id": "SL-2026-7",
        "case_number": "番综执立〔2026〕7号",
        "problems": 2,
        "scored_at": at(0),
    }


async def test_a_rescored_file_keeps_the_latest_score_in_either_arrival_order(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    first, second = scored("PC-A", at(0), 70, ["a", "b", "c"]), scored("PC-A", at(5), 90, [])
    await project(engine, codec, [second])
    await project(engine, codec, [first], start=1)
    late_first = await row(engine, file_reviews, "PC-A")
    first_b, second_b = scored("PC-B", at(0), 70, ["a", "b", "c"]), scored("PC-B", at(5), 90, [])
    await project(engine, codec, [first_b, second_b], start=2)
    in_one_batch = await row(engine, file_reviews, "PC-B")
    for got in (late_first, in_one_batch):
        assert (got["score"], got["passed"], got["problems"], got["scored_at"]) == (90, True, 0, at(5))


async def test_a_redelivered_or_republished_review_counts_once(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    event = scored("PC-D", at(0), 85, [])
    batch = records(codec, [event, event])
    runner = projector(engine, codec)
    await runner.process(batch)
    again = await runner.process(batch)
    await project(engine, codec, [event], start=50)
    assert again.skipped_redelivered == 2
    assert await count(engine, file_reviews) == 1
    assert (await row(engine, file_reviews, "PC-D"))["score"] == 85


async def test_a_dispute_in_order_reaches_the_list_with_every_step_recorded(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await project(engine, codec, dispute("ZY-1")[:2])
    assert (await row(engine, disputes, "ZY-1"))["status"] == "referred"
    await project(engine, codec, dispute("ZY-1")[2:], start=2)
    got = await row(engine, disputes, "ZY-1")
    assert got["status"] == "listed"
    assert json.loads(got["units"]) == ["shilou.enforcement-office", "shilou.market-supervision-office"]
    assert (got["township"], got["matter"]) == ("shilou", "占道经营监管职责边界")
    assert (got["referred_to"], got["responsible_unit"]) == (SUPERVISOR, "shilou.enforcement-office")
    assert (got["list_entry_id"], got["matter_category"]) == ("QD-ZY-1", "占道经营")
    assert got["basis"] == "《番禺区镇街综合行政执法事项职责边界清单》"
    assert (got["raised_at"], got["referred_at"], got["decided_at"], got["listed_at"]) == (
        at(0),
        at(24),
        at(240),
        at(300),
    )
    assert got["last_event_at"] == at(300)


async def test_a_dispute_in_any_arrival_order_ends_in_the_same_row(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    seen = set()
    for n, order in enumerate(itertools.permutations(range(4))):
        subject = f"ZY-P{n}"
        events = dispute(subject)
        # One event per batch, so that the database merge (not the in-batch fold) orders them.
        for i, index in enumerate(order):
            await project(engine, codec, [events[index]], start=100 * n + i)
        got = await row(engine, disputes, subject)
        seen.add(
            (
                got["status"],
                got["township"],
                got["units"],
                got["referred_to"],
                got["responsible_unit"],
                got["matter_category"],
                got["raised_at"],
                got["referred_at"],
                got["decided_at"],
                got["listed_at"],
                got["last_event_at"],
            )
        )
    assert len(seen) == 1
    status, township, *_, raised, referred, decided, listed, last = seen.pop()
    assert (status, township) == ("listed", "shilou")
    assert (raised, referred, decided, listed, last) == (at(0), at(24), at(240), at(300), at(300))


async def test_a_dispute_status_never_moves_back_when_an_earlier_step_arrives_late(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    raised, referred, decided, _ = dispute("ZY-L")
    await project(engine, codec, [raised, decided])
    await project(engine, codec, [referred], start=2)
    got = await row(engine, disputes, "ZY-L")
    assert (got["status"], got["referred_at"], got["decided_at"]) == ("decided", at(24), at(240))


async def test_an_inspection_is_keyed_by_credit_code_else_by_name_else_not_at_all(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await project(
        engine,
        codec,
        [
            tasked("XK-1", at(0), code=CODE.lower() + " ", name="番禺石楼某餐饮店"),
            tasked("XK-2", at(0), code=None, name=" 番禺石楼某餐饮店 "),
            tasked("XK-3", at(0), code=None, name=None),
            tasked("XK-4", at(0), code="", name="x" * 300),
        ],
    )
    keys = {s: (await row(engine, inspections, s))["business_key"] for s in ("XK-1", "XK-2", "XK-3", "XK-4")}
    assert keys["XK-1"] == f"uscc:{CODE}"
    assert keys["XK-2"] == "name:番禺石楼某餐饮店"
    assert keys["XK-3"] is None
    # Too long for the column: hashed, so that it still identifies the business.
    assert keys["XK-4"].startswith("name:sha256:")
    assert len(keys["XK-4"]) <= 160


async def test_an_inspection_completed_before_its_tasking_arrives_fills_in_either_order(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await project(engine, codec, [completed("XK-O", at(30), "rectification_ordered")])
    early = await row(engine, inspections, "XK-O")
    assert (early["completed_at"], early["finding"], early["tasked_at"], early["business_key"]) == (
        at(30),
        "rectification_ordered",
        None,
        None,
    )
    await project(engine, codec, [tasked("XK-O", at(0), code=CODE, name="番禺某店")], start=1)
    await project(
        engine,
        codec,
        [
            tasked("XK-N", at(0), code=CODE, name="番禺某店"),
            completed("XK-N", at(30), "rectification_ordered"),
        ],
        start=2,
    )
    for subject in ("XK-O", "XK-N"):
        got = await row(engine, inspections, subject)
        assert got == {
            "subject": subject,
            "inspecting_unit": "shilou.enforcement-office",
            "township": "shilou",
            "business_key": f"uscc:{CODE}",
            "business_name": "番禺某店",
            "tasked_at": at(0),
            "completed_at": at(30),
            "finding": "rectification_ordered",
        }


async def test_a_retasked_inspection_keeps_its_first_tasking_and_its_latest_result(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    again = tasked("XK-R", at(48), code=CODE, name="番禺某店")
    first = tasked("XK-R", at(0), code=None, name="旧名称")
    await project(engine, codec, [again, completed("XK-R", at(60), "compliant")])
    await project(engine, codec, [first, completed("XK-R", at(10), "violation_found")], start=2)
    got = await row(engine, inspections, "XK-R")
    assert (got["tasked_at"], got["business_key"], got["business_name"]) == (at(0), "name:旧名称", "旧名称")
    assert (got["completed_at"], got["finding"]) == (at(60), "compliant")


async def test_a_label_wider_than_its_column_is_dead_lettered_by_name_and_does_not_stop_the_batch(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    # Cutting it to the column would silently change an identifier (two entries could merge), so
    # the decoder refuses it (events/storable.py) and the batch goes on without it.
    long = catalog_event(
        "dispute.listed.v1",
        "ZY-LONG",
        source=SUPERVISOR,
        time_=at(0),
        list_entry_id="Q" * 500,
        matter_category="类" * 500,
        case_id=None,
    )
    fine = catalog_event("dispute.listed.v1", "ZY-FINE", source=SUPERVISOR, time_=at(1), case_id=None)
    dead = ListDeadLetters()
    await projector(engine, codec, dead=dead).process(records(codec, [long, fine]))
    assert [(reason, detail.split(":")[0]) for _, reason, detail in dead.sent] == [
        ("unstorable_text", "data.list_entry_id")
    ]
    assert (await row(engine, disputes, "ZY-FINE"))["status"] == "listed"
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).where(disputes.c.dispute_id == "ZY-LONG")) == 0


async def test_batches_large_enough_for_copy_and_merge_give_the_same_rows(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    # 60 rows per table and batch: PostgreSQL stages them with COPY (48 rows or more), then merges
    # them into rows the first batch wrote; SQLite runs the same upserts as an executemany.
    n = 60
    steps = [dispute(f"ZY-C{i:02d}") for i in range(n)]
    first = [e for s in steps for e in (s[0], s[2])]
    first += [tasked(f"XK-C{i:02d}", at(i), code=None, name=f"店{i}") for i in range(n)]
    first += [scored(f"PC-C{i:02d}", at(1), 60, ["a"]) for i in range(n)]
    second = [e for s in steps for e in (s[3], s[1])]
    second += [completed(f"XK-C{i:02d}", at(100), "compliant") for i in range(n)]
    second += [scored(f"PC-C{i:02d}", at(2), 95, []) for i in range(n)]
    await project(engine, codec, first)
    await project(engine, codec, second, start=len(first))
    async with engine.connect() as conn:
        d = disputes.c
        dispute_rows = (
            await conn.execute(select(d.status, d.referred_to, d.list_entry_id, d.township))
        ).all()
        i = inspections.c
        inspection_rows = (await conn.execute(select(i.business_key, i.finding, i.completed_at))).all()
        r = file_reviews.c
        review_rows = (await conn.execute(select(r.score, r.problems))).all()
    assert len(dispute_rows) == n
    assert {(s, ref, township) for s, ref, _, township in dispute_rows} == {("listed", SUPERVISOR, "shilou")}
    assert {entry for *_, entry, _ in dispute_rows} == {f"QD-ZY-C{i:02d}" for i in range(n)}
    assert sorted(key for key, *_ in inspection_rows) == sorted(f"name:店{i}" for i in range(n))
    assert {finding for _, finding, _ in inspection_rows} == {"compliant"}
    assert sorted(review_rows) == [(95, 0)] * n

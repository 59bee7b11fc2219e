"""The projector runtime and the case registry on both real stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import random

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.serde import EventCodec
from projections.runtime import SourceRecord
from projections.schema import cases, event_history, projection_checkpoints
from tests.projector_kit import TOPIC, ListDeadLetters, SettableIncarnation, projector, records
from tests.support import case_event


async def case_row(engine: AsyncEngine, case_id: str) -> dict[str, object]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(cases).where(cases.c.case_id == case_id))).one()
    return dict(row._mapping)


async def count(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


async def test_a_case_moves_through_filed_decided_closed(engine: AsyncEngine, codec: EventCodec) -> None:
    events = [case_event("filed", "SL-1"), case_event("decided", "SL-1"), case_event("closed", "SL-1")]
    result = await projector(engine, codec).process(records(codec, events))
    row = await case_row(engine, "SL-1")
    assert (row["stage"], row["township"], row["outcome"], row["event_count"]) == (
        "closed",
        "shilou",
        "penalty",
        3,
    )
    assert row["fine_amount_fen"] == 500_000
    assert sum(result.applied.values()) == 3


async def test_redelivering_a_batch_changes_nothing(engine: AsyncEngine, codec: EventCodec) -> None:
    batch = records(codec, [case_event("filed", "SL-2"), case_event("decided", "SL-2")])
    runner = projector(engine, codec)
    await runner.process(batch)
    again = await runner.process(batch)
    assert again.skipped_redelivered == 2
    assert again.applied == {}
    assert (await case_row(engine, "SL-2"))["event_count"] == 2


async def test_a_late_rewind_below_the_checkpoint_is_skipped(engine: AsyncEngine, codec: EventCodec) -> None:
    events = [case_event("filed", f"SL-R{i}") for i in range(6)]
    batch = records(codec, events)
    runner = projector(engine, codec)
    await runner.process(batch[:4])
    # The partition rewinds to offset 2 and the consumer reads 2..5 again.
    result = await runner.process(batch[2:])
    assert result.skipped_redelivered == 2
    assert sum(result.applied.values()) == 2
    assert await count(engine, cases) == 6


async def test_the_same_event_id_published_twice_counts_once(engine: AsyncEngine, codec: EventCodec) -> None:
    filed = case_event("filed", "SL-3")
    # Published twice: two offsets, one event id, and once twice inside one batch.
    batch = records(codec, [filed, filed, case_event("closed", "SL-3")])
    await projector(engine, codec).process(batch)
    later = records(codec, [filed], start=10)
    result = await projector(engine, codec).process(later)
    assert result.applied == {}
    row = await case_row(engine, "SL-3")
    assert row["event_count"] == 2
    assert await count(engine, event_history) == 2


async def test_out_of_order_events_converge_to_the_same_row(engine: AsyncEngine, codec: EventCodec) -> None:
    base = [case_event("filed", "X"), case_event("decided", "X"), case_event("closed", "X")]
    seen = set()
    for n, order in enumerate(itertools.permutations(base)):
        case_id = f"SL-P{n}"
        events = [
            case_event(e.type.split(".")[-2], case_id, time_=e.time, event_id=f"{e.id[:-2]}{n:02d}")
            for e in order
        ]
        # One event per batch, so that the database merge (not the in-batch fold) orders them.
        for i, event in enumerate(events):
            await projector(engine, codec).process(records(codec, [event], start=100 * n + i))
        row = await case_row(engine, case_id)
        seen.add((row["stage"], row["township"], row["outcome"], row["event_count"], row["handling_unit"]))
    assert seen == {("closed", "shilou", "penalty", 3, "shilou.enforcement-office")}


async def test_a_new_broker_incarnation_does_not_skip_new_events(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    incarnation = SettableIncarnation()
    runner = projector(engine, codec, incarnation)
    await runner.process(records(codec, [case_event("filed", f"SL-I{i}") for i in range(5)]))
    # The memory-only broker restarts: offsets begin at zero again with new events.
    incarnation.value = "broker-b"
    result = await runner.process(records(codec, [case_event("filed", "SL-NEW")]))
    assert result.applied == {"cn.gov.liandong.case.filed.v1": 1}
    async with engine.connect() as conn:
        rows = (await conn.execute(select(projection_checkpoints))).all()
    assert [(r.offset, r.incarnation) for r in rows] == [(0, "broker-b")]


async def test_undecodable_records_go_to_dead_letters_and_the_stream_goes_on(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    good = records(codec, [case_event("filed", "SL-D1"), case_event("filed", "SL-D2")])
    poison = SourceRecord(TOPIC, 0, 1, 0, b"SL-X", b"\x01garbage", good[0].headers)
    dead = ListDeadLetters()
    batch = [good[0], poison, SourceRecord(TOPIC, 0, 2, 0, good[1].key, good[1].value, good[1].headers)]
    result = await projector(engine, codec, dead=dead).process(batch)
    assert [(r.offset, reason) for r, reason, _ in dead.sent] == [(1, "bad_wire_format")]
    assert result.dead_lettered == {"bad_wire_format": 1}
    assert await count(engine, cases) == 2
    async with engine.connect() as conn:
        assert await conn.scalar(select(projection_checkpoints.c.offset)) == 2


async def test_a_shuffled_stream_over_many_batches_matches_its_fold(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    rng = random.Random(7)
    events = [case_event(kind, f"SL-S{i}") for i in range(40) for kind in ("filed", "decided", "closed")]
    rng.shuffle(events)
    stream = records(codec, events)
    runner = projector(engine, codec)
    position = 0
    while position < len(stream):
        size = rng.randint(1, 17)
        # Every batch overlaps the previous one, as a redelivery after a crash would.
        start = max(0, position - rng.randint(0, 5))
        await runner.process(stream[start : position + size])
        position += size
    async with engine.connect() as conn:
        rows = (await conn.execute(select(cases.c.stage, cases.c.event_count))).all()
    assert len(rows) == 40
    assert {(r.stage, r.event_count) for r in rows} == {("closed", 3)}

"""What the archive costs the projection stage: the hub's projector with and without it.

    .venv/bin/python -m bench.archive_cost                 # 30,000 catalog-mix events, 3 runs each
    .venv/bin/python -m bench.archive_cost --events 50000 --runs 5

The events of `bench/event_mix.py`'s catalog mix are published once to a fresh embedded broker.
Every personal-data field is rewritten with a person of its own per subject and role (a distinct
name, ID number, phone and address), so that party references, data keys and ciphertexts are as
many as in real traffic, not one shared sample value. Each run then reads every partition with a
bare aiokafka consumer into a fresh, migrated PostgreSQL database through the hub's `Projector`,
as `bench/projection_stage.py`'s hub run does (batches of LIANDONG_BATCH_MAX):

- `without`: every hub projection but the archive;
- `with`: all of them, the archive last (hash chain, party keys, encryption, parties).

Runs alternate without, with, without, … in one process, so both see the same machine load.
After each `with` run the chain is verified (`projections.archive_store.verify`) and timed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import timedelta

from bench.event_mix import SOURCES
from bench.projection_stage import (
    CountingDeadLetters,
    FixedIncarnation,
    Workload,
    open_consumer,
    publish,
    source_record,
)
from events.calendar import WorkingDayCalendar
from events.catalog import Catalog
from events.clock_rules import ClockRules
from events.envelope import Envelope
from events.mechanisms import Mechanisms
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.archive_store import verify
from projections.clock_store import ClockSettings
from projections.db import make_engine
from projections.hub import hub_projections
from projections.migrate import upgrade
from projections.pii import party_fields
from projections.runtime import Projector
from services.embedded_broker import EmbeddedBroker
from services.settings import DEFAULT_BATCH_MAX
from tests.support import create_pg_database, drop_pg_database

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平"


def with_people(events: Sequence[Envelope], catalog: Catalog) -> list[Envelope]:
    """Each (subject, role) its own person, the same in every event of that subject."""
    out = []
    for e in events:
        groups = party_fields(catalog.get(e.type).pii_fields)
        if not groups:
            out.append(e)
            continue
        data = dict(e.data)
        for group in groups:
            n = int.from_bytes(hashlib.sha256(f"{e.subject}/{group.role}".encode()).digest()[:8], "big")
            person = {
                "name": SURNAMES[n % 20] + GIVEN[(n // 20) % 20] + GIVEN[(n // 400) % 20],
                "id_number": f"440113{19500101 + n % 500000:08d}{n % 9000 + 1000:04d}",
                "phone": f"13{n % 1_000_000_000:09d}",
                "address": f"广州市番禺区石楼镇{n % 97}村{n % 300}号",
            }
            for kind, name in group.fields.items():
                data[name] = person[kind]
        out.append(dataclasses.replace(e, data=data))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    archive: bool
    events: int
    seconds: float
    verify_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def run(bootstrap: str, work: Workload, codec: EventCodec, archive: bool, batch: int) -> Run:
    url = await create_pg_database()
    engine = make_engine(url)
    await upgrade(engine)
    projections = [
        p
        for p in hub_projections(
            Mechanisms.load(),
            ClockRules.load(),
            WorkingDayCalendar.load(),
            ClockSettings(grace=timedelta(seconds=60), reescalate_after=timedelta(hours=48)),
        )
        if archive or p.name != "archive"
    ]
    dead = CountingDeadLetters()
    projector = Projector(engine, "bench", codec, projections, dead, FixedIncarnation())
    consumer = await open_consumer(bootstrap, work.topics)
    try:
        seen = applied = 0
        started: float | None = None
        while seen < work.events:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=batch)
            records = [source_record(r) for rs in fetched.values() for r in rs]
            if not records:
                continue
            if started is None:
                started = time.perf_counter()
            result = await projector.process(records)
            applied += sum(result.applied.values())
            seen += len(records)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        if dead.sent or applied != work.unique:
            raise AssertionError(f"applied {applied} of {work.unique}, dead-lettered {len(dead.sent)}")
        checked = 0.0
        if archive:
            began = time.perf_counter()
            verdict = await verify(engine)
            checked = time.perf_counter() - began
            if verdict.broken is not None or verdict.records != work.unique:
                raise AssertionError(f"the chain does not verify: {verdict}")
        return Run(archive, seen, elapsed, checked)
    finally:
        await consumer.stop()
        await engine.dispose()
        await drop_pg_database(url)


def spread(values: Sequence[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH_MAX)
    args = parser.parse_args(argv)
    catalog = Catalog.load()
    codec = EventCodec(catalog, LocalSchemaRegistry())
    await codec.prepare()
    events = with_people(SOURCES["catalog"](args.events), catalog)
    named = sum(1 for e in events if party_fields(catalog.get(e.type).pii_fields))
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    runs: list[Run] = []
    try:
        work = await publish(bootstrap, codec, events)
        del events
        for i in range(args.runs):
            for archive in (False, True):
                r = await run(bootstrap, work, codec, archive, args.batch)
                runs.append(r)
                print(
                    f"  run {i + 1} {'with' if archive else 'without':7} archive: {r.events:,} events in "
                    f"{r.seconds:.2f} s = {r.rate:,.0f}/s"
                    + (f"; verify {r.verify_seconds:.2f} s" if archive else ""),
                    file=sys.stderr,
                )
    finally:
        broker.stop()
    without = [r for r in runs if not r.archive]
    with_ = [r for r in runs if r.archive]
    ratios = [w.rate / wo.rate for wo, w in zip(without, with_, strict=True)]
    print(
        f"{work.events:,} events ({named:,} naming parties), batches of {args.batch:,}, {args.runs} runs each"
    )
    print(f"without the archive, events/s min / median / max: {spread([r.rate for r in without], ',.0f')}")
    print(f"with the archive,    events/s min / median / max: {spread([r.rate for r in with_], ',.0f')}")
    print(f"with ÷ without, per pair of runs: min / median / max = {spread(ratios, '.3f')}")
    verify_rates = [r.events / r.verify_seconds for r in with_ if r.verify_seconds]
    print(f"audit verify, records/s min / median / max: {spread(verify_rates, ',.0f')}")


if __name__ == "__main__":
    asyncio.run(main())

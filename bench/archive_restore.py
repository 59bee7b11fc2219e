"""Backups: how fast `archive export` writes and `archive restore` rebuilds a hub (docs/backup.md).

    .venv/bin/python -m bench.archive_restore                  # 30,000 catalog-mix events
    .venv/bin/python -m bench.archive_restore --events 100000

1. Setup (not timed): `bench/archive_cost.py`'s catalog mix, each person distinct, is published to an
   embedded broker and projected by the hub's projector, archive included, into a fresh PostgreSQL
   database, under a fixed master key.
2. Export: `liandong archive export FILE` as its own process, timed; the file's size.
3. Restore: `liandong archive restore FILE` as its own process, into a second embedded broker and a
   second fresh database; it prints its phases (check the file, write the archive's tables,
   republish, rebuild the projections). Then the projections of both stores are compared
   (tests/projection_diff.py) and the archive tables row for row.
The peak resident memory of each command's process is reported (wait4): it must not grow with the
number of records.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bench.archive_cost import with_people
from bench.event_mix import SOURCES
from bench.projection_stage import (
    CountingDeadLetters,
    FixedIncarnation,
    open_consumer,
    publish,
    source_record,
)
from events.calendar import WorkingDayCalendar
from events.catalog import Catalog
from events.clock_rules import ClockRules
from events.mechanisms import Mechanisms
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.clock_store import ClockSettings
from projections.db import make_engine
from projections.hub import hub_projections
from projections.migrate import upgrade
from projections.runtime import Projector
from projections.schema import archive, parties, party_keys
from services.embedded_broker import EmbeddedBroker
from services.settings import DEFAULT_BATCH_MAX
from tests.projection_diff import diff_stores, explain
from tests.support import create_pg_database, drop_pg_database

MASTER_KEY = bytes(range(32))


async def project(bootstrap: str, url: str, codec: EventCodec, events: int, topics: Sequence[str]) -> None:
    engine = make_engine(url)
    await upgrade(engine)
    projections = hub_projections(
        Mechanisms.load(),
        ClockRules.load(),
        WorkingDayCalendar.load(),
        ClockSettings(grace=timedelta(seconds=60), reescalate_after=timedelta(hours=48)),
        master_key=MASTER_KEY,
    )
    projector = Projector(engine, "hub", codec, projections, CountingDeadLetters(), FixedIncarnation())
    consumer = await open_consumer(bootstrap, topics)
    try:
        seen = 0
        while seen < events:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=DEFAULT_BATCH_MAX)
            records = [source_record(r) for rs in fetched.values() for r in rs]
            if records:
                await projector.process(records)
                seen += len(records)
    finally:
        await consumer.stop()
        await engine.dispose()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True, slots=True)
class Timed:
    seconds: float
    rss_mib: float  # the process's own peak resident memory
    output: str


def cli(args: list[str], env: dict[str, str]) -> Timed:
    """Run `liandong ARGS` as its own process: its wall time and its own peak memory.

    The peak is the process's VmHWM, sampled while it runs: `wait4`'s ru_maxrss would report this
    bench's own memory, which a forked child inherits as its starting high-water mark."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args], env={**os.environ, **env}, stdout=out, stderr=out
        )
        status = Path(f"/proc/{process.pid}/status")
        peak_kib = 0
        while process.poll() is None:
            try:
                text = status.read_text()
            except OSError:  # it has just exited
                break
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
            time.sleep(0.05)  # why: sampling interval of the child's memory, not synchronisation
        process.wait()
        out.seek(0)
        output = out.read().decode()
    seconds = time.perf_counter() - began
    if process.returncode != 0:
        raise AssertionError(f"liandong {' '.join(args)} exited {process.returncode}:\n{output[-3000:]}")
    lines = [line for line in output.splitlines() if not line.startswith("{")]  # JSON logs left out
    return Timed(seconds, peak_kib / 1024, "\n  ".join(lines))


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=30_000)
    args = parser.parse_args(argv)
    catalog = Catalog.load()
    codec = EventCodec(catalog, LocalSchemaRegistry())
    await codec.prepare()
    first, second = EmbeddedBroker(), EmbeddedBroker()
    source_url, target_url = await create_pg_database(), await create_pg_database()
    source, target = make_engine(source_url), make_engine(target_url)
    try:
        work = await publish(first.start(), codec, with_people(SOURCES["catalog"](args.events), catalog))
        began = time.perf_counter()
        await project(first.bootstrap, source_url, codec, work.events, work.topics)
        print(
            f"setup: {work.events:,} events projected in {time.perf_counter() - began:.1f} s", file=sys.stderr
        )
        print(f"peak rss after setup: {rss_mib():.0f} MiB", file=sys.stderr)

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "hub.archive.gz"
            env = {
                "LIANDONG_DATABASE_URL": source_url,
                "LIANDONG_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
                "LIANDONG_TOPIC_PARTITIONS": "6",
                "LIANDONG_DATA_DIR": tmp,
                "LIANDONG_LOG_LEVEL": "WARNING",
            }
            exported = cli(["archive", "export", str(path)], env)
            size = path.stat().st_size
            print(
                f"export: {args.events:,} records in {exported.seconds:.2f} s = "
                f"{args.events / exported.seconds:,.0f} records/s (process start included); "
                f"file {size / 1e6:.1f} MB ({size / args.events:.0f} B/record); "
                f"peak rss {exported.rss_mib:.0f} MiB\n  {exported.output}"
            )
            target_env = env | {
                "LIANDONG_DATABASE_URL": target_url,
                "LIANDONG_KAFKA_BOOTSTRAP": second.start(),
            }
            restored = cli(["archive", "restore", str(path)], target_env)
            print(
                f"restore: {args.events:,} records in {restored.seconds:.2f} s = "
                f"{args.events / restored.seconds:,.0f} records/s end to end (process start included); "
                f"peak rss {restored.rss_mib:.0f} MiB\n  {restored.output}"
            )
        diffs = await diff_stores(source, target)
        if diffs:
            raise AssertionError(explain(diffs))
        for table in (archive, party_keys, parties):
            async with source.connect() as a, target.connect() as b:
                query = table.select().order_by(*table.primary_key.columns)
                if (await a.execute(query)).all() != (await b.execute(query)).all():
                    raise AssertionError(f"{table.name} differs after the restore")
        print("the restored store equals the original: projections, archive, party keys, parties")
    finally:
        await source.dispose()
        await target.dispose()
        first.stop()
        second.stop()
        await drop_pg_database(source_url)
        await drop_pg_database(target_url)


if __name__ == "__main__":
    asyncio.run(main())

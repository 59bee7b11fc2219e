"""Compare the projections of two stores row by row: the live one against a from-scratch rebuild.

Used by tests/integration/test_faults.py and bench/faults.py to show that a run with failures left
the same projections as a replay of the same topics into an empty database.

`replay_like` is `liandong rebuild` (services/rebuild.py: its projector, its consumer, its replay
loop) bounded by the live store's checkpoints instead of the end offsets, so that both stores saw
the same records. The live workers must be stopped first: their timers keep publishing (alert
withdrawals, announcements), and a replay up to the end offsets would read what the live store has
not projected yet.

What is left out of the comparison, and why (docs/reliability.md repeats it):
- tables that are not projections of the topics: the store's identity and keys (`hub_meta`,
  `api_keys`, `alembic_version`), the consumers' positions (`projection_checkpoints`), connector
  runs and webhook deliveries (a replay does not send history again, services/rebuild.py);
- columns that say *when this store* did something, not what happened: `updated_at`,
  `last_seen_at`, `created_at` of rows the projector stamps with the wall clock;
- in `event_history`, the position each event was read from (topic, partition, offset): the live
  store records a replayed dead letter where the replay put it, a rebuild reads its first copy;
- in `anomalies`, only the open ones are compared, without the columns the worker's timers own
  (the same list `liandong projections rebuild` keeps from the live table, projections/shadow.py):
  `detected_at` (the wall-clock time a batch found it), `resolved_at`, `announced_at` (the
  announcer's). The set of *open* anomalies does not depend on batching or arrival order
  (docs/architecture.md); a resolved one records that a fact once arrived out of order in *this*
  store's batches, which a replay in other batches need not see. The case-flow sweep's rows
  (category `flow`) are left out: a timer derives them from the wall clock, not from the topics;
- what is random or keyed per store by design: ciphertexts of parties' personal data, their data
  keys (`key_id`, `wrapped_key`) and the party references derived under the store's key, and so
  the archive's canonical records and their chain hashes. The archive is compared by the events it
  holds, once each; its order is the order in which this store projected, which a replay does not
  reproduce (the chain itself is checked by `liandong audit verify`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.incarnation import BrokerIncarnation
from events.catalog import Catalog
from events.serde import EventCodec
from projections import schema
from projections.anomalies import FLOW
from projections.db import make_engine
from projections.migrate import upgrade
from services.rebuild import (
    DEFAULT_BATCH,
    DEFAULT_CONSUMER,
    RebuildResult,
    Targets,
    assign,
    build_projector,
    catalog_topics,
    open_source,
    replay_to,
)
from services.registry import make_registry
from services.settings import Settings
from tests.support import create_pg_database, drop_pg_database, plain

SKIPPED_TABLES = frozenset(
    {
        "hub_meta",
        "api_keys",
        "alembic_version",
        "projection_checkpoints",
        "connector_runs",
        "deliveries",
        "archive_head",
    }
)
WALL_CLOCK_COLUMNS = frozenset({"updated_at", "last_seen_at", "created_at"})
TIMER_COLUMNS: Mapping[str, frozenset[str]] = {
    "anomalies": frozenset({"detected_at", "announced_at", "resolved_at"}),
    # Where an event was read from: a replayed dead letter from its replay, a rebuild from its
    # first copy. Which events, of what, from whom and when, is compared.
    "event_history": frozenset({"topic", "partition", "offset"}),
}
RANDOM_COLUMNS = frozenset(
    {
        "name_ct",
        "id_number_ct",
        "phone_ct",
        "address_ct",
        "wrapped_key",
        "key_id",
        "party_ref",
        "record",
        "prev_hash",
        "hash",
        "seq",
    }
)


@dataclass(frozen=True, slots=True)
class TableDiff:
    table: str
    rows: tuple[int, int]  # in the live store, in the rebuild
    only_live: tuple[Any, ...]  # a few examples
    only_rebuilt: tuple[Any, ...]


def compared_tables() -> list[Table]:
    return [t for t in schema.metadata.sorted_tables if t.name not in SKIPPED_TABLES]


def compared_columns(table: Table) -> list[Any]:
    left_out = WALL_CLOCK_COLUMNS | RANDOM_COLUMNS | TIMER_COLUMNS.get(table.name, frozenset())
    return [c for c in table.columns if c.name not in left_out]


async def rows_of(engine: AsyncEngine, table: Table) -> list[tuple[Any, ...]]:
    query = select(*compared_columns(table))
    if table is schema.anomalies:
        a = schema.anomalies.c
        query = query.where(a.category != FLOW, a.resolved_at.is_(None))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return sorted((tuple(plain(v) for v in row) for row in rows), key=repr)


async def diff_stores(live: AsyncEngine, rebuilt: AsyncEngine, examples: int = 3) -> list[TableDiff]:
    """The tables whose compared rows differ; empty when the stores hold the same projections."""
    diffs: list[TableDiff] = []
    for table in compared_tables():
        mine, theirs = await rows_of(live, table), await rows_of(rebuilt, table)
        if mine != theirs:
            a, b = _multiset(mine), _multiset(theirs)
            diffs.append(
                TableDiff(
                    table.name,
                    (len(mine), len(theirs)),
                    tuple(_excess(a, b))[:examples],
                    tuple(_excess(b, a))[:examples],
                )
            )
    return diffs


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in compared_tables():
        counts[table.name] = len(await rows_of(engine, table))
    return counts


async def replay_like(
    live: AsyncEngine, settings: Settings, consumer: str = DEFAULT_CONSUMER
) -> RebuildResult:
    """Replay the topics into `settings.database_url` (a new database) up to `live`'s checkpoints."""
    if settings.kafka_bootstrap is None:
        raise ValueError("a replay reads the broker: LIANDONG_KAFKA_BOOTSTRAP is needed")
    engine = make_engine(settings.database_url)
    source = open_source(settings.kafka_bootstrap)
    try:
        await upgrade(engine)
        catalog = Catalog.load()
        codec = EventCodec(catalog, make_registry(settings))
        await codec.prepare()
        incarnation = BrokerIncarnation(settings.kafka_bootstrap)
        await incarnation.refresh()
        projector = build_projector(settings, engine, consumer, codec, incarnation)
        await source.start()
        partitions = await assign(source, engine, consumer, incarnation.current, catalog_topics(catalog))
        t = schema.projection_checkpoints
        async with live.connect() as conn:
            rows = await conn.execute(
                select(t.c.topic, t.c.partition, t.c.offset).where(
                    t.c.consumer == consumer, t.c.incarnation == incarnation.current
                )
            )
            ends = {TopicPartition(r.topic, r.partition): int(r.offset) + 1 for r in rows}
        result = RebuildResult()
        await replay_to(source, projector, partitions, Targets(ends), DEFAULT_BATCH, result)
        return result
    finally:
        await source.stop()
        await engine.dispose()


def _multiset(rows: Iterable[tuple[Any, ...]]) -> dict[tuple[Any, ...], int]:
    counts: dict[tuple[Any, ...], int] = {}
    for row in rows:
        counts[row] = counts.get(row, 0) + 1
    return counts


def _excess(a: Mapping[tuple[Any, ...], int], b: Mapping[tuple[Any, ...], int]) -> list[tuple[Any, ...]]:
    return [row for row, n in a.items() if n > b.get(row, 0)]


def explain(diffs: Iterable[TableDiff]) -> str:
    return "\n".join(
        f"{d.table}: {d.rows[0]} live rows, {d.rows[1]} rebuilt; only live e.g. {d.only_live}; "
        f"only rebuilt e.g. {d.only_rebuilt}"
        for d in diffs
    )


async def assert_equals_replay(
    engine: AsyncEngine, bootstrap: str, data_dir: Path, at_least: int = 1, what: str = "a rebuild"
) -> None:
    """Replay the topics from scratch into a new database, up to the live store's checkpoints (the
    same records; stop the live workers first); the projections must be the same. `at_least` is how
    many events the replay must apply, so that two empty stores never pass for equal ones."""
    url = await create_pg_database()
    try:
        settings = Settings.from_env(
            {
                "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
                "LIANDONG_DATABASE_URL": url,
                "LIANDONG_DATA_DIR": str(data_dir),
            }
        )
        replayed = await replay_like(engine, settings)
        assert replayed.applied >= at_least, f"the replay applied {replayed.applied} events, not {at_least}"
        rebuilt = make_engine(url)
        try:
            diffs = await diff_stores(engine, rebuilt)
        finally:
            await rebuilt.dispose()
        assert not diffs, f"the projections differ from {what}:\n" + explain(diffs)
    finally:
        await drop_pg_database(url)

"""`liandong projections rebuild NAME`: rebuild projections in shadow tables and swap them in, while
the worker keeps projecting and the API keeps answering. `liandong projections list` names them.

1. A shadow copy of the store's tables is created (a schema on PostgreSQL, a file on SQLite).
2. Every catalog topic is replayed from the start into it through the hub's real `Projector` and
   all its projections (so reads across projections see the same facts), up to the live
   projector's checkpoints, never beyond: in rounds, re-reading them, until little is left.
3. One transaction on the live store pauses the live projectors between batches, replays the last
   stretch up to their checkpoints exactly, checks that the shadow knows every event the store
   does, and swaps the named projection's tables by copy (`projections.shadow.swap`).
4. The shadow is dropped. The worker resumes where it was: its checkpoints and event history were
   never touched, so events published meanwhile are applied once, on top of the swapped tables.

See docs/rebuild.md for the choices and their costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from connectors.kafka.incarnation import BrokerIncarnation
from events.catalog import Catalog
from events.mechanisms import Mechanisms
from events.serde import EventCodec
from projections import shadow
from projections.db import make_engine
from projections.hub import hub_projections
from projections.migrate import upgrade
from projections.runtime import Projection, Projector
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
from services.rebuilding import mark_rebuilding
from services.registry import make_registry
from services.settings import Settings, SettingsError
from services.worker.closed_loop import ClosedLoop

log = logging.getLogger(__name__)

# Below this many records left, the last stretch is replayed with the live projectors paused.
PAUSED_STRETCH_MAX = 5_000
MAX_UNPAUSED_ROUNDS = 20


def projections_for(settings: Settings) -> list[Projection]:
    loop = ClosedLoop.load(settings)
    return hub_projections(Mechanisms.load(), loop.rules, loop.calendar, loop.settings)


# ---------------------------------------------------------------------------------------------------
# Progress on stderr


class ProgressBar:
    """A bar and an ETA: redrawn in place on a terminal, one line every `interval_s` otherwise."""

    WIDTH = 30

    def __init__(self, stream: TextIO, label: str, interval_s: float | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._label = label
        self._interval = interval_s if interval_s is not None else (0.2 if self._tty else 5.0)
        self._phase = ""
        self._started: float | None = None  # the first record: start-up time is not replay time
        self._last = 0.0
        self._shown: tuple[str, int, int] | None = None
        self._done = 0
        self._total = 0

    def phase(self, name: str) -> None:
        self._phase = name
        if self._started is not None:
            self.update(self._done, self._total, force=True)

    def update(self, done: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._started is None:
            self._started = now
        self._done, self._total = done, max(total, done)
        if not force and now - self._last < self._interval:
            return
        self._last = now
        shown = (self._phase, self._done, self._total)
        if shown == self._shown:
            return
        self._shown = shown
        line = render(self._label, self._phase, self._done, self._total, now - self._started)
        if self._tty:
            self._stream.write("\r\x1b[2K" + line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._started is None:
            return
        self.update(self._done, self._total, force=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def render(label: str, phase: str, done: int, total: int, elapsed_s: float) -> str:
    share = done / total if total else 1.0
    filled = round(share * ProgressBar.WIDTH)
    bar = "#" * filled + "-" * (ProgressBar.WIDTH - filled)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left = total - done
    eta = _clock(left / rate) if rate > 0 else ("0:00" if left == 0 else "--:--")
    return f"{label} {phase:<9} [{bar}] {share * 100:3.0f}% {done:,}/{total:,} events {rate:,.0f}/s ETA {eta}"


def _clock(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


# ---------------------------------------------------------------------------------------------------
# Where the shadow lives


class Shadow(Protocol):
    engine: AsyncEngine
    ref: str  # how a live connection names it: a schema, or the attached database's alias

    async def create(self, live: AsyncEngine) -> None: ...

    def exclusive(self, live: AsyncEngine) -> contextlib.AbstractAsyncContextManager[None]: ...

    def swap_connection(
        self, live: AsyncEngine
    ) -> contextlib.AbstractAsyncContextManager[AsyncConnection]: ...

    async def drop(self, live: AsyncEngine) -> None: ...


class PostgresShadow:
    """A schema of its own; the shadow engine's search_path names only it."""

    def __init__(self, url: str, name: str) -> None:
        self.ref = shadow.schema_name(name)
        self.engine = make_engine(url, connect_args={"server_settings": {"search_path": self.ref}})

    async def create(self, live: AsyncEngine) -> None:
        async with live.begin() as conn:
            await conn.execute(shadow.drop_schema_sql(self.ref))
            await conn.exec_driver_sql(f'CREATE SCHEMA "{self.ref}"')
        async with self.engine.begin() as conn:
            await conn.run_sync(shadow.create_tables)

    @contextlib.asynccontextmanager
    async def exclusive(self, live: AsyncEngine) -> AsyncIterator[None]:
        async with live.connect() as conn:
            held = await conn.scalar(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": self.ref})
            await conn.commit()
            if not held:
                raise RuntimeError(f"another rebuild uses the shadow schema {self.ref}")
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": self.ref})
                await conn.commit()

    @contextlib.asynccontextmanager
    async def swap_connection(self, live: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        async with live.begin() as conn:
            yield conn

    async def drop(self, live: AsyncEngine) -> None:
        await self.engine.dispose()
        async with live.begin() as conn:
            await conn.execute(shadow.drop_schema_sql(self.ref))


class SqliteShadow:
    """A database file beside the store's, attached to the live connection for the swap."""

    def __init__(self, url: str, name: str) -> None:
        database = make_url(url).database
        if not database or database == ":memory:":
            raise SettingsError("a rebuild needs the SQLite store in a file")
        self._live_url = url
        self.path = Path(database).with_name(f"{Path(database).name}.shadow-{name}")
        self.ref = shadow.SQLITE_ALIAS
        self.engine = make_engine(f"sqlite+aiosqlite:///{self.path}")

    def _files(self) -> list[Path]:
        return [self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm", "-journal"))]

    async def create(self, live: AsyncEngine) -> None:
        for f in self._files():
            f.unlink(missing_ok=True)
        async with self.engine.begin() as conn:
            await conn.run_sync(shadow.create_tables)

    @contextlib.asynccontextmanager
    async def exclusive(self, live: AsyncEngine) -> AsyncIterator[None]:
        with _locked(self.path.with_name(self.path.name + ".lock")):
            yield

    @contextlib.asynccontextmanager
    async def swap_connection(self, live: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        # A connection of its own: ATTACH stays with the connection, and must precede the transaction.
        engine = make_engine(self._live_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                await conn.exec_driver_sql(f"ATTACH DATABASE ? AS {self.ref}", (str(self.path),))
                await conn.commit()
                try:
                    yield conn
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise
                finally:
                    await conn.exec_driver_sql(f"DETACH DATABASE {self.ref}")
                    await conn.commit()
        finally:
            await engine.dispose()

    async def drop(self, live: AsyncEngine) -> None:
        await self.engine.dispose()
        for f in self._files():
            f.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".lock").unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"another rebuild holds {path}") from exc
        yield


def shadow_for(url: str, name: str) -> Shadow:
    return SqliteShadow(url, name) if url.startswith("sqlite") else PostgresShadow(url, name)


# ---------------------------------------------------------------------------------------------------
# The rebuild


@dataclass(slots=True)
class ShadowResult:
    chosen: shadow.Chosen
    replay: RebuildResult = field(default_factory=RebuildResult)
    rounds: int = 0
    paused_records: int = 0  # replayed while the live projectors waited
    paused_s: float = 0.0
    swapped: list[shadow.Swapped] = field(default_factory=list)
    seconds: float = 0.0


class _Replay:
    """The shadow's consumer and projector, replaying up to targets that only move forward."""

    def __init__(
        self, source: AIOKafkaConsumer, projector: Projector, partitions: list[TopicPartition], batch: int
    ) -> None:
        self.source = source
        self.projector = projector
        self.partitions = partitions
        self.batch = batch

    def targets(self, live: dict[tuple[str, int], int]) -> Targets:
        assigned = {(tp.topic, tp.partition) for tp in self.partitions}
        unknown = sorted(set(live) - assigned)
        if unknown:
            raise RuntimeError(
                f"the live projector reads partitions this rebuild does not: {unknown}; run again"
            )
        return Targets({TopicPartition(t, p): end for (t, p), end in live.items()})

    async def left(self, targets: Targets) -> int:
        """Records between the consumer's positions and `targets`."""
        total = 0
        for tp in self.partitions:
            total += max(0, (targets.end(tp) or 0) - await self.source.position(tp))
        return total


async def rebuild_projection(
    settings: Settings, name: str, *, batch: int = DEFAULT_BATCH, progress: ProgressBar | None = None
) -> ShadowResult:
    """Rebuild projection `name` (or `all`) beside the live one and swap it in."""
    if settings.kafka_bootstrap is None:
        raise SettingsError(
            "LIANDONG_KAFKA_BOOTSTRAP is required: a rebuild reads the broker's topics "
            "(for `liandong up`, the embedded broker's address it printed)"
        )
    bootstrap = settings.kafka_bootstrap
    result = ShadowResult(shadow.choose(projections_for(settings), name))
    started = time.monotonic()
    live = make_engine(settings.database_url)
    store = shadow_for(settings.database_url, name)
    source = open_source(bootstrap)
    try:
        await upgrade(live)
        # Marked for the whole run: readiness (/readyz) is false meanwhile (services/rebuilding.py).
        async with store.exclusive(live), mark_rebuilding(live, name):
            try:
                await store.create(live)
                catalog = Catalog.load()
                codec = EventCodec(catalog, make_registry(settings))
                await codec.prepare()
                incarnation = BrokerIncarnation(bootstrap)
                await incarnation.refresh()
                projector = build_projector(settings, store.engine, DEFAULT_CONSUMER, codec, incarnation)
                await source.start()
                partitions = await assign(
                    source, store.engine, DEFAULT_CONSUMER, incarnation.current, catalog_topics(catalog)
                )
                replay = _Replay(source, projector, partitions, batch)
                await _unpaused_rounds(replay, live, incarnation, result, progress)
                await _paused_swap(replay, live, store, incarnation, result, progress)
            finally:
                # A copy of the store is no use after a failure either: a rerun starts afresh.
                await source.stop()
                await store.drop(live)
    finally:
        await source.stop()
        await store.engine.dispose()
        await live.dispose()
    result.seconds = time.monotonic() - started
    return result


async def _live_positions(live: AsyncEngine, incarnation: BrokerIncarnation) -> dict[tuple[str, int], int]:
    async with live.connect() as conn:
        return await shadow.positions(conn, DEFAULT_CONSUMER, incarnation.current)


async def _unpaused_rounds(
    replay: _Replay,
    live: AsyncEngine,
    incarnation: BrokerIncarnation,
    result: ShadowResult,
    progress: ProgressBar | None,
) -> None:
    """Replay up to the live checkpoints, re-read, again, until the stretch left is short."""
    if progress is not None:
        progress.phase("replay")
    for _ in range(MAX_UNPAUSED_ROUNDS):
        targets = replay.targets(await _live_positions(live, incarnation))
        left = await replay.left(targets)
        if result.rounds and left <= PAUSED_STRETCH_MAX:
            return
        total = result.replay.records + left
        result.rounds += 1

        def report(total: int = total) -> None:
            if progress is not None:
                progress.update(result.replay.records, total)

        report()
        await replay_to(
            replay.source, replay.projector, replay.partitions, targets, replay.batch, result.replay, report
        )


async def _paused_swap(
    replay: _Replay,
    live: AsyncEngine,
    store: Shadow,
    incarnation: BrokerIncarnation,
    result: ShadowResult,
    progress: ProgressBar | None,
) -> None:
    if progress is not None:
        progress.phase("catch-up")
    async with store.swap_connection(live) as conn:
        await shadow.pause_projectors(conn)
        paused = time.monotonic()  # from here the live projectors wait
        targets = replay.targets(await shadow.positions(conn, DEFAULT_CONSUMER, incarnation.current))
        before = result.replay.records
        total = before + await replay.left(targets)

        def report() -> None:
            if progress is not None:
                progress.update(result.replay.records, total)

        await replay_to(
            replay.source, replay.projector, replay.partitions, targets, replay.batch, result.replay, report
        )
        result.paused_records = result.replay.records - before
        if progress is not None:
            progress.phase("swap")
        await shadow.check_same_history(conn, store.ref)
        await shadow.lock_tables(conn, result.chosen.tables)
        result.swapped = await shadow.swap(conn, result.chosen.tables, store.ref)
    result.paused_s = time.monotonic() - paused
    if progress is not None:
        progress.phase("done")


# ---------------------------------------------------------------------------------------------------
# The commands


def run_list(settings: Settings) -> int:
    for projection in projections_for(settings):
        try:
            tables = ", ".join(shadow.describe(t) for t in shadow.declared_tables(projection))
        except shadow.NotRebuildable as exc:
            tables = f"不可重建 cannot be rebuilt: {exc}"
        print(f"{projection.name:<14} {tables}")
    print(f"{shadow.ALL:<14} every projection above that can be rebuilt, swapped together")
    return 0


def run_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """`liandong projections rebuild NAME [--batch N] [--progress-interval S]` (options in
    services/cli.py). The exit code: 0 swapped, 1 failed (the live tables unchanged), 2 refused
    before starting."""
    batch = DEFAULT_BATCH if args.batch is None else args.batch
    if batch < 1:
        print("配置错误 configuration error: --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        chosen = shadow.choose(projections_for(settings), args.name)
    except shadow.UnknownProjection as exc:
        names = ", ".join([*exc.known, shadow.ALL])
        print(f"未知投影 unknown projection: {exc.name!r}. 可选 choose one of: {names}", file=sys.stderr)
        return 2
    except shadow.NotRebuildable as exc:
        print(f"不可重建 cannot be rebuilt safely: {exc}", file=sys.stderr)
        return 2
    tables = ", ".join(t.name for t in chosen.tables)
    # Its per-connection INFO lines would break the progress bar; warnings still show.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    print(
        f"rebuilding {args.name} ({tables}) in shadow tables of {settings.redacted_database_url()}",
        file=sys.stderr,
    )
    progress = ProgressBar(sys.stderr, f"重建 rebuild {args.name}", args.progress_interval)
    try:
        result = asyncio.run(rebuild_projection(settings, args.name, batch=batch, progress=progress))
    except SettingsError as exc:
        print(f"\n配置错误 configuration error: {exc}", file=sys.stderr)
        return 2
    except shadow.ArchiveIncomplete as exc:
        print(f"\n重建已取消 rebuild refused: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # reported with its traceback; the live tables are as they were
        log.critical("rebuild of %s failed, the live tables are unchanged: %r", args.name, exc, exc_info=exc)
        return 1
    finally:
        progress.close()
    _summary(result)
    return 0


def _summary(result: ShadowResult) -> None:
    r = result.replay
    dead = ", ".join(f"{k} {v}" for k, v in sorted(r.dead_lettered.items())) or "none"
    print(
        f"重建完成 rebuilt {', '.join(result.chosen.names)}: {r.records:,} records replayed "
        f"({r.applied:,} events) in {result.seconds:.1f} s, {result.rounds} round(s); live projectors "
        f"paused {result.paused_s:.2f} s (catch-up of {result.paused_records:,} records, and the swap); "
        f"undecodable: {dead}"
    )
    for s in result.swapped:
        print(f"  {s.table}: {s.written:,} written, {s.deleted:,} deleted, the rest unchanged")

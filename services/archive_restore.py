"""`liandong archive restore`: a backup file into an empty broker and an empty database (docs/backup.md).

1. Refuse unless the database (migrated first) and every topic of the broker are empty.
2. Read the whole file once and check everything before anything is written: the file's own checks
   (services/archive_io.py), then the master key against the file's fingerprint, and every record
   turned back into the event it was: its personal data decrypted under the restored party keys,
   its data converted by the catalog's schema and Avro-encoded by the codec. Each topic must have
   the partition the record names.
3. Holding the rebuilding marker (`services/rebuilding.py`, so every process reports not ready):
   a. one transaction: the archive rows as they are, the head, party keys, parties, API keys and
      the master key's fingerprint. The archive is the record, so it is restored, not recomputed:
      recomputing would encrypt every person under new keys and nonces, and order the chain by this
      replay's batches, so no hash would match (docs/audit.md);
   b. every record republished, in seq order, to its topic and partition, with its original key
      (the subject) and event id;
   c. every projection but the archive rebuilt from those topics by the hub's projector, as
      `liandong rebuild` does, with checkpoints under the worker's name: a worker started afterwards
      carries on from there, and its archive stage sees no event twice.
4. `audit verify` of the restored chain, against the file's head.

A shredded party stays erased: its key is restored shredded, its fields go to the topics as null
(or an empty string where the schema requires text), and its `parties` row keeps no ciphertext.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.incarnation import MARKER_TOPIC, BrokerIncarnation
from connectors.kafka.topics import ensure_topics
from events.catalog import PII_ATTRIBUTE, Catalog, UnknownEventType
from events.envelope import Envelope
from events.jsonavro import DataError, from_json, parse_rfc3339
from events.mechanisms import Mechanisms
from events.serde import EncodedRecord, EventCodec
from projections import archive as chain
from projections import pii
from projections.archive_store import CHAIN, ArchiveProjection, verify
from projections.bulk import merge
from projections.db import make_engine, upsert
from projections.hub import hub_projections
from projections.migrate import INSTANCE_KEY, upgrade
from projections.runtime import Projector
from projections.schema import archive, archive_head, hub_meta, metadata
from services.archive_io import TABLES, ArchiveFileError, ArchiveReader, Header, TableRow
from services.directory_sync import COMPACTED
from services.rebuild import (
    DEFAULT_BATCH,
    DEFAULT_CONSUMER,
    LoggedDeadLetters,
    RebuildResult,
    Targets,
    assign,
    catalog_topics,
    open_source,
    replay_to,
)
from services.rebuilding import KEY_PREFIX, mark_rebuilding
from services.registry import make_registry
from services.settings import Settings
from services.timesource import time_source
from services.worker.closed_loop import ClosedLoop

log = logging.getLogger(__name__)

MARKER = "archive-restore"
PUBLISH_CHUNK = 2_000
# hub_meta rows a fresh, migrated store may hold: its identity, a token secret the API generated.
_FRESH_META = frozenset({INSTANCE_KEY, "token_secret"})
_UNWRAPPED = 4_096  # data keys kept unwrapped at once: records of one party tend to be near each other


class RestoreRefused(RuntimeError):
    """Nothing was written: the target is not empty, or something the restore needs is missing."""


class RestoreFailed(RuntimeError):
    """Something failed after the first write: the target holds part of the restore."""


@dataclass(slots=True)
class RestoreResult:
    counts: Mapping[str, int] = field(default_factory=dict)
    head_seq: int = 0
    head_hash: str = chain.GENESIS
    published: dict[str, int] = field(default_factory=dict)  # topic -> records
    replay: RebuildResult = field(default_factory=RebuildResult)
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> seconds


# --- records back into events ----------------------------------------------------------------------


class RecordError(ValueError):
    pass


class EventRebuilder:
    """Turns an archived record back into the Kafka record it was: topic, partition, encoded event."""

    def __init__(self, codec: EventCodec, master: pii.MasterKey | None) -> None:
        self._codec = codec
        self._catalog: Catalog = codec.catalog
        self._master = master
        self._wrapped: dict[str, bytes | None] = {}
        self._ciphers: OrderedDict[str, AESGCM] = OrderedDict()
        # type -> {field: (personal-data kind, nullable)}
        self._pii: dict[str, dict[str, tuple[str, bool]]] = {}

    def add_key(self, row: TableRow) -> None:
        self._wrapped[str(row.values["key_id"])] = row.values["wrapped_key"]

    def check_keys(self) -> None:
        """Every live data key must unwrap under the master key, before any is needed."""
        live = [(k, w) for k, w in self._wrapped.items() if w is not None]
        if live and self._master is None:
            raise RestoreRefused(
                f"the file holds {len(live):,} live party key(s) but no master key: set LIANDONG_MASTER_KEY "
                "to the key the exporting hub used"
            )
        for key_id, wrapped in live:
            assert self._master is not None
            try:
                self._master.unwrap(key_id, wrapped)
            except pii.MasterKeyMismatch:
                raise RestoreRefused(f"party key {key_id} does not unwrap under the master key") from None

    def encoded(self, row: chain.ArchivedRow) -> tuple[str, int, EncodedRecord]:
        try:
            return self._encoded(row)
        except RecordError as exc:
            raise RecordError(f"record seq {row.seq} (event {row.event_id}): {exc}") from None

    def _encoded(self, row: chain.ArchivedRow) -> tuple[str, int, EncodedRecord]:
        doc = json.loads(row.record)  # the chain check parsed it already
        for name in ("type", "source", "subject", "specversion", "topic"):
            if not isinstance(doc.get(name), str):
                raise RecordError(f"{name} must be text")
        partition, data = doc.get("partition"), doc.get("data")
        if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
            raise RecordError("partition must be an integer, 0 or more")
        if not isinstance(data, dict):
            raise RecordError("data must be an object")
        try:
            kind = self._catalog.get(doc["type"])
        except UnknownEventType:
            raise RecordError(f"unknown event type {doc['type']}") from None
        occurred = parse_rfc3339(doc["time"]) if isinstance(doc.get("time"), str) else None
        if occurred is None:
            raise RecordError("time must be an RFC 3339 time with offset")
        for name, (pii_kind, nullable) in self._fields(kind.type, kind.latest).items():
            value = data.get(name)
            if isinstance(value, dict):
                plaintext = self._open(value, pii_kind)
                data[name] = plaintext if plaintext is not None else (None if nullable else "")
        try:
            values = from_json(kind.latest, data, "data")
        except DataError as exc:
            raise RecordError(f"does not fit the schema of {kind.type}: {exc}") from None
        event = Envelope(row.event_id, kind.type, doc["source"], doc["subject"], occurred, values)
        try:
            encoded = self._codec.encode(event)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise RecordError(f"cannot be Avro-encoded: {exc!r}"[:300]) from None
        return doc["topic"], partition, encoded

    def _fields(self, event_type: str, schema: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
        found = self._pii.get(event_type)
        if found is None:
            found = {
                f["name"]: (f[PII_ATTRIBUTE], isinstance(f["type"], list) and "null" in f["type"])
                for f in schema.get("fields", ())
                if PII_ATTRIBUTE in f
            }
            self._pii[event_type] = found
        return found

    def _open(self, sealed: Mapping[str, Any], kind: str) -> str | None:
        """The plaintext of a sealed field; None when its key was shredded (the person is erased)."""
        key_id, token = sealed.get("key"), sealed.get("enc")
        if not isinstance(key_id, str) or not isinstance(token, str) or set(sealed) != {"enc", "key"}:
            raise RecordError("a sealed personal-data field must be {enc, key}")
        if key_id not in self._wrapped:
            raise RecordError(f"names data key {key_id}, which the file does not carry")
        wrapped = self._wrapped[key_id]
        if wrapped is None:
            return None
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            assert self._master is not None  # check_keys refused a file with live keys and no master
            cipher = AESGCM(self._master.unwrap(key_id, wrapped))
            self._ciphers[key_id] = cipher
            if len(self._ciphers) > _UNWRAPPED:
                self._ciphers.popitem(last=False)
        else:
            self._ciphers.move_to_end(key_id)
        try:
            return pii.decrypt(cipher, key_id, kind, token)
        except (pii.UndecryptableField, ValueError) as exc:
            raise RecordError(str(exc)) from None


# --- the target must be empty ---------------------------------------------------------------------


async def store_contents(engine: AsyncEngine) -> list[str]:
    """What a migrated store holds beyond a fresh one: each table with rows, each unexpected meta key."""
    found: list[str] = []
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table is hub_meta:
                continue
            if await conn.scalar(select(1).select_from(table).limit(1)) is not None:
                found.append(f"table {table.name}")
        keys = (await conn.execute(select(hub_meta.c.key))).scalars()
        found += [f"hub_meta {k}" for k in keys if k not in _FRESH_META and not k.startswith(KEY_PREFIX)]
    return found


async def broker_contents(bootstrap: str) -> list[str]:
    """Each partition of the broker that holds records (beyond the broker's incarnation marker)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="liandong-restore")
    await consumer.start()
    try:
        topics = sorted(t for t in await consumer.topics() if not t.startswith("__") and t != MARKER_TOPIC)
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            return []
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return [f"{tp.topic}[{tp.partition}]" for tp in tps if ends[tp] > starts[tp]]
    finally:
        await consumer.stop()


# --- the passes over the file ---------------------------------------------------------------------


def _entries(path: Path, expect_head: str | None) -> Iterator[Any]:
    with path.open("rb") as raw:
        yield from ArchiveReader(raw, expect_head)


def master_key_for(header: Header, configured: bytes | None) -> pii.MasterKey | None:
    """The key the file's party keys are wrapped under: LIANDONG_MASTER_KEY, else the one the file
    carries; it must match the file's fingerprint."""
    secret = configured if configured is not None else header.master_key
    if secret is None:
        return None
    key = pii.MasterKey(secret)
    if header.master_key_check is not None and not hmac.compare_digest(key.check, header.master_key_check):
        where = "LIANDONG_MASTER_KEY" if configured is not None else "the file's master key"
        raise RestoreRefused(f"{where} is not the key the file's party keys are wrapped under")
    if configured is not None and header.master_key is not None and header.master_key != configured:
        raise RestoreRefused("the file carries another master key than LIANDONG_MASTER_KEY")
    return key


@dataclass(slots=True)
class Scan:
    header: Header
    counts: Mapping[str, int]
    partitions: dict[str, int]  # topic -> the highest partition a record names, plus one
    rebuilder: EventRebuilder


def scan(path: Path, codec: EventCodec, configured: bytes | None, expect_head: str | None) -> Scan:
    """Pass 1: check the whole file, and that every record turns back into an event. Writes nothing."""
    reader_header: Header | None = None
    rebuilder: EventRebuilder | None = None
    partitions: dict[str, int] = {}
    counts: Mapping[str, int] = {}
    for entry in _entries(path, expect_head):
        if isinstance(entry, Header):
            reader_header = entry
            rebuilder = EventRebuilder(codec, master_key_for(entry, configured))
        elif isinstance(entry, TableRow):
            if entry.section == "party_key":
                assert rebuilder is not None
                rebuilder.add_key(entry)
        elif isinstance(entry, chain.ArchivedRow):
            assert rebuilder is not None
            if entry.seq == 1:
                rebuilder.check_keys()
            topic, partition, _ = rebuilder.encoded(entry)
            partitions[topic] = max(partitions.get(topic, 0), partition + 1)
        else:
            counts = entry.counts
    assert reader_header is not None  # the reader ends with a header, or raises
    assert rebuilder is not None
    rebuilder.check_keys()
    return Scan(reader_header, counts, partitions, rebuilder)


async def write_store(engine: AsyncEngine, path: Path, header: Header, keep_master_key: bool) -> None:
    """Pass 2: the archive's tables as the file holds them, in one transaction."""
    pending: dict[str, list[dict[str, Any]]] = {}
    async with engine.begin() as conn:

        async def flush(section: str) -> None:
            rows = pending.pop(section, [])
            if rows:
                table = archive if section == "record" else TABLES[section]
                await merge(conn, table, rows, _plain)

        for entry in _entries(path, header.head_hash):
            if isinstance(entry, TableRow):
                pending.setdefault(entry.section, []).append(dict(entry.values))
                if len(pending[entry.section]) >= PUBLISH_CHUNK:
                    await flush(entry.section)
            elif isinstance(entry, chain.ArchivedRow):
                for section in [s for s in pending if s != "record"]:
                    await flush(section)
                pending.setdefault("record", []).append(
                    {
                        "seq": entry.seq,
                        "event_id": entry.event_id,
                        "subject": entry.subject,
                        "record": entry.record,
                        "prev_hash": entry.prev_hash,
                        "hash": entry.hash,
                    }
                )
                if len(pending["record"]) >= PUBLISH_CHUNK:
                    await flush("record")
        for section in list(pending):
            await flush(section)
        now = datetime.now(UTC)
        await conn.execute(
            archive_head.insert().values(
                chain=CHAIN,
                seq=header.head_seq,
                hash=header.head_hash,
                updated_at=header.head_updated_at or now,
            )
        )
        meta = {pii.MASTER_CHECK_META: header.master_key_check}
        if keep_master_key and header.master_key is not None:
            meta[pii.MASTER_KEY_META] = base64.b64encode(header.master_key).decode("ascii")
        for key, value in meta.items():
            if value is not None:
                await conn.execute(
                    upsert(conn, hub_meta).values(key=key, value=value).on_conflict_do_nothing()
                )


def _plain(stmt: Any) -> Any:
    # A plain INSERT: the store is empty, so any conflict is a broken file or a concurrent writer.
    return stmt


async def republish(
    bootstrap: str, path: Path, header: Header, rebuilder: EventRebuilder
) -> dict[TopicPartition, int]:
    """Pass 3: every record to its topic and partition, in seq order; the end offset of each partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="liandong-restore",
        acks="all",
        enable_idempotence=False,  # Tansu has none; event ids make a retried duplicate harmless
        linger_ms=5,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    ends: dict[TopicPartition, int] = {}
    try:
        sent: list[Any] = []

        async def acknowledged() -> None:
            for meta in await asyncio.gather(*sent):
                tp = TopicPartition(meta.topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
            sent.clear()

        for entry in _entries(path, header.head_hash):
            if isinstance(entry, chain.ArchivedRow):
                topic, partition, record = rebuilder.encoded(entry)
                sent.append(
                    await producer.send(
                        topic, value=record.value, key=record.key, headers=record.headers, partition=partition
                    )
                )
                if len(sent) >= PUBLISH_CHUNK:
                    await acknowledged()
        await acknowledged()
    finally:
        await producer.stop()
    return ends


async def prepare_topics(
    bootstrap: str, settings: Settings, catalog: Catalog, needed: Mapping[str, int]
) -> None:
    """Create the hub's topics as the worker does; each must have every partition a record names."""
    topics = set(catalog_topics(catalog)) | set(needed)
    await ensure_topics(
        bootstrap,
        dict.fromkeys(sorted(topics), settings.topic_partitions),
        settings.topic_replication,
        COMPACTED,
    )
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="liandong-restore")
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata
        for topic, wanted in sorted(needed.items()):
            have = len(consumer.partitions_for_topic(topic) or ())
            if have < wanted:
                raise RestoreRefused(
                    f"topic {topic} has {have} partition(s), the file's records name partition {wanted - 1}: "
                    f"set LIANDONG_TOPIC_PARTITIONS to at least {wanted} (on an empty broker)"
                )
    finally:
        await consumer.stop()


async def rebuild_projections(
    settings: Settings, engine: AsyncEngine, codec: EventCodec, ends: Mapping[TopicPartition, int]
) -> RebuildResult:
    """Every projection but the archive (restored as it was), from the republished topics, up to `ends`."""
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    incarnation = BrokerIncarnation(bootstrap)
    await incarnation.refresh()
    loop = ClosedLoop.load(settings)
    projections = [
        p
        for p in hub_projections(
            Mechanisms.load(), loop.rules, loop.calendar, loop.settings, time_source(settings.time_source)
        )
        if not isinstance(p, ArchiveProjection)
    ]
    # No gate: each of these events was admitted once, by the directory of its day; today's directory
    # (a unit retired since, say) must not refuse history.
    projector = Projector(engine, DEFAULT_CONSUMER, codec, projections, LoggedDeadLetters(), incarnation)
    source = open_source(bootstrap)
    await source.start()
    try:
        partitions = await assign(
            source, engine, DEFAULT_CONSUMER, incarnation.current, catalog_topics(codec.catalog)
        )
        result = RebuildResult()
        await replay_to(source, projector, partitions, Targets(ends), DEFAULT_BATCH, result)
        return result
    finally:
        await source.stop()


async def restore(
    settings: Settings,
    path: Path,
    *,
    expect_head: str | None = None,
    report: Callable[[str], None] = lambda _: None,
) -> RestoreResult:
    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        raise RestoreRefused("LIANDONG_KAFKA_BOOTSTRAP is required: the restore republishes to the broker")
    clock = asyncio.get_running_loop().time
    result = RestoreResult()
    engine = make_engine(settings.database_url)
    try:
        await upgrade(engine)
        in_store = await store_contents(engine)
        if in_store:
            raise RestoreRefused(f"the database is not empty: {', '.join(in_store[:8])}")
        in_broker = await broker_contents(bootstrap)
        if in_broker:
            raise RestoreRefused(f"the broker is not empty: records in {', '.join(in_broker[:8])}")
        codec = EventCodec(Catalog.load(), make_registry(settings))
        await codec.prepare()
        started = clock()
        checked = scan(path, codec, settings.master_key, expect_head)
        result.counts, result.head_seq, result.head_hash = (
            checked.counts,
            checked.header.head_seq,
            checked.header.head_hash,
        )
        result.seconds["check"] = clock() - started
        report(f"checked: {checked.counts['record']:,} records, head {checked.header.head_hash}")
        await prepare_topics(bootstrap, settings, codec.catalog, checked.partitions)
        try:
            await _write_and_rebuild(settings, engine, codec, path, checked, result, report)
        except RestoreRefused:
            raise
        except Exception as exc:
            raise RestoreFailed(
                f"{exc!r}: the broker and the database hold part of the restore; empty both and run it "
                "again (docs/backup.md)"
            ) from exc
        verdict = await verify(engine, expect_head=checked.header.head_hash)
        if verdict.broken is not None:
            raise RestoreFailed(f"the restored chain does not verify: {verdict.broken.describe()}")
        return result
    finally:
        await engine.dispose()


async def _write_and_rebuild(
    settings: Settings,
    engine: AsyncEngine,
    codec: EventCodec,
    path: Path,
    checked: Scan,
    result: RestoreResult,
    report: Callable[[str], None],
) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    clock = asyncio.get_running_loop().time
    async with mark_rebuilding(engine, MARKER):
        started = clock()
        try:
            await write_store(engine, path, checked.header, keep_master_key=settings.master_key is None)
        except IntegrityError as exc:
            # One transaction, rolled back: an event id twice in a file whose chain holds (forged, or
            # not ours), or a writer that came in meanwhile.
            raise RestoreRefused(f"the database refused the file's rows: {exc.orig!r}"[:500]) from exc
        result.seconds["store"] = clock() - started
        report("archive, head, party keys, parties and API keys written")
        started = clock()
        ends = await republish(bootstrap, path, checked.header, checked.rebuilder)
        result.seconds["publish"] = clock() - started
        for tp, end in ends.items():
            result.published[tp.topic] = result.published.get(tp.topic, 0) + end
        report(f"republished {sum(result.published.values()):,} records")
        started = clock()
        result.replay = await rebuild_projections(settings, engine, codec, ends)
        result.seconds["projections"] = clock() - started


__all__ = [
    "ArchiveFileError",
    "RecordError",
    "RestoreFailed",
    "RestoreRefused",
    "RestoreResult",
    "restore",
    "scan",
]

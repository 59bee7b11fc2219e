"""The archive projection: every event once, appended to the hash chain, parties' data encrypted.

It runs last in the batch (`projections/hub.py`), so the head row, which serialises every writer
of the chain, is held only for its own few statements:

1. lock the head row (created on first use: seq 0, 64 zeros);
2. if the batch names parties: read the master key, the parties' live keys (creating missing ones);
3. encrypt each personal-data field, build each record and its hash, in memory;
4. one bulk insert of the records, one upsert of the parties, one update of the head.

It is the record, not a projection of it: `liandong projections rebuild` never rewrites it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.catalog import Catalog, UnknownEventType
from projections import archive as chain
from projections import party_store, pii
from projections.bulk import merge
from projections.db import upsert
from projections.runtime import Positioned
from projections.schema import archive, archive_head

CHAIN = 1
NOT_REBUILDABLE = (
    "the archive is the hash-chained record of what the hub received, not a projection of it: "
    "rebuilding would rewrite the chain (and bring back shredded parties)"
)


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str


class ArchiveProjection:
    name = "archive"
    tables = ("archive", "archive_head", "party_keys", "parties")
    rebuildable = False
    why_not_rebuildable = NOT_REBUILDABLE

    def __init__(
        self,
        catalog: Catalog | None = None,
        master_key: bytes | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._catalog = catalog if catalog is not None else Catalog.load()
        self._configured = master_key
        self._now = now or (lambda: datetime.now(UTC))
        self._groups: dict[str, tuple[pii.PartyFields, ...]] = {}
        self._master: pii.MasterKey | None = None
        # The head this projection last wrote; current once its batch committed (the worker's metric).
        self.written: Head | None = None

    def handles(self, event_type: str) -> bool:
        return True

    def _party_fields(self, event_type: str) -> tuple[pii.PartyFields, ...]:
        groups = self._groups.get(event_type)
        if groups is None:
            try:
                groups = pii.party_fields(self._catalog.get(event_type).pii_fields)
            except UnknownEventType:
                groups = ()
            self._groups[event_type] = groups
        return groups

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        head = await lock_head(conn)
        # UTC throughout: SQLite keeps times as text without their zone, compared as text.
        now = self._now().astimezone(UTC)
        named = [(p, parties) for p in events if (parties := self._parties(p))]
        keys: dict[str, party_store.LiveKey] = {}
        refs: dict[tuple[str, str], str] = {}  # (event id, role) -> party ref
        if named:
            master = await self._master_key(conn)
            seen: dict[str, datetime] = {}
            for p, parties in named:
                # The retention clock runs from the latest fact naming the party, never from the future.
                when = min(p.event.time.astimezone(UTC), now)
                for party in parties:
                    ref = master.party_ref(pii.reference_basis(p.event.area, p.event.subject, party))
                    refs[(p.event.id, party.role)] = ref
                    seen[ref] = max(seen.get(ref, when), when)
            keys = await party_store.keys_for(conn, master, seen, now)
        by_event = {p.event.id: parties for p, parties in named}
        rows: list[dict[str, Any]] = []
        party_rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        seq, prev = head.seq, head.hash
        for p in events:
            e = p.event
            data = chain.json_safe(e.data)
            for party in by_event.get(e.id, ()):
                ref = refs[(e.id, party.role)]
                key = keys[ref]
                row = party_rows.setdefault(
                    (e.subject, e.area, ref),
                    {"subject": e.subject, "area": e.area, "party_ref": ref, "key_id": key.key_id}
                    | dict.fromkeys(party_store.CT_COLUMNS.values())
                    | {"updated_at": now},
                )
                for kind, plaintext in party.values.items():
                    sealed = pii.encrypt(key.cipher, key.key_id, kind, plaintext)
                    data[party.fields[kind]] = {"enc": sealed, "key": key.key_id}
                    row[party_store.CT_COLUMNS[kind]] = sealed
                row["kind"] = party.role
            record = chain.record_text(
                event_id=e.id,
                event_type=e.type,
                source=e.source,
                subject=e.subject,
                time_=e.time,
                specversion=e.specversion,
                topic=p.record.topic,
                partition=p.record.partition,
                offset=p.record.offset,
                data=data,
            )
            seq += 1
            digest = chain.link_hash(prev, record)
            rows.append(
                {
                    "seq": seq,
                    "event_id": e.id,
                    "subject": e.subject,
                    "record": record,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            prev = digest
        await merge(conn, archive, rows, _append)
        if party_rows:
            await party_store.upsert_parties(conn, list(party_rows.values()))
        await conn.execute(
            update(archive_head)
            .where(archive_head.c.chain == CHAIN)
            .values(seq=seq, hash=prev, updated_at=now)
        )
        self.written = Head(seq, prev)

    def _parties(self, p: Positioned) -> list[pii.Party]:
        groups = self._party_fields(p.event.type)
        return pii.parties_in(p.event.data, groups) if groups else []

    async def _master_key(self, conn: AsyncConnection) -> pii.MasterKey:
        # Read in every batch that needs it: a key generated by a batch that then rolled back must
        # not outlive it here. Only the derived object is reused.
        key = await pii.master_key(conn, self._configured)
        if self._master is None or self._master.secret != key.secret:
            self._master = key
        return self._master


def _append(stmt: Any) -> Any:
    # A plain INSERT: a seq or event id already archived is a broken invariant, and must fail the batch.
    return stmt


async def lock_head(conn: AsyncConnection) -> Head:
    """Lock the chain's head row until the transaction ends (creating it on first use)."""
    h = archive_head.c
    query = select(h.seq, h.hash).where(h.chain == CHAIN).with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        genesis = {"chain": CHAIN, "seq": 0, "hash": chain.GENESIS, "updated_at": datetime.now(UTC)}
        await conn.execute(upsert(conn, archive_head).values(genesis).on_conflict_do_nothing())
        row = (await conn.execute(query)).one()
    return Head(int(row.seq), str(row.hash))


async def read_head(conn: AsyncConnection) -> Head | None:
    h = archive_head.c
    row = (await conn.execute(select(h.seq, h.hash).where(h.chain == CHAIN))).first()
    return None if row is None else Head(int(row.seq), str(row.hash))


# --- verification --------------------------------------------------------------------------------

PAGE = 2_000


@dataclass(frozen=True, slots=True)
class Verdict:
    records: int
    head: Head | None
    broken: chain.Break | None
    anchored_at: int | None  # the seq whose hash is the expected head, if one was given


async def rows_after(engine: AsyncEngine, after: int, page: int = PAGE) -> AsyncIterator[chain.ArchivedRow]:
    """Archived rows with seq > `after`, in seq order, one page per query (keyset paging)."""
    a = archive.c
    while True:
        async with engine.connect() as conn:
            result = await conn.execute(
                select(a.seq, a.event_id, a.subject, a.record, a.prev_hash, a.hash)
                .where(a.seq > after)
                .order_by(a.seq)
                .limit(page)
            )
            rows = [chain.ArchivedRow(*r) for r in result]
        for row in rows:
            yield row
        if len(rows) < page:
            return
        after = rows[-1].seq


async def verify(engine: AsyncEngine, expect_head: str | None = None, page: int = PAGE) -> Verdict:
    """Recompute the chain, page by page; compare the head row (and `expect_head`) with its end.

    Rows appended while it runs are checked too: the head is read after the rows, and while it
    names a seq beyond the last row read, reading goes on. Rows and head move in one transaction,
    so a head behind the last row read, or a row missing below the head, is tampering.
    """
    checker = chain.ChainChecker(expect_head)
    head: Head | None = None
    while True:  # each round reads at least one new row, or ends
        async for row in rows_after(engine, checker.last_seq, page):
            if checker.feed(row) is not None:
                return Verdict(checker.count, head, checker.broken, checker.anchored_at)
        async with engine.connect() as conn:
            head = await read_head(conn)
        if head is None or head.seq <= checker.last_seq:
            break
        async with engine.connect() as conn:
            more = await conn.scalar(select(archive.c.seq).where(archive.c.seq > checker.last_seq).limit(1))
        if more is None:
            break  # the head names rows that are gone
    broken = checker.finish(head.seq if head else None, head.hash if head else None)
    if broken is not None and broken.event_id is None:
        async with engine.connect() as conn:
            found = await conn.scalar(select(archive.c.event_id).where(archive.c.seq == broken.seq))
        if found is not None:
            broken = chain.Break(broken.seq, str(found), broken.kind, broken.detail)
    return Verdict(checker.count, head, broken, checker.anchored_at)

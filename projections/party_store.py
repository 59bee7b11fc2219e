"""SQL side of parties' keys and personal data: live keys by party, the latest ciphertexts per party
of a subject, and crypto-shredding. A fixed number of statements per batch.

Writers of `party_keys` and `parties` hold the archive's head row (`archive_store.lock_head`): the
projector does for its whole batch, `liandong parties shred|erase` before they change anything. So a
key is never shredded while a batch encrypts under it, and two workers never both create a key for
the same new party.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import bindparam, case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.bulk import any_of, merge
from projections.pii import ERASED_PREFIX, MasterKey, new_data_key
from projections.schema import parties, party_keys

CT_COLUMNS = {"name": "name_ct", "id_number": "id_number_ct", "phone": "phone_ct", "address": "address_ct"}


@dataclass(frozen=True, slots=True)
class LiveKey:
    key_id: str
    cipher: AESGCM


async def keys_for(
    conn: AsyncConnection, master: MasterKey, seen: Mapping[str, datetime], now: datetime
) -> dict[str, LiveKey]:
    """The live data key of every party reference in `seen` (ref -> when the batch saw it), created
    where the party has none or only shredded ones; `last_seen_at` moves forward."""
    k = party_keys.c
    rows = await conn.execute(
        select(k.key_id, k.party_ref, k.wrapped_key, k.created_at)
        .where(any_of(conn, k.party_ref, list(seen)), k.wrapped_key.is_not(None))
        .order_by(k.created_at, k.key_id)
    )
    newest: dict[str, tuple[str, bytes]] = {}
    for row in rows:  # ordered: the newest live key of a party wins
        newest[row.party_ref] = (row.key_id, row.wrapped_key)
    keys = {
        ref: LiveKey(key_id, AESGCM(master.unwrap(key_id, wrapped)))
        for ref, (key_id, wrapped) in newest.items()
    }
    created = []
    for ref in seen.keys() - keys.keys():
        key_id, data_key = new_data_key()
        keys[ref] = LiveKey(key_id, AESGCM(data_key))
        created.append(
            {
                "key_id": key_id,
                "party_ref": ref,
                "wrapped_key": master.wrap(key_id, data_key),
                "created_at": now,
                "last_seen_at": seen[ref],
                "shredded_at": None,
            }
        )
    if created:
        await conn.execute(party_keys.insert(), created)
    if newest:
        await conn.execute(
            _SEEN,
            [{"k": key_id, "t": seen[ref]} for ref, (key_id, _) in newest.items()],
        )
    return keys


_SEEN = (
    update(party_keys)
    .where(party_keys.c.key_id == bindparam("k"), party_keys.c.last_seen_at < bindparam("t"))
    .values(last_seen_at=bindparam("t"))
)


async def upsert_parties(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows unique by (subject, area, party_ref); a non-null field wins over the stored one, unless the
    stored row is under another (shredded) key: then the row is replaced."""
    await merge(conn, parties, rows, _latest)


def _latest(stmt: Any) -> Any:
    new, old = stmt.excluded, parties.c
    same_key = old.key_id == new.key_id
    set_: dict[str, Any] = {
        name: case((same_key, func.coalesce(new[name], old[name])), else_=new[name])
        for name in (*CT_COLUMNS.values(), "kind")
    }
    set_.update(key_id=new.key_id, updated_at=new.updated_at)
    return stmt.on_conflict_do_update(index_elements=["subject", "area", "party_ref"], set_=set_)


# --- crypto-shredding ----------------------------------------------------------------------------


async def unseen_keys(conn: AsyncConnection, before: datetime) -> list[str]:
    """Live keys of parties no event has named since `before`."""
    k = party_keys.c
    rows = await conn.execute(
        select(k.key_id).where(k.wrapped_key.is_not(None), k.last_seen_at < before).order_by(k.key_id)
    )
    return [r.key_id for r in rows]


async def keys_of(conn: AsyncConnection, party_ref: str) -> list[str]:
    """Live keys of one party."""
    k = party_keys.c
    rows = await conn.execute(
        select(k.key_id).where(k.party_ref == party_ref, k.wrapped_key.is_not(None)).order_by(k.key_id)
    )
    return [r.key_id for r in rows]


async def shred(conn: AsyncConnection, key_ids: Collection[str], now: datetime) -> int:
    """Delete the wrapped keys: what they encrypted can no longer be read, anywhere. The party's
    reference (a keyed hash of its ID number) goes too, replaced by the key id, so that the rows left
    no longer link to the person; the `parties` ciphertexts are dropped (the archive keeps its own)."""
    if not key_ids:
        return 0
    ids = list(key_ids)
    erased_ref = literal(ERASED_PREFIX) + party_keys.c.key_id
    done = await conn.execute(
        update(party_keys)
        .where(any_of(conn, party_keys.c.key_id, ids), party_keys.c.wrapped_key.is_not(None))
        .values(wrapped_key=None, shredded_at=now, party_ref=erased_ref)
    )
    await conn.execute(
        update(parties)
        .where(any_of(conn, parties.c.key_id, ids))
        .values(
            party_ref=literal(ERASED_PREFIX) + parties.c.key_id,
            updated_at=now,
            **dict.fromkeys(CT_COLUMNS.values()),
        )
    )
    return max(done.rowcount, 0)

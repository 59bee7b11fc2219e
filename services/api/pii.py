"""Parties' personal data for readers: who is entitled to it in clear, and masking for everyone else.

Entitlement (docs/audit.md): the district supervision section always; a township office for a case
of its township; an agency for a case it handles; an auditor and the public never. Those not
entitled see masked values (张*, 440113********123X, 138****5678, 广州市番禺区***). A party whose
key was shredded shows null fields and `"erased": true` to everyone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from events.masking import mask_address, mask_id_number, mask_name, mask_phone
from projections import pii
from projections.party_store import CT_COLUMNS
from projections.schema import parties, party_keys
from services.api.access import Viewer
from services.api.listing import ProblemError
from services.api.problems import problem

log = logging.getLogger(__name__)

MASKS: dict[str, Callable[[str | None], str | None]] = {
    "name": mask_name,
    "id_number": mask_id_number,
    "phone": mask_phone,
    "address": mask_address,
}


def entitled(viewer: Viewer, township: str | None, handling_unit: str | None) -> bool:
    """May `viewer` read in clear the parties of a case in `township` handled by `handling_unit`?"""
    if viewer.role == "district":
        return True
    if viewer.role == "township":
        return township is not None and township in viewer.townships
    if viewer.role == "unit":
        return handling_unit is not None and viewer.unit == handling_unit
    return False  # the auditor checks the record, not the people in it; the public never


async def subject_parties(
    conn: AsyncConnection, area: str, subject: str, master_key: bytes | None, clear: bool
) -> list[dict[str, Any]]:
    """The parties of one subject, decrypted, then masked unless `clear`."""
    p, k = parties.c, party_keys.c
    rows = (
        await conn.execute(
            select(p.party_ref, p.kind, p.key_id, k.wrapped_key, *(p[c] for c in CT_COLUMNS.values()))
            .outerjoin_from(parties, party_keys, k.key_id == p.key_id)
            .where(p.area == area, p.subject == subject)
            .order_by(p.kind, p.party_ref)
        )
    ).all()
    if not rows:
        return []
    try:
        return _shown(rows, await pii.stored_master_key(conn, master_key), clear)
    except (pii.MasterKeyMismatch, pii.UndecryptableField) as exc:
        # A configuration fault (or damaged ciphertext), not the reader's: say so, never guess.
        log.error("parties of %s %s cannot be decrypted: %s", area, subject, exc)
        raise ProblemError(
            problem(
                503,
                "personal_data_unavailable",
                "Parties' personal data cannot be decrypted: the master key does not match the store",
                "当事人信息无法解密：主密钥与数据库不一致",
            )
        ) from None


def _shown(rows: Sequence[Row[Any]], master: pii.MasterKey | None, clear: bool) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item: dict[str, Any] = {"party_ref": row.party_ref, "kind": row.kind}
        erased = row.wrapped_key is None or master is None
        cipher = None if erased or master is None else AESGCM(master.unwrap(row.key_id, row.wrapped_key))
        for kind, column in CT_COLUMNS.items():
            token = row._mapping[column]
            value = None if cipher is None or token is None else pii.decrypt(cipher, row.key_id, kind, token)
            item[kind] = value if clear else MASKS[kind](value)
        item["masked"] = not clear and not erased
        item["erased"] = erased
        out.append(item)
    return out

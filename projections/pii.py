"""Parties' personal data at rest: who a party is (a keyed reference), one data key per party, and
AES-GCM encryption of each field under it (docs/audit.md).

- The master key (32 bytes: LIANDONG_MASTER_KEY, or generated once into `hub_meta`) wraps every
  data key and derives the pepper of party references. It never leaves the processes' memory.
- A party reference is HMAC-SHA256(pepper, basis)[:32 hex]: the basis is the normalised ID number
  when the event gives one, so one person is one party across cases; otherwise the name (or the
  role) within the subject. Without the pepper the reference says nothing; with it, only a guess
  can be confirmed.
- A field is stored as base64(nonce | AES-GCM ciphertext), its associated data binding it to its key
  id and field kind: a ciphertext moved to another key or field does not decrypt.
- Deleting a party's wrapped key erases the person (crypto-shredding): the ciphertexts may stay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from events.catalog import PII_KINDS
from projections.db import upsert
from projections.schema import hub_meta

MASTER_KEY_META = "pii_master_key"
# A fingerprint of the master key the store's data keys are wrapped under: a process started with
# another key stops at once instead of wrapping new keys under it beside the old ones.
MASTER_CHECK_META = "pii_master_key_check"
ERASED_PREFIX = "erased-"  # a shredded party's reference: its key id, no longer the person's
_NONCE = 12
_REF_LABEL = b"liandong/party-ref/v1"
_CHECK_LABEL = b"liandong/master-key-check/v1"
_WRAP_AD = b"liandong/party-key/v1/"


class MasterKeyMismatch(RuntimeError):
    """The configured master key is not the one this store's data keys are wrapped under."""


class UndecryptableField(ValueError):
    """A ciphertext that does not open under its key: damaged, or moved to another field or key."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    secret: bytes = field(repr=False)
    _pepper: bytes = field(init=False, repr=False)
    _aead: AESGCM = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise ValueError("the master key must be 32 bytes")
        object.__setattr__(self, "_pepper", hmac.new(self.secret, _REF_LABEL, hashlib.sha256).digest())
        object.__setattr__(self, "_aead", AESGCM(self.secret))

    @property
    def check(self) -> str:
        return hmac.new(self.secret, _CHECK_LABEL, hashlib.sha256).hexdigest()[:32]

    def wrap(self, key_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data_key, _WRAP_AD + key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _WRAP_AD + key_id.encode())
        except InvalidTag:
            raise MasterKeyMismatch(f"data key {key_id} does not unwrap under the master key") from None

    def party_ref(self, basis: str) -> str:
        # hmac.digest: the one-shot C path, several times faster than building an HMAC object.
        return hmac.digest(self._pepper, basis.encode(), "sha256").hex()[:32]


def new_data_key() -> tuple[str, bytes]:
    return uuid.uuid4().hex, AESGCM.generate_key(bit_length=256)


def _field_ad(key_id: str, kind: str) -> bytes:
    return f"{key_id}/{kind}".encode()


def encrypt(cipher: AESGCM, key_id: str, kind: str, plaintext: str) -> str:
    nonce = os.urandom(_NONCE)
    sealed = cipher.encrypt(nonce, plaintext.encode(), _field_ad(key_id, kind))
    return base64.b64encode(nonce + sealed).decode("ascii")


def decrypt(cipher: AESGCM, key_id: str, kind: str, token: str) -> str:
    raw = base64.b64decode(token)
    try:
        return cipher.decrypt(raw[:_NONCE], raw[_NONCE:], _field_ad(key_id, kind)).decode()
    except InvalidTag:
        raise UndecryptableField(f"a {kind} of key {key_id} does not decrypt") from None


# --- which fields of an event name which person --------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartyFields:
    """The fields of one person in an event type: `party_name`, `party_phone`… share the role `party`."""

    role: str
    fields: Mapping[str, str]  # kind -> field name


def party_fields(pii_fields: Mapping[str, str]) -> tuple[PartyFields, ...]:
    """Group a type's PII fields (field -> kind) by person: the field name without its kind suffix."""
    roles: dict[str, dict[str, str]] = {}
    for name, kind in pii_fields.items():
        if kind not in PII_KINDS:
            raise ValueError(f"unknown personal-data kind {kind!r} on field {name!r}")
        suffix = "_" + kind
        role = name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else name
        if kind in roles.setdefault(role, {}):
            raise ValueError(f"two {kind} fields for the role {role!r}")
        roles[role][kind] = name
    return tuple(PartyFields(role, fields) for role, fields in sorted(roles.items()))


@dataclass(frozen=True, slots=True)
class Party:
    """One person an event names, with the values it gives (non-empty strings only)."""

    role: str
    values: Mapping[str, str]  # kind -> plaintext
    fields: Mapping[str, str]  # kind -> field name


def parties_in(data: Mapping[str, Any], groups: Sequence[PartyFields]) -> list[Party]:
    out = []
    for group in groups:
        values = {
            kind: value
            for kind, name in group.fields.items()
            if isinstance(value := data.get(name), str) and value.strip()
        }
        if values:
            out.append(Party(group.role, values, group.fields))
    return out


def normalise_id_number(value: str) -> str:
    return "".join(value.split()).upper()


def reference_basis(area: str, subject: str, party: Party) -> str:
    """What identifies the person: the ID number anywhere; else the name, or the role, in the subject."""
    id_number = party.values.get("id_number")
    if id_number:
        return "id:" + normalise_id_number(id_number)
    who = party.values.get("name", "").strip() or "role:" + party.role
    return f"subject:{area}:{subject}:{who}"


# --- the master key in the store -----------------------------------------------------------------


async def master_key(conn: AsyncConnection, configured: bytes | None) -> MasterKey:
    """The store's master key: `configured`, or the one generated once into `hub_meta` (insert if
    absent, then re-read, so that every process agrees). Raises MasterKeyMismatch when `configured`
    is not the key the store's data keys were wrapped under. One read when both are stored."""
    rows = await _meta(conn)
    if configured is not None:
        key = MasterKey(configured)
    else:
        stored = rows.get(MASTER_KEY_META)
        if stored is None:
            stored = await _meta_once(conn, MASTER_KEY_META, base64.b64encode(os.urandom(32)).decode())
        key = MasterKey(base64.b64decode(stored))
    check = rows.get(MASTER_CHECK_META) or await _meta_once(conn, MASTER_CHECK_META, key.check)
    if not hmac.compare_digest(check, key.check):
        raise MasterKeyMismatch(
            "the master key is not the one this store's party keys are wrapped under "
            f"(hub_meta {MASTER_CHECK_META}); set LIANDONG_MASTER_KEY to that key"
        )
    return key


async def stored_master_key(conn: AsyncConnection, configured: bytes | None) -> MasterKey | None:
    """The master key for readers, without creating one: None while no party was ever stored."""
    rows = await _meta(conn)
    check = rows.get(MASTER_CHECK_META)
    if check is None:
        return None
    if configured is not None:
        key = MasterKey(configured)
    elif MASTER_KEY_META in rows:
        key = MasterKey(base64.b64decode(rows[MASTER_KEY_META]))
    else:
        raise MasterKeyMismatch("the store's party keys were wrapped under LIANDONG_MASTER_KEY: set it")
    if not hmac.compare_digest(check, key.check):
        raise MasterKeyMismatch("the master key is not the one this store's party keys are wrapped under")
    return key


_META = (MASTER_KEY_META, MASTER_CHECK_META)


async def _meta(conn: AsyncConnection) -> dict[str, str]:
    query = select(hub_meta.c.key, hub_meta.c.value).where(hub_meta.c.key.in_(_META))
    return {str(k): str(v) for k, v in (await conn.execute(query)).all()}


async def _meta_once(conn: AsyncConnection, key: str, value: str) -> str:
    current = await conn.scalar(select(hub_meta.c.value).where(hub_meta.c.key == key))
    if current is not None:
        return str(current)
    stmt = upsert(conn, hub_meta).values(key=key, value=value)
    await conn.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
    return str(await conn.scalar(select(hub_meta.c.value).where(hub_meta.c.key == key)))

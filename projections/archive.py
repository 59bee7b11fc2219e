"""The hash chain of the archive (全过程记录), as pure functions: records, links and their check.

Every event is archived once, in order, as a canonical JSON record:

    record = JSON of {id, type, source, subject, time, specversion, topic, partition, offset, data}
             keys sorted, separators "," and ":", UTF-8 (no \\u escapes)
    hash   = hex SHA-256 of (prev_hash as 64 ASCII hex digits, "\\n", record as UTF-8)

The first record links to 64 zeros. Anyone holding the rows can recompute the chain with a few
lines of any language (docs/audit.md); anyone who noted a head hash can check that the chain still
leads to it. Parties' personal data is never in a record in clear: each such field is replaced by
{"enc": base64(nonce | AES-GCM ciphertext), "key": key id} before the record is hashed, so deleting
the key erases the person and the chain still verifies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Literal

GENESIS = "0" * 64

BreakKind = Literal["edited", "missing", "inserted", "head_mismatch"]
KIND_LABELS: Mapping[BreakKind, str] = {
    "edited": "edited 被篡改",
    "missing": "missing (deleted) 被删除",
    "inserted": "inserted 被插入",
    "head_mismatch": "head mismatch 链头不符",
}

_PLAIN = frozenset({str, int, bool, type(None)})


def json_safe(value: Any) -> Any:
    """Avro-decoded values as JSON: times as ISO 8601 (UTC), decimals as strings, bytes as base64."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        # The hot path (an event's data): plain values are kept without a call each.
        return {str(k): v if type(v) in _PLAIN else json_safe(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        # NaN and infinities are not JSON: a record with one would never encode.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Enum):
        return json_safe(value.value)
    return str(value)


# One encoder for every record: json.dumps builds a new one per call when given options.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical(document: Mapping[str, Any]) -> str:
    return _ENCODER.encode(document)


def record_text(
    *,
    event_id: str,
    event_type: str,
    source: str,
    subject: str,
    time_: datetime,
    specversion: str,
    topic: str,
    partition: int,
    offset: int,
    data: Mapping[str, Any],
) -> str:
    """The canonical record of one event; `data` already JSON-safe, its personal data encrypted."""
    return canonical(
        {
            "id": event_id,
            "type": event_type,
            "source": source,
            "subject": subject,
            "time": json_safe(time_),
            "specversion": specversion,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "data": data,
        }
    )


def link_hash(prev_hash: str, record: str) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + record.encode("utf-8")).hexdigest()


# --- checking ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchivedRow:
    seq: int
    event_id: str
    subject: str
    record: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link: where, which event (None when the row is gone), what broke."""

    seq: int
    event_id: str | None
    kind: BreakKind
    detail: str

    def describe(self) -> str:
        event = self.event_id or "?"
        return f"seq {self.seq} (event {event}): {KIND_LABELS[self.kind]} — {self.detail}"


class ChainChecker:
    """Feed the rows in seq order, then the head; the first broken link is returned and kept.

    Memory is constant: only the last two hashes are held, so a chain of any length is checked in
    pages.
    """

    def __init__(self, expect_head: str | None = None) -> None:
        self.count = 0
        self.last_seq = 0
        self.last_hash = GENESIS
        self.last_event: str | None = None
        self._before_last_hash: str | None = None
        self._expect_head = expect_head.lower() if expect_head else None
        self.anchored_at: int | None = None
        self.broken: Break | None = None

    def feed(self, row: ArchivedRow) -> Break | None:
        if self.broken is None:
            self.broken = self._check(row)
            if self.broken is None:
                self._before_last_hash, self.last_hash = self.last_hash, row.hash
                self.last_seq, self.last_event = row.seq, row.event_id
                self.count += 1
                if row.hash == self._expect_head:
                    self.anchored_at = row.seq
        return self.broken

    def _check(self, row: ArchivedRow) -> Break | None:
        expected = self.last_seq + 1
        if row.seq != expected:
            missing = f"seq {expected}" if row.seq == expected + 1 else f"seq {expected}..{row.seq - 1}"
            return Break(
                expected,
                None,
                "missing",
                f"{missing} absent: deleted after seq {self.last_seq}; the chain resumes at seq {row.seq} "
                f"(event {row.event_id})",
            )
        if row.prev_hash != self.last_hash:
            if self.count and row.prev_hash == self._before_last_hash:
                # This row links past its predecessor: the predecessor was put in afterwards.
                return Break(
                    self.last_seq,
                    self.last_event,
                    "inserted",
                    f"seq {row.seq} links to seq {self.last_seq - 1}, so seq {self.last_seq} is not "
                    "part of the chain",
                )
            return Break(
                row.seq,
                row.event_id,
                "missing",
                f"its prev_hash is not the hash of seq {self.last_seq}: a row before it was deleted and "
                f"the rest renumbered, or seq {self.last_seq} was rewritten with a new hash",
            )
        if link_hash(row.prev_hash, row.record) != row.hash:
            return Break(row.seq, row.event_id, "edited", "the record does not match its hash")
        try:
            document = json.loads(row.record)
        except ValueError:
            return Break(row.seq, row.event_id, "edited", "the record is not JSON")
        if not isinstance(document, dict):
            return Break(row.seq, row.event_id, "edited", "the record is not a JSON object")
        if document.get("id") != row.event_id or document.get("subject") != row.subject:
            return Break(
                row.seq, row.event_id, "edited", "the event_id or subject column differs from the record"
            )
        return None

    def finish(self, head_seq: int | None, head_hash: str | None) -> Break | None:
        """Check the head row against the last row; `event_id` of a row after the head is left None
        for the caller to look up."""
        if self.broken is not None:
            return self.broken
        self.broken = self._finish(head_seq, head_hash)
        return self.broken

    def _finish(self, head_seq: int | None, head_hash: str | None) -> Break | None:
        if head_seq is None or head_hash is None:
            if self.count == 0:
                return self._anchor()
            return Break(self.last_seq, self.last_event, "head_mismatch", "the head row is gone")
        if head_seq < self.last_seq:
            return Break(
                head_seq + 1,
                None,
                "inserted",
                f"the head names seq {head_seq}, the chain goes on to seq {self.last_seq}: rows were "
                "added after the head",
            )
        if head_seq > self.last_seq:
            return Break(
                self.last_seq + 1,
                None,
                "missing",
                f"the head names seq {head_seq}, the chain ends at seq {self.last_seq}: the tail was deleted",
            )
        if head_hash != self.last_hash:
            return Break(
                self.last_seq,
                self.last_event,
                "head_mismatch",
                f"the head's hash {head_hash} is not the hash of seq {self.last_seq}",
            )
        return self._anchor()

    def _anchor(self) -> Break | None:
        if self._expect_head is None or self.anchored_at is not None:
            return None
        return Break(
            self.last_seq + 1,
            None,
            "missing",
            f"the anchored head {self._expect_head} is not in the chain, which ends at seq "
            f"{self.last_seq}: rows were deleted from its end (truncated), or the chain was rewritten",
        )

"""Time-ordered event ids (UUID version 7, RFC 9562)."""

from __future__ import annotations

import os
import re
import time
import uuid

# uuid.UUID() also takes braces, "urn:uuid:" and missing hyphens; one event must have one id string.
_CANONICAL = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """Return a UUIDv7: 48 bits of Unix milliseconds, then random bits.

    Time-ordered ids keep B-tree inserts local and let an operator read an id's age.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 68) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return uuid.UUID(int=value)


def parse_uuid(text: str) -> uuid.UUID | None:
    """Parse a canonical (hyphenated, 36 character) UUID, or return None."""
    if not _CANONICAL.fullmatch(text):
        return None
    return uuid.UUID(text)

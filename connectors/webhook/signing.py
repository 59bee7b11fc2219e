"""HMAC-SHA256 signatures of webhook deliveries, for the sender and for receivers (docs/webhooks.md).

The MAC covers `f"{timestamp}.{delivery_id}.".encode() + body`. The timestamp is digits only and the
delivery id has no dot, so the two separators are unambiguous: no bytes can move between the fields.
Pure: no I/O, no clock; the caller passes the time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Literal

TIMESTAMP_HEADER = "X-Liandong-Timestamp"
DELIVERY_HEADER = "X-Liandong-Delivery"
SIGNATURE_HEADER = "X-Liandong-Signature"
SCHEME = "v1"

_DELIVERY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v1=([0-9a-fA-F]{64})")

Failure = Literal["missing_header", "malformed_header", "too_old", "in_future", "mismatch"]


class SignatureError(ValueError):
    """The delivery is not authentic or not fresh; `reason` is a short code, the message says why."""

    def __init__(self, reason: Failure, message: str) -> None:
        super().__init__(message)
        self.reason: Failure = reason


def _mac(secret: bytes, timestamp: int, delivery_id: str, body: bytes) -> bytes:
    return hmac.new(secret, f"{timestamp}.{delivery_id}.".encode() + body, hashlib.sha256).digest()


def sign(secret: bytes, body: bytes, delivery_id: str, timestamp: int) -> dict[str, str]:
    """The three headers that let a receiver check `body` came from us, for this delivery, at `timestamp`."""
    if not secret:
        raise ValueError("the signing secret is empty")
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise ValueError("delivery_id must be 1 to 128 characters from A-Z a-z 0-9 _ -")
    if not 0 <= timestamp < 10**12:
        raise ValueError(f"timestamp must be Unix seconds, got {timestamp}")
    return {
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: f"{SCHEME}={_mac(secret, timestamp, delivery_id, body).hex()}",
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:  # a plain dict may hold the names in another case
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    if value is None:
        raise SignatureError("missing_header", f"the {name} header is missing")
    return value.strip()


def verify(
    secrets: Sequence[bytes], body: bytes, headers: Mapping[str, str], now: int, tolerance_s: int = 300
) -> None:
    """Raise SignatureError unless one of `secrets` signed `body` within `tolerance_s` of `now`.

    Several secrets allow rotation: accept the new and the old one until every sender uses the new.
    """
    if isinstance(secrets, bytes | bytearray | str):
        raise TypeError("secrets must be a sequence of secrets, e.g. [secret]")
    if not secrets or not all(secrets):
        raise ValueError("at least one secret is needed, and none may be empty")
    if tolerance_s < 0:
        raise ValueError("tolerance_s must not be negative")
    raw_timestamp = _header(headers, TIMESTAMP_HEADER)
    delivery_id = _header(headers, DELIVERY_HEADER)
    raw_signature = _header(headers, SIGNATURE_HEADER)
    if not _TIMESTAMP.fullmatch(raw_timestamp):
        raise SignatureError("malformed_header", f"{TIMESTAMP_HEADER} must be Unix seconds (digits only)")
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise SignatureError("malformed_header", f"{DELIVERY_HEADER} must be 1-128 of A-Z a-z 0-9 _ -")
    match = _SIGNATURE.fullmatch(raw_signature)
    if match is None:
        raise SignatureError("malformed_header", f"{SIGNATURE_HEADER} must be v1=<64 hex digits>")
    timestamp, given = int(raw_timestamp), bytes.fromhex(match.group(1))
    # Every secret is tried, so the time taken does not tell which one matched.
    matched = [hmac.compare_digest(_mac(s, timestamp, delivery_id, body), given) for s in secrets]
    if not any(matched):
        raise SignatureError("mismatch", "the signature does not match the body with any known secret")
    if timestamp < now - tolerance_s:
        raise SignatureError("too_old", f"signed {now - timestamp} s ago; tolerance {tolerance_s} s")
    if timestamp > now + tolerance_s:
        raise SignatureError("in_future", f"signed {timestamp - now} s ahead; tolerance {tolerance_s} s")

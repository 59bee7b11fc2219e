"""Person tokens: only a token this hub signed, unchanged, in its time window, whose role fits its
unit, is accepted; everything else is refused with a reason that can be counted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from events.directory import Directory
from services.tokens import (
    LEEWAY_S,
    RoleMismatch,
    TokenRejected,
    TokenRole,
    issue_token,
    key_id_of,
    role_fits,
    verify,
)

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
DIRECTORY = Directory.load()
SUPERVISOR = "district.justice-bureau"
SHILOU_OFFICE = "shilou.enforcement-office"
POLICE = "shilou.police-station"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token(role: TokenRole = "township_office", unit: str = SHILOU_OFFICE, **kwargs: Any) -> str:
    value, _ = issue_token(SECRET, DIRECTORY, unit=unit, role=role, person="p-0042", name="李四", **kwargs)
    return value


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None = SECRET) -> str:
    """A token built by hand: any header and claims, signed with `secret` (None: no signature)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def parts(value: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = value.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload))


def reason(value: str, secret: bytes = SECRET, now: float | None = None) -> str:
    with pytest.raises(TokenRejected) as refused:
        verify(secret, value, DIRECTORY, now=now)
    return refused.value.reason


def test_a_token_the_hub_signed_verifies_to_its_claims() -> None:
    value, issued = issue_token(
        SECRET, DIRECTORY, unit=SHILOU_OFFICE, role="township_office", person="p-0042", name="李四"
    )

    claims = verify(SECRET, value, DIRECTORY)

    assert claims == issued
    assert (claims.sub, claims.name, claims.unit, claims.role, claims.iss) == (
        "p-0042",
        "李四",
        SHILOU_OFFICE,
        "township_office",
        "liandong",
    )
    assert claims.exp - claims.iat == 8 * 3600
    header, _ = parts(value)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": key_id_of(SECRET)}


def test_a_tampered_payload_is_refused_as_a_bad_signature() -> None:
    header, payload, signature = token().split(".")
    claims = json.loads(unb64(payload))
    promoted = b64(json.dumps({**claims, "role": "district_supervisor", "unit": SUPERVISOR}).encode())

    assert reason(f"{header}.{promoted}.{signature}") == "bad_signature"


def test_a_flipped_signature_bit_is_refused() -> None:
    header, payload, signature = token().split(".")
    raw = bytearray(unb64(signature))
    raw[0] ^= 1

    assert reason(f"{header}.{payload}.{b64(bytes(raw))}") == "bad_signature"


@pytest.mark.parametrize("alg", ["none", "None", "HS512", "RS256", "", None])
def test_any_algorithm_but_hs256_is_refused_even_when_signed(alg: str | None) -> None:
    header, claims = parts(token())
    header["alg"] = alg

    assert reason(forge(header, claims)) == "bad_signature"
    assert reason(forge(header, claims, secret=None)) in ("bad_signature", "malformed")


def test_a_token_signed_with_another_secret_is_refused() -> None:
    value, _ = issue_token(OTHER_SECRET, DIRECTORY, unit=SHILOU_OFFICE, role="township_office", person="x")
    header, claims = parts(value)

    assert reason(value) == "bad_signature"
    # Even with this hub's key id in the header, the signature gives the other secret away.
    assert reason(forge({**header, "kid": key_id_of(SECRET)}, claims, OTHER_SECRET)) == "bad_signature"


def test_an_expired_token_is_refused_and_the_leeway_is_small() -> None:
    now = time.time()
    value = token(ttl_s=3600, now=now - 3600 - LEEWAY_S - 1)
    just_within = token(ttl_s=3600, now=now - 3600 - LEEWAY_S + 5)

    assert reason(value, now=now) == "token_expired"
    assert verify(SECRET, just_within, DIRECTORY, now=now).sub == "p-0042"


def test_a_token_issued_in_the_future_is_refused() -> None:
    now = time.time()

    assert reason(token(now=now + LEEWAY_S + 60), now=now) == "token_expired"
    assert verify(SECRET, token(now=now + 5), DIRECTORY, now=now).role == "township_office"


@pytest.mark.parametrize(
    ("role", "unit", "fits"),
    [
        ("district_supervisor", SUPERVISOR, True),
        ("district_supervisor", SHILOU_OFFICE, False),
        ("township_office", SHILOU_OFFICE, True),
        ("township_office", SUPERVISOR, False),
        ("township_office", POLICE, False),
        ("agency", POLICE, True),
        ("agency", "district.urban-management", True),
        ("agency", SHILOU_OFFICE, False),
        ("agency", SUPERVISOR, False),
        ("auditor", SUPERVISOR, True),
        ("auditor", POLICE, True),
        ("auditor", "", False),
        ("public", "", True),
        ("public", POLICE, True),
        ("agency", "no.such-unit", False),
    ],
)
def test_the_role_must_fit_the_units_kind(role: TokenRole, unit: str, fits: bool) -> None:
    assert (role_fits(DIRECTORY, unit, role) is None) is fits
    if not fits:
        with pytest.raises(RoleMismatch):
            issue_token(SECRET, DIRECTORY, unit=unit, role=role, person="p")


def test_a_signed_token_whose_role_does_not_fit_its_unit_is_refused() -> None:
    # Signed with the hub's own secret (say, by an old version, or before the directory changed).
    header, claims = parts(token())

    assert reason(forge(header, {**claims, "role": "district_supervisor"})) == "role_mismatch"
    assert reason(forge(header, {**claims, "unit": "no.such-unit"})) == "role_mismatch"


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "someone-else"},
        {"sub": ""},
        {"exp": "tomorrow"},
        {"iat": True},
        {"role": "superuser"},
        {"key_id": 7},
    ],
)
def test_signed_claims_of_the_wrong_shape_are_refused_as_malformed(change: dict[str, Any]) -> None:
    header, claims = parts(token())

    assert reason(forge(header, {**claims, **change})) == "malformed"


def test_a_signed_token_missing_a_claim_is_refused_as_malformed() -> None:
    header, claims = parts(token())
    del claims["jti"]

    assert reason(forge(header, claims)) == "malformed"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        "e30.e30.",
        "bm90IGpzb24.e30.AAAA",  # the header is not JSON
        "WzFd.e30.AAAA",  # the header is JSON, but not an object
        "x" * 5000 + ".a.b",
    ],
)
def test_strings_that_are_not_tokens_are_refused_as_malformed_or_unsigned(value: str) -> None:
    assert reason(value) in ("malformed", "bad_signature")


def test_the_key_id_names_the_secret_without_revealing_it() -> None:
    assert key_id_of(SECRET) != key_id_of(OTHER_SECRET)
    assert SECRET.hex() not in key_id_of(SECRET)
    assert len(key_id_of(SECRET)) == 12


def test_a_lifetime_out_of_range_is_refused_at_issue() -> None:
    with pytest.raises(ValueError, match="lives"):
        token(ttl_s=0)
    with pytest.raises(ValueError, match="lives"):
        token(ttl_s=32 * 86_400)

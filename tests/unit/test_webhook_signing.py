"""Webhook signatures as a receiver checks them, and the backoff between delivery attempts."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random

import pytest

from connectors.webhook.sender import RetryPolicy, WebhookTarget, parse_retry_after
from connectors.webhook.signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    verify,
)

SECRET = b"whsec-current-0123456789"
OLD_SECRET = b"whsec-previous-9876543210"
BODY = '{"alert_id":"a-1","case":"SL-2026-0001","level":"红色"}'.encode()
DELIVERY = "0193a5e2-7c1d-7b3e-9f00-5a1c2d3e4f50"
NOW = 1_780_000_000


def signed(secret: bytes = SECRET, body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    return sign(secret, body, DELIVERY, timestamp)


def failure(headers: dict[str, str], body: bytes = BODY, secrets: tuple[bytes, ...] = (SECRET,)) -> str:
    with pytest.raises(SignatureError) as caught:
        verify(secrets, body, headers, now=NOW)
    return caught.value.reason


def test_a_signed_body_verifies_with_the_same_secret() -> None:
    verify([SECRET], BODY, signed(), now=NOW)


def test_the_headers_carry_the_timestamp_the_delivery_id_and_a_v1_hex_mac() -> None:
    headers = signed()
    assert headers[TIMESTAMP_HEADER] == str(NOW)
    assert headers[DELIVERY_HEADER] == DELIVERY
    expected = hmac.new(SECRET, f"{NOW}.{DELIVERY}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"v1={expected}"


def test_header_names_are_matched_regardless_of_case() -> None:
    lowered = {name.lower(): value for name, value in signed().items()}
    verify([SECRET], BODY, lowered, now=NOW)


def test_a_tampered_body_is_a_mismatch() -> None:
    assert failure(signed(), body=BODY.replace(b"SL-2026-0001", b"SL-2026-0002")) == "mismatch"


def test_a_body_with_one_byte_appended_is_a_mismatch() -> None:
    assert failure(signed(), body=BODY + b" ") == "mismatch"


def test_a_different_delivery_id_is_a_mismatch() -> None:
    headers = {**signed(), DELIVERY_HEADER: "0193a5e2-7c1d-7b3e-9f00-5a1c2d3e4f51"}
    assert failure(headers) == "mismatch"


def test_a_different_timestamp_is_a_mismatch() -> None:
    assert failure({**signed(), TIMESTAMP_HEADER: str(NOW - 1)}) == "mismatch"


def test_the_wrong_secret_is_a_mismatch() -> None:
    assert failure(signed(secret=b"someone-else")) == "mismatch"


def test_during_rotation_either_the_new_or_the_old_secret_verifies() -> None:
    for secret in (SECRET, OLD_SECRET):
        verify([SECRET, OLD_SECRET], BODY, signed(secret=secret), now=NOW)


def test_after_rotation_the_retired_secret_no_longer_verifies() -> None:
    assert failure(signed(secret=OLD_SECRET), secrets=(SECRET,)) == "mismatch"


def test_a_signature_older_than_the_tolerance_is_too_old() -> None:
    verify([SECRET], BODY, signed(timestamp=NOW - 300), now=NOW)
    with pytest.raises(SignatureError, match="301 s ago") as caught:
        verify([SECRET], BODY, signed(timestamp=NOW - 301), now=NOW)
    assert caught.value.reason == "too_old"


def test_a_signature_from_beyond_the_tolerance_in_the_future_is_refused() -> None:
    verify([SECRET], BODY, signed(timestamp=NOW + 300), now=NOW)
    assert failure(signed(timestamp=NOW + 301)) == "in_future"


def test_the_tolerance_can_be_narrowed() -> None:
    with pytest.raises(SignatureError) as caught:
        verify([SECRET], BODY, signed(timestamp=NOW - 31), now=NOW, tolerance_s=30)
    assert caught.value.reason == "too_old"


def test_a_stale_delivery_with_a_forged_signature_reports_the_mismatch_not_the_age() -> None:
    assert failure(signed(secret=b"forger", timestamp=NOW - 3600)) == "mismatch"


@pytest.mark.parametrize("header", [TIMESTAMP_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER])
def test_each_missing_header_is_named(header: str) -> None:
    headers = {k: v for k, v in signed().items() if k != header}
    with pytest.raises(SignatureError, match=header) as caught:
        verify([SECRET], BODY, headers, now=NOW)
    assert caught.value.reason == "missing_header"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (TIMESTAMP_HEADER, "yesterday"),
        (TIMESTAMP_HEADER, "-1780000000"),
        (TIMESTAMP_HEADER, "1.78e9"),
        (TIMESTAMP_HEADER, ""),
        (DELIVERY_HEADER, "has.a.dot"),
        (DELIVERY_HEADER, ""),
        (SIGNATURE_HEADER, "sha256=" + "0" * 64),
        (SIGNATURE_HEADER, "v1=" + "0" * 63),
        (SIGNATURE_HEADER, "v1=" + "g" * 64),
        (SIGNATURE_HEADER, "v1="),
    ],
    ids=lambda v: v[:12] or "empty",
)
def test_a_malformed_header_is_named(header: str, value: str) -> None:
    with pytest.raises(SignatureError, match=header) as caught:
        verify([SECRET], BODY, {**signed(), header: value}, now=NOW)
    assert caught.value.reason == "malformed_header"


def test_verify_refuses_a_bare_secret_or_no_secret_at_all() -> None:
    with pytest.raises(TypeError, match="sequence"):
        verify(SECRET, BODY, signed(), now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one secret"):
        verify([], BODY, signed(), now=NOW)


@pytest.mark.parametrize(
    ("secret", "delivery_id", "timestamp"),
    [(b"", DELIVERY, NOW), (SECRET, "a.b", NOW), (SECRET, "", NOW), (SECRET, DELIVERY, -1)],
    ids=["empty secret", "dotted delivery id", "empty delivery id", "negative timestamp"],
)
def test_sign_refuses_what_a_receiver_could_not_verify(
    secret: bytes, delivery_id: str, timestamp: int
) -> None:
    with pytest.raises(ValueError, match=r"secret|delivery_id|timestamp"):
        sign(secret, BODY, delivery_id, timestamp)


def test_a_target_never_shows_its_secret_and_needs_https_outside_loopback() -> None:
    target = WebhookTarget("https://hooks.example.cn/liandong", SECRET, "district-supervision")
    assert SECRET.decode() not in repr(target)
    WebhookTarget("http://127.0.0.1:8080/hook", SECRET, "local")
    WebhookTarget("http://[::1]:8080/hook", SECRET, "local6")
    with pytest.raises(ValueError, match="loopback"):
        WebhookTarget("http://hooks.example.cn/liandong", SECRET, "plain")
    with pytest.raises(ValueError, match="https"):
        WebhookTarget("ftp://hooks.example.cn/", SECRET, "ftp")
    with pytest.raises(ValueError, match="secret"):
        WebhookTarget("https://hooks.example.cn/", b"", "nosecret")


# RetryPolicy


def policy(seed: int = 7, max_attempts: int = 12) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, rng=random.Random(seed))


def test_the_delay_ceiling_doubles_from_one_second_and_is_capped_at_ten_minutes() -> None:
    ceilings = [RetryPolicy().ceiling(n) for n in range(1, 13)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
    assert RetryPolicy().ceiling(5000) == 600


def test_jittered_delays_stay_within_zero_and_the_ceiling() -> None:
    retry = policy(max_attempts=1000)
    for attempt in range(1, 1000):
        for _ in range(20):
            delay = retry.next_delay(attempt, None)
            assert delay is not None
            assert 0.0 <= delay <= retry.ceiling(attempt)


def test_jitter_spreads_delays_over_the_whole_window() -> None:
    retry = policy()
    delays = [retry.next_delay(10, None) for _ in range(2000)]
    assert all(d is not None for d in delays)
    window = retry.ceiling(10)
    assert min(d for d in delays if d is not None) < 0.05 * window
    assert max(d for d in delays if d is not None) > 0.95 * window


def test_delays_grow_on_average_until_the_cap() -> None:
    retry = policy()

    def mean(attempt: int) -> float:
        samples = [retry.next_delay(attempt, None) for _ in range(4000)]
        return sum(d for d in samples if d is not None) / len(samples)

    means = [mean(n) for n in range(1, 12)]
    assert all(later > earlier for earlier, later in itertools.pairwise(means))
    assert means[-1] == pytest.approx(300, rel=0.05)  # half the cap


def test_the_same_seed_gives_the_same_delays() -> None:
    first, second = policy(seed=42), policy(seed=42)
    assert [first.next_delay(n, None) for n in range(1, 12)] == [
        second.next_delay(n, None) for n in range(1, 12)
    ]


def test_a_longer_retry_after_wins_over_the_jittered_delay() -> None:
    retry = policy()
    assert retry.next_delay(1, 7.0) == 7.0  # the ceiling after one attempt is 1 s


def test_a_shorter_retry_after_does_not_shorten_the_backoff() -> None:
    ours, theirs = policy(seed=3), policy(seed=3)
    assert theirs.next_delay(11, 0.5) == ours.next_delay(11, None)


def test_a_retry_after_beyond_the_limit_is_clamped() -> None:
    assert policy().next_delay(1, 86_400.0) == 3600.0
    assert policy().next_delay(1, -5.0) is not None


def test_the_policy_gives_up_after_max_attempts() -> None:
    retry = policy(max_attempts=12)
    assert all(retry.next_delay(n, None) is not None for n in range(1, 12))
    assert retry.next_delay(12, None) is None
    assert retry.next_delay(12, 5.0) is None
    assert retry.next_delay(13, None) is None


def test_a_policy_of_one_attempt_never_retries() -> None:
    assert policy(max_attempts=1).next_delay(1, None) is None


def test_attempts_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="starting at 1"):
        policy().next_delay(0, None)


def test_a_nonsensical_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        RetryPolicy(base_s=0)
    with pytest.raises(ValueError, match="factor"):
        RetryPolicy(factor=0.5)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("7", now=NOW) == 7.0
    assert parse_retry_after(" 120 ", now=NOW) == 120.0
    assert parse_retry_after("Thu, 28 May 2026 20:27:00 GMT", now=NOW - 20)  # NOW + 20 s == 40.0
    assert parse_retry_after("Thu, 01 Jan 2015 00:00:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after("-3", now=NOW) is None
    assert parse_retry_after(None, now=NOW) is None

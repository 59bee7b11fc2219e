"""The per-unit token bucket: a burst, then one request per refill interval; buckets are separate."""

from __future__ import annotations

import pytest

from services.api.ratelimit import RateLimiter, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refuses_until_a_token_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(per_min=60, burst=3, clock=clock)

    assert [limiter.take("unit:a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("unit:a")
    assert wait == pytest.approx(1.0)
    assert retry_after(wait) == "1"

    clock.now += 0.5
    assert limiter.take("unit:a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("unit:a") == 0.0
    assert limiter.take("unit:a") > 0


def test_buckets_are_per_name_and_refill_no_higher_than_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(per_min=6000, burst=2, clock=clock)

    assert limiter.take("unit:a") == limiter.take("unit:a") == 0.0
    assert limiter.take("unit:a") > 0
    assert limiter.take("unit:b") == 0.0  # another unit is not slowed by the first

    clock.now += 3600
    assert [limiter.take("unit:a") == 0.0 for _ in range(3)] == [True, True, False]


def test_idle_full_buckets_are_forgotten_when_the_table_is_full() -> None:
    clock = Clock()
    limiter = RateLimiter(per_min=60, burst=1, clock=clock, max_buckets=2)
    limiter.take("person:a")
    limiter.take("person:b")
    clock.now += 2  # both refilled: forgetting them changes nothing

    assert limiter.take("person:c") == 0.0
    assert limiter.take("person:a") == 0.0  # a fresh, full bucket
    assert len(limiter._buckets) <= 3


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert retry_after(0.01) == "1"
    assert retry_after(59.2) == "60"


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RateLimiter(per_min=0, burst=1)

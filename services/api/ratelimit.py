"""A token bucket per unit (per person for public tokens): LIANDONG_RATE_LIMIT_PER_MIN, _BURST.

The buckets live in the API process. With several API replicas each keeps its own, so a unit may
send up to replicas x the limit; the limit is a guard against one runaway client, not a quota
(docs/identity.md). A simulated year at full speed sends a unit about 50 requests in total, far
under the default burst of 600.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """`take(name)` spends one token of `name`'s bucket: 0.0 if there was one, else the seconds
    until there will be (the caller answers 429 with that as Retry-After)."""

    def __init__(
        self,
        per_min: int,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 100_000,
    ) -> None:
        if per_min < 1 or burst < 1:
            raise ValueError("the rate and the burst must be at least 1")
        self.rate_per_s = per_min / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[str, _Bucket] = {}

    def take(self, name: str) -> float:
        now = self.clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._forget_full(now)
            bucket = self._buckets[name] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing (public tokens are per
        person, so their number is not bounded by the directory)."""
        full_after = self.burst / self.rate_per_s
        for name in [n for n, b in self._buckets.items() if now - b.at >= full_after]:
            del self._buckets[name]


def retry_after(seconds: float) -> str:
    """The Retry-After header: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))

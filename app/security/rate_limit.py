"""Per-principal token buckets: O(1) per request, bounded memory.

Buckets live in an LRU-ordered dict. A bucket idle long enough to have refilled completely
is indistinguishable from a new one, so dropping it loses nothing; beyond that, the least
recently used bucket goes when ``max_buckets`` is reached (so a flood of distinct callers
costs bounded memory). There is no ``await`` inside :meth:`TokenBucketLimiter.acquire`, so
on one event loop each call is atomic without a lock.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

_EVICT_PER_CALL = 2  # amortised idle sweep: a couple of old buckets per request


class _Bucket:
    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def full_at(self) -> float:
        """When this bucket will be full again if nobody touches it."""
        return self.updated + (self.burst - self.tokens) / self.rate


class TokenBucketLimiter:
    def __init__(self, max_buckets: int = 100_000) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(
        self, key: str, rate_per_s: float, burst: int, now: float | None = None, cost: float = 1.0
    ) -> float:
        """Take ``cost`` tokens. Returns 0.0 when allowed, else seconds until it would be."""
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        t = time.monotonic() if now is None else now
        # Sweep first, so the bucket about to be charged cannot be swept mid-call.
        self._evict_idle(t)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(rate_per_s, burst, t)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            if bucket.rate != rate_per_s or bucket.burst != burst:
                # The key's limits were edited in the store: keep its level, new shape.
                bucket.rate, bucket.burst = rate_per_s, burst
            elapsed = t - bucket.updated
            if elapsed > 0:
                bucket.tokens = min(float(bucket.burst), bucket.tokens + elapsed * bucket.rate)
                bucket.updated = t
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / bucket.rate

    def _evict_idle(self, now: float) -> None:
        for _ in range(_EVICT_PER_CALL):
            if not self._buckets:
                return
            oldest_key = next(iter(self._buckets))
            if self._buckets[oldest_key].full_at() > now:
                return
            del self._buckets[oldest_key]


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` as an integer of at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(seconds)))

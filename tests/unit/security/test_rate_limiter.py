"""Token bucket maths, Retry-After rounding and bounded memory."""

from __future__ import annotations

import pytest

from app.security.rate_limit import TokenBucketLimiter, retry_after_header


def test_burst_is_allowed_then_the_next_call_waits_one_refill() -> None:
    limiter = TokenBucketLimiter()
    assert [limiter.acquire("k", 2.0, 3, now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k", 2.0, 3, now=10.0) == pytest.approx(0.5)


def test_tokens_refill_at_the_configured_rate() -> None:
    limiter = TokenBucketLimiter()
    for _ in range(3):
        limiter.acquire("k", 2.0, 3, now=0.0)
    assert limiter.acquire("k", 2.0, 3, now=0.25) == pytest.approx(0.25)  # 0.5 token there
    assert limiter.acquire("k", 2.0, 3, now=0.5) == 0.0  # 1 token after 0.5 s
    assert limiter.acquire("k", 2.0, 3, now=0.5) == pytest.approx(0.5)


def test_refill_never_exceeds_burst_when_idle_long() -> None:
    limiter = TokenBucketLimiter()
    limiter.acquire("k", 1.0, 2, now=0.0)
    assert [limiter.acquire("k", 1.0, 2, now=1000.0) for _ in range(3)] == [0.0, 0.0, 1.0]


def test_a_denied_call_takes_no_token() -> None:
    limiter = TokenBucketLimiter()
    limiter.acquire("k", 1.0, 1, now=0.0)
    for _ in range(5):
        assert limiter.acquire("k", 1.0, 1, now=0.5) == pytest.approx(0.5)
    assert limiter.acquire("k", 1.0, 1, now=1.0) == 0.0


def test_buckets_are_independent_per_key() -> None:
    limiter = TokenBucketLimiter()
    assert limiter.acquire("a", 1.0, 1, now=0.0) == 0.0
    assert limiter.acquire("b", 1.0, 1, now=0.0) == 0.0
    assert limiter.acquire("a", 1.0, 1, now=0.0) == pytest.approx(1.0)


def test_new_limits_apply_when_a_key_record_changes() -> None:
    limiter = TokenBucketLimiter()
    limiter.acquire("k", 1.0, 1, now=0.0)
    assert limiter.acquire("k", 4.0, 1, now=0.0) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.001, "1"), (0.5, "1"), (1.0, "1"), (1.01, "2"), (99.2, "100")]
)
def test_retry_after_is_a_whole_second_of_at_least_one(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def test_memory_is_bounded_when_many_distinct_keys_arrive() -> None:
    limiter = TokenBucketLimiter(max_buckets=100)
    for i in range(10_000):
        limiter.acquire(f"k{i}", 0.001, 5, now=0.0)
    assert len(limiter) == 100


def test_idle_full_buckets_are_evicted_as_traffic_flows() -> None:
    limiter = TokenBucketLimiter()
    for i in range(50):
        limiter.acquire(f"old{i}", 10.0, 1, now=0.0)  # full again after 0.1 s
    for _ in range(30):
        limiter.acquire("busy", 1000.0, 1000, now=5.0)
    assert len(limiter) == 1


def test_evicting_an_idle_bucket_does_not_lose_the_current_charge() -> None:
    limiter = TokenBucketLimiter()
    assert limiter.acquire("k", 1.0, 1, now=0.0) == 0.0
    assert limiter.acquire("k", 1.0, 1, now=10.0) == 0.0  # swept and recreated, then charged
    assert limiter.acquire("k", 1.0, 1, now=10.0) == pytest.approx(1.0)


def test_acquire_refuses_when_rate_or_burst_invalid() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucketLimiter().acquire("k", 0.0, 1)

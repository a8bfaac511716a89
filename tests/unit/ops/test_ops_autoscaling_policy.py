"""MarketHoursPolicy with a fake clock and fake AutoscalingContexts (no Ray)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.config import ServiceConfig
from app.scaling.autoscaling_policy import (
    REQUESTS_TOTAL_METRIC,
    SOCKET_ONGOING_METRIC,
    MarketHoursPolicy,
)
from app.scaling.market_calendar import MarketSchedule, SessionTable
from app.serve.options import market_policy

NY = ZoneInfo("America/New_York")
TUESDAY_NOON = datetime(2026, 11, 24, 12, 0, tzinfo=NY).timestamp()
TUESDAY_0916 = datetime(2026, 11, 24, 9, 16, tzinfo=NY).timestamp()
SATURDAY_NOON = datetime(2026, 11, 28, 12, 0, tzinfo=NY).timestamp()


@dataclass
class FakeContext:
    current_num_replicas: int
    target_num_replicas: int
    total_num_requests: float
    current_time: float
    policy_state: dict[str, Any] = field(default_factory=dict)
    aggregated_metrics: Mapping[str, Mapping[Any, float]] | None = None


def _weekday_sessions(exchange: str, start: date, end: date) -> SessionTable:
    """Mon-Fri 09:30-16:00 New York, no holidays: enough for the policy's own logic."""
    opens, closes = [], []
    day = start
    while day <= end:
        if day.weekday() < 5:
            opens.append(datetime(day.year, day.month, day.day, 9, 30, tzinfo=NY).timestamp())
            closes.append(datetime(day.year, day.month, day.day, 16, 0, tzinfo=NY).timestamp())
        day = date.fromordinal(day.toordinal() + 1)
    return SessionTable(opens, closes)


def make_policy(**overrides: Any) -> MarketHoursPolicy:
    kwargs = market_policy(ServiceConfig())["policy_kwargs"]
    for regime in ("market_hours", "off_hours"):
        kwargs[regime] = {**kwargs[regime], **overrides}
    schedule = MarketSchedule("FAKE", 15, table_factory=_weekday_sessions)
    return MarketHoursPolicy(**kwargs, schedule=schedule)


def run(policy: MarketHoursPolicy, ctx: FakeContext) -> int:
    decision, state = policy(ctx)
    ctx.policy_state = state
    return decision


def test_market_hours_floor_applies_at_once_when_load_is_low() -> None:
    policy = make_policy()
    ctx = FakeContext(2, 2, total_num_requests=0.0, current_time=TUESDAY_NOON)
    assert run(policy, ctx) == 5  # spec 3.2.1 floor, no upscale delay for a floor
    assert ctx.policy_state["mh_profile"] == "market_hours"


def test_prescale_raises_to_market_floor_before_open() -> None:
    policy = make_policy()
    assert run(policy, FakeContext(2, 2, 0.0, current_time=TUESDAY_0916)) == 5
    early = datetime(2026, 11, 24, 9, 14, tzinfo=NY).timestamp()
    assert run(policy, FakeContext(2, 2, 0.0, current_time=early)) == 2


def test_off_hours_ceiling_applies_at_once_after_the_close() -> None:
    policy = make_policy()
    ctx = FakeContext(14, 14, total_num_requests=10_000.0, current_time=SATURDAY_NOON)
    assert run(policy, ctx) == 10  # off-hours max_replicas, however busy


def test_upscale_waits_for_the_regime_delay() -> None:
    policy = make_policy(upscale_delay_s=15.0, upscaling_factor=1.0)
    ctx = FakeContext(5, 5, total_num_requests=30.0, current_time=TUESDAY_NOON)  # wants 10
    assert run(policy, ctx) == 5
    ctx.current_time += 10
    assert run(policy, ctx) == 5
    ctx.current_time += 5
    assert run(policy, ctx) == 10


def test_downscale_waits_for_the_longer_delay_and_resets_on_reversal() -> None:
    policy = make_policy(downscale_delay_s=120.0, downscaling_factor=1.0)
    ctx = FakeContext(8, 8, total_num_requests=15.0, current_time=TUESDAY_NOON)  # wants 5
    assert run(policy, ctx) == 8
    ctx.current_time += 100
    ctx.total_num_requests = 24.0  # wants exactly 8: the pending scale-down is dropped
    assert run(policy, ctx) == 8
    ctx.total_num_requests = 15.0
    ctx.current_time += 30
    assert run(policy, ctx) == 8  # the 120 s restart from here
    ctx.current_time += 120
    assert run(policy, ctx) == 5


def test_smoothing_factor_moves_part_way_to_the_desired_count() -> None:
    policy = make_policy(upscale_delay_s=0.0, upscaling_factor=0.5)
    ctx = FakeContext(6, 6, total_num_requests=42.0, current_time=TUESDAY_NOON)  # wants 14
    assert run(policy, ctx) == 10  # 6 + 0.5 * (14 - 6)


def test_throughput_based_count_wins_when_larger() -> None:
    policy = make_policy(upscale_delay_s=0.0, upscaling_factor=1.0)
    t = TUESDAY_NOON
    ctx = FakeContext(5, 5, total_num_requests=3.0, current_time=t)  # queue says 1
    for step in range(40):  # 900 requests/s for 40 s
        ctx.current_time = t + step
        ctx.aggregated_metrics = {REQUESTS_TOTAL_METRIC: {"r1": 450.0 * step, "r2": 450.0 * step}}
        decision = run(policy, ctx)
    assert ctx.policy_state["mh_rps"] == pytest.approx(900.0, rel=0.05)
    assert decision == 9  # ceil(900 / 100 per replica), above the queue-based floor of 5


def test_queue_based_count_wins_when_throughput_is_small() -> None:
    policy = make_policy(upscale_delay_s=0.0, upscaling_factor=1.0)
    ctx = FakeContext(5, 5, total_num_requests=36.0, current_time=TUESDAY_NOON)
    for step in range(5):
        ctx.current_time = TUESDAY_NOON + step
        ctx.aggregated_metrics = {REQUESTS_TOTAL_METRIC: {"r1": 10.0 * step}}
        decision = run(policy, ctx)
    assert decision == 12  # 36 ongoing / 3 per replica; 10 req/s would need only 1


def test_counter_reset_from_a_stopped_replica_is_not_negative_throughput() -> None:
    policy = make_policy()
    ctx = FakeContext(5, 5, 0.0, current_time=TUESDAY_NOON)
    ctx.aggregated_metrics = {REQUESTS_TOTAL_METRIC: {"r1": 5000.0}}
    run(policy, ctx)
    ctx.current_time += 5
    ctx.aggregated_metrics = {REQUESTS_TOTAL_METRIC: {"r2": 10.0}}
    run(policy, ctx)
    assert ctx.policy_state.get("mh_rps") is None


def test_serve_internal_state_keys_are_kept() -> None:
    policy = make_policy()
    ctx = FakeContext(5, 5, 0.0, TUESDAY_NOON, policy_state={"__decision_counter": 3})
    _, state = policy(ctx)
    assert state["__decision_counter"] == 3


def test_active_profile_matches_the_schedule() -> None:
    policy = make_policy()
    assert policy.active_profile(TUESDAY_NOON) == "market_hours"
    assert policy.active_profile(SATURDAY_NOON) == "off_hours"
    assert policy.active_profile(datetime(2026, 11, 24, 14, 20, tzinfo=UTC)) == "prescale"


def test_regime_with_unknown_key_is_rejected() -> None:
    kwargs = market_policy(ServiceConfig())["policy_kwargs"]
    kwargs["off_hours"] = {**kwargs["off_hours"], "target_num_ongoing_requests_per_replica": 3}
    with pytest.raises(ValueError, match="unknown"):
        MarketHoursPolicy(**kwargs)


def test_calls_in_flight_on_the_predictor_sockets_count_as_ongoing() -> None:
    # Serve's count holds the handle calls only; a gateway on the predictor's node sends
    # its batches over the replica's socket (model.socket_server), reported beside it.
    policy = make_policy(upscale_delay_s=0.0, upscaling_factor=1.0)
    handle_only = FakeContext(5, 5, total_num_requests=10.0, current_time=TUESDAY_NOON)
    assert run(policy, handle_only) == 5  # 10 ongoing fit five replicas
    both = FakeContext(
        5,
        5,
        total_num_requests=10.0,
        current_time=TUESDAY_NOON,
        aggregated_metrics={SOCKET_ONGOING_METRIC: {"r1": 12.0, "r2": 8.0}},
    )
    assert run(make_policy(upscale_delay_s=0.0, upscaling_factor=1.0), both) == 10

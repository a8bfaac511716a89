"""Spec 3.2 as a custom Serve autoscaling policy: market-hours and off-hours regimes.

Serve 2.60 (``ray/serve/_private/autoscaling_state.py``) instantiates a class policy once
with ``policy_kwargs`` and calls it every control-loop tick (~0.1 s) with an
``AutoscalingContext``. It then wraps our answer in ``_apply_autoscaling_config``
(``ray/serve/autoscaling_policy.py``), which applies the config's ``upscaling_factor`` /
``downscaling_factor`` and ``upscale_delay_s`` / ``downscale_delay_s`` and finally clamps to
the config's ``min_replicas`` / ``max_replicas``. Those settings are deployment-wide, so
:func:`app.serve.options.serve_autoscaling_config` neutralises them (factors 1, delays 0,
the widest min/max) and this class applies each regime's own factors, delays, floor and
ceiling, keeping its delay clock in ``policy_state``.

Desired replicas = the larger of the queue-based count (ongoing requests / target per
replica) and the throughput-based count (requests/s / ``target_throughput_per_replica``).
Requests/s comes from a cumulative counter the predictor reports through Serve's
``record_autoscaling_stats`` hook as :data:`REQUESTS_TOTAL_METRIC`; without it only the
queue-based count is used.

No Ray import: the context is duck-typed, so this runs (and is tested) without Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Protocol

from app.scaling.market_calendar import MarketSchedule, ProfileName, to_epoch

REQUESTS_TOTAL_METRIC = "requests_total"
# Calls in flight on a replica's same-node socket (model.socket_server): Serve counts only
# handle calls as ongoing, so the queue-based count adds these.
SOCKET_ONGOING_METRIC = "socket_ongoing"
# The throughput estimate is an EWMA with this time constant; samples closer than
# RATE_MIN_INTERVAL_S are skipped so 0.1 s ticks do not divide noise by tiny intervals.
RATE_TAU_S = 10.0
RATE_MIN_INTERVAL_S = 1.0

# policy_state keys (Serve keeps its own keys alongside; ours are prefixed).
_K_PROFILE = "mh_profile"
_K_DIRECTION = "mh_pending_direction"
_K_SINCE = "mh_pending_since"
_K_RATE = "mh_rps"
_K_RATE_T = "mh_rate_t"
_K_RATE_TOTAL = "mh_rate_total"


class ContextLike(Protocol):
    """The parts of ``ray.serve.config.AutoscalingContext`` this policy reads."""

    @property
    def current_num_replicas(self) -> int: ...

    @property
    def target_num_replicas(self) -> int: ...

    @property
    def policy_state(self) -> dict[str, Any]: ...

    @property
    def current_time(self) -> float | None: ...

    @property
    def total_num_requests(self) -> float: ...

    @property
    def aggregated_metrics(self) -> Mapping[str, Mapping[Any, float]] | None: ...


@dataclass(frozen=True)
class Regime:
    """One profile's knobs, with Serve's names (see ``app.scaling.spec_mapping``)."""

    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float
    target_throughput_per_replica: float | None
    upscale_delay_s: float
    downscale_delay_s: float
    upscaling_factor: float
    downscaling_factor: float

    @classmethod
    def from_kwargs(cls, data: Mapping[str, Any]) -> Regime:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        missing = names - set(data)
        if unknown or missing:
            raise ValueError(f"regime keys: unknown {sorted(unknown)}, missing {sorted(missing)}")
        regime = cls(**dict(data))
        if not 0 <= regime.min_replicas <= regime.max_replicas:
            raise ValueError(f"regime needs 0 <= min <= max, got {regime}")
        return regime


class MarketHoursPolicy:
    """Serve autoscaling policy (class form): ``policy_function`` of the predictor."""

    def __init__(
        self,
        *,
        market_hours: Mapping[str, Any],
        off_hours: Mapping[str, Any],
        exchange: str = "XNYS",
        prescale_minutes: float = 15.0,
        schedule: MarketSchedule | None = None,
    ) -> None:
        self.market_hours = Regime.from_kwargs(market_hours)
        self.off_hours = Regime.from_kwargs(off_hours)
        self.schedule = schedule or MarketSchedule(exchange, prescale_minutes)
        # Pre-scale: off-hours behaviour, but already at the market-hours floor.
        floor = self.market_hours.min_replicas
        self.prescale = replace(
            self.off_hours,
            min_replicas=floor,
            max_replicas=max(self.off_hours.max_replicas, floor),
        )

    def active_profile(self, now: float | datetime | None = None) -> ProfileName:
        return self.schedule.profile_at(now)

    def regime(self, profile: ProfileName) -> Regime:
        if profile == "market_hours":
            return self.market_hours
        if profile == "prescale":
            return self.prescale
        return self.off_hours

    def __call__(self, ctx: ContextLike) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time if ctx.current_time is not None else to_epoch(None)
        state = dict(ctx.policy_state)
        profile = self.schedule.profile_at(now)
        regime = self.regime(profile)
        state[_K_PROFILE] = profile

        current = ctx.current_num_replicas
        target = ctx.target_num_replicas
        rps = _update_rate(state, _requests_total(ctx), now)
        ongoing = ctx.total_num_requests + _summed(ctx, SOCKET_ONGOING_METRIC)
        desired = _desired(regime, ongoing, rps)
        base = current if current > 0 else target
        smoothed = _smooth(desired, base, regime)
        bounded = _clamp(smoothed, regime)
        decision = _delayed(bounded, target, regime, state, now)
        # Floors and ceilings are the regime itself, not a load signal: enforce them at once
        # (the pre-scale raise before the open must not wait out an upscale delay).
        return _clamp(decision, regime), state


def _requests_total(ctx: ContextLike) -> float | None:
    # Serve reports each replica's stat as its mean over look_back_period_s. The mean of a
    # steadily rising counter rises at the counter's rate (half a window late), so the
    # difference between ticks still measures requests/s.
    metrics = ctx.aggregated_metrics
    if not metrics:
        return None
    per_replica = metrics.get(REQUESTS_TOTAL_METRIC)
    if not per_replica:
        return None
    return float(sum(per_replica.values()))


def _summed(ctx: ContextLike, name: str) -> float:
    """A replica stat summed over the replicas (each its mean over the look-back); 0
    when no replica reports it."""
    per_replica = (ctx.aggregated_metrics or {}).get(name)
    return float(sum(per_replica.values())) if per_replica else 0.0


def _update_rate(state: dict[str, Any], total: float | None, now: float) -> float | None:
    """Requests/s from a cumulative counter, smoothed; kept in ``policy_state``."""
    if total is None:
        return None
    last_t = state.get(_K_RATE_T)
    last_total = state.get(_K_RATE_TOTAL)
    rate = state.get(_K_RATE)
    if last_t is None or last_total is None:
        state[_K_RATE_T], state[_K_RATE_TOTAL] = now, total
        return rate
    dt = now - float(last_t)
    if dt < RATE_MIN_INTERVAL_S:
        return rate
    delta = total - float(last_total)
    state[_K_RATE_T], state[_K_RATE_TOTAL] = now, total
    if delta < 0:  # a replica went away with its counter: skip this interval
        return rate
    instant = delta / dt
    alpha = dt / (dt + RATE_TAU_S)
    rate = instant if rate is None else alpha * instant + (1.0 - alpha) * float(rate)
    state[_K_RATE] = rate
    return rate


def _desired(regime: Regime, ongoing: float, rps: float | None) -> float:
    by_queue = ongoing / regime.target_ongoing_requests
    by_throughput = 0.0
    if rps is not None and regime.target_throughput_per_replica:
        by_throughput = rps / regime.target_throughput_per_replica
    return max(by_queue, by_throughput)


def _smooth(desired: float, current: int, regime: Regime) -> int:
    """Serve's gain rule: move ``factor`` of the way from current towards desired."""
    if current <= 0:
        return math.ceil(desired)
    delta = desired - current
    factor = regime.upscaling_factor if delta > 0 else regime.downscaling_factor
    scaled = math.ceil(current + factor * delta)
    if math.ceil(desired) < current and scaled == current:
        scaled -= 1  # a small factor must not stall a scale-down forever
    return scaled


def _clamp(n: int, regime: Regime) -> int:
    return max(regime.min_replicas, min(regime.max_replicas, n))


def _delayed(wanted: int, target: int, regime: Regime, state: dict[str, Any], now: float) -> int:
    """Act only once the same direction has been wanted for the regime's delay."""
    if wanted == target:
        state[_K_DIRECTION], state[_K_SINCE] = 0, None
        return target
    direction = 1 if wanted > target else -1
    if state.get(_K_DIRECTION) != direction or state.get(_K_SINCE) is None:
        state[_K_DIRECTION], state[_K_SINCE] = direction, now
    delay = regime.upscale_delay_s if direction > 0 else regime.downscale_delay_s
    if now - float(state[_K_SINCE]) + 1e-6 >= delay:
        state[_K_DIRECTION], state[_K_SINCE] = 0, None
        return wanted
    return target

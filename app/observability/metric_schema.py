"""Names, label values and buckets shared by the gateway's and the replicas' metrics.

Label values are fixed sets so that neither a bug nor a client can mint new series; the
recorders fold anything else into a catch-all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from app.config import Metrics

# "rejected" is load shedding (429/503), which a caller experiences as unavailability, so it
# counts against the availability SLO with "timeout" and "error"; "client_error" (bad
# input) does not.
PREDICTION_STATUSES = ("ok", "client_error", "rejected", "timeout", "error")
SLO_BAD_STATUSES = ("rejected", "timeout", "error")
# Reasons callers naturally pass, folded onto the five statuses above. Anything not listed
# counts as "error": an unknown failure should burn the budget, not hide.
STATUS_ALIASES = {
    "success": "ok",
    "bad_input": "client_error",
    "invalid": "client_error",
    "invalid_request": "client_error",
    "invalid_features": "client_error",
    "not_found": "client_error",
    "model_not_found": "client_error",
    "too_many_items": "client_error",
    "queue_full": "rejected",
    "rate_limited": "rejected",
    "shed": "rejected",
    "not_ready": "rejected",
    "deadline": "timeout",
    "deadline_exceeded": "timeout",
    "unavailable": "error",
    "invalid_model": "error",
    "internal": "error",
}
CACHES = ("feature", "model")
PROFILES = ("market_hours", "off_hours", "prescale")

# Not in the spec, so defaults live here; a ``metrics.custom_metrics`` entry of the same
# name overrides them. Queue wait is bounded by the 10 ms batch window plus handle hops;
# one forward pass is 0.3-12 ms (DESIGN section 3).
DEFAULT_BUCKETS: dict[str, list[float]] = {
    "prediction_queue_wait_ms": [0.5, 1, 2, 5, 10, 15, 20, 30, 50, 100, 250],
    "prediction_model_time_ms": [0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 250],
}


def canonical_status(status: str) -> str:
    if status in PREDICTION_STATUSES:
        return status
    return STATUS_ALIASES.get(status, "error")


def buckets_for(config: Metrics, name: str) -> list[float]:
    try:
        return config.buckets(name)
    except KeyError:
        return list(DEFAULT_BUCKETS[name])


class MetricsMirror(Protocol):
    """Where a gateway replica also records, so a Ray node exporter can show it."""

    def observe_prediction(
        self,
        *,
        latency_ms: float,
        model_version: str,
        batch_size: int | None,
        queue_wait_ms: float | None,
        model_ms: float | None,
        status: str,
    ) -> None: ...

    def observe_cache(self, cache: str, hit: bool) -> None: ...

    def set_queue_depth(self, n: int) -> None: ...

    def set_models(self, models: Iterable[tuple[str, str, str]]) -> None: ...

    def set_profile(self, profile: str) -> None: ...

    def set_rollout(self, state: str, green_weight_pct: float) -> None: ...

    def set_replicas(self, deployment: str, n: int) -> None: ...

    def set_gpu_utilization(self, gpu: str, pct: float) -> None: ...

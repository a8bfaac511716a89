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
CACHES = ("feature", "model")
PROFILES = ("market_hours", "off_hours", "prescale")
# How a gateway's batch reached the predictor (app.gateway.predictor_socket).
TRANSPORTS = ("socket", "handle")

# Not in the spec, so defaults live here; a ``metrics.custom_metrics`` entry of the same
# name overrides them. Queue wait is bounded by the 10 ms batch window plus handle hops;
# one forward pass is 0.3 ms (GPU) to ~12 ms (batch 32 on one CPU core).
DEFAULT_BUCKETS: dict[str, list[float]] = {
    "prediction_queue_wait_ms": [0.5, 1, 2, 5, 10, 15, 20, 30, 50, 100, 250],
    "prediction_model_time_ms": [0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 250],
}


def canonical_status(status: str) -> str:
    """``status`` if it is one of the fixed set; anything else counts as ``error`` (an
    unknown failure should burn the error budget, not hide). Callers pass the failure
    table's metric status (``app.gateway.failures``)."""
    return status if status in PREDICTION_STATUSES else "error"


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

    def observe_cache(self, cache: str, hit: bool, n: int = 1) -> None: ...

    def set_queue_depth(self, n: int) -> None: ...

    def set_models(self, models: Iterable[tuple[str, str, str]]) -> None: ...

    def set_profile(self, profile: str) -> None: ...

    def set_rollout(self, state: str, green_weight_pct: float) -> None: ...

    def set_replicas(self, deployment: str, n: int) -> None: ...

    def set_gpu_utilization(self, gpu: str, pct: float) -> None: ...

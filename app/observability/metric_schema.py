"""Names, label values and buckets shared by the gateway's and the replicas' metrics.

Label values are fixed sets so that neither a bug nor a client can mint new series; the
recorders fold anything else into a catch-all.
"""

from __future__ import annotations

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

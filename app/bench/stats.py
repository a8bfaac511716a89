"""Latency summaries for a benchmark run (nearest-rank, the rule ``/stats`` uses too).

Nearest-rank never interpolates: every percentile reported is a latency some request
really saw, which is what a tail-latency target is written against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.observability.window import nearest_rank

# Keys of a latency summary, in the order tables print them.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.50),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99_9", 0.999),
)


def summarize_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """Mean, p50/p95/p99/p99.9 and max in milliseconds of latencies given in seconds."""
    if not values_s:
        return {"mean": None, **{k: None for k, _ in PERCENTILES}, "max": None}
    ordered = sorted(values_s)
    out: dict[str, float | None] = {"mean": round(1000.0 * sum(ordered) / len(ordered), 3)}
    for key, q in PERCENTILES:
        out[key] = round(1000.0 * nearest_rank(ordered, q), 3)
    out["max"] = round(1000.0 * ordered[-1], 3)
    return out


def distribution_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counts that arrived between two snapshots of a cumulative ``{bucket: count}``."""
    keys = sorted({*before, *after}, key=_numeric_first)
    delta = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in keys}
    return {k: v for k, v in delta.items() if v}


def weighted_mean(distribution: dict[str, int]) -> float | None:
    total = sum(distribution.values())
    if not total:
        return None
    return round(sum(float(k) * v for k, v in distribution.items()) / total, 3)


def _numeric_first(key: str) -> tuple[int, float, str]:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


_QUEUE_COUNTERS = (
    "submitted",
    "rejected_full",
    "expired_deadlines",
    "gateway_batches",
    "gateway_rows",
)
# Refusals by the overload control that made them (the gateway's ``/stats`` "overload").
_REFUSAL_COUNTERS = ("refused_queue_wait", "refused_in_flight")


def run_rows(before: dict[str, Any], after: dict[str, Any]) -> int | None:
    """How many rows the run added to ``/stats``' latency windows, when that is fewer than
    the windows hold at the end (the rest are an earlier run's); else None."""
    if "error" in before or "error" in after:
        return None
    ok0 = before.get("requests", {}).get("by_status", {}).get("ok", 0)
    ok1 = after.get("requests", {}).get("by_status", {}).get("ok", 0)
    held = after.get("model_time_ms", {}).get("count") or 0
    rows = int(ok1 or 0) - int(ok0 or 0)
    return rows if 0 < rows < held else None


def server_window(
    before: dict[str, Any], after: dict[str, Any], recent: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the gateway's ``/stats`` says happened between two snapshots.

    Counters become deltas (the run window only). The latency windows are the server's
    last-N rows at the end: under steady load the run's. A run that added fewer rows than
    the windows hold (1 req/s after a busy run) passes ``recent``, the end's ``/stats``
    asked for its :func:`run_rows` newest rows (``?recent=``), whose windows are the
    run's alone. With several gateway replicas this is the one replica that answered
    ``/stats``.
    """
    if "error" in before or "error" in after:
        return {"error": before.get("error") or after.get("error")}
    windows = recent if recent is not None and "error" not in recent else after
    dist = distribution_delta(
        before.get("batch_size", {}).get("distribution", {}),
        after.get("batch_size", {}).get("distribution", {}),
    )
    q0, q1 = before.get("queue", {}), after.get("queue", {})
    queue: dict[str, Any] = {
        k: int(q1.get(k, 0) or 0) - int(q0.get(k, 0) or 0) for k in _QUEUE_COUNTERS
    }
    batches = queue["gateway_batches"]
    queue["mean_gateway_batch"] = round(queue["gateway_rows"] / batches, 3) if batches else None
    queue["depth_at_end"] = q1.get("depth")
    o0, o1 = before.get("overload", {}), after.get("overload", {})
    f0 = before.get("cache", {}).get("feature", {})
    f1 = after.get("cache", {}).get("feature", {})
    hits = int(f1.get("hits", 0)) - int(f0.get("hits", 0))
    misses = int(f1.get("misses", 0)) - int(f0.get("misses", 0))
    return {
        "batch_size": {
            "count": sum(dist.values()),
            "mean": weighted_mean(dist),
            "distribution": dist,
        },
        "queue": queue,
        "feature_cache": {
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        },
        "refusals": {k: int(o1.get(k, 0) or 0) - int(o0.get(k, 0) or 0) for k in _REFUSAL_COUNTERS},
        "server_latency_ms": windows.get("latency_ms"),
        "queue_wait_ms": windows.get("queue_wait_ms"),
        "model_time_ms": windows.get("model_time_ms"),
        "replicas": after.get("replicas"),
    }

"""GatewayMetrics: spec buckets, what each observation records, and the /stats snapshot."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.config import CustomMetric, Metrics
from app.gateway.failures import FAILURES
from app.observability.metrics import GatewayMetrics
from app.observability.window import SampleWindow, nearest_rank
from model.common.failures import FailureKind

SPEC_LATENCY_BUCKETS = [10, 25, 50, 75, 100, 250, 500, 1000]  # spec 6.1, verbatim
SPEC_BATCH_BUCKETS = [1, 5, 10, 20, 32]


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(registry: CollectorRegistry, metric: str, /, **labels: str) -> float:
    return samples(registry).get((metric, frozenset(labels.items())), 0.0)


def bucket_bounds(registry: CollectorRegistry, name: str) -> list[float]:
    bounds = {
        float(dict(labels)["le"]) for (n, labels) in samples(registry) if n == f"{name}_bucket"
    }
    return sorted(bounds)


def observe_ok(m: GatewayMetrics, latency_ms: float, **kw: Any) -> None:
    args: dict[str, Any] = {
        "model_version": "1.0.0",
        "batch_size": None,
        "queue_wait_ms": None,
        "model_ms": None,
    }
    args.update(kw)
    m.observe_prediction(latency_ms=latency_ms, **args)


def test_histogram_buckets_equal_spec_exactly(
    metrics: GatewayMetrics, registry: CollectorRegistry
) -> None:
    observe_ok(metrics, 12.0, batch_size=3)
    assert bucket_bounds(registry, "prediction_latency_ms") == [
        *SPEC_LATENCY_BUCKETS,
        float("inf"),
    ]
    assert bucket_bounds(registry, "batch_size") == [*SPEC_BATCH_BUCKETS, float("inf")]


def test_histogram_buckets_follow_config_when_changed() -> None:
    config = Metrics(
        custom_metrics=[
            CustomMetric(name="prediction_latency_ms", type="histogram", description="x",
                         buckets=[5, 500]),
            CustomMetric(name="batch_size", type="histogram", description="x", buckets=[2, 64]),
        ]
    )  # fmt: skip
    registry = CollectorRegistry()
    m = GatewayMetrics(registry, config)
    observe_ok(m, 1.0, batch_size=1)
    assert bucket_bounds(registry, "prediction_latency_ms") == [5, 500, float("inf")]
    assert bucket_bounds(registry, "batch_size") == [2, 64, float("inf")]


def test_observe_prediction_updates_histograms_and_counter(
    metrics: GatewayMetrics, registry: CollectorRegistry
) -> None:
    observe_ok(metrics, 42.0, batch_size=8, queue_wait_ms=3.0, model_ms=1.5)
    observe_ok(metrics, 7.0, batch_size=8, queue_wait_ms=1.0, model_ms=1.5)

    assert value(registry, "predictions_total", status="ok") == 2
    assert value(registry, "prediction_latency_ms_count", model_version="1.0.0") == 2
    assert value(registry, "prediction_latency_ms_sum", model_version="1.0.0") == 49.0
    assert value(registry, "prediction_latency_ms_bucket", model_version="1.0.0", le="10.0") == 1
    assert value(registry, "prediction_latency_ms_bucket", model_version="1.0.0", le="50.0") == 2
    assert value(registry, "batch_size_bucket", le="5.0") == 0
    assert value(registry, "batch_size_bucket", le="10.0") == 2
    assert value(registry, "prediction_queue_wait_ms_count") == 2
    assert value(registry, "prediction_model_time_ms_sum") == 3.0


def test_observe_prediction_failure_counts_without_latency(
    metrics: GatewayMetrics, registry: CollectorRegistry
) -> None:
    metrics.observe_prediction(
        latency_ms=0.0, model_version="-", batch_size=None, queue_wait_ms=None,
        model_ms=None, status="timeout",
    )  # fmt: skip
    assert value(registry, "predictions_total", status="timeout") == 1
    assert value(registry, "prediction_latency_ms_count", model_version="-") == 0
    assert metrics.snapshot()["latency_ms"]["count"] == 0


@pytest.mark.parametrize(
    ("given", "counted_as"),
    [
        (FAILURES[FailureKind.QUEUE_FULL].metric_status, "rejected"),
        (FAILURES[FailureKind.DEADLINE_EXCEEDED].metric_status, "timeout"),
        (FAILURES[FailureKind.INVALID_FEATURES].metric_status, "client_error"),
        (FAILURES[FailureKind.MODEL_NOT_FOUND].metric_status, "client_error"),
        (FAILURES[FailureKind.UNAVAILABLE].metric_status, "error"),
        ("something_new", "error"),
    ],
)
def test_observe_prediction_status_folds_onto_fixed_set_when_not_canonical(
    metrics: GatewayMetrics, registry: CollectorRegistry, given: str, counted_as: str
) -> None:
    metrics.observe_failure(given)
    assert value(registry, "predictions_total", status=counted_as) == 1
    if given != counted_as:
        assert ("predictions_total", frozenset({("status", given)})) not in samples(registry)


def test_every_status_series_exists_before_traffic(registry: CollectorRegistry) -> None:
    GatewayMetrics(registry, Metrics())
    present = {dict(labels).get("status") for (n, labels) in samples(registry)
               if n == "predictions_total"}  # fmt: skip
    assert present == {"ok", "client_error", "rejected", "timeout", "error"}


def test_observe_cache_counts_hits_and_misses_per_cache(
    metrics: GatewayMetrics, registry: CollectorRegistry
) -> None:
    for hit in (True, True, False):
        metrics.observe_cache("feature", hit)
    metrics.observe_cache("model", False)
    metrics.observe_cache("made-up", True)

    assert value(registry, "cache_requests_total", cache="feature", result="hit") == 2
    assert value(registry, "cache_requests_total", cache="feature", result="miss") == 1
    assert value(registry, "cache_requests_total", cache="model", result="miss") == 1
    assert value(registry, "cache_requests_total", cache="other", result="hit") == 1
    cache = metrics.snapshot()["cache"]
    assert cache["feature"] == {"hits": 2, "misses": 1, "hit_rate": pytest.approx(2 / 3, 1e-5)}
    assert cache["model"]["hit_rate"] == 0.0


def test_set_profile_marks_only_the_active_profile(
    metrics: GatewayMetrics, registry: CollectorRegistry
) -> None:
    metrics.set_profile("market_hours")
    metrics.set_profile("prescale")
    assert value(registry, "autoscaling_profile", profile="prescale") == 1
    assert value(registry, "autoscaling_profile", profile="market_hours") == 0
    assert value(registry, "autoscaling_profile", profile="off_hours") == 0
    with pytest.raises(ValueError, match="unknown autoscaling profile"):
        metrics.set_profile("weekend")


def test_set_rollout_keeps_previous_states_at_zero(
    metrics: GatewayMetrics, registry: CollectorRegistry
) -> None:
    metrics.set_rollout("shifting", 25.0)
    metrics.set_rollout("rolled_back", 0.0)
    assert value(registry, "rollout_state", state="rolled_back") == 1
    assert value(registry, "rollout_state", state="shifting") == 0
    assert value(registry, "rollout_green_weight_pct") == 0.0
    assert metrics.snapshot()["rollout"] == {"state": "rolled_back", "green_weight_pct": 0.0}


def test_set_model_replaces_the_previous_model(
    metrics: GatewayMetrics, registry: CollectorRegistry
) -> None:
    metrics.set_model("cnn_lstm", "1.0.0", "aa")
    metrics.set_model("cnn_lstm", "1.1.0", "bb")
    assert value(registry, "model_info", name="cnn_lstm", version="1.1.0", sha256="bb") == 1
    assert ("model_info", frozenset({("name", "cnn_lstm"), ("version", "1.0.0"),
                                     ("sha256", "aa")})) not in samples(registry)  # fmt: skip
    metrics.set_models([("cnn_lstm", "1.1.0", "bb"), ("cnn_lstm", "1.2.0", "cc")])
    assert [m["version"] for m in metrics.snapshot()["models"]] == ["1.1.0", "1.2.0"]


def test_set_replicas_and_queue_depth_are_gauges(
    metrics: GatewayMetrics, registry: CollectorRegistry
) -> None:
    metrics.set_replicas("Predictor", 3)
    metrics.set_replicas("Predictor", 5)
    metrics.set_queue_depth(17)
    metrics.set_gpu_utilization("0", 55.0)
    assert value(registry, "replicas", deployment="Predictor") == 5
    assert value(registry, "prediction_queue_depth") == 17
    assert value(registry, "gpu_utilization", gpu="0") == 55.0
    snap = metrics.snapshot()
    assert snap["replicas"] == {"Predictor": 5}
    assert snap["queue_depth"] == 17
    assert snap["gpu_utilization_pct"] == {"0": 55.0}


def test_snapshot_percentiles_match_observed_latencies(metrics: GatewayMetrics) -> None:
    for ms in range(100, 0, -1):  # 1..100 ms, out of order
        observe_ok(metrics, float(ms))
    latency = metrics.snapshot()["latency_ms"]
    assert latency["count"] == 100
    assert (latency["p50"], latency["p95"], latency["p99"], latency["max"]) == (50, 95, 99, 100)
    assert latency["mean"] == 50.5


def test_snapshot_reports_counts_error_rate_and_batches(metrics: GatewayMetrics) -> None:
    for _ in range(6):
        observe_ok(metrics, 5.0, batch_size=4)
    observe_ok(metrics, 5.0, batch_size=32)
    observe_ok(metrics, 0.0, status="error")
    observe_ok(metrics, 0.0, status="client_error")
    snap = metrics.snapshot()
    assert snap["requests"]["total"] == 9
    assert snap["requests"]["by_status"]["ok"] == 7
    assert snap["requests"]["error_rate"] == pytest.approx(1 / 9, abs=1e-6)
    assert snap["batch_size"]["distribution"] == {"4": 6, "32": 1}
    assert snap["batch_size"]["mean"] == pytest.approx((6 * 4 + 32) / 7, abs=1e-3)


def test_snapshot_without_traffic_has_no_percentiles(metrics: GatewayMetrics) -> None:
    snap = metrics.snapshot()
    assert snap["latency_ms"]["p99"] is None
    assert snap["requests"]["error_rate"] is None
    assert snap["cache"]["feature"]["hit_rate"] is None


def test_snapshot_window_keeps_only_recent_latencies() -> None:
    m = GatewayMetrics(CollectorRegistry(), Metrics(latency_window=16))
    for _ in range(100):
        observe_ok(m, 500.0)
    for _ in range(16):
        observe_ok(m, 5.0)
    assert m.snapshot()["latency_ms"]["max"] == 5.0


def test_snapshot_of_the_recent_rows_leaves_an_earlier_busier_run_out() -> None:
    # A busy run fills the window; a quiet one adds a few rows: asked for those rows only,
    # the three windows speak for the quiet run alone, and the counters stay whole.
    m = GatewayMetrics(CollectorRegistry(), Metrics(latency_window=64))
    for _ in range(60):
        observe_ok(m, 40.0, queue_wait_ms=9.0, model_ms=5.0)
    for ms in (4.0, 5.0, 6.0):
        observe_ok(m, ms, queue_wait_ms=0.1, model_ms=1.0 + ms / 10)
    whole, recent = m.snapshot(), m.snapshot(recent=3)
    assert whole["model_time_ms"]["p50"] == 5.0
    assert recent["latency_ms"] == {
        "count": 3, "mean": 5.0, "p50": 5.0, "p95": 6.0, "p99": 6.0, "max": 6.0,
    }  # fmt: skip
    assert recent["queue_wait_ms"]["max"] == 0.1
    assert (recent["model_time_ms"]["p50"], recent["model_time_ms"]["max"]) == (1.5, 1.6)
    assert recent["requests"] == whole["requests"]
    # More than the window holds is the whole window.
    assert m.snapshot(recent=10_000)["latency_ms"] == whole["latency_ms"]
    with pytest.raises(ValueError, match="recent"):
        SampleWindow(4).summary(recent=0)


def test_nearest_rank_rejects_empty_and_bad_quantile() -> None:
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 0.5)
    with pytest.raises(ValueError, match="q must be"):
        nearest_rank([1.0], 0.0)
    assert nearest_rank([1.0, 2.0, 3.0], 1.0) == 3.0
    with pytest.raises(ValueError, match="size"):
        SampleWindow(0)

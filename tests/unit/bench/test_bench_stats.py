"""Percentiles, distribution deltas and the /stats window arithmetic of the benchmark."""

from __future__ import annotations

import pytest

from app.bench.stats import (
    distribution_delta,
    run_rows,
    server_window,
    summarize_ms,
    weighted_mean,
)


def test_percentiles_are_nearest_rank_on_known_data() -> None:
    # 1..1000 ms: nearest rank picks a value that was really observed, no interpolation.
    values_s = [i / 1000.0 for i in range(1000, 0, -1)]  # unsorted on purpose
    out = summarize_ms(values_s)
    assert out == {
        "mean": 500.5,
        "p50": 500.0,
        "p95": 950.0,
        "p99": 990.0,
        "p99_9": 999.0,
        "max": 1000.0,
    }


def test_percentiles_of_one_sample_are_that_sample() -> None:
    assert summarize_ms([0.0123]) == {
        "mean": 12.3, "p50": 12.3, "p95": 12.3, "p99": 12.3, "p99_9": 12.3, "max": 12.3,
    }  # fmt: skip


def test_tail_percentiles_see_a_single_outlier_in_a_thousand() -> None:
    values = [0.010] * 999 + [0.250]
    out = summarize_ms(values)
    assert out["p99"] == pytest.approx(10.0)
    assert out["p99_9"] == pytest.approx(10.0)  # rank 999 of 1000
    assert out["max"] == pytest.approx(250.0)


def test_percentiles_of_nothing_are_none() -> None:
    assert set(summarize_ms([]).values()) == {None}


def test_distribution_delta_keeps_only_the_window_and_sorts_numerically() -> None:
    before = {"1": 10, "8": 4, "32": 2}
    after = {"1": 10, "8": 9, "16": 3, "32": 2}
    assert distribution_delta(before, after) == {"8": 5, "16": 3}
    assert list(distribution_delta({}, {"10": 1, "9": 1, "2": 1})) == ["2", "9", "10"]
    assert weighted_mean({"8": 5, "16": 3}) == pytest.approx((40 + 48) / 8, abs=1e-3)
    assert weighted_mean({}) is None


def _stats(dist: dict[str, int], submitted: int, batches: int, rows: int, hits: int) -> dict:
    return {
        "batch_size": {"distribution": dist},
        "queue": {"submitted": submitted, "gateway_batches": batches, "gateway_rows": rows,
                  "rejected_full": 0, "expired_deadlines": 0, "depth": 0},
        "cache": {"feature": {"hits": hits, "misses": submitted - hits}},
        "latency_ms": {"p99": 12.0},
        "replicas": {"gateway": 1},
    }  # fmt: skip


def test_server_window_reports_deltas_for_the_run_only() -> None:
    before = _stats({"1": 5}, submitted=5, batches=5, rows=5, hits=0)
    after = _stats({"1": 5, "4": 40, "8": 80}, submitted=125, batches=25, rows=125, hits=20)
    before["overload"] = {"refused_queue_wait": 2, "refused_in_flight": 7, "in_flight": 3}
    after["overload"] = {"refused_queue_wait": 5, "refused_in_flight": 7, "in_flight": 9}
    w = server_window(before, after)
    assert w["refusals"] == {"refused_queue_wait": 3, "refused_in_flight": 0}
    assert w["batch_size"] == {"count": 120, "mean": 6.667, "distribution": {"4": 40, "8": 80}}
    assert w["queue"]["submitted"] == 120
    assert w["queue"]["mean_gateway_batch"] == pytest.approx(6.0)
    assert w["feature_cache"] == {
        "hits": 20,
        "misses": 100,
        "hit_rate": pytest.approx(1 / 6, abs=1e-4),
    }
    assert w["server_latency_ms"] == {"p99": 12.0}


def test_a_run_that_added_fewer_rows_than_the_windows_hold_takes_its_own_rows() -> None:
    # 1 req/s for 30 s after a busy run: the end's windows still hold 4096 busy rows.
    before = _stats({"1": 5}, submitted=5, batches=5, rows=5, hits=0)
    after = _stats({"1": 35}, submitted=35, batches=35, rows=35, hits=0)
    before["requests"] = {"by_status": {"ok": 9000}}
    after["requests"] = {"by_status": {"ok": 9030}}
    after["model_time_ms"] = {"count": 4096, "p50": 2.69}
    assert run_rows(before, after) == 30
    recent = {"latency_ms": {"p99": 3.1}, "model_time_ms": {"count": 30, "p50": 1.31}}
    w = server_window(before, after, recent)
    assert w["model_time_ms"] == {"count": 30, "p50": 1.31}
    assert w["server_latency_ms"] == {"p99": 3.1}
    assert w["batch_size"]["count"] == 30  # the counters are the deltas either way
    assert server_window(before, after, {"error": "HTTP 422"})["model_time_ms"]["p50"] == 2.69
    # A run that filled the windows, or added nothing, needs no second look.
    after["requests"] = {"by_status": {"ok": 9000 + 4096}}
    assert run_rows(before, after) is None
    after["requests"] = {"by_status": {"ok": 9000}}
    assert run_rows(before, after) is None
    assert run_rows({"error": "HTTP 401"}, after) is None


def test_server_window_says_why_when_stats_were_unavailable() -> None:
    assert server_window({"error": "HTTP 401"}, {}) == {"error": "HTTP 401"}

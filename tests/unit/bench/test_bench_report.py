"""Spec 12.1 verdicts, Serve/baseline ratios and the printed table."""

from __future__ import annotations

from typing import Any

from app.bench.report import (
    comparison,
    engines_differ,
    format_report,
    served_line,
    slow_seconds,
    verdicts,
)
from app.config import PerformanceTargets

TARGETS = PerformanceTargets()  # the spec's: 50/80/100/200 ms, 200 and 500 req/s


def _run(rate: float, p50: float, p95: float, p99: float, mx: float, errors: int = 0) -> dict:
    ok = int(rate * 10) - errors
    return {
        "path": "/predict",
        "offered_rps": rate,
        "achieved_rps": rate * 0.99,
        "predictions_per_s": rate * 0.99,
        "latency_ms": {"mean": p50, "p50": p50, "p95": p95, "p99": p99, "p99_9": mx, "max": mx},
        "requests": {"scheduled": ok + errors, "ok": ok, "errors": errors},
        "errors": {"total": errors},
        "generator": {"kept_up": True, "send_lag_ms": {"p99": 0.5}, "cpu_pct_of_core": 20.0},
        "server": {"stats": {"batch_size": {"mean": 6.5}}},
        "loadavg_1m": 1.5,
    }


def _by_check(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in checks}


def test_verdicts_mark_each_target_met_or_missed_with_its_margin() -> None:
    runs = [_run(200, p50=20, p95=85, p99=99.5, mx=250), _run(500, 40, 90, 130, 300)]
    v = _by_check(verdicts(runs, TARGETS))
    assert v["p50 at 200 req/s"]["met"] is True
    assert v["p50 at 200 req/s"]["margin"] == 30
    assert v["p95 at 200 req/s"]["met"] is False
    assert v["p95 at 200 req/s"]["margin"] == -5
    assert v["p99 at 200 req/s"]["met"] is True
    assert v["max at 200 req/s"]["met"] is False
    assert v["p99 at 500 req/s"]["met"] is False
    assert "over by 30 ms" in v["p99 at 500 req/s"]["text"]
    assert v["availability at 200 req/s"]["met"] is True


def test_errors_fail_a_latency_verdict_and_availability() -> None:
    runs = [_run(200, 10, 20, 30, 40, errors=10)]
    v = _by_check(verdicts(runs, TARGETS))
    assert v["p99 at 200 req/s"]["met"] is False
    assert v["availability at 200 req/s"]["met"] is False  # 99.5% < 99.9%
    assert v["p99 at 500 req/s"]["met"] is None  # not measured


def test_the_worse_of_two_runs_at_a_rate_decides_each_verdict() -> None:
    # Serve / peer / Serve measures a rate twice; the better run must not hide the worse.
    good, slow = _run(200, 10, 20, 30, 40), _run(200, 10, 20, 70, 90)
    faulty = _run(500, 10, 20, 30, 40, errors=10)  # 99.8 % available
    v = _by_check(verdicts([good, slow, faulty, _run(500, 10, 20, 60, 80)], TARGETS))
    assert v["p99 at 200 req/s"]["met"] is True
    assert v["p99 at 200 req/s"]["measured"] == 70
    assert v["p50 at 200 req/s"]["measured"] == 10
    assert v["p99 at 500 req/s"]["met"] is False
    assert "10 errors" in v["p99 at 500 req/s"]["text"]
    assert v["availability at 500 req/s"]["met"] is False
    assert v["availability at 200 req/s"]["met"] is True
    assert len(v) == 7  # one verdict per check, however many runs


def test_comparison_gives_serve_over_baseline_per_rate_and_for_max_rate() -> None:
    serve = {"runs": [_run(200, 40, 60, 80, 100)], "find_max": {"max_passing_rps": 300}}
    base = {"runs": [_run(200, 10, 20, 20, 50)], "find_max": {"max_passing_rps": 1200}}
    cmp = comparison(serve, base)
    [row] = cmp["per_rate"]
    assert row["p50"] == 4.0
    assert row["p99"] == 4.0
    assert row["achieved_rps"] == 1.0
    assert cmp["max_rate"] == 0.25


def test_report_prints_every_run_the_ratios_and_the_verdicts() -> None:
    serve = {"runs": [_run(200, 40, 60, 80, 100)], "batch_runs": [], "memory": []}
    base = {"runs": [_run(200, 10, 20, 20, 50)], "batch_runs": [], "memory": []}
    serve["verdicts"] = verdicts(serve["runs"], TARGETS)
    base["verdicts"] = verdicts(base["runs"], TARGETS)
    text = format_report(
        {
            "targets": {"serve": serve, "baseline": base},
            "comparison": comparison(serve, base),
            "verdicts": {"serve": serve["verdicts"], "baseline": base["verdicts"]},
        }
    )
    lines = text.splitlines()
    assert any(line.startswith("serve ") and "200.0" in line for line in lines)
    assert any(line.startswith("baseline ") for line in lines)
    assert "p99 x4.0" in text
    assert "[met] p99 at 200 req/s <= 100 ms: 80 ms (met, 20 ms to spare)" in text
    assert "[n/a] p99 at 500 req/s" in text


def test_the_report_says_what_each_system_served_and_any_fallback() -> None:
    served = {
        "model": "cnn_lstm:1.0.0",
        "device": "cpu",
        "numerics": "fp32",
        "numerics_fallback": "golden check under int8 failed: max deviation 0.05",
        "engine": "onnxruntime",
        "engine_fallback": None,
    }
    assert served_line("serve", served) == [
        "  serve served: cnn_lstm:1.0.0 on cpu, fp32 numerics, onnxruntime engine "
        "(fallback: golden check under int8 failed: max deviation 0.05)"
    ]
    assert served_line("baseline", {"error": "HTTP 401"}) == [
        "  baseline served: unknown (/stats: HTTP 401)"
    ]
    assert served_line("hello", None) == []
    text = format_report({"targets": {"serve": {"runs": [], "served": served}}, "verdicts": {}})
    assert "serve served: cnn_lstm:1.0.0 on cpu, fp32 numerics" in text


def test_ratios_between_systems_on_different_engines_carry_a_warning() -> None:
    def targets(serve_engine: str, peer_engine: str | None) -> dict[str, Any]:
        served = {"numerics": "bf16", "engine": serve_engine}
        peer = {"numerics": "bf16", "engine": peer_engine} if peer_engine else {"error": "x"}
        return {"serve": {"served": served}, "baseline": {"served": peer}}

    assert engines_differ(targets("onnxruntime<=4+torch", "onnxruntime<=4+torch")) == []
    assert engines_differ(targets("onnxruntime<=4+torch", None)) == []  # unknown: no claim
    [warning] = engines_differ(targets("onnxruntime<=4+torch", "onnxruntime<=2+torch"))
    assert "Serve served bf16 on onnxruntime<=4+torch, the peer bf16 on onnxruntime<=2+torch" in (
        warning
    )
    serve = {"runs": [_run(200, 4, 6, 8, 10)], "batch_runs": [], "memory": []}
    base = {"runs": [_run(200, 4, 6, 8, 10)], "batch_runs": [], "memory": []}
    serve["served"] = {"numerics": "fp32", "engine": "onnxruntime"}
    base["served"] = {"numerics": "fp32", "engine": "torch"}
    text = format_report(
        {
            "targets": {"serve": serve, "baseline": base},
            "comparison": comparison(serve, base),
            "verdicts": {},
        }
    )
    assert "warning: Serve served fp32 on onnxruntime, the peer fp32 on torch" in text


def test_the_report_names_the_seconds_a_tail_came_from() -> None:
    run = _run(500, 10, 20, 90, 231)
    run["timeline"] = [
        {"t": 0, "n": 500, "err": 0, "p99": 20.0, "max": 40.0},
        {"t": 7, "n": 500, "err": 0, "p99": 90.0, "max": 150.5},
        {"t": 23, "n": 500, "err": 49, "p99": 180.0, "max": 231.0},
        {"t": 24, "n": 500, "err": 0, "p99": 95.0, "max": 120.0},
    ]
    assert slow_seconds("serve", run) == [
        "  serve 500 req/s on /predict: +23s (max 231.0 ms, 49 err), +7s (max 150.5 ms), "
        "+24s (max 120.0 ms)"
    ]
    run["timeline"] += [{"t": 30 + k, "n": 500, "err": 0, "p99": 99, "max": 101} for k in range(5)]
    assert slow_seconds("serve", run)[0].endswith("and 2 more")
    quiet = _run(200, 1, 2, 3, 4)
    quiet["timeline"] = [{"t": 0, "n": 200, "err": 0, "p99": 3.0, "max": 4.0}]
    assert slow_seconds("serve", quiet) == []
    assert slow_seconds("serve", _run(200, 1, 2, 3, 4)) == []  # a run without a timeline
    text = format_report({"targets": {"serve": {"runs": [quiet, run]}}, "verdicts": {}})
    assert "seconds with errors or an answer over 100 ms" in text
    assert "serve 500 req/s on /predict: +23s (max 231.0 ms, 49 err)" in text
    assert "serve 200 req/s" not in text.split("seconds with errors")[1]

"""The alert rules' thresholds are the configuration's spec 12 targets.

``deploy/prometheus/alerts.yml`` is plain YAML for Prometheus, so its numbers are written
out by hand; this keeps them in step with ``performance_targets`` and
``resource_targets`` (whose defaults are the spec's), in the expression and in the text
an operator reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import ServiceConfig

ALERTS = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "alerts.yml"

# The first comparison in an expression: "> 85", or a burn rate's "> (14.4 * 0.001)".
_THRESHOLD = re.compile(r">\s*\(?(?:[0-9.]+\s*\*\s*)?([0-9.]+)")


def _budget(c: ServiceConfig) -> float:
    return round(1 - c.performance_targets.availability.target_pct / 100, 6)


TARGETS: dict[str, Callable[[ServiceConfig], float]] = {
    "PredictionLatencyP50High": lambda c: c.performance_targets.latency.p50_ms,
    "PredictionLatencyP95High": lambda c: c.performance_targets.latency.p95_ms,
    "PredictionLatencyP99High": lambda c: c.performance_targets.latency.p99_ms,
    "PredictionLatencyMaxHigh": lambda c: c.performance_targets.latency.max_ms,
    "PredictionErrorBudgetFastBurn": _budget,
    "PredictionErrorBudgetSlowBurn": _budget,
    "HttpErrorBudgetFastBurn": _budget,
    "HttpErrorBudgetSlowBurn": _budget,
    "NodeCpuUtilizationHigh": lambda c: c.resource_targets.cpu_utilization.max_pct,
    "NodeMemoryUtilizationHigh": lambda c: c.resource_targets.memory_utilization.max_pct,
    "GpuUtilizationHigh": lambda c: c.resource_targets.gpu_utilization.max_pct,
}


def _alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_every_target_alert_is_in_the_rules() -> None:
    assert set(TARGETS) <= set(_alerts())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_threshold_is_the_configured_target(name: str) -> None:
    rule = _alerts()[name]
    target = TARGETS[name](ServiceConfig())
    found = _THRESHOLD.search(rule["expr"])
    assert found is not None, rule["expr"]
    assert float(found.group(1)) == pytest.approx(target), (name, rule["expr"])
    # the operator's text names the same figure (a percentage for the budgets)
    text = rule["annotations"]["summary"] + rule["annotations"]["description"]
    figure = f"{100 - 100 * target:g} %" if name.endswith("Burn") else f"{target:g}"
    assert figure in text, (name, figure, text)


def test_the_pattern_reads_each_kind_of_comparison() -> None:
    def first(expr: str) -> str:
        found = _THRESHOLD.search(expr)
        assert found is not None
        return found.group(1)

    assert first("avg_over_time(x[5m]) > 85") == "85"
    assert first("ratio:rate1h > (14.4 * 0.001)\nand y > 2") == "0.001"
    assert first("histogram_quantile(0.5, z) > 50\n and sum(rate(c[5m])) > 0.1") == "50"

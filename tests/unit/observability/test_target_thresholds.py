"""The alert rules' and the dashboard's thresholds are the configuration's spec 12 targets.

``deploy/prometheus/alerts.yml`` and ``deploy/grafana/dashboard.json`` are plain files for
Prometheus and Grafana, so their numbers are written out by hand; this keeps them in step
with ``performance_targets`` and ``resource_targets`` (whose defaults are the spec's): an
alert's expression and the text an operator reads, and the lines each panel draws.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from app.config import ServiceConfig
from tests.unit.observability.test_dashboard import ALERTS, DASHBOARD, ROOT

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


def _lines(c: ServiceConfig) -> dict[str, list[float]]:
    """Each panel (by title) and the threshold lines it should draw, lowest first."""
    lat, rps = c.performance_targets.latency, c.performance_targets.throughput
    avail, res = c.performance_targets.availability, c.resource_targets
    return {
        "Availability (range)": [avail.min_pct, avail.target_pct],
        "p99 now": [lat.p95_ms, lat.p99_ms],
        "Prediction latency percentiles vs targets": [
            lat.p50_ms,
            lat.p95_ms,
            lat.p99_ms,
            lat.max_ms,
        ],
        "p95 latency by model version": [lat.p95_ms],
        "HTTP p95 latency by route": [lat.p95_ms],
        "Request rate": [rps.min_rps, rps.target_rps, rps.max_rps],
        "Error ratio vs budget": [_budget(c), 14.4 * _budget(c)],
        "CPU utilisation": [res.cpu_utilization.target_pct, res.cpu_utilization.max_pct],
        "Memory utilisation": [res.memory_utilization.target_pct, res.memory_utilization.max_pct],
        "GPU utilisation": [res.gpu_utilization.target_pct, res.gpu_utilization.max_pct],
    }


def _dashboard_panels() -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}


@pytest.mark.parametrize("title", sorted(_lines(ServiceConfig())))
def test_each_panel_draws_the_configured_targets(title: str) -> None:
    steps = _dashboard_panels()[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    drawn = [s["value"] for s in steps if s["value"] is not None]
    assert drawn == pytest.approx(_lines(ServiceConfig())[title]), title


SPEC = ROOT.parent / "shared" / "spec" / "ray-serve-deployment-spec.md"


@pytest.mark.skipif(not SPEC.exists(), reason="shared spec not beside the repo")
@pytest.mark.parametrize("section", ["performance_targets", "resource_targets"])
def test_the_configured_defaults_are_the_specs_section_12(section: str) -> None:
    """What the checks above compare against is spec 12's own figures."""
    blocks = re.findall(r"```yaml\n(.*?)```", SPEC.read_text(), flags=re.S)
    [spec] = [yaml.safe_load(b)[section] for b in blocks if b.startswith(f"{section}:")]
    assert getattr(ServiceConfig(), section).model_dump() == spec

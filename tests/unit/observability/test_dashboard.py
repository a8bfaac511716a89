"""The Grafana dashboard and alert rules query only metrics the service really exports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.routes.metrics import router
from app.config import Metrics
from app.observability.dashboard import (
    RAY_METRICS_ALLOWLIST,
    RAY_NODE_METRICS,
    RAY_SERVE_METRICS,
    dashboard_metric_names,
    exposed_series_names,
    promql_metric_names,
)
from app.observability.http_metrics import instrument_http
from app.observability.metrics import GatewayMetrics
from app.observability.process_metrics import new_registry

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every series name a gateway /metrics scrape declares (after one request)."""
    registry = new_registry()
    GatewayMetrics(registry, Metrics())
    app = FastAPI()
    app.state.metrics_registry = registry
    instrument_http(app, registry)
    app.include_router(router)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as client:
        client.get("/ping")  # the instrumentation creates its series on first use
        return exposed_series_names(client.get("/metrics").text)


def test_dashboard_queries_only_exported_metrics(exported: set[str]) -> None:
    names = dashboard_metric_names(DASHBOARD)
    unknown = names - exported - RAY_METRICS_ALLOWLIST
    assert unknown == set(), f"dashboard queries metrics nobody exports: {sorted(unknown)}"


def test_alert_rules_query_only_exported_metrics(exported: set[str]) -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    names: set[str] = set()
    for rule in rules:
        names |= promql_metric_names(rule["expr"])
    unknown = names - recorded - {"up"} - exported - RAY_METRICS_ALLOWLIST
    assert unknown == set(), f"alert rules query metrics nobody exports: {sorted(unknown)}"


def test_dashboard_covers_every_operational_question() -> None:
    names = dashboard_metric_names(DASHBOARD)
    required = {
        "prediction_latency_ms_bucket", "http_requests_total", "predictions_total",
        "batch_size_bucket", "replicas", "cache_requests_total", "gpu_utilization",
        "ray_node_cpu_utilization", "model_info", "autoscaling_profile", "rollout_state",
    }  # fmt: skip
    assert required <= names


def _panels(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if "targets" in node:
            found.append(node)
        for value in node.values():
            found += _panels(value)
    elif isinstance(node, list):
        for item in node:
            found += _panels(item)
    return found


def test_latency_panel_draws_the_spec_targets_as_threshold_lines() -> None:
    """(Which lines: test_target_thresholds.py, against the configuration.)"""
    dashboard = json.loads(DASHBOARD.read_text())
    [panel] = [p for p in _panels(dashboard) if p["title"].startswith("Prediction latency")]
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"


def test_every_panel_uses_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in _panels(dashboard):
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", panel["title"]


def test_ray_allowlist_names_exist_in_the_installed_ray_source() -> None:
    spec = importlib.util.find_spec("ray")  # locates the package without importing it
    if spec is None or spec.origin is None:
        pytest.skip("ray is not installed")
    ray_root = Path(spec.origin).parent
    reporter = (ray_root / "dashboard/modules/reporter/reporter_agent.py").read_text()
    serve = "".join(p.read_text() for p in (ray_root / "serve/_private").glob("*.py"))
    for name in RAY_NODE_METRICS:
        assert f'"{name.removeprefix("ray_")}"' in reporter, name
    for name in RAY_SERVE_METRICS:
        assert f'"{name.removeprefix("ray_")}"' in serve, name


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.95, sum by (le, model_version) '
            '(rate(prediction_latency_ms_bucket{model_version=~"$v"}[$__rate_interval])))',
            {"prediction_latency_ms_bucket"},
        ),
        (
            '100 * max by (ip) (ray_node_mem_used) / max by (ip) (ray_node_mem_total) > 1e3',
            {"ray_node_mem_used", "ray_node_mem_total"},
        ),
        ("rate(x_total[5m] offset 1h) and on() (count(y) > 0) unless z", {"x_total", "y", "z"}),
        ("label_values(prediction_latency_ms_bucket, model_version)",
         {"prediction_latency_ms_bucket"}),
        ('sum without (instance) (increase(a_total{job="j"}[${__range}])) or vector(0)',
         {"a_total"}),
    ],
)  # fmt: skip
def test_promql_metric_names_finds_metrics_not_functions_or_labels(
    expr: str, names: set[str]
) -> None:
    assert promql_metric_names(expr) == names


def test_exposed_series_names_include_unobserved_labelled_families() -> None:
    text = (
        "# HELP a_total x\n# TYPE a_total counter\n"
        "# HELP h x\n# TYPE h histogram\n"
        "# HELP g x\n# TYPE g gauge\ng 1.0\n"
    )
    assert {"a_total", "h_bucket", "h_sum", "h_count", "g"} <= exposed_series_names(text)

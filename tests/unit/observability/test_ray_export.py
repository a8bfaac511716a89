"""RegistryExport: the gateway's registry copied onto Ray gauges, no Ray call per request."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.config import Metrics
from app.observability.ray_export import RegistryExport, gateway_export

ROOT = Path(__file__).resolve().parents[3]


class FakeGauge:
    def __init__(self, name: str, description: str = "",
                 tag_keys: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.name, self.tag_keys = name, tag_keys
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert set(tags or {}) == set(self.tag_keys)  # Ray refuses a missing or extra tag
        self.values[tuple(sorted((tags or {}).items()))] = value


def _fake_module() -> Any:
    made: dict[str, FakeGauge] = {}

    def gauge(name: str, **kwargs: Any) -> FakeGauge:
        made[name] = FakeGauge(name, **kwargs)
        return made[name]

    return type("FakeRay", (), {"Gauge": staticmethod(gauge), "made": made})


def test_counters_histograms_and_gauges_arrive_cumulative_under_the_prefix() -> None:
    registry = CollectorRegistry()
    preds = Counter("predictions", "p", ["status"], registry=registry)
    latency = Histogram("prediction_latency_ms", "l", buckets=[10, 100], registry=registry)
    depth = Gauge("prediction_queue_depth", "d", registry=registry)
    serve, plain = _fake_module(), _fake_module()
    export = RegistryExport(registry, metrics_module=serve, plain_module=plain)
    preds.labels("ok").inc(3)
    latency.observe(5)
    latency.observe(50)
    depth.set(4)
    export.copy()
    made = serve.made
    assert made["gateway_predictions_total"].values == {(("status", "ok"),): 3.0}
    buckets = made["gateway_prediction_latency_ms_bucket"].values
    assert buckets == {(("le", "10.0"),): 1.0, (("le", "100.0"),): 2.0, (("le", "+Inf"),): 2.0}
    assert made["gateway_prediction_latency_ms_count"].values == {(): 2.0}
    assert made["gateway_prediction_queue_depth"].values == {(): 4.0}
    assert not any(name.endswith("_created") for name in made)
    preds.labels("ok").inc()
    export.copy()
    assert made["gateway_predictions_total"].values == {(("status", "ok"),): 4.0}


def test_a_label_set_that_leaves_the_registry_is_set_to_zero() -> None:
    registry = CollectorRegistry()
    info = Gauge("model_info", "m", ["version"], registry=registry)
    serve = _fake_module()
    export = RegistryExport(registry, metrics_module=serve, plain_module=serve)
    info.labels("1").set(1)
    export.copy()
    info.clear()
    info.labels("2").set(1)
    export.copy()
    assert serve.made["gateway_model_info"].values == {
        (("version", "1"),): 0.0,
        (("version", "2"),): 1.0,
    }


def test_a_series_labelled_with_a_serve_tag_goes_through_rays_plain_metrics() -> None:
    registry = CollectorRegistry()
    Gauge("replicas", "r", ["deployment"], registry=registry).labels("predictor").set(2)
    serve, plain = _fake_module(), _fake_module()
    RegistryExport(registry, metrics_module=serve, plain_module=plain).copy()
    assert "gateway_replicas" not in serve.made
    assert plain.made["gateway_replicas"].values == {(("deployment", "predictor"),): 2.0}


def test_a_started_export_copies_on_its_own_until_stopped() -> None:
    registry = CollectorRegistry()
    count = Counter("predictions", "p", registry=registry)
    serve = _fake_module()
    export = RegistryExport(registry, metrics_module=serve, plain_module=serve)
    count.inc(7)
    export.start(0.01)
    deadline = time.monotonic() + 10
    while "gateway_predictions_total" not in serve.made and time.monotonic() < deadline:
        time.sleep(0.01)
    export.stop()
    assert serve.made["gateway_predictions_total"].values == {(): 7.0}


def test_no_export_where_the_node_exporter_or_metrics_are_off() -> None:
    registry = CollectorRegistry()
    assert gateway_export(Metrics(prometheus_exporter={"enabled": False}), registry) is None
    assert gateway_export(Metrics(enabled=False), registry) is None


def test_real_ray_takes_every_gateway_series_in_a_replica_without_starting_ray() -> None:
    pytest.importorskip("ray", reason="ray is not installed")
    # A subprocess, so this test process never imports Ray; nothing here calls ray.init.
    # The replica context is faked so that ray.serve.metrics adds (and guards) its tags.
    code = """
import types
import ray
import ray.serve.context
ray.serve.context._get_internal_replica_context = lambda: types.SimpleNamespace(
    deployment="gateway", replica_tag="r1", app_name="cnnlstm")
from prometheus_client import CollectorRegistry
from app.config import Metrics
from app.observability.metrics import GatewayMetrics
from app.observability.process_metrics import new_registry
from app.observability.ray_export import RegistryExport
m = GatewayMetrics(new_registry(), Metrics())
m.observe_prediction(latency_ms=3.0, model_version="1", batch_size=2, queue_wait_ms=1.0,
                     model_ms=0.5)
m.observe_cache("feature", True)
m.set_models([("cnn", "1", "abc")])
m.set_replicas("cnn_lstm_predictor", 2)
m.set_rollout("idle", 0.0)
n = RegistryExport(m.registry).copy()
print(n, "started" if ray.is_initialized() else "not-started")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    copied, state = out.stdout.strip().splitlines()[-1].split()
    assert (int(copied) > 50, state) == (True, "not-started")

"""ReplicaMetrics: a predictor replica's series recorded through ray.serve.metrics."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.config import Metrics
from app.observability.replica_metrics import (
    ReplicaMetrics,
    exported_names,
    predictor_replica_metrics,
)

ROOT = Path(__file__).resolve().parents[3]


class FakeMetric:
    def __init__(self, name: str, description: str = "", boundaries: Any = None,
                 tag_keys: tuple[str, ...] | None = None) -> None:  # fmt: skip
        self.name, self.boundaries, self.tag_keys = name, boundaries, tag_keys
        self.records: list[tuple[float, dict[str, str] | None]] = []

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.records.append((value, tags))

    inc = set = observe


class FakeRayMetrics:
    Counter = Gauge = Histogram = FakeMetric


class FakeNvml:
    """pynvml's calls the GPU sampler makes, for two GPUs at 40 and 75 %."""

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return type("Rates", (), {"gpu": (40, 75)[handle]})()


def test_batch_histograms_use_the_spec_buckets() -> None:
    m = ReplicaMetrics(Metrics(), metrics_module=FakeRayMetrics)
    assert m.batch_size.boundaries == [1, 5, 10, 20, 32]
    assert m.prediction_model_time_ms.boundaries


def test_observe_batch_records_one_forward() -> None:
    m = ReplicaMetrics(Metrics(), metrics_module=FakeRayMetrics)
    m.observe_batch(size=12, model_ms=1.5)
    assert m.batch_size.records == [(12, None)]
    assert m.prediction_model_time_ms.records == [(1.5, None)]


def test_a_gpu_replica_samples_its_gpus_into_gpu_utilization_until_closed() -> None:
    m = ReplicaMetrics(Metrics(), metrics_module=FakeRayMetrics)
    assert m.sample_gpus(0.01, nvml_loader=FakeNvml)
    deadline = time.monotonic() + 10
    while len(m.gpu_utilization.records) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    m.close()
    assert {(v, t["gpu"]) for v, t in m.gpu_utilization.records if t} == {(40.0, "0"), (75.0, "1")}
    seen = len(m.gpu_utilization.records)
    time.sleep(0.05)
    assert len(m.gpu_utilization.records) == seen  # the thread stopped


def test_no_nvml_means_no_sampler_and_no_reading() -> None:
    m = ReplicaMetrics(Metrics(), metrics_module=FakeRayMetrics)
    assert not m.sample_gpus(0.01, nvml_loader=lambda: None)
    m.close()
    assert m.gpu_utilization.records == []


def test_no_replica_metrics_where_the_node_exporter_or_metrics_are_off() -> None:
    off = Metrics.model_validate({"prometheus_exporter": {"enabled": False}})
    assert predictor_replica_metrics(off.model_dump(mode="json"), True) is None
    disabled = Metrics(enabled=False)
    assert predictor_replica_metrics(disabled.model_dump(mode="json"), False) is None


def test_exported_names_follow_rays_prefix() -> None:
    names = exported_names()
    assert "ray_batch_size_bucket" in names
    assert "ray_prediction_model_time_ms_count" in names
    assert "ray_gpu_utilization" in names


def test_module_import_does_not_load_ray() -> None:
    code = "import sys, app.observability.replica_metrics; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_real_ray_serve_metrics_accept_our_definitions_in_a_replica_without_starting_ray() -> None:
    pytest.importorskip("ray", reason="ray is not installed")
    # A subprocess, so this test process never imports Ray; nothing here calls ray.init.
    # Inside a replica, ray.serve.metrics adds its own tags and refuses ours of the same
    # names: the replica context is faked so that check runs here too.
    code = """
import types
import ray
import ray.serve.context
ray.serve.context._get_internal_replica_context = lambda: types.SimpleNamespace(
    deployment="cnn_lstm_predictor", replica_tag="r1", app_name="cnnlstm")
from app.config import Metrics
from app.observability.replica_metrics import predictor_replica_metrics
m = predictor_replica_metrics(Metrics().model_dump(mode="json"), False)
m.observe_batch(size=4, model_ms=1.0)
m.set_gpu_utilization("0", 5.0)
m.close()
print("started" if ray.is_initialized() else "not-started")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "not-started"

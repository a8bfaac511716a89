"""A predictor replica's own series through ``ray.serve.metrics``, exported by Ray on 9090.

A ``prometheus_client`` registry is per process, and Serve runs many processes; Ray's
metrics agent on each node collects what every replica records with
``ray.serve.metrics`` and serves it on the node's metrics export port (spec 6.1: 9090),
adding ``deployment``, ``replica`` and ``application`` labels. Ray prefixes each exported
name with ``ray_``: ``batch_size`` recorded here is scraped as
``ray_batch_size_bucket{deployment="cnn_lstm_predictor", replica=...}``.

What a predictor replica records (:func:`predictor_replica_metrics`, handed to
``model.deployment`` as a factory, since ``model/`` never imports ``app/``): the batches it
actually ran, one observation per forward (``batch_size``, ``prediction_model_time_ms``),
and on a GPU replica the NVML utilisation of its GPUs (``gpu_utilization``, every
``collection_interval_s``). One forward carries many predictions, so recording here costs
little; the gateway's per-prediction series reach Ray by copy instead
(:mod:`app.observability.ray_export`).

Ray is imported inside the constructor: unit tests and the CLI import this module without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from app.config import Metrics
from app.observability.gpu import GpuSampler
from app.observability.metric_schema import buckets_for

_HISTOGRAMS = ("batch_size", "prediction_model_time_ms")
_GAUGES = ("gpu_utilization",)


def exported_names() -> set[str]:
    """The Prometheus series names Ray's exporter shows for a :class:`ReplicaMetrics`."""
    names = {f"ray_{h}{s}" for h in _HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
    return names | {f"ray_{g}" for g in _GAUGES}


class ReplicaMetrics:
    """Ray Serve metrics for one predictor replica; build it in the replica's ``__init__``."""

    def __init__(self, config: Metrics, *, metrics_module: Any = None) -> None:
        m = metrics_module or importlib.import_module("ray.serve.metrics")
        self.batch_size = m.Histogram(
            "batch_size",
            description="Rows per forward pass this replica ran",
            boundaries=config.buckets("batch_size"),
        )
        self.prediction_model_time_ms = m.Histogram(
            "prediction_model_time_ms",
            description="Forward-pass time of a batch, in milliseconds",
            boundaries=buckets_for(config, "prediction_model_time_ms"),
        )
        self.gpu_utilization = m.Gauge(
            "gpu_utilization", description="GPU utilization percentage", tag_keys=("gpu",)
        )
        self._gpu_sampler: GpuSampler | None = None

    def observe_batch(self, *, size: int, model_ms: float) -> None:
        """One forward pass of ``size`` rows."""
        self.batch_size.observe(size)
        self.prediction_model_time_ms.observe(model_ms)

    def set_gpu_utilization(self, gpu: str, pct: float) -> None:
        """Sink for :class:`app.observability.gpu.GpuSampler`."""
        self.gpu_utilization.set(pct, tags={"gpu": gpu})

    def sample_gpus(self, interval_s: float, **sampler_kwargs: Any) -> bool:
        """Read every visible GPU's utilisation into ``gpu_utilization`` every
        ``interval_s`` on a thread; False (no thread) where NVML or a GPU is missing."""
        if self._gpu_sampler is None:
            self._gpu_sampler = GpuSampler(
                self.set_gpu_utilization, interval_s=interval_s, **sampler_kwargs
            )
        return self._gpu_sampler.start()

    def close(self) -> None:
        """Stop the GPU sampler, if one runs."""
        if self._gpu_sampler is not None:
            self._gpu_sampler.stop()


def predictor_replica_metrics(
    config_json: dict[str, Any], sample_gpu: bool
) -> ReplicaMetrics | None:
    """A predictor replica's metrics, built in its ``__init__``; None where the node
    exporter is off. ``config_json``: the ``metrics`` section."""
    config = Metrics.model_validate(config_json)
    if not (config.enabled and config.prometheus_exporter.enabled):
        return None
    metrics = ReplicaMetrics(config)
    if sample_gpu:
        metrics.sample_gpus(config.collection_interval_s)
    return metrics

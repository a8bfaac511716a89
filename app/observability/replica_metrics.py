"""Per-replica metrics through ``ray.serve.metrics``, exported by Ray on 9090.

A ``prometheus_client`` registry is per process, and Serve runs many processes; Ray's
metrics agent on each node collects what every replica records with
``ray.serve.metrics`` and serves it on the node's metrics export port (spec 6.1: 9090),
adding ``deployment``, ``replica`` and ``application`` labels. Ray prefixes each exported
name with ``ray_`` (counters also get ``_total``): ``batch_size`` recorded here is
scraped as ``ray_batch_size_bucket{deployment=..., replica=...}``.

Two users, each built inside its replica (the Serve tags come from the replica's context)
and only where the node exporter is on (``metrics.prometheus_exporter.enabled``):

- the gateway deployment (``prefix="gateway_"``, :func:`gateway_mirror`) as the ``mirror``
  of :class:`app.observability.metrics.GatewayMetrics`: the same observations the gateway's
  own ``/metrics`` shows, so that with several gateway replicas Prometheus can read all of
  them from the node exporters (``deploy/prometheus/prometheus-cluster.yml`` strips the
  ``ray_gateway_`` prefix so alerts and dashboards use one set of names);
- the predictor deployment (``prefix=""``, :func:`predictor_replica_metrics`, handed to
  ``model.deployment`` as a factory: ``model/`` never imports ``app/``): the batches it
  actually ran (``observe_batch``, one observation per forward) and, on a GPU replica, the
  NVML utilisation of its GPUs (``gpu_utilization``, every ``collection_interval_s``).

Ray is imported inside the constructor: unit tests and the CLI import this module without it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from app.config import Metrics
from app.observability.gpu import GpuSampler
from app.observability.metric_schema import CACHES, PROFILES, buckets_for, canonical_status

PREDICTOR_PREFIX = ""
GATEWAY_MIRROR_PREFIX = "gateway_"

_HISTOGRAMS = (
    "prediction_latency_ms",
    "batch_size",
    "prediction_queue_wait_ms",
    "prediction_model_time_ms",
)
_COUNTERS = ("predictions", "cache_requests")
_GAUGES = (
    "prediction_queue_depth",
    "gpu_utilization",
    "model_info",
    "autoscaling_profile",
    "rollout_state",
    "rollout_green_weight_pct",
    "replicas",
)


def exported_names(prefix: str = PREDICTOR_PREFIX) -> set[str]:
    """The Prometheus series names Ray's exporter shows for a :class:`ReplicaMetrics`."""
    names = {f"ray_{prefix}{h}{s}" for h in _HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
    names |= {f"ray_{prefix}{c}_total" for c in _COUNTERS}
    names |= {f"ray_{prefix}{g}" for g in _GAUGES}
    return names


class ReplicaMetrics:
    """Ray Serve metrics for one replica; build it in the deployment's ``__init__``."""

    def __init__(
        self,
        config: Metrics,
        *,
        prefix: str = PREDICTOR_PREFIX,
        metrics_module: Any = None,
    ) -> None:
        m = metrics_module or importlib.import_module("ray.serve.metrics")
        # Ray's own metrics, without Serve's replica tags: for a series whose label is
        # itself "deployment", a tag ray.serve.metrics reserves inside a replica.
        plain = metrics_module or importlib.import_module("ray.util.metrics")
        p = prefix
        self.prediction_latency_ms = m.Histogram(
            f"{p}prediction_latency_ms",
            description="Prediction latency in milliseconds",
            boundaries=config.buckets("prediction_latency_ms"),
            tag_keys=("model_version",),
        )
        self.batch_size = m.Histogram(
            f"{p}batch_size",
            description="Batch size distribution",
            boundaries=config.buckets("batch_size"),
        )
        self.prediction_queue_wait_ms = m.Histogram(
            f"{p}prediction_queue_wait_ms",
            description="Time waiting for a batch, in milliseconds",
            boundaries=buckets_for(config, "prediction_queue_wait_ms"),
        )
        self.prediction_model_time_ms = m.Histogram(
            f"{p}prediction_model_time_ms",
            description="Forward-pass time of a batch, in milliseconds",
            boundaries=buckets_for(config, "prediction_model_time_ms"),
        )
        self.predictions = m.Counter(
            f"{p}predictions", description="Predictions by outcome", tag_keys=("status",)
        )
        self.cache_requests = m.Counter(
            f"{p}cache_requests",
            description="Cache look-ups by cache and result",
            tag_keys=("cache", "result"),
        )
        self.prediction_queue_depth = m.Gauge(
            f"{p}prediction_queue_depth", description="Predictions waiting for a batch slot"
        )
        self.gpu_utilization = m.Gauge(
            f"{p}gpu_utilization", description="GPU utilization percentage", tag_keys=("gpu",)
        )
        # Control-plane state, set only through the gateway mirror. Ray gauges cannot drop
        # a label set, so a value that stops being current is set to 0, never removed.
        self.model_info = m.Gauge(
            f"{p}model_info",
            description="1 for each model version in service",
            tag_keys=("name", "version", "sha256"),
        )
        self.autoscaling_profile = m.Gauge(
            f"{p}autoscaling_profile",
            description="1 for the active autoscaling profile",
            tag_keys=("profile",),
        )
        self.rollout_state = m.Gauge(
            f"{p}rollout_state",
            description="1 for the current blue/green rollout state",
            tag_keys=("state",),
        )
        self.rollout_green_weight_pct = m.Gauge(
            f"{p}rollout_green_weight_pct", description="Share of traffic sent to green, percent"
        )
        self.replicas = plain.Gauge(
            f"{p}replicas",
            description="Running replicas per deployment",
            tag_keys=("deployment",),
        )
        self._models: set[tuple[str, str, str]] = set()
        self._rollout_states: set[str] = set()
        self._gpu_sampler: GpuSampler | None = None

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

    def observe_prediction(
        self,
        *,
        latency_ms: float,
        model_version: str,
        batch_size: int | None = None,
        queue_wait_ms: float | None = None,
        model_ms: float | None = None,
        status: str = "ok",
    ) -> None:
        """One request, with the gateway's meaning: latency only when it succeeded, and
        ``batch_size`` request-weighted (the size of the batch the request rode in)."""
        status = canonical_status(status)
        self.predictions.inc(1, tags={"status": status})
        if status != "ok":
            return
        self.prediction_latency_ms.observe(latency_ms, tags={"model_version": model_version})
        if batch_size is not None:
            self.batch_size.observe(batch_size)
        if queue_wait_ms is not None:
            self.prediction_queue_wait_ms.observe(queue_wait_ms)
        if model_ms is not None:
            self.prediction_model_time_ms.observe(model_ms)

    def observe_batch(self, *, size: int, model_ms: float) -> None:
        """One forward pass of ``size`` rows (the predictor's per-batch view)."""
        self.batch_size.observe(size)
        self.prediction_model_time_ms.observe(model_ms)

    def observe_cache(self, cache: str, hit: bool, n: int = 1) -> None:
        cache = cache if cache in CACHES else "other"
        self.cache_requests.inc(n, tags={"cache": cache, "result": "hit" if hit else "miss"})

    def set_queue_depth(self, n: int) -> None:
        self.prediction_queue_depth.set(n)

    def set_gpu_utilization(self, gpu: str, pct: float) -> None:
        """Sink for :class:`app.observability.gpu.GpuSampler` on a GPU replica."""
        self.gpu_utilization.set(pct, tags={"gpu": gpu})

    def set_models(self, models: Iterable[tuple[str, str, str]]) -> None:
        current = set(models)
        for name, version, sha256 in self._models | current:
            value = 1 if (name, version, sha256) in current else 0
            self.model_info.set(value, tags={"name": name, "version": version, "sha256": sha256})
        self._models |= current

    def set_profile(self, profile: str) -> None:
        for p in PROFILES:
            self.autoscaling_profile.set(1 if p == profile else 0, tags={"profile": p})

    def set_rollout(self, state: str, green_weight_pct: float) -> None:
        self._rollout_states.add(state)
        for s in self._rollout_states:
            self.rollout_state.set(1 if s == state else 0, tags={"state": s})
        self.rollout_green_weight_pct.set(green_weight_pct)

    def set_replicas(self, deployment: str, n: int) -> None:
        self.replicas.set(n, tags={"deployment": deployment})


def gateway_mirror(config: Metrics) -> ReplicaMetrics | None:
    """The gateway's mirror into Ray's node exporter; None where the exporter is off."""
    if not (config.enabled and config.prometheus_exporter.enabled):
        return None
    return ReplicaMetrics(config, prefix=GATEWAY_MIRROR_PREFIX)


def predictor_replica_metrics(
    config_json: dict[str, Any], sample_gpu: bool
) -> ReplicaMetrics | None:
    """A predictor replica's own series (see the module docstring), built in its
    ``__init__``; None where the exporter is off. ``config_json``: the ``metrics`` section."""
    config = Metrics.model_validate(config_json)
    if not (config.enabled and config.prometheus_exporter.enabled):
        return None
    metrics = ReplicaMetrics(config, prefix=PREDICTOR_PREFIX)
    if sample_gpu:
        metrics.sample_gpus(config.collection_interval_s)
    return metrics

"""The gateway's Prometheus metrics: one object that owns every series ``/metrics`` shows.

The names below are a contract: alert rules (``deploy/prometheus/alerts.yml``), the Grafana
dashboard and ``/stats`` read them. The two spec 6.1 histograms take their buckets from the
configuration so that changing the spec's buckets changes them here too.

A ``prometheus_client`` registry lives in one process. With one gateway replica that is the
whole truth; with several, each replica's registry is a different partial truth, so a Serve
gateway also copies its registry onto Ray's per-node exporter (see
:mod:`app.observability.ray_export` and ``deploy/METRICS.md``).
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.config import Metrics
from app.observability.hit_rate import hit_rate
from app.observability.metric_schema import (
    CACHES,
    PREDICTION_STATUSES,
    SLO_BAD_STATUSES,
    TRANSPORTS,
    buckets_for,
    canonical_status,
)
from app.observability.predictor_metrics import PredictorInfo
from app.observability.service_state_metrics import ServiceStateMetrics
from app.observability.shadow_metrics import ShadowMetrics
from app.observability.window import SampleWindow

__all__ = ["GatewayMetrics"]


class GatewayMetrics(ServiceStateMetrics):
    """Every series the gateway exports, plus in-process figures for ``/stats``: the
    prediction series here, the service-state gauges in :class:`ServiceStateMetrics`."""

    def __init__(self, registry: CollectorRegistry, config: Metrics) -> None:
        super().__init__(registry)
        r = registry
        self.prediction_latency_ms = Histogram(
            "prediction_latency_ms",
            "Model prediction latency in milliseconds, gateway receipt to response",
            ["model_version"],
            buckets=config.buckets("prediction_latency_ms"),
            registry=r,
        )
        self.batch_size = Histogram(
            "batch_size",
            "Batch size distribution (per prediction: the size of the batch it rode in)",
            buckets=config.buckets("batch_size"),
            registry=r,
        )
        self.prediction_queue_wait_ms = Histogram(
            "prediction_queue_wait_ms",
            "Time a prediction waited for its batch to be dispatched, in milliseconds",
            buckets=buckets_for(config, "prediction_queue_wait_ms"),
            registry=r,
        )
        self.prediction_model_time_ms = Histogram(
            "prediction_model_time_ms",
            "Forward-pass time of the batch a prediction rode in, in milliseconds",
            buckets=buckets_for(config, "prediction_model_time_ms"),
            registry=r,
        )
        self.prediction_queue_depth = Gauge(
            "prediction_queue_depth", "Predictions waiting for a batch slot", registry=r
        )
        self.cache_requests = Counter(
            "cache_requests", "Cache look-ups by cache and result", ["cache", "result"], registry=r
        )
        self.predictions = Counter(
            "predictions", "Prediction requests by outcome", ["status"], registry=r
        )
        self.audit_records_dropped = Counter(
            "audit_records_dropped",
            "Prediction audit records lost: writer queue full or write failed (app.audit)",
            registry=r,
        )
        self.predictor_calls = Counter(
            "predictor_calls",
            "Gateway calls to the predictor by way: socket (a replica on this node, "
            "app.gateway.predictor_socket) or handle (Serve's deployment handle)",
            ["transport"],
            registry=r,
        )
        self.predictor = PredictorInfo(r)  # from the predictor's status reports
        self.shadow = ShadowMetrics(r, config)  # green scored beside blue (app.gateway.shadow)
        # Pre-create every fixed label value so rate() and absent() see zeros, not gaps.
        # The children are kept: a labels() lookup per row was a visible share of the hot
        # path's CPU (a lock and a tuple key each time).
        self._status_children = {s: self.predictions.labels(s) for s in PREDICTION_STATUSES}
        self._cache_children = {
            (cache, hit): self.cache_requests.labels(cache, "hit" if hit else "miss")
            for cache in (*CACHES, "other")
            for hit in (True, False)
        }
        self._latency_children: dict[str, Any] = {}
        self._call_children = {t: self.predictor_calls.labels(t) for t in TRANSPORTS}

        self._latency = SampleWindow(config.latency_window)
        self._queue_wait = SampleWindow(config.latency_window)
        self._model_time = SampleWindow(config.latency_window)
        self._by_status: Tally[str] = Tally()
        self._batch_sizes: Tally[int] = Tally()
        self._cache: Tally[tuple[str, bool]] = Tally()
        self._queue_depth = 0

    # --- hot path ---------------------------------------------------------------------

    def observe_prediction(
        self,
        *,
        latency_ms: float,
        model_version: str,
        batch_size: int | None,
        queue_wait_ms: float | None,
        model_ms: float | None,
        status: str = "ok",
    ) -> None:
        """Count one prediction; latency and batch figures only when it succeeded.

        A failure's "latency" (often 0, or a 30 s timeout) says nothing about how fast
        the model answers; failures are what ``predictions_total{status}`` counts and what
        the availability alerts burn on.
        """
        status = canonical_status(status)
        self._status_children[status].inc()
        with self._lock:
            self._by_status[status] += 1
            if status == "ok" and batch_size is not None:
                self._batch_sizes[batch_size] += 1
        if status != "ok":
            return
        child = self._latency_children.get(model_version)
        if child is None:
            child = self.prediction_latency_ms.labels(model_version)
            if len(self._latency_children) < 64:  # versions in service: a handful
                self._latency_children[model_version] = child
        child.observe(latency_ms)
        self._latency.add(latency_ms)
        if batch_size is not None:
            self.batch_size.observe(batch_size)
        if queue_wait_ms is not None:
            self.prediction_queue_wait_ms.observe(queue_wait_ms)
            self._queue_wait.add(queue_wait_ms)
        if model_ms is not None:
            self.prediction_model_time_ms.observe(model_ms)
            self._model_time.add(model_ms)

    def observe_failure(self, status: str) -> None:
        """One failed request, under its metric status (no latency: see above)."""
        self.observe_prediction(
            latency_ms=0.0,
            model_version="-",
            batch_size=None,
            queue_wait_ms=None,
            model_ms=None,
            status=status,
        )

    def observe_predictor_call(self, transport: str) -> None:
        """One batch sent to the predictor, ``transport`` one of :data:`TRANSPORTS`."""
        self._call_children[transport].inc()

    def observe_cache(self, cache: str, hit: bool, n: int = 1) -> None:
        """``n`` lookups of ``cache`` that hit (or missed)."""
        cache = cache if cache in CACHES else "other"
        self._cache_children[(cache, hit)].inc(n)
        with self._lock:
            self._cache[(cache, hit)] += n

    def set_queue_depth(self, n: int) -> None:
        self.prediction_queue_depth.set(n)
        self._queue_depth = n

    # --- /stats -------------------------------------------------------------------------

    def snapshot(self, recent: int | None = None) -> dict[str, Any]:
        """In-process figures since this process started (this replica only); the
        latency, queue-wait and model-time windows of their ``recent`` newest rows only
        when given."""
        with self._lock:
            by_status = {s: self._by_status.get(s, 0) for s in PREDICTION_STATUSES}
            batches = dict(sorted(self._batch_sizes.items()))
            cache = dict(self._cache)
            state = self._state_figures()
        total = sum(by_status.values())
        bad = sum(by_status[s] for s in SLO_BAD_STATUSES)
        n_batched = sum(batches.values())
        return {
            "requests": {
                "total": total,
                "by_status": by_status,
                "error_rate": round(bad / total, 6) if total else None,
            },
            "latency_ms": self._latency.summary(recent),
            "queue_wait_ms": self._queue_wait.summary(recent),
            "model_time_ms": self._model_time.summary(recent),
            "batch_size": {
                "count": n_batched,
                "mean": round(sum(k * v for k, v in batches.items()) / n_batched, 3)
                if n_batched
                else None,
                "distribution": {str(k): v for k, v in batches.items()},
            },
            "cache": {c: hit_rate(cache, c) for c in sorted({*CACHES, *(k for k, _ in cache)})},
            "queue_depth": self._queue_depth,
            **state,
        }

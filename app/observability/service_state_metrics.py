"""The gateway's service-state gauges: what the control plane sets, rarely (the models in
service, the autoscaling profile, the rollout, replica counts, GPU use), and their part of
``/stats``. :class:`app.observability.metrics.GatewayMetrics` adds the prediction series
(the hot path) on top; the series names are the same contract (``deploy/METRICS.md``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from app.observability.metric_schema import PROFILES


class ServiceStateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        r = registry
        self.gpu_utilization = Gauge(
            "gpu_utilization", "GPU utilization percentage", ["gpu"], registry=r
        )
        self.model_info = Gauge(
            "model_info",
            "1 for each model version in service",
            ["name", "version", "sha256"],
            registry=r,
        )
        self.autoscaling_profile = Gauge(
            "autoscaling_profile", "1 for the active autoscaling profile", ["profile"], registry=r
        )
        self.rollout_state = Gauge(
            "rollout_state", "1 for the current blue/green rollout state", ["state"], registry=r
        )
        self.rollout_green_weight_pct = Gauge(
            "rollout_green_weight_pct", "Share of traffic sent to green, percent", registry=r
        )
        self.replicas = Gauge(
            "replicas", "Running replicas per deployment", ["deployment"], registry=r
        )
        self._models: list[dict[str, str]] = []
        self._profile: str | None = None
        self._rollout: dict[str, Any] | None = None
        self._replicas: dict[str, int] = {}
        self._rollout_states: set[str] = set()
        self._gpu: dict[str, float] = {}

    def set_model(self, name: str, version: str, sha256: str) -> None:
        """Declare the one model in service (see :meth:`set_models` during a rollout)."""
        self.set_models([(name, version, sha256)])

    def set_models(self, models: Iterable[tuple[str, str, str]]) -> None:
        """Declare every model in service, e.g. blue and green while traffic shifts."""
        models = list(models)
        self.model_info.clear()
        for name, version, sha256 in models:
            self.model_info.labels(name, version, sha256).set(1)
        with self._lock:
            self._models = [{"name": n, "version": v, "sha256": s} for n, v, s in models]

    def set_profile(self, profile: str) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown autoscaling profile {profile!r}; expected {PROFILES}")
        for p in PROFILES:
            self.autoscaling_profile.labels(p).set(1 if p == profile else 0)
        self._profile = profile

    def set_rollout(self, state: str, green_weight_pct: float) -> None:
        # Keep every state seen so far at 0 instead of deleting it: a panel or alert on
        # a state then reads 0, not "no data", after the rollout moves on.
        with self._lock:
            self._rollout_states.add(state)
            states = set(self._rollout_states)
            self._rollout = {"state": state, "green_weight_pct": green_weight_pct}
        for s in states:
            self.rollout_state.labels(s).set(1 if s == state else 0)
        self.rollout_green_weight_pct.set(green_weight_pct)

    def set_replicas(self, deployment: str, n: int) -> None:
        self.replicas.labels(deployment).set(n)
        with self._lock:
            self._replicas[deployment] = n

    def set_gpu_utilization(self, gpu: str, pct: float) -> None:
        """Sink for :class:`app.observability.gpu.GpuSampler`."""
        self.gpu_utilization.labels(gpu).set(pct)
        with self._lock:
            self._gpu[gpu] = pct

    def _state_figures(self) -> dict[str, Any]:
        """This part of ``/stats``; the caller holds ``self._lock``."""
        return {
            "models": list(self._models),
            "autoscaling_profile": self._profile,
            "rollout": dict(self._rollout) if self._rollout else None,
            "replicas": dict(self._replicas),
            "gpu_utilization_pct": dict(self._gpu),
        }

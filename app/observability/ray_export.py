"""The gateway's ``/metrics`` registry, copied onto Ray's node exporter every few seconds.

With several gateway replicas, a scrape of ``/metrics`` through one address reaches one
replica of Serve's choosing (``deploy/METRICS.md``). So each gateway replica also hands its
registry to Ray's metrics agent, which serves it on the node's export port (spec 6.1: 9090)
as ``ray_gateway_<sample name>`` with the replica's ``deployment``, ``replica`` and
``application`` labels; ``deploy/prometheus/prometheus-cluster.yml`` strips the prefix, so
alerts and the dashboard read the same names in both set-ups.

Copied, not recorded per request: one Ray record costs ~3-4 us (a C++ call carrying the
replica's tags) and a prediction touches six series, which cost the gateway ~45 us of CPU a
request at 1200 req/s (BENCHMARKS.md, session 31). A copy costs one record per sample every
``interval_s``, whatever the traffic.

Every sample becomes a Ray gauge holding the sample's value: counters and histogram buckets
stay cumulative, so ``rate()``, ``increase()`` and ``histogram_quantile()`` read them as they
read ``/metrics``. Ray cannot drop a label set, so one that leaves the registry (a model
version no longer in service) is set to 0.

Ray is imported inside the constructor: unit tests and the CLI import this module without it.
"""

from __future__ import annotations

import importlib
import math
import threading
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from app.config import Metrics

log = structlog.get_logger("app.observability.ray_export")

GATEWAY_PREFIX = "gateway_"
# Tags ray.serve.metrics adds itself inside a replica and refuses from us; a sample with one
# (``replicas{deployment=...}``) goes through Ray's plain metrics, without the replica's tags.
SERVE_TAGS = frozenset({"deployment", "replica", "application", "route"})

Labels = tuple[tuple[str, str], ...]


class RegistryExport:
    """Copies ``registry`` into Ray gauges named ``prefix + sample name``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        prefix: str = GATEWAY_PREFIX,
        metrics_module: Any = None,
        plain_module: Any = None,
    ) -> None:
        self._registry = registry
        self._prefix = prefix
        self._serve = metrics_module or importlib.import_module("ray.serve.metrics")
        self._plain = plain_module or metrics_module or importlib.import_module("ray.util.metrics")
        self._gauges: dict[str, Any] = {}
        self._last: dict[str, set[Labels]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def copy(self) -> int:
        """One copy of every sample; how many were set."""
        now: dict[str, set[Labels]] = {}
        for family in self._registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created") or math.isnan(sample.value):
                    continue
                labels: Labels = tuple(sorted(sample.labels.items()))
                self._set(sample.name, labels, sample.value, family.documentation)
                now.setdefault(sample.name, set()).add(labels)
        for name, gone in self._last.items():
            for labels in gone - now.get(name, set()):
                self._set(name, labels, 0.0, "")
        self._last = now
        return sum(len(v) for v in now.values())

    def _set(self, name: str, labels: Labels, value: float, doc: str) -> None:
        gauge = self._gauges.get(name)
        if gauge is None:
            keys = tuple(k for k, _ in labels)
            module = self._plain if SERVE_TAGS.intersection(keys) else self._serve
            gauge = module.Gauge(self._prefix + name, description=doc or name, tag_keys=keys)
            self._gauges[name] = gauge
        gauge.set(value, tags=dict(labels) if labels else None)

    def start(self, interval_s: float) -> None:
        """Copy every ``interval_s`` on a daemon thread (the registry has its own locks)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="ray-metrics-export", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.copy()
            except Exception as exc:  # a metric Ray refuses: report, keep serving
                log.warning("ray_metrics_export_failed", error=f"{type(exc).__name__}: {exc}")


def gateway_export(config: Metrics, registry: CollectorRegistry) -> RegistryExport | None:
    """A started copy of a gateway replica's registry; None where the exporter is off."""
    if not (config.enabled and config.prometheus_exporter.enabled):
        return None
    export = RegistryExport(registry)
    export.start(config.collection_interval_s)
    return export

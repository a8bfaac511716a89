"""Spec sections 6, 11.2 and 12: metrics, logging, monitoring integration, and targets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from app.config.base import Section

# --- 6. Metrics and logging --------------------------------------------------------------


class PrometheusExporter(Section):
    enabled: bool = True
    port: int = Field(9090, ge=1, le=65535)


class CustomMetric(Section):
    name: str
    type: Literal["histogram", "gauge", "counter"]
    description: str
    buckets: list[float] | None = None


def _custom_metrics() -> list[CustomMetric]:
    return [
        CustomMetric(
            name="prediction_latency_ms",
            type="histogram",
            description="Model prediction latency in milliseconds",
            buckets=[10, 25, 50, 75, 100, 250, 500, 1000],
        ),
        CustomMetric(
            name="batch_size",
            type="histogram",
            description="Batch size distribution",
            buckets=[1, 5, 10, 20, 32],
        ),
        CustomMetric(
            name="gpu_utilization", type="gauge", description="GPU utilization percentage"
        ),
    ]


class Metrics(Section):
    enabled: bool = True
    collection_interval_s: float = Field(10, gt=0)
    prometheus_exporter: PrometheusExporter = PrometheusExporter()
    custom_metrics: list[CustomMetric] = Field(default_factory=_custom_metrics)
    # Not in the spec: how many recent latencies /stats keeps for its percentiles.
    latency_window: int = Field(4096, ge=16, le=1_000_000)

    def buckets(self, name: str) -> list[float]:
        for metric in self.custom_metrics:
            if metric.name == name and metric.buckets:
                return list(metric.buckets)
        raise KeyError(f"no histogram buckets configured for {name}")


class Logging(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["json", "console"] = "json"
    enable_access_logs: bool = True
    # Not in the spec: refusals at the edge (429 overloaded, 503 stopping) with an access
    # line of their own per second; the rest are counted in one line per second
    # (app/observability/refusal_lines.py). A flood's log then costs no flood of CPU.
    refusal_lines_per_s: int = Field(20, ge=0, le=1_000_000)
    max_log_size_mb: float = Field(100, gt=0)
    retention_days: float = Field(7, gt=0)
    directory: Path | None = None  # not in the spec: where log files go (None = stderr only)
    # Not in the spec: rotated files kept per component even within retention_days, so a
    # burst of logging cannot fill the disk (10 x 100 MB by default).
    max_files: int = Field(10, ge=1, le=1000)
    # Not in the spec: with a log directory, also write to stderr (which Ray forwards)?
    stderr_with_file: bool = False


# --- 11.2 Monitoring integration ---------------------------------------------------------


class PrometheusIntegration(Section):
    enabled: bool = True
    endpoint: str = "/metrics"


class GrafanaIntegration(Section):
    enabled: bool = True
    dashboard_url: str = "https://grafana.trading-platform.com"


class Alerting(Section):
    enabled: bool = True
    webhook_url: str = "https://alerts.trading-platform.com"


class MonitoringIntegration(Section):
    prometheus: PrometheusIntegration = PrometheusIntegration()
    grafana: GrafanaIntegration = GrafanaIntegration()
    alerting: Alerting = Alerting()


# --- 12. Performance and resource targets ------------------------------------------------


class LatencyTargets(Section):
    p50_ms: float = 50
    p95_ms: float = 80
    p99_ms: float = 100
    max_ms: float = 200


class ThroughputTargets(Section):
    min_rps: float = 50
    target_rps: float = 200
    max_rps: float = 500


class AvailabilityTargets(Section):
    target_pct: float = 99.9
    min_pct: float = 99.5


class PerformanceTargets(Section):
    latency: LatencyTargets = LatencyTargets()
    throughput: ThroughputTargets = ThroughputTargets()
    availability: AvailabilityTargets = AvailabilityTargets()


class UtilizationTarget(Section):
    target_pct: float
    max_pct: float


class ResourceTargets(Section):
    cpu_utilization: UtilizationTarget = UtilizationTarget(target_pct=70, max_pct=85)
    memory_utilization: UtilizationTarget = UtilizationTarget(target_pct=75, max_pct=90)
    gpu_utilization: UtilizationTarget = UtilizationTarget(target_pct=60, max_pct=80)

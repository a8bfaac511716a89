"""The root of the configuration file, and how a file is read and validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from app.config.audit import Audit
from app.config.autoscaling import (
    AutoscalingProfile,
    MarketCalendar,
    MarketHoursProfile,
    OffHoursProfile,
)
from app.config.base import Section
from app.config.deployment import DeploymentInfo, Resources, ResourceTier, default_resource_tiers
from app.config.monitoring import (
    Logging,
    Metrics,
    MonitoringIntegration,
    PerformanceTargets,
    ResourceTargets,
)
from app.config.performance import Batching, Caching, GpuOptimization
from app.config.probes import Probe
from app.config.security import NetworkSecurity, Security
from app.config.serving import Serving
from app.config.strategies import Backup, BlueGreen, ModelRegistryConfig, RollingUpdate


class ServiceConfig(Section):
    """Root of the YAML file. Section names are the spec's, one to one."""

    deployment: DeploymentInfo = DeploymentInfo()
    resources: Resources = Resources()
    resource_tiers: dict[str, ResourceTier] = Field(default_factory=default_resource_tiers)
    autoscaling: AutoscalingProfile = AutoscalingProfile()
    market_hours_autoscaling: MarketHoursProfile = Field(default_factory=MarketHoursProfile)
    off_hours_autoscaling: OffHoursProfile = Field(default_factory=OffHoursProfile)
    market_calendar: MarketCalendar = MarketCalendar()
    batching: Batching = Batching()
    caching: Caching = Caching()
    gpu_optimization: GpuOptimization = GpuOptimization()
    liveness_probe: Probe = Probe(
        path="/healthz", initial_delay_s=60, period_s=30, timeout_s=10, failure_threshold=3
    )
    readiness_probe: Probe = Probe(
        path="/ready", initial_delay_s=30, period_s=10, timeout_s=5, failure_threshold=3
    )
    metrics: Metrics = Metrics()
    logging: Logging = Logging()
    security: Security = Security()
    network_security: NetworkSecurity = NetworkSecurity()
    rolling_update: RollingUpdate = RollingUpdate()
    blue_green_deployment: BlueGreen = BlueGreen()
    model_backup: Backup = Backup(
        schedule="0 2 * * *", retention_days=30, storage_path=Path("/backups/models")
    )
    config_backup: Backup = Backup(
        schedule="0 3 * * *", retention_days=90, storage_path=Path("/backups/configs")
    )
    model_registry: ModelRegistryConfig = ModelRegistryConfig()
    monitoring_integration: MonitoringIntegration = MonitoringIntegration()
    performance_targets: PerformanceTargets = PerformanceTargets()
    resource_targets: ResourceTargets = ResourceTargets()
    serving: Serving = Serving()
    audit: Audit = Audit()  # not in the spec: the prediction audit trail (issue 14)

    # Pydantic runs "after" validators in the order they are defined here.

    @model_validator(mode="after")
    def _proxy_port_outside_direct_range(self) -> ServiceConfig:
        # With direct ingress the gateway replicas take ports from http_port upwards, so
        # Serve's fallback proxy must listen somewhere else.
        s = self.serving
        if s.ingress == "direct" and s.http_port <= s.proxy_port < s.http_port + s.direct_port_span:
            raise ValueError("serving.proxy_port must lie outside the direct-ingress port range")
        return self

    @model_validator(mode="after")
    def _tier_exists(self) -> ServiceConfig:
        tier = self.serving.resource_tier
        if tier is not None and tier not in self.resource_tiers:
            raise ValueError(f"serving.resource_tier {tier!r} is not in resource_tiers")
        return self


class ConfigError(ValueError):
    """The configuration file is missing, not YAML, or does not match the schema."""


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any] | None, *, source: str = "<config>") -> ServiceConfig:
    try:
        return ServiceConfig.model_validate(data or {})
    except ValidationError as exc:
        message = f"invalid configuration in {source}:\n" + _format_validation_error(exc)
        raise ConfigError(message) from None


def load_config_file(path: Path | str | None) -> ServiceConfig:
    """Read and strictly validate a YAML file; ``None`` gives the spec's defaults."""
    if path is None:
        return ServiceConfig()
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {p}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {p} is not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"configuration file {p} must hold a mapping at the top level")
    return parse_config(raw, source=str(p))

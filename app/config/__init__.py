"""The service configuration file, laid out like the deployment spec's own sections.

Every section and key of the Ray Serve deployment spec has a field here with the spec's
value as its default, so an empty file means "the spec". Unknown keys are errors
(``extra="forbid"``): Ray Serve's own schemas drop unknown keys silently, so a typo such as
``target_num_ongoing_request_per_replica`` would otherwise vanish without a trace.

Where each part lives:

- :mod:`app.config.base`: the strict ``Section`` base class and shared type aliases;
- :mod:`app.config.deployment`: spec 2, deployment info, resources and resource tiers;
- :mod:`app.config.resources`: the per-replica resources in force (spec 2.1 or a tier);
- :mod:`app.config.autoscaling`: spec 3, autoscaling profiles and the market calendar;
- :mod:`app.config.performance`: spec 4, batching, caching and GPU optimization;
- :mod:`app.config.probes`: spec 5, liveness and readiness probes;
- :mod:`app.config.monitoring`: spec 6, 11.2 and 12, metrics, logging, monitoring
  integration, and performance and resource targets;
- :mod:`app.config.security`: spec 7, authentication, authorization, TLS, CORS, limits;
- :mod:`app.config.strategies`: spec 9-11.1, rolling update, blue/green, backups, registry;
- :mod:`app.config.serving`: the ``serving`` section (not in the spec), deployment topology;
- :mod:`app.config.service`: ``ServiceConfig`` (the file's root), ``parse_config`` and
  ``load_config_file``;
- :mod:`app.config.env`: environment variables of spec section 8, which override the
  matching keys of the file (see ``Settings.apply_to``).

The names below are re-exported so that ``from app.config import X`` works for all of them.
"""

from __future__ import annotations

from app.config.autoscaling import AutoscalingProfile, MarketCalendar
from app.config.base import AuthMethod, JwtAlgorithm, Section
from app.config.deployment import DeploymentInfo, Resources, ResourceTier
from app.config.monitoring import (
    Alerting,
    AvailabilityTargets,
    CustomMetric,
    GrafanaIntegration,
    LatencyTargets,
    Logging,
    Metrics,
    MonitoringIntegration,
    PerformanceTargets,
    PrometheusExporter,
    PrometheusIntegration,
    ResourceTargets,
    ThroughputTargets,
    UtilizationTarget,
)
from app.config.performance import Batching, CacheConfig, Caching, GpuOptimization
from app.config.probes import Probe
from app.config.security import (
    Authentication,
    Authorization,
    Cors,
    Limits,
    NetworkSecurity,
    Security,
    Tls,
)
from app.config.service import ConfigError, ServiceConfig, load_config_file, parse_config
from app.config.serving import GatewayDeployment, Serving
from app.config.strategies import Backup, BlueGreen, ModelRegistryConfig, RollingUpdate

__all__ = [
    "Alerting",
    "AuthMethod",
    "Authentication",
    "Authorization",
    "AutoscalingProfile",
    "AvailabilityTargets",
    "Backup",
    "Batching",
    "BlueGreen",
    "CacheConfig",
    "Caching",
    "ConfigError",
    "Cors",
    "CustomMetric",
    "DeploymentInfo",
    "GatewayDeployment",
    "GpuOptimization",
    "GrafanaIntegration",
    "JwtAlgorithm",
    "LatencyTargets",
    "Limits",
    "Logging",
    "MarketCalendar",
    "Metrics",
    "ModelRegistryConfig",
    "MonitoringIntegration",
    "NetworkSecurity",
    "PerformanceTargets",
    "Probe",
    "PrometheusExporter",
    "PrometheusIntegration",
    "ResourceTargets",
    "ResourceTier",
    "Resources",
    "RollingUpdate",
    "Section",
    "Security",
    "ServiceConfig",
    "Serving",
    "ThroughputTargets",
    "Tls",
    "UtilizationTarget",
    "load_config_file",
    "parse_config",
]

"""The service configuration file, laid out like the deployment spec's own sections.

Every section and key of ``../shared/spec/ray-serve-deployment-spec.md`` has a field here
with the spec's value as its default, so an empty file means "the spec". Unknown keys are
errors (``extra="forbid"``): Ray Serve's own schemas drop unknown keys silently, so a typo
such as ``target_num_ongoing_request_per_replica`` would otherwise vanish without a trace.

Environment variables of spec section 8 are read by :mod:`app.config.env` and override the
matching keys here (see ``Settings.apply_to``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- 2. Deployment -----------------------------------------------------------------------


class DeploymentInfo(Section):
    deployment_name: str = "cnn_lstm_predictor"
    version: str = "1.0.0"
    description: str = "CNN+LSTM Hybrid Model Deployment for Trading Platform"


class Resources(Section):
    num_cpus: float = Field(2, ge=0)
    memory: int = Field(2147483648, ge=0)
    object_store_memory: int = Field(1073741824, ge=0)
    num_gpus: float = Field(0.5, ge=0)


class ResourceTier(Section):
    num_cpus: float = Field(ge=0)
    memory: int = Field(ge=0)
    num_gpus: float = Field(ge=0)
    max_replicas: int = Field(ge=1)


def _default_tiers() -> dict[str, ResourceTier]:
    return {
        "small": ResourceTier(num_cpus=1, memory=1073741824, num_gpus=0.25, max_replicas=5),
        "medium": ResourceTier(num_cpus=2, memory=2147483648, num_gpus=0.5, max_replicas=15),
        "large": ResourceTier(num_cpus=4, memory=4294967296, num_gpus=1.0, max_replicas=30),
    }


# --- 3. Autoscaling ----------------------------------------------------------------------


class AutoscalingProfile(Section):
    """Spec 3.1/3.2 names. ``app.ops`` maps them onto Serve's ``autoscaling_config``."""

    min_replicas: int = Field(2, ge=0)
    max_replicas: int = Field(20, ge=1)
    target_num_ongoing_requests_per_replica: float = Field(5, gt=0)
    target_throughput_per_replica: float | None = Field(100, gt=0)
    upscale_delay_s: float = Field(30, ge=0)
    downscale_delay_s: float = Field(300, ge=0)
    metrics_interval_s: float = Field(10, gt=0)
    look_back_period_s: float = Field(120, gt=0)
    upscale_smoothing_factor: float = Field(1.0, gt=0)
    downscale_smoothing_factor: float = Field(0.5, gt=0)

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingProfile:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


def _market_hours() -> AutoscalingProfile:
    return AutoscalingProfile(
        min_replicas=5,
        max_replicas=30,
        target_num_ongoing_requests_per_replica=3,
        upscale_delay_s=15,
        downscale_delay_s=120,
        upscale_smoothing_factor=1.5,
        downscale_smoothing_factor=0.3,
    )


def _off_hours() -> AutoscalingProfile:
    return AutoscalingProfile(
        min_replicas=2,
        max_replicas=10,
        target_num_ongoing_requests_per_replica=10,
        upscale_delay_s=60,
        downscale_delay_s=300,
        upscale_smoothing_factor=1.0,
        downscale_smoothing_factor=0.5,
    )


class MarketCalendar(Section):
    """Which exchange's sessions define "market hours" (not in the spec; XNYS by default)."""

    enabled: bool = True
    exchange: str = "XNYS"
    prescale_minutes: float = Field(15, ge=0)


# --- 4. Performance ----------------------------------------------------------------------


class Batching(Section):
    enabled: bool = True
    max_batch_size: int = Field(32, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=10)
    priority_queue_size: int = Field(1000, ge=1)


class CacheConfig(Section):
    enabled: bool = True
    ttl_seconds: float = Field(gt=0)
    max_entries: int = Field(ge=1)


class Caching(Section):
    model_cache: CacheConfig = CacheConfig(ttl_seconds=3600, max_entries=100)
    feature_cache: CacheConfig = CacheConfig(ttl_seconds=600, max_entries=1000)


class GpuOptimization(Section):
    enable_tf32: bool = True
    memory_fraction: float = Field(0.8, gt=0, le=1)
    enable_cudnn_benchmark: bool = True
    cleanup_interval_s: float = Field(300, gt=0)


# --- 5. Health checks --------------------------------------------------------------------


class Probe(Section):
    enabled: bool = True
    path: str
    port: int = Field(8000, ge=1, le=65535)
    initial_delay_s: float = Field(ge=0)
    period_s: float = Field(gt=0)
    timeout_s: float = Field(gt=0)
    failure_threshold: int = Field(3, ge=1)


# --- 6. Monitoring -----------------------------------------------------------------------


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
    max_log_size_mb: float = Field(100, gt=0)
    retention_days: float = Field(7, gt=0)
    directory: Path | None = None  # not in the spec: where log files go (None = stderr only)
    # Not in the spec: rotated files kept per component even within retention_days, so a
    # burst of logging cannot fill the disk (10 x 100 MB by default).
    max_files: int = Field(10, ge=1, le=1000)
    # Not in the spec: with a log directory, also write to stderr (which Ray forwards)?
    stderr_with_file: bool = False


# --- 7. Security -------------------------------------------------------------------------


AuthMethod = Literal["api_key", "jwt"]
JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "ES256"]


def _both_methods() -> list[AuthMethod]:
    return ["api_key", "jwt"]


def _hs256() -> list[JwtAlgorithm]:
    return ["HS256"]


class Authentication(Section):
    enabled: bool = True
    methods: list[AuthMethod] = Field(default_factory=_both_methods)
    api_key_header: str = "X-API-Key"
    jwt_secret_path: Path = Path("/secrets/jwt-secret")
    # Not in the spec, needed to run it: where the hashed API-key store lives, which JWT
    # algorithms are accepted, and what an external identity provider's tokens look like.
    api_key_store_path: Path = Path("/secrets/api-keys.json")
    client_store_path: Path | None = None
    jwt_algorithms: list[JwtAlgorithm] = Field(default_factory=_hs256)
    jwt_public_key_path: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = Field(30, ge=0, le=300)
    token_ttl_s: int = Field(900, ge=30, le=86400)
    # The per-route method matrix: by default each route takes both methods.
    predict_methods: list[AuthMethod] = Field(default_factory=_both_methods)
    stats_methods: list[AuthMethod] = Field(default_factory=_both_methods)
    metrics_auth: Literal["open", "bearer"] = "open"


class Authorization(Section):
    enabled: bool = True
    required_scopes: list[str] = Field(default_factory=lambda: ["model:predict", "model:stats"])


class Security(Section):
    authentication: Authentication = Authentication()
    authorization: Authorization = Authorization()


class Tls(Section):
    enabled: bool = True
    cert_path: Path = Path("/certs/tls.crt")
    key_path: Path = Path("/certs/tls.key")
    # Not in the spec: Strict-Transport-Security max-age sent while TLS is on.
    hsts_max_age_s: int = Field(31_536_000, ge=0)


class Cors(Section):
    enabled: bool = True
    allowed_origins: list[str] = Field(
        default_factory=lambda: ["https://trading-platform.com", "https://api.trading-platform.com"]
    )
    allowed_methods: list[str] = Field(default_factory=lambda: ["GET", "POST"])
    allowed_headers: list[str] = Field(
        default_factory=lambda: ["Content-Type", "Authorization", "X-API-Key"]
    )
    # Not in the spec: response headers browsers may read, and how long a preflight is cached.
    expose_headers: list[str] = Field(default_factory=lambda: ["X-Request-ID", "Retry-After"])
    max_age_s: int = Field(600, ge=0, le=86400)


class Limits(Section):
    """Hardening limits (not in the spec; needed so bad input is bounded)."""

    # A 64-bar request is ~6 KB of JSON; 2 MiB fits a full /predict/batch of 128 items.
    max_body_bytes: int = Field(2_097_152, ge=1024)
    max_bars: int = Field(4096, ge=64)
    max_batch_symbols: int = Field(128, ge=1)
    # Per-principal token buckets. API keys carry their own rate/burst; JWT principals (and
    # keys without one) get these defaults, where None means "not limited".
    default_rate_limit_per_s: float | None = Field(None, gt=0)
    default_burst: int = Field(20, ge=1)
    rate_limit_max_buckets: int = Field(100_000, ge=100)
    # Guesses against POST /token, per client_id (each check costs a deliberate slow hash).
    token_endpoint_rate_per_s: float = Field(1.0, gt=0)
    token_endpoint_burst: int = Field(10, ge=1)


class NetworkSecurity(Section):
    tls: Tls = Tls()
    cors: Cors = Cors()
    limits: Limits = Limits()


# --- 9-11. Operations --------------------------------------------------------------------


class RollingUpdate(Section):
    max_concurrent_updates: int = Field(2, ge=1)
    update_batch_size: int = Field(1, ge=1)
    health_check_timeout_s: float = Field(300, gt=0)
    rollback_on_failure: bool = True
    # Not in the spec: how often Serve retries a failing replica constructor (a model that
    # fails validation) before it marks the rollout failed; old replicas keep serving.
    constructor_retry_count: int = Field(3, ge=1)


class BlueGreen(Section):
    enabled: bool = True
    traffic_shift_interval_s: float = Field(300, gt=0)
    health_check_duration_s: float = Field(60, gt=0)
    rollback_threshold_pct: float = Field(5, ge=0, le=100)
    traffic_steps_pct: list[float] = Field(default_factory=lambda: [10.0, 25.0, 50.0, 100.0])
    state_path: Path | None = None  # where rollout state persists (default: in the registry)
    # Not in the spec (app/control/rollout_engine.py): green's error rate is judged only once
    # the health window holds this many green requests, so one early error in three
    # requests cannot roll a rollout back.
    min_samples: int = Field(20, ge=1)
    # How long every predictor replica may take to load, validate and warm green (or a
    # version registry sync switches to) before the attempt is given up.
    preload_timeout_s: float = Field(300, gt=0)
    # Control-loop cadences: the controller's tick, how often predictors and gateways
    # ask for the routing, and how often gateways push their per-version outcome counts.
    control_interval_s: float = Field(0.5, gt=0)
    predictor_poll_interval_s: float = Field(2.0, gt=0)
    gateway_poll_interval_s: float = Field(0.5, gt=0)
    report_interval_s: float = Field(1.0, gt=0)


class Backup(Section):
    enabled: bool = True
    schedule: str
    retention_days: float = Field(gt=0)
    storage_path: Path
    # Not in the spec, used by config_backup: files or folders archived along with the
    # config file in use (dashboards, alert rules...). Never list key material here.
    paths: list[Path] = Field(default_factory=list)
    # Not in the spec: the zone ``schedule`` is read in (CronJob timeZone, compose scheduler).
    timezone: str = "UTC"


class ModelRegistryConfig(Section):
    type: Literal["filesystem"] = "filesystem"
    path: Path = Path("/models")
    sync_interval_s: float = Field(300, gt=0)
    validation_enabled: bool = True
    default_model: str = "cnn_lstm"
    # Not in the spec: how long a starting predictor waits for the default model to appear
    # in the registry (a volume still syncing) before it fails.
    wait_for_model_s: float = Field(0, ge=0, le=3600)


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


# --- 12. Targets -------------------------------------------------------------------------


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


# --- Serving topology (not in the spec: how the two deployments are sized) ---------------


class GatewayDeployment(Section):
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    max_ongoing_requests: int = Field(1000, ge=1)


class Serving(Section):
    """Which resources the predictor takes, and how the gateway is sized."""

    resource_tier: Literal["small", "medium", "large"] | None = None
    autoscaling_enabled: bool = True
    gateway: GatewayDeployment = GatewayDeployment()
    predictor_max_ongoing_requests: int | None = None  # None: derived from batch size
    # The predictor's @serve.batch wait; None: batching.batch_wait_timeout_s (spec 4.1).
    # Calls already carry gateway batches (formed with batching.batch_wait_timeout_s), so
    # the predictor does not wait again: calls that arrive while a forward runs are merged
    # into the next one anyway. Waiting here added the whole timeout to every lone batch
    # (BENCHMARKS.md: ~10 ms of p50 at 50-100 req/s).
    predictor_batch_wait_s: float | None = Field(0.0, ge=0, le=10)
    request_timeout_s: float = Field(30, gt=0)
    http_host: str = "0.0.0.0"
    http_port: int = Field(8000, ge=1, le=65535)
    # How HTTPS reaches the gateway (BENCHMARKS.md has the measurements behind the default):
    # "direct": each gateway replica serves HTTPS itself (Serve direct ingress) on
    #   http_port (a second replica on the same node takes the next free port), and Serve's
    #   proxy stays up on proxy_port as a fallback route to any replica;
    # "proxy": Serve's proxy serves http_port and forwards every request to a replica
    #   (one more process hop and an actor call back to the proxy for the body).
    ingress: Literal["direct", "proxy"] = "direct"
    proxy_port: int = Field(8100, ge=1, le=65535)
    # How the gateway's handle calls reach the predictor (BENCHMARKS.md): "grpc" (Serve's
    # gRPC transport between replicas, RAY_SERVE_USE_GRPC_BY_DEFAULT) or "actor" (Ray
    # actor calls, Serve's default). gRPC never measured worse here; how much better varied
    # from run to run (200 req/s p50 136 vs 141 ms, once 127 vs 373 ms).
    handle_transport: Literal["grpc", "actor"] = "grpc"
    # Scheduling priority of Ray's worker processes (every replica): Ray's default is
    # nice 15, so on a shared machine any ordinary process (a log shipper, a load
    # generator) takes the CPU from the replicas first. Serving replicas are the
    # latency-critical work of the node; 0 puts them level with Ray's own daemons.
    worker_niceness: int = Field(0, ge=0, le=19)
    direct_port_span: int = Field(50, ge=1, le=1000)
    # How Serve stops a replica: drain for up to graceful_shutdown_timeout_s, polling every
    # graceful_shutdown_wait_loop_s (Serve's defaults, 20 s and 2 s, made explicit).
    graceful_shutdown_timeout_s: float = Field(20, ge=0)
    graceful_shutdown_wait_loop_s: float = Field(2, ge=0)
    # Where Serve runs its HTTP proxies; one Serve application holds both deployments.
    proxy_location: Literal["EveryNode", "HeadOnly", "Disabled"] = "EveryNode"
    app_name: str = Field("cnnlstm", min_length=1)
    route_prefix: str = "/"
    # Chaos/testing switch, off by default (model/common/faults.py): "<name>:<version>" -> the
    # fraction of predictor calls for that version that fail with an injected error.
    # Exists to exercise blue/green rollback end to end; never set it in production.
    fault_injection: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fault_fractions(self) -> Serving:
        for key, frac in self.fault_injection.items():
            if not 0.0 <= frac <= 1.0 or key.count(":") != 1:
                raise ValueError(
                    "fault_injection maps '<name>:<version>' to a fraction in [0, 1], "
                    f"got {key!r}: {frac!r}"
                )
        return self


class ServiceConfig(Section):
    """Root of the YAML file. Section names are the spec's, one to one."""

    deployment: DeploymentInfo = DeploymentInfo()
    resources: Resources = Resources()
    resource_tiers: dict[str, ResourceTier] = Field(default_factory=_default_tiers)
    autoscaling: AutoscalingProfile = AutoscalingProfile()
    market_hours_autoscaling: AutoscalingProfile = Field(default_factory=_market_hours)
    off_hours_autoscaling: AutoscalingProfile = Field(default_factory=_off_hours)
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

    @model_validator(mode="after")
    def _tier_exists(self) -> ServiceConfig:
        s = self.serving
        if s.ingress == "direct" and s.http_port <= s.proxy_port < s.http_port + s.direct_port_span:
            raise ValueError("serving.proxy_port must lie outside the direct-ingress port range")
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

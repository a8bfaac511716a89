"""The one mapping from :class:`ServiceConfig` to Ray Serve 2.60 deployment options.

Everything here returns plain dicts (no Ray import), checked against the installed Serve:

- ``Deployment.options()`` (``ray/serve/deployment.py``) rejects ``version`` and, unlike
  ``@serve.deployment``, has no ``rolling_update_percentage`` parameter: that one travels
  only in the Serve config file (:func:`predictor_config_overrides`), whose
  ``DeploymentSchema`` (``ray/serve/schema.py``) does accept it.
- ``ray_actor_options`` allows only ``accelerator_type, memory, num_cpus, num_gpus,
  resources, runtime_env, label_selector, fallback_strategy``
  (``ReplicaConfig._validate_ray_actor_options`` in ``ray/serve/_private/config.py``).
  The spec's per-replica ``object_store_memory`` is therefore not an actor option: it
  sizes each node's object store instead (``--object-store-memory``, see
  :func:`app.serve.manifests.worker_object_store_bytes`).
- ``AutoscalingConfig`` (``ray/serve/config.py``) names: see :mod:`app.scaling.spec_mapping`.

What a node needs besides (Serve's import-time environment, custom resources) is in
:mod:`app.serve.serve_env`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from app.config import AutoscalingProfile, ServiceConfig
from app.config.resources import replica_resources

Device = Literal["cpu", "gpu"]
GATEWAY_NAME = "gateway"
POLICY_IMPORT_PATH = "app.scaling.autoscaling_policy:MarketHoursPolicy"


def predictor_actor_options(config: ServiceConfig, device: Device) -> dict[str, Any]:
    res = replica_resources(config)
    options: dict[str, Any] = {"num_cpus": res.num_cpus, "memory": res.memory}
    if device == "gpu":
        if res.num_gpus <= 0:
            raise ValueError("device 'gpu' needs num_gpus > 0 in resources or the tier")
        options["num_gpus"] = res.num_gpus
    if config.serving.predictor_ray_resources:
        options["resources"] = dict(config.serving.predictor_ray_resources)
    return options


def predictor_max_ongoing_requests(config: ServiceConfig) -> int:
    """Explicit setting, else twice the batch size: Serve's default (5) starves batching."""
    explicit = config.serving.predictor_max_ongoing_requests
    return explicit if explicit is not None else 2 * config.batching.max_batch_size


def serve_autoscaling_config(
    profile: AutoscalingProfile, *, policy: dict[str, Any] | None
) -> dict[str, Any]:
    """Spec 3.1 names -> ``AutoscalingConfig`` names.

    With a custom ``policy`` the policy applies each regime's delays and gains itself, and
    Serve's wrapper would apply the config's on top (twice): so they are neutral here
    (delays 0, factors 1) and ``profile`` should carry the widest min/max of all regimes.
    """
    out: dict[str, Any] = {
        "min_replicas": profile.min_replicas,
        "max_replicas": profile.max_replicas,
        "target_ongoing_requests": profile.target_num_ongoing_requests_per_replica,
        "look_back_period_s": profile.look_back_period_s,
        "upscale_delay_s": profile.upscale_delay_s,
        "downscale_delay_s": profile.downscale_delay_s,
        "upscaling_factor": profile.upscale_smoothing_factor,
        "downscaling_factor": profile.downscale_smoothing_factor,
    }
    if policy is not None:
        out.update(
            upscale_delay_s=0.0,
            downscale_delay_s=0.0,
            upscaling_factor=1.0,
            downscaling_factor=1.0,
            policy=policy,
        )
    return out


def _capped(profile: AutoscalingProfile, cap: int | None) -> AutoscalingProfile:
    if cap is None:
        return profile
    top = min(profile.max_replicas, cap)
    return profile.model_copy(
        update={"max_replicas": top, "min_replicas": min(profile.min_replicas, top)}
    )


def regime_kwargs(profile: AutoscalingProfile, cap: int | None) -> dict[str, Any]:
    """One regime for :class:`app.scaling.autoscaling_policy.Regime` (JSON-serialisable)."""
    p = _capped(profile, cap)
    return {
        "min_replicas": p.min_replicas,
        "max_replicas": p.max_replicas,
        "target_ongoing_requests": p.target_num_ongoing_requests_per_replica,
        "target_throughput_per_replica": p.target_throughput_per_replica,
        "upscale_delay_s": p.upscale_delay_s,
        "downscale_delay_s": p.downscale_delay_s,
        "upscaling_factor": p.upscale_smoothing_factor,
        "downscaling_factor": p.downscale_smoothing_factor,
    }


def market_policy(config: ServiceConfig) -> dict[str, Any]:
    """``autoscaling_config.policy``: the import path and the kwargs Serve passes to it."""
    cap = replica_resources(config).max_replicas
    calendar = config.market_calendar
    return {
        "policy_function": POLICY_IMPORT_PATH,
        "policy_kwargs": {
            "exchange": calendar.exchange,
            "prescale_minutes": calendar.prescale_minutes,
            "market_hours": regime_kwargs(config.market_hours_autoscaling, cap),
            "off_hours": regime_kwargs(config.off_hours_autoscaling, cap),
        },
    }


def predictor_autoscaling_config(config: ServiceConfig) -> dict[str, Any] | None:
    """The predictor's ``autoscaling_config``, or None when autoscaling is off."""
    if not config.serving.autoscaling_enabled:
        return None
    cap = replica_resources(config).max_replicas
    general = _capped(config.autoscaling, cap)
    if not config.market_calendar.enabled:
        return serve_autoscaling_config(general, policy=None)
    regimes = [
        _capped(config.market_hours_autoscaling, cap),
        _capped(config.off_hours_autoscaling, cap),
    ]
    envelope = general.model_copy(
        update={
            "min_replicas": min(r.min_replicas for r in regimes),
            "max_replicas": max(r.max_replicas for r in regimes),
        }
    )
    return serve_autoscaling_config(envelope, policy=market_policy(config))


def fixed_num_replicas(config: ServiceConfig) -> int:
    """The predictor's replica count with autoscaling off: spec 3.1's ``min_replicas``,
    within the tier's ``max_replicas`` like the autoscaling range."""
    cap = replica_resources(config).max_replicas
    return max(1, _capped(config.autoscaling, cap).min_replicas)


def replica_ceiling(config: ServiceConfig) -> int:
    """The most predictor replicas: the autoscaling maximum, else the fixed count."""
    auto = predictor_autoscaling_config(config)
    if auto is not None:
        return int(auto["max_replicas"])
    return fixed_num_replicas(config)


def rolling_update_options(config: ServiceConfig) -> dict[str, Any]:
    """Spec 9.1 onto Serve's two rollout knobs (``deployment_state.py``).

    ``update_batch_size`` -> ``rolling_update_percentage``: Serve stops
    ``max(int(pct * target), 1)`` old replicas per step, so pct = batch / max replicas gives
    exactly ``update_batch_size`` at every size up to the maximum.
    ``max_concurrent_updates`` -> ``max_surge_percent``: replacements start *before* old
    replicas stop (make-before-break) and Serve rounds ``pct * target / 100`` up, so pct =
    floor(100 * concurrent / max replicas) gives 1..``max_concurrent_updates`` extra replicas.
    """
    ceiling = replica_ceiling(config)
    rollout = config.rolling_update
    pct = min(1.0, math.ceil(rollout.update_batch_size / ceiling * 1e6 + 1) / 1e6)
    surge = max(1, min(100, (100 * rollout.max_concurrent_updates) // ceiling))
    return {"rolling_update_percentage": pct, "max_surge_percent": surge}


def predictor_options(config: ServiceConfig, device: Device) -> dict[str, Any]:
    """Keyword arguments for ``PredictorDeployment.options(**...)`` (Serve 2.60)."""
    readiness = config.readiness_probe
    options: dict[str, Any] = {
        "name": config.deployment.deployment_name,
        "ray_actor_options": predictor_actor_options(config, device),
        "max_ongoing_requests": predictor_max_ongoing_requests(config),
        "max_queued_requests": config.batching.priority_queue_size,
        "health_check_period_s": readiness.period_s,
        "health_check_timeout_s": readiness.timeout_s,
        "graceful_shutdown_timeout_s": config.serving.graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": config.serving.graceful_shutdown_wait_loop_s,
        "max_surge_percent": rolling_update_options(config)["max_surge_percent"],
        "max_constructor_retry_count": config.rolling_update.constructor_retry_count,
        # Spec 4.1 batching, applied by reconfigure() so a change is lightweight (no
        # replica restart). The gateway batches too; calls arrive as row batches.
        "user_config": predictor_user_config(config),
        # The gateway writes one access line per HTTP request; Serve's own per-call line
        # on every replica would double the logging cost of the hot path.
        "logging_config": serve_logging_config(config),
    }
    auto = predictor_autoscaling_config(config)
    if auto is not None:
        options["autoscaling_config"] = auto
    else:
        options["num_replicas"] = fixed_num_replicas(config)
    return options


# Accepted by Deployment.options() but absent from the config file's DeploymentSchema,
# which would drop it silently: it reaches Serve from code (build_app) only.
CODE_ONLY_OPTIONS = frozenset({"max_constructor_retry_count"})


def predictor_config_overrides(config: ServiceConfig, device: Device) -> dict[str, Any]:
    """The predictor's entry under ``deployments:`` in a Serve config file."""
    options = {
        k: v for k, v in predictor_options(config, device).items() if k not in CODE_ONLY_OPTIONS
    }
    return {**options, **rolling_update_options(config)}


def predictor_user_config(config: ServiceConfig) -> dict[str, Any]:
    batching = config.batching
    wait = config.serving.predictor_batch_wait_s
    return {
        "max_batch_size": batching.max_batch_size,
        "batch_wait_timeout_s": batching.batch_wait_timeout_s if wait is None else wait,
    }


def serve_logging_config(config: ServiceConfig) -> dict[str, Any]:
    return {"enable_access_log": False, "log_level": config.logging.level}


def gateway_options(config: ServiceConfig) -> dict[str, Any]:
    """Keyword arguments for ``Gateway.options(**...)``: CPU only, sized by ``serving``."""
    gateway = config.serving.gateway
    liveness = config.liveness_probe
    actor_options: dict[str, Any] = {"num_cpus": gateway.num_cpus}
    if gateway.ray_resources:
        # Pinned to the nodes that offer these (KubeRay gateway pods, compose's head).
        actor_options["resources"] = dict(gateway.ray_resources)
    return {
        "name": GATEWAY_NAME,
        "num_replicas": gateway.num_replicas,
        "ray_actor_options": actor_options,
        "max_ongoing_requests": gateway.max_ongoing_requests,
        # Serve notices a dead gateway at its next check: often, so a crash costs seconds
        # (the orchestrator's liveness probe keeps the spec's 30 s on /healthz).
        "health_check_period_s": gateway.health_check_period_s,
        "health_check_timeout_s": liveness.timeout_s,
        "graceful_shutdown_timeout_s": config.serving.graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": config.serving.graceful_shutdown_wait_loop_s,
        "logging_config": serve_logging_config(config),
    }


SERVE_TIMEOUT_MARGIN_S = 5.0


def http_options(config: ServiceConfig, tls_enabled: bool | None = None) -> dict[str, Any]:
    """Serve's proxy ``http_options``; TLS files from spec 7.2 when TLS is on."""
    serving = config.serving
    options: dict[str, Any] = {
        "host": serving.http_host,
        "port": serving.proxy_port if serving.ingress == "direct" else serving.http_port,
        # Serve's own ingress deadline answers a plain-text 408: keep it behind the
        # gateway's (serving.request_timeout_s), whose typed JSON 503 must always come first.
        "request_timeout_s": serving.request_timeout_s + SERVE_TIMEOUT_MARGIN_S,
    }
    tls = config.network_security.tls
    if tls.enabled if tls_enabled is None else tls_enabled:
        options["ssl_keyfile"] = str(tls.key_path)
        options["ssl_certfile"] = str(tls.cert_path)
    return options

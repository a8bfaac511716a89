"""What every Ray node must carry for the Serve app, outside any Serve config file: the
environment Serve reads at import (:func:`serve_env_vars`; ``cnnlstm config render-env``
prints it, ``cnnlstm serve``, the KubeRay pods and compose set it) and the Ray custom
resources pinned deployments ask for (:func:`custom_resources_needed`).

Plain dicts, no Ray import, like :mod:`app.serve.options` (the per-deployment options).
"""

from __future__ import annotations

import math

from app.config import ServiceConfig
from app.serve.options import replica_ceiling, rolling_update_options

# Serve 2.60 still accepts metrics_interval_s but warns it is deprecated: these two
# environment variables (read by replicas and handles at import) replace it.
METRICS_PUSH_ENV_VARS = (
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
)
# Serve has no rollout deadline, only a warning for replicas slow to start
# (``ray/serve/_private/deployment_state.py``); it is an integer number of seconds.
SLOW_STARTUP_ENV_VAR = "RAY_SERVE_SLOW_STARTUP_WARNING_S"


def serve_env_vars(config: ServiceConfig) -> dict[str, str]:
    """Environment for every Ray node (Serve reads these at import, not from a config):
    spec ``metrics_interval_s`` -> the metric push intervals, and the rolling update's
    ``health_check_timeout_s`` -> when Serve logs a replica as slow to start."""
    interval = f"{config.autoscaling.metrics_interval_s:g}"
    env = dict.fromkeys(METRICS_PUSH_ENV_VARS, interval)
    env[SLOW_STARTUP_ENV_VAR] = str(math.ceil(config.rolling_update.health_check_timeout_s))
    # Our replica code is async and sends its blocking work (torch) to worker threads
    # itself, so Serve's extra hop onto a separate user-code thread per call is pure cost.
    env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] = "0"
    serving = config.serving
    # Gateway -> predictor handle calls over Serve's gRPC transport instead of Ray actor
    # calls: of RAY_SERVE_THROUGHPUT_OPTIMIZED's switches, the one that measured a gain here.
    env["RAY_SERVE_USE_GRPC_BY_DEFAULT"] = "1" if serving.handle_transport == "grpc" else "0"
    # Read by the raylet when it starts workers (so: set before `ray start`/ray.init).
    env["RAY_worker_niceness"] = str(serving.worker_niceness)
    if serving.ray_gc_min_interval_s > 0:  # read by the raylet at start, like the above
        # Whole seconds: the raylet parses a uint64_t and aborts on anything left over, so
        # "0.5" or :g's "2.592e+06" would stop every node at `ray start`.
        env["RAY_local_gc_min_interval_s"] = str(math.ceil(serving.ray_gc_min_interval_s))
    if serving.ingress == "direct":
        # Gateway replicas serve HTTPS themselves (same TLS files: Serve hands its
        # http_options to the replica's server), starting at http_port.
        env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
        env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(serving.http_port)
        env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(
            serving.http_port + serving.direct_port_span - 1
        )
        # How long a stopping gateway replica keeps serving before it closes its port
        # (Serve's default, 30 s, gives a load balancer time to notice).
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = f"{serving.drain_period_s:g}"
        # Serve holds a released replica port out of the pool for 180 s, for HAProxy's
        # soft-stopped workers (not used here). Without this, a gateway replica restarted
        # after a crash is given the next port (8001) and :8000 stays dark for minutes.
        env["RAY_SERVE_PORT_QUARANTINE_S"] = "0"
    return env


def custom_resources_needed(config: ServiceConfig) -> dict[str, float]:
    """The Ray custom resources the app's deployments can ask for at once: gateway replicas
    x ``serving.gateway.ray_resources`` + the predictor's most replicas (its replica
    ceiling plus the rolling update's surge) x ``serving.predictor_ray_resources``.

    What a one-machine Ray must offer for pinned deployments to be placed at all (see
    :func:`app.serve.runner.start_ray`); a cluster offers them per node instead.
    """
    ceiling = replica_ceiling(config)
    surge_pct = rolling_update_options(config)["max_surge_percent"]
    predictors = ceiling + (surge_pct * ceiling + 99) // 100  # Serve's own rounding, up
    serving = config.serving
    needed: dict[str, float] = {}
    for per_replica, replicas in (
        (serving.gateway.ray_resources, serving.gateway.num_replicas),
        (serving.predictor_ray_resources, predictors),
    ):
        for name, amount in per_replica.items():
            needed[name] = needed.get(name, 0.0) + amount * replicas
    return needed

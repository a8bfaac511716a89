"""Where each spec setting went in Ray Serve 2.60, as data (rendered into deploy/README.md).

Serve's config schemas accept unknown keys silently, so a spec name copied verbatim into
a Serve config disappears without an error. This table is the record of every rename,
every deprecated name and every setting Serve lacks; ``tests/unit/ops`` checks that the
README carries exactly :func:`doc_table`.
"""

from __future__ import annotations

from typing import NamedTuple


class Mapping(NamedTuple):
    spec: str
    serve: str
    note: str


MAPPINGS: tuple[Mapping, ...] = (
    Mapping(
        "autoscaling.min_replicas",
        "autoscaling_config.min_replicas",
        "With the market calendar on: the lowest regime floor; each regime's floor is "
        "enforced by the policy.",
    ),
    Mapping(
        "autoscaling.max_replicas",
        "autoscaling_config.max_replicas",
        "Capped by the resource tier's max_replicas; with the calendar on: the highest "
        "regime ceiling.",
    ),
    Mapping(
        "target_num_ongoing_requests_per_replica",
        "autoscaling_config.target_ongoing_requests",
        "Renamed in Serve; the old name is silently dropped.",
    ),
    Mapping(
        "target_throughput_per_replica",
        "(none)",
        "Serve has no throughput target: MarketHoursPolicy honours it from the predictor's "
        "`requests_total` autoscaling stat.",
    ),
    Mapping(
        "upscale_delay_s / downscale_delay_s",
        "autoscaling_config.upscale_delay_s / downscale_delay_s",
        "With the custom policy: applied per regime by the policy, set to 0 in Serve.",
    ),
    Mapping(
        "metrics_interval_s",
        "RAY_SERVE_REPLICA_/HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
        "Deprecated in AutoscalingConfig: exported as node environment variables instead.",
    ),
    Mapping(
        "look_back_period_s",
        "autoscaling_config.look_back_period_s",
        "Deployment-wide: taken from spec 3.1 for every regime.",
    ),
    Mapping(
        "upscale_smoothing_factor",
        "autoscaling_config.upscaling_factor",
        "Serve's upscale_smoothing_factor is deprecated; per regime in the policy.",
    ),
    Mapping(
        "downscale_smoothing_factor",
        "autoscaling_config.downscaling_factor",
        "Serve's downscale_smoothing_factor is deprecated; per regime in the policy.",
    ),
    Mapping(
        "market_hours_autoscaling / off_hours_autoscaling",
        "autoscaling_config.policy",
        "policy_function app.scaling.autoscaling_policy:MarketHoursPolicy, policy_kwargs "
        "{exchange, prescale_minutes, market_hours, off_hours}.",
    ),
    Mapping(
        "resources.object_store_memory",
        "ray start --object-store-memory",
        "Not a valid ray_actor_options key in Serve: sizes each worker node's store.",
    ),
    Mapping(
        "deployment.version / description",
        "(none)",
        "Serve removed the version option; both are reported by /stats.",
    ),
    Mapping(
        "batching.priority_queue_size",
        "max_queued_requests",
        "Per caller (each gateway replica's handle); beyond it calls fail fast.",
    ),
    Mapping(
        "readiness_probe.period_s / timeout_s",
        "health_check_period_s / health_check_timeout_s",
        "Predictor check_health; the gateway is checked every "
        "serving.gateway.health_check_period_s (2 s) with the liveness probe's timeout.",
    ),
    Mapping(
        "rolling_update.update_batch_size",
        "rolling_update_percentage",
        "update_batch_size / max replicas (Serve takes max(int(pct*target), 1)); config "
        "file only, Deployment.options() lacks it.",
    ),
    Mapping(
        "rolling_update.max_concurrent_updates",
        "max_surge_percent",
        "New replicas start before old ones stop; 1..max_concurrent_updates extra.",
    ),
    Mapping(
        "rolling_update.health_check_timeout_s",
        "RAY_SERVE_SLOW_STARTUP_WARNING_S",
        "Serve has no rollout deadline; replicas slower than this are logged as stuck.",
    ),
    Mapping(
        "rolling_update.rollback_on_failure",
        "max_surge_percent + max_constructor_retry_count",
        "A failing version never becomes healthy, so old replicas keep serving; KubeRay "
        "upgradeStrategy NewCluster for cluster-level changes.",
    ),
)


def doc_table() -> str:
    """Markdown table: spec name, what it became in Serve 2.60, and why."""
    lines = ["| Spec | Serve 2.60 | Note |", "|---|---|---|"]
    lines += [f"| `{m.spec}` | `{m.serve}` | {m.note} |" for m in MAPPINGS]
    return "\n".join(lines) + "\n"

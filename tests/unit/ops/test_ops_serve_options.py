"""ServiceConfig -> Serve 2.60 options (Serve's own models check them in tests/integration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.config import ServiceConfig, parse_config
from app.scaling.spec_mapping import doc_table
from app.serve.options import (
    POLICY_IMPORT_PATH,
    gateway_options,
    http_options,
    predictor_autoscaling_config,
    predictor_options,
    replica_ceiling,
    rolling_update_options,
    serve_autoscaling_config,
)
from app.serve.serve_env import serve_env_vars
from app.serve.serve_yaml import build_serve_config

SPEC_ONLY_NAMES = {
    "target_num_ongoing_requests_per_replica",
    "target_throughput_per_replica",
    "metrics_interval_s",
    "upscale_smoothing_factor",
    "downscale_smoothing_factor",
    "smoothing_factor",
    "object_store_memory",
    "version",
    "description",
}


def keys(data: Any) -> set[str]:
    """Every key at any depth, except inside the policy's own kwargs."""
    found: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            found.add(k)
            if k != "policy_kwargs":
                found |= keys(v)
    elif isinstance(data, list):
        for item in data:
            found |= keys(item)
    return found


def tiered(tier: str | None = "medium", **serving: Any) -> ServiceConfig:
    return parse_config({"serving": {"resource_tier": tier, **serving}})


def test_gpu_count_is_set_only_for_gpu_device() -> None:
    config = tiered("medium")
    assert "num_gpus" not in predictor_options(config, "cpu")["ray_actor_options"]
    assert predictor_options(config, "gpu")["ray_actor_options"]["num_gpus"] == 0.5


def test_tier_sets_cpus_memory_and_caps_replicas() -> None:
    options = predictor_options(tiered("small"), "gpu")
    assert options["ray_actor_options"] == {"num_cpus": 1, "memory": 1073741824, "num_gpus": 0.25}
    assert options["autoscaling_config"]["max_replicas"] == 5
    kwargs = options["autoscaling_config"]["policy"]["policy_kwargs"]
    assert kwargs["market_hours"]["min_replicas"] == 5
    assert kwargs["market_hours"]["max_replicas"] == 5


def test_plain_resources_apply_without_a_tier() -> None:
    options = predictor_options(tiered(None), "cpu")
    assert options["ray_actor_options"] == {"num_cpus": 2, "memory": 2147483648}


def test_spec_names_never_reach_serve_options() -> None:
    data = build_serve_config(tiered("large"), config_path="c.yaml", device="gpu")
    assert keys(data) & SPEC_ONLY_NAMES == set()


def test_gpu_device_without_gpus_is_refused() -> None:
    config = parse_config({"resources": {"num_gpus": 0}})
    with pytest.raises(ValueError, match="num_gpus"):
        predictor_options(config, "gpu")


def test_max_ongoing_requests_is_twice_the_batch_unless_set() -> None:
    assert predictor_options(ServiceConfig(), "cpu")["max_ongoing_requests"] == 64
    explicit = tiered(None, predictor_max_ongoing_requests=200)
    assert predictor_options(explicit, "cpu")["max_ongoing_requests"] == 200


def test_a_crashed_gateway_is_checked_for_every_two_seconds() -> None:
    options = gateway_options(ServiceConfig())
    assert options["health_check_period_s"] == 2.0
    assert options["health_check_timeout_s"] == ServiceConfig().liveness_probe.timeout_s


def test_queue_and_health_settings_come_from_batching_and_readiness() -> None:
    options = predictor_options(ServiceConfig(), "cpu")
    assert options["max_queued_requests"] == 1000
    assert (options["health_check_period_s"], options["health_check_timeout_s"]) == (10, 5)


def test_general_profile_maps_to_serve_names() -> None:
    out = serve_autoscaling_config(ServiceConfig().autoscaling, policy=None)
    assert out == {
        "min_replicas": 2,
        "max_replicas": 20,
        "target_ongoing_requests": 5,
        "look_back_period_s": 120,
        "upscale_delay_s": 30,
        "downscale_delay_s": 300,
        "upscaling_factor": 1.0,
        "downscaling_factor": 0.5,
    }


def test_custom_policy_neutralises_serve_delays_and_factors() -> None:
    auto = predictor_autoscaling_config(ServiceConfig())
    assert auto is not None
    assert auto["policy"]["policy_function"] == POLICY_IMPORT_PATH
    assert (auto["upscale_delay_s"], auto["downscale_delay_s"]) == (0.0, 0.0)
    assert (auto["upscaling_factor"], auto["downscaling_factor"]) == (1.0, 1.0)
    assert (auto["min_replicas"], auto["max_replicas"]) == (2, 30)  # widest of both regimes
    json.dumps(auto["policy"]["policy_kwargs"])  # Serve requires JSON-serialisable kwargs


def test_calendar_off_uses_the_general_profile() -> None:
    auto = predictor_autoscaling_config(parse_config({"market_calendar": {"enabled": False}}))
    assert auto is not None
    assert "policy" not in auto
    assert auto["upscale_delay_s"] == 30


def test_autoscaling_off_gives_fixed_replicas() -> None:
    options = predictor_options(tiered(None, autoscaling_enabled=False), "cpu")
    assert "autoscaling_config" not in options
    assert options["num_replicas"] == 2


def test_the_tier_caps_the_fixed_replica_count_too() -> None:
    # Spec 2.2.2: the small tier runs at most 5 replicas, with or without autoscaling.
    config = parse_config(
        {
            "serving": {"resource_tier": "small", "autoscaling_enabled": False},
            "autoscaling": {"min_replicas": 8, "max_replicas": 20},
        }
    )
    assert predictor_options(config, "cpu")["num_replicas"] == 5
    assert replica_ceiling(config) == 5


@pytest.mark.parametrize("target", [1, 2, 5, 8, 15])
def test_rollout_replaces_one_replica_per_step_at_any_size(target: int) -> None:
    rollout = rolling_update_options(tiered("medium"))
    assert max(int(rollout["rolling_update_percentage"] * target), 1) == 1
    surge = (rollout["max_surge_percent"] * target + 99) // 100
    assert 1 <= surge <= 2  # max_concurrent_updates


def test_predictor_options_leave_out_what_deployment_options_rejects() -> None:
    options = predictor_options(ServiceConfig(), "cpu")
    assert "rolling_update_percentage" not in options  # not a Deployment.options() parameter
    assert "version" not in options
    overrides = build_serve_config(ServiceConfig(), config_path=None, device="cpu")
    predictor = overrides["applications"][0]["deployments"][1]
    assert "rolling_update_percentage" in predictor


def test_gateway_options_come_from_serving_gateway() -> None:
    config = tiered(
        None, gateway={"num_replicas": 3, "num_cpus": 0.25, "max_ongoing_requests": 500}
    )
    options = gateway_options(config)
    assert options["name"] == "gateway"
    assert options["num_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 0.25}
    assert options["max_ongoing_requests"] == 500


def test_http_options_carry_tls_files_only_when_tls_is_on() -> None:
    config = ServiceConfig()
    on = http_options(config, True)
    assert (on["ssl_certfile"], on["ssl_keyfile"]) == ("/certs/tls.crt", "/certs/tls.key")
    # Direct ingress (the default): replicas serve 8000, the proxy moves to proxy_port.
    assert (on["host"], on["port"]) == ("0.0.0.0", 8100)
    # Serve's ingress deadline (a plain-text 408) stays behind the gateway's own 30 s.
    assert on["request_timeout_s"] == config.serving.request_timeout_s + 5
    assert "ssl_certfile" not in http_options(config, False)
    proxied = parse_config({"serving": {"ingress": "proxy"}})
    assert http_options(proxied, True)["port"] == 8000


def test_direct_ingress_env_starts_replica_ports_at_http_port() -> None:
    env = serve_env_vars(ServiceConfig())
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "8000"
    assert int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) < 8100
    assert "RAY_SERVE_ENABLE_DIRECT_INGRESS" not in serve_env_vars(
        parse_config({"serving": {"ingress": "proxy"}})
    )


def test_handle_transport_picks_serves_grpc_switch() -> None:
    assert serve_env_vars(ServiceConfig())["RAY_SERVE_USE_GRPC_BY_DEFAULT"] == "1"
    actor = parse_config({"serving": {"handle_transport": "actor"}})
    assert serve_env_vars(actor)["RAY_SERVE_USE_GRPC_BY_DEFAULT"] == "0"


def test_replicas_run_at_the_configured_niceness() -> None:
    assert serve_env_vars(ServiceConfig())["RAY_worker_niceness"] == "0"
    low = parse_config({"serving": {"worker_niceness": 15}})
    assert serve_env_vars(low)["RAY_worker_niceness"] == "15"


def test_the_raylets_gc_requests_are_spaced_by_the_configured_interval() -> None:
    assert serve_env_vars(ServiceConfig())["RAY_local_gc_min_interval_s"] == "600"
    often = parse_config({"serving": {"ray_gc_min_interval_s": 30}})
    assert serve_env_vars(often)["RAY_local_gc_min_interval_s"] == "30"
    rays = parse_config({"serving": {"ray_gc_min_interval_s": 0}})
    assert "RAY_local_gc_min_interval_s" not in serve_env_vars(rays)


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0.5, "1"), (2.5, "3"), (1e6, "1000000"), (2592000, "2592000")]
)
def test_the_raylets_gc_interval_is_whole_seconds_it_can_parse(
    seconds: float, expected: str
) -> None:
    # The raylet reads RAY_local_gc_min_interval_s as a uint64_t and RAY_CHECKs that the
    # whole string parsed (ConvertValue in ray/common/ray_config.h): "0.5" or "2.592e+06"
    # (what :g gives) abort it at start.
    config = parse_config({"serving": {"ray_gc_min_interval_s": seconds}})
    assert serve_env_vars(config)["RAY_local_gc_min_interval_s"] == expected


def test_env_vars_replace_the_deprecated_metrics_interval() -> None:
    env = serve_env_vars(parse_config({"autoscaling": {"metrics_interval_s": 5}}))
    assert env["RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] == "5"
    assert env["RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] == "5"
    assert env["RAY_SERVE_SLOW_STARTUP_WARNING_S"] == "300"


def test_name_table_in_readme_matches_the_code() -> None:
    readme = (Path(__file__).parents[3] / "deploy" / "README.md").read_text(encoding="utf-8")
    assert doc_table() in readme


def test_ops_modules_import_without_ray() -> None:
    code = (
        "import sys, app.serve.options, app.serve.serve_env, app.serve.serve_yaml, "
        "app.serve.manifests, app.scaling.autoscaling_policy, app.ops.backup, app.ops.scheduler, "
        "app.cli.config_cmds, app.cli.backup_cmds; "
        "sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

"""Our Serve options against Serve 2.60's own models (no Ray cluster is started).

``ServeDeploySchema`` accepts unknown keys and keeps ``autoscaling_config`` a plain dict,
so each layer is checked with the model Serve itself builds from it at deploy time:
``AutoscalingConfig`` (imports and pickles the policy), ``Deployment.options`` (runs the
``ray_actor_options`` allowlist), ``HTTPOptions``, and the wrapper Serve puts around a
custom policy.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import pytest
from ray import serve
from ray.serve._private.common import DeploymentID
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext, HTTPOptions
from ray.serve.deployment import Deployment
from ray.serve.schema import DeploymentSchema, ServeDeploySchema

from app.config import ServiceConfig, load_config_file
from app.scaling.autoscaling_policy import MarketHoursPolicy
from app.serve.options import Device, gateway_options, http_options, predictor_options
from app.serve.serve_yaml import build_serve_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["deploy/config.yaml", "deploy/config.local.yaml"]


class _Echo:
    def __call__(self) -> str:
        return "ok"


_Dummy: Deployment = serve.deployment()(_Echo)


def _config(rel: str) -> ServiceConfig:
    return load_config_file(ROOT / rel)


@pytest.mark.parametrize("rel", CONFIGS)
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_serve_config_validates_under_serve_deploy_schema(rel: str, device: Device) -> None:
    config = _config(rel)
    if device == "gpu" and config.resources.num_gpus == 0 and config.serving.resource_tier is None:
        pytest.skip("the laptop profile has no GPUs")
    data = build_serve_config(config, config_path="/etc/cnnlstm/config.yaml", device=device)
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "app.serve.build:build_app"
    names = [d.name for d in app.deployments]
    assert names == ["gateway", config.deployment.deployment_name]
    # Nothing we emit is an unknown key that Serve would silently drop.
    for emitted in data["applications"][0]["deployments"]:
        assert set(emitted) <= set(DeploymentSchema.model_fields)
    assert set(data["http_options"]) <= set(HTTPOptions.model_fields)


@pytest.mark.parametrize("rel", CONFIGS)
def test_autoscaling_config_is_accepted_without_deprecation_warnings(rel: str) -> None:
    predictor = build_serve_config(_config(rel), config_path=None, device="cpu")["applications"][0][
        "deployments"
    ][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # metrics_interval_s or *_smoothing_factor would warn
        auto = AutoscalingConfig(**predictor["autoscaling_config"])
    assert auto.policy.policy_function == "app.scaling.autoscaling_policy:MarketHoursPolicy"
    assert (
        auto.get_target_ongoing_requests()
        == predictor["autoscaling_config"]["target_ongoing_requests"]
    )
    assert isinstance(auto.policy.get_policy(), type)  # a class: Serve instantiates it once


def test_general_profile_autoscaling_is_accepted() -> None:
    config = ServiceConfig.model_validate({"market_calendar": {"enabled": False}})
    auto = AutoscalingConfig(**predictor_options(config, "cpu")["autoscaling_config"])
    assert (auto.get_upscaling_factor(), auto.get_downscaling_factor()) == (1.0, 0.5)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_deployment_options_accept_our_options(device: Device) -> None:
    config = _config("deploy/config.yaml")
    accepted = set(inspect.signature(Deployment.options).parameters)
    pred = predictor_options(config, device)
    assert set(pred) <= accepted
    predictor = _Dummy.options(**pred)
    assert predictor.name == "cnn_lstm_predictor"
    actor_options = predictor.ray_actor_options or {}
    assert actor_options["num_cpus"] == 2
    assert ("num_gpus" in actor_options) is (device == "gpu")
    gateway = _Dummy.options(**gateway_options(config))
    assert gateway.num_replicas == config.serving.gateway.num_replicas


def test_object_store_memory_really_is_refused_as_an_actor_option() -> None:
    with pytest.raises(ValueError, match="object_store_memory"):
        _Dummy.options(ray_actor_options={"num_cpus": 1, "object_store_memory": 1 << 30})


def test_http_options_build_serve_http_options() -> None:
    options = HTTPOptions(**http_options(_config("deploy/config.yaml")))
    assert options.ssl_certfile == "/certs/tls.crt"
    # Direct ingress: gateway replicas serve :8000 with these files; the proxy moves aside.
    assert options.port == 8100


def _context(policy_state: dict[str, Any], **kwargs: Any) -> AutoscalingContext:
    predictor = build_serve_config(_config("deploy/config.yaml"), config_path=None, device="cpu")
    auto = AutoscalingConfig(**predictor["applications"][0]["deployments"][1]["autoscaling_config"])
    values: dict[str, Any] = {
        "deployment_id": DeploymentID(name="cnn_lstm_predictor", app_name="cnnlstm"),
        "deployment_name": "cnn_lstm_predictor",
        "app_name": "cnnlstm",
        "running_replicas": [],
        "total_queued_requests": 0.0,
        "aggregated_metrics": {},
        "raw_metrics": {},
        "capacity_adjusted_min_replicas": auto.min_replicas,
        "capacity_adjusted_max_replicas": auto.max_replicas,
        "policy_state": policy_state,
        "last_scale_up_time": None,
        "last_scale_down_time": None,
        "config": auto,
        **kwargs,
    }
    return AutoscalingContext(**values)


def test_serve_wrapper_passes_our_decision_through_unchanged() -> None:
    """Serve re-applies the config's delays and factors around a custom policy; with the
    neutral values we emit, its answer must be ours, tick after tick."""
    config = _config("deploy/config.yaml")
    kwargs = predictor_options(config, "cpu")["autoscaling_config"]["policy"]["policy_kwargs"]
    ours, theirs = (
        MarketHoursPolicy(**kwargs),
        _apply_autoscaling_config(MarketHoursPolicy(**kwargs)),
    )
    tuesday_noon_ny = 1795971600.0  # 2026-11-24 12:00 America/New_York
    state_a: dict[str, Any] = {}
    state_b: dict[str, Any] = {}
    current = 5
    for tick, load in enumerate([0, 60, 60, 60, 60, 90, 5, 5, 5, 5] * 3):
        now = tuesday_noon_ny + 10 * tick
        common = {"current_num_replicas": current, "target_num_replicas": current,
                  "total_num_requests": float(load), "current_time": now}  # fmt: skip
        mine, state_a = ours(_context(state_a, **common))
        wrapped, state_b = theirs(_context(state_b, **common))
        assert wrapped == mine, f"tick {tick}"
        current = mine

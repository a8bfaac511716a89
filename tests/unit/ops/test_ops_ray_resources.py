"""Pinning deployments with Ray custom resources: the options, what a local Ray offers,
and the nodes that offer them (KubeRay gateway pods, compose's head)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from app.config import ConfigError, ServiceConfig, load_config_file, parse_config
from app.config.env import Settings
from app.serve.k8s_pods import GATEWAY_RESOURCE
from app.serve.options import (
    gateway_options,
    predictor_autoscaling_config,
    predictor_options,
    rolling_update_options,
)
from app.serve.serve_env import custom_resources_needed
from tests.unit.ops.ops_cli import ROOT


def pinned(**serving: Any) -> ServiceConfig:
    base = {"autoscaling_enabled": False, "resource_tier": None}
    return parse_config(
        {"serving": {**base, **serving}, "autoscaling": {"min_replicas": 3, "max_replicas": 3}}
    )


def test_defaults_ask_for_no_custom_resources() -> None:
    config = ServiceConfig()
    assert "resources" not in gateway_options(config)["ray_actor_options"]
    assert "resources" not in predictor_options(config, "cpu")["ray_actor_options"]
    assert custom_resources_needed(config) == {}


def test_configured_resources_reach_ray_actor_options() -> None:
    config = pinned(
        gateway={"num_replicas": 2, "num_cpus": 0.5, "ray_resources": {"edge": 1}},
        predictor_ray_resources={"pred": 0.5},
    )
    assert gateway_options(config)["ray_actor_options"] == {
        "num_cpus": 0.5,
        "resources": {"edge": 1.0},
    }
    actor = predictor_options(config, "cpu")["ray_actor_options"]
    assert actor["resources"] == {"pred": 0.5}
    assert actor["num_cpus"] == 2  # the rest unchanged


def test_needed_resources_sum_gateways_and_the_predictor_ceiling_with_surge() -> None:
    config = pinned(
        gateway={"num_replicas": 2, "ray_resources": {"edge": 1, "shared": 0.25}},
        predictor_ray_resources={"pred": 1, "shared": 0.5},
    )
    # 3 predictors; max_surge_percent = floor(100 * 2 / 3) = 66 -> ceil(0.66 * 3) = 2 more.
    assert rolling_update_options(config)["max_surge_percent"] == 66
    assert custom_resources_needed(config) == {"edge": 2.0, "shared": 0.5 + 5 * 0.5, "pred": 5.0}


def test_needed_resources_use_the_autoscaling_ceiling() -> None:
    config = parse_config(
        {
            "serving": {"resource_tier": None, "predictor_ray_resources": {"pred": 1}},
            "market_calendar": {"enabled": False},
            "autoscaling": {"min_replicas": 1, "max_replicas": 4},
            "rolling_update": {"max_concurrent_updates": 1},
        }
    )
    # ceiling 4, surge floor(100 * 1 / 4) = 25 % -> 1 extra replica.
    assert custom_resources_needed(config) == {"pred": 5.0}


@pytest.mark.parametrize(
    "resources", [{"CPU": 1}, {"GPU": 1}, {"memory": 1}, {"node:1.2.3.4": 1}, {"x": 0}]
)
def test_builtin_names_and_non_positive_amounts_are_refused(resources: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        parse_config({"serving": {"predictor_ray_resources": resources}})
    with pytest.raises(ConfigError):
        parse_config({"serving": {"gateway": {"ray_resources": resources}}})


def test_production_pins_gateways_to_the_nodes_offering_cnnlstm_gateway() -> None:
    config = load_config_file(ROOT / "deploy/config.yaml")
    actor = gateway_options(config)["ray_actor_options"]
    assert actor["resources"] == {GATEWAY_RESOURCE: 1}
    # The KubeRay gateway group has one pod, offering one, per gateway replica.
    _, service = yaml.safe_load_all((ROOT / "deploy/kuberay/rayservice.yaml").read_text("utf-8"))
    groups = {g["groupName"]: g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    cpu = groups["cpu-workers"]
    assert GATEWAY_RESOURCE in cpu["rayStartParams"]["resources"]
    assert cpu["replicas"] == config.serving.gateway.num_replicas


def test_compose_head_offers_what_the_compose_profile_needs() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    command = " ".join(compose["services"]["ray-head"]["command"])
    match = re.search(r"--resources='([^']*)'", command)
    assert match, "the compose head must offer the pinned deployments' custom resources"
    offered = yaml.safe_load(match.group(1))
    profile = load_config_file(ROOT / "deploy/config.compose.yaml")
    assert offered == custom_resources_needed(profile)
    assert offered == {GATEWAY_RESOURCE: profile.serving.gateway.num_replicas}


class _FakeRay:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    def cluster_resources(self) -> dict[str, float]:
        started = self.calls[-1]
        return {"CPU": float(started["num_cpus"]), "memory": 8e9, **(started["resources"] or {})}


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("deploy/config.yaml", {GATEWAY_RESOURCE: 2.0}),
        ("deploy/config.local.yaml", None),
    ],
)
def test_local_ray_offers_the_custom_resources_the_config_asks_for(
    rel: str, expected: dict[str, float] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.serve import runner

    fake = _FakeRay()
    monkeypatch.setattr(runner, "ray", fake)
    monkeypatch.setattr(runner, "apply_serve_env", lambda config: None)  # keep os.environ
    config = load_config_file(ROOT / rel)
    how = runner.start_ray(Settings(RAY_ADDRESS="local"), config, local_cpus=4).how
    (call,) = fake.calls
    assert call["address"] == "local"
    assert call["resources"] == expected
    if expected:
        assert "cnnlstm_gateway=2" in how


@pytest.mark.parametrize(
    ("address", "cpus", "deployed_max"),
    [
        ("local", 2, 1),  # a 2-core laptop's own Ray
        ("local", 4, 2),  # room for both
        ("ray://head:10001", 2, 2),  # a cluster can add nodes: as written
    ],
)
def test_start_ray_hands_back_the_config_to_deploy(
    address: str, cpus: int, deployed_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.serve import runner

    fake = _FakeRay()
    monkeypatch.setattr(runner, "ray", fake)
    monkeypatch.setattr(runner, "apply_serve_env", lambda config: None)  # keep os.environ
    config = load_config_file(ROOT / "deploy/config.local.yaml")

    started = runner.start_ray(Settings(RAY_ADDRESS=address), config, local_cpus=cpus)

    assert predictor_autoscaling_config(started.config)["max_replicas"] == deployed_max
    assert ("capped at 1" in started.how) == (deployed_max == 1)

"""A local Ray is one node that never grows: the predictor's autoscaling is capped at the
replicas it holds (app.serve.node_fit), and only there."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import load_config_file
from app.config.env import Settings
from app.serve.node_fit import PROFILES, actor_ask, fit_to_node, replicas_that_fit
from app.serve.options import predictor_autoscaling_config
from tests.unit.ops.ops_cli import ROOT

LAPTOP = ROOT / "deploy/config.local.yaml"
CPU = Settings(DEVICE="cpu")
PLENTY = 64e9  # bytes of Ray memory: not what limits these cases


def test_a_two_core_node_holds_one_laptop_predictor_beside_the_gateway() -> None:
    """Session 14's trap: gateway 0.25 + predictor 1 + predictor 1 > 2 CPUs, so the
    second replica the config allows would wait forever; the deployed config asks for one."""
    config = load_config_file(LAPTOP)
    assert predictor_autoscaling_config(config)["max_replicas"] == 2  # what the file says

    fitted, line = fit_to_node(config, CPU, {"CPU": 2.0, "memory": PLENTY})

    assert predictor_autoscaling_config(fitted)["max_replicas"] == 1
    for profile in PROFILES:
        assert getattr(fitted, profile).max_replicas == 1
        assert getattr(fitted, profile).min_replicas == 1
    assert line is not None
    assert "capped at 1 (the config allows 2)" in line
    assert "offers 2 CPUs" in line
    assert config.autoscaling.max_replicas == 2  # the input is not changed


def test_a_node_with_room_for_every_replica_keeps_the_config_as_written() -> None:
    config = load_config_file(LAPTOP)
    fitted, line = fit_to_node(config, CPU, {"CPU": 2.25, "memory": PLENTY})
    assert line is None
    assert fitted is config


def test_ray_memory_caps_the_replicas_too() -> None:
    """Each laptop predictor reserves 2 GB of Ray memory: 5 GB hold two, not four."""
    config = load_config_file(LAPTOP)
    raised = config.model_copy(
        update={p: getattr(config, p).model_copy(update={"max_replicas": 4}) for p in PROFILES}
    )
    fitted, line = fit_to_node(raised, CPU, {"CPU": 16.0, "memory": 5 * 2**30})
    assert predictor_autoscaling_config(fitted)["max_replicas"] == 2
    assert line is not None
    assert "capped at 2" in line


def test_without_autoscaling_the_fixed_count_is_left_alone() -> None:
    config = load_config_file(LAPTOP)
    config.serving.autoscaling_enabled = False
    fitted, line = fit_to_node(config, CPU, {"CPU": 2.0, "memory": PLENTY})
    assert (fitted, line) == (config, None)


@pytest.mark.parametrize(
    ("each", "beside", "offered", "fit"),
    [
        ({"CPU": 1.0}, {"CPU": 0.25}, {"CPU": 2.0}, 1),
        ({"CPU": 1.0}, {"CPU": 0.25}, {"CPU": 3.0}, 2),
        ({"CPU": 0.5}, {"CPU": 1.0}, {"CPU": 3.0}, 4),
        # The least of the resources decides; a GPU share limits a GPU predictor.
        ({"CPU": 1.0, "GPU": 0.5}, {}, {"CPU": 8.0, "GPU": 1.0}, 2),
        # The minimum always stays: the local Ray was sized for it.
        ({"CPU": 4.0}, {"CPU": 1.0}, {"CPU": 2.0}, 1),
        # A custom resource the node lacks: still the one replica Ray was started for.
        ({"CPU": 1.0, "accel": 1.0}, {}, {"CPU": 8.0}, 1),
        ({}, {}, {"CPU": 2.0}, None),
    ],
)
def test_replicas_that_fit(
    each: dict[str, float], beside: dict[str, float], offered: dict[str, float], fit: int | None
) -> None:
    assert replicas_that_fit(each, beside, offered) == fit


def test_the_ask_uses_rays_resource_names() -> None:
    options: dict[str, Any] = {
        "num_cpus": 1,
        "num_gpus": 0.25,
        "memory": 2e9,
        "resources": {"cnnlstm_gateway": 1},
    }
    assert actor_ask(options) == {
        "CPU": 1.0,
        "GPU": 0.25,
        "memory": 2e9,
        "cnnlstm_gateway": 1.0,
    }
    assert actor_ask({"num_cpus": 0}) == {}


def test_a_local_ray_is_sized_for_the_apps_minimum() -> None:
    """One laptop predictor (the minimum of every profile) and the gateway's quarter."""
    from app.serve.node_fit import gateways_ask, required_cpus

    config = load_config_file(LAPTOP)
    assert gateways_ask(config)["CPU"] == 0.25
    assert required_cpus(config) == 1.25
    config.serving.gateway.num_replicas = 2
    assert required_cpus(config) == 1.5

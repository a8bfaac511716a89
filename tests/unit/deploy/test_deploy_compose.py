"""docker-compose.yml on an ordinary Linux host, checked statically (no Docker here):
files exist, ports match the config, control planes stay on 127.0.0.1, nothing is pulled
that we build, secrets are readable, and the compose profile's floors fit the node."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
import yaml

from app.config import ServiceConfig, load_config_file
from app.config.resources import replica_resources
from app.serve.options import gateway_options, predictor_autoscaling_config
from tests.unit.ops.ops_cli import ROOT

PROFILE = "deploy/config.compose.yaml"
CONTROL_PORTS = {6379, 8265, 9090, 10001, 9091, 9093, 3000}  # Ray, Prometheus, UIs
# The only sections the compose profile may change: replica floors and ceilings.
SIZING = {
    ("autoscaling", "min_replicas"),
    ("autoscaling", "max_replicas"),
    ("market_hours_autoscaling", "min_replicas"),
    ("market_hours_autoscaling", "max_replicas"),
    ("off_hours_autoscaling", "min_replicas"),
    ("off_hours_autoscaling", "max_replicas"),
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return data


@pytest.fixture(scope="module")
def profile() -> ServiceConfig:
    return load_config_file(ROOT / PROFILE)


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each short-syntax published port."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        out.append((ip, int(parts[-2]), int(parts[-1])))
    return out


def _num_cpus(compose: dict[str, Any]) -> int:
    command = " ".join(compose["services"]["ray-head"]["command"])
    match = re.search(r"--num-cpus=\$\{RAY_NUM_CPUS:-(\d+)\}", command)
    assert match, "ray start must take --num-cpus=${RAY_NUM_CPUS:-N}"
    return int(match.group(1))


def test_every_referenced_host_file_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            variable = re.match(r"\$\{(\w+):-([^}]+)\}:", volume)
            if variable:
                # Host material made locally (certs-dev/make-dev-certs.sh, `secret init`):
                # the default lies under a directory of this repository or .local/.
                top = variable.group(2).removeprefix("./").split("/")[0]
                assert top == ".local" or (ROOT / top).is_dir(), f"{name}: {volume}"
                continue
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (ROOT / host).exists(), f"{name}: {host} is missing"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_published_ports_match_the_profile(compose: dict[str, Any], profile: ServiceConfig) -> None:
    head = _ports(compose["services"]["ray-head"])
    http = profile.serving.http_port
    metrics = profile.metrics.prometheus_exporter.port
    assert ("0.0.0.0", http, http) in head
    assert ("127.0.0.1", metrics, metrics) in head
    command = " ".join(compose["services"]["ray-head"]["command"])
    assert f"--metrics-export-port={metrics}" in command
    # The profile serves the same ports as production.
    production = load_config_file(ROOT / "deploy/config.yaml")
    assert (production.serving.http_port, production.metrics.prometheus_exporter.port) == (
        http,
        metrics,
    )


def test_only_the_serving_port_is_published_beyond_localhost(
    compose: dict[str, Any], profile: ServiceConfig
) -> None:
    for name, service in compose["services"].items():
        for ip, host_port, container_port in _ports(service):
            if container_port in CONTROL_PORTS or host_port in CONTROL_PORTS:
                assert ip == "127.0.0.1", f"{name} publishes {host_port} on {ip}"
            else:
                assert (name, container_port) == ("ray-head", profile.serving.http_port)


def test_locally_built_images_are_never_pulled(compose: dict[str, Any]) -> None:
    image = compose["services"]["ray-head"]["image"]
    for name, service in compose["services"].items():
        if service.get("image") == image:
            assert service.get("pull_policy") in ("build", "never"), name
    assert compose["services"]["ray-head"]["pull_policy"] == "build"


def test_app_containers_run_as_the_secret_files_owner(compose: dict[str, Any]) -> None:
    """Secrets are mode 0600 on the host: the reader must be their owner."""
    for name in ("ray-head", "backup"):
        user = compose["services"][name]["user"]
        assert user == "${CNNLSTM_UID:-1000}:${CNNLSTM_GID:-1000}", name
    readme = (ROOT / "deploy/README.md").read_text(encoding="utf-8")
    assert "CNNLSTM_UID" in readme


def test_profile_differs_from_production_only_in_sizing(profile: ServiceConfig) -> None:
    production = load_config_file(ROOT / "deploy/config.yaml").model_dump(mode="json")
    compose = profile.model_dump(mode="json")
    for section, key in SIZING:
        production[section].pop(key)
        compose[section].pop(key)
    assert compose == production


def test_floors_fit_the_node_with_room_for_a_rolling_update(
    compose: dict[str, Any], profile: ServiceConfig
) -> None:
    cpus = _num_cpus(compose)
    predictor = replica_resources(profile).num_cpus
    gateway = gateway_options(profile)
    gateways = gateway["num_replicas"] * gateway["ray_actor_options"]["num_cpus"]
    auto = predictor_autoscaling_config(profile)
    assert auto is not None
    kwargs = auto["policy"]["policy_kwargs"]
    regimes = [kwargs["market_hours"], kwargs["off_hours"]]
    floor = max(r["min_replicas"] for r in regimes)
    ceiling = max(r["max_replicas"] for r in regimes)
    assert floor == max(profile.market_hours_autoscaling.min_replicas, auto["min_replicas"])
    # The floor plus one surge replica (make-before-break rolling update) fits...
    assert gateways + (floor + 1) * predictor <= cpus
    # ...and so does the ceiling: no replica ever waits for a CPU that cannot come.
    assert gateways + ceiling * predictor <= cpus
    assert math.isclose(predictor, 2.0)


def test_production_floors_would_not_fit(compose: dict[str, Any]) -> None:
    """Why the profile exists: production's market-hours floor needs 11 CPUs."""
    production = load_config_file(ROOT / "deploy/config.yaml")
    gateway = gateway_options(production)
    need = gateway["num_replicas"] * gateway["ray_actor_options"]["num_cpus"]
    need += production.market_hours_autoscaling.min_replicas * 2
    assert need > _num_cpus(compose)


def _dashboard_queries() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads((ROOT / "deploy/grafana/dashboard.json").read_text(encoding="utf-8")))
    return found


def test_every_dashboard_query_can_find_its_job_in_the_compose_prometheus(
    compose: dict[str, Any],
) -> None:
    # Compose runs prometheus-cluster.yml: a query that needs a job only the one-machine
    # prometheus.yml scrapes shows "no data" in the bundled stack unless an alternative
    # (`or`) reads the same series from the jobs that stack has.
    (mount,) = (
        v
        for v in compose["services"]["prometheus"]["volumes"]
        if v.endswith(":/etc/prometheus/prometheus.yml:ro")
    )
    prometheus = yaml.safe_load((ROOT / mount.split(":")[0]).read_text(encoding="utf-8"))
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    for expr in _dashboard_queries():
        alternatives = expr.split(" or ")
        assert any(set(re.findall(r'job="([^"]+)"', alt)) <= jobs for alt in alternatives), expr

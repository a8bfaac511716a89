"""docker-compose.yml cannot be run here (no Docker), so check it against the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import ServiceConfig, load_config_file
from app.serve.serve_env import serve_env_vars
from tests.unit.ops.ops_cli import ROOT

SERVICES = {"ray-head", "prometheus", "grafana", "alertmanager", "backup"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return data


@pytest.fixture(scope="module")
def config() -> ServiceConfig:
    return load_config_file(ROOT / "deploy/config.yaml")


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path, for mounts of files from this repository."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("./"):
            mounts[container] = host
    return mounts


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_ray_head_publishes_the_serve_and_metrics_ports(
    compose: dict[str, Any], config: ServiceConfig
) -> None:
    head = compose["services"]["ray-head"]
    http, metrics = config.serving.http_port, config.metrics.prometheus_exporter.port
    assert (http, metrics) == (8000, 9090)
    # The metrics exporter is a control-plane port: published on 127.0.0.1 only.
    assert {f"{http}:{http}", f"127.0.0.1:{metrics}:{metrics}"} <= set(head["ports"])
    command = " ".join(head["command"])
    assert f"--metrics-export-port={metrics}" in command
    assert "cnnlstm --config /etc/cnnlstm/config.yaml serve" in command


def test_mounted_repository_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for container, host in bind_mounts(service).items():
            assert (ROOT / host).exists(), f"{name} mounts missing {host} at {container}"


def test_prometheus_and_alertmanager_get_their_config_files(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    prom = bind_mounts(prometheus)
    # Two gateway replicas in deploy/config.yaml: the cluster variant (Ray exporters only).
    assert prom["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus-cluster.yml"
    assert prom["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"
    assert "ray-tmp:/tmp/ray:ro" in prometheus["volumes"]
    assert "--web.listen-address=:9091" in prometheus["command"]
    alert = bind_mounts(compose["services"]["alertmanager"])
    assert alert["/etc/alertmanager/alertmanager.yml"] == "./deploy/alertmanager/alertmanager.yml"
    assert any(
        h.startswith("./deploy/grafana")
        for h in bind_mounts(compose["services"]["grafana"]).values()
    )


def test_app_services_read_the_compose_profile(compose: dict[str, Any]) -> None:
    # deploy/config.compose.yaml is deploy/config.yaml with floors that fit one machine;
    # tests/unit/deploy/test_deploy_compose.py checks nothing else differs.
    for name in ("ray-head", "backup"):
        mounts = bind_mounts(compose["services"][name])
        assert mounts["/etc/cnnlstm/config.yaml"] == "./deploy/config.compose.yaml"


def test_backup_schedules_equal_the_config(compose: dict[str, Any], config: ServiceConfig) -> None:
    command = compose["services"]["backup"]["command"]
    flags = {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag.startswith("--")}
    assert flags["--models-cron"] == config.model_backup.schedule
    assert flags["--configs-cron"] == config.config_backup.schedule
    assert command[:5] == ["cnnlstm", "--config", "/etc/cnnlstm/config.yaml", "backup", "schedule"]


def test_ray_environment_matches_serve_env_vars(
    compose: dict[str, Any], config: ServiceConfig
) -> None:
    env = compose["services"]["ray-head"]["environment"]
    for key, value in serve_env_vars(config).items():
        assert env[key] == value


def test_dockerfile_pins_the_cpu_torch_build() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text(encoding="utf-8")
    assert dockerfile.startswith("#")
    assert "FROM python:3.11-slim" in dockerfile
    assert "TORCH_VERSION=2.13.0" in dockerfile
    assert "download.pytorch.org/whl/cpu" in dockerfile
    assert "COPY . " not in dockerfile  # never the repo root: .local/ holds secrets


def test_compose_builds_from_the_deploy_dockerfile(compose: dict[str, Any]) -> None:
    build = compose["services"]["ray-head"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]) == ROOT / "deploy/Dockerfile"
    assert Path(build["dockerfile"]).name == "Dockerfile"

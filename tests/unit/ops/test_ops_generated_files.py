"""Committed generated files must equal what their recorded command produces today."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import load_config_file
from app.serve.manifests import CONFIG_FILE
from app.serve.serve_yaml import build_serve_config
from tests.unit.ops.ops_cli import ROOT, generator_command, run_cli

GENERATED = {
    "serve.yaml": ["deploy/serve.yaml"],
    "serve.local.yaml": ["deploy/serve.local.yaml"],
    "kuberay": ["deploy/kuberay/rayservice.yaml", "deploy/k8s/backup-cronjobs.yaml"],
}


def regenerate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str) -> Path:
    """Rerun the command recorded in ``first`` inside a scratch copy of deploy/."""
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    for produced in GENERATED_FILES:
        (tmp_path / produced).unlink(missing_ok=True)
    monkeypatch.chdir(tmp_path)
    assert run_cli(generator_command(ROOT / first)) == 0
    return tmp_path


GENERATED_FILES = [f for files in GENERATED.values() for f in files]


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_file_matches_its_command(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = GENERATED[name]
    out = regenerate(tmp_path, monkeypatch, files[0])
    for rel in files:
        fresh = (out / rel).read_text(encoding="utf-8")
        committed = (ROOT / rel).read_text(encoding="utf-8")
        assert fresh == committed, f"{rel} is stale: rerun the command in its first line"


def load_all(rel: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ROOT / rel).read_text(encoding="utf-8")))


def test_serve_yaml_is_build_serve_config_of_the_production_config() -> None:
    config = load_config_file(ROOT / "deploy/config.yaml")
    committed = yaml.safe_load((ROOT / "deploy/serve.yaml").read_text(encoding="utf-8"))
    assert committed == build_serve_config(config, config_path=CONFIG_FILE, device="cpu")


def test_rayservice_embeds_build_serve_config_and_the_config_file() -> None:
    configmap, service = load_all("deploy/kuberay/rayservice.yaml")
    config = load_config_file(ROOT / "deploy/config.yaml")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert embedded == build_serve_config(config, config_path=CONFIG_FILE, device="gpu")
    shipped = configmap["data"]["config.yaml"]
    assert shipped == (ROOT / "deploy/config.yaml").read_text(encoding="utf-8")


def test_rayservice_has_cpu_and_gpu_workers_exporting_metrics_on_9090() -> None:
    _, service = load_all("deploy/kuberay/rayservice.yaml")
    cluster = service["spec"]["rayClusterConfig"]
    assert service["apiVersion"] == "ray.io/v1"
    assert cluster["headGroupSpec"]["rayStartParams"]["metrics-export-port"] == "9090"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    cpu = groups["cpu-workers"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    for group in groups.values():
        assert group["rayStartParams"]["metrics-export-port"] == "9090"
        assert int(group["rayStartParams"]["object-store-memory"]) > 0


def test_worker_probes_use_spec_5_paths_and_timings() -> None:
    config = load_config_file(ROOT / "deploy/config.yaml")
    _, service = load_all("deploy/kuberay/rayservice.yaml")
    worker = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    container = worker["template"]["spec"]["containers"][0]
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert ready["httpGet"] == {"path": "/ready", "port": 8000, "scheme": "HTTPS"}
    assert "https://127.0.0.1:8000/healthz" in live["exec"]["command"]
    for probe, spec in ((ready, config.readiness_probe), (live, config.liveness_probe)):
        assert probe["initialDelaySeconds"] == spec.initial_delay_s
        assert probe["periodSeconds"] == spec.period_s
        assert probe["timeoutSeconds"] == spec.timeout_s
        assert probe["failureThreshold"] == spec.failure_threshold
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert "readinessProbe" not in head["containers"][0]  # KubeRay's own head probes apply


def test_rayservice_mounts_models_certs_secrets_and_backups() -> None:
    _, service = load_all("deploy/kuberay/rayservice.yaml")
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    paths = {m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    assert {"/models", "/certs", "/secrets", "/backups", "/etc/cnnlstm"} <= paths


def test_cronjobs_run_both_backups_on_the_config_schedules() -> None:
    config = load_config_file(ROOT / "deploy/config.yaml")
    jobs = {j["metadata"]["name"]: j for j in load_all("deploy/k8s/backup-cronjobs.yaml")}
    expected = {"models": config.model_backup, "configs": config.config_backup}
    for kind, section in expected.items():
        job = jobs[f"cnnlstm-backup-{kind}"]
        assert job["spec"]["schedule"] == section.schedule
        pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["command"][-2:] == ["backup", kind]
        mounted = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounted == {"/models", "/etc/cnnlstm", "/backups"}  # no TLS keys, no secrets

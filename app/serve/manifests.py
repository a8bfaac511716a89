"""Kubernetes manifests: a KubeRay ``RayService`` (ray.io/v1) and the backup CronJobs.

Generated from the service config by ``cnnlstm config render-kuberay`` so they cannot
drift from it: ``serveConfigV2`` is :func:`app.serve.serve_yaml.build_serve_config` for
the same config, the config file itself ships as a ConfigMap, and node sizes follow the
per-replica resources.

Probes. KubeRay injects its own probes into Ray containers that define none: on the head,
raylet + GCS health only (it never gates the head on Serve, since an unready head drops
the head Service that workers join through; it checks the head's proxy itself on each
reconcile). Workers get ours, with spec 5 timings: readiness is ``GET /ready`` over HTTPS
on 8000, so a pod joins the serve Service only once the model answers through its own
proxy; liveness is ``/healthz`` on 8000 via :mod:`app.serve.probe`, which falls back to the
raylet check when no proxy runs on that pod (Serve places proxies only where replicas are).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from app.config import Probe, ServiceConfig
from app.config.resources import replica_resources
from app.serve.options import Device, predictor_autoscaling_config, serve_env_vars
from app.serve.serve_yaml import build_serve_config

NAME = "cnnlstm"
RAY_VERSION = "2.60.0"
CONFIG_DIR = "/etc/cnnlstm"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
NODE_CPUS = 8
GPUS_PER_NODE = 1
NODE_OVERHEAD_BYTES = 2 * 1024**3  # raylet, proxy, gateway replicas, page cache slack
RAYLET_HEALTH = "http://127.0.0.1:52365/api/local_raylet_healthz"
GIB = 1024**3


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2, the ConfigMap) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_documents(docs: list[dict[str, Any]], header: str) -> str:
    body = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=100)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def _gib(n: float) -> str:
    return f"{math.ceil(n / GIB)}Gi"


def replicas_per_node(config: ServiceConfig, *, gpu: bool) -> int:
    res = replica_resources(config)
    by_cpu = math.floor(NODE_CPUS / res.num_cpus) if res.num_cpus else NODE_CPUS
    if gpu and res.num_gpus:
        return max(1, min(by_cpu, math.floor(GPUS_PER_NODE / res.num_gpus)))
    return max(1, by_cpu)


def worker_object_store_bytes(config: ServiceConfig, *, gpu: bool) -> int:
    """Spec 2.1 ``object_store_memory`` is per replica; Ray sizes the store per node."""
    return replicas_per_node(config, gpu=gpu) * replica_resources(config).object_store_memory


def _max_predictors(config: ServiceConfig) -> int:
    auto = predictor_autoscaling_config(config)
    return int(auto["max_replicas"]) if auto else max(1, config.autoscaling.min_replicas)


def _probe(probe: Probe, handler: dict[str, Any]) -> dict[str, Any]:
    return {
        **handler,
        "initialDelaySeconds": math.ceil(probe.initial_delay_s),
        "periodSeconds": math.ceil(probe.period_s),
        "timeoutSeconds": math.ceil(probe.timeout_s),
        "failureThreshold": probe.failure_threshold,
    }


def _worker_probes(config: ServiceConfig) -> dict[str, Any]:
    live, ready = config.liveness_probe, config.readiness_probe
    url = f"https://127.0.0.1:{live.port}{live.path}"
    # The probe's own HTTP timeout ends before the kubelet's, so a hang reports as a
    # failure from the probe instead of a killed exec.
    timeout = f"{max(1.0, live.timeout_s - 2):g}"
    live_cmd = ["python", "-m", "app.serve.probe", "--url", url, "--timeout", timeout]
    live_cmd += ["--fallback", RAYLET_HEALTH]
    return {
        "livenessProbe": _probe(live, {"exec": {"command": live_cmd}}),
        "readinessProbe": _probe(
            ready, {"httpGet": {"path": ready.path, "port": ready.port, "scheme": "HTTPS"}}
        ),
    }


def _env(config: ServiceConfig, device: Device) -> list[dict[str, str]]:
    values = {
        "DEVICE": device,
        "MODEL_REGISTRY_PATH": str(config.model_registry.path),
        "LOG_LEVEL": config.logging.level,
        "CNNLSTM_CONFIG": CONFIG_FILE,
        **serve_env_vars(config),
    }
    return [{"name": k, "value": v} for k, v in values.items()]


def _mounts(
    config: ServiceConfig, *, backups: bool, secrets: bool = True
) -> tuple[list[Any], list[Any]]:
    """(volumeMounts, volumes): registry, config, and as asked TLS + secrets and backups."""
    tls_dir = str(config.network_security.tls.cert_path.parent)
    secrets_dir = str(config.security.authentication.jwt_secret_path.parent)
    pairs: list[tuple[str, str, dict[str, Any]]] = [
        ("models", str(config.model_registry.path), {"persistentVolumeClaim": _claim("models")}),
        ("tls", tls_dir, {"secret": {"secretName": f"{NAME}-tls"}}),
        ("secrets", secrets_dir, {"secret": {"secretName": f"{NAME}-secrets"}}),
        ("config", CONFIG_DIR, {"configMap": {"name": f"{NAME}-config"}}),
    ]
    if not secrets:  # backup jobs never need key material
        pairs = [pair for pair in pairs if pair[0] not in {"tls", "secrets"}]
    if backups:
        pairs.append(("backups", "/backups", {"persistentVolumeClaim": _claim("backups")}))
    read_only = {"tls", "secrets", "config"}
    mounts = [{"name": n, "mountPath": p, "readOnly": n in read_only} for n, p, _ in pairs]
    return mounts, [{"name": n, **src} for n, _, src in pairs]


def _claim(what: str) -> dict[str, str]:
    return {"claimName": f"{NAME}-{what}"}


def _container(config: ServiceConfig, device: Device, image: str, *, head: bool) -> dict[str, Any]:
    ports = [
        {"containerPort": config.serving.http_port, "name": "serve"},
        {"containerPort": config.metrics.prometheus_exporter.port, "name": "metrics"},
    ]
    if head:
        ports += [
            {"containerPort": 6379, "name": "gcs-server"},
            {"containerPort": 8265, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
        ]
    return {
        "name": "ray-head" if head else "ray-worker",
        "image": image,
        "env": _env(config, device),
        "ports": ports,
        "volumeMounts": _mounts(config, backups=head)[0],
    }


def _start_params(config: ServiceConfig, **extra: str) -> dict[str, str]:
    return {"metrics-export-port": str(config.metrics.prometheus_exporter.port), **extra}


def _head_group(config: ServiceConfig, device: Device, image: str) -> dict[str, Any]:
    container = _container(config, device, image, head=True)
    size = {"cpu": "4", "memory": "8Gi"}
    container["resources"] = {"limits": dict(size), "requests": dict(size)}
    return {
        # Replicas stay off the head: it runs the GCS and the Serve controller.
        "rayStartParams": _start_params(config, **{"num-cpus": "0", "dashboard-host": "0.0.0.0"}),
        "template": {
            "spec": {"containers": [container], "volumes": _mounts(config, backups=True)[1]}
        },
    }


def _worker_group(
    config: ServiceConfig, device: Device, image: str, *, gpu: bool
) -> dict[str, Any]:
    res = replica_resources(config)
    per_node = replicas_per_node(config, gpu=gpu)
    container = {**_container(config, device, image, head=False), **_worker_probes(config)}
    memory = per_node * (res.memory + res.object_store_memory) + NODE_OVERHEAD_BYTES
    limits: dict[str, Any] = {"cpu": str(NODE_CPUS), "memory": _gib(memory)}
    if gpu:
        limits["nvidia.com/gpu"] = GPUS_PER_NODE
    container["resources"] = {"limits": limits, "requests": dict(limits)}
    pod: dict[str, Any] = {"containers": [container], "volumes": _mounts(config, backups=False)[1]}
    if gpu:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    # The CPU group also hosts the gateway replicas: one node more than the predictors need.
    max_nodes = math.ceil(_max_predictors(config) / per_node) + (0 if gpu else 1)
    minimum = 0 if gpu else 1
    store = str(worker_object_store_bytes(config, gpu=gpu))
    return {
        "groupName": "gpu-workers" if gpu else "cpu-workers",
        "replicas": minimum,
        "minReplicas": minimum,
        "maxReplicas": max_nodes,
        "rayStartParams": _start_params(config, **{"object-store-memory": store}),
        "template": {"spec": pod},
    }


def rayservice(
    config: ServiceConfig, config_text: str, *, device: Device, image: str
) -> list[dict[str, Any]]:
    """The ConfigMap holding the service config, and the RayService that serves it."""
    serve_config = build_serve_config(config, config_path=CONFIG_FILE, device=device)
    labels = {"app.kubernetes.io/name": NAME}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{NAME}-config", "labels": labels},
        "data": {"config.yaml": config_text},
    }
    spec = {
        # A changed cluster spec comes up beside the old one and takes traffic only once
        # its Serve applications are RUNNING: a bad version never replaces a good one.
        "upgradeStrategy": {"type": "NewCluster"},
        "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False, width=100),
        "rayClusterConfig": {
            "rayVersion": RAY_VERSION,
            "enableInTreeAutoscaling": True,
            "headGroupSpec": _head_group(config, device, image),
            "workerGroupSpecs": [
                _worker_group(config, device, image, gpu=False),
                _worker_group(config, device, image, gpu=True),
            ],
        },
    }
    service = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": NAME, "labels": labels},
        "spec": spec,
    }
    return [configmap, service]


def backup_cronjobs(config: ServiceConfig, *, image: str) -> list[dict[str, Any]]:
    """Spec 10's two schedules, each running ``cnnlstm backup models|configs``."""
    mounts, volumes = _mounts(config, backups=True, secrets=False)
    jobs = []
    for kind, backup in (("models", config.model_backup), ("configs", config.config_backup)):
        container = {
            "name": f"backup-{kind}",
            "image": image,
            "command": ["cnnlstm", "--config", CONFIG_FILE, "backup", kind],
            "env": [{"name": "MODEL_REGISTRY_PATH", "value": str(config.model_registry.path)}],
            "volumeMounts": mounts,
            "resources": {
                "requests": {"cpu": "250m", "memory": "512Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
        }
        pod = {"restartPolicy": "OnFailure", "containers": [container], "volumes": volumes}
        jobs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {
                    "name": f"{NAME}-backup-{kind}",
                    "labels": {"app.kubernetes.io/name": NAME},
                },
                "spec": {
                    "schedule": backup.schedule,
                    "timeZone": backup.timezone,
                    "suspend": not backup.enabled,
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {"spec": {"backoffLimit": 2, "template": {"spec": pod}}},
                },
            }
        )
    return jobs


def render_kuberay(
    config: ServiceConfig, config_file: Path, *, device: Device, image: str, command: str
) -> tuple[str, str]:
    """(deploy/kuberay/rayservice.yaml, deploy/k8s/backup-cronjobs.yaml) texts."""
    header = f"Generated by `{command}`. Do not edit: change the service config and rerun."
    text = config_file.read_text(encoding="utf-8")
    return (
        dump_documents(rayservice(config, text, device=device, image=image), header),
        dump_documents(backup_cronjobs(config, image=image), header),
    )

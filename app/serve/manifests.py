"""Kubernetes manifests: a KubeRay ``RayService`` (ray.io/v1), the backup CronJobs, the
cluster objects around them and Secret templates.

Generated from the service config by ``cnnlstm config render-kuberay`` so they cannot
drift from it: ``serveConfigV2`` is :func:`app.serve.serve_yaml.build_serve_config` for
the same config, the config file itself ships as a ConfigMap, and node sizes follow the
per-replica resources. Pods, probes and security: :mod:`app.serve.k8s_pods`; network
policy, volumes, PodMonitor, PodDisruptionBudget, Secret templates:
:mod:`app.serve.k8s_cluster`.

Ray token auth: every Ray container gets ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``
from the ``cnnlstm-ray-token`` Secret, and ``authOptions`` names the same Secret so the
KubeRay operator (>= 1.6) authenticates its own dashboard calls with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import yaml

from app.config import ServiceConfig
from app.serve.k8s_cluster import cluster_objects, secret_templates
from app.serve.k8s_pods import (
    CONFIG_DIR,
    CONFIG_FILE,
    NAME,
    RAY_TOKEN_SECRET,
    container_security_context,
    gateway_group,
    head_group,
    labels,
    mounts,
    pod_security_context,
    predictor_group,
    replicas_per_node,
    worker_object_store_bytes,
)
from app.serve.options import Device
from app.serve.serve_yaml import build_serve_config

__all__ = [
    "CONFIG_DIR",
    "CONFIG_FILE",
    "NAME",
    "PLACEHOLDER_IMAGE",
    "replicas_per_node",
    "worker_object_store_bytes",
]

RAY_VERSION = "2.60.0"
# Rendered when no --image is given: an unresolvable registry (.invalid is reserved), so a
# manifest applied without a real image fails at the pull instead of running a stale one.
PLACEHOLDER_IMAGE = "REPLACE_ME.invalid/cnnlstm:set-me"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2, the ConfigMap) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_documents(docs: list[dict[str, Any]], header: str) -> str:
    body = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=100)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def rayservice(
    config: ServiceConfig, config_text: str, *, device: Device, image: str
) -> list[dict[str, Any]]:
    """The ConfigMap holding the service config, and the RayService that serves it."""
    serve_config = build_serve_config(config, config_path=CONFIG_FILE, device=device)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{NAME}-config", "labels": labels()},
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
            # KubeRay injects the autoscaler sidecar into the head pod with no securityContext
            # of its own: without this, the restricted Pod Security Standard rejects the pod.
            "autoscalerOptions": {"securityContext": container_security_context()},
            # KubeRay >= 1.6: the operator reads the token from this Secret for its own
            # dashboard calls (and would inject the env below if it were missing).
            "authOptions": {"mode": "token", "secretName": RAY_TOKEN_SECRET},
            "headGroupSpec": head_group(config, device, image),
            "workerGroupSpecs": [
                gateway_group(config, device, image),
                predictor_group(config, device, image),
            ],
        },
    }
    service = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": NAME, "labels": labels()},
        "spec": spec,
    }
    return [configmap, service]


def backup_cronjobs(config: ServiceConfig, *, image: str) -> list[dict[str, Any]]:
    """Spec 10's two schedules, each running ``cnnlstm backup models|configs``."""
    volume_mounts, volumes = mounts(config, backups=True, secrets=False)
    jobs = []
    for kind, backup in (("models", config.model_backup), ("configs", config.config_backup)):
        container = {
            "name": f"backup-{kind}",
            "image": image,
            "command": ["cnnlstm", "--config", CONFIG_FILE, "backup", kind],
            "env": [{"name": "MODEL_REGISTRY_PATH", "value": str(config.model_registry.path)}],
            "volumeMounts": volume_mounts,
            "resources": {
                "requests": {"cpu": "250m", "memory": "512Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
            "securityContext": container_security_context(),
        }
        pod = {
            "restartPolicy": "OnFailure",
            "securityContext": pod_security_context(),
            "containers": [container],
            "volumes": volumes,
        }
        jobs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": f"{NAME}-backup-{kind}", "labels": labels()},
                "spec": {
                    "schedule": backup.schedule,
                    "timeZone": backup.timezone,
                    "suspend": not backup.enabled,
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {
                        "spec": {
                            "backoffLimit": 2,
                            "template": {"metadata": {"labels": labels("backup")}, "spec": pod},
                        }
                    },
                },
            }
        )
    return jobs


class KubeRayFiles(NamedTuple):
    rayservice: str  # deploy/kuberay/rayservice.yaml: ConfigMap + RayService
    cronjobs: str  # deploy/k8s/backup-cronjobs.yaml
    cluster: str  # deploy/k8s/cluster.yaml: PVCs, NetworkPolicy, PDB, PodMonitor
    secrets: str  # deploy/k8s/secrets.template.yaml: placeholders only


def render_kuberay(
    config: ServiceConfig, config_file: Path, *, device: Device, image: str, command: str
) -> KubeRayFiles:
    """The texts of every generated Kubernetes file, each headed by ``command``."""
    header = f"Generated by `{command}`. Do not edit: change the service config and rerun."
    text = config_file.read_text(encoding="utf-8")
    secrets_header = (
        f"{header}\nA TEMPLATE: every value is a placeholder. Create the real Secrets with "
        "`kubectl create secret` (deploy/README.md), never by applying this file unedited."
    )
    return KubeRayFiles(
        dump_documents(rayservice(config, text, device=device, image=image), header),
        dump_documents(backup_cronjobs(config, image=image), header),
        dump_documents(cluster_objects(config), header),
        dump_documents(secret_templates(config), secrets_header),
    )

"""Cluster objects around the RayService: volumes, network policy, disruption budget,
Prometheus Operator scrape config, and Secret *templates* (placeholders, never values).

Network policy (ingress to every Ray pod of this service):

- anyone: the HTTPS serving port only (``serving.http_port``, 8000);
- the cluster's own Ray pods: everything (GCS, raylets, object transfer, workers' gRPC);
- pods labelled ``cnnlstm.io/access: operator`` (any namespace): the control plane
  (dashboard 8265, GCS 6379, Ray client 10001, metrics 9090, agent 52365, Serve's proxy);
- pods labelled ``cnnlstm.io/access: monitoring`` (any namespace): metrics 9090;
- the KubeRay operator (``app.kubernetes.io/name: kuberay-operator``): the dashboard, the
  agent and the serving port, which it needs to deploy ``serveConfigV2`` and check health.
"""

from __future__ import annotations

from typing import Any

from app.config import ServiceConfig
from app.serve.k8s_pods import (
    AGENT_PORT,
    CLIENT_PORT,
    COMPONENT_LABEL,
    DASHBOARD_PORT,
    GATEWAY,
    GCS_PORT,
    NAME,
    NAME_LABEL,
    RAY_COMPONENTS,
    RAY_TOKEN_KEY,
    RAY_TOKEN_SECRET,
    labels,
    state_dir,
)

ACCESS_LABEL = "cnnlstm.io/access"
OPERATOR, MONITORING = "operator", "monitoring"
KUBERAY_OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}
PLACEHOLDER = "REPLACE_ME"
# The scrape jobs of deploy/prometheus/*.yml, which alerts.yml (MetricsTargetDown) and the
# dashboard select on. The Prometheus Operator would name them "<namespace>/<PodMonitor>".
RAY_NODES_JOB, GATEWAY_JOB = "ray-nodes", "cnnlstm-gateway"
VOLUME_SIZES = {"models": "50Gi", "backups": "200Gi", "state": "1Gi"}


def ray_pod_selector() -> dict[str, Any]:
    return {
        "matchLabels": {NAME_LABEL: NAME},
        "matchExpressions": [
            {"key": COMPONENT_LABEL, "operator": "In", "values": list(RAY_COMPONENTS)}
        ],
    }


def control_ports(config: ServiceConfig) -> list[int]:
    """Every port a Ray pod of this service listens on except the serving port."""
    ports = [GCS_PORT, DASHBOARD_PORT, CLIENT_PORT, config.metrics.prometheus_exporter.port]
    ports += [AGENT_PORT]
    if config.serving.ingress == "direct":
        ports.append(config.serving.proxy_port)
    return ports


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _anywhere(pod_labels: dict[str, str]) -> dict[str, Any]:
    """Pods with these labels in any namespace (a bare podSelector means this one only)."""
    return {"namespaceSelector": {}, "podSelector": {"matchLabels": pod_labels}}


def network_policy(config: ServiceConfig) -> dict[str, Any]:
    http = config.serving.http_port
    metrics = config.metrics.prometheus_exporter.port
    rules = [
        {"ports": _tcp(http)},  # clients: HTTPS only, from anywhere
        {"from": [{"podSelector": ray_pod_selector()}]},  # Ray's own traffic, all ports
        {"from": [_anywhere({ACCESS_LABEL: OPERATOR})], "ports": _tcp(*control_ports(config))},
        {"from": [_anywhere({ACCESS_LABEL: MONITORING})], "ports": _tcp(metrics)},
        {"from": [_anywhere(KUBERAY_OPERATOR)], "ports": _tcp(DASHBOARD_PORT, AGENT_PORT, http)},
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": NAME, "labels": labels()},
        "spec": {"podSelector": ray_pod_selector(), "policyTypes": ["Ingress"], "ingress": rules},
    }


def pod_disruption_budget(config: ServiceConfig) -> dict[str, Any]:
    """Voluntary disruptions (drains) take at most one gateway pod at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{NAME}-gateway", "labels": labels()},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": labels(GATEWAY)},
        },
    }


def _job(name: str) -> dict[str, str]:
    return {"targetLabel": "job", "replacement": name}


def pod_monitor(config: ServiceConfig) -> dict[str, Any]:
    """Ray's exporter (``metrics``, every pod) and each gateway's own ``/metrics``."""
    interval = f"{max(1, round(config.metrics.collection_interval_s))}s"
    component_meta = "__meta_kubernetes_pod_label_" + "".join(
        c if c.isalnum() else "_" for c in COMPONENT_LABEL
    )
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": NAME, "labels": labels()},
        "spec": {
            "selector": ray_pod_selector(),
            "podMetricsEndpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": interval,
                    "relabelings": [_job(RAY_NODES_JOB)],
                    # GPU predictors' NVML readings under the spec 6.1 name (deploy/METRICS.md).
                    "metricRelabelings": [
                        {
                            "sourceLabels": ["__name__"],
                            "regex": "ray_(gpu_utilization)",
                            "targetLabel": "__name__",
                            "replacement": "$1",
                        }
                    ],
                },
                {
                    "port": "serve",
                    "scheme": "https",
                    "path": config.monitoring_integration.prometheus.endpoint,
                    "interval": interval,
                    # The serving certificate names the public host, not the pod IP.
                    "tlsConfig": {"insecureSkipVerify": True},
                    "relabelings": [
                        {
                            "sourceLabels": [component_meta],
                            "regex": GATEWAY,
                            "action": "keep",
                        },
                        _job(GATEWAY_JOB),
                    ],
                },
            ],
        },
    }


def volume_claims(config: ServiceConfig) -> list[dict[str, Any]]:
    """Registry and backups, shared by every node (ReadWriteMany); state when it has its
    own directory outside the registry (``blue_green_deployment.state_path``)."""
    kinds = ["models", "backups"] + (["state"] if state_dir(config) else [])
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"{NAME}-{kind}", "labels": labels()},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": VOLUME_SIZES[kind]}},
            },
        }
        for kind in kinds
    ]


def cluster_objects(config: ServiceConfig) -> list[dict[str, Any]]:
    return [
        *volume_claims(config),
        network_policy(config),
        pod_disruption_budget(config),
        pod_monitor(config),
    ]


def _secret(name: str, data: dict[str, str], kind: str = "Opaque") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels()},
        "type": kind,
        "stringData": data,
    }


def secret_templates(config: ServiceConfig) -> list[dict[str, Any]]:
    """The three Secrets the pods mount or read, every value a placeholder."""
    tls = config.network_security.tls
    auth = config.security.authentication
    files = [auth.jwt_secret_path, auth.api_key_store_path]
    if auth.client_store_path is not None:
        files.append(auth.client_store_path)
    return [
        _secret(
            f"{NAME}-tls",
            {
                "tls.crt": f"{PLACEHOLDER}: PEM certificate chain for {tls.cert_path.name}",
                "tls.key": f"{PLACEHOLDER}: PEM private key for {tls.key_path.name}",
            },
            "kubernetes.io/tls",
        ),
        _secret(
            f"{NAME}-secrets",
            {path.name: f"{PLACEHOLDER}: contents of {path.name}" for path in files},
        ),
        _secret(RAY_TOKEN_SECRET, {RAY_TOKEN_KEY: f"{PLACEHOLDER}: openssl rand -hex 32"}),
    ]

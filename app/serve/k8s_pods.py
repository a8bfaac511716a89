"""The pods of the KubeRay cluster: containers, probes, security, Ray token auth.

Three kinds of Ray pod, each labelled ``app.kubernetes.io/component``:

- ``ray-head``: GCS, dashboard, Serve controller; ``num-cpus: 0``, so no replica runs there.
  KubeRay injects its own probes (raylet + GCS health; it never gates the head on Serve,
  since an unready head drops the Service workers join through).
- ``gateway`` (group ``cpu-workers``): the pods the gateway replicas are meant for, one per
  gateway replica. With direct ingress a gateway replica serves HTTPS on ``http_port``
  itself, so these pods' readiness is ``GET /ready`` on that port (spec 5 timings) and
  their liveness the spec 5 ``/healthz`` through :mod:`app.serve.probe` (which falls back
  to the raylet check while no gateway has been placed on the pod yet).
- ``predictor`` (group ``gpu-workers``): model replicas only; nothing listens on
  ``http_port`` there, so liveness asks the node's dashboard agent for the raylet's health
  (a public endpoint, also under token auth), and readiness stays the serving check, which
  never passes there: KubeRay's Serve Service sends clients to every ready worker pod.

Every pod (and every CronJob pod) runs as uid/gid 1000 (the image's ``ray`` user) with no
privilege escalation, no capabilities and the runtime's default seccomp profile.
"""

from __future__ import annotations

import json
import math
from typing import Any

from app.config import Probe, ServiceConfig
from app.config.resources import replica_resources
from app.serve.options import Device, replica_ceiling
from app.serve.serve_env import serve_env_vars

NAME = "cnnlstm"
CONFIG_DIR = "/etc/cnnlstm"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
NODE_CPUS = 8
GPUS_PER_NODE = 1
NODE_OVERHEAD_BYTES = 2 * 1024**3  # raylet, proxy, gateway replicas, page cache slack
GIB = 1024**3

# Ray's fixed ports (Ray 2.60 defaults; KubeRay names the head's).
GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
AGENT_PORT = 52365  # dashboard agent: /api/local_raylet_healthz, public under token auth
RAYLET_HEALTH_PATH = "/api/local_raylet_healthz"
RAYLET_HEALTH = f"http://127.0.0.1:{AGENT_PORT}{RAYLET_HEALTH_PATH}"

# Ray token authentication (Ray >= 2.52; names from ray/_private/authentication/ and
# KubeRay's utils: RAY_AUTH_MODE, RAY_AUTH_TOKEN, Secret data key ``auth_token``).
RAY_TOKEN_SECRET = f"{NAME}-ray-token"
RAY_TOKEN_KEY = "auth_token"  # noqa: S105 - the Secret data key, not a value

# The node half of pinning the gateway to its group: every gateway pod offers one unit.
# Serve places a gateway replica there only once the gateway's ray_actor_options ask for
# it (``resources: {cnnlstm_gateway: 1}``); see deploy/README.md, "Kubernetes".
GATEWAY_RESOURCE = "cnnlstm_gateway"

UID = GID = 1000  # the image's `ray` user (deploy/Dockerfile)

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
HEAD, GATEWAY, PREDICTOR = "ray-head", "gateway", "predictor"
RAY_COMPONENTS = (HEAD, GATEWAY, PREDICTOR)


def labels(component: str | None = None) -> dict[str, str]:
    out = {NAME_LABEL: NAME}
    if component is not None:
        out[COMPONENT_LABEL] = component
    return out


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": GID,
        "fsGroup": GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": GID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def gib(n: float) -> str:
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


def _probe(probe: Probe, handler: dict[str, Any]) -> dict[str, Any]:
    return {
        **handler,
        "initialDelaySeconds": math.ceil(probe.initial_delay_s),
        "periodSeconds": math.ceil(probe.period_s),
        "timeoutSeconds": math.ceil(probe.timeout_s),
        "failureThreshold": probe.failure_threshold,
    }


def serving_readiness(config: ServiceConfig) -> dict[str, Any]:
    """Spec 5.2 ``GET /ready`` on the port a gateway replica serves (HTTPS, direct ingress).

    Every Ray worker pod's readiness: KubeRay labels each RayService worker pod
    ``ray.io/serve=true`` and its Serve Service (``<name>-serve-svc``, port 8000) sends
    clients to every *ready* one, so a pod must be ready only while it serves there.
    """
    ready = config.readiness_probe
    return _probe(ready, {"httpGet": {"path": ready.path, "port": ready.port, "scheme": "HTTPS"}})


def gateway_probes(config: ServiceConfig) -> dict[str, Any]:
    """Spec 5 on the port the pod's gateway replica serves (HTTPS, direct ingress)."""
    live = config.liveness_probe
    url = f"https://127.0.0.1:{live.port}{live.path}"
    # The probe's own HTTP timeout ends before the kubelet's, so a hang reports as a
    # failure from the probe instead of a killed exec.
    timeout = f"{max(1.0, live.timeout_s - 2):g}"
    live_cmd = ["python", "-m", "app.serve.probe", "--url", url, "--timeout", timeout]
    live_cmd += ["--fallback", RAYLET_HEALTH]
    return {
        "livenessProbe": _probe(live, {"exec": {"command": live_cmd}}),
        "readinessProbe": serving_readiness(config),
    }


def predictor_probes(config: ServiceConfig) -> dict[str, Any]:
    """A predictor-only pod is alive while its raylet is (through its dashboard agent), and
    never ready: nothing serves clients there, so it stays out of KubeRay's Serve Service
    (:func:`serving_readiness`), as KubeRay's own probe keeps proxy-less workers out."""
    raylet = {"httpGet": {"path": RAYLET_HEALTH_PATH, "port": AGENT_PORT, "scheme": "HTTP"}}
    return {
        "livenessProbe": _probe(config.liveness_probe, raylet),
        "readinessProbe": serving_readiness(config),
    }


def ray_auth_env() -> list[dict[str, Any]]:
    """Token auth on every Ray container, the token from the ``cnnlstm-ray-token`` Secret."""
    return [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {
            "name": "RAY_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": RAY_TOKEN_SECRET, "key": RAY_TOKEN_KEY}},
        },
    ]


def app_env(config: ServiceConfig, device: Device) -> list[dict[str, Any]]:
    values = {
        "DEVICE": device,
        "MODEL_REGISTRY_PATH": str(config.model_registry.path),
        "LOG_LEVEL": config.logging.level,
        "CNNLSTM_CONFIG": CONFIG_FILE,
        **serve_env_vars(config),
    }
    return [{"name": k, "value": v} for k, v in values.items()] + ray_auth_env()


def claim(what: str) -> dict[str, str]:
    return {"claimName": f"{NAME}-{what}"}


def state_dir(config: ServiceConfig) -> str | None:
    """Where rollout state lives when it is outside the registry (its own volume)."""
    path = config.blue_green_deployment.state_path
    if path is None or path.is_relative_to(config.model_registry.path):
        return None
    return str(path.parent)


def mounts(
    config: ServiceConfig, *, backups: bool, secrets: bool = True
) -> tuple[list[Any], list[Any]]:
    """(volumeMounts, volumes): registry, config, and as asked TLS + secrets and backups."""
    tls_dir = str(config.network_security.tls.cert_path.parent)
    secrets_dir = str(config.security.authentication.jwt_secret_path.parent)
    pairs: list[tuple[str, str, dict[str, Any]]] = [
        ("models", str(config.model_registry.path), {"persistentVolumeClaim": claim("models")}),
        ("tls", tls_dir, {"secret": {"secretName": f"{NAME}-tls"}}),
        ("secrets", secrets_dir, {"secret": {"secretName": f"{NAME}-secrets"}}),
        ("config", CONFIG_DIR, {"configMap": {"name": f"{NAME}-config"}}),
    ]
    if not secrets:  # backup jobs never need key material
        pairs = [pair for pair in pairs if pair[0] not in {"tls", "secrets"}]
    if (state := state_dir(config)) is not None and secrets:
        pairs.append(("state", state, {"persistentVolumeClaim": claim("state")}))
    if backups:
        pairs.append(("backups", "/backups", {"persistentVolumeClaim": claim("backups")}))
    read_only = {"tls", "secrets", "config"}
    volume_mounts = [{"name": n, "mountPath": p, "readOnly": n in read_only} for n, p, _ in pairs]
    return volume_mounts, [{"name": n, **src} for n, _, src in pairs]


def _container(
    config: ServiceConfig, device: Device, image: str, *, component: str
) -> dict[str, Any]:
    ports = []
    if component == GATEWAY:
        ports.append({"containerPort": config.serving.http_port, "name": "serve"})
    ports += [
        {"containerPort": config.metrics.prometheus_exporter.port, "name": "metrics"},
        {"containerPort": AGENT_PORT, "name": "raylet-health"},
    ]
    if component == HEAD:
        ports += [
            {"containerPort": GCS_PORT, "name": "gcs-server"},
            {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
            {"containerPort": CLIENT_PORT, "name": "client"},
        ]
    return {
        "name": "ray-head" if component == HEAD else "ray-worker",
        "image": image,
        "env": app_env(config, device),
        "ports": ports,
        "volumeMounts": mounts(config, backups=component == HEAD)[0],
        "securityContext": container_security_context(),
    }


def ray_resources(resources: dict[str, float]) -> str:
    """``--resources`` as KubeRay passes it through a shell: JSON in escaped quotes."""
    text = json.dumps(resources, separators=(",", ":"))
    return '"' + text.replace('"', '\\"') + '"'


def _start_params(config: ServiceConfig, **extra: str) -> dict[str, str]:
    return {"metrics-export-port": str(config.metrics.prometheus_exporter.port), **extra}


def _template(component: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels(component)},
        "spec": {"securityContext": pod_security_context(), **pod},
    }


def head_group(config: ServiceConfig, device: Device, image: str) -> dict[str, Any]:
    container = _container(config, device, image, component=HEAD)
    size = {"cpu": "4", "memory": "8Gi"}
    container["resources"] = {"limits": dict(size), "requests": dict(size)}
    volumes = mounts(config, backups=True)[1]
    return {
        # Replicas stay off the head: it runs the GCS and the Serve controller.
        "rayStartParams": _start_params(config, **{"num-cpus": "0", "dashboard-host": "0.0.0.0"}),
        "template": _template(HEAD, {"containers": [container], "volumes": volumes}),
    }


def gateway_group(config: ServiceConfig, device: Device, image: str) -> dict[str, Any]:
    """``cpu-workers``: one pod per gateway replica (and, with ``--device cpu``, room for
    predictors that Ray may place beside them)."""
    res = replica_resources(config)
    per_node = replicas_per_node(config, gpu=False)
    container = {**_container(config, device, image, component=GATEWAY), **gateway_probes(config)}
    memory = per_node * (res.memory + res.object_store_memory) + NODE_OVERHEAD_BYTES
    limits: dict[str, Any] = {"cpu": str(NODE_CPUS), "memory": gib(memory)}
    container["resources"] = {"limits": limits, "requests": dict(limits)}
    gateways = config.serving.gateway.num_replicas
    extra = 0 if device == "gpu" else math.ceil(replica_ceiling(config) / per_node)
    store = str(worker_object_store_bytes(config, gpu=False))
    params = {"object-store-memory": store, "resources": ray_resources({GATEWAY_RESOURCE: 1})}
    volumes = mounts(config, backups=False)[1]
    return {
        "groupName": "cpu-workers",
        "replicas": gateways,
        "minReplicas": gateways,
        "maxReplicas": gateways + extra,
        "rayStartParams": _start_params(config, **params),
        "template": _template(GATEWAY, {"containers": [container], "volumes": volumes}),
    }


def predictor_group(config: ServiceConfig, device: Device, image: str) -> dict[str, Any]:
    """``gpu-workers``: predictor replicas only, 1 GPU each, from 0 nodes."""
    res = replica_resources(config)
    per_node = replicas_per_node(config, gpu=True)
    container = {
        **_container(config, device, image, component=PREDICTOR),
        **predictor_probes(config),
    }
    memory = per_node * (res.memory + res.object_store_memory) + NODE_OVERHEAD_BYTES
    limits: dict[str, Any] = {"cpu": str(NODE_CPUS), "memory": gib(memory)}
    limits["nvidia.com/gpu"] = GPUS_PER_NODE
    container["resources"] = {"limits": limits, "requests": dict(limits)}
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": mounts(config, backups=False)[1],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    store = str(worker_object_store_bytes(config, gpu=True))
    return {
        "groupName": "gpu-workers",
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": math.ceil(replica_ceiling(config) / per_node),
        "rayStartParams": _start_params(config, **{"object-store-memory": store}),
        "template": _template(PREDICTOR, pod),
    }

"""The generated Kubernetes files: schema-valid offline, safe, and probing what each pod serves.

Core kinds (ConfigMap, CronJob, PVC, NetworkPolicy, PDB, Secret) are validated strictly
against the Kubernetes OpenAPI schemas that ``kubernetes-validate`` ships. The two CRDs are
not among them: the RayService and the PodMonitor are checked against the minimal JSON
schemas below (the fields we set, unknown keys refused), and every pod template inside the
RayService is validated as a core ``v1/PodTemplate``, so containers, probes and security
contexts get the full Kubernetes schema.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.config import load_config_file
from app.serve.k8s_cluster import ACCESS_LABEL, PLACEHOLDER, control_ports
from app.serve.k8s_pods import AGENT_PORT, GATEWAY_RESOURCE, RAY_TOKEN_KEY, RAY_TOKEN_SECRET
from app.serve.manifests import PLACEHOLDER_IMAGE
from tests.unit.ops.ops_cli import ROOT, generator_command, run_cli

K8S_VERSION = "1.30.0"
FILES = {
    "rayservice": "deploy/kuberay/rayservice.yaml",
    "cronjobs": "deploy/k8s/backup-cronjobs.yaml",
    "cluster": "deploy/k8s/cluster.yaml",
    "secrets": "deploy/k8s/secrets.template.yaml",
}
ALL_FILES = list(FILES.values())


def load(rel: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / rel).read_text(encoding="utf-8")) if d]


def every_doc() -> list[dict[str, Any]]:
    return [doc for rel in ALL_FILES for doc in load(rel)]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in every_doc() if doc["kind"] == kind]


def rayservice() -> dict[str, Any]:
    (service,) = by_kind("RayService")
    return service


def groups() -> dict[str, dict[str, Any]]:
    cluster = rayservice()["spec"]["rayClusterConfig"]
    out = {"head": cluster["headGroupSpec"]}
    out.update({g["groupName"]: g for g in cluster["workerGroupSpecs"]})
    return out


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod spec: Ray groups and CronJobs."""
    specs = {name: g["template"]["spec"] for name, g in groups().items()}
    for job in by_kind("CronJob"):
        specs[job["metadata"]["name"]] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


# --- drift ------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_every_kubernetes_file_matches_its_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    for rel in ALL_FILES:
        (tmp_path / rel).unlink()
    monkeypatch.chdir(tmp_path)
    argv = generator_command(ROOT / FILES["rayservice"])
    assert run_cli(argv) == 0
    for rel in ALL_FILES:
        assert generator_command(ROOT / rel) == argv, f"{rel} was made by another command"
        fresh = (tmp_path / rel).read_text(encoding="utf-8")
        assert fresh == (ROOT / rel).read_text(encoding="utf-8"), f"{rel} is stale"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_REGISTRY_PATH", "LOG_LEVEL", "DEVICE", "CNNLSTM_CONFIG"):
        monkeypatch.delenv(name, raising=False)


# --- schemas ----------------------------------------------------------------------------

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJ = {"type": "object"}
_GROUP_COMMON = {"rayStartParams": _STR_MAP, "template": _OBJ}
RAYSERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "labels": _STR_MAP},
        },
        "spec": {
            "type": "object",
            "required": ["serveConfigV2", "rayClusterConfig"],
            "additionalProperties": False,
            "properties": {
                "upgradeStrategy": {
                    "type": "object",
                    "properties": {"type": {"enum": ["NewCluster", "None"]}},
                    "additionalProperties": False,
                },
                "serveConfigV2": {"type": "string"},
                "rayClusterConfig": {
                    "type": "object",
                    "required": ["rayVersion", "headGroupSpec", "workerGroupSpecs"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "autoscalerOptions": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"securityContext": _OBJ},
                        },
                        "authOptions": {
                            "type": "object",
                            "required": ["mode"],
                            "additionalProperties": False,
                            "properties": {
                                "mode": {"enum": ["disabled", "token"]},
                                "secretName": {"type": "string"},
                            },
                        },
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["rayStartParams", "template"],
                            "additionalProperties": False,
                            "properties": _GROUP_COMMON,
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["groupName", "maxReplicas", "template"],
                                "additionalProperties": False,
                                "properties": {
                                    **_GROUP_COMMON,
                                    "groupName": {"type": "string"},
                                    "replicas": {"type": "integer", "minimum": 0},
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                    "maxReplicas": {"type": "integer", "minimum": 0},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
PODMONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": _OBJ,
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "tlsConfig": {
                                "type": "object",
                                "properties": {"insecureSkipVerify": {"type": "boolean"}},
                                "additionalProperties": False,
                            },
                            "relabelings": {"type": "array", "items": _OBJ},
                            "metricRelabelings": {"type": "array", "items": _OBJ},
                        },
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {"RayService": RAYSERVICE_SCHEMA, "PodMonitor": PODMONITOR_SCHEMA}


def _id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("doc", every_doc(), ids=_id)
def test_every_manifest_is_schema_valid(doc: dict[str, Any]) -> None:
    if doc["kind"] in CRD_SCHEMAS:
        jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("group", list(groups()))
def test_every_ray_pod_template_is_a_valid_pod_template(group: str) -> None:
    template = groups()[group]["template"]
    wrapped = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": group},
        "template": template,
    }
    kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    (claim, *_) = by_kind("PersistentVolumeClaim")
    broken = {**claim, "spec": {**claim["spec"], "accessModes": "ReadWriteMany"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    service = rayservice()
    typo = {**service, "spec": {**service["spec"], "serveConfig": "x"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, RAYSERVICE_SCHEMA)


# --- probes -----------------------------------------------------------------------------


def _probe_port(probe: dict[str, Any]) -> set[int]:
    if "httpGet" in probe:
        return {int(probe["httpGet"]["port"])}
    if "exec" in probe:  # app.serve.probe --url U [--fallback F]: the ports of both URLs
        cmd = probe["exec"]["command"]
        urls = [cmd[i + 1] for i, arg in enumerate(cmd) if arg in ("--url", "--fallback")]
        return {int(url.split("://")[1].split("/")[0].rsplit(":", 1)[1]) for url in urls}
    raise AssertionError(f"unexpected probe {probe}")


def test_every_liveness_probe_targets_a_port_its_pod_serves() -> None:
    # Readiness is the serving check on every worker pod, on purpose: a pod that does not
    # serve there must never be ready (test_only_pods_serving_https_can_become_ready).
    for name, group in groups().items():
        for container in group["template"]["spec"]["containers"]:
            served = {p["containerPort"] for p in container["ports"]}
            for kind in ("livenessProbe", "startupProbe"):
                if kind in container:
                    missing = _probe_port(container[kind]) - served
                    assert not missing, f"{name} {kind} probes {missing}, serves {served}"


def test_only_the_gateway_group_serves_8000() -> None:
    config = load_config_file(ROOT / "deploy/config.yaml")
    http = config.serving.http_port
    gateway = groups()["cpu-workers"]
    assert gateway["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    # One pod per gateway replica, each offering the gateway resource once.
    replicas = config.serving.gateway.num_replicas
    assert gateway["minReplicas"] == gateway["replicas"] == replicas
    assert f'\\"{GATEWAY_RESOURCE}\\":1' in gateway["rayStartParams"]["resources"]
    ready = gateway["template"]["spec"]["containers"][0]["readinessProbe"]
    assert ready["httpGet"] == {"path": "/ready", "port": http, "scheme": "HTTPS"}
    predictor = groups()["gpu-workers"]["template"]["spec"]["containers"][0]
    assert http not in {p["containerPort"] for p in predictor["ports"]}
    # Alive with its raylet; never ready (see test_only_pods_serving_https_can_become_ready).
    assert predictor["livenessProbe"]["httpGet"]["port"] == AGENT_PORT
    assert predictor["livenessProbe"]["httpGet"]["path"] == "/api/local_raylet_healthz"


# --- security ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(pod_specs()))
def test_every_pod_runs_non_root_without_privileges(name: str) -> None:
    pod = pod_specs()[name]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (1000,) * 3
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        own = container["securityContext"]
        assert own["allowPrivilegeEscalation"] is False
        assert own["capabilities"] == {"drop": ["ALL"]}
        assert own.get("runAsUser", 1000) != 0
        assert own.get("privileged", False) is False


@pytest.mark.parametrize("group", ["head", "cpu-workers", "gpu-workers"])
def test_ray_token_auth_on_every_ray_container(group: str) -> None:
    for container in groups()[group]["template"]["spec"]["containers"]:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": RAY_TOKEN_SECRET, "key": RAY_TOKEN_KEY}
        assert "value" not in env["RAY_AUTH_TOKEN"]
    auth = rayservice()["spec"]["rayClusterConfig"]["authOptions"]
    assert auth == {"mode": "token", "secretName": RAY_TOKEN_SECRET}


def test_secrets_are_templates_with_placeholders_only() -> None:
    secrets = by_kind("Secret")
    assert {s["metadata"]["name"] for s in secrets} == {
        "cnnlstm-tls",
        "cnnlstm-secrets",
        RAY_TOKEN_SECRET,
    }
    for secret in secrets:
        assert "data" not in secret
        for key, value in secret["stringData"].items():
            assert value.startswith(PLACEHOLDER), f"{_id(secret)} {key} holds a value"
    # Only the template file holds Secrets: applying the others never overwrites real ones.
    for rel in (FILES["rayservice"], FILES["cronjobs"], FILES["cluster"]):
        assert all(doc["kind"] != "Secret" for doc in load(rel))


def test_committed_manifests_use_the_placeholder_image() -> None:
    images = {c["image"] for pod in pod_specs().values() for c in pod["containers"] if "image" in c}
    assert images == {PLACEHOLDER_IMAGE}
    assert PLACEHOLDER_IMAGE.split("/")[0].endswith(".invalid")  # can never be pulled
    assert PLACEHOLDER_IMAGE in (ROOT / "deploy/README.md").read_text(encoding="utf-8")


# --- network policy ---------------------------------------------------------------------


def _policy() -> dict[str, Any]:
    (policy,) = by_kind("NetworkPolicy")
    return policy


def _matches(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    if any(pod_labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if pod_labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_network_policy_selects_every_ray_pod() -> None:
    policy = _policy()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for name, group in groups().items():
        pod_labels = group["template"]["metadata"]["labels"]
        assert _matches(policy["spec"]["podSelector"], pod_labels), name


def test_clients_reach_only_the_https_port() -> None:
    config = load_config_file(ROOT / "deploy/config.yaml")
    open_rules = [r for r in _policy()["spec"]["ingress"] if "from" not in r]
    opened = {p["port"] for r in open_rules for p in r["ports"]}
    assert opened == {config.serving.http_port}
    for rule in open_rules:
        assert rule["ports"], "a rule without peers and without ports opens every port"


def test_no_control_plane_port_is_reachable_beyond_the_policy_peers() -> None:
    config = load_config_file(ROOT / "deploy/config.yaml")
    control = set(control_ports(config))
    assert {6379, 8265, 10001, 9090} <= control
    allowed_peers = [
        {"cnnlstm.io/access": "operator"},
        {"cnnlstm.io/access": "monitoring"},
        {"app.kubernetes.io/name": "kuberay-operator"},
    ]
    ray_selector = _policy()["spec"]["podSelector"]
    for rule in _policy()["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])} or control  # none listed: all
        if not ports & control:
            continue
        assert rule.get("from"), f"control ports {ports & control} open to everyone"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            selector = peer["podSelector"]
            own_pods = selector == ray_selector and "namespaceSelector" not in peer
            named = selector.get("matchLabels") in allowed_peers
            assert own_pods or named, f"unexpected peer {peer} for {ports & control}"
    operator_rule = next(
        r
        for r in _policy()["spec"]["ingress"]
        if r.get("from", [{}])[0].get("podSelector", {}).get("matchLabels")
        == {ACCESS_LABEL: "operator"}
    )
    assert {p["port"] for p in operator_rule["ports"]} == control


# --- the rest of the cluster ------------------------------------------------------------


def test_volumes_claimed_match_the_volumes_mounted() -> None:
    claimed = {c["metadata"]["name"] for c in by_kind("PersistentVolumeClaim")}
    used = {
        v["persistentVolumeClaim"]["claimName"]
        for pod in pod_specs().values()
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert used == claimed
    assert {"cnnlstm-models", "cnnlstm-backups"} <= claimed


def test_secrets_mounted_are_the_templated_ones() -> None:
    templated = {s["metadata"]["name"]: set(s["stringData"]) for s in by_kind("Secret")}
    for pod in pod_specs().values():
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["secretName"] in templated
    config = load_config_file(ROOT / "deploy/config.yaml")
    auth = config.security.authentication
    assert auth.jwt_secret_path.name in templated["cnnlstm-secrets"]
    assert auth.api_key_store_path.name in templated["cnnlstm-secrets"]


def test_pod_monitor_scrapes_ray_exporters_and_gateway_metrics() -> None:
    (monitor,) = by_kind("PodMonitor")
    endpoints = {e["port"]: e for e in monitor["spec"]["podMetricsEndpoints"]}
    assert set(endpoints) == {"metrics", "serve"}
    assert endpoints["serve"]["scheme"] == "https"
    assert endpoints["serve"]["relabelings"][0]["regex"] == "gateway"
    (gpu,) = endpoints["metrics"]["metricRelabelings"]
    assert (gpu["regex"], gpu["replacement"]) == ("ray_(gpu_utilization)", "$1")
    named = {
        p["name"]: p["containerPort"]
        for g in groups().values()
        for c in g["template"]["spec"]["containers"]
        for p in c["ports"]
    }
    assert (named["metrics"], named["serve"]) == (9090, 8000)


def test_disruption_budget_covers_the_gateway_pods() -> None:
    (pdb,) = by_kind("PodDisruptionBudget")
    gateway_labels = groups()["cpu-workers"]["template"]["metadata"]["labels"]
    assert _matches(pdb["spec"]["selector"], gateway_labels)
    assert pdb["spec"]["maxUnavailable"] == 1


# --- what the cluster does with these objects -------------------------------------------


def test_rendering_to_stdout_never_emits_the_secret_templates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `render-kuberay | kubectl apply -f -` must not replace the real Secrets (TLS, keys,
    # the Ray token) with REPLACE_ME placeholders.
    assert run_cli(["--config", str(ROOT / "deploy/config.yaml"), "config", "render-kuberay"]) == 0
    kinds = {d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out) if d}
    assert "Secret" not in kinds
    assert {"RayService", "CronJob", "PodMonitor"} <= kinds


def _alert_jobs() -> re.Pattern[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))
    (expr,) = (
        r["expr"]
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "MetricsTargetDown"
    )
    match = re.search(r'job=~"([^"]+)"', expr)
    assert match, expr
    return re.compile(match.group(1))


def test_pod_monitor_targets_carry_the_jobs_alerts_and_dashboard_select() -> None:
    # The Prometheus Operator labels a PodMonitor's targets job="<namespace>/<name>" unless a
    # relabeling sets it: MetricsTargetDown (up{job=~...}) and the dashboard's gateway
    # panels (job="cnnlstm-gateway") would match nothing on Kubernetes.
    (monitor,) = by_kind("PodMonitor")
    alerted = _alert_jobs()
    jobs = {}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        job = f"default/{monitor['metadata']['name']}"
        for rule in endpoint.get("relabelings", []):
            if rule.get("targetLabel") == "job" and rule.get("action", "replace") == "replace":
                assert "sourceLabels" not in rule
                job = rule["replacement"]
        assert alerted.fullmatch(job), f"{endpoint['port']}: job {job!r} is never alerted on"
        jobs[endpoint["port"]] = job
    assert jobs == {"metrics": "ray-nodes", "serve": "cnnlstm-gateway"}


def test_only_pods_serving_https_can_become_ready() -> None:
    # KubeRay labels every RayService worker pod ray.io/serve=true and its Serve Service
    # (<name>-serve-svc, port 8000) sends clients to every *ready* one: a pod that is
    # ready without serving on http_port takes a share of connections and refuses them.
    config = load_config_file(ROOT / "deploy/config.yaml")
    http = config.serving.http_port
    for name, group in groups().items():
        if name == "head":  # KubeRay sets the head's label from its own proxy check
            continue
        (container,) = group["template"]["spec"]["containers"]
        ready = container["readinessProbe"]
        assert ready["httpGet"] == {"path": "/ready", "port": http, "scheme": "HTTPS"}, name


def _as_kuberay_runs_it(group: str) -> dict[str, Any]:
    """The pod spec with what KubeRay adds that affects admission: the head's autoscaler
    sidecar (securityContext from ``autoscalerOptions``, nothing else)."""
    pod = dict(pod_specs()[group])
    cluster = rayservice()["spec"]["rayClusterConfig"]
    if group == "head" and cluster.get("enableInTreeAutoscaling"):
        options = cluster.get("autoscalerOptions", {})
        sidecar = {"name": "autoscaler", "image": PLACEHOLDER_IMAGE}
        if "securityContext" in options:
            sidecar["securityContext"] = options["securityContext"]
        pod["containers"] = [*pod["containers"], sidecar]
    return pod


@pytest.mark.parametrize("name", list(pod_specs()))
def test_every_pod_passes_the_restricted_standard_as_kuberay_runs_it(name: str) -> None:
    pod = _as_kuberay_runs_it(name)
    for container in pod["containers"]:
        own = container.get("securityContext", {})
        assert own.get("allowPrivilegeEscalation") is False, container["name"]
        assert "ALL" in own.get("capabilities", {}).get("drop", []), container["name"]
        assert own.get("runAsNonRoot", pod["securityContext"]["runAsNonRoot"]) is True


def test_the_gpu_image_can_read_its_gpus() -> None:
    # The GPU predictors' spec 6.1 gpu_utilization comes from NVML through pynvml, the
    # `gpu` extra (app/observability/gpu.py): an image built as the README says for GPU
    # nodes must install it, or the gauge (and the PodMonitor's rename of it) stays empty.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(dep.startswith("nvidia-ml-py") for dep in project["optional-dependencies"]["gpu"])
    dockerfile = (ROOT / "deploy/Dockerfile").read_text(encoding="utf-8")
    default = re.search(r"^ARG EXTRAS=(\S+)$", dockerfile, re.MULTILINE)
    assert default, "deploy/Dockerfile: the extras to install are a build argument"
    assert "gpu" not in default.group(1).split(","), "CPU images stay without NVML"
    assert '".[${EXTRAS}]"' in dockerfile  # double quotes: RUN's shell expands it
    readme = (ROOT / "deploy/README.md").read_text(encoding="utf-8")
    for text in (readme, dockerfile):
        (gpu_build,) = re.findall(r"--build-arg TORCH_INDEX=\S+/cu\d+[^\n]*", text)
        extras = re.search(r"--build-arg EXTRAS=(\S+?)`?(?:\s|\)|$)", gpu_build)
        assert extras, gpu_build
        assert "gpu" in extras.group(1).split(","), gpu_build
